//! One load run from options to report: start or reach the signer, measure the physical limits, drive the
//! load (and the same load against a trivial signer), verify the signatures, and say it all with ratios.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use tezos::{Curve, PublicKey, PublicKeyHash, SecretKey};

use crate::client::{AuthKey, Client, Connections, SCHEME};
use crate::limits::{self, Fsync, SignRate, TrivialSigner};
use crate::local::{self, Backend, LocalOptions, LocalSigner};
use crate::report::{ratio, Burst, Latency, Phase, Tally, Verification};
use crate::scenario::{self, BakerPlan, Bound, Delegate, PayloadKind};
use crate::verify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Levels of bursts: N preattestations, then N attestations (and a block with --blocks).
    Baker,
    /// Open loop: a constant request rate (--rate), transactions.
    Rate,
    /// Closed loop: --concurrency clients as fast as the signer answers.
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnOff {
    On,
    Off,
}

/// Drives an Octez-protocol remote signer like bakers do and reports latency and throughput beside what
/// the machine allows. Without --target it starts tzkms itself (in process, on its own threads).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "tzkms-load", version)]
pub struct Options {
    #[arg(long, value_enum, default_value = "baker")]
    pub mode: Mode,
    /// Base URL of a running signer (http://host:port or https://…). Without it, tzkms is started here.
    #[arg(long)]
    pub target: Option<String>,
    /// With --target: a key the signer serves (repeat; as many as delegates or clients).
    #[arg(long = "key", value_name = "PKH")]
    pub keys: Vec<PublicKeyHash>,
    /// With an https:// target: the CA certificate (PEM) its certificate chains to.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Baker mode: number of delegates; a comma-separated list runs one load per value.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    pub delegates: Vec<usize>,
    /// Baker mode: levels per load.
    #[arg(long, default_value_t = 5)]
    pub levels: u32,
    /// Baker mode: milliseconds from one level's start to the next (0: back to back).
    #[arg(long, default_value_t = 0)]
    pub level_time_ms: u64,
    /// Baker mode: also sign each level's block (one delegate proposes).
    #[arg(long)]
    pub blocks: bool,
    /// Baker mode: every K levels a second round follows (0: never).
    #[arg(long, default_value_t = 0)]
    pub extra_round_every: u32,
    /// First level signed (default: from the clock, so successive runs against one signer keep rising).
    #[arg(long)]
    pub start_level: Option<u32>,
    /// Connection use (default: per-request in baker mode, as octez-client; reuse otherwise).
    #[arg(long, value_enum)]
    pub connections: Option<Connections>,
    /// Do not send `GET /authorized_keys` before each POST.
    #[arg(long)]
    pub no_authorized_keys: bool,
    /// Secret key file to authenticate requests with (when the signer lists authorized keys).
    #[arg(long)]
    pub auth_key: Option<PathBuf>,
    /// Rate mode: requests per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Max mode: concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Rate and max modes: seconds of load.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Rate and max modes: stop after this many requests instead.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Max mode: what is signed (attestations need one key per client).
    #[arg(long, value_enum, default_value = "transaction")]
    pub payload: PayloadKind,
    /// Do not verify the returned signatures (the report says so).
    #[arg(long)]
    pub no_verify: bool,
    /// Local signer: key curve (p256, secp256k1, ed25519, bls).
    #[arg(long, default_value = "p256")]
    pub curve: Curve,
    /// Local signer: key backend.
    #[arg(long, value_enum, default_value = "file")]
    pub backend: Backend,
    /// Local signer: durable high watermark for the consensus payloads.
    #[arg(long, value_enum, default_value = "on")]
    pub watermark: OnOff,
    /// Local signer with --backend azure: the emulator's sign latency.
    #[arg(long, default_value_t = 20)]
    pub azure_latency_ms: u64,
    /// Local signer: worker threads (default: the number of cores).
    #[arg(long)]
    pub signer_threads: Option<usize>,
    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// The signer's data directory (fsync is measured there); for a local signer, where its data
    /// directory is created (default: the temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Skip the physical-limit measurements.
    #[arg(long)]
    pub no_limits: bool,
    /// Seconds per in-process signing measurement.
    #[arg(long, default_value_t = 1.0)]
    pub limit_seconds: f64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Per-signature timeout (GET + POST), milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Exit 0 even if requests failed (bad signatures still fail the run).
    #[arg(long)]
    pub allow_errors: bool,
}

