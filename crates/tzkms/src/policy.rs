//! Who may sign what: the global magic-byte list (like `octez-signer -M`) and each key's policy (request
//! kinds, generic operation kinds, transaction destinations, ballots, chains, TLS clients). A key without
//! a section of its own gets `policy.default`, which allows consensus payloads only.

use std::collections::{BTreeMap, BTreeSet};

use tezos::operation::{self, OperationError};
use tezos::payload::magic_byte_name;
use tezos::{
    Address, Ballot, ChainId, GenericOperation, Operation, OperationKind, Payload, PublicKeyHash,
    SmartRollupAddress,
};

use crate::config::{KeyPolicyConfig, PolicyConfig};
use crate::peer::ClientCertificate;

pub use crate::request::{ClientPattern, RequestKind};

/// One key's effective policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Where it comes from, for messages: `policy.default` or `policy.keys.<pkh>`.
    pub section: String,
    pub allow: BTreeSet<RequestKind>,
    /// Where an operation may send the key's funds: the destination of a `transaction`,
    /// `transfer_ticket` or `drain_delegate`. An `origination` with a balance is refused under it (the
    /// new contract's address is only known once the operation is included). Staking pseudo-operations
    /// keep the funds with the account and are not restricted.
    pub transaction_destinations: Option<BTreeSet<Address>>,
    /// The rollups smart-rollup operations may name (`smart_rollup_originate` and
    /// `smart_rollup_add_messages` name none and are allowed by their kind alone).
    pub smart_rollups: Option<BTreeSet<SmartRollupAddress>>,
    pub ballots: Option<BTreeSet<Ballot>>,
    pub chains: Option<BTreeSet<ChainId>>,
    pub tls_clients: Option<BTreeSet<ClientPattern>>,
    pub log_payloads: bool,
}

impl KeyPolicy {
    fn from_config(section: String, c: &KeyPolicyConfig) -> Result<Self, String> {
        let allow: BTreeSet<RequestKind> = c.allow.iter().copied().collect();
        let checked = allow.iter().any(|k| matches!(k, RequestKind::Operation(_)));
        if allow.contains(&RequestKind::GenericUnchecked)
            && (checked
                || c.transaction_destinations.is_some()
                || c.ballots.is_some()
                || c.smart_rollups.is_some())
        {
            return Err(format!(
                "{section}: generic_unchecked signs 0x03 bytes without reading them, so operation kinds, \
                 transaction_destinations, smart_rollups and ballots cannot be enforced with it; use one or \
                 the other"
            ));
        }
        Ok(Self {
            section,
            allow,
            transaction_destinations: c
                .transaction_destinations
                .as_ref()
                .map(|v| v.iter().copied().collect()),
            smart_rollups: c.smart_rollups.as_ref().map(|v| v.iter().copied().collect()),
            ballots: c.ballots.as_ref().map(|v| v.iter().copied().collect()),
            chains: c.chains.as_ref().map(|v| v.iter().copied().collect()),
            tls_clients: c.tls_clients.as_ref().map(|v| v.iter().cloned().collect()),
            log_payloads: c.log_payloads,
        })
    }

    /// One line per setting, for the startup log and `tzkms config check`.
    pub fn describe(&self) -> String {
        let list = |items: Vec<String>| items.join(", ");
        let mut parts = vec![format!(
            "allow [{}]",
            list(self.allow.iter().map(|k| k.to_string()).collect())
        )];
        if let Some(d) = &self.transaction_destinations {
            parts.push(format!(
                "transaction_destinations [{}]",
                list(d.iter().map(|a| a.to_string()).collect())
            ));
        }
        if let Some(r) = &self.smart_rollups {
            parts.push(format!(
                "smart_rollups [{}]",
                list(r.iter().map(|r| r.to_string()).collect())
            ));
        }
        if let Some(b) = &self.ballots {
            parts.push(format!(
                "ballots [{}]",
                list(b.iter().map(|b| b.to_string()).collect())
            ));
        }
        if let Some(c) = &self.chains {
            parts.push(format!(
                "chains [{}]",
                list(c.iter().map(|c| c.to_string()).collect())
            ));
        }
        if let Some(t) = &self.tls_clients {
            parts.push(format!(
                "tls_clients [{}]",
                list(t.iter().map(|t| t.to_string()).collect())
            ));
        }
        if self.log_payloads {
            parts.push("log_payloads".into());
        }
        format!("{}: {}", self.section, parts.join("; "))
    }
}

