//! The shared watermark store for several tzkms instances: one Azure Table Storage entity per (chain, key,
//! kind), changed only by conditional writes (insert, or replace with the ETag last read). Each instance
//! caches the entity and its ETag, so the common case is one round trip to reserve a position (a
//! conditional replace) and one to record the signature; a write that loses a race (409/412) re-reads and
//! re-decides. If the table cannot be reached within the budget, nothing is signed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tezos::{Level, Round, Signature};
use tokio::sync::OwnedMutexGuard;

use super::file::FileStore;
use super::interchange::Marks;
use super::{
    decide, Begin, Decision, History, Mark, MarkKey, MarkRequest, Ticket, WatermarkError, WatermarkStore,
};
use crate::azure::table::{Entity, TableClient, TableError, WriteOutcome};
use crate::futures::BoxFuture;

/// Attempts at one decision when other instances keep winning the race.
const MAX_RACES: usize = 16;

/// What this instance last knew of an entity: `None` inside = the entity does not exist.
#[derive(Debug, Clone)]
struct Known {
    mark: Option<Mark>,
    etag: Option<String>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Known>>>;

#[derive(Debug)]
pub struct TableStore {
    client: Arc<TableClient>,
    budget: Duration,
    /// Written into each entity, for operators reading the table.
    writer: String,
    slots: Mutex<HashMap<MarkKey, Slot>>,
    /// Keys whose partition holds marks (only ever grows: marks are never deleted by tzkms).
    known_keys: Mutex<std::collections::HashSet<tezos::PublicKeyHash>>,
}

/// A position reserved in the table and not yet recorded. Unless it is recorded ([`TableStore::finish`])
/// or given back ([`WatermarkStore::abort`]), dropping it gives it back in the background: the entity is
/// restored to what it was, conditionally on the reservation's ETag, so a position nothing was signed at
/// is never left blocked, and a position another instance moved since is never touched.
pub struct Reservation {
    guard: Option<OwnedMutexGuard<Option<Known>>>,
    undo: Undo,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").finish_non_exhaustive()
    }
}

/// What it takes to give a reservation back.
#[derive(Clone)]
struct Undo {
    client: Arc<TableClient>,
    budget: Duration,
    writer: String,
    key: MarkKey,
    /// The entity before the reservation; `None`: there was none.
    previous: Option<Mark>,
    /// The reservation's ETag.
    etag: String,
}

impl Undo {
    /// Restores the entity if it still holds this reservation; `Ok(false)` if it changed meanwhile.
    async fn run(&self) -> Result<bool, WatermarkError> {
        let (pk, rk) = (self.key.pkh.to_string(), row_key(&self.key));
        let outcome = match &self.previous {
            None => self.client.delete(&pk, &rk, &self.etag, self.budget).await,
            Some(mark) => {
                let entity = entity_of(&self.key, mark, &self.writer);
                self.client
                    .replace(&pk, &rk, &self.etag, &entity, self.budget)
                    .await
            }
        }
        .map_err(store_err)?;
        Ok(matches!(outcome, WriteOutcome::Written(_)))
    }

    async fn run_logged(&self) {
        match self.run().await {
            Ok(true) => {
                tracing::info!(key = %self.key, "shared watermark: reservation given back, nothing was signed")
            }
            Ok(false) => {
                tracing::info!(key = %self.key, "shared watermark: reservation not given back: another instance moved the mark since")
            }
            Err(e) => tracing::warn!(
                key = %self.key,
                error = %e,
                "shared watermark: could not give back a reservation although nothing was signed; the position \
                 stays blocked (the baker moves on to the next round)"
            ),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let undo = self.undo.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // The slot stays locked until the undo is done, so this instance decides nothing meanwhile.
        runtime.spawn(async move {
            undo.run_logged().await;
            *guard = None;
        });
    }
}

/// Readiness probes write one row per instance here; no key address starts with `_`.
pub const HEALTH_PARTITION: &str = "_health";

fn row_key(key: &MarkKey) -> String {
    format!("{}-{}", key.chain, key.kind.name())
}

fn entity_of(key: &MarkKey, mark: &Mark, writer: &str) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("PartitionKey".into(), key.pkh.to_string().into());
    p.insert("RowKey".into(), row_key(key).into());
    p.insert("Chain".into(), key.chain.to_string().into());
    p.insert("Kind".into(), key.kind.name().into());
    p.insert("Level".into(), i64::from(mark.level.0).into());
    p.insert("Round".into(), i64::from(mark.round.0).into());
    p.insert("Hash".into(), hex::encode(mark.hash).into());
    p.insert(
        "Signature".into(),
        mark.signature.map(|s| s.to_string()).unwrap_or_default().into(),
    );
    p.insert("Writer".into(), writer.into());
    p
}

