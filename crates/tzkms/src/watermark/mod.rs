//! Double-signing protection: one high watermark per (chain, key, consensus kind), Octez's rule, and the
//! store trait that file and shared stores implement.
//!
//! A request strictly above the mark is signed and becomes the mark; the same level and round with the
//! same bytes gets the stored signature back (the backend is not asked again: an HSM's ECDSA is
//! randomised and a second signature would be a second, different block or operation); anything else is
//! refused.

pub mod azure_table;
pub mod file;
pub mod floor;
pub mod interchange;

use std::fmt;

use tezos::{ChainId, ConsensusKind, Level, PublicKeyHash, Round, Signature};

use crate::futures::BoxFuture;

/// What a mark is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MarkKey {
    pub chain: ChainId,
    pub pkh: PublicKeyHash,
    pub kind: ConsensusKind,
}

impl fmt::Display for MarkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} for {} on {}", self.kind, self.pkh, self.chain)
    }
}

/// The highest (level, round) signed for a key, the hash of the payload signed there, and the signature
/// returned (absent for marks imported from signers that do not keep it, or raised by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub level: Level,
    pub round: Round,
    pub hash: [u8; 32],
    pub signature: Option<Signature>,
}

impl Mark {
    fn position(&self) -> (Level, Round) {
        (self.level, self.round)
    }
}

/// The round of a mark that covers its whole level, whatever the round: octez-signer's marks of
/// pre-Tenderbake blocks carry no round, and octez-signer refuses every other block at their level. Tezos
/// encodes rounds as non-negative int32, so no payload is above this round at the same level; and it is an
/// Int32 in every store (the shared table included).
pub const WHOLE_LEVEL: Round = Round(i32::MAX as u32);

/// A mark's round as printed: `any` for [`WHOLE_LEVEL`].
pub fn round_text(round: Round) -> String {
    if round == WHOLE_LEVEL {
        "any".into()
    } else {
        round.to_string()
    }
}

/// A consensus request, as the watermark sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkRequest {
    pub level: Level,
    pub round: Round,
    pub hash: [u8; 32],
}

/// The decision for one request against the current mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Strictly above the mark (or no mark): sign, then record.
    Sign,
    /// Same level, round and bytes as the mark: answer with its stored signature.
    Replay(Signature),
    Refuse(Refusal),
}

/// Why a request was refused, with the stored position for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Below {
        stored: (Level, Round),
    },
    DifferentBytes {
        stored: (Level, Round),
    },
    /// Same bytes, but no signature was kept (an imported or hand-raised mark): signing again could make a
    /// different signature, so the request is refused like any other at the mark.
    NoStoredSignature {
        stored: (Level, Round),
    },
    /// No mark on this chain, and the store already has marks on `max` chains (`watermark.max_chains`):
    /// a caller inventing chain ids would otherwise grow the store without end.
    TooManyChains {
        in_use: usize,
        max: usize,
    },
}

/// Octez's `check_mark`, for a mark that may be absent.
pub fn decide(mark: Option<&Mark>, request: &MarkRequest) -> Decision {
    let Some(mark) = mark else {
        return Decision::Sign;
    };
    let requested = (request.level, request.round);
    let stored = mark.position();
    if requested > stored {
        return Decision::Sign;
    }
    if requested < stored {
        return Decision::Refuse(Refusal::Below { stored });
    }
    if request.hash != mark.hash {
        return Decision::Refuse(Refusal::DifferentBytes { stored });
    }
    match mark.signature {
        Some(signature) => Decision::Replay(signature),
        None => Decision::Refuse(Refusal::NoStoredSignature { stored }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    #[error("watermark: {kind} at level {level} round {round} for {pkh} on {chain} {why}", kind = .key.kind, pkh = .key.pkh, chain = .key.chain, level = .requested.0, round = .requested.1, why = why(.refusal))]
    Refused {
        key: MarkKey,
        requested: (Level, Round),
        refusal: Refusal,
    },
    /// The store cannot vouch for what the key signed before this data directory knew it (keys copied
    /// from elsewhere, imported, or met for the first time in a vault): nothing is signed until its old
    /// marks are imported or a floor is set.
    #[error(
        "watermark: {pkh} has no signing history in this signer's watermark store, so tzkms cannot know what \
         it signed elsewhere and refuses to sign consensus with it. Import its marks from the signer that \
         used it before (`tzkms watermark import --from octez|signatory|tzkms <path>`), or set a floor above \
         anything it may have signed: `tzkms watermark floor {pkh} --level <current head level>` \
         (`--level 0` only for a key that never signed). See docs/watermark.md#keys-without-history"
    )]
    UnknownHistory { pkh: PublicKeyHash },
    /// A floor set for the key (`tzkms watermark floor`) is at or above the request.
    #[error(
        "watermark: {kind} at level {level} for {pkh} is not above the floor set for this key (level {floor}); \
         only levels above it are signed"
    )]
    BelowFloor {
        pkh: PublicKeyHash,
        kind: ConsensusKind,
        level: Level,
        floor: Level,
    },
    /// The store could not be read or made durable: nothing is signed.
    #[error("watermark store: {0}")]
    Store(String),
}