/// Why the policy did not let a request through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Refused by a rule: HTTP 403.
    #[error("policy: {message} ({rule})")]
    Refused { rule: String, message: String },
    /// A 0x03 payload that is not a well-formed operation: HTTP 400.
    #[error("malformed generic operation: {0}")]
    Malformed(OperationError),
}

impl PolicyError {
    pub fn rule(&self) -> &str {
        match self {
            Self::Refused { rule, .. } => rule,
            Self::Malformed(_) => "operation decoding",
        }
    }
}

/// The rule that let a request through, and the operations it read.
#[derive(Debug, Clone)]
pub struct PolicyDecision {
    pub rule: String,
    pub operations: Option<GenericOperation>,
    pub log_payloads: bool,
}

/// Facts about the caller a policy can look at.
#[derive(Debug, Default, Clone)]
pub struct Caller<'a> {
    pub certificate: Option<&'a ClientCertificate>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    allowed_magic_bytes: BTreeSet<u8>,
    default: KeyPolicy,
    keys: BTreeMap<PublicKeyHash, KeyPolicy>,
}

impl Policy {
    pub fn from_config(c: &PolicyConfig) -> Result<Self, String> {
        let default = KeyPolicy::from_config("policy.default".into(), &c.default)?;
        let keys = c
            .keys
            .iter()
            .map(|(pkh, kc)| Ok((*pkh, KeyPolicy::from_config(format!("policy.keys.{pkh}"), kc)?)))
            .collect::<Result<_, String>>()?;
        Ok(Self {
            allowed_magic_bytes: c.allowed_magic_bytes.clone(),
            default,
            keys,
        })
    }

    /// The policy that applies to `pkh`.
    pub fn for_key(&self, pkh: &PublicKeyHash) -> &KeyPolicy {
        self.keys.get(pkh).unwrap_or(&self.default)
    }

    /// Keys with a section of their own.
    pub fn configured_keys(&self) -> impl Iterator<Item = &PublicKeyHash> {
        self.keys.keys()
    }

    pub fn allowed_magic_bytes(&self) -> &BTreeSet<u8> {
        &self.allowed_magic_bytes
    }

    /// The global magic-byte list, checked before the payload is parsed (as Octez does).
    pub(crate) fn check_magic_byte(&self, magic: u8) -> Result<(), PolicyError> {
        if magic == 0x04 {
            return Err(PolicyError::Refused {
                rule: "authentication requests are never signed".into(),
                message: "magic byte 0x04 (authentication request) is never signed".into(),
            });
        }
        if !self.allowed_magic_bytes.contains(&magic) {
            return Err(PolicyError::Refused {
                rule: "policy.allowed_magic_bytes".into(),
                message: format!(
                    "magic byte 0x{magic:02X} ({}) not allowed",
                    magic_byte_name(magic)
                ),
            });
        }
        Ok(())
    }

