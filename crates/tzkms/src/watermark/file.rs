//! The file watermark store: a snapshot of every mark in `<data_dir>/watermarks.json` (the export format)
//! and a log, `<data_dir>/watermarks.log`, of the marks recorded since, one self-checking line each. A
//! batch of marks is appended to the log and fdatasync'd before any signature it covers is released, so
//! a signature writes a few hundred bytes however many marks the store holds. Writes from many keys are
//! grouped: while one append is on disk, the marks that arrive meanwhile queue up for the next one. When
//! the log holds many more lines than there are marks, the writer folds it into a new snapshot (written
//! atomically) and then starts an empty log; replaying keeps each key's highest mark, so a crash between
//! the two steps reopens to the same marks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tezos::{ChainId, Signature};
use tokio::sync::{mpsc, oneshot, OwnedMutexGuard};

use super::interchange::{self, Marks};
use super::{
    decide, floor, Begin, Decision, History, Mark, MarkKey, MarkRequest, Refusal, Ticket, WatermarkError,
    WatermarkStore,
};
use crate::futures::BoxFuture;

/// The snapshot, in the format of `tzkms watermark export`.
pub const STORE_FILE: &str = "watermarks.json";
/// The marks recorded since the snapshot, one line each: `<checksum> <mark as one line of JSON>`.
pub const LOG_FILE: &str = "watermarks.log";
/// Written once when the store is created. If it exists and the store does not, the store was lost and
/// tzkms refuses to start rather than begin again from level 0.
pub const MARKER_FILE: &str = "watermarks.initialized";
pub use crate::config::DEFAULT_MAX_CHAINS;
const TMP_FILE: &str = "watermarks.json.tmp";
const LOG_TMP_FILE: &str = "watermarks.log.tmp";
const MARKER_TMP_FILE: &str = "watermarks.initialized.tmp";
/// Most marks written in one append.
const MAX_BATCH: usize = 8192;
/// A log is folded into the snapshot once it has more lines than this and than twice the marks: the
/// snapshot's rewrite, whose cost grows with the marks, is then paid once per as many signatures.
const COMPACT_MIN_LINES: usize = 4096;

fn should_compact(lines: usize, marks: usize) -> bool {
    lines > COMPACT_MIN_LINES.max(2 * marks)
}

type Slot = Arc<tokio::sync::Mutex<Option<Mark>>>;

/// A mark to make durable, or (`None`) a readiness probe: an empty line appended and fsync'd through the
/// same path, so the probe fails exactly when a mark's append would.
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
    /// The chains with marks, and those with a signature under way; see `claim_chain`.
    chains: Arc<Mutex<ChainBook>>,
    /// Most distinct chains (0: no bound).
    max_chains: usize,
    writer: mpsc::UnboundedSender<WriteJob>,
    /// Durable appends and failed ones (for metrics).
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
    compactions: std::sync::atomic::AtomicU64,
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

/// The chains the store has marks on, and those a signature on a new chain is under way for (counted
/// against the bound until it is recorded or abandoned, so concurrent requests cannot overshoot it).
#[derive(Debug, Default)]
struct ChainBook {
    marked: BTreeSet<ChainId>,
    pending: BTreeMap<ChainId, usize>,
}

impl ChainBook {
    fn in_use(&self) -> usize {
        self.marked.len() + self.pending.keys().filter(|c| !self.marked.contains(c)).count()
    }
}

/// A signature under way on a chain that had no mark when it began; dropping it releases the chain
/// unless the mark was recorded.
#[derive(Debug)]
struct ChainClaim {
    book: Arc<Mutex<ChainBook>>,
    chain: ChainId,
}

impl Drop for ChainClaim {
    fn drop(&mut self) {
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = book.pending.get_mut(&self.chain) {
            *n -= 1;
            if *n == 0 {
                book.pending.remove(&self.chain);
            }
        }
    }
}

/// What a file store's ticket holds: the key's slot, locked, and the claim on a new chain if any.
pub struct Reservation {
    guard: OwnedMutexGuard<Option<Mark>>,
    claim: Option<ChainClaim>,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").finish_non_exhaustive()
    }
}

/// The distinct chains of `marks`.
pub fn chains_of(marks: &Marks) -> BTreeSet<ChainId> {
    marks.keys().map(|k| k.chain).collect()
}

/// The chains in use and the bound, for the startup summary and `config check`.
pub fn describe_chains(chains: &BTreeSet<ChainId>, max_chains: usize) -> String {
    const LISTED: usize = 5;
    let mut names: Vec<String> = chains.iter().take(LISTED).map(ToString::to_string).collect();
    if chains.len() > LISTED {
        names.push(format!("and {} more", chains.len() - LISTED));
    }
    let names = if names.is_empty() {
        "none yet".to_owned()
    } else {
        names.join(", ")
    };
    match max_chains {
        0 => format!(
            "marks on {} chain(s): {names}; no bound on chains (watermark.max_chains = 0)",
            chains.len()
        ),
        max if chains.len() > max => format!(
            "marks on {} chain(s): {names}; above watermark.max_chains = {max}: no new chain is accepted",
            chains.len()
        ),
        max => format!(
            "marks on {} of at most {max} chain(s) (watermark.max_chains): {names}",
            chains.len()
        ),
    }
}