fn mark_of(p: &Map<String, Value>) -> Result<Mark, String> {
    let int = |name: &str| -> Result<u32, String> {
        let v = p.get(name).unwrap_or(&Value::Null);
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("{name} is not a level/round: {v}"))
    };
    let hash: [u8; 32] = hex::decode(p.get("Hash").unwrap_or(&Value::Null).as_str().unwrap_or(""))
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("Hash is not 32 bytes of hex")?;
    let signature = match p.get("Signature").unwrap_or(&Value::Null).as_str().unwrap_or("") {
        "" => None,
        s => Some(s.parse::<Signature>().map_err(|e| format!("Signature: {e}"))?),
    };
    Ok(Mark {
        level: Level(int("Level")?),
        round: Round(int("Round")?),
        hash,
        signature,
    })
}

/// The key an entity is for.
fn key_of(p: &Map<String, Value>) -> Result<MarkKey, String> {
    Ok(MarkKey {
        chain: p
            .get("Chain")
            .unwrap_or(&Value::Null)
            .as_str()
            .unwrap_or("")
            .parse()
            .map_err(|e| format!("Chain: {e}"))?,
        pkh: p
            .get("PartitionKey")
            .unwrap_or(&Value::Null)
            .as_str()
            .unwrap_or("")
            .parse()
            .map_err(|e| format!("PartitionKey: {e}"))?,
        kind: p
            .get("Kind")
            .unwrap_or(&Value::Null)
            .as_str()
            .unwrap_or("")
            .parse()?,
    })
}

fn store_err(e: TableError) -> WatermarkError {
    WatermarkError::Store(format!("{e}; nothing was signed"))
}

impl TableStore {
    pub fn new(client: Arc<TableClient>, budget: Duration, writer: String) -> Self {
        Self {
            client,
            budget,
            writer,
            slots: Mutex::new(HashMap::new()),
            known_keys: Mutex::new(Default::default()),
        }
    }

    pub fn client(&self) -> &Arc<TableClient> {
        &self.client
    }

    fn slot(&self, key: &MarkKey) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(*key).or_default().clone()
    }

    async fn read(&self, key: &MarkKey) -> Result<Known, WatermarkError> {
        match self
            .client
            .get(&key.pkh.to_string(), &row_key(key), self.budget)
            .await
            .map_err(store_err)?
        {
            None => Ok(Known {
                mark: None,
                etag: None,
            }),
            Some(Entity { etag, properties }) => Ok(Known {
                mark: Some(mark_of(&properties).map_err(|e| {
                    WatermarkError::Store(format!(
                        "table entity for {key} is unreadable: {e}; nothing was signed"
                    ))
                })?),
                etag: Some(etag),
            }),
        }
    }

    /// Writes `mark` if the entity is still as `known` says; `None` if another writer got there first.
    async fn write(
        &self,
        key: &MarkKey,
        known: &Known,
        mark: &Mark,
    ) -> Result<Option<String>, WatermarkError> {
        let entity = entity_of(key, mark, &self.writer);
        let outcome = match &known.etag {
            None => self.client.insert(&entity, self.budget).await,
            Some(etag) => {
                self.client
                    .replace(&key.pkh.to_string(), &row_key(key), etag, &entity, self.budget)
                    .await
            }
        }
        .map_err(store_err)?;
        Ok(match outcome {
            WriteOutcome::Written(etag) => Some(etag),
            WriteOutcome::Conflict => None,
        })
    }

    /// Every mark in the table (for `watermark show --store table` and export).
    pub async fn all(&self) -> Result<Marks, WatermarkError> {
        let mut marks = Marks::new();
        for e in self.client.scan(self.budget * 10).await.map_err(store_err)? {
            if e.properties
                .get("PartitionKey")
                .and_then(Value::as_str)
                .is_some_and(|pk| pk == HEALTH_PARTITION)
            {
                continue;
            }
            let key = key_of(&e.properties).map_err(WatermarkError::Store)?;
            marks.insert(key, mark_of(&e.properties).map_err(WatermarkError::Store)?);
        }
        Ok(marks)
    }

    /// Raises `key` to `mark` (its hash and signature included) if it is higher than what the table
    /// holds: conditional writes, retried on races. Decided on this instance's cached entity when that is
    /// already at or above `mark`, with no request.
    pub async fn raise(&self, key: &MarkKey, mark: &Mark) -> Result<bool, WatermarkError> {
        let mut guard = self.slot(key).lock_owned().await;
        let at_or_above = |known: &Known| {
            known
                .mark
                .as_ref()
                .is_some_and(|m| (m.level, m.round) >= (mark.level, mark.round))
        };
        if guard.as_ref().is_some_and(at_or_above) {
            return Ok(false);
        }
        for _ in 0..MAX_RACES {
            let known = self.read(key).await?;
            if at_or_above(&known) {
                *guard = Some(known);
                return Ok(false);
            }
            match self.write(key, &known, mark).await {
                Ok(Some(etag)) => {
                    *guard = Some(Known {
                        mark: Some(mark.clone()),
                        etag: Some(etag),
                    });
                    self.known_keys
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key.pkh);
                    return Ok(true);
                }
                Ok(None) => {}
                Err(e) => {
                    *guard = None;
                    return Err(e);
                }
            }
        }
        *guard = None;
        Err(WatermarkError::Store(format!(
            "{key}: lost {MAX_RACES} races in a row"
        )))
    }
}