    /// Applies `pkh`'s policy to a classified payload. Generic operations are decoded here, only once
    /// the key may sign some.
    pub fn check(
        &self,
        pkh: &PublicKeyHash,
        caller: &Caller<'_>,
        bytes: &[u8],
        payload: &Payload,
    ) -> Result<PolicyDecision, PolicyError> {
        let policy = self.for_key(pkh);
        let refuse = |setting: &str, message: String| PolicyError::Refused {
            rule: format!("{}.{setting}", policy.section),
            message,
        };
        if let Some(clients) = &policy.tls_clients {
            let Some(cert) = caller.certificate else {
                return Err(refuse(
                    "tls_clients",
                    format!("key {pkh} only signs for listed TLS clients, and this request has no client certificate"),
                ));
            };
            if !clients.iter().any(|c| c.matches(cert)) {
                return Err(refuse(
                    "tls_clients",
                    format!("TLS client {cert} may not use key {pkh}"),
                ));
            }
        }
        let (kind, chain) = match payload {
            Payload::Consensus(c) => (
                match c.kind {
                    tezos::ConsensusKind::Block => RequestKind::Block,
                    tezos::ConsensusKind::Preattestation => RequestKind::Preattestation,
                    tezos::ConsensusKind::Attestation => RequestKind::Attestation,
                },
                Some(c.chain_id),
            ),
            Payload::LegacyBlock { chain_id, .. } => (RequestKind::LegacyBlock, Some(*chain_id)),
            Payload::LegacyEndorsement { chain_id, .. } => (RequestKind::LegacyEndorsement, Some(*chain_id)),
            Payload::MichelsonData => (RequestKind::MichelsonData, None),
            Payload::GenericOperation => return self.check_generic(pkh, policy, bytes),
            Payload::Unknown { .. } => (RequestKind::OtherMagicBytes, None),
            Payload::AuthenticationRequest => {
                return Err(refuse(
                    "allow",
                    "magic byte 0x04 (authentication request) is never signed".into(),
                ));
            }
        };
        if !policy.allow.contains(&kind) {
            return Err(refuse("allow", format!("key {pkh} may not sign {kind}")));
        }
        if let (Some(chains), Some(chain)) = (&policy.chains, chain) {
            if !chains.contains(&chain) {
                return Err(refuse(
                    "chains",
                    format!("key {pkh} may not sign for chain {chain}"),
                ));
            }
        }
        Ok(PolicyDecision {
            rule: format!("{}.allow", policy.section),
            operations: None,
            log_payloads: policy.log_payloads,
        })
    }

    fn check_generic(
        &self,
        pkh: &PublicKeyHash,
        policy: &KeyPolicy,
        bytes: &[u8],
    ) -> Result<PolicyDecision, PolicyError> {
        let refuse = |setting: &str, message: String| PolicyError::Refused {
            rule: format!("{}.{setting}", policy.section),
            message,
        };
        // Before anything else, and whatever the policy allows: what no client sends a signer.
        if let Some((index, never)) = operation::find_never_signed(bytes) {
            return Err(PolicyError::Refused {
                rule: "never signed".into(),
                message: format!(
                    "key {pkh} may not sign operation {index}, {} (tag {}): tzkms never signs it inside a \
                     generic operation (0x03), whatever the policy says: {}",
                    never.name, never.tag, never.reason
                ),
            });
        }
        if policy.allow.contains(&RequestKind::GenericUnchecked) {
            return Ok(PolicyDecision {
                rule: format!("{}.allow (generic_unchecked)", policy.section),
                operations: None,
                log_payloads: policy.log_payloads,
            });
        }
        if !policy
            .allow
            .iter()
            .any(|k| matches!(k, RequestKind::Operation(_)))
        {
            return Err(refuse(
                "allow",
                format!("key {pkh} may not sign generic operations"),
            ));
        }
        let decoded = operation::decode(bytes).map_err(|e| {
            if e.is_unsupported() {
                refuse("allow", format!("key {pkh} may not sign this operation: {e}"))
            } else {
                PolicyError::Malformed(e)
            }
        })?;
        for op in &decoded.operations {
            if !policy.allow.contains(&RequestKind::Operation(op.kind)) {
                return Err(refuse("allow", format!("key {pkh} may not sign {}", op.kind)));
            }
            if let Some(allowed) = &policy.transaction_destinations {
                check_destination(op, allowed)
                    .map_err(|m| refuse("transaction_destinations", format!("key {pkh} may not {m}")))?;
            }
            if let (Some(allowed), Some(rollup)) = (&policy.smart_rollups, op.smart_rollup) {
                if !allowed.contains(&rollup) {
                    return Err(refuse(
                        "smart_rollups",
                        format!("key {pkh} may not sign a {} for rollup {rollup}", op.kind),
                    ));
                }
            }
            if let (Some(allowed), Some(ballot)) = (&policy.ballots, op.ballot) {
                if !allowed.contains(&ballot) {
                    return Err(refuse("ballots", format!("key {pkh} may not vote {ballot}")));
                }
            }
        }
        Ok(PolicyDecision {
            rule: format!("{}.allow", policy.section),
            operations: Some(decoded),
            log_payloads: policy.log_payloads,
        })
    }
}

