//! The `tzkms` command line: the clap definitions, one module per subcommand, and what they share.

/// `println!` for command output: a reader that closed the pipe (`tzkms keys list | head -1`) ends the
/// command quietly, as SIGPIPE would, instead of a panic with a backtrace. Other write errors exit 1.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}
/// `print!` for command output, with `outln!`'s handling of a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!($($arg)*)) };
}

pub(crate) mod auth;
pub(crate) mod azure;
pub(crate) mod completions;
pub(crate) mod config;
pub(crate) mod init;
pub(crate) mod keys;
pub(crate) mod man;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod threshold;
pub(crate) mod watermark;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tezos::PublicKeyHash;
use tzkms::config::{Config, DEFAULT_LISTEN};

pub(crate) use auth::AuthCommand;
pub(crate) use azure::AzureCommand;
pub(crate) use config::ConfigCommand;
pub(crate) use keys::KeysCommand;
pub(crate) use threshold::ThresholdCommand;
pub(crate) use watermark::WatermarkCommand;

/// `tzkms --version`: the version and what it was built from.
pub(crate) const VERSION: &str = concat!(
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
pub(crate) struct Cli {
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
    /// Log level. When given it wins over TZKMS_LOG; without it, TZKMS_LOG (a filter such as
    /// `tzkms=debug,info`) applies, else `info`.
    #[arg(long, global = true, value_enum)]
    log_level: Option<LogLevel>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// Ask a running signer (its operations listener) for keys, marks, readiness, vaults and cost. Exits 2
    /// when it is not ready.
    Status(status::StatusArgs),
    /// Set up a new signer: a commented configuration (--config, default ./tzkms.toml), the data
    /// directory (--data-dir) and its first key, checked as `config check` does.
    Init(Box<init::InitArgs>),
    /// Manage the keys allowed to authenticate signing requests (auth.authorized_keys_file).
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Threshold BLS: split a tz4 key into shares held by separate cosigners, import this machine's share
    /// (docs/threshold.md).
    #[command(subcommand)]
    Threshold(ThresholdCommand),
    Completions(completions::CompletionsArgs),
    Man(man::ManArgs),
}

/// The log filter: `--log-level` when given (a flag beats the environment, as everywhere else), else
/// the `TZKMS_LOG` filter, else `info`.
pub(crate) fn init_logging(format: LogFormat, level: Option<LogLevel>) {
    let filter = match level {
        Some(level) => tracing_subscriber::EnvFilter::new(level.directive()),
        None => tracing_subscriber::EnvFilter::try_from_env("TZKMS_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub(crate) fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    load_config_from(cli.config.as_deref(), cli.data_dir.as_deref())
}

/// The configuration file (or the defaults) with the `--data-dir` override.
pub(crate) fn load_config_from(
    path: Option<&std::path::Path>,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => {
            let config = Config::load(path)?;
            tracing::debug!(path = %path.display(), "configuration file read");
            config
        }
        None => {
            tracing::debug!("no configuration file: defaults apply");
            Config::default()
        }
    };
    if let Some(dir) = data_dir {
        config.data_dir = Some(dir.to_owned());
    }
    Ok(config)
}

/// What a baker types to use `pkh` through a signer listening on `scheme://addr`.
pub(crate) fn import_line(pkh: &PublicKeyHash, scheme: &str, addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        format!("{SIGNER_HOST}:{}", addr.port())
    } else {
        addr.to_string()
    };
    format!("octez-client import secret key <alias> {scheme}://{host}/{pkh}")
}

/// Stands for this machine's address in an import line when the signer listens on every interface.
pub(crate) const SIGNER_HOST: &str = "<signer-host>";

/// Where the configured signer is reached: the first HTTPS listener when TLS is configured (the one a
/// remote baker uses), else the first plain HTTP one, else the default.
pub(crate) fn configured_endpoint(config: &Config) -> (&'static str, SocketAddr) {
    if let Some(addr) = config.server.tls.as_ref().and_then(|t| t.listen.first()) {
        return ("https", *addr);
    }
    let addr = config
        .server
        .listen
        .first()
        .copied()
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address"));
    ("http", addr)
}

/// Prints the import line for the configured listener (stdout), and on stderr what to replace when the
/// signer listens on every interface.
pub(crate) fn print_import_line(pkh: &PublicKeyHash, config: &Config) {
    let (scheme, addr) = configured_endpoint(config);
    outln!("{}", import_line(pkh, scheme, addr));
    if addr.ip().is_unspecified() {
        eprintln!(
            "note: the signer listens on {addr} (every interface): replace {SIGNER_HOST} with this machine's \
             address as the baker host reaches it"
        );
    }
}

/// `TZKMS_LISTEN` for the commands other than `serve` (which reads it as its `--listen`): the address the
/// printed import lines use.
fn listen_from_env() -> anyhow::Result<Option<Vec<SocketAddr>>> {
    let Ok(text) = std::env::var("TZKMS_LISTEN") else {
        return Ok(None);
    };
    let addrs = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim().parse().map_err(|e| {
                anyhow::anyhow!("TZKMS_LISTEN: {s:?} is not an address like 127.0.0.1:6732: {e}")
            })
        })
        .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
    Ok((!addrs.is_empty()).then_some(addrs))
}

/// Parses the command line and runs the subcommand.
pub(crate) fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.log_level);
    if let Command::Init(args) = &cli.command {
        // Writes the configuration rather than reading it.
        return init::init(cli.config.as_deref(), cli.data_dir.as_deref(), args);
    }
    // Generated from the clap definitions alone: a broken TZKMS_CONFIG must not stop them.
    match &cli.command {
        Command::Completions(args) => return completions::completions(args),
        Command::Man(args) => return man::man(args),
        _ => {}
    }
    let mut config = load_config(&cli)?;
    if !matches!(cli.command, Command::Serve { .. }) {
        if let Some(listen) = listen_from_env()? {
            config.server.listen = listen;
        }
    }
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
            serve::serve(config, listen, reread)
        }
        Command::Keys(cmd) => keys::keys(config, cmd),
        Command::Watermark(cmd) => watermark::watermark(config, cmd),
        Command::Azure(AzureCommand::Keys(cmd)) => block_on(azure::azure_keys(config, cmd)),
        Command::Config(ConfigCommand::Check) => config::config_check(config),
        Command::Status(args) => match block_on(status::status(config, args))? {
            0 => Ok(()),
            code => std::process::exit(code),
        },
        Command::Auth(cmd) => auth::auth(config, cli.config.as_deref(), cmd),
        Command::Threshold(cmd) => threshold::threshold(config, cmd),
        Command::Init(_) | Command::Completions(_) | Command::Man(_) => {
            unreachable!("handled before the configuration is loaded")
        }
    }
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// What an imported key needs before it signs consensus here.
pub(crate) fn history_note(pkh: &PublicKeyHash) {
    eprintln!(
        "note: {pkh} may have signed elsewhere before; it signs consensus here once its marks are imported \
         (`tzkms watermark import --from octez|signatory|tzkms <path>`) or a floor is set \
         (`tzkms watermark floor {pkh} --level <current head level>`); see docs/watermark.md"
    );
}

/// Writes command output; see [`outln!`].
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("Error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}