/// What the files of a store hold.
#[derive(Debug)]
struct Loaded {
    marks: Marks,
    /// Lines of the log, empty ones included.
    lines: usize,
    /// The log's length, `None` when there is no log.
    log_len: Option<u64>,
    /// The length of the log's complete lines; less than `log_len` when the last line is torn.
    complete_len: u64,
}

/// The checksum of a log line: the first 8 bytes of the BLAKE2b-256 of its JSON, in hex.
fn checksum(json: &[u8]) -> String {
    hex::encode(&tezos::blake2b_256(json)[..8])
}

fn log_line(key: &MarkKey, mark: &Mark) -> String {
    let json = interchange::encode_entry(key, mark);
    format!("{} {json}\n", checksum(json.as_bytes()))
}

fn parse_line(line: &[u8]) -> Result<(MarkKey, Mark), String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_owned())?;
    let (sum, json) = text.split_once(' ').ok_or_else(|| "no checksum".to_owned())?;
    if sum != checksum(json.as_bytes()) {
        return Err("checksum mismatch".into());
    }
    interchange::decode_entry(json)
}

/// Replays a log over `marks`: each key keeps its highest (level, round), a later line winning at an
/// equal one. Empty lines (readiness probes) are skipped. Returns the number of complete lines and
/// their length; a last line without its newline is torn (an append cut short, whose signature was
/// never released) and left out.
fn replay(path: &Path, log: &[u8], marks: &mut Marks) -> Result<(usize, u64), WatermarkError> {
    let complete = log.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut lines = 0;
    for (i, line) in log[..complete].split_inclusive(|&b| b == b'\n').enumerate() {
        lines += 1;
        let line = &line[..line.len() - 1];
        if line.is_empty() {
            continue;
        }
        let (key, mark) = parse_line(line).map_err(|e| damaged(path, i + 1, &e))?;
        let keep_old = marks
            .get(&key)
            .is_some_and(|old| (old.level, old.round) > (mark.level, mark.round));
        if !keep_old {
            marks.insert(key, mark);
        }
    }
    Ok((lines, complete as u64))
}

fn damaged(path: &Path, line: usize, e: &str) -> WatermarkError {
    store_err(
        path,
        format!(
            "line {line} is unreadable ({e}). tzkms will not sign against an unknown watermark: restore \
             {STORE_FILE} and {LOG_FILE} together from a backup, or see docs/watermark.md (\"Missing or \
             damaged store\")"
        ),
    )
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, WatermarkError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(store_err(path, e)),
    }
}

/// Whether the marker was written by a tzkms that keeps a log (an older one only had the snapshot).
fn marker_knows_the_log(data_dir: &Path) -> bool {
    std::fs::read_to_string(data_dir.join(MARKER_FILE)).is_ok_and(|t| t.contains(LOG_FILE))
}

/// Reads the snapshot and the log, refusing lost or damaged files. `None`: a data directory that never
/// had a store. The log is read first: a compaction between the two reads then leaves a newer snapshot
/// over an older log, which replays to the same marks.
fn load(data_dir: &Path) -> Result<Option<Loaded>, WatermarkError> {
    let path = data_dir.join(STORE_FILE);
    let log_path = data_dir.join(LOG_FILE);
    let log = read_optional(&log_path)?;
    let Some(snapshot) = read_optional(&path)? else {
        if data_dir.join(MARKER_FILE).exists() {
            return Err(lost(&path));
        }
        if log.is_some() {
            return Err(store_err(
                &path,
                format!(
                    "missing, but {LOG_FILE} exists: the store is incomplete. tzkms will not start again \
                     from level 0: restore {STORE_FILE} from a backup (see docs/watermark.md)"
                ),
            ));
        }
        return Ok(None);
    };
    let text = String::from_utf8(snapshot).map_err(|_| unreadable(&path, "not UTF-8".into()))?;
    let mut marks = interchange::decode(&text).map_err(|e| unreadable(&path, e))?;
    let Some(log) = log else {
        if marker_knows_the_log(data_dir) {
            return Err(lost(&log_path));
        }
        // A store written by a tzkms without a log.
        return Ok(Some(Loaded {
            marks,
            lines: 0,
            log_len: None,
            complete_len: 0,
        }));
    };
    let (lines, complete_len) = replay(&log_path, &log, &mut marks)?;
    Ok(Some(Loaded {
        marks,
        lines,
        log_len: Some(log.len() as u64),
        complete_len,
    }))
}

