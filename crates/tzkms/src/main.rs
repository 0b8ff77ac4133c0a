//! The `tzkms` command line: `serve`, `keys …`.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use tezos::{encrypted, Curve, PublicKeyHash, SecretKey};
use tzkms::azure::keyvault::KvCurve;
use tzkms::backend::file::write_key_file;
use tzkms::config::{Config, DEFAULT_LISTEN};
use tzkms::server::App;
use tzkms::startup;
use tzkms::watermark::file::Opened;
use tzkms::watermark::{self, interchange};
use zeroize::Zeroizing;

/// `tzkms --version`: the version and what it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TZKMS_BUILD_COMMIT"),
    ", ",
    env!("TZKMS_BUILD_RUSTC"),
    ", ",
    env!("TZKMS_BUILD_PROFILE"),
    " profile, ",
    env!("TZKMS_BUILD_TARGET"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "tzkms", version = VERSION, about = "Remote signer for Tezos bakers")]
struct Cli {
    /// Configuration file (TOML). Without one, defaults apply.
    #[arg(long, global = true, env = "TZKMS_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (keys, state). Overrides the config file. Default ./tzkms-data.
    #[arg(long, global = true, env = "TZKMS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Log output format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TZKMS_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the signing API.
    Serve {
        /// Address to listen on (repeatable, or comma-separated in TZKMS_LISTEN). Overrides
        /// server.listen. Default 127.0.0.1:6732.
        #[arg(long, env = "TZKMS_LISTEN", value_delimiter = ',')]
        listen: Vec<SocketAddr>,
        /// Address of the operations listener (/metrics, /healthz, /readyz). Overrides metrics.listen.
        #[arg(long, env = "TZKMS_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
    },
    /// Manage local key files.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect and manage high watermarks (double-signing protection).
    #[command(subcommand)]
    Watermark(WatermarkCommand),
    /// Manage keys in Azure Key Vault / Managed HSM (uses the [azure] section of the config).
    #[command(subcommand)]
    Azure(AzureCommand),
    /// Check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load the configuration, keys, authorized keys and TLS files, and print the effective policy of
    /// every key. Exits non-zero on any error.
    Check,
}

#[derive(Debug, Subcommand)]
enum AzureCommand {
    #[command(subcommand)]
    Keys(AzureKeysCommand),
}

#[derive(Debug, Subcommand)]
enum AzureKeysCommand {
    /// Every version of every key of the vault: name, version, curve, Tezos address, enabled, created.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create a non-exportable EC-HSM key. Refused if the name exists, unless --new-version.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_azure_curve)]
        curve: KvCurve,
        /// Add a new version (a new key pair, so a new Tezos address) to an existing key: a rotation.
        #[arg(long)]
        new_version: bool,
    },
    /// Import a private key read from standard input: a Tezos p2sk/spsk (or encrypted p2esk/spesk, password in
    /// TZKMS_KEY_PASSWORD) or an EC private key PEM (passphrase in TZKMS_PEM_PASSPHRASE). Refused if the
    /// name exists, unless --new-version.
    Import {
        #[arg(long)]
        name: String,
        /// Import as a new version (a new Tezos address) of an existing key.
        #[arg(long)]
        new_version: bool,
    },
    /// Write a key's backup blob (all versions; restorable only in the same subscription and geography).
    Backup { name: String, file: PathBuf },
    /// Restore a backup blob written by `backup`.
    Restore { file: PathBuf },
}

fn parse_azure_curve(s: &str) -> Result<KvCurve, String> {
    match s.parse::<Curve>().map_err(|e| e.to_string())? {
        Curve::P256 => Ok(KvCurve::P256),
        Curve::Secp256k1 => Ok(KvCurve::P256K),
        other => Err(format!(
            "{other} keys cannot live in Azure Key Vault: use p256 or secp256k1"
        )),
    }
}

