//! The signing path, one step per line: authenticate the caller, find the key, check the magic byte,
//! classify the payload, apply the key's policy, reserve the watermark, sign with the key's backend,
//! verify the signature locally, commit the watermark. The HTTP server is a thin shell around this; the
//! audit record is filled in as each step learns something.

use std::collections::BTreeSet;
use std::sync::Arc;

use tezos::payload::magic_byte_name;
use tezos::{
    blake2b_256, classify, BlsScheme, ConsensusKind, Payload, PayloadError, PublicKey, PublicKeyHash, Round,
    Signature, WrongKeyType,
};

use crate::audit::AuditRecord;
use crate::auth::{AuthError, Authenticator};
use crate::backend::{BackendError, Keyring, ServedKey};
use crate::limits::{Limited, Limits, RouteClass};
use crate::peer::ClientCertificate;
use crate::policy::{Caller, Policy, PolicyError};
use crate::watermark::{History, MarkKey, MarkRequest, Reserved, WatermarkError, Watermarks};

/// Which route a signing request came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignRoute {
    /// `POST /keys/<pkh>`: a baker asks for a signature.
    #[default]
    Keys,
    /// `POST /cosign/<group>`: a threshold coordinator, authenticated by its client certificate, asks
    /// for this machine's partial signature.
    Cosign,
}

/// One signing request, as parsed from HTTP.
#[derive(Debug)]
pub struct SignRequest {
    pub pkh: PublicKeyHash,
    pub route: SignRoute,
    pub payload: Vec<u8>,
    pub scheme: BlsScheme,
    /// The `authentication` query parameter: a signature by an authorized key.
    pub authentication: Option<String>,
    /// The verified client certificate, on an mTLS listener.
    pub certificate: Option<ClientCertificate>,
    /// The client's address, for its per-client rate of generic signing requests.
    pub client: Option<std::net::IpAddr>,
}

/// Why a request was not signed. Each kind has one [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    BadRequest(String),
    #[error("malformed payload: {0}")]
    Payload(#[from] PayloadError),
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("key {0} is not served by this signer")]
    UnknownKey(PublicKeyHash),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("signing with {pkh} failed: {message}")]
    Backend { pkh: PublicKeyHash, message: String },
    /// A threshold key's cosigners refused by their own watermarks (see [`BackendError::WatermarkRefused`]).
    #[error("watermark: {message}")]
    CosignersRefused { pkh: PublicKeyHash, message: String },
    #[error("the signature returned for {0} does not verify against its public key; it was not released")]
    VerificationFailed(PublicKeyHash),
    #[error("{0}")]
    Watermark(#[from] WatermarkError),
    #[error(
        "watermark: identical bytes were signed before with another signature version; refusing to sign them again"
    )]
    ReplayVersionMismatch,
    #[error("{0}")]
    Limited(#[from] Limited),
    #[error("{0}")]
    WrongKeyType(#[from] WrongKeyType),
    #[error("this machine holds share {id} of {pkh}; ask the coordinator")]
    ShareOnly { pkh: PublicKeyHash, id: u8 },
    #[error("this machine holds no share of {0}: /cosign serves the keys of its share files only")]
    NotAShare(PublicKeyHash),
}

/// How a request ended. The server gives each outcome its HTTP status, its answer, its audit decision and
/// its metrics label in one exhaustive match, so a new outcome does not compile until each is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A signature made now.
    Signed,
    /// The stored signature of identical bytes; the backend was not called.
    Replayed,
    /// Answered without a signature (public key, key lists, proof of possession).
    Served,
    /// No authentication where one is required.
    Unauthenticated,
    /// An authentication that does not verify, or whose key may not ask for this key's signatures.
    RefusedAuth,
    /// A policy rule, or a route switched off by the configuration, refused it.
    RefusedPolicy,
    /// The high watermark refused it.
    RefusedWatermark,
    /// A rate limit refused it.
    RateLimited,
    /// No such key.
    NotFound,
    /// The request is malformed (key, query, body or payload).
    BadRequest,
    /// The request body is over `max_body_bytes`.
    TooLarge,
    /// A route asked with a method it does not answer.
    MethodNotAllowed,
    /// tzkms, its backend or its watermark store failed.
    Failed,
}