impl WatermarkError {
    /// A refusal by the protection itself (409), as opposed to a store that failed (500).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, WatermarkError::Store(_))
    }
}

/// What a store knows of a key's past, for keys it may sign consensus with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// The store holds marks for the key (here, or in the shared table): its rules decide.
    Known,
    /// No marks yet, but the key was generated or created here (`None`), or a floor was set for it: only
    /// levels above the floor are signed.
    Floor(Option<Level>),
    /// Nothing vouches for the key: consensus is refused.
    Unknown,
}

fn why(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Below { stored } => {
            format!(
                "is not above the high watermark (level {} round {})",
                stored.0,
                round_text(stored.1)
            )
        }
        Refusal::DifferentBytes { stored } => format!(
            "already signed with different data (high watermark level {} round {})",
            stored.0,
            round_text(stored.1)
        ),
        Refusal::NoStoredSignature { stored } => format!(
            "is at the high watermark (level {} round {}) and no signature is stored for it",
            stored.0,
            round_text(stored.1)
        ),
        Refusal::TooManyChains { in_use, max } => format!(
            "is on a chain this store has no mark for, and it already has marks on {in_use} chains \
             (watermark.max_chains = {max}); nothing was signed. If this chain is real, raise [watermark] \
             max_chains; pin each key to its chains with policy.keys.<pkh>.chains"
        ),
    }
}

/// A reservation: the store decided to sign and holds the key until [`WatermarkStore::finish`] or drop.
/// Dropping a ticket (signing failed, request cancelled) leaves the mark as it was. `R` is the issuing
/// store's own [`WatermarkStore::Reservation`] (a lock guard, an ETag…), so a ticket can only be handed
/// back to the kind of store that issued it: a mix-up does not compile.
///
/// ```
/// use tzkms::watermark::{azure_table::TableStore, file::FileStore, Begin, MarkKey, MarkRequest, WatermarkStore};
/// async fn sign(file: &FileStore, _table: &TableStore, key: MarkKey, request: MarkRequest, signature: tezos::Signature) {
///     if let Ok(Begin::Sign(ticket)) = file.begin(key, request).await {
///         let _ = file.finish(ticket, signature).await;
///     }
/// }
/// ```
///
/// ```compile_fail
/// use tzkms::watermark::{azure_table::TableStore, file::FileStore, Begin, MarkKey, MarkRequest, WatermarkStore};
/// async fn sign(file: &FileStore, table: &TableStore, key: MarkKey, request: MarkRequest, signature: tezos::Signature) {
///     if let Ok(Begin::Sign(ticket)) = file.begin(key, request).await {
///         let _ = table.finish(ticket, signature).await; // a file store's ticket
///     }
/// }
/// ```
pub struct Ticket<R> {
    pub key: MarkKey,
    pub request: MarkRequest,
    pub state: R,
}

impl<R> fmt::Debug for Ticket<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("key", &self.key)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// What `begin` answers.
#[derive(Debug)]
pub enum Begin<R> {
    Sign(Ticket<R>),
    Replay(Signature),
}

/// A place where marks live. `begin` atomically checks the request against the mark and, if it may be
/// signed, reserves the key; `finish` records the signature durably before it may be released.
/// Requests for one key are decided one after the other; different keys proceed in parallel.
///
/// The signer holds whichever store the configuration names as a [`Watermarks`] trait object, which every
/// store is.
pub trait WatermarkStore: Send + Sync + fmt::Debug {
    /// What a ticket of this store holds between `begin` and `finish` or `abort`.
    type Reservation: Send;
    fn begin<'a>(
        &'a self,
        key: MarkKey,
        request: MarkRequest,
    ) -> BoxFuture<'a, Result<Begin<Self::Reservation>, WatermarkError>>;
    fn finish(
        &self,
        ticket: Ticket<Self::Reservation>,
        signature: Signature,
    ) -> BoxFuture<'_, Result<(), WatermarkError>>;
    /// Gives a reservation back when no signature was released (the backend failed, the signature did not
    /// verify): the position is free again. A store that reserves durably undoes its write here,
    /// conditionally; dropping the ticket instead does the same in the background.
    fn abort(&self, ticket: Ticket<Self::Reservation>) -> BoxFuture<'_, ()> {
        drop(ticket);
        Box::pin(async {})
    }
    /// What the store can vouch for about `key`'s past (see [`History`]).
    fn history<'a>(&'a self, key: &'a MarkKey) -> BoxFuture<'a, Result<History, WatermarkError>>;
    /// Every mark, for `watermark show` and export.
    fn snapshot(&self) -> BoxFuture<'_, Result<Vec<(MarkKey, Mark)>, WatermarkError>>;
    /// Readiness: whether the store takes a durable write now (one check per underlying store).
    fn probe(&self) -> BoxFuture<'_, Vec<crate::health::Check>> {
        Box::pin(async { Vec::new() })
    }
    /// One line for the startup summary: where the marks live.
    fn describe(&self) -> String {
        "watermark store".into()
    }
    /// The store's own metric families.
    fn write_metrics(&self, _out: &mut crate::metrics::Exposition) {}
}