#[derive(Debug, Subcommand)]
enum WatermarkCommand {
    /// Show the marks (safe while tzkms runs).
    Show {
        /// Which store: this instance's file, or the shared table of [watermark.table].
        #[arg(long, value_enum, default_value = "local")]
        store: StoreChoice,
        #[arg(long)]
        pkh: Option<String>,
        #[arg(long)]
        chain: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Raise one mark by hand (e.g. before moving a key from another signer). Never lowers a mark.
    Set {
        #[arg(long, value_enum, default_value = "local")]
        store: StoreChoice,
        #[arg(long)]
        pkh: String,
        #[arg(long)]
        chain: String,
        /// block, preattestation or attestation; repeat or omit for all three.
        #[arg(long)]
        kind: Vec<String>,
        #[arg(long)]
        level: u32,
        #[arg(long, default_value_t = 0)]
        round: u32,
    },
    /// Write every mark in tzkms's JSON interchange format (safe while tzkms runs).
    Export {
        #[arg(long, value_enum, default_value = "local")]
        store: StoreChoice,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Vouch for a key that has no marks here: only levels above LEVEL are signed until it has marks of
    /// its own. For a key moved here without its marks (set LEVEL to the current head level), or, with
    /// --level 0, a key that never signed. Never lowers a floor; works while tzkms runs.
    Floor {
        pkh: String,
        #[arg(long)]
        level: u32,
    },
    /// Import marks; only raises, never lowers.
    Import {
        #[arg(long, value_enum, default_value = "local")]
        store: StoreChoice,
        /// Format of the source.
        #[arg(long, value_enum, default_value = "tzkms")]
        from: ImportFormat,
        /// A tzkms export file, an octez-signer base directory, or Signatory's watermark_v2 directory
        /// or one of its <chain>.json files.
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreChoice {
    /// `<data_dir>/watermarks.json`
    Local,
    /// The Azure Table of `[watermark.table]` (conditional writes: safe while instances run)
    Table,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ImportFormat {
    Tzkms,
    Octez,
    Signatory,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List the keys tzkms would serve.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Generate a new key file.
    Generate {
        #[arg(long, value_parser = parse_curve)]
        curve: Curve,
        /// Encrypt the key with the password from TZKMS_KEY_PASSWORD or keys.password_file.
        #[arg(long)]
        encrypt: bool,
        /// File name for the key (default: its address).
        #[arg(long)]
        alias: Option<String>,
    },
    /// Import a secret key read from standard input (never from the command line).
    Import {
        #[arg(long)]
        alias: Option<String>,
    },
    /// Show one key's public key and the octez-client import command.
    Show { pkh: String },
    /// Print the BLS proof of possession of a served tz4 key, as `octez-client create bls proof for
    /// <alias>` does: a tz4 `reveal`, `update_consensus_key` or `update_companion_key` carries it.
    Proof {
        pkh: String,
        /// Prove possession of this BLS public key (BLpk…) instead of the key's own, as octez-client's
        /// --override-public-key does.
        #[arg(long)]
        override_public_key: Option<String>,
    },
}

fn parse_curve(s: &str) -> Result<Curve, String> {
    s.parse().map_err(|e: tezos::KeyError| e.to_string())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TZKMS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    load_config_from(cli.config.as_deref(), cli.data_dir.as_deref())
}

/// The configuration file (or the defaults) with the `--data-dir` override.
fn load_config_from(
    path: Option<&std::path::Path>,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(dir) = data_dir {
        config.data_dir = Some(dir.to_owned());
    }
    Ok(config)
}

fn import_line(pkh: &PublicKeyHash, listen: Option<SocketAddr>) -> String {
    let host = listen.map_or_else(|| DEFAULT_LISTEN.to_string(), |a| a.to_string());
    format!("octez-client import secret key <alias> http://{host}/{pkh}")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let mut config = load_config(&cli)?;
    match &cli.command {
        Command::Serve {
            listen,
            metrics_listen,
        } => {
            if metrics_listen.is_some() {
                config.metrics.listen = *metrics_listen;
            }
            // What SIGHUP re-reads: the same file, under the same command-line overrides.
            let (path, data_dir) = (cli.config.clone(), cli.data_dir.clone());
            let (listen2, metrics_listen2) = (listen.clone(), *metrics_listen);
            let reread = move || -> anyhow::Result<Config> {
                let mut config = load_config_from(path.as_deref(), data_dir.as_deref())?;
                if !listen2.is_empty() {
                    config.server.listen = listen2.clone();
                }
                if metrics_listen2.is_some() {
                    config.metrics.listen = metrics_listen2;
                }
                Ok(config)
            };
            serve(config, listen, reread)
        }
        Command::Keys(cmd) => keys(config, cmd),
        Command::Watermark(cmd) => watermark(config, cmd),
        Command::Azure(AzureCommand::Keys(cmd)) => block_on(azure_keys(config, cmd)),
        Command::Config(ConfigCommand::Check) => config_check(config),
    }
}

/// What a baker should know about who may sign what, one line each.
fn security_summary(
    config: &Config,
    keyring: &tzkms::backend::Keyring,
    auth: &tzkms::auth::Authenticator,
    policy: &tzkms::policy::Policy,
) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(format!(
        "policy.allowed_magic_bytes: [{}]",
        policy
            .allowed_magic_bytes()
            .iter()
            .map(|b| format!("0x{b:02X}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for (pkh, _) in keyring.sorted() {
        lines.push(format!("key {pkh}: {}", policy.for_key(&pkh).describe()));
    }
    for pkh in policy.configured_keys() {
        if keyring.get(pkh).is_none() {
            lines.push(format!(
                "warning: policy.keys.{pkh} names a key this signer does not serve"
            ));
        }
    }
    if auth.required() {
        for key in auth.keys() {
            let bound = auth.binding(&key.hash).map_or_else(
                || "any key".to_string(),
                |keys| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "),
            );
            lines.push(format!(
                "auth: authorized key {} ({}) may ask for {bound}",
                key.hash, key.name
            ));
        }
    } else {
        lines.push("auth: requests are not authenticated (auth.required = false)".into());
    }
    for addr in &config.server.listen {
        lines.push(format!("listener http://{addr}"));
    }
    if let Some(tls) = &config.server.tls {
        for addr in &tls.listen {
            let mtls = if tls.client_ca.is_some() {
                "client certificates required"
            } else {
                "no client certificates"
            };
            lines.push(format!("listener https://{addr} ({mtls})"));
        }
    }
    lines
}

fn config_check(mut config: Config) -> anyhow::Result<()> {
    let would_generate = config.keys.generate_if_empty;
    config.keys.generate_if_empty = false;
    block_on(async {
        // Loading the keyring reaches every backend: a vault is asked for its token audience, a token
        // and its key list, exactly as `serve` would.
        let (keyring, report) = startup::load_keyring(&config).await?;
        for (backend, n) in keyring.keys_per_backend() {
            println!("backend: {} ({n} key(s))", backend.describe());
        }
        if keyring.is_empty() {
            for s in &report.skipped {
                eprintln!("not served: {s}");
            }
            let generated = if would_generate {
                " (serve would generate a P-256 key file on its first start, as keys.generate_if_empty is \
                 on; a key of your choosing is better)"
            } else {
                ""
            };
            bail!(
                "no key is served from {}{generated}: {}",
                config.data_dir().display(),
                startup::NO_KEY_FIX
            );
        }
        let auth = tzkms::auth::Authenticator::from_config(&config.auth)?;
        let policy = tzkms::policy::Policy::from_config(&config.policy).map_err(anyhow::Error::msg)?;
        if let Some(tls) = &config.server.tls {
            let loaded = tzkms::server::tls::Tls::load(tls)?;
            println!("tls: certificate sha256:{}", loaded.fingerprint());
        }
        let data_dir = config.data_dir();
        let marks = watermark::file::read(&data_dir)?;
        watermark::file::probe_write(&data_dir)
            .with_context(|| format!("watermark store: {} is not writable", data_dir.display()))?;
        println!(
            "watermark: file {} and {} ({} mark(s), writable; {})",
            data_dir.join(watermark::file::STORE_FILE).display(),
            watermark::file::LOG_FILE,
            marks.len(),
            watermark::file::describe_chains(
                &watermark::file::chains_of(&marks),
                config.watermark.max_chains
            )
        );
        if let Some(table) = &config.watermark.table {
            use tzkms::watermark::WatermarkStore as _;
            let store = startup::table_store(&config, table).await?;
            for check in store.probe().await {
                if !check.ok {
                    bail!("{}: {}", check.name, check.detail);
                }
            }
            println!("watermark: {} (writable)", store.describe());
        }
        if let Some(addr) = config.metrics.listen {
            println!("operations: http://{addr}/metrics, /healthz, /readyz");
        }
        for s in &report.skipped {
            println!("not served: {s}");
        }
        for line in security_summary(&config, &keyring, &auth, &policy) {
            println!("{line}");
        }
        println!("configuration OK");
        anyhow::Ok(())
    })
}

/// Whether this process runs as root (uid 0), read from the owner of `/proc/self`.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn serve(
    mut config: Config,
    listen: &[SocketAddr],
    reread: impl Fn() -> anyhow::Result<Config> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    if !listen.is_empty() {
        config.server.listen = listen.to_vec();
    }
    let reread = std::sync::Arc::new(reread);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let data_dir = config.data_dir();
        if config.data_dir.is_none() {
            // The default ./tzkms-data is made on first start; a configured directory must exist, so a
            // mistyped path never becomes a fresh signer with a new key while the real one gets 404.
            startup::ensure_data_dir(&data_dir)?;
        }
        startup::existing_data_dir(&data_dir)?;
        let _lock = startup::DataDirLock::acquire(&data_dir)?;
        if running_as_root() {
            tracing::warn!(
                "running as root: a flaw in tzkms or a dependency would own the whole host; run it as a \
                 dedicated user (deploy/tzkms.service does)"
            );
        }
        let (signer, report) = startup::build_signer(&config).await?;
        for skipped in &report.skipped {
            tracing::warn!("not served: {skipped}");
        }
        match report.watermarks {
            Some(Opened::Initialized) => tracing::info!(
                store = %data_dir.join(watermark::file::STORE_FILE).display(),
                "fresh data directory: initialised a new, empty watermark store"
            ),
            Some(Opened::Loaded(marks)) => tracing::info!(marks, "watermark store loaded"),
            None => {}
        }
        if config.watermark.max_chains == 0 {
            tracing::warn!(
                "watermark.max_chains = 0: no bound on chains; a caller allowed to sign consensus payloads \
                 can grow the watermark store with invented chain ids"
            );
        }
        for pkh in &config.watermark.unprotected_keys {
            tracing::warn!(
                %pkh,
                "DOUBLE-SIGNING PROTECTION IS OFF for this key (watermark.unprotected_keys): it will sign \
                 conflicting blocks and attestations if asked"
            );
        }
        let app = App::bind(signer.clone(), &config.server).await?;
        let addrs = app.local_addrs();
        if let Some(addr) = config.metrics.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics listener on {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "operations listener: /metrics, /healthz, /readyz");
            println!("metrics on http://{}/metrics", listener.local_addr()?);
            tokio::spawn(tzkms::metrics::serve_with(
                listener,
                signer.clone(),
                Some(app.connections()),
                config.health.clone(),
            ));
        }
        if let Some(pkh) = report.generated {
            tracing::info!(%pkh, "no key configured: generated a P-256 key");
            println!("Generated a P-256 key on first start: {pkh}");
            println!(
                "Point octez-client at it: {}",
                import_line(&pkh, addrs.first().copied())
            );
        }
        let rules = signer.rules();
        tracing::info!(
            version = VERSION,
            data_dir = %config.data_dir().display(),
            keys = rules.keyring.len(),
            "tzkms starting"
        );
        for backend in rules.keyring.backends() {
            tracing::info!(backend = %backend.describe(), "key backend");
        }
        if rules.keyring.is_empty() {
            tracing::warn!(
                "no key is served: every signing request will get 404 and readiness fails; {}, then \
                 reload with SIGHUP (systemctl reload tzkms)",
                startup::NO_KEY_FIX
            );
        }
        tracing::info!(store = %signer.watermarks().describe(), "watermark store");
        if config.metrics.listen.is_none() {
            tracing::info!("no operations listener (metrics.listen): no /metrics, /healthz or /readyz");
        }
        for (pkh, key) in rules.keyring.sorted() {
            tracing::info!(%pkh, name = %key.info.name, backend = key.backend.kind(), "serving key");
        }
        for line in security_summary(&config, &rules.keyring, &rules.auth, &rules.policy) {
            tracing::info!("{line}");
        }
        drop(rules);
        signer.metrics().config_loaded_now();
        // Handlers are installed before the address is announced, so a SIGTERM sent as soon as the
        // address is known still shuts down gracefully.
        let signal = shutdown_signal()?;
        let draining = signer.clone();
        let shutdown = async move {
            signal.await;
            draining.start_draining();
        };
        let running = tzkms::reload::Running {
            azure: report.azure.clone(),
            tls: app.tls(),
        };
        reload_on_sighup(signer.clone(), config.clone(), running, reread)?;
        for (scheme, addr) in app.endpoints() {
            tracing::info!(%addr, scheme, "listening");
            println!("listening on {scheme}://{addr}");
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
        app.run(shutdown).await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// On every SIGHUP, re-reads the configuration file and applies keys, authorized keys, policy and TLS
/// files at once (see `tzkms::reload`); a failed reload changes nothing and says why. Reloads run one at a
/// time, each against the configuration last applied.
fn reload_on_sighup(
    signer: std::sync::Arc<tzkms::signer::Signer>,
    mut applied: Config,
    running: tzkms::reload::Running,
    reread: std::sync::Arc<impl Fn() -> anyhow::Result<Config> + Send + Sync + 'static>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let result = match reread() {
                Ok(new) => tzkms::reload::reload(&signer, &applied, &new, &running)
                    .await
                    .map(|report| (new, report)),
                Err(e) => Err(e),
            };
            match result {
                Ok((new, report)) => {
                    signer.metrics().reload(true);
                    log_reload(&report, &new, &signer);
                    // The settings that need a restart stay as they run: compare the next reload with
                    // them, not with the file.
                    let mut kept = applied.clone();
                    kept.keys = new.keys;
                    kept.auth = new.auth;
                    kept.policy = new.policy;
                    if let (Some(tls), Some(file)) = (&mut kept.server.tls, new.server.tls) {
                        tls.certificate = file.certificate;
                        tls.private_key = file.private_key;
                        tls.client_ca = file.client_ca;
                    }
                    applied = kept;
                }
                Err(e) => {
                    signer.metrics().reload(false);
                    tracing::error!("SIGHUP: reload failed, still serving the previous configuration: {e:#}");
                }
            }
        }
    });
    Ok(())
}

fn log_reload(report: &tzkms::reload::Reloaded, new: &Config, signer: &tzkms::signer::Signer) {
    for setting in &report.needs_restart {
        tracing::warn!(
            "SIGHUP: {setting} changed in the configuration file: it needs a restart (systemctl restart \
             tzkms); the running value is kept"
        );
    }
    for s in &report.skipped {
        tracing::warn!("not served: {s}");
    }
    for pkh in &report.added {
        tracing::info!(%pkh, "SIGHUP: key added");
    }
    for pkh in &report.removed {
        tracing::warn!(%pkh, "SIGHUP: key removed: requests for it now get 404");
    }
    if let Some(fingerprint) = &report.tls_certificate {
        tracing::info!(certificate = %format!("sha256:{fingerprint}"), "SIGHUP: TLS certificate reloaded");
    }
    let rules = signer.rules();
    for line in security_summary(new, &rules.keyring, &rules.auth, &rules.policy) {
        tracing::info!("{line}");
    }
    if report.keys == 0 {
        tracing::warn!("no key is served: {}", startup::NO_KEY_FIX);
    }
    tracing::info!(
        keys = report.keys,
        added = report.added.len(),
        removed = report.removed.len(),
        "SIGHUP: configuration reloaded: keys, authorized keys and policy applied"
    );
}

/// Resolves on SIGTERM or SIGINT. The handlers are registered when this is called.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
            _ = int.recv() => tracing::info!("SIGINT: finishing in-flight requests"),
        }
    })
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