/// Reads the store of `data_dir` (snapshot and log) for tools that do not serve (show, export, config
/// check); safe while a server runs. Refuses a lost or damaged store like `open` does; a data directory
/// that was never initialised has no marks.
pub fn read(data_dir: &Path) -> Result<Marks, WatermarkError> {
    Ok(load(data_dir)?.map_or_else(Marks::new, |l| l.marks))
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

/// Writes `marks` as the store of `data_dir`, durably: a new snapshot, then an empty log. For tools that
/// hold the data directory's lock (import, set).
pub fn write(data_dir: &Path, marks: &Marks) -> Result<(), WatermarkError> {
    let text = interchange::encode(marks);
    compact(data_dir, &text).map_err(|(e, _)| store_err(&data_dir.join(STORE_FILE), e))
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

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces `data_dir/name` with `bytes` atomically: a temporary file, fsync'd, renamed over it, and the
/// directory fsync'd. Returns whether the rename happened, with the first error.
fn replace_durably(data_dir: &Path, name: &str, tmp: &str, bytes: &[u8]) -> (bool, std::io::Result<()>) {
    let tmp = data_dir.join(tmp);
    let written = (|| {
        let mut file = create_private(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        return (false, Err(e));
    }
    if let Err(e) = std::fs::rename(&tmp, data_dir.join(name)) {
        return (false, Err(e));
    }
    (true, sync_dir(data_dir))
}

/// Writes `snapshot` (the encoded marks) as the store's snapshot, then replaces the log with an empty one.
/// A crash in between leaves the old log beside the new snapshot: replaying it changes nothing, since
/// every mark in it is at or below the snapshot's. On error, says whether the log was replaced.
fn compact(data_dir: &Path, snapshot: &str) -> Result<(), (std::io::Error, bool)> {
    replace_durably(data_dir, STORE_FILE, TMP_FILE, snapshot.as_bytes())
        .1
        .map_err(|e| (e, false))?;
    match replace_durably(data_dir, LOG_FILE, LOG_TMP_FILE, b"") {
        (_, Ok(())) => Ok(()),
        (replaced, Err(e)) => Err((e, replaced)),
    }
}

/// Appends `bytes` to the log, whose length this process knows to be `expected`, and fdatasyncs it.
/// Returns the new length. The log must exist: one deleted under a running server would come back
/// without its marks. Bytes past `expected` are the rest of an append that failed, and are cut first;
/// a shorter log was changed by someone else, and is not written to.
fn append(path: &Path, expected: u64, bytes: &[u8]) -> std::io::Result<u64> {
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    let len = file.metadata()?.len();
    if len < expected {
        return Err(std::io::Error::other(format!(
            "{LOG_FILE} is {len} bytes but this process wrote {expected}: it was changed by something else; \
             restart tzkms to re-read the store"
        )));
    }
    if len > expected {
        file.set_len(expected)?;
    }
    let written = file.write_all(bytes).and_then(|()| file.sync_data());
    if let Err(e) = written {
        // Best effort: a partial line left here would otherwise sit in the middle of the next append.
        // If this fails too, the next append cuts it first.
        let _ = file.set_len(expected);
        return Err(e);
    }
    Ok(expected + bytes.len() as u64)
}

/// Cuts a torn last line off the log and makes that durable.
fn cut_torn_line(path: &Path, complete_len: u64) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(complete_len)?;
    file.sync_all()
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
    if marker_knows_the_log(data_dir) {
        return Ok(());
    }
    write_marker(data_dir).map_err(|e| store_err(&data_dir.join(MARKER_FILE), e))
}

fn write_marker(data_dir: &Path) -> std::io::Result<()> {
    let text = format!(
        "The watermark store of this directory, {STORE_FILE} and its log {LOG_FILE}, was created here. Do \
         not delete this file: it tells tzkms that a missing {STORE_FILE} or {LOG_FILE} was lost.\n"
    );
    replace_durably(data_dir, MARKER_FILE, MARKER_TMP_FILE, text.as_bytes()).1
}

impl FileStore {
    /// Opens the store with the default bound on chains; see [`FileStore::open_with`].
    pub fn open(data_dir: &Path) -> Result<(Self, Opened), WatermarkError> {
        Self::open_with(data_dir, DEFAULT_MAX_CHAINS)
    }

    /// Opens (or, for a fresh data directory, creates) the store and starts its writer task. A torn last
    /// log line is cut off, a large log folded into the snapshot. Marks on a chain the store has no mark
    /// for are refused once it has marks on `max_chains` chains (0: no bound). Must be called inside a
    /// tokio runtime.
    pub fn open_with(data_dir: &Path, max_chains: usize) -> Result<(Self, Opened), WatermarkError> {
        let path = data_dir.join(STORE_FILE);
        let log_path = data_dir.join(LOG_FILE);
        for tmp in [TMP_FILE, LOG_TMP_FILE, MARKER_TMP_FILE] {
            // A replacement interrupted by a crash: the file itself is the previous complete version.
            let tmp = data_dir.join(tmp);
            if tmp.is_file() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        let (marks, mut lines, opened) = match load(data_dir)? {
            None => {
                write(data_dir, &Marks::new())?;
                write_marker(data_dir).map_err(|e| store_err(&path, e))?;
                (Marks::new(), 0, Opened::Initialized)
            }
            Some(loaded) => {
                match loaded.log_len {
                    None => {
                        // Upgrading a store from before the log.
                        replace_durably(data_dir, LOG_FILE, LOG_TMP_FILE, b"")
                            .1
                            .map_err(|e| store_err(&log_path, e))?;
                    }
                    Some(len) if len > loaded.complete_len => {
                        tracing::warn!(
                            log = %log_path.display(),
                            bytes = len - loaded.complete_len,
                            "the last line of the watermark log is incomplete (an append cut short by a \
                             crash, whose signature was never returned): cut off"
                        );
                        cut_torn_line(&log_path, loaded.complete_len).map_err(|e| store_err(&log_path, e))?;
                    }
                    Some(_) => {}
                }
                if !marker_knows_the_log(data_dir) {
                    write_marker(data_dir).map_err(|e| store_err(&path, e))?;
                }
                let n = loaded.marks.len();
                (loaded.marks, loaded.lines, Opened::Loaded(n))
            }
        };
        if should_compact(lines, marks.len()) {
            write(data_dir, &marks)?;
            lines = 0;
        }
        let log_len = std::fs::metadata(&log_path)
            .map_err(|e| store_err(&log_path, e))?
            .len();
        let slots = marks
            .iter()
            .map(|(k, m)| (*k, Arc::new(tokio::sync::Mutex::new(Some(m.clone())))))
            .collect();
        let mut marked = Marked::default();
        marks.keys().for_each(|k| marked.insert(*k));
        let chains = Arc::new(Mutex::new(ChainBook {
            marked: chains_of(&marks),
            pending: BTreeMap::new(),
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let writes = Arc::new(WriteCounters::default());
        writes
            .marks
            .store(marks.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let log = Log {
            data_dir: data_dir.to_owned(),
            marks,
            lines,
            len: log_len,
            compact_after: 0,
        };
        tokio::spawn(writer(log, rx, writes.clone()));
        Ok((
            Self {
                path,
                data_dir: data_dir.to_owned(),
                slots: Mutex::new(slots),
                marked: Mutex::new(marked),
                chains,
                max_chains,
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

    /// Admits a request on `chain`: free on a chain with marks, else counted against `max_chains` until
    /// its mark is recorded or the ticket dropped. Refused before anything is reserved or written.
    fn claim_chain(&self, key: MarkKey, request: &MarkRequest) -> Result<Option<ChainClaim>, WatermarkError> {
        let mut book = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        if book.marked.contains(&key.chain) {
            return Ok(None);
        }
        if self.max_chains != 0 && !book.pending.contains_key(&key.chain) && book.in_use() >= self.max_chains
        {
            let in_use = book.in_use();
            return Err(WatermarkError::Refused {
                key,
                requested: (request.level, request.round),
                refusal: Refusal::TooManyChains {
                    in_use,
                    max: self.max_chains,
                },
            });
        }
        *book.pending.entry(key.chain).or_default() += 1;
        Ok(Some(ChainClaim {
            book: self.chains.clone(),
            chain: key.chain,
        }))
    }
}

/// The writer's durable state: every mark, and the log's line count and length.
struct Log {
    data_dir: PathBuf,
    marks: Marks,
    lines: usize,
    len: u64,
    /// After a failed compaction, the line count before trying again.
    compact_after: usize,
}

/// The one task that appends to the log. It owns the durable state; slots only change after it confirms.
async fn writer(mut log: Log, mut jobs: mpsc::UnboundedReceiver<WriteJob>, writes: Arc<WriteCounters>) {
    use std::sync::atomic::Ordering;
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut text = String::new();
        let mut lines = 0;
        for (key, mark) in batch.iter().filter_map(|job| job.mark.as_ref()) {
            text.push_str(&log_line(key, mark));
            lines += 1;
        }
        if lines == 0 {
            // Only readiness probes: one empty line, written and synced like a mark.
            text.push('\n');
            lines = 1;
        }
        let path = log.data_dir.join(LOG_FILE);
        let expected = log.len;
        let result = tokio::task::spawn_blocking(move || append(&path, expected, text.as_bytes()))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match &result {
            Ok(len) => {
                writes.ok.fetch_add(1, Ordering::Relaxed);
                log.len = *len;
                log.lines += lines;
                for (key, mark) in batch.iter().filter_map(|job| job.mark.as_ref()) {
                    log.marks.insert(*key, mark.clone());
                }
            }
            // Not durable: the marks stay as they were on disk, and no signature is released.
            Err(_) => {
                writes.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        writes.marks.store(log.marks.len() as u64, Ordering::Relaxed);
        let result = result.map(|_| ());
        for job in batch {
            let _ = job.done.send(result.clone());
        }
        if should_compact(log.lines, log.marks.len()) && log.lines > log.compact_after {
            compact_log(&mut log, &writes).await;
        }
    }
}

/// Folds the log into a new snapshot. Runs after the batch that filled the log was answered; marks
/// arriving meanwhile wait for it. A failure leaves the log as it is (its marks are durable there).
async fn compact_log(log: &mut Log, writes: &WriteCounters) {
    let marks = log.marks.clone();
    let dir = log.data_dir.clone();
    let result = tokio::task::spawn_blocking(move || compact(&dir, &interchange::encode(&marks))).await;
    match result {
        Ok(Ok(())) => {
            writes
                .compactions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log.lines = 0;
            log.len = 0;
            log.compact_after = 0;
        }
        Ok(Err((e, log_replaced))) => {
            if log_replaced {
                log.lines = 0;
                log.len = 0;
            }
            log.compact_after = log.lines + COMPACT_MIN_LINES;
            tracing::warn!(error = %e, dir = %log.data_dir.display(), "could not fold the watermark log into a new snapshot; will retry");
        }
        Err(e) => {
            log.compact_after = log.lines + COMPACT_MIN_LINES;
            tracing::warn!(error = %e, "watermark log compaction task failed; will retry");
        }
    }
}

impl WatermarkStore for FileStore {
    type Reservation = Reservation;

    fn begin<'a>(
        &'a self,
        key: MarkKey,
        request: MarkRequest,
    ) -> BoxFuture<'a, Result<Begin<Reservation>, WatermarkError>> {
        Box::pin(async move {
            let claim = self.claim_chain(key, &request)?;
            let guard: OwnedMutexGuard<Option<Mark>> = self.slot(&key).lock_owned().await;
            match decide(guard.as_ref(), &request) {
                Decision::Sign => Ok(Begin::Sign(Ticket {
                    key,
                    request,
                    state: Reservation { guard, claim },
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

    fn finish(
        &self,
        ticket: Ticket<Reservation>,
        signature: Signature,
    ) -> BoxFuture<'_, Result<(), WatermarkError>> {
        Box::pin(async move {
            let mut reservation = ticket.state;
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
            *reservation.guard = Some(mark);
            if reservation.claim.is_some() {
                let mut book = self.chains.lock().unwrap_or_else(|p| p.into_inner());
                book.marked.insert(ticket.key.chain);
            }
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
    /// Appends an empty line to the log and fsyncs it through the writer, as a signature's mark would be.
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
            let log = self.path.with_file_name(LOG_FILE);
            vec![match result {
                Ok(()) => Check::pass(name, format!("{} written and fsync'd", log.display())),
                Err(e) => Check::fail(
                    name,
                    format!(
                        "{} cannot be written: {e}; consensus signatures are refused",
                        log.display()
                    ),
                ),
            }]
        })
    }

    fn describe(&self) -> String {
        let book = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        format!(
            "file {} and {LOG_FILE}, {}",
            self.path.display(),
            describe_chains(&book.marked, self.max_chains)
        )
    }

    fn write_metrics(&self, out: &mut crate::metrics::Exposition) {
        use std::sync::atomic::Ordering;
        out.family(
            "tzkms_watermark_file_writes_total",
            "counter",
            "Durable appends to the watermark log (each covers a batch of marks), by result.",
        );
        for (result, n) in [("ok", &self.writes.ok), ("failed", &self.writes.failed)] {
            out.sample(
                "tzkms_watermark_file_writes_total",
                &[("result", result)],
                n.load(Ordering::Relaxed),
            );
        }
        out.family(
            "tzkms_watermark_file_compactions_total",
            "counter",
            "Times the watermark log was folded into a new snapshot.",
        );
        out.sample(
            "tzkms_watermark_file_compactions_total",
            &[],
            self.writes.compactions.load(Ordering::Relaxed),
        );
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
    use tezos::{ConsensusKind, Level, Round};

    fn key_on(chain: u8) -> MarkKey {
        MarkKey {
            chain: ChainId([chain, 2, 3, 4]),
            pkh: "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx".parse().unwrap(),
            kind: ConsensusKind::Preattestation,
        }
    }

    fn key() -> MarkKey {
        key_on(1)
    }

    fn req(level: u32, hash: u8) -> MarkRequest {
        MarkRequest {
            level: Level(level),
            round: Round(0),
            hash: [hash; 32],
        }
    }

    fn mark(level: u32, round: u32, hash: u8) -> Mark {
        Mark {
            level: Level(level),
            round: Round(round),
            hash: [hash; 32],
            signature: Some(Signature::Generic([hash; 64])),
        }
    }

    async fn sign_on(
        store: &FileStore,
        key: MarkKey,
        level: u32,
        hash: u8,
    ) -> Result<Signature, WatermarkError> {
        match store.begin(key, req(level, hash)).await? {
            Begin::Replay(s) => Ok(s),
            Begin::Sign(ticket) => {
                let sig = Signature::Generic([hash; 64]);
                store.finish(ticket, sig).await?;
                Ok(sig)
            }
        }
    }

    async fn sign(store: &FileStore, level: u32, hash: u8) -> Result<Signature, WatermarkError> {
        sign_on(store, key(), level, hash).await
    }

    fn log_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(LOG_FILE)).unwrap().len()
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
    async fn every_file_of_the_store_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileStore::open(dir.path()).unwrap();
        sign(&store, 5, 1).await.unwrap();
        for name in [STORE_FILE, LOG_FILE, MARKER_FILE] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{name}: {mode:o}");
        }
    }

    #[test]
    fn replay_keeps_each_keys_highest_mark_and_the_later_of_equals() {
        // (snapshot mark, log lines as (level, round, hash) or an empty line, expected (level, round, hash))
        type At = (u32, u32, u8);
        let cases: Vec<(Option<At>, Vec<Option<At>>, At)> = vec![
            (None, vec![Some((5, 0, 1))], (5, 0, 1)),
            (None, vec![Some((5, 0, 1)), Some((6, 0, 2))], (6, 0, 2)),
            (None, vec![Some((6, 0, 2)), Some((5, 0, 1))], (6, 0, 2)),
            (None, vec![Some((5, 1, 1)), Some((5, 0, 2))], (5, 1, 1)),
            (None, vec![Some((5, 0, 1)), Some((5, 0, 2))], (5, 0, 2)),
            (None, vec![None, Some((5, 0, 1)), None], (5, 0, 1)),
            // An old log beside a newer snapshot (a crash between a compaction's two steps).
            (Some((7, 0, 9)), vec![Some((6, 0, 1)), Some((7, 0, 9))], (7, 0, 9)),
            (Some((7, 0, 9)), vec![Some((7, 1, 3))], (7, 1, 3)),
        ];
        for (i, (snapshot, lines, expected)) in cases.into_iter().enumerate() {
            let mut marks = Marks::new();
            if let Some((l, r, h)) = snapshot {
                marks.insert(key(), mark(l, r, h));
            }
            let text: String = lines
                .iter()
                .map(|line| match line {
                    Some((l, r, h)) => log_line(&key(), &mark(*l, *r, *h)),
                    None => "\n".into(),
                })
                .collect();
            let (n, complete) = replay(Path::new("log"), text.as_bytes(), &mut marks).unwrap();
            assert_eq!((n, complete), (lines.len(), text.len() as u64), "case {i}");
            let (l, r, h) = expected;
            assert_eq!(marks[&key()], mark(l, r, h), "case {i}");
        }
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_off_and_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileStore::open(dir.path()).unwrap();
        sign(&store, 5, 1).await.unwrap();
        drop(store);
        let complete = log_len(dir.path());
        // A whole record but for its newline, and a record cut in the middle.
        for torn in [
            log_line(&key(), &mark(6, 0, 2)).trim_end().to_owned(),
            "0123abcd {\"chain".into(),
        ] {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.path().join(LOG_FILE))
                .unwrap();
            file.write_all(torn.as_bytes()).unwrap();
            drop(file);
            assert_eq!(read(dir.path()).unwrap()[&key()].level, Level(5));
            let (store, opened) = FileStore::open(dir.path()).unwrap();
            assert_eq!(opened, Opened::Loaded(1));
            assert_eq!(log_len(dir.path()), complete);
            // The torn mark was never released: level 6 is free for any payload.
            assert!(matches!(
                store.begin(key(), req(6, 3)).await.unwrap(),
                Begin::Sign(_)
            ));
        }
    }

    #[tokio::test]
    async fn a_damaged_line_before_the_last_refuses_to_open_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileStore::open(dir.path()).unwrap();
        for level in 5..8 {
            sign(&store, level, 1).await.unwrap();
        }
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let good = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        assert_eq!(lines.len(), 3);
        let cases = [
            (
                "checksum mismatch",
                lines[1].replacen("\"level\":6", "\"level\":9", 1),
            ),
            ("no checksum", "garbage".to_owned()),
            ("not a mark", format!("{} {{}}", checksum(b"{}"))),
        ];
        for (why, damaged_line) in cases {
            std::fs::write(&path, format!("{}\n{damaged_line}\n{}\n", lines[0], lines[2])).unwrap();
            let err = FileStore::open(dir.path()).unwrap_err().to_string();
            assert!(err.contains(LOG_FILE) && err.contains("line 2"), "{err}");
            assert!(err.contains(why) && err.contains("will not sign"), "{err}");
            assert!(
                err.contains("backup") && err.contains("docs/watermark.md"),
                "{err}"
            );
            assert!(read(dir.path()).is_err());
        }
        // A damaged last line that is complete (it has its newline) is refused too.
        std::fs::write(&path, format!("{}\n{}\ngarbage\n", lines[0], lines[1])).unwrap();
        let err = FileStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        std::fs::write(&path, &good).unwrap();
        let (store, _) = FileStore::open(dir.path()).unwrap();
        assert_eq!(sign(&store, 7, 1).await.unwrap(), Signature::Generic([1; 64]));
    }

    #[tokio::test]
    async fn compaction_at_open_and_in_the_writer_keeps_every_mark() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileStore::open(dir.path()).unwrap();
        sign(&store, 1, 1).await.unwrap();
        drop(store);
        // A long log over three keys: folded into the snapshot when the store opens.
        let mut text = String::new();
        for level in 2..=(COMPACT_MIN_LINES as u32 + 10) {
            text.push_str(&log_line(&key_on(1 + (level % 3) as u8), &mark(level, 0, 1)));
        }
        std::fs::write(dir.path().join(LOG_FILE), &text).unwrap();
        let before = read(dir.path()).unwrap();
        assert_eq!(before.len(), 3);
        let (store, _) = FileStore::open(dir.path()).unwrap();
        assert_eq!(log_len(dir.path()), 0);
        let snapshot = interchange::decode(&std::fs::read_to_string(dir.path().join(STORE_FILE)).unwrap());
        assert_eq!(snapshot.unwrap(), before);
        drop(store);

        // A log one line short of the threshold: the next signature's batch tips it over, and the
        // writer folds it after answering. The probe after it is written once the fold is done.
        let line = log_line(&key_on(2), &mark(1, 0, 1));
        std::fs::write(dir.path().join(LOG_FILE), line.repeat(COMPACT_MIN_LINES)).unwrap();
        let (store, _) = FileStore::open(dir.path()).unwrap();
        sign(&store, 100_000, 7).await.unwrap();
        assert!(store.probe().await[0].ok);
        assert_eq!(
            log_len(dir.path()),
            1,
            "the log holds the probe's empty line only"
        );
        let mut expected = before.clone();
        expected.insert(key(), mark(100_000, 0, 7));
        assert_eq!(read(dir.path()).unwrap(), expected);
        drop(store);
        let (store, opened) = FileStore::open(dir.path()).unwrap();
        assert_eq!(opened, Opened::Loaded(3));
        assert_eq!(
            sign(&store, 100_000, 7).await.unwrap(),
            Signature::Generic([7; 64])
        );
    }

    #[tokio::test]
    async fn a_crash_between_the_new_snapshot_and_the_log_reset_reopens_to_the_same_marks() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileStore::open(dir.path()).unwrap();
        for (chain, level) in [(1, 5), (2, 9), (1, 6)] {
            sign_on(&store, key_on(chain), level, chain).await.unwrap();
        }
        drop(store);
        let marks = read(dir.path()).unwrap();
        let old_log = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
        // Compacted, then the old log put back: what a crash before the log's rename leaves.
        write(dir.path(), &marks).unwrap();
        std::fs::write(dir.path().join(LOG_FILE), &old_log).unwrap();
        std::fs::write(dir.path().join(LOG_TMP_FILE), b"").unwrap();
        assert_eq!(read(dir.path()).unwrap(), marks);
        let (store, opened) = FileStore::open(dir.path()).unwrap();
        assert_eq!(opened, Opened::Loaded(2));
        assert!(!dir.path().join(LOG_TMP_FILE).exists());
        assert_eq!(sign(&store, 6, 1).await.unwrap(), Signature::Generic([1; 64]));
        assert!(matches!(
            sign(&store, 6, 2).await,
            Err(WatermarkError::Refused { .. })
        ));
        drop(store);
        // A snapshot raised past the old log (`watermark set`) keeps the raised marks.
        let mut raised = marks.clone();
        raised.insert(key(), mark(50, 0, 0));
        write(dir.path(), &raised).unwrap();
        std::fs::write(dir.path().join(LOG_FILE), &old_log).unwrap();
        assert_eq!(read(dir.path()).unwrap(), raised);
    }

    #[tokio::test]
    async fn one_more_mark_appends_one_line_whatever_the_store_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut marks = Marks::new();
        for i in 0..20_000u32 {
            let mut k = key();
            k.chain = ChainId(i.to_be_bytes());
            marks.insert(k, mark(1000, 0, 1));
        }
        write(dir.path(), &marks).unwrap();
        mark_initialized(dir.path()).unwrap();
        let (store, opened) = FileStore::open_with(dir.path(), 0).unwrap();
        assert_eq!(opened, Opened::Loaded(20_000));
        use std::os::unix::fs::MetadataExt;
        let snapshot = std::fs::metadata(dir.path().join(STORE_FILE)).unwrap();
        let before = log_len(dir.path());
        sign_on(&store, key_on(200), 5, 1).await.unwrap();
        let grown = log_len(dir.path()) - before;
        assert!(grown < 400, "one mark appended {grown} bytes");
        let after = std::fs::metadata(dir.path().join(STORE_FILE)).unwrap();
        assert_eq!(
            (after.ino(), after.len(), after.mtime(), after.mtime_nsec()),
            (
                snapshot.ino(),
                snapshot.len(),
                snapshot.mtime(),
                snapshot.mtime_nsec()
            )
        );
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
        // Fold the mark into the snapshot so that damaging the snapshot damages the mark.
        write(dir.path(), &read(dir.path()).unwrap()).unwrap();
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
        // The log lost while the marker knows it: refused too, not taken for an older store.
        let log = dir.path().join(LOG_FILE);
        std::fs::remove_file(&log).unwrap();
        let err = FileStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains(LOG_FILE) && err.contains("level 0"), "{err}");
        assert!(read(dir.path()).is_err());
        std::fs::write(&log, b"").unwrap();
        FileStore::open(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn a_store_from_before_the_log_opens_and_gains_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut marks = Marks::new();
        marks.insert(key(), mark(5, 0, 1));
        std::fs::write(dir.path().join(STORE_FILE), interchange::encode(&marks)).unwrap();
        std::fs::write(
            dir.path().join(MARKER_FILE),
            "The watermark store watermarks.json of this directory was created here.\n",
        )
        .unwrap();
        assert_eq!(read(dir.path()).unwrap(), marks);
        let (store, opened) = FileStore::open(dir.path()).unwrap();
        assert_eq!(opened, Opened::Loaded(1));
        assert!(marker_knows_the_log(dir.path()));
        sign(&store, 6, 2).await.unwrap();
        drop(store);
        assert_eq!(read(dir.path()).unwrap()[&key()].level, Level(6));
    }

    #[tokio::test]
    async fn a_failed_write_releases_nothing_and_keeps_the_old_mark() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileStore::open(dir.path()).unwrap();
        sign(&store, 5, 1).await.unwrap();
        // A directory where the log goes makes every append fail, even for root.
        let log = dir.path().join(LOG_FILE);
        let aside = dir.path().join("log.aside");
        std::fs::rename(&log, &aside).unwrap();
        std::fs::create_dir(&log).unwrap();
        let err = sign(&store, 6, 2).await.unwrap_err().to_string();
        assert!(err.contains("cannot write"), "{err}");
        assert!(!store.probe().await[0].ok);
        std::fs::remove_dir(&log).unwrap();
        std::fs::rename(&aside, &log).unwrap();
        assert_eq!(read(dir.path()).unwrap()[&key()].level, Level(5));
        sign(&store, 6, 3).await.unwrap();
        assert_eq!(read(dir.path()).unwrap()[&key()].hash, [3; 32]);
    }

    #[tokio::test]
    async fn the_rest_of_a_failed_append_is_cut_before_the_next_and_a_shrunk_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileStore::open(dir.path()).unwrap();
        sign(&store, 5, 1).await.unwrap();
        let log = dir.path().join(LOG_FILE);
        let good = std::fs::read(&log).unwrap();
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"0123 {\"half a line").unwrap();
        drop(file);
        sign(&store, 6, 2).await.unwrap();
        drop(store);
        let (store, _) = FileStore::open(dir.path()).unwrap();
        assert_eq!(sign(&store, 6, 2).await.unwrap(), Signature::Generic([2; 64]));
        // Something else truncates the log under the server: nothing more is written or released.
        std::fs::write(&log, &good).unwrap();
        let err = sign(&store, 7, 3).await.unwrap_err().to_string();
        assert!(err.contains("changed by something else"), "{err}");
    }

    #[tokio::test]
    async fn a_new_chain_beyond_the_bound_is_refused_before_anything_is_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileStore::open_with(dir.path(), 2).unwrap();
        sign_on(&store, key_on(1), 5, 1).await.unwrap();
        sign_on(&store, key_on(2), 5, 1).await.unwrap();
        let len = log_len(dir.path());
        let err = sign_on(&store, key_on(3), 5, 1).await.unwrap_err();
        match &err {
            WatermarkError::Refused {
                refusal: Refusal::TooManyChains { in_use: 2, max: 2 },
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&ChainId([3, 2, 3, 4]).to_string()), "{text}");
        assert!(
            text.contains("max_chains = 2") && text.contains("policy.keys.<pkh>.chains"),
            "{text}"
        );
        assert_eq!(log_len(dir.path()), len, "nothing written");
        assert!(
            !store.slots.lock().unwrap().contains_key(&key_on(3)),
            "nothing reserved"
        );
        // Chains with marks go on; any key counts (the bound is over the whole store).
        sign_on(&store, key_on(2), 6, 1).await.unwrap();
        let mut other_key = key_on(1);
        other_key.kind = ConsensusKind::Block;
        sign_on(&store, other_key, 1, 1).await.unwrap();
        drop(store);
        // The bound holds across a reopen, and 0 lifts it.
        let (store, _) = FileStore::open_with(dir.path(), 2).unwrap();
        assert!(sign_on(&store, key_on(3), 5, 1).await.is_err());
        drop(store);
        let (store, _) = FileStore::open_with(dir.path(), 0).unwrap();
        sign_on(&store, key_on(3), 5, 1).await.unwrap();
        assert!(
            store.describe().contains("marks on 3 chain(s)"),
            "{}",
            store.describe()
        );
    }

    #[tokio::test]
    async fn a_signature_under_way_on_a_new_chain_holds_its_place_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileStore::open_with(dir.path(), 2).unwrap();
        sign_on(&store, key_on(1), 5, 1).await.unwrap();
        let Begin::Sign(ticket) = store.begin(key_on(2), req(5, 1)).await.unwrap() else {
            panic!("expected to sign")
        };
        // Chain 2 is taken while its signature is under way: chain 3 is refused, chain 2 admitted.
        assert!(store.begin(key_on(3), req(5, 1)).await.is_err());
        let mut same_chain = key_on(2);
        same_chain.kind = ConsensusKind::Attestation;
        let Begin::Sign(second) = store.begin(same_chain, req(5, 1)).await.unwrap() else {
            panic!("expected to sign")
        };
        drop(ticket);
        assert!(store.begin(key_on(3), req(5, 1)).await.is_err());
        drop(second);
        // Both abandoned: chain 2 was never recorded and its place is free again.
        sign_on(&store, key_on(3), 5, 1).await.unwrap();
        assert!(store.begin(key_on(2), req(5, 1)).await.is_err());
        assert_eq!(chains_of(&read(dir.path()).unwrap()).len(), 2);
    }

    #[test]
    fn chains_are_described_with_their_bound() {
        let chains: BTreeSet<ChainId> = (0..7u8).map(|i| ChainId([i, 0, 0, 0])).collect();
        let few: BTreeSet<ChainId> = chains.iter().take(2).copied().collect();
        assert!(
            describe_chains(&few, 8).starts_with("marks on 2 of at most 8 chain(s) (watermark.max_chains): ")
        );
        assert!(describe_chains(&BTreeSet::new(), 8).ends_with("none yet"));
        let many = describe_chains(&chains, 3);
        assert!(
            many.contains("and 2 more") && many.contains("above watermark.max_chains = 3"),
            "{many}"
        );
        assert!(describe_chains(&few, 0).contains("no bound on chains"));
    }
}