/// A reservation held through [`Watermarks::reserve`]: it finishes or aborts in the store that issued it.
pub trait Held<'a>: Send {
    /// [`WatermarkStore::finish`] of the issuing store.
    fn finish(self: Box<Self>, signature: Signature) -> BoxFuture<'a, Result<(), WatermarkError>>;
    /// [`WatermarkStore::abort`] of the issuing store.
    fn abort(self: Box<Self>) -> BoxFuture<'a, ()>;
}

/// What [`Watermarks::reserve`] answers.
pub enum Reserved<'a> {
    Sign(Box<dyn Held<'a> + 'a>),
    Replay(Signature),
}

impl fmt::Debug for Reserved<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sign(_) => f.write_str("Sign(..)"),
            Self::Replay(signature) => f.debug_tuple("Replay").field(signature).finish(),
        }
    }
}

/// A store of any kind behind one object type (what the signer holds): [`WatermarkStore`] with the
/// reservation kept inside the answer of [`Watermarks::reserve`], together with the store it belongs to.
pub trait Watermarks: Send + Sync + fmt::Debug {
    /// [`WatermarkStore::begin`], its ticket bound to this store.
    fn reserve<'a>(
        &'a self,
        key: MarkKey,
        request: MarkRequest,
    ) -> BoxFuture<'a, Result<Reserved<'a>, WatermarkError>>;
    /// [`WatermarkStore::history`].
    fn history<'a>(&'a self, key: &'a MarkKey) -> BoxFuture<'a, Result<History, WatermarkError>>;
    /// [`WatermarkStore::snapshot`].
    fn snapshot(&self) -> BoxFuture<'_, Result<Vec<(MarkKey, Mark)>, WatermarkError>>;
    /// [`WatermarkStore::probe`].
    fn probe(&self) -> BoxFuture<'_, Vec<crate::health::Check>>;
    /// [`WatermarkStore::describe`].
    fn describe(&self) -> String;
    /// [`WatermarkStore::write_metrics`].
    fn write_metrics(&self, out: &mut crate::metrics::Exposition);
}

/// A ticket with the store that issued it.
struct Bound<'a, S: WatermarkStore> {
    store: &'a S,
    ticket: Ticket<S::Reservation>,
}

impl<'a, S: WatermarkStore> Held<'a> for Bound<'a, S> {
    fn finish(self: Box<Self>, signature: Signature) -> BoxFuture<'a, Result<(), WatermarkError>> {
        self.store.finish(self.ticket, signature)
    }

    fn abort(self: Box<Self>) -> BoxFuture<'a, ()> {
        self.store.abort(self.ticket)
    }
}

