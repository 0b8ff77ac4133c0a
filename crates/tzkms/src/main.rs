//! The `tzkms` command line: `serve`, `keys …`.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use tezos::{encrypted, Curve, PublicKeyHash, SecretKey};
use tzkms::backend::file::write_key_file;
use tzkms::config::{Config, DEFAULT_LISTEN};
use tzkms::server::App;
use tzkms::startup;
use zeroize::Zeroizing;

#[derive(Debug, Parser)]
#[command(name = "tzkms", version, about = "Remote signer for Tezos bakers")]
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
        /// Address to listen on (repeatable). Overrides the config file. Default 127.0.0.1:6732.
        #[arg(long)]
        listen: Vec<SocketAddr>,
    },
    /// Manage local key files.
    #[command(subcommand)]
    Keys(KeysCommand),
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
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &cli.data_dir {
        config.data_dir = Some(dir.clone());
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
    let config = load_config(&cli)?;
    match &cli.command {
        Command::Serve { listen } => serve(config, listen),
        Command::Keys(cmd) => keys(config, cmd),
    }
}

fn serve(mut config: Config, listen: &[SocketAddr]) -> anyhow::Result<()> {
    if !listen.is_empty() {
        config.server.listen = listen.to_vec();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (signer, report) = startup::build_signer(&config)?;
        for skipped in &report.skipped {
            tracing::warn!("not served: {skipped}");
        }
        let app = App::bind(signer.clone(), &config.server).await?;
        let addrs = app.local_addrs();
        if let Some(pkh) = report.generated {
            tracing::info!(%pkh, "no key configured: generated a P-256 key");
            println!("Generated a P-256 key on first start: {pkh}");
            println!(
                "Point octez-client at it: {}",
                import_line(&pkh, addrs.first().copied())
            );
        }
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            data_dir = %config.data_dir().display(),
            keys = signer.keyring().len(),
            "tzkms starting"
        );
        for (pkh, key) in signer.keyring().sorted() {
            tracing::info!(%pkh, name = %key.info.name, backend = key.backend.kind(), "serving key");
        }
        for addr in &addrs {
            tracing::info!(%addr, "listening");
            println!("listening on http://{addr}");
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
        app.run(shutdown_signal()).await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
        _ = int.recv() => tracing::info!("SIGINT: finishing in-flight requests"),
    }
}

fn keys(config: Config, cmd: &KeysCommand) -> anyhow::Result<()> {
    let data_dir = config.data_dir();
    match cmd {
        KeysCommand::List { json } => {
            let mut config = config;
            config.keys.generate_if_empty = false;
            let (signer, report) = startup::build_signer(&config)?;
            let keys = signer.keyring().sorted();
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
            } else {
                let key: SecretKey = text.parse().context("parsing the secret key")?;
                store_key(&config, &data_dir, &key, false, alias.as_deref())?;
            }
        }
        KeysCommand::Show { pkh } => {
            let pkh: PublicKeyHash = pkh.parse().map_err(|e| anyhow::anyhow!("{pkh}: {e}"))?;
            let mut config = config;
            config.keys.generate_if_empty = false;
            let (signer, _) = startup::build_signer(&config)?;
            let Some(key) = signer.keyring().get(&pkh) else {
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