fn keys(config: Config, cmd: &KeysCommand) -> anyhow::Result<()> {
    let data_dir = config.data_dir();
    match cmd {
        KeysCommand::List { json } => {
            let mut config = config;
            config.keys.generate_if_empty = false;
            let (keyring, report) = block_on(startup::load_keyring(&config))?;
            let keys = keyring.sorted();
            if *json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|(pkh, k)| {
                        serde_json::json!({
                            "pkh": pkh.to_string(),
                            "public_key": k.info.public_key.to_string(),
                            "curve": pkh.curve().name(),
                            "name": k.info.name,
                            "backend": k.backend.kind(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for (pkh, k) in keys {
                    println!(
                        "{pkh}  {:<9}  {:<6}  {}",
                        pkh.curve().name(),
                        k.backend.kind(),
                        k.info.name
                    );
                }
                for s in report.skipped {
                    eprintln!("not served: {s}");
                }
            }
        }
        KeysCommand::Generate {
            curve,
            encrypt,
            alias,
        } => {
            let key = SecretKey::generate(*curve);
            store_key(&config, &data_dir, &key, *encrypt, alias.as_deref())?;
            // A key made here signed nothing anywhere else: its history starts now.
            watermark::floor::raise(&data_dir, &key.public_key().hash(), None, "tzkms keys generate")?;
        }
        KeysCommand::Import { alias } => {
            let mut line = Zeroizing::new(String::new());
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the secret key from standard input")?;
            let text = line.trim();
            let text = text
                .strip_prefix("unencrypted:")
                .or_else(|| text.strip_prefix("encrypted:"))
                .unwrap_or(text);
            if encrypted::is_encrypted(text) {
                let password = startup::key_password(&config)?
                    .context("this key is encrypted: set TZKMS_KEY_PASSWORD or keys.password_file")?;
                let key = encrypted::decrypt(text, &password).context("decrypting the key")?;
                startup::ensure_data_dir(&data_dir)?;
                let name = alias
                    .clone()
                    .unwrap_or_else(|| key.public_key().hash().to_string());
                // Kept encrypted on disk, exactly as given.
                let path = write_key_file(&data_dir, &name, text)?;
                report_key(&key, &path);
                history_note(&key.public_key().hash());
            } else {
                let key: SecretKey = text.parse().context("parsing the secret key")?;
                store_key(&config, &data_dir, &key, false, alias.as_deref())?;
                history_note(&key.public_key().hash());
            }
        }
        KeysCommand::Proof {
            pkh,
            override_public_key,
        } => {
            let pkh: PublicKeyHash = pkh.parse().map_err(|e| anyhow::anyhow!("{pkh}: {e}"))?;
            if pkh.curve() != Curve::Bls {
                bail!(
                    "{pkh} is not a tz4 key ({} curve): only tz4 (BLS) keys have a proof of possession; \
                     give the tz4 address of the consensus or companion key",
                    pkh.curve()
                );
            }
            let override_pk = override_public_key
                .as_deref()
                .map(|text| -> anyhow::Result<tezos::PublicKey> {
                    let pk: tezos::PublicKey = text
                        .parse()
                        .map_err(|e| anyhow::anyhow!("--override-public-key {text}: {e}"))?;
                    if pk.curve() != Curve::Bls {
                        bail!(
                            "--override-public-key must be a BLS public key (BLpk…), not a {} key",
                            pk.curve()
                        );
                    }
                    Ok(pk)
                })
                .transpose()?;
            let mut config = config;
            config.keys.generate_if_empty = false;
            let (keyring, _) = block_on(startup::load_keyring(&config))?;
            let Some(key) = keyring.get(&pkh) else {
                bail!("{pkh} is not served from {}", data_dir.display());
            };
            let Some(proof) = key.backend.bls_prove_possession(&pkh, override_pk.as_ref()) else {
                bail!(
                    "the {} backend of {pkh} cannot make a proof of possession: only tz4 file keys can",
                    key.backend.kind()
                );
            };
            println!("{proof}");
        }
        KeysCommand::Show { pkh } => {
            let pkh: PublicKeyHash = pkh.parse().map_err(|e| anyhow::anyhow!("{pkh}: {e}"))?;
            let mut config = config;
            config.keys.generate_if_empty = false;
            let (keyring, _) = block_on(startup::load_keyring(&config))?;
            let Some(key) = keyring.get(&pkh) else {
                bail!("{pkh} is not served from {}", data_dir.display());
            };
            println!("address:    {pkh}");
            println!("public key: {}", key.info.public_key);
            println!("curve:      {}", pkh.curve());
            println!("backend:    {} ({})", key.backend.kind(), key.info.name);
            println!("{}", import_line(&pkh, config.server.listen.first().copied()));
        }
    }
    Ok(())
}

fn store_key(
    config: &Config,
    data_dir: &std::path::Path,
    key: &SecretKey,
    encrypt: bool,
    alias: Option<&str>,
) -> anyhow::Result<()> {
    startup::ensure_data_dir(data_dir)?;
    let text = if encrypt {
        let password = startup::key_password(config)?
            .context("--encrypt needs a password: set TZKMS_KEY_PASSWORD or keys.password_file")?;
        if password.is_empty() {
            bail!("refusing to encrypt with an empty password");
        }
        Zeroizing::new(encrypted::encrypt(key, &password))
    } else {
        key.to_b58()
    };
    let pkh = key.public_key().hash();
    let name = alias.map_or_else(|| pkh.to_string(), str::to_owned);
    let path = write_key_file(data_dir, &name, &text)?;
    report_key(key, &path);
    Ok(())
}

fn report_key(key: &SecretKey, path: &std::path::Path) {
    let pkh = key.public_key().hash();
    println!("{pkh}");
    println!("public key: {}", key.public_key());
    println!("key file:   {}", path.display());
    println!("{}", import_line(&pkh, None));
}

/// What an imported key needs before it signs consensus here.
fn history_note(pkh: &PublicKeyHash) {
    eprintln!(
        "note: {pkh} may have signed elsewhere before; it signs consensus here once its marks are imported \
         (`tzkms watermark import --from octez|signatory|tzkms <path>`) or a floor is set \
         (`tzkms watermark floor {pkh} --level <current head level>`); see docs/watermark.md"
    );
}

fn watermark(config: Config, cmd: &WatermarkCommand) -> anyhow::Result<()> {
    match cmd {
        WatermarkCommand::Show {
            store,
            pkh,
            chain,
            json,
        } => {
            let pkh: Option<PublicKeyHash> = pkh.as_deref().map(str::parse).transpose()?;
            let chain: Option<tezos::ChainId> = chain.as_deref().map(str::parse).transpose()?;
            let mut marks = read_marks(&config, *store)?;
            marks.retain(|k, _| pkh.is_none_or(|p| p == k.pkh) && chain.is_none_or(|c| c == k.chain));
            if *json {
                print!("{}", interchange::encode(&marks));
            } else if marks.is_empty() {
                println!("no marks");
            } else {
                println!(
                    "{:<15}  {:<36}  {:<14}  {:>10}  {:>5}  signature",
                    "chain", "pkh", "kind", "level", "round"
                );
                for (k, m) in &marks {
                    println!(
                        "{:<15}  {:<36}  {:<14}  {:>10}  {:>5}  {}",
                        k.chain.to_string(),
                        k.pkh.to_string(),
                        k.kind.name(),
                        m.level,
                        watermark::round_text(m.round),
                        if m.signature.is_some() { "stored" } else { "none" }
                    );
                }
            }
        }
        WatermarkCommand::Export { store, out } => {
            let text = interchange::encode(&read_marks(&config, *store)?);
            match out {
                Some(path) => {
                    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
                }
                None => print!("{text}"),
            }
        }
        WatermarkCommand::Set {
            store,
            pkh,
            chain,
            kind,
            level,
            round,
        } => {
            let pkh: PublicKeyHash = pkh.parse()?;
            let chain: tezos::ChainId = chain.parse()?;
            let kinds: Vec<tezos::ConsensusKind> = if kind.is_empty() {
                tezos::ConsensusKind::ALL.to_vec()
            } else {
                kind.iter()
                    .map(|k| k.parse().map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()?
            };
            let incoming = kinds
                .into_iter()
                .map(|kind| {
                    (
                        watermark::MarkKey { chain, pkh, kind },
                        watermark::Mark {
                            level: tezos::Level(*level),
                            round: tezos::Round(*round),
                            // No payload was signed here: nothing at or below this mark will be.
                            hash: [0; 32],
                            signature: None,
                        },
                    )
                })
                .collect();
            change_marks(&config, *store, incoming)?;
        }
        WatermarkCommand::Floor { pkh, level } => {
            let pkh: PublicKeyHash = pkh.parse().map_err(|e| anyhow::anyhow!("{pkh}: {e}"))?;
            let data_dir = config.data_dir();
            startup::existing_data_dir(&data_dir)?;
            match watermark::floor::raise(&data_dir, &pkh, Some(tezos::Level(*level)), "tzkms watermark floor")? {
                watermark::floor::Raised::Set => println!(
                    "floor of {pkh} set to level {level}: consensus is signed only above it until the key has marks here"
                ),
                watermark::floor::Raised::Kept(existing) => println!(
                    "floor of {pkh} kept at {}: it is already at or above level {level}",
                    existing.map_or_else(|| "none".to_owned(), |l| format!("level {l}"))
                ),
            }
        }
        WatermarkCommand::Import { store, from, path } => {
            let incoming = match from {
                ImportFormat::Tzkms => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    interchange::decode(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                }
                ImportFormat::Octez => interchange::import_octez(path).map_err(anyhow::Error::msg)?,
                ImportFormat::Signatory => interchange::import_signatory(path).map_err(anyhow::Error::msg)?,
            };
            change_marks(&config, *store, incoming)?;
        }
    }
    Ok(())
}

/// The shared table store of the configuration.
async fn shared_store(config: &Config) -> anyhow::Result<watermark::azure_table::TableStore> {
    let table = config
        .watermark
        .table
        .as_ref()
        .context("--store table needs a [watermark.table] section in the configuration")?;
    startup::table_store(config, table).await
}

fn read_marks(config: &Config, store: StoreChoice) -> anyhow::Result<interchange::Marks> {
    match store {
        StoreChoice::Local => {
            let data_dir = config.data_dir();
            startup::existing_data_dir(&data_dir)?;
            if !data_dir.join(watermark::file::STORE_FILE).exists()
                && !data_dir.join(watermark::file::MARKER_FILE).exists()
            {
                bail!(
                    "{} has no watermark store: no signer has run with this data directory. Is it the one the \
                     signer uses? It comes from {}",
                    data_dir.display(),
                    startup::DATA_DIR_SOURCES
                );
            }
            Ok(watermark::file::read(&data_dir)?)
        }
        StoreChoice::Table => block_on(async { Ok(shared_store(config).await?.all().await?) }),
    }
}

/// Raises marks: in the shared table with conditional writes (safe while instances run: a running
/// instance re-reads on its next conflicting write), or in the local store while holding the data
/// directory's lock (a running server holds it, and its in-memory marks would not see the change).
fn change_marks(config: &Config, store: StoreChoice, incoming: interchange::Marks) -> anyhow::Result<()> {
    if store == StoreChoice::Table {
        let total = incoming.len();
        let raised = block_on(async {
            let table = shared_store(config).await?;
            let mut raised = 0;
            for (key, mark) in &incoming {
                if table.raise(key, mark).await? {
                    println!("raised {key} to level {} round {}", mark.level, mark.round);
                    raised += 1;
                }
            }
            anyhow::Ok(raised)
        })?;
        println!("{raised} of {total} marks raised in the shared table; the others were already at or above");
        return Ok(());
    }
    let data_dir = &config.data_dir();
    startup::ensure_data_dir(data_dir)?;
    let _lock = startup::DataDirLock::acquire(data_dir)
        .context("changing marks needs tzkms stopped (show and export work while it runs)")?;
    let mut marks = watermark::file::read(data_dir)?;
    let total = incoming.len();
    let raised = interchange::raise(&mut marks, incoming);
    if !raised.is_empty() {
        watermark::file::write(data_dir, &marks)?;
        watermark::file::mark_initialized(data_dir)?;
    }
    for key in &raised {
        let m = &marks[key];
        println!("raised {key} to level {} round {}", m.level, m.round);
    }
    println!(
        "{} of {total} marks raised; the others were already at or above",
        raised.len()
    );
    Ok(())
}

/// Budget for one-off management calls.
const MANAGEMENT_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

async fn azure_keys(config: Config, cmd: &AzureKeysCommand) -> anyhow::Result<()> {
    let azure = config
        .azure
        .as_ref()
        .context("no [azure] section in the configuration (see docs/azure.md)")?;
    let client = startup::azure_client(azure).await?;
    let report = |b: &tzkms::azure::keyvault::KeyBundle| -> anyhow::Result<()> {
        let curve = b
            .crv
            .as_deref()
            .and_then(KvCurve::from_crv)
            .context("not a P-256/P-256K key")?;
        let pk = tezos::PublicKey::from_affine(curve.tezos(), &b.x, &b.y)?;
        println!("{}", pk.hash());
        println!("key:        {}/{}", b.name, b.version);
        println!("public key: {pk}");
        println!("{}", import_line(&pk.hash(), None));
        Ok(())
    };
    match cmd {
        AzureKeysCommand::List { json } => {
            let rows = vault_key_versions(&client).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<24} {:<32} {:<7} {:<36} {:<7} {:<20} usable",
                    "NAME", "VERSION", "CURVE", "ADDRESS", "ENABLED", "CREATED (UTC)"
                );
                for r in rows {
                    println!(
                        "{:<24} {:<32} {:<7} {:<36} {:<7} {:<20} {}",
                        r["name"].as_str().unwrap_or(""),
                        r["version"].as_str().unwrap_or("-"),
                        r["curve"].as_str().unwrap_or("-"),
                        r["address"].as_str().unwrap_or("-"),
                        r["enabled"].as_bool().map_or("-".into(), |e| e.to_string()),
                        r["created"].as_u64().map_or("-".into(), utc_text),
                        r["error"].as_str().or(r["usable"].as_str()).unwrap_or("")
                    );
                }
            }
        }
        AzureKeysCommand::Create {
            name,
            curve,
            new_version,
        } => {
            let existing = existing_versions(&client, name, *new_version).await?;
            let bundle = client.create_key(name, *curve, MANAGEMENT_BUDGET).await?;
            report(&bundle)?;
            warn_new_version(&existing, &bundle);
            // A key created in the HSM now signed nothing anywhere: this data directory vouches for it.
            let pk = tezos::PublicKey::from_affine(curve.tezos(), &bundle.x, &bundle.y)?;
            let data_dir = config.data_dir();
            startup::ensure_data_dir(&data_dir)?;
            watermark::floor::raise(&data_dir, &pk.hash(), None, "tzkms azure keys create")?;
            println!(
                "consensus: vouched for in {} (a new key has no past); another data directory serving it needs \
                 the shared table, its marks, or `tzkms watermark floor`",
                data_dir.display()
            );
        }
        AzureKeysCommand::Import { name, new_version } => {
            let mut text = Zeroizing::new(String::new());
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading the private key from standard input")?;
            let password = startup::key_password(&config)?;
            let passphrase = std::env::var("TZKMS_PEM_PASSPHRASE")
                .ok()
                .map(|p| Zeroizing::new(p.into_bytes()));
            let key = tzkms::azure::import::parse(
                &text,
                password.as_ref().map(|p| p.as_slice()),
                passphrase.as_ref().map(|p| p.as_slice()),
            )
            .map_err(anyhow::Error::msg)?;
            let expected = key.public_key().map_err(anyhow::Error::msg)?;
            let existing = existing_versions(&client, name, *new_version).await?;
            let bundle = client
                .import_key(name, key.curve, &key.d, &key.x, &key.y, MANAGEMENT_BUDGET)
                .await?;
            let got = tezos::PublicKey::from_affine(key.curve.tezos(), &bundle.x, &bundle.y)?;
            if got != expected {
                bail!("the vault reports public key {got}, expected {expected}: check the vault");
            }
            report(&bundle)?;
            warn_new_version(&existing, &bundle);
            history_note(&got.hash());
        }
        AzureKeysCommand::Backup { name, file } => {
            let blob = client.backup_key(name, MANAGEMENT_BUDGET).await?;
            std::fs::write(file, blob).with_context(|| format!("writing {}", file.display()))?;
            println!("backup of {name} written to {}", file.display());
        }
        AzureKeysCommand::Restore { file } => {
            let blob =
                std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            report(&client.restore_key(blob.trim(), MANAGEMENT_BUDGET).await?)?;
        }
    }
    Ok(())
}

/// A version of a vault key as `azure keys` shows it.
struct VersionRow {
    version: String,
    address: Option<PublicKeyHash>,
    enabled: bool,
}

/// The Tezos address of a vault key version, if it is a P-256 or P-256K key.
fn address_of(b: &tzkms::azure::keyvault::KeyBundle) -> Option<PublicKeyHash> {
    let curve = b.crv.as_deref().and_then(KvCurve::from_crv)?;
    tezos::PublicKey::from_affine(curve.tezos(), &b.x, &b.y)
        .ok()
        .map(|pk| pk.hash())
}

/// The versions of `name` already in the vault (empty if the name is new). An existing name is refused
/// unless `new_version`: a new version is a new key pair, so a new address, and the chain keeps expecting
/// the old one.
async fn existing_versions(
    client: &tzkms::azure::keyvault::KeyVaultClient,
    name: &str,
    new_version: bool,
) -> anyhow::Result<Vec<VersionRow>> {
    let versions = match client.list_versions(name, MANAGEMENT_BUDGET).await {
        Ok(versions) => versions,
        Err(e) if e.status() == Some(404) => return Ok(Vec::new()),
        Err(e) => return Err(e).context(format!("checking whether the key {name} already exists")),
    };
    let mut rows = Vec::new();
    for item in versions {
        let bundle = client.get_key(name, &item.version, MANAGEMENT_BUDGET).await?;
        rows.push(VersionRow {
            address: address_of(&bundle),
            version: item.version,
            enabled: item.enabled,
        });
    }
    if !rows.is_empty() && !new_version {
        let listed: Vec<String> = rows
            .iter()
            .map(|r| {
                let address = r.address.map_or("no Tezos address".into(), |a| a.to_string());
                format!("{address} (version {}, enabled={})", r.version, r.enabled)
            })
            .collect();
        bail!(
            "the vault already has a key named {name}: {}. Creating or importing it again would add a new \
             version with a new address, which the chain does not expect for this baker. Nothing was changed. \
             Choose another --name, or pass --new-version to rotate on purpose",
            listed.join(", ")
        );
    }
    Ok(rows)
}

/// After a new version of an existing key: the address tzkms serves for it changes, say so loudly.
fn warn_new_version(existing: &[VersionRow], bundle: &tzkms::azure::keyvault::KeyBundle) {
    if existing.is_empty() {
        return;
    }
    let new = address_of(bundle).map_or("?".into(), |a| a.to_string());
    let old: Vec<String> = existing
        .iter()
        .filter(|r| r.enabled)
        .map(|r| r.address.map_or("?".into(), |a| a.to_string()))
        .collect();
    eprintln!(
        "WARNING: {name} now has a new version {version} with a NEW ADDRESS {new}.\n\
         The chain still expects {old} for this baker. tzkms serves every enabled version, so both addresses \
         are served after its next key refresh (unless [azure] keys pins a version: then add the new one).\n\
         Next: register {new} as the consensus key (octez-client set consensus key for <baker> to <{new}>), \
         and keep the old version enabled until the change is active; only then disable it \
         (az keyvault key set-attributes --name {name} --version <old> --enabled false).",
        name = bundle.name,
        version = bundle.version,
        old = if old.is_empty() {
            "the old address".into()
        } else {
            old.join(", ")
        },
    );
}

/// Every version of every key of the vault, for `azure keys list`.
async fn vault_key_versions(
    client: &tzkms::azure::keyvault::KeyVaultClient,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    for item in client.list_keys(MANAGEMENT_BUDGET).await? {
        let mut versions = match client.list_versions(&item.name, MANAGEMENT_BUDGET).await {
            Ok(v) => v,
            Err(e) => {
                rows.push(serde_json::json!({ "name": item.name, "error": e.to_string() }));
                continue;
            }
        };
        versions.sort_by_key(|v| v.created);
        for v in versions {
            let row = match client.get_key(&item.name, &v.version, MANAGEMENT_BUDGET).await {
                Ok(b) => serde_json::json!({
                    "name": b.name, "version": b.version, "kty": b.kty, "curve": b.crv,
                    "address": address_of(&b).map(|a| a.to_string()), "enabled": b.enabled,
                    "created": b.created, "usable": b.usable_now().err().unwrap_or("yes"),
                }),
                Err(e) => serde_json::json!({
                    "name": item.name, "version": v.version, "enabled": v.enabled, "created": v.created,
                    "error": e.to_string(),
                }),
            };
            rows.push(row);
        }
    }
    Ok(rows)
}

/// `2026-12-05T13:07:44Z` for seconds since the Unix epoch (proleptic Gregorian calendar, UTC).
fn utc_text(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date, counting in 400-year eras from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}