impl WatermarkStore for TableStore {
    type Reservation = Reservation;

    fn begin<'a>(
        &'a self,
        key: MarkKey,
        request: MarkRequest,
    ) -> BoxFuture<'a, Result<Begin<Reservation>, WatermarkError>> {
        Box::pin(async move {
            let mut guard: OwnedMutexGuard<Option<Known>> = self.slot(&key).lock_owned().await;
            for _ in 0..MAX_RACES {
                let known = match guard.as_ref() {
                    Some(k) => k.clone(),
                    None => {
                        let k = self.read(&key).await?;
                        *guard = Some(k.clone());
                        k
                    }
                };
                match decide(known.mark.as_ref(), &request) {
                    // A refusal or a replay decided on a cached mark stays right: marks only rise, and a
                    // replayed signature is one already released for these exact bytes.
                    Decision::Replay(signature) => return Ok(Begin::Replay(signature)),
                    Decision::Refuse(refusal) => {
                        // Refresh the cache so the next request decides on current data.
                        *guard = None;
                        return Err(WatermarkError::Refused {
                            key,
                            requested: (request.level, request.round),
                            refusal,
                        });
                    }
                    Decision::Sign => {
                        let reserved = Mark {
                            level: request.level,
                            round: request.round,
                            hash: request.hash,
                            signature: None,
                        };
                        match self.write(&key, &known, &reserved).await {
                            Ok(Some(etag)) => {
                                *guard = Some(Known {
                                    mark: Some(reserved),
                                    etag: Some(etag.clone()),
                                });
                                let undo = Undo {
                                    client: self.client.clone(),
                                    budget: self.budget,
                                    writer: self.writer.clone(),
                                    key,
                                    previous: known.mark,
                                    etag,
                                };
                                return Ok(Begin::Sign(Ticket {
                                    key,
                                    request,
                                    state: Reservation {
                                        guard: Some(guard),
                                        undo,
                                    },
                                }));
                            }
                            // Another instance moved the mark: read it and decide again.
                            Ok(None) => *guard = None,
                            Err(e) => {
                                *guard = None;
                                return Err(e);
                            }
                        }
                    }
                }
            }
            Err(WatermarkError::Store(format!(
                "{key}: lost {MAX_RACES} races in a row; nothing was signed"
            )))
        })
    }

    /// Records the signature with the reservation's ETag. The position was reserved durably before
    /// signing, so if this write fails the signature is still safe to release: only identical replays on
    /// other instances are refused (they find no stored signature).
    fn finish(
        &self,
        ticket: Ticket<Reservation>,
        signature: Signature,
    ) -> BoxFuture<'_, Result<(), WatermarkError>> {
        Box::pin(async move {
            let mut reservation = ticket.state;
            // From here on the reservation is never given back: the signature may be released.
            let Some(mut guard) = reservation.guard.take() else {
                return Ok(());
            };
            let Some(known) = guard.clone() else {
                return Ok(());
            };
            let mark = Mark {
                level: ticket.request.level,
                round: ticket.request.round,
                hash: ticket.request.hash,
                signature: Some(signature),
            };
            match self.write(&ticket.key, &known, &mark).await {
                Ok(Some(etag)) => {
                    *guard = Some(Known {
                        mark: Some(mark),
                        etag: Some(etag),
                    });
                    self.known_keys
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(ticket.key.pkh);
                }
                Ok(None) => *guard = None,
                Err(e) => {
                    tracing::warn!(key = %ticket.key, error = %e, "shared watermark: signature not recorded");
                    *guard = None;
                }
            }
            Ok(())
        })
    }

    fn abort(&self, ticket: Ticket<Reservation>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut reservation = ticket.state;
            if let Some(mut guard) = reservation.guard.take() {
                reservation.undo.run_logged().await;
                *guard = None;
            }
        })
    }

    /// Known if the key's partition holds any mark (checked once per key, then remembered).
    fn history<'a>(&'a self, key: &'a MarkKey) -> BoxFuture<'a, Result<History, WatermarkError>> {
        Box::pin(async move {
            if self
                .known_keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&key.pkh)
            {
                return Ok(History::Known);
            }
            let held = self
                .client
                .partition_has_rows(&key.pkh.to_string(), self.budget)
                .await
                .map_err(store_err)?;
            if !held {
                return Ok(History::Unknown);
            }
            self.known_keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.pkh);
            Ok(History::Known)
        })
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Vec<(MarkKey, Mark)>, WatermarkError>> {
        Box::pin(async move { Ok(self.all().await?.into_iter().collect()) })
    }

    /// Writes this host's row of the `_health` partition (one row per host, whatever the restarts).
    fn probe(&self) -> BoxFuture<'_, Vec<crate::health::Check>> {
        Box::pin(async move {
            let host = self
                .writer
                .rsplit_once(':')
                .map_or(self.writer.as_str(), |(h, _)| h);
            let host = if host.is_empty() { "unknown-host" } else { host };
            let mut p = Map::new();
            p.insert("PartitionKey".into(), HEALTH_PARTITION.into());
            p.insert("RowKey".into(), host.into());
            p.insert("Writer".into(), self.writer.clone().into());
            p.insert(
                "ProbedAt".into(),
                httpdate::fmt_http_date(std::time::SystemTime::now()).into(),
            );
            let name = "watermark:table";
            let table = format!("table {} at {}", self.client.table(), self.client.endpoint());
            vec![
                match self.client.upsert(HEALTH_PARTITION, host, &p, self.budget).await {
                    Ok(()) => crate::health::Check::pass(name, format!("{table} writable")),
                    Err(e) => crate::health::Check::fail(
                        name,
                        format!("{table}: {e}; consensus signatures are refused"),
                    ),
                },
            ]
        })
    }

    fn describe(&self) -> String {
        format!(
            "shared table {} at {}",
            self.client.table(),
            self.client.endpoint()
        )
    }

    fn write_metrics(&self, out: &mut crate::metrics::Exposition) {
        self.client.write_metrics(out);
    }
}