impl SignError {
    pub fn outcome(&self) -> Outcome {
        match self {
            SignError::BadRequest(_) | SignError::Payload(_) | SignError::WrongKeyType(_) => {
                Outcome::BadRequest
            }
            SignError::Auth(AuthError::Missing) => Outcome::Unauthenticated,
            SignError::Auth(
                AuthError::Malformed(_) | AuthError::NotAuthorized | AuthError::NotBound { .. },
            ) => Outcome::RefusedAuth,
            SignError::Policy(PolicyError::Malformed(_)) => Outcome::BadRequest,
            // Counted as an authentication refusal since its rule was first named (the metrics used to
            // tell authentication refusals by a rule starting with "auth"); kept so the label stays.
            SignError::Policy(PolicyError::Refused { rule, .. }) if rule == AUTHENTICATION_REQUEST_RULE => {
                Outcome::RefusedAuth
            }
            SignError::Policy(PolicyError::Refused { .. }) => Outcome::RefusedPolicy,
            SignError::UnknownKey(_) | SignError::NotAShare(_) => Outcome::NotFound,
            SignError::ShareOnly { .. } => Outcome::RefusedPolicy,
            SignError::Watermark(e) if e.is_refusal() => Outcome::RefusedWatermark,
            SignError::ReplayVersionMismatch | SignError::CosignersRefused { .. } => {
                Outcome::RefusedWatermark
            }
            SignError::Backend { .. } | SignError::VerificationFailed(_) | SignError::Watermark(_) => {
                Outcome::Failed
            }
            SignError::Limited(_) => Outcome::RateLimited,
        }
    }

    /// When to try again, for a 429.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            SignError::Limited(l) => Some(l.retry_after),
            _ => None,
        }
    }

    /// The rule behind a refusal, for the audit line.
    pub fn rule(&self) -> Option<String> {
        match self {
            SignError::Auth(AuthError::NotBound { .. }) => Some("auth.may_sign".into()),
            SignError::Auth(_) => Some("auth.required".into()),
            SignError::Policy(e) => Some(e.rule().to_owned()),
            SignError::Watermark(e) if e.is_refusal() => Some("watermark".into()),
            SignError::ReplayVersionMismatch => Some("watermark".into()),
            SignError::CosignersRefused { .. } => Some("threshold.watermark".into()),
            SignError::Limited(_) => Some("limits".into()),
            SignError::WrongKeyType(_) => Some("consensus.key_type".into()),
            SignError::ShareOnly { .. } => Some("threshold.share_only".into()),
            _ => None,
        }
    }
}

/// The rule of the policy's refusal of an authentication request (magic byte 0x04).
const AUTHENTICATION_REQUEST_RULE: &str = "authentication requests are never signed";

/// A signature and how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed {
    pub signature: Signature,
    /// The stored signature of an identical earlier request; the backend was not called.
    pub replayed: bool,
    pub consensus: Option<(MarkKey, MarkRequest)>,
}

impl Signed {
    pub fn outcome(&self) -> Outcome {
        if self.replayed {
            Outcome::Replayed
        } else {
            Outcome::Signed
        }
    }
}

/// What a reload (SIGHUP) replaces, as one value: the served keys, who may ask, and what each key may
/// sign. A request takes one snapshot of it when it starts, so it never mixes two configurations.
#[derive(Debug)]
pub struct Rules {
    pub keyring: Keyring,
    pub auth: Authenticator,
    pub policy: Policy,
}

/// Signs requests for the keys of a keyring under the authentication settings, the policy and the
/// high watermark. The [`Rules`] are swapped whole on reload; the watermark store and the limits never are.
#[derive(Debug)]
pub struct Signer {
    rules: std::sync::RwLock<Arc<Rules>>,
    watermarks: Arc<dyn Watermarks>,
    unprotected: BTreeSet<PublicKeyHash>,
    limits: Arc<Limits>,
    metrics: crate::metrics::Metrics,
    /// Set when shutdown begins: readiness fails so load balancers stop sending new requests.
    draining: std::sync::atomic::AtomicBool,
}