impl Options {
    fn connections(&self) -> Connections {
        self.connections.unwrap_or(match self.mode {
            Mode::Baker => Connections::PerRequest,
            _ => Connections::Reuse,
        })
    }

    fn keys_needed(&self) -> usize {
        match self.mode {
            Mode::Baker => self.delegates.iter().copied().max().unwrap_or(1),
            Mode::Max if self.payload == PayloadKind::Attestation => self.concurrency,
            _ => self.delegates.first().copied().unwrap_or(1),
        }
        .max(1)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub load_average_before: String,
    pub load_average_after: String,
}

impl Machine {
    fn now() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            load_average_before: load_average(),
            load_average_after: String::new(),
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub sign: Vec<SignRate>,
    pub fsync: Option<Fsync>,
}

/// Baker-mode bursts in a few numbers (consensus bursts of all delegates; block requests not included).
#[derive(Debug, Clone, Serialize)]
pub struct BurstSummary {
    pub bursts: usize,
    pub size: usize,
    pub worst_p99_ms: f64,
    pub worst_duration_ms: f64,
    pub mean_duration_ms: f64,
    pub bursts_over_100ms_p99: usize,
    pub bursts_with_errors: usize,
    /// The longest level: all its bursts, back to back.
    pub worst_level_ms: f64,
}

impl BurstSummary {
    fn of(bursts: &[Burst], size: usize) -> Option<Self> {
        let consensus: Vec<&Burst> = bursts.iter().filter(|b| b.kind != "block").collect();
        if consensus.is_empty() {
            return None;
        }
        let mut levels = std::collections::BTreeMap::<u32, f64>::new();
        for b in bursts {
            *levels.entry(b.level).or_default() += b.duration_ms;
        }
        Some(Self {
            bursts: consensus.len(),
            size,
            worst_p99_ms: consensus.iter().map(|b| b.p99_ms).fold(0.0, f64::max),
            worst_duration_ms: consensus.iter().map(|b| b.duration_ms).fold(0.0, f64::max),
            mean_duration_ms: consensus.iter().map(|b| b.duration_ms).sum::<f64>() / consensus.len() as f64,
            bursts_over_100ms_p99: consensus.iter().filter(|b| b.p99_ms > 100.0).count(),
            bursts_with_errors: consensus.iter().filter(|b| b.errors > 0).count(),
            worst_level_ms: levels.values().copied().fold(0.0, f64::max),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Azure {
    pub emulator_sign_latency_ms: u64,
    pub emulator_direct_ms: Latency,
    pub emulator_direct_concurrency: usize,
    pub key_vault_sign_calls_per_signature: f64,
    pub key_vault_calls_per_signature: f64,
}

/// One load (baker mode runs one per delegate count).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub delegates: usize,
    pub load: Phase,
    pub bursts: Option<BurstSummary>,
    /// The same load against a signer that does no work.
    pub trivial: Option<Phase>,
    pub trivial_bursts: Option<BurstSummary>,
    pub verification: Option<Verification>,
    pub azure: Option<Azure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub target: String,
    pub signer: String,
    pub connections: Connections,
    pub authorized_keys_get: bool,
    pub authentication: bool,
    pub verification: String,
    pub machine: Machine,
    pub limits: Option<Limits>,
    pub runs: Vec<RunReport>,
}

impl Report {
    pub fn errors(&self) -> u64 {
        self.runs
            .iter()
            .map(|r| r.load.errors.values().sum::<u64>())
            .sum()
    }

    pub fn bad_signatures(&self) -> u64 {
        self.runs
            .iter()
            .filter_map(|r| r.verification.as_ref())
            .map(|v| v.bad)
            .sum()
    }
}

/// A start level above anything an earlier run against the same signer used: four levels per second of
/// wall-clock time since 2023-11-14 (fits an int32 until about 2040).
fn clock_level() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(1_700_000_000);
    (secs.saturating_mul(4)).min(i32::MAX as u64 / 2) as u32 + 1
}

pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let mut machine = Machine::now();
    let signer_threads = options.signer_threads.unwrap_or(machine.cpus);
    let keys_needed = options.keys_needed();
    let auth = match &options.auth_key {
        Some(path) => Some(Arc::new(AuthKey::from_file(path)?)),
        None => None,
    };
    let (local, url, pkhs, signer) = match &options.target {
        Some(url) => {
            anyhow::ensure!(
                options.keys.len() >= keys_needed,
                "--target needs {keys_needed} --key values (one per delegate or client), got {}",
                options.keys.len()
            );
            (
                None,
                url.clone(),
                options.keys.clone(),
                format!("external signer at {url}"),
            )
        }
        None => {
            let local = LocalSigner::start(&LocalOptions {
                curve: options.curve,
                keys: keys_needed,
                backend: options.backend,
                watermark: options.watermark == OnOff::On,
                azure_latency: Duration::from_millis(options.azure_latency_ms),
                threads: signer_threads,
                parent_dir: options.data_dir.clone(),
                authorized_key: auth.as_ref().map(|a| a.public_key().clone()),
            })
            .await
            .context("starting tzkms")?;
            let describe = format!(
                "tzkms in process ({signer_threads} threads): {} keys, {}{}, watermark {}{}",
                match options.backend {
                    Backend::File => "file",
                    Backend::Azure => "Azure Key Vault emulator",
                },
                options.curve.name(),
                if options.backend == Backend::Azure {
                    format!(" with {} ms sign latency", options.azure_latency_ms)
                } else {
                    String::new()
                },
                if options.watermark == OnOff::On {
                    "on (durable file store)"
                } else {
                    "off"
                },
                if auth.is_some() {
                    ", authentication required"
                } else {
                    ""
                },
            );
            let (url, pkhs) = (local.url.clone(), local.pkhs.clone());
            (Some(local), url, pkhs, describe)
        }
    };
    let timeout = Duration::from_millis(options.timeout_ms);
    let connections = options.connections();
    let client = Client::new(
        &url,
        options.ca_file.as_deref(),
        connections,
        !options.no_authorized_keys,
        auth.clone(),
        timeout,
    )?;
    let verify = !options.no_verify;
    let pkhs: Vec<PublicKeyHash> = pkhs.into_iter().take(keys_needed).collect();
    let mut public_keys: Vec<PublicKey> = Vec::new();
    if verify {
        for pkh in &pkhs {
            public_keys.push(client.public_key(pkh).await?);
        }
    }
    let delegates: Vec<Delegate> = pkhs.iter().map(|pkh| Delegate { pkh: *pkh }).collect();

    let limits = if options.no_limits {
        None
    } else {
        let mut curves: Vec<Curve> = pkhs.iter().map(|p| p.curve()).collect();
        curves.sort_by_key(|c| c.tag());
        curves.dedup();
        let seconds = options.limit_seconds;
        let threads = signer_threads;
        let sign = tokio::task::spawn_blocking(move || {
            curves
                .into_iter()
                .map(|c| limits::sign_rate(c, threads, seconds))
                .collect::<Vec<_>>()
        })
        .await?;
        let dir = local
            .as_ref()
            .map(|l| l.data_dir())
            .or_else(|| options.data_dir.clone());
        let fsync = match dir {
            Some(d) => Some(tokio::task::spawn_blocking(move || limits::fsync(&d, 100)).await??),
            None => None,
        };
        Some(Limits { sign, fsync })
    };

    // The trivial signer answers with a valid-looking signature of another key; it is never verified.
    let other = SecretKey::generate(pkhs.first().map_or(Curve::P256, |p| p.curve()));
    let trivial_signature = other.sign(b"\x03trivial", SCHEME)?;
    let trivial = if options.no_limits {
        None
    } else {
        Some(TrivialSigner::start(signer_threads, vec![], trivial_signature)?)
    };
    let trivial_client = match &trivial {
        Some(t) => Some(Client::new(
            &t.url(),
            None,
            connections,
            !options.no_authorized_keys,
            None,
            timeout,
        )?),
        None => None,
    };

    let mut runs = Vec::new();
    let mut start_level = options.start_level.unwrap_or_else(clock_level);
    let emulator = local.as_ref().and_then(|l| l.emulator());
    let counts: Vec<usize> = match options.mode {
        Mode::Baker => options.delegates.clone(),
        _ => vec![delegates.len()],
    };
    for n in counts {
        let n = n.max(1);
        let ds = &delegates[..n.min(delegates.len())];
        if let Some(emu) = emulator {
            local::reset_emulator_counters(emu);
        }
        let (tally, elapsed, bursts) = drive(options, &client, ds, start_level, verify).await;
        let azure_calls = emulator.map(local::emulator_calls);
        let load = Phase::of(&tally, elapsed);
        let bursts_summary = bursts.as_deref().and_then(|b| BurstSummary::of(b, n));
        let run_bursts = bursts_summary.as_ref().map_or(0, |b| b.bursts);
        let (trivial_phase, trivial_bursts) = match &trivial_client {
            Some(c) => {
                let (t, e, b) = drive(options, c, ds, start_level, false).await;
                (
                    Some(Phase::of(&t, e)),
                    b.as_deref().and_then(|b| BurstSummary::of(b, n)),
                )
            }
            None => (None, None),
        };
        let verification = verify.then(|| verify_after(&tally, &public_keys));
        let azure = match (emulator, azure_calls) {
            (Some(emu), Some((sign_calls, all_calls))) => {
                let (concurrency, shape) = match options.mode {
                    Mode::Baker => (
                        n,
                        local::Shape::Bursts {
                            size: n,
                            rounds: run_bursts.max(1),
                        },
                    ),
                    Mode::Max => (
                        options.concurrency,
                        local::Shape::Closed {
                            concurrency: options.concurrency,
                            requests: tally.requests().clamp(1, 5000),
                        },
                    ),
                    Mode::Rate => {
                        let c = ((options.rate * options.azure_latency_ms as f64 / 1000.0).ceil() as usize)
                            .max(1);
                        (
                            c,
                            local::Shape::Closed {
                                concurrency: c,
                                requests: tally.requests().clamp(1, 5000),
                            },
                        )
                    }
                };
                let direct = local::emulator_direct(emu, shape).await?;
                let ok = tally.ok.max(1) as f64;
                Some(Azure {
                    emulator_sign_latency_ms: options.azure_latency_ms,
                    emulator_direct_ms: direct,
                    emulator_direct_concurrency: concurrency,
                    key_vault_sign_calls_per_signature: sign_calls as f64 / ok,
                    key_vault_calls_per_signature: all_calls as f64 / ok,
                })
            }
            _ => None,
        };
        start_level += options.levels * 2 + 1_000_000;
        runs.push(RunReport {
            delegates: ds.len(),
            load,
            bursts: bursts_summary,
            trivial: trivial_phase,
            trivial_bursts,
            verification,
            azure,
        });
    }
    machine.load_average_after = load_average();
    drop(trivial);
    drop(local);
    Ok(Report {
        mode: options.mode,
        target: url,
        signer,
        connections,
        authorized_keys_get: !options.no_authorized_keys,
        authentication: auth.is_some(),
        verification: if verify {
            "every signature, after the run (outside the timed window)".into()
        } else {
            "OFF (--no-verify): signatures were not checked".into()
        },
        machine,
        limits,
        runs,
    })
}

fn verify_after(tally: &Tally, public_keys: &[PublicKey]) -> Verification {
    verify::verify_all(&tally.signed, public_keys)
}

async fn drive(
    options: &Options,
    client: &Client,
    delegates: &[Delegate],
    start_level: u32,
    keep: bool,
) -> (Tally, Duration, Option<Vec<Burst>>) {
    let bound = Bound {
        requests: options.requests,
        duration: Duration::from_secs_f64(options.duration),
    };
    match options.mode {
        Mode::Baker => {
            let plan = BakerPlan {
                levels: options.levels,
                start_level,
                level_time: Duration::from_millis(options.level_time_ms),
                blocks: options.blocks,
                extra_round_every: options.extra_round_every,
            };
            let r = scenario::baker(client, delegates, &plan, keep).await;
            (r.tally, r.elapsed, Some(r.bursts))
        }
        Mode::Rate => {
            let (t, e) = scenario::open_loop(client, delegates, options.rate, bound, keep).await;
            (t, e, None)
        }
        Mode::Max => {
            let (t, e) = scenario::closed_loop(
                client,
                delegates,
                options.concurrency,
                options.payload,
                start_level,
                bound,
                keep,
            )
            .await;
            (t, e, None)
        }
    }
}

/// The report as text, with the load beside the physical limits.
pub fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let m = &report.machine;
    let _ = writeln!(
        s,
        "tzkms-load: {} mode against {}",
        match report.mode {
            Mode::Baker => "baker",
            Mode::Rate => "open-loop rate",
            Mode::Max => "closed-loop max-throughput",
        },
        report.signer
    );
    let _ = writeln!(
        s,
        "client: connections {}, GET /authorized_keys before each POST: {}, authentication: {}",
        match report.connections {
            Connections::Reuse => "reused (keep-alive)",
            Connections::PerRequest => "new for every request",
        },
        if report.authorized_keys_get { "yes" } else { "no" },
        if report.authentication { "yes" } else { "no" }
    );
    let _ = writeln!(s, "verification: {}", report.verification);
    let _ = writeln!(
        s,
        "machine: {} × {}, Linux {}, load average {} before, {} after",
        m.cpus, m.cpu_model, m.kernel, m.load_average_before, m.load_average_after
    );
    let mut in_process = 0.0;
    if let Some(limits) = &report.limits {
        let _ = writeln!(s, "physical limits (same run):");
        for r in &limits.sign {
            let _ = writeln!(
                s,
                "  in process, {:<9} {:>8.0} sig/s on {} threads ({:.0} on one): BLAKE2b + sign + verify",
                r.curve, r.per_second, r.threads, r.per_second_one_thread
            );
            in_process = r.per_second;
        }
        if let Some(f) = &limits.fsync {
            let _ = writeln!(
                s,
                "  fsync in {}: 4 KiB write+fsync p50 {:.2} ms p99 {:.2} ms; durable replace (watermark batch) p50 {:.2} ms p99 {:.2} ms",
                f.directory, f.write_fsync_ms.p50, f.write_fsync_ms.p99, f.durable_replace_ms.p50, f.durable_replace_ms.p99
            );
        }
    }
    for run in &report.runs {
        let l = &run.load;
        let _ = writeln!(
            s,
            "\n{} delegates: {} requests in {:.2} s, {} signed, {:.0} sig/s, errors {}",
            run.delegates,
            l.requests,
            l.seconds,
            l.ok,
            l.throughput_per_s,
            if l.errors.is_empty() {
                "none".to_string()
            } else {
                format!("{:?}", l.errors)
            }
        );
        for e in &l.error_examples {
            let _ = writeln!(s, "  error: {e}");
        }
        let _ = writeln!(s, "  latency per signature:  {}", l.latency_ms);
        if let Some(b) = &run.bursts {
            let _ = writeln!(
                s,
                "  {} bursts of {}: worst p99 {:.1} ms, worst burst {:.1} ms, mean burst {:.1} ms, worst level {:.1} ms; {} bursts with p99 > 100 ms, {} with errors",
                b.bursts, b.size, b.worst_p99_ms, b.worst_duration_ms, b.mean_duration_ms, b.worst_level_ms, b.bursts_over_100ms_p99, b.bursts_with_errors
            );
        }
        // A signature is one POST, after a GET /authorized_keys unless --no-authorized-keys.
        let http_per_signature = if report.authorized_keys_get { 2.0 } else { 1.0 };
        if let Some(t) = &run.trivial {
            let _ = writeln!(
                s,
                "  trivial signer, same load: {}, {:.0} sig/s ({:.0} HTTP requests/s)",
                t.latency_ms,
                t.throughput_per_s,
                t.throughput_per_s * http_per_signature
            );
            let _ = writeln!(
                s,
                "  ratios to the trivial signer: p50 {}, p99 {}, throughput {}",
                ratio(l.latency_ms.p50, t.latency_ms.p50),
                ratio(l.latency_ms.p99, t.latency_ms.p99),
                ratio(l.throughput_per_s, t.throughput_per_s)
            );
        }
        if let (Some(b), Some(tb)) = (&run.bursts, &run.trivial_bursts) {
            let _ = writeln!(
                s,
                "  trivial signer bursts: worst p99 {:.1} ms, mean burst {:.1} ms",
                tb.worst_p99_ms, tb.mean_duration_ms
            );
            if in_process > 0.0 {
                let floor_ms = b.size as f64 / in_process * 1e3
                    + report
                        .limits
                        .as_ref()
                        .and_then(|l| l.fsync.as_ref())
                        .map_or(0.0, |f| f.durable_replace_ms.p50);
                let _ = writeln!(
                    s,
                    "  mean burst = {} the floor of {:.1} ms ({} signatures at the in-process rate + one durable replace)",
                    ratio(b.mean_duration_ms, floor_ms),
                    floor_ms,
                    b.size
                );
            }
        }
        if in_process > 0.0 && report.mode == Mode::Max {
            let _ = writeln!(
                s,
                "  throughput = {} the in-process rate of the same work on the same cores",
                ratio(l.throughput_per_s, in_process)
            );
            if let Some(t) = run.trivial.as_ref().filter(|t| t.throughput_per_s > 0.0) {
                // Both limits use the same two cores: a signature costs the trivial signer's time per
                // signature (HTTP, the load generator included) plus the in-process time per signature.
                let bound = 1.0 / (1.0 / in_process + 1.0 / t.throughput_per_s);
                let _ = writeln!(
                    s,
                    "  HTTP + signing on the same cores allow {bound:.0} sig/s (1 / (1/in-process + 1/trivial)); throughput = {} of that",
                    ratio(l.throughput_per_s, bound)
                );
            }
        }
        if let Some(a) = &run.azure {
            let _ = writeln!(
                s,
                "  Key Vault emulator ({} ms latency) measured directly at {} concurrent: {}",
                a.emulator_sign_latency_ms, a.emulator_direct_concurrency, a.emulator_direct_ms
            );
            let _ = writeln!(
                s,
                "  added by tzkms over the emulator: p50 {:+.2} ms, p99 {:+.2} ms; Key Vault calls per signature: sign {:.3}, all {:.3}",
                l.latency_ms.p50 - a.emulator_direct_ms.p50,
                l.latency_ms.p99 - a.emulator_direct_ms.p99,
                a.key_vault_sign_calls_per_signature,
                a.key_vault_calls_per_signature
            );
        }
        match &run.verification {
            Some(v) if v.bad == 0 => {
                let _ = writeln!(
                    s,
                    "  verified {}/{} signatures (after the run)",
                    v.checked, v.checked
                );
            }
            Some(v) => {
                let _ = writeln!(
                    s,
                    "  BAD SIGNATURES: {} of {} do not verify; first: {}",
                    v.bad,
                    v.checked,
                    v.first_bad.as_deref().unwrap_or("")
                );
            }
            None => {
                let _ = writeln!(s, "  signatures NOT verified (--no-verify)");
            }
        }
    }
    if report.mode == Mode::Baker && report.runs.len() > 1 {
        let fits = report
            .runs
            .iter()
            .filter(|r| {
                r.load.errors.is_empty()
                    && r.load.latency_ms.p99 <= 500.0
                    && r.bursts.as_ref().is_some_and(|b| b.worst_level_ms <= 6000.0)
            })
            .map(|r| r.delegates)
            .max();
        let _ = writeln!(
            s,
            "\nlargest delegate count with no errors, p99 <= 500 ms and every level within 6 s: {}",
            fits.map_or("none of those tried".into(), |n| n.to_string())
        );
    }
    s
}
