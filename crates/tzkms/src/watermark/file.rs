//! The file watermark store: every mark in `<data_dir>/watermarks.json`, rewritten atomically (write a
//! temporary file, fsync it, rename it over the store, fsync the directory) before any signature it
//! covers is released. Writes from many keys are grouped: while one rewrite is on disk, the marks that
//! arrive meanwhile queue up and go into the next one, so a burst of hundreds of keys costs a handful of
//! fsyncs rather than one each in sequence.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tezos::Signature;
use tokio::sync::{mpsc, oneshot, OwnedMutexGuard};

use super::interchange::{self, Marks};
use super::{
    decide, floor, Begin, Decision, History, Mark, MarkKey, MarkRequest, Ticket, WatermarkError,
    WatermarkStore,
};
use crate::backend::BoxFuture;

pub const STORE_FILE: &str = "watermarks.json";
/// Written once when the store is created. If it exists and the store does not, the store was lost and
/// tzkms refuses to start rather than begin again from level 0.
pub const MARKER_FILE: &str = "watermarks.initialized";
const TMP_FILE: &str = "watermarks.json.tmp";
/// Most marks written in one rewrite.
const MAX_BATCH: usize = 8192;

type Slot = Arc<tokio::sync::Mutex<Option<Mark>>>;

/// A mark to make durable, or (`None`) a readiness probe: a rewrite of the current marks through the same
/// path, so the probe fails exactly when a mark's write would.
struct WriteJob {
    mark: Option<(MarkKey, Mark)>,
    done: oneshot::Sender<Result<(), String>>,
}

#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    data_dir: PathBuf,
    slots: Mutex<HashMap<MarkKey, Slot>>,
    /// Which positions and keys have a durable mark (for [`WatermarkStore::history`], without taking a
    /// slot's lock).
    marked: Mutex<Marked>,
    writer: mpsc::UnboundedSender<WriteJob>,
    /// Durable rewrites and failed ones (for metrics).
    writes: Arc<WriteCounters>,
}

#[derive(Debug, Default)]
struct Marked {
    keys: HashSet<MarkKey>,
    pkhs: HashSet<tezos::PublicKeyHash>,
}

impl Marked {
    fn insert(&mut self, key: MarkKey) {
        self.pkhs.insert(key.pkh);
        self.keys.insert(key);
    }
}

#[derive(Debug, Default)]
struct WriteCounters {
    ok: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    marks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteJob")
            .field("key", &self.mark.as_ref().map(|(k, _)| k))
            .finish_non_exhaustive()
    }
}

/// What opening found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// No store and no marker: a new, empty store was created.
    Initialized,
    /// An existing store with this many marks.
    Loaded(usize),
}

fn store_err(path: &Path, what: impl std::fmt::Display) -> WatermarkError {
    WatermarkError::Store(format!("{}: {what}", path.display()))
}

