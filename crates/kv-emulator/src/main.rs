//! `kv-emulator`: run the Azure Key Vault / Managed HSM / Entra ID / managed identity emulator beside tzkms.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use kv_emulator::{Config, Emulator, Flavour, ManagedIdentity, Target};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FlavourArg {
    /// Key Vault (Premium): token audience https://vault.azure.net
    Vault,
    /// Managed HSM: token audience https://managedhsm.azure.net, HSM keys only
    ManagedHsm,
}

/// Azure Key Vault / Managed HSM emulator (EC keys P-256 and P-256K) with Entra ID and managed identity
/// token endpoints, for running tzkms's Azure backend locally. Not a security boundary: test keys only.
///
/// Start it (HTTPS on 127.0.0.1:8443, identity endpoints on http://127.0.0.1:8080, keys kept across restarts):
///
///   kv-emulator --persist-dir ./kv-data
///
/// It prints, one `name=value` per line: vault_url, authority_host, token_endpoint, tenant_id, client_id,
/// imds_endpoint, imds_authority, identity_endpoint, identity_header, ca_file, challenge. Then point tzkms at it:
///
///   vault URL        the printed vault_url (kids look like {vault_url}/keys/{name}/{version})
///   TLS trust        the printed ca_file (a self-signed CA; kept in --persist-dir, so it survives restarts)
///   client secret    AZURE_AUTHORITY_HOST=authority_host, AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET
///                    as printed / configured below
///   workload id.     same authority and ids; any well-formed JWT is accepted as the client assertion unless
///                    --federated-token pins one
///   managed id.      IMDS at imds_endpoint (header `Metadata: true`), or App Service style with
///                    IDENTITY_ENDPOINT=identity_endpoint and IDENTITY_HEADER=identity_header
///
/// Create keys with tzkms's own tooling or any Key Vault client (the official Python SDK works with
/// verify_challenge_resource=False and connection_verify=<ca_file>; see crates/kv-emulator/README.md).
/// Every option can also be given as the KV_EMULATOR_* environment variable shown with it.
#[derive(Debug, Parser)]
#[command(name = "kv-emulator", version, verbatim_doc_comment)]
struct Args {
    /// Address for the vault, Entra ID and (without TLS) identity endpoints.
    #[arg(long, env = "KV_EMULATOR_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,

    /// Serve plain HTTP instead of HTTPS (official Azure SDKs refuse bearer tokens over http).
    #[arg(long, env = "KV_EMULATOR_HTTP")]
    http: bool,

    /// Plain-HTTP address for IMDS and the App Service identity endpoint when serving HTTPS.
    #[arg(long, env = "KV_EMULATOR_IDENTITY_LISTEN", default_value = "127.0.0.1:8080")]
    identity_listen: SocketAddr,

    /// Where to write the CA certificate (PEM) clients must trust [default: <persist-dir>/ca.pem, else a temp dir].
    #[arg(long, env = "KV_EMULATOR_CA_FILE")]
    ca_file: Option<PathBuf>,

    /// Keep keys, the CA key and the token secret in this directory across restarts (default: in memory).
    #[arg(long, env = "KV_EMULATOR_PERSIST_DIR")]
    persist_dir: Option<PathBuf>,

    /// Key Vault or Managed HSM behaviour.
    #[arg(long, value_enum, env = "KV_EMULATOR_FLAVOUR", default_value = "vault")]
    flavour: FlavourArg,

