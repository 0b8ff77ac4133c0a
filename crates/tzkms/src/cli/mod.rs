//! The `tzkms` command line: the clap definitions, one module per subcommand, and what they share.

pub(crate) mod azure;
pub(crate) mod completions;
pub(crate) mod config;
pub(crate) mod keys;
pub(crate) mod man;
pub(crate) mod serve;
pub(crate) mod watermark;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tezos::PublicKeyHash;
use tzkms::config::{Config, DEFAULT_LISTEN};

pub(crate) use azure::AzureCommand;
pub(crate) use config::ConfigCommand;
pub(crate) use keys::KeysCommand;
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
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
    Completions(completions::CompletionsArgs),
    Man(man::ManArgs),
}

pub(crate) fn init_logging(format: LogFormat) {
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

pub(crate) fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    load_config_from(cli.config.as_deref(), cli.data_dir.as_deref())
}

/// The configuration file (or the defaults) with the `--data-dir` override.
pub(crate) fn load_config_from(
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

pub(crate) fn import_line(pkh: &PublicKeyHash, listen: Option<SocketAddr>) -> String {
    let host = listen.map_or_else(|| DEFAULT_LISTEN.to_string(), |a| a.to_string());
    format!("octez-client import secret key <alias> http://{host}/{pkh}")
}

/// Parses the command line and runs the subcommand.
pub(crate) fn run() -> anyhow::Result<()> {
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
            serve::serve(config, listen, reread)
        }
        Command::Keys(cmd) => keys::keys(config, cmd),
        Command::Watermark(cmd) => watermark::watermark(config, cmd),
        Command::Azure(AzureCommand::Keys(cmd)) => block_on(azure::azure_keys(config, cmd)),
        Command::Config(ConfigCommand::Check) => config::config_check(config),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => man::man(args),
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