/// A local store and a shared store that must both agree before anything is signed. The table is kept at
/// or above every local mark: [`BothStores::new`] raises it from the local store, and a request the local
/// store refuses raises that key's entity first (an instance that signed on its file store alone must
/// never let another sign below it).
#[derive(Debug)]
pub struct BothStores {
    local: Arc<FileStore>,
    shared: Arc<TableStore>,
}

impl BothStores {
    /// Joins the stores after raising the table to every local mark (hash and signature included, so an
    /// identical replay on any instance gets this instance's signature back). Returns how many entities
    /// were raised.
    pub async fn new(
        local: Arc<FileStore>,
        shared: Arc<TableStore>,
    ) -> Result<(Self, usize), WatermarkError> {
        let table = shared.all().await?;
        let mut raised = 0;
        for (key, mark) in local.snapshot().await? {
            let behind = table
                .get(&key)
                .is_none_or(|t| (t.level, t.round) < (mark.level, mark.round));
            if behind && shared.raise(&key, &mark).await? {
                tracing::info!(%key, level = %mark.level, round = %mark.round, "shared watermark raised from the local store");
                raised += 1;
            }
        }
        Ok((Self { local, shared }, raised))
    }

    pub fn local(&self) -> &Arc<FileStore> {
        &self.local
    }

    pub fn shared(&self) -> &Arc<TableStore> {
        &self.shared
    }

    /// Raises the table to the local mark of `key`, if it is behind.
    async fn raise_from_local(&self, key: &MarkKey) -> Result<(), WatermarkError> {
        if let Some(mark) = self.local.mark(key).await {
            self.shared.raise(key, &mark).await?;
        }
        Ok(())
    }
}