    /// Entra tenant id served by the token endpoints and named in the 401 challenge.
    #[arg(
        long,
        env = "KV_EMULATOR_TENANT_ID",
        default_value = "8e2e9a41-6c3b-4d8a-9f4e-000000000001"
    )]
    tenant_id: String,

    /// Service principal client id accepted by the client secret / client assertion grants.
    #[arg(
        long,
        env = "KV_EMULATOR_CLIENT_ID",
        default_value = "5b1f6e2c-2d7a-4e55-8c1b-000000000002"
    )]
    client_id: String,

    /// Client secret accepted by the client secret grant.
    #[arg(
        long,
        env = "KV_EMULATOR_CLIENT_SECRET",
        default_value = "kv-emulator-client-secret"
    )]
    client_secret: String,

    /// Accept only this exact client assertion (e.g. your federated token file's content); default: any JWT.
    #[arg(long, env = "KV_EMULATOR_FEDERATED_TOKEN")]
    federated_token: Option<String>,

    /// Managed identity client id served by IMDS / App Service.
    #[arg(
        long,
        env = "KV_EMULATOR_MI_CLIENT_ID",
        default_value = "6b0c2a3e-4d5f-4a61-8b7c-000000000003"
    )]
    mi_client_id: String,

    /// Secret the App Service endpoint expects in X-IDENTITY-HEADER (default: random, printed at start).
    #[arg(long, env = "KV_EMULATOR_IDENTITY_HEADER")]
    identity_header: Option<String>,

    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, env = "KV_EMULATOR_TOKEN_LIFETIME", default_value_t = 3599)]
    token_lifetime: u64,

    /// Fixed latency added to every data-plane call, in milliseconds.
    #[arg(long, env = "KV_EMULATOR_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,

    /// Random extra latency (0..=N ms) added to every data-plane call.
    #[arg(long, env = "KV_EMULATOR_JITTER_MS", default_value_t = 0)]
    jitter_ms: u64,

    /// Always return high-S signatures (exercises the client's low-S normalisation).
    #[arg(long, env = "KV_EMULATOR_FORCE_HIGH_S")]
    force_high_s: bool,

    /// Serve the unauthenticated test-control API: POST /_emulator/faults with a JSON fault command (e.g.
    /// {"fault":"throttle_next","target":"Sign","n":2,"retry_after_s":1}), GET /_emulator/counters,
    /// POST /_emulator/counters/reset. Commands: latency, clear_latency, throttle_next, throttle_above_rate,
    /// fail_next, drop_next, stall_next, force_high_s, deny_key, allow_key, tokens_expire_after,
    /// expire_issued_tokens, set_key_enabled, reset (see crates/kv-emulator/README.md).
    #[arg(long, env = "KV_EMULATOR_CONTROL_API")]
    control_api: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "kv_emulator=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = Config {
        listen: args.listen,
        tls: !args.http,
        identity_listen: args.identity_listen,
        flavour: match args.flavour {
            FlavourArg::Vault => Flavour::Vault,
            FlavourArg::ManagedHsm => Flavour::ManagedHsm,
        },
        persist_dir: args.persist_dir,
        ca_pem_path: args.ca_file,
        tenant_id: args.tenant_id,
        client_id: args.client_id,
        client_secret: args.client_secret,
        federated_token: args.federated_token,
        managed_identity: ManagedIdentity {
            client_id: args.mi_client_id,
            ..ManagedIdentity::default()
        },
        identity_header: args.identity_header,
        token_lifetime: Duration::from_secs(args.token_lifetime),
        control_api: args.control_api,
        ..Config::default()
    };
    let emu = Emulator::start(config).await.context("starting the emulator")?;
    if args.latency_ms > 0 || args.jitter_ms > 0 {
        emu.faults().set_latency(
            Target::DataPlane,
            Duration::from_millis(args.latency_ms),
            Duration::from_millis(args.jitter_ms),
        );
    }
    emu.faults().force_high_s(args.force_high_s);

    println!("vault_url={}", emu.url());
    println!("authority_host={}", emu.authority_host());
    println!("token_endpoint={}", emu.token_url());
    println!("tenant_id={}", emu.tenant_id());
    println!("client_id={}", emu.client_id());
    println!("imds_endpoint={}", emu.imds_endpoint());
    println!("imds_authority={}", emu.imds_authority());
    println!("identity_endpoint={}", emu.identity_endpoint());
    println!("identity_header={}", emu.identity_header());
    match emu.ca_pem_path() {
        Some(p) => println!("ca_file={}", p.display()),
        None => println!("ca_file="),
    }
    if args.control_api {
        println!("control_api={}/_emulator", emu.imds_authority());
    }
    println!("challenge={}", emu.challenge());
    use std::io::Write;
    std::io::stdout().flush().context("flushing stdout")?;

    wait_for_signal().await?;
    emu.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
