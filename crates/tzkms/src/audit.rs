//! The audit line: one structured log event per request (target `tzkms::audit`), filled in by each step
//! of the request path as it learns something, emitted once by the server. Never holds a secret; the
//! payload itself only when the key's policy sets `log_payloads`.

use std::net::SocketAddr;
use std::time::Duration;

use tezos::{ChainId, Level, OperationKind, PublicKeyHash, Round};

use crate::peer::ClientCertificate;

/// What is known about one request.
#[derive(Debug, Default, Clone)]
pub struct AuditRecord {
    pub route: &'static str,
    pub client: Option<SocketAddr>,
    pub tls_client: Option<ClientCertificate>,
    /// The authorized key whose signature authenticated the request.
    pub auth_key: Option<PublicKeyHash>,
    /// The key asked for, as written in the path (it may not parse).
    pub pkh: Option<String>,
    /// block, preattestation, attestation, generic operation, michelson data, …
    pub kind: Option<&'static str>,
    pub chain: Option<ChainId>,
    pub level: Option<Level>,
    pub round: Option<Round>,
    pub operations: Vec<OperationKind>,
    /// The rule that decided (allowed or refused).
    pub rule: Option<String>,
    pub payload_blake2b: Option<String>,
    /// Hex of the payload, only with `log_payloads`.
    pub payload: Option<String>,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Signed,
    /// The stored signature of identical bytes was returned.
    Replayed,
    /// Answered without a signature (public key, key lists, proof of possession).
    Served,
    Refused,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Signed => "signed",
            Decision::Replayed => "replayed",
            Decision::Served => "served",
            Decision::Refused => "refused",
        }
    }
}

impl AuditRecord {
    pub fn new(
        route: &'static str,
        client: Option<SocketAddr>,
        tls_client: Option<ClientCertificate>,
    ) -> Self {
        Self {
            route,
            client,
            tls_client,
            ..Self::default()
        }
    }

    /// Writes the line: info for answered requests, warn for refusals, error when tzkms or its backend
    /// failed (5xx). `reason` is the error message.
    pub(crate) fn emit(&self, decision: Decision, status: u16, reason: Option<&str>, latency: Duration) {
        let operations = (!self.operations.is_empty()).then(|| {
            self.operations
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(",")
        });
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: "tzkms::audit",
                    route = self.route,
                    client = self.client.map(display),
                    tls_client = self.tls_client.as_ref().map(|c| display(format!("sha256:{}", c.fingerprint))),
                    tls_client_cn = self.tls_client.as_ref().and_then(|c| c.common_name.as_deref()),
                    auth_key = self.auth_key.map(display),
                    pkh = self.pkh.as_deref(),
                    kind = self.kind,
                    chain = self.chain.map(display),
                    level = self.level.map(|l| l.0),
                    round = self.round.map(|r| r.0),
                    operations = operations.as_deref(),
                    decision = decision.name(),
                    rule = self.rule.as_deref(),
                    status,
                    reason,
                    latency_us = latency.as_micros() as u64,
                    payload_blake2b = self.payload_blake2b.as_deref(),
                    payload = self.payload.as_deref(),
                    "audit"
                )
            };
        }
        if decision == Decision::Refused && status >= 500 {
            line!(error);
        } else if decision == Decision::Refused {
            line!(warn);
        } else {
            line!(info);
        }
    }
}