impl<S: WatermarkStore> Watermarks for S {
    fn reserve<'a>(
        &'a self,
        key: MarkKey,
        request: MarkRequest,
    ) -> BoxFuture<'a, Result<Reserved<'a>, WatermarkError>> {
        Box::pin(async move {
            Ok(match WatermarkStore::begin(self, key, request).await? {
                Begin::Sign(ticket) => Reserved::Sign(Box::new(Bound { store: self, ticket })),
                Begin::Replay(signature) => Reserved::Replay(signature),
            })
        })
    }
    fn history<'a>(&'a self, key: &'a MarkKey) -> BoxFuture<'a, Result<History, WatermarkError>> {
        WatermarkStore::history(self, key)
    }
    fn snapshot(&self) -> BoxFuture<'_, Result<Vec<(MarkKey, Mark)>, WatermarkError>> {
        WatermarkStore::snapshot(self)
    }
    fn probe(&self) -> BoxFuture<'_, Vec<crate::health::Check>> {
        WatermarkStore::probe(self)
    }
    fn describe(&self) -> String {
        WatermarkStore::describe(self)
    }
    fn write_metrics(&self, out: &mut crate::metrics::Exposition) {
        WatermarkStore::write_metrics(self, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(level: u32, round: u32, hash: u8, signed: bool) -> Mark {
        Mark {
            level: Level(level),
            round: Round(round),
            hash: [hash; 32],
            signature: signed.then_some(Signature::Generic([hash; 64])),
        }
    }

    fn req(level: u32, round: u32, hash: u8) -> MarkRequest {
        MarkRequest {
            level: Level(level),
            round: Round(round),
            hash: [hash; 32],
        }
    }

    #[test]
    fn decision_table() {
        let at = |l, r| (Level(l), Round(r));
        let cases: Vec<(Option<Mark>, MarkRequest, Decision)> = vec![
            (None, req(0, 0, 1), Decision::Sign),
            (None, req(100, 3, 1), Decision::Sign),
            (Some(mark(10, 2, 1, true)), req(11, 0, 2), Decision::Sign),
            (Some(mark(10, 2, 1, true)), req(10, 3, 2), Decision::Sign),
            (
                Some(mark(10, 2, 1, true)),
                req(10, 2, 1),
                Decision::Replay(Signature::Generic([1; 64])),
            ),
            (
                Some(mark(10, 2, 1, true)),
                req(10, 2, 2),
                Decision::Refuse(Refusal::DifferentBytes { stored: at(10, 2) }),
            ),
            (
                Some(mark(10, 2, 1, true)),
                req(10, 1, 1),
                Decision::Refuse(Refusal::Below { stored: at(10, 2) }),
            ),
            (
                Some(mark(10, 2, 1, true)),
                req(9, 5, 1),
                Decision::Refuse(Refusal::Below { stored: at(10, 2) }),
            ),
            // Legacy or imported marks without a signature: strictly above only.
            (
                Some(mark(10, 2, 1, false)),
                req(10, 2, 1),
                Decision::Refuse(Refusal::NoStoredSignature { stored: at(10, 2) }),
            ),
            (
                Some(mark(10, 2, 1, false)),
                req(10, 2, 9),
                Decision::Refuse(Refusal::DifferentBytes { stored: at(10, 2) }),
            ),
            (Some(mark(10, 2, 1, false)), req(10, 3, 1), Decision::Sign),
        ];
        for (i, (m, r, expected)) in cases.into_iter().enumerate() {
            assert_eq!(decide(m.as_ref(), &r), expected, "case {i}");
        }
    }

    proptest::proptest! {
        /// Whatever the order of requests, signed positions strictly increase, one payload at most is
        /// signed per position, and a replay only ever answers the identical payload.
        #[test]
        fn decisions_are_monotonic(requests in proptest::collection::vec((0u32..6, 0u32..3, 0u8..3), 1..60)) {
            let mut mark: Option<Mark> = None;
            let mut signed: Vec<((Level, Round), u8)> = Vec::new();
            for (level, round, hash) in requests {
                let r = req(level, round, hash);
                match decide(mark.as_ref(), &r) {
                    Decision::Sign => {
                        if let Some(((l, rd), _)) = signed.last() {
                            proptest::prop_assert!((r.level, r.round) > (*l, *rd));
                        }
                        signed.push(((r.level, r.round), hash));
                        mark = Some(Mark { level: r.level, round: r.round, hash: r.hash, signature: Some(Signature::Generic([hash; 64])) });
                    }
                    Decision::Replay(sig) => {
                        let m = mark.as_ref().unwrap();
                        proptest::prop_assert_eq!((m.level, m.round, m.hash), (r.level, r.round, r.hash));
                        proptest::prop_assert_eq!(sig, Signature::Generic([hash; 64]));
                    }
                    Decision::Refuse(_) => {}
                }
            }
            let mut positions: Vec<_> = signed.iter().map(|(p, _)| *p).collect();
            positions.dedup();
            proptest::prop_assert_eq!(positions.len(), signed.len());
        }
    }

    #[test]
    fn refusal_message_names_kind_chain_key_and_both_positions() {
        let key = MarkKey {
            chain: ChainId([0x7a, 0x06, 0xa7, 0x70]),
            pkh: "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx".parse().unwrap(),
            kind: ConsensusKind::Attestation,
        };
        let e = WatermarkError::Refused {
            key,
            requested: (Level(120), Round(0)),
            refusal: Refusal::DifferentBytes {
                stored: (Level(120), Round(0)),
            },
        };
        assert_eq!(
            e.to_string(),
            "watermark: attestation at level 120 round 0 for tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx on \
             NetXdQprcVkpaWU already signed with different data (high watermark level 120 round 0)"
        );
    }
}