/// Whether `op` sends the key's funds only to `allowed`; the refusal reads after "key tz… may not".
fn check_destination(op: &Operation, allowed: &BTreeSet<Address>) -> Result<(), String> {
    match op.kind {
        OperationKind::Transaction | OperationKind::TransferTicket | OperationKind::DrainDelegate => {
            match op.destination {
                Some(destination) if allowed.contains(&destination) => Ok(()),
                Some(destination) => Err(format!("send a {} to {destination}", op.kind)),
                None => Err(format!("send a {} without a destination", op.kind)),
            }
        }
        // The new contract's address comes from the hash of the operation once included: no list can
        // name it in advance, so only an empty balance is allowed beside one.
        OperationKind::Origination if op.amount != Some(0) => Err(format!(
            "originate a contract with a balance of {} (the new contract's address is not known before \
             the operation is included, so transaction_destinations cannot vouch for it): originate it \
             with a 0 balance, then transfer to it once it is listed",
            op.amount
                .map_or_else(|| "more than 2^64 mutez".to_string(), |a| format!("{a} mutez"))
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use tezos::classify;

    const BAKER: &str = "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx";
    const PAYOUTS: &str = "tz1gjaF81ZRRvdzjobyfVNsAeSC6PScjfQwN";
    const STRANGER: &str = "tz1faswCTDciRzE4oJ9jn2Vm2dvjeyA9fUzU";
    const CHAIN: &str = "NetXxkAx4woPLyu";

    fn vector(id: &str) -> Vec<u8> {
        let path = std::path::PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../../shared/vectors/payloads.json");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let p = v["payloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap();
        hex::decode(p["hex"].as_str().unwrap()).unwrap()
    }

    fn pkh_bin(text: &str) -> Vec<u8> {
        text.parse::<PublicKeyHash>().unwrap().to_binary().to_vec()
    }

    fn manager(tag: u8, source: &str) -> Vec<u8> {
        [
            vec![tag],
            pkh_bin(source),
            vec![0xe8, 0x07, 0x07, 0xbc, 0x50, 0x81, 0x02],
        ]
        .concat()
    }

    fn generic(contents: &[Vec<u8>]) -> Vec<u8> {
        [vec![0x03], vec![0xab; 32], contents.concat()].concat()
    }

    fn transaction(to: &str, entrypoint: Option<u8>) -> Vec<u8> {
        let params = match entrypoint {
            None => vec![0],
            Some(tag) => vec![0xff, tag, 0, 0, 0, 2, 0x03, 0x0b],
        };
        [
            manager(108, BAKER),
            vec![0xc0, 0x84, 0x3d, 0],
            pkh_bin(to),
            params,
        ]
        .concat()
    }

    fn ballot(vote: u8) -> Vec<u8> {
        [
            vec![6],
            pkh_bin(BAKER),
            vec![0, 0, 0, 9],
            vec![0x44; 32],
            vec![vote],
        ]
        .concat()
    }

    fn delegation() -> Vec<u8> {
        [manager(110, BAKER), vec![0xff], pkh_bin(BAKER)].concat()
    }

    fn reveal() -> Vec<u8> {
        [manager(107, BAKER), vec![0], vec![0x22; 32], vec![0]].concat()
    }

    fn policy(toml: &str) -> Policy {
        Policy::from_config(&Config::parse(toml).unwrap().policy).unwrap()
    }

    fn decide(policy: &Policy, bytes: &[u8]) -> Result<String, String> {
        let pkh: PublicKeyHash = BAKER.parse().unwrap();
        policy.check_magic_byte(bytes[0]).map_err(|e| e.to_string())?;
        let payload = classify(bytes).map_err(|e| e.to_string())?;
        policy
            .check(&pkh, &Caller::default(), bytes, &payload)
            .map(|d| d.rule)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn policy_table_over_real_payloads() {
        let default = policy("");
        let operator = policy(&format!(
            r#"
            [policy.keys.{BAKER}]
            allow = ["block", "preattestation", "attestation", "transaction", "reveal", "ballot", "stake",
                     "michelson_data"]
            transaction_destinations = ["{PAYOUTS}"]
            ballots = ["yay", "pass"]
            chains = ["{CHAIN}"]
            "#
        ));
        let block = vector("sig-req-block");
        let preattestation = vector("tezt-preattestation");
        let attestation = vector("tezt-attestation");
        let on_other_chain = {
            let mut p = attestation.clone();
            p[1..5].copy_from_slice(&[1, 2, 3, 4]);
            p
        };
        let michelson = vec![0x05, 0x01, 0x00, 0x00, 0x00, 0x02, b'h', b'i'];
        let elsewhere = format!("may not send a transaction to {STRANGER}");
        type Case<'a> = (&'a str, &'a Policy, Vec<u8>, Result<&'a str, &'a str>);
        let cases: Vec<Case> = vec![
            (
                "default: block",
                &default,
                block.clone(),
                Ok("policy.default.allow"),
            ),
            (
                "default: preattestation",
                &default,
                preattestation.clone(),
                Ok("policy.default.allow"),
            ),
            (
                "default: attestation",
                &default,
                attestation.clone(),
                Ok("policy.default.allow"),
            ),
            (
                "default: transaction",
                &default,
                generic(&[transaction(PAYOUTS, None)]),
                Err("may not sign generic operations (policy.default.allow)"),
            ),
            (
                "default: michelson",
                &default,
                michelson.clone(),
                Err("may not sign michelson_data (policy.default.allow)"),
            ),
            (
                "default: legacy magic",
                &default,
                vec![0x01; 20],
                Err("magic byte 0x01 (legacy block) not allowed (policy.allowed_magic_bytes)"),
            ),
            ("default: 0x04", &default, vec![0x04, 1], Err("never signed")),
            ("key: block on its chain", &operator, block.clone(), Ok("allow")),
            (
                "key: attestation on another chain",
                &operator,
                on_other_chain,
                Err("may not sign for chain Net"),
            ),
            ("key: michelson", &operator, michelson, Ok("allow")),
            (
                "key: payout",
                &operator,
                generic(&[transaction(PAYOUTS, None)]),
                Ok("allow"),
            ),
            (
                "key: transfer elsewhere",
                &operator,
                generic(&[transaction(STRANGER, None)]),
                Err(&elsewhere),
            ),
            (
                "key: reveal then payout",
                &operator,
                generic(&[reveal(), transaction(PAYOUTS, None)]),
                Ok("allow"),
            ),
            (
                "key: payout hiding a delegation",
                &operator,
                generic(&[transaction(PAYOUTS, None), delegation()]),
                Err("may not sign delegation"),
            ),
            (
                "key: stake to itself",
                &operator,
                generic(&[transaction(BAKER, Some(6))]),
                Ok("allow"),
            ),
            (
                "key: unstake",
                &operator,
                generic(&[transaction(BAKER, Some(7))]),
                Err("may not sign unstake"),
            ),
            ("key: ballot yay", &operator, generic(&[ballot(0)]), Ok("allow")),
            (
                "key: ballot nay",
                &operator,
                generic(&[ballot(1)]),
                Err("may not vote nay (policy.keys."),
            ),
            (
                "key: unknown tag",
                &operator,
                generic(&[vec![0x99, 0, 0]]),
                Err("unknown tag 153"),
            ),
            (
                "key: undecoded tag",
                &operator,
                generic(&[vec![250, 0, 0]]),
                Err("zk_rollup_origination (tag 250) is not decoded"),
            ),
            (
                "key: truncated transaction",
                &operator,
                generic(&[transaction(PAYOUTS, None)[..30].to_vec()]),
                Err("malformed generic operation"),
            ),
        ];
        for (name, policy, bytes, expected) in cases {
            let got = decide(policy, &bytes);
            match (&got, expected) {
                (Ok(rule), Ok(want)) => assert!(rule.contains(want), "{name}: rule {rule:?}"),
                (Err(msg), Err(want)) => assert!(msg.contains(want), "{name}: {msg:?} lacks {want:?}"),
                _ => panic!("{name}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn refusals_name_the_key_the_kind_and_the_rule() {
        let err = decide(&policy(""), &generic(&[transaction(PAYOUTS, None)])).unwrap_err();
        assert_eq!(
            err,
            format!("policy: key {BAKER} may not sign generic operations (policy.default.allow)")
        );
        let p = policy(&format!("[policy.keys.{BAKER}]\nallow = [\"reveal\"]\n"));
        let err = decide(&p, &generic(&[transaction(PAYOUTS, None)])).unwrap_err();
        assert_eq!(
            err,
            format!("policy: key {BAKER} may not sign transaction (policy.keys.{BAKER}.allow)")
        );
    }

    #[test]
    fn generic_unchecked_signs_undecodable_bytes_and_excludes_checked_settings() {
        let p = policy(&format!(
            "[policy.keys.{BAKER}]\nallow = [\"generic_unchecked\"]\n"
        ));
        assert!(decide(&p, &[0x03, 0x12, 0x34]).is_ok());
        let c = Config::parse(&format!(
            "[policy.keys.{BAKER}]\nallow = [\"generic_unchecked\", \"transaction\"]\n"
        ))
        .unwrap();
        assert!(Policy::from_config(&c.policy)
            .unwrap_err()
            .contains("cannot be enforced"));
    }

    fn drain(to: &str) -> Vec<u8> {
        // consensus key ‖ delegate ‖ destination
        [vec![9], pkh_bin(PAYOUTS), pkh_bin(BAKER), pkh_bin(to)].concat()
    }

    fn origination(balance: &[u8]) -> Vec<u8> {
        let sized = |b: &[u8]| [(b.len() as u32).to_be_bytes().to_vec(), b.to_vec()].concat();
        [
            manager(109, BAKER),
            balance.to_vec(),
            vec![0],
            sized(b"code"),
            sized(b"storage"),
        ]
        .concat()
    }

    #[test]
    fn never_signed_operations_are_refused_whatever_the_policy() {
        let unchecked = policy(&format!(
            "[policy.keys.{BAKER}]\nallow = [\"generic_unchecked\"]\n"
        ));
        let checked = policy(&format!(
            "[policy.keys.{BAKER}]\nallow = [\"transaction\", \"drain_delegate\"]\n"
        ));
        let consensus = vec![0u8; 42];
        let payloads: Vec<(&str, Vec<u8>)> = vec![
            (
                "attestation (21)",
                generic(&[[vec![21], consensus.clone()].concat()]),
            ),
            (
                "preattestation (20)",
                generic(&[[vec![20], consensus.clone()].concat()]),
            ),
            (
                "attestation_with_dal (23)",
                generic(&[[vec![23], consensus.clone(), vec![0x01]].concat()]),
            ),
            (
                "bls_mode_attestation (41)",
                generic(&[[vec![41], vec![0; 40]].concat()]),
            ),
            (
                "bls_mode_preattestation (40)",
                generic(&[[vec![40], vec![0; 40]].concat()]),
            ),
            ("attestations_aggregate (31)", generic(&[vec![31]])),
            ("preattestations_aggregate (30)", generic(&[vec![30]])),
            ("seed_nonce_revelation (1)", generic(&[vec![1]])),
            ("double_consensus_operation_evidence (2)", generic(&[vec![2]])),
            ("double_baking_evidence (3)", generic(&[vec![3]])),
            (
                "activate_account (4)",
                generic(&[[vec![4], vec![9; 40]].concat()]),
            ),
            ("vdf_revelation (8)", generic(&[vec![8]])),
            ("dal_entrapment_evidence (24)", generic(&[vec![24]])),
            (
                "attestation after a payout",
                generic(&[transaction(PAYOUTS, None), vec![21], consensus.clone()]),
            ),
        ];
        for (name, bytes) in &payloads {
            for (mode, p) in [("generic_unchecked", &unchecked), ("checked", &checked)] {
                let err = decide(p, bytes).expect_err(&format!("{name} under {mode}"));
                assert!(err.contains("(never signed)"), "{name} under {mode}: {err}");
                assert!(err.contains("whatever the policy says"), "{name}: {err}");
            }
        }
        // drain_delegate stays allowable: the consensus key signs it.
        assert!(decide(&checked, &generic(&[drain(STRANGER)])).is_ok());
        assert!(decide(&unchecked, &generic(&[drain(STRANGER)])).is_ok());
        // Naming them in a configuration is an error at load, saying why (`preattestation` and
        // `attestation` name the 0x12/0x13 payloads there).
        let named = |k: &OperationKind| {
            k.never_signed().is_some()
                && !matches!(k, OperationKind::Preattestation | OperationKind::Attestation)
        };
        for kind in OperationKind::ALL.into_iter().filter(named) {
            let err = Config::parse(&format!("[policy.keys.{BAKER}]\nallow = [\"{kind}\"]\n"))
                .map(|_| ())
                .expect_err(kind.name())
                .to_string();
            assert!(err.contains("is never signed by tzkms"), "{kind}: {err}");
        }
        // The consensus payloads under the same names stay allowed (0x12/0x13).
        assert!(Config::parse("[policy.default]\nallow = [\"preattestation\", \"attestation\"]\n").is_ok());
    }

    #[test]
    fn transaction_destinations_cover_drains_and_originations() {
        let p = policy(&format!(
            r#"
            [policy.keys.{BAKER}]
            allow = ["transaction", "drain_delegate", "origination", "stake", "unstake", "finalize_unstake"]
            transaction_destinations = ["{PAYOUTS}"]
            "#
        ));
        let cases: Vec<(&str, Vec<u8>, Result<(), &str>)> = vec![
            ("drain to the payout address", drain(PAYOUTS), Ok(())),
            (
                "drain to an unlisted address",
                drain(STRANGER),
                Err("may not send a drain_delegate to tz1faswCTDciRzE4oJ9jn2Vm2dvjeyA9fUzU (policy.keys."),
            ),
            // 100 tez = 100_000_000 mutez, zarith 80c2d72f
            (
                "origination with 100 tez",
                origination(&[0x80, 0xc2, 0xd7, 0x2f]),
                Err("may not originate a contract with a balance of 100000000 mutez"),
            ),
            ("origination with 0 tez", origination(&[0x00]), Ok(())),
            ("stake to itself", transaction(BAKER, Some(6)), Ok(())),
            ("unstake", transaction(BAKER, Some(7)), Ok(())),
            ("finalize_unstake", transaction(BAKER, Some(8)), Ok(())),
            (
                "stake entrypoint of another account is a transaction",
                transaction(STRANGER, Some(6)),
                Err("may not send a transaction to tz1fasw"),
            ),
        ];
        for (name, op, expected) in cases {
            let got = decide(&p, &generic(&[op]));
            match (&got, expected) {
                (Ok(_), Ok(())) => {}
                (Err(msg), Err(want)) => {
                    assert!(msg.contains(want), "{name}: {msg:?} lacks {want:?}");
                    assert!(msg.contains("transaction_destinations"), "{name}: {msg}");
                }
                _ => panic!("{name}: got {got:?}, expected {expected:?}"),
            }
        }
        // Without a destination list, an origination with a balance is the key's business.
        let open = policy(&format!("[policy.keys.{BAKER}]\nallow = [\"origination\"]\n"));
        assert!(decide(&open, &generic(&[origination(&[0x80, 0xc2, 0xd7, 0x2f])])).is_ok());
    }

    #[test]
    fn smart_rollups_restrict_the_rollup_an_operation_names() {
        const ETHERLINK: &str = "sr1Ghq66tYK9y3r8CC1Tf8i8m5nxh8nTvZEf";
        let p = policy(&format!(
            r#"
            [policy.keys.{BAKER}]
            allow = ["smart_rollup_publish", "smart_rollup_cement", "smart_rollup_add_messages"]
            smart_rollups = ["{ETHERLINK}"]
            "#
        ));
        let etherlink = ETHERLINK.parse::<SmartRollupAddress>().unwrap().0.to_vec();
        let other = vec![0x11; 20];
        let cement = |rollup: &[u8]| [manager(202, BAKER), rollup.to_vec()].concat();
        assert!(decide(&p, &generic(&[cement(&etherlink)])).is_ok());
        let err = decide(&p, &generic(&[cement(&other)])).unwrap_err();
        assert!(
            err.contains("may not sign a smart_rollup_cement for rollup sr1")
                && err.contains(".smart_rollups)"),
            "{err}"
        );
        // add_messages names no rollup: its kind alone decides.
        let add = [
            manager(201, BAKER),
            vec![0, 0, 0, 7, 0, 0, 0, 3, b'a', b'b', b'c'],
        ]
        .concat();
        assert!(decide(&p, &generic(&[add])).is_ok());
        // Not listed: refused by allow.
        let timeout = [manager(205, BAKER), etherlink, pkh_bin(PAYOUTS), pkh_bin(BAKER)].concat();
        assert!(decide(&p, &generic(&[timeout]))
            .unwrap_err()
            .contains("may not sign smart_rollup_timeout"));
        // A malformed address in the configuration is an error at load.
        assert!(Config::parse(&format!(
            "[policy.keys.{BAKER}]\nsmart_rollups = [\"{PAYOUTS}\"]\n"
        ))
        .is_err());
        // Like the other checked settings, it cannot sit beside generic_unchecked.
        let c = Config::parse(&format!(
            "[policy.keys.{BAKER}]\nallow = [\"generic_unchecked\"]\nsmart_rollups = [\"{ETHERLINK}\"]\n"
        ))
        .unwrap();
        assert!(Policy::from_config(&c.policy)
            .unwrap_err()
            .contains("smart_rollups"));
    }

    #[test]
    fn tls_client_lists_require_a_matching_certificate() {
        let p = policy(&format!(
            "[policy.keys.{BAKER}]\nallow = [\"attestation\"]\ntls_clients = [\"cn:baker-1\"]\n"
        ));
        let pkh: PublicKeyHash = BAKER.parse().unwrap();
        let bytes = vector("tezt-attestation");
        let payload = classify(&bytes).unwrap();
        let cert = |cn: &str| ClientCertificate {
            fingerprint: "00".repeat(32),
            common_name: Some(cn.into()),
        };
        let check = |cert: Option<&ClientCertificate>| {
            p.check(&pkh, &Caller { certificate: cert }, &bytes, &payload)
                .map_err(|e| e.to_string())
        };
        assert!(check(Some(&cert("baker-1"))).is_ok());
        assert!(check(Some(&cert("intruder")))
            .unwrap_err()
            .contains("tls_clients"));
        assert!(check(None).unwrap_err().contains("no client certificate"));
    }

    #[test]
    fn request_kinds_and_client_patterns_parse() {
        assert_eq!("attestation".parse(), Ok(RequestKind::Attestation));
        assert_eq!(
            "transaction".parse(),
            Ok(RequestKind::Operation(OperationKind::Transaction))
        );
        assert!("transfer"
            .parse::<RequestKind>()
            .unwrap_err()
            .contains("unknown request kind"));
        assert!("sha256:zz".parse::<ClientPattern>().is_err());
        assert_eq!(
            format!("sha256:{}", "AB".repeat(32)).parse::<ClientPattern>(),
            Ok(ClientPattern::Fingerprint("ab".repeat(32)))
        );
    }
}