impl Signer {
    /// `unprotected` lists keys whose consensus payloads are signed without a watermark check.
    pub fn new(
        keyring: Keyring,
        auth: Authenticator,
        policy: Policy,
        watermarks: Arc<dyn Watermarks>,
        unprotected: BTreeSet<PublicKeyHash>,
        limits: Arc<Limits>,
    ) -> Arc<Self> {
        Arc::new(Self {
            rules: std::sync::RwLock::new(Arc::new(Rules {
                keyring,
                auth,
                policy,
            })),
            watermarks,
            unprotected,
            limits,
            metrics: Default::default(),
            draining: Default::default(),
        })
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Marks the signer as shutting down (readiness turns red; requests in flight still finish).
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts a finished request in the metrics under its `outcome` label, with its key if this signer
    /// serves it.
    pub fn observe(
        &self,
        record: &AuditRecord,
        decision: crate::audit::Decision,
        outcome: &'static str,
        latency: std::time::Duration,
    ) {
        let key = match record.pkh.as_deref() {
            None => crate::metrics::KEY_NONE.to_owned(),
            Some(text) => match text.parse::<PublicKeyHash>() {
                Ok(pkh) if self.rules().keyring.get(&pkh).is_some() => pkh.to_string(),
                _ => crate::metrics::KEY_OTHER.to_owned(),
            },
        };
        self.metrics.record(record, key, decision, outcome, latency);
    }

    /// Creates the zero-valued series of every served key (see [`crate::metrics::Metrics::init_key`]).
    pub(crate) fn init_metrics(&self) {
        use crate::policy::RequestKind;
        let rules = self.rules();
        for (pkh, key) in rules.keyring.sorted() {
            let allow = &rules.policy.for_key(&pkh).allow;
            let kinds: Vec<&'static str> = [
                (RequestKind::Block, "block"),
                (RequestKind::Preattestation, "preattestation"),
                (RequestKind::Attestation, "attestation"),
            ]
            .into_iter()
            .filter(|(k, _)| allow.contains(k))
            .map(|(_, name)| name)
            .collect();
            self.metrics.init_key(&pkh, key.backend.kind(), &kinds);
        }
    }