impl WatermarkStore for BothStores {
    /// The local store's ticket, then the table's.
    type Reservation = (Ticket<super::file::Reservation>, Ticket<Reservation>);

    fn begin<'a>(
        &'a self,
        key: MarkKey,
        request: MarkRequest,
    ) -> BoxFuture<'a, Result<Begin<Self::Reservation>, WatermarkError>> {
        Box::pin(async move {
            let local = match self.local.begin(key, request).await {
                // This instance signed these exact bytes: its own signature answers.
                Ok(Begin::Replay(signature)) => return Ok(Begin::Replay(signature)),
                Ok(Begin::Sign(ticket)) => ticket,
                Err(refused @ WatermarkError::Refused { .. }) => {
                    // The local mark is at or above the request: make sure the table is too, so that no
                    // other instance signs below what this one signed.
                    if let Err(e) = self.raise_from_local(&key).await {
                        tracing::warn!(%key, error = %e, "shared watermark: could not raise it to the local mark");
                    }
                    return Err(refused);
                }
                Err(e) => return Err(e),
            };
            match self.shared.begin(key, request).await {
                Ok(Begin::Sign(shared)) => Ok(Begin::Sign(Ticket {
                    key,
                    request,
                    state: (local, shared),
                })),
                // Another instance signed these exact bytes: answer with its signature, and remember it.
                Ok(Begin::Replay(signature)) => {
                    self.local.finish(local, signature).await?;
                    Ok(Begin::Replay(signature))
                }
                Err(e) => {
                    self.local.abort(local).await;
                    Err(e)
                }
            }
        })
    }

    fn finish(
        &self,
        ticket: Ticket<Self::Reservation>,
        signature: Signature,
    ) -> BoxFuture<'_, Result<(), WatermarkError>> {
        Box::pin(async move {
            let (local, shared) = ticket.state;
            if let Err(e) = self.local.finish(local, signature).await {
                // Nothing is released: the table's reservation is given back too.
                self.shared.abort(shared).await;
                return Err(e);
            }
            self.shared.finish(shared, signature).await
        })
    }

    fn abort(&self, ticket: Ticket<Self::Reservation>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (local, shared) = ticket.state;
            self.local.abort(local).await;
            self.shared.abort(shared).await;
        })
    }

    /// The local store vouches first (marks, floors); a key it knows nothing of may be known to the table.
    fn history<'a>(&'a self, key: &'a MarkKey) -> BoxFuture<'a, Result<History, WatermarkError>> {
        Box::pin(async move {
            match self.local.history(key).await? {
                History::Unknown => self.shared.history(key).await,
                known => Ok(known),
            }
        })
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Vec<(MarkKey, Mark)>, WatermarkError>> {
        self.shared.snapshot()
    }

    fn probe(&self) -> BoxFuture<'_, Vec<crate::health::Check>> {
        Box::pin(async move {
            let (mut local, shared) = tokio::join!(self.local.probe(), self.shared.probe());
            local.extend(shared);
            local
        })
    }

    fn describe(&self) -> String {
        format!(
            "{}, and {} (both must agree)",
            self.local.describe(),
            self.shared.describe()
        )
    }

    fn write_metrics(&self, out: &mut crate::metrics::Exposition) {
        self.local.write_metrics(out);
        self.shared.write_metrics(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tezos::{ChainId, ConsensusKind};

    #[test]
    fn entities_round_trip() {
        let key = MarkKey {
            chain: ChainId([1, 2, 3, 4]),
            pkh: "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx".parse().unwrap(),
            kind: ConsensusKind::Attestation,
        };
        let mark = Mark {
            level: Level(7),
            round: Round(2),
            hash: [9; 32],
            signature: Some(Signature::Generic([4; 64])),
        };
        let e = entity_of(&key, &mark, "test");
        assert_eq!(mark_of(&e).unwrap(), mark);
        assert_eq!(key_of(&e).unwrap(), key);
        let unsigned = Mark {
            signature: None,
            ..mark
        };
        assert_eq!(mark_of(&entity_of(&key, &unsigned, "t")).unwrap(), unsigned);
    }

    #[test]
    fn foreign_rows_are_errors_not_panics() {
        let mut p = Map::new();
        p.insert("PartitionKey".into(), HEALTH_PARTITION.into());
        p.insert("RowKey".into(), "host".into());
        assert!(key_of(&p).is_err());
        assert!(mark_of(&p).is_err());
        assert!(mark_of(&Map::new()).is_err());
    }
}