/// Reads the store of `data_dir` for tools that do not serve (show, export). Refuses a lost store like
/// `open` does; a data directory that was never initialised has no marks.
pub fn read(data_dir: &Path) -> Result<Marks, WatermarkError> {
    let path = data_dir.join(STORE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => interchange::decode(&text).map_err(|e| unreadable(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if data_dir.join(MARKER_FILE).exists() {
                Err(lost(&path))
            } else {
                Ok(Marks::new())
            }
        }
        Err(e) => Err(store_err(&path, e)),
    }
}

fn unreadable(path: &Path, e: String) -> WatermarkError {
    store_err(
        path,
        format!(
            "unreadable ({e}). tzkms will not sign against an unknown watermark: restore the file from a \
             backup or a `tzkms watermark export`, or see docs/watermark.md"
        ),
    )
}

fn lost(path: &Path) -> WatermarkError {
    store_err(
        path,
        format!(
            "missing, but this data directory's watermark store was initialised ({MARKER_FILE} exists). \
             tzkms will not start again from level 0: restore the file from a backup or import an export \
             (see docs/watermark.md)"
        ),
    )
}

/// Writes `marks` as the store of `data_dir`, durably.
pub fn write(data_dir: &Path, marks: &Marks) -> Result<(), WatermarkError> {
    write_durably(data_dir, &interchange::encode(marks)).map_err(|e| store_err(&data_dir.join(STORE_FILE), e))
}

/// Creates (or truncates) `path` readable by this user only, whatever the umask.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn write_durably(data_dir: &Path, text: &str) -> std::io::Result<()> {
    let tmp = data_dir.join(TMP_FILE);
    let mut file = create_private(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, data_dir.join(STORE_FILE))?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// Writes, fsyncs and removes a small file in `data_dir`, for `config check`, which must not touch the
/// store a running server owns. (A running server's readiness probes through its writer instead.)
pub fn probe_write(data_dir: &Path) -> std::io::Result<()> {
    let path = data_dir.join(format!(".config-check-probe-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(b"tzkms config check probe\n")?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Records that `data_dir` has a watermark store (done by `open` and by tools that write one).
pub fn mark_initialized(data_dir: &Path) -> Result<(), WatermarkError> {
    if data_dir.join(MARKER_FILE).exists() {
        return Ok(());
    }
    write_marker(data_dir).map_err(|e| store_err(&data_dir.join(MARKER_FILE), e))
}

fn write_marker(data_dir: &Path) -> std::io::Result<()> {
    let path = data_dir.join(MARKER_FILE);
    let mut file = create_private(&path)?;
    writeln!(
        file,
        "The watermark store {STORE_FILE} of this directory was created here. Do not delete this file: \
         it tells tzkms that a missing {STORE_FILE} was lost."
    )?;
    file.sync_all()?;
    std::fs::File::open(data_dir)?.sync_all()
}

impl FileStore {
    /// Opens (or, for a fresh data directory, creates) the store and starts its writer task. Must be
    /// called inside a tokio runtime.
    pub fn open(data_dir: &Path) -> Result<(Self, Opened), WatermarkError> {
        let path = data_dir.join(STORE_FILE);
        let tmp = data_dir.join(TMP_FILE);
        if tmp.is_file() {
            // A rewrite interrupted by a crash: the store itself is the previous complete version.
            let _ = std::fs::remove_file(&tmp);
        }
        let (marks, opened) = if path.exists() || data_dir.join(MARKER_FILE).exists() {
            let marks = read(data_dir)?;
            if !data_dir.join(MARKER_FILE).exists() {
                write_marker(data_dir).map_err(|e| store_err(&path, e))?;
            }
            let n = marks.len();
            (marks, Opened::Loaded(n))
        } else {
            let marks = Marks::new();
            write(data_dir, &marks)?;
            write_marker(data_dir).map_err(|e| store_err(&path, e))?;
            (marks, Opened::Initialized)
        };
        let slots = marks
            .iter()
            .map(|(k, m)| (*k, Arc::new(tokio::sync::Mutex::new(Some(m.clone())))))
            .collect();
        let mut marked = Marked::default();
        marks.keys().for_each(|k| marked.insert(*k));
        let (tx, rx) = mpsc::unbounded_channel();
        let writes = Arc::new(WriteCounters::default());
        tokio::spawn(writer(data_dir.to_owned(), marks, rx, writes.clone()));
        Ok((
            Self {
                path,
                data_dir: data_dir.to_owned(),
                slots: Mutex::new(slots),
                marked: Mutex::new(marked),
                writer: tx,
                writes,
            },
            opened,
        ))
    }

    /// The mark of `key`, if it has one (waits for a signature in flight at that position).
    pub async fn mark(&self, key: &MarkKey) -> Option<Mark> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()?;
        let mark = slot.lock().await.clone();
        mark
    }

    fn slot(&self, key: &MarkKey) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(*key).or_default().clone()
    }
}

/// The one task that rewrites the file. It owns the durable state; slots only change after it confirms.
async fn writer(
    data_dir: PathBuf,
    mut marks: Marks,
    mut jobs: mpsc::UnboundedReceiver<WriteJob>,
    writes: Arc<WriteCounters>,
) {
    use std::sync::atomic::Ordering;
    let mut encoded = interchange::EncodedMarks::new(&marks);
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let previous: Vec<(MarkKey, Option<Mark>)> = batch
            .iter()
            .filter_map(|job| job.mark.as_ref())
            .map(|(key, mark)| {
                encoded.insert(*key, mark);
                (*key, marks.insert(*key, mark.clone()))
            })
            .collect();
        let text = encoded.encode();
        let dir = data_dir.clone();
        let result = tokio::task::spawn_blocking(move || write_durably(&dir, &text))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match &result {
            Ok(()) => writes.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => writes.failed.fetch_add(1, Ordering::Relaxed),
        };
        writes.marks.store(marks.len() as u64, Ordering::Relaxed);
        if result.is_err() {
            // Not durable: the marks stay as they were on disk, and no signature is released.
            for (key, old) in previous {
                match old {
                    Some(m) => {
                        encoded.insert(key, &m);
                        marks.insert(key, m);
                    }
                    None => {
                        encoded.remove(&key);
                        marks.remove(&key);
                    }
                };
            }
        }
        for job in batch {
            let _ = job.done.send(result.clone());
        }
    }
}

impl WatermarkStore for FileStore {
    fn begin<'a>(
        &'a self,
        key: MarkKey,
        request: MarkRequest,
    ) -> BoxFuture<'a, Result<Begin, WatermarkError>> {
        Box::pin(async move {
            let guard: OwnedMutexGuard<Option<Mark>> = self.slot(&key).lock_owned().await;
            match decide(guard.as_ref(), &request) {
                Decision::Sign => Ok(Begin::Sign(Ticket {
                    key,
                    request,
                    state: Box::new(guard),
                })),
                Decision::Replay(signature) => Ok(Begin::Replay(signature)),
                Decision::Refuse(refusal) => Err(WatermarkError::Refused {
                    key,
                    requested: (request.level, request.round),
                    refusal,
                }),
            }
        })
    }

    fn finish(&self, ticket: Ticket, signature: Signature) -> BoxFuture<'_, Result<(), WatermarkError>> {
        Box::pin(async move {
            let Ok(mut guard) = ticket.state.downcast::<OwnedMutexGuard<Option<Mark>>>() else {
                return Err(WatermarkError::Store("ticket from another store".into()));
            };
            let mark = Mark {
                level: ticket.request.level,
                round: ticket.request.round,
                hash: ticket.request.hash,
                signature: Some(signature),
            };
            let (done, confirmed) = oneshot::channel();
            self.writer
                .send(WriteJob {
                    mark: Some((ticket.key, mark.clone())),
                    done,
                })
                .map_err(|_| store_err(&self.path, "writer stopped"))?;
            confirmed
                .await
                .map_err(|_| store_err(&self.path, "writer stopped"))?
                .map_err(|e| store_err(&self.path, format!("cannot write: {e}; nothing was signed")))?;
            **guard = Some(mark);
            self.marked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ticket.key);
            Ok(())
        })
    }

    /// A position with a mark is decided by it; an empty one by the key's floor (read from disk each
    /// time, so a floor set while serving counts), else by the key's marks at other positions.
    fn history<'a>(&'a self, key: &'a MarkKey) -> BoxFuture<'a, Result<History, WatermarkError>> {
        Box::pin(async move {
            let key_known = {
                let marked = self.marked.lock().unwrap_or_else(|p| p.into_inner());
                if marked.keys.contains(key) {
                    return Ok(History::Known);
                }
                marked.pkhs.contains(&key.pkh)
            };
            Ok(match floor::read(&self.data_dir, &key.pkh)? {
                Some(level) => History::Floor(level),
                None if key_known => History::Known,
                None => History::Unknown,
            })
        })
    }

    /// Rewrites the current marks durably through the writer, as a signature's mark would be written.
    fn probe(&self) -> BoxFuture<'_, Vec<crate::health::Check>> {
        Box::pin(async move {
            use crate::health::Check;
            let (done, confirmed) = oneshot::channel();
            let result = match self.writer.send(WriteJob { mark: None, done }) {
                Err(_) => Err("the writer task stopped".to_owned()),
                Ok(()) => confirmed
                    .await
                    .unwrap_or_else(|_| Err("the writer task stopped".to_owned())),
            };
            let name = "watermark:file";
            vec![match result {
                Ok(()) => Check::pass(name, format!("{} written and fsync'd", self.path.display())),
                Err(e) => Check::fail(
                    name,
                    format!(
                        "{} cannot be written: {e}; consensus signatures are refused",
                        self.path.display()
                    ),
                ),
            }]
        })
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn write_metrics(&self, out: &mut crate::metrics::Exposition) {
        use std::sync::atomic::Ordering;
        out.family(
            "tzkms_watermark_file_writes_total",
            "counter",
            "Durable rewrites of the watermark file (each covers a batch of marks), by result.",
        );
        for (result, n) in [("ok", &self.writes.ok), ("failed", &self.writes.failed)] {
            out.sample(
                "tzkms_watermark_file_writes_total",
                &[("result", result)],
                n.load(Ordering::Relaxed),
            );
        }
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Vec<(MarkKey, Mark)>, WatermarkError>> {
        Box::pin(async move {
            let slots: Vec<(MarkKey, Slot)> = {
                let map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                map.iter().map(|(k, s)| (*k, s.clone())).collect()
            };
            let mut out = Vec::new();
            for (key, slot) in slots {
                if let Some(mark) = slot.lock().await.clone() {
                    out.push((key, mark));
                }
            }
            out.sort_by_key(|(key, _)| *key);
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tezos::{ChainId, ConsensusKind, Level, Round};

    fn key() -> MarkKey {
        MarkKey {
            chain: ChainId([1, 2, 3, 4]),
            pkh: "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx".parse().unwrap(),
            kind: ConsensusKind::Preattestation,
        }
    }

    fn req(level: u32, hash: u8) -> MarkRequest {
        MarkRequest {
            level: Level(level),
            round: Round(0),
            hash: [hash; 32],
        }
    }

    async fn sign(store: &FileStore, level: u32, hash: u8) -> Result<Signature, WatermarkError> {
        match store.begin(key(), req(level, hash)).await? {
            Begin::Replay(s) => Ok(s),
            Begin::Sign(ticket) => {
                let sig = Signature::Generic([hash; 64]);
                store.finish(ticket, sig).await?;
                Ok(sig)
            }
        }
    }

    #[tokio::test]
    async fn marks_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, opened) = FileStore::open(dir.path()).unwrap();
        assert_eq!(opened, Opened::Initialized);
        sign(&store, 5, 1).await.unwrap();
        drop(store);
        let (store, opened) = FileStore::open(dir.path()).unwrap();
        assert_eq!(opened, Opened::Loaded(1));
        assert!(matches!(
            sign(&store, 5, 2).await,
            Err(WatermarkError::Refused { .. })
        ));
        assert_eq!(sign(&store, 5, 1).await.unwrap(), Signature::Generic([1; 64]));
        assert!(matches!(
            sign(&store, 4, 1).await,
            Err(WatermarkError::Refused { .. })
        ));
    }

    #[tokio::test]
    async fn a_dropped_ticket_leaves_the_mark_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileStore::open(dir.path()).unwrap();
        sign(&store, 5, 1).await.unwrap();
        let Begin::Sign(ticket) = store.begin(key(), req(6, 2)).await.unwrap() else {
            panic!("expected to sign")
        };
        drop(ticket);
        // Level 6 was never recorded: a different payload at level 6 may still be signed.
        sign(&store, 6, 3).await.unwrap();
        assert_eq!(read(dir.path()).unwrap()[&key()].hash, [3; 32]);
    }

    #[tokio::test]
    async fn lost_truncated_or_corrupt_stores_refuse_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileStore::open(dir.path()).unwrap();
        sign(&store, 5, 1).await.unwrap();
        drop(store);
        let path = dir.path().join(STORE_FILE);
        let full = std::fs::read(&path).unwrap();

        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        let err = FileStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("unreadable"), "{err}");

        std::fs::write(&path, b"").unwrap();
        assert!(FileStore::open(dir.path())
            .unwrap_err()
            .to_string()
            .contains("unreadable"));

        std::fs::write(
            &path,
            b"{\"format\":\"tzkms-watermarks\",\"version\":9,\"marks\":[]}",
        )
        .unwrap();
        assert!(FileStore::open(dir.path())
            .unwrap_err()
            .to_string()
            .contains("version 9"));

        std::fs::remove_file(&path).unwrap();
        let err = FileStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("level 0"), "{err}");

        std::fs::write(&path, &full).unwrap();
        FileStore::open(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_releases_nothing_and_keeps_the_old_mark() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileStore::open(dir.path()).unwrap();
        sign(&store, 5, 1).await.unwrap();
        // A directory where the temporary file goes makes every rewrite fail, even for root.
        std::fs::create_dir(dir.path().join(TMP_FILE)).unwrap();
        let err = sign(&store, 6, 2).await.unwrap_err().to_string();
        assert!(err.contains("cannot write"), "{err}");
        assert_eq!(read(dir.path()).unwrap()[&key()].level, Level(5));
        std::fs::remove_dir(dir.path().join(TMP_FILE)).unwrap();
        sign(&store, 6, 3).await.unwrap();
        assert_eq!(read(dir.path()).unwrap()[&key()].hash, [3; 32]);
    }
}