    /// Sets the watermark gauges from the store (at startup; signatures keep them current after).
    pub(crate) async fn load_watermark_gauges(&self) -> Result<usize, WatermarkError> {
        let marks = self.watermarks.snapshot().await?;
        let mut n = 0;
        // A shared table may hold other signers' keys: only served keys become series.
        let rules = self.rules();
        for (key, mark) in marks.iter().filter(|(k, _)| rules.keyring.get(&k.pkh).is_some()) {
            self.metrics
                .watermark(&key.pkh, key.kind, mark.level.0, mark.round.0);
            n += 1;
        }
        Ok(n)
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    pub fn watermarks(&self) -> &Arc<dyn Watermarks> {
        &self.watermarks
    }

    /// The rules in force now. Hold the snapshot for the whole of one request.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `rules` in force for the requests that start from now on (those in flight finish under
    /// their snapshot) and returns the previous ones.
    pub(crate) fn replace_rules(&self, rules: Rules) -> Arc<Rules> {
        let new = Arc::new(rules);
        std::mem::replace(&mut *self.rules.write().unwrap_or_else(|p| p.into_inner()), new)
    }

    pub async fn public_key(&self, pkh: &PublicKeyHash) -> Result<PublicKey, SignError> {
        Ok(key(&self.rules(), pkh).await?.info.public_key)
    }

    pub async fn sign(&self, request: &SignRequest, audit: &mut AuditRecord) -> Result<Signed, SignError> {
        let pkh = request.pkh;
        let rules = self.rules();
        let magic = *request.payload.first().ok_or(PayloadError::Empty)?;
        audit.kind = Some(magic_byte_name(magic));
        audit.payload_blake2b = Some(hex::encode(blake2b_256(&request.payload)));
        // Classified first (pure parsing) so that a client's generic flood is refused before any other
        // work, while its consensus requests are never counted. A malformed payload is refused below, in
        // the usual order, once counted as generic.
        let classified = classify(&request.payload);
        let consensus = classified
            .as_ref()
            .ok()
            .and_then(|payload| watermark_position(pkh, &request.payload, payload));
        if let (None, Some(ip)) = (&consensus, request.client) {
            self.limits.admit_client(ip, RouteClass::GenericSigning)?;
        }
        // A coordinator is authenticated by its client certificate (required on /cosign) and the key's
        // `tls_clients`; the bakers' authentication keys are for the ordinary route.
        if request.route == SignRoute::Keys {
            audit.auth_key = rules.auth.authenticate(
                &pkh,
                &request.payload,
                request.authentication.as_deref(),
                request.scheme,
            )?;
        }
        let key = key(&rules, &pkh).await?;
        match (request.route, key.backend.share(&pkh)) {
            (SignRoute::Keys, Some(share)) => return Err(SignError::ShareOnly { pkh, id: share.id }),
            (SignRoute::Cosign, None) => return Err(SignError::NotAShare(pkh)),
            _ => {}
        }
        if rules.policy.for_key(&pkh).log_payloads {
            audit.payload = Some(hex::encode(&request.payload));
        }
        rules.policy.check_magic_byte(magic)?;
        let payload = classified?;
        if let Payload::Consensus(c) = &payload {
            audit.kind = Some(c.kind.name());
            // Before the watermark: a tag this key type never signs must not take the real request's place.
            c.operation.check_key_type(pkh.curve())?;
        }
        if let Some((mark, position)) = &consensus {
            (audit.chain, audit.level, audit.round) =
                (Some(mark.chain), Some(position.level), Some(position.round));
        }
        let caller = Caller {
            certificate: request.certificate.as_ref(),
        };
        let decision = rules.policy.check(&pkh, &caller, &request.payload, &payload)?;
        audit.rule = Some(decision.rule);
        if let Some(generic) = &decision.operations {
            audit.operations = generic.kinds();
        }
        if consensus.is_none() {
            self.limits.admit_generic(&pkh)?;
        }
        let protected = consensus.filter(|_| !self.unprotected.contains(&pkh));
        let Some((mark_key, mark_request)) = protected else {
            let signature = self
                .sign_and_verify(&key, pkh, request, consensus.is_some())
                .await?;
            return Ok(Signed {
                signature,
                replayed: false,
                consensus,
            });
        };
        match self.watermarks.history(&mark_key).await? {
            History::Unknown => return Err(WatermarkError::UnknownHistory { pkh }.into()),
            History::Floor(Some(floor)) if mark_request.level <= floor => {
                return Err(WatermarkError::BelowFloor {
                    pkh,
                    kind: mark_key.kind,
                    level: mark_request.level,
                    floor,
                }
                .into())
            }
            History::Known | History::Floor(_) => {}
        }
        let signed = match self.watermarks.reserve(mark_key, mark_request).await? {
            Reserved::Replay(signature) => {
                // The stored signature answers identical bytes, but only under the same BLS scheme.
                if !key
                    .backend
                    .verify(&key.info, &request.payload, &signature, request.scheme)
                {
                    return Err(SignError::ReplayVersionMismatch);
                }
                Ok(Signed {
                    signature,
                    replayed: true,
                    consensus,
                })
            }
            Reserved::Sign(ticket) => {
                let signature = match self.sign_and_verify(&key, pkh, request, true).await {
                    Ok(signature) => signature,
                    Err(e) => {
                        // Nothing was released: the position is free again.
                        ticket.abort().await;
                        return Err(e);
                    }
                };
                ticket.finish(signature).await?;
                Ok(Signed {
                    signature,
                    replayed: false,
                    consensus,
                })
            }
        };
        if signed.is_ok() {
            self.metrics
                .watermark(&pkh, mark_key.kind, mark_request.level.0, mark_request.round.0);
        }
        signed
    }

    async fn sign_and_verify(
        &self,
        key: &ServedKey,
        pkh: PublicKeyHash,
        request: &SignRequest,
        consensus: bool,
    ) -> Result<Signature, SignError> {
        let _slot = self.limits.backend_slot(consensus).await?;
        let started = std::time::Instant::now();
        let result = key.backend.sign(&pkh, &request.payload, request.scheme).await;
        self.metrics
            .backend_call(key.backend.kind(), result.is_ok(), started.elapsed());
        let signature = result.map_err(|e| match e {
            BackendError::WatermarkRefused(message) => SignError::CosignersRefused { pkh, message },
            e => SignError::Backend {
                pkh,
                message: e.to_string(),
            },
        })?;
        if !key
            .backend
            .verify(&key.info, &request.payload, &signature, request.scheme)
        {
            return Err(SignError::VerificationFailed(pkh));
        }
        Ok(signature)
    }
}

async fn key(rules: &Rules, pkh: &PublicKeyHash) -> Result<ServedKey, SignError> {
    rules.keyring.find(pkh).await.ok_or(SignError::UnknownKey(*pkh))
}

/// Where a payload sits for the watermark: consensus payloads by kind, legacy (Emmy) blocks and
/// endorsements, when allowed at all, under the block and attestation marks at round 0.
fn watermark_position(pkh: PublicKeyHash, bytes: &[u8], payload: &Payload) -> Option<(MarkKey, MarkRequest)> {
    let (chain, kind, level, round) = match *payload {
        Payload::Consensus(c) => (c.chain_id, c.kind, c.level, c.round),
        Payload::LegacyBlock { chain_id, level } => (chain_id, ConsensusKind::Block, level, Round(0)),
        Payload::LegacyEndorsement { chain_id, level } => {
            (chain_id, ConsensusKind::Attestation, level, Round(0))
        }
        _ => return None,
    };
    Some((
        MarkKey { chain, pkh, kind },
        MarkRequest {
            level,
            round,
            hash: blake2b_256(bytes),
        },
    ))
}
