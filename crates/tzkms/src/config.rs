//! The TOML configuration file. Every struct denies unknown fields so a typo is an error, not a silently
//! ignored setting. Secrets never live here: only paths to files that hold them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use tezos::{Address, Ballot, ChainId, PublicKey, PublicKeyHash, SmartRollupAddress};

use crate::request::{ClientPattern, RequestKind};

pub mod threshold;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:6732";
pub const DEFAULT_DATA_DIR: &str = "./tzkms-data";
/// The environment variable holding the password of encrypted file keys.
pub const PASSWORD_ENV: &str = "TZKMS_KEY_PASSWORD";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where tzkms keeps its own keys and state. Default `./tzkms-data`.
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub watermark: WatermarkConfig,
    /// Rate limits and the backend concurrency cap.
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Readiness (`/readyz` on the metrics listener): probe intervals and margins.
    #[serde(default)]
    pub health: HealthConfig,
    /// Azure Key Vault / Managed HSM keys. Absent: no Azure backend.
    pub azure: Option<AzureConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Threshold BLS keys this machine coordinates (see [`threshold`]).
    pub threshold: Option<threshold::ThresholdConfig>,
}

/// Prometheus metrics, on a listener of their own (never the signing port).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address for `GET /metrics`, e.g. `127.0.0.1:9732`. Absent: no metrics listener.
    pub listen: Option<SocketAddr>,
}

/// When readiness turns red. The checks themselves are in `health`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// A remote backend that has not answered for this long gets one cheap read (a probe), so readiness
    /// knows before a signature needs it. Each probe is a billable Key Vault operation (milliseconds).
    #[serde(default = "default_probe_interval")]
    pub probe_interval_ms: u64,
    /// Readiness fails when a remote backend has not answered for this long (milliseconds).
    #[serde(default = "default_max_silence")]
    pub max_silence_ms: u64,
    /// Readiness fails when a backend's access token expires within this many seconds (tokens are
    /// refreshed 5 minutes ahead, so this only fails when refreshing keeps failing).
    #[serde(default = "default_token_margin")]
    pub token_margin_s: u64,
    /// How long a watermark store may take to answer a readiness probe write (milliseconds).
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            probe_interval_ms: default_probe_interval(),
            max_silence_ms: default_max_silence(),
            token_margin_s: default_token_margin(),
            probe_timeout_ms: default_probe_timeout(),
        }
    }
}

fn default_probe_interval() -> u64 {
    60_000
}
fn default_max_silence() -> u64 {
    180_000
}
fn default_token_margin() -> u64 {
    120
}
fn default_probe_timeout() -> u64 {
    3_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// `https://<vault>.vault.azure.net` or `https://<hsm>.managedhsm.azure.net`.
    pub vault_url: String,
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Key names to serve, optionally pinned as `name/<version>`. Empty: every EC P-256/P-256K key.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Re-list the vault's keys this often (seconds).
    #[serde(default = "default_refresh")]
    pub refresh_interval_s: u64,
    /// Total time one signature may take at Key Vault, retries included (milliseconds).
    #[serde(default = "default_sign_budget")]
    pub sign_budget_ms: u64,
    /// Time one request that is not a signature may take (the vault's challenge at startup), in ms.
    #[serde(default = "default_azure_request_timeout")]
    pub request_timeout_ms: u64,
    /// An extra root CA (PEM) to trust for Azure endpoints, e.g. the emulator's.
    pub ca_file: Option<PathBuf>,
    /// USD per 10,000 operations, for the `tzkms_azure_estimated_cost_usd_total` metric. Default: 0.15
    /// (Premium, HSM-protected EC keys) for a Key Vault, 0 for a Managed HSM (billed by the hour).
    pub price_per_10k_operations: Option<f64>,
    #[serde(default)]
    pub credential: CredentialConfig,
}

impl AzureConfig {
    /// The vault at `vault_url` with every other setting at its default, as an `[azure]` section with
    /// only `vault_url` would give.
    pub fn new(vault_url: impl Into<String>) -> Self {
        Self {
            vault_url: vault_url.into(),
            api_version: default_api_version(),
            keys: Vec::new(),
            refresh_interval_s: default_refresh(),
            sign_budget_ms: default_sign_budget(),
            request_timeout_ms: default_azure_request_timeout(),
            ca_file: None,
            price_per_10k_operations: None,
            credential: CredentialConfig::default(),
        }
    }
}

pub(crate) fn default_api_version() -> String {
    "2025-07-01".into()
}
fn default_refresh() -> u64 {
    300
}
fn default_sign_budget() -> u64 {
    1500
}
fn default_azure_request_timeout() -> u64 {
    10_000
}

/// How tzkms obtains Entra ID tokens for the vault.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// The first that is configured: client secret, workload identity, App Service identity, VM managed
    /// identity (IMDS), Azure CLI.
    #[default]
    Auto,
    ManagedIdentity,
    WorkloadIdentity,
    ClientSecret,
    AzureCli,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    #[serde(default)]
    pub kind: CredentialKind,
    /// Entra tenant (else `AZURE_TENANT_ID`).
    pub tenant_id: Option<String>,
    /// Application (client) id of a service principal, workload identity or user-assigned managed identity
    /// (else `AZURE_CLIENT_ID`).
    pub client_id: Option<String>,
    /// File holding the client secret (else `AZURE_CLIENT_SECRET`).
    pub client_secret_file: Option<PathBuf>,
    /// Federated token file (else `AZURE_FEDERATED_TOKEN_FILE`).
    pub federated_token_file: Option<PathBuf>,
    /// Entra authority (else `AZURE_AUTHORITY_HOST`, else `https://login.microsoftonline.com`).
    pub authority_host: Option<String>,
    /// Managed identity selection by object id or ARM resource id.
    pub object_id: Option<String>,
    pub resource_id: Option<String>,
    /// IMDS base URL (default `http://169.254.169.254`).
    pub imds_endpoint: Option<String>,
}

/// Authentication of signing requests with octez-client's authentication keys (Octez's scheme).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// When set, `POST /keys/<pkh>` needs `authentication`, a signature by an authorized key.
    #[serde(default)]
    pub required: bool,
    /// Authorized public keys (`edpk…`, `sppk…`, `p2pk…`, `BLpk…`).
    #[serde(default, deserialize_with = "parsed_list")]
    pub authorized_keys: Vec<PublicKey>,
    /// An octez-signer `authorized_keys` file (a JSON list of `{"name", "value": "<public key>"}`).
    pub authorized_keys_file: Option<PathBuf>,
    /// Binds an authorized key (by its hash) to the keys it may ask signatures of. Authorized keys
    /// not listed here may ask for any key.
    #[serde(default, deserialize_with = "pkh_map")]
    pub may_sign: BTreeMap<PublicKeyHash, KeyList>,
}

/// A list of key addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct KeyList(#[serde(deserialize_with = "parsed_list")] pub Vec<PublicKeyHash>);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// Keys whose consensus payloads are signed WITHOUT double-signing protection. Never list a baking
    /// key that signs on a live chain: this is for test setups that replay levels.
    #[serde(default, deserialize_with = "parsed_list")]
    pub unprotected_keys: Vec<tezos::PublicKeyHash>,
    /// A watermark shared by several tzkms instances, in Azure Table Storage. Each instance keeps its
    /// local file store too; both must agree to sign.
    pub table: Option<TableConfig>,
    /// Most distinct chains the store keeps marks on: a consensus request on a chain it has no mark for
    /// is refused once it has marks on this many. 0: no bound (a caller allowed to sign consensus
    /// payloads could then grow the store with invented chain ids).
    #[serde(default = "default_max_chains")]
    pub max_chains: usize,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        Self {
            unprotected_keys: Vec::new(),
            table: None,
            max_chains: default_max_chains(),
        }
    }
}

/// Distinct chains the watermark store accepts marks on unless `[watermark] max_chains` says otherwise.
pub const DEFAULT_MAX_CHAINS: usize = 8;

fn default_max_chains() -> usize {
    DEFAULT_MAX_CHAINS
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `https://<account>.table.core.windows.net`, or a path-style URL such as Azurite's
    /// `http://127.0.0.1:10002/devstoreaccount1`.
    pub endpoint: String,
    #[serde(default = "default_table")]
    pub table: String,
    /// Storage account name (default: from the endpoint).
    pub account: Option<String>,
    /// File holding the account key (Shared Key); else `TZKMS_TABLE_ACCOUNT_KEY`; else Entra ID tokens.
    pub account_key_file: Option<PathBuf>,
    /// Entra ID credential for the table (default: `[azure.credential]`, else `auto`).
    pub credential: Option<CredentialConfig>,
    /// Time one watermark decision may take at the table, retries included (milliseconds).
    #[serde(default = "default_table_budget")]
    pub budget_ms: u64,
    /// An extra root CA (PEM) for the endpoint.
    pub ca_file: Option<PathBuf>,
}

fn default_table() -> String {
    "tzkmswatermarks".into()
}
fn default_table_budget() -> u64 {
    1000
}

impl TableConfig {
    /// The account name: configured, else the first path segment of a path-style endpoint, else the first
    /// label of the host.
    pub fn account_name(&self) -> String {
        if let Some(a) = &self.account {
            return a.clone();
        }
        let rest = self
            .endpoint
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or(&self.endpoint);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        match path.split('/').find(|s| !s.is_empty()) {
            Some(segment) => segment.to_owned(),
            None => host.split('.').next().unwrap_or("").to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to serve HTTP on.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Largest request body accepted (bytes). Consensus payloads are under 300 bytes; the largest
    /// manager operation batches a baker signs are well under 64 KiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// A request not answered within this time gets 408 (milliseconds).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// Serve `GET /known_keys` (like `octez-signer --allow-list-known-keys`).
    #[serde(default)]
    pub allow_list_known_keys: bool,
    /// Serve `GET /bls_prove_possession/<pkh>` (like `octez-signer --allow-to-prove-possession`).
    #[serde(default)]
    pub allow_prove_possession: bool,
    /// HTTPS listeners, besides the plain HTTP ones in `listen`.
    pub tls: Option<TlsConfig>,
    /// Connections served at once; more are answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A client must send a request's headers within this time (slowloris), milliseconds.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// A connection with nothing in flight and no bytes for this long is closed, milliseconds.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// A TLS handshake must complete within this time, milliseconds.
    #[serde(default = "default_tls_handshake_timeout")]
    pub tls_handshake_timeout_ms: u64,
    /// Largest request head (request line and headers) accepted; larger gets 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
}

fn default_max_connections() -> usize {
    1024
}
fn default_header_read_timeout() -> u64 {
    5_000
}
fn default_idle_timeout() -> u64 {
    60_000
}
fn default_tls_handshake_timeout() -> u64 {
    5_000
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            request_timeout_ms: default_request_timeout(),
            allow_list_known_keys: false,
            allow_prove_possession: false,
            tls: None,
            max_connections: default_max_connections(),
            header_read_timeout_ms: default_header_read_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            tls_handshake_timeout_ms: default_tls_handshake_timeout(),
            max_header_bytes: default_max_header_bytes(),
        }
    }
}

/// HTTPS: a PEM certificate chain and key (reloaded on SIGHUP), optionally client certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Addresses to serve HTTPS on.
    pub listen: Vec<SocketAddr>,
    /// PEM file: the server certificate, then its intermediates.
    pub certificate: PathBuf,
    /// PEM file: the certificate's private key (PKCS#8, PKCS#1 or SEC1). Must be mode 0600.
    pub private_key: PathBuf,
    /// PEM file of CA certificates: when set, every HTTPS client must present a certificate they issued.
    pub client_ca: Option<PathBuf>,
}

fn default_listen() -> Vec<SocketAddr> {
    vec![DEFAULT_LISTEN.parse().expect("valid default address")]
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_request_timeout() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// An octez-client base directory whose `secret_keys` file is served too.
    pub octez_base_dir: Option<PathBuf>,
    /// A file holding the password of encrypted keys (else `TZKMS_KEY_PASSWORD`).
    pub password_file: Option<PathBuf>,
    /// Generate one P-256 key on first start when no key is configured anywhere.
    #[serde(default = "yes")]
    pub generate_if_empty: bool,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            octez_base_dir: None,
            password_file: None,
            generate_if_empty: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Magic bytes any key may sign, like `octez-signer -M`. 0x04 is never signed whatever this says.
    #[serde(default = "default_magic_bytes", deserialize_with = "magic_bytes")]
    pub allowed_magic_bytes: BTreeSet<u8>,
    /// The policy of keys without a section of their own: consensus payloads only.
    #[serde(default)]
    pub default: KeyPolicyConfig,
    /// Per-key policies, by public key hash. A key's section replaces the default entirely.
    #[serde(default, deserialize_with = "pkh_map")]
    pub keys: BTreeMap<PublicKeyHash, KeyPolicyConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            allowed_magic_bytes: default_magic_bytes(),
            default: KeyPolicyConfig::default(),
            keys: BTreeMap::new(),
        }
    }
}

/// One key's policy as written. See `policy::KeyPolicy` for what each setting means.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicyConfig {
    /// Request kinds and generic operation kinds the key may sign.
    #[serde(default = "consensus_only", deserialize_with = "parsed_list")]
    pub allow: Vec<RequestKind>,
    /// When set, every operation that sends the key's funds somewhere must send them to one of these
    /// addresses (see `policy::KeyPolicy::transaction_destinations`).
    #[serde(default, deserialize_with = "parsed_list_opt")]
    pub transaction_destinations: Option<Vec<Address>>,
    /// When set, smart-rollup operations that name a rollup must name one of these (`sr1…`).
    #[serde(default, deserialize_with = "parsed_list_opt")]
    pub smart_rollups: Option<Vec<SmartRollupAddress>>,
    /// When set, ballots may only carry these votes.
    #[serde(default, deserialize_with = "parsed_list_opt")]
    pub ballots: Option<Vec<Ballot>>,
    /// When set, payloads that name a chain (consensus, legacy) must name one of these.
    #[serde(default, deserialize_with = "parsed_list_opt")]
    pub chains: Option<Vec<ChainId>>,
    /// When set, only these TLS clients (mTLS) may use the key.
    #[serde(default, deserialize_with = "parsed_list_opt")]
    pub tls_clients: Option<Vec<ClientPattern>>,
    /// Put the payload's hex in the audit line.
    #[serde(default)]
    pub log_payloads: bool,
}

impl Default for KeyPolicyConfig {
    fn default() -> Self {
        Self {
            allow: consensus_only(),
            transaction_destinations: None,
            smart_rollups: None,
            ballots: None,
            chains: None,
            tls_clients: None,
            log_payloads: false,
        }
    }
}

fn consensus_only() -> Vec<RequestKind> {
    RequestKind::CONSENSUS.to_vec()
}

/// Generic operations, Michelson data and the three Tenderbake consensus kinds. Legacy (Emmy) 0x01/0x02
/// payloads have no round and are only signed when listed explicitly.
pub(crate) fn default_magic_bytes() -> BTreeSet<u8> {
    [0x03, 0x05, 0x11, 0x12, 0x13].into()
}

fn magic_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<u8>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Byte {
        Int(u8),
        Text(String),
    }
    let list = Vec::<Byte>::deserialize(d)?;
    list.into_iter()
        .map(|b| match b {
            Byte::Int(n) => Ok(n),
            Byte::Text(t) => parse_magic_byte(&t).map_err(serde::de::Error::custom),
        })
        .collect()
}

fn parsed_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
        })
        .collect()
}

fn parsed_list_opt<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    parsed_list(d).map(Some)
}

/// A table keyed by public key hash (`[policy.keys.tz3…]`).
fn pkh_map<'de, D, V>(d: D) -> Result<BTreeMap<PublicKeyHash, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    BTreeMap::<String, V>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| {
            k.parse()
                .map(|pkh| (pkh, v))
                .map_err(|e| serde::de::Error::custom(format!("{k:?} is not a key address: {e}")))
        })
        .collect()
}

/// Parses `0x11`, `11` (hex) as a magic byte.
pub(crate) fn parse_magic_byte(text: &str) -> Result<u8, String> {
    let digits = text.trim().trim_start_matches("0x").trim_start_matches("0X");
    u8::from_str_radix(digits, 16).map_err(|_| format!("{text:?} is not a magic byte like 0x11"))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        // A relative data_dir means "beside this file", whatever directory tzkms is started from: an
        // operator's command and the service must find the same store.
        if let Some(dir) = config.data_dir.as_mut().filter(|d| d.is_relative()) {
            let base = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            *dir = base.join(&*dir);
        }
        Ok(config)
    }

    /// Parses a configuration. Errors say where (line, column, the line itself) and, for a misspelt key
    /// or value, which valid name is nearest.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Settings that parse but cannot work together.
    fn validate(&self) -> Result<(), String> {
        let h = &self.health;
        if h.probe_interval_ms < 100 {
            return Err(format!(
                "health.probe_interval_ms = {}: at least 100 (each probe is a billable Key Vault read)",
                h.probe_interval_ms
            ));
        }
        if h.max_silence_ms < h.probe_interval_ms {
            return Err(format!(
                "health.max_silence_ms = {} is below health.probe_interval_ms = {}: an idle signer would \
                 never be ready",
                h.max_silence_ms, h.probe_interval_ms
            ));
        }
        let max_chains = self.watermark.max_chains;
        let pinned: BTreeSet<ChainId> = std::iter::once(&self.policy.default)
            .chain(self.policy.keys.values())
            .filter_map(|p| p.chains.as_ref())
            .flatten()
            .copied()
            .collect();
        if max_chains != 0 && pinned.len() > max_chains {
            return Err(format!(
                "watermark.max_chains = {max_chains}, but the policy lets keys sign on {} chains: raise \
                 watermark.max_chains to at least {}",
                pinned.len(),
                pinned.len()
            ));
        }
        if let Some(threshold) = &self.threshold {
            threshold.validate()?;
        }
        if let Some(price) = self.azure.as_ref().and_then(|a| a.price_per_10k_operations) {
            if !(price.is_finite() && price >= 0.0) {
                return Err(format!(
                    "azure.price_per_10k_operations = {price}: a price is a number of USD, 0 or more"
                ));
            }
        }
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }
}

/// `line L, column C: <message>[; did you mean `x`?]` and the offending line.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end_matches('\n').to_owned();
    let hint = nearest_hint(&message);
    let Some(span) = e.span() else {
        return format!("{message}{hint}");
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let source = text.lines().nth(line - 1).unwrap_or("").trim_end();
    // The value is left out: a misplaced secret (`client_secret = "…"`) must not reach the log.
    let source = match source.split_once('=') {
        Some((key, _)) => format!("{} = …", key.trim_end()),
        None => source.to_owned(),
    };
    format!("line {line}, column {column}: {message}{hint}\n    {line} | {source}")
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (and "unknown variant"), the valid name
/// closest to `x` by edit distance, if it is plausibly a typo of it.
fn nearest_hint(message: &str) -> String {
    let Some(rest) = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return String::new();
    };
    let Some((given, expected)) = rest.split_once('`') else {
        return String::new();
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = candidates.iter().map(|c| (edit_distance(given, c), *c)).min();
    match best {
        Some((d, name)) if d <= given.len().max(name.len()) / 2 => format!("; did you mean `{name}`?"),
        _ => String::new(),
    }
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_give_line_column_source_and_the_nearest_name() {
        let err = Config::parse("data_dir = \"/x\"\n\n[server]\nmax_body_byte = 10\n").unwrap_err();
        assert!(
            err.starts_with("line 4, column 1: unknown field `max_body_byte`"),
            "{err}"
        );
        assert!(err.contains("did you mean `max_body_bytes`?"), "{err}");
        assert!(err.contains("4 | max_body_byte = …"), "{err}");
        // A secret written where it does not belong is not echoed back.
        let err =
            Config::parse("[azure]\nvault_url = \"https://v\"\nclient_secret = \"hunter2\"\n").unwrap_err();
        assert!(err.contains("3 | client_secret = …"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = Config::parse(
            "[azure]\nvault_url = \"https://v\"\n[azure.credential]\nkind = \"managed_identiy\"\n",
        )
        .unwrap_err();
        assert!(err.contains("did you mean `managed_identity`?"), "{err}");
        // Nothing close: no guess.
        let err = Config::parse("[server]\nzzzzzzzzzzzz = 1\n").unwrap_err();
        assert!(!err.contains("did you mean"), "{err}");
        assert!(err.contains("expected one of"), "{err}");
        assert_eq!(edit_distance("lisen", "listen"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn settings_that_cannot_work_together_are_refused() {
        let err = Config::parse("[health]\nprobe_interval_ms = 0\n").unwrap_err();
        assert!(err.contains("at least 100"), "{err}");
        let err = Config::parse("[health]\nprobe_interval_ms = 60000\nmax_silence_ms = 1000\n").unwrap_err();
        assert!(err.contains("never be ready"), "{err}");
        let err = Config::parse(
            "[watermark]\nmax_chains = 1\n[policy.default]\nchains = [\"NetXdQprcVkpaWU\", \"NetXnHfVqm9iesp\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("watermark.max_chains to at least 2"), "{err}");
        Config::parse("[watermark]\nmax_chains = 0\n[policy.default]\nchains = [\"NetXdQprcVkpaWU\"]\n")
            .unwrap();
        let err = Config::parse("[azure]\nvault_url = \"https://v\"\nprice_per_10k_operations = -1.0\n")
            .unwrap_err();
        assert!(err.contains("0 or more"), "{err}");
    }

    #[test]
    fn empty_file_gives_safe_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.listen, default_listen());
        assert_eq!(c.policy.allowed_magic_bytes, default_magic_bytes());
        assert!(c.keys.generate_if_empty);
        assert_eq!(c.policy.default.allow, RequestKind::CONSENSUS.to_vec());
        assert!(c.policy.keys.is_empty());
        assert!(!c.auth.required);
        assert!(c.server.tls.is_none());
        assert!(!c.server.allow_list_known_keys && !c.server.allow_prove_possession);
        assert_eq!(c.watermark.max_chains, 8);
    }

    #[test]
    fn per_key_sections_are_keyed_by_address_and_checked() {
        let c = Config::parse(
            "[policy.keys.tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx]\nallow = [\"transaction\"]\nballots = [\"yay\"]\n",
        )
        .unwrap();
        assert_eq!(c.policy.keys.len(), 1);
        let err = Config::parse("[policy.keys.tz1nope]\nallow = []\n").unwrap_err();
        assert!(err.contains("not a key address"), "{err}");
        let err = Config::parse("[policy.default]\nallow = [\"transfer\"]\n").unwrap_err();
        assert!(err.contains("unknown request kind"), "{err}");
        let err = Config::parse("[policy.default]\nballots = [\"maybe\"]\n").unwrap_err();
        assert!(err.contains("unknown ballot"), "{err}");
        let err = Config::parse(
            "[server.tls]\nlisten = []\ncertificate = \"c\"\nprivate_key = \"k\"\nclient = \"x\"\n",
        )
        .unwrap_err();
        assert!(err.contains("client"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = Config::parse("[server]\nlisen = [\"127.0.0.1:1\"]\n").unwrap_err();
        assert!(err.contains("lisen"), "{err}");
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn the_annotated_example_parses() {
        let path = PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../examples/tzkms.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.policy.allowed_magic_bytes, [0x11, 0x12, 0x13].into());
        assert!(!c.keys.generate_if_empty);
        assert!(!c.auth.required);
        assert_eq!(c.policy.default.allow, RequestKind::CONSENSUS.to_vec());
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9732".parse().unwrap()));
        assert_eq!(
            c.health.probe_interval_ms,
            HealthConfig::default().probe_interval_ms
        );
        assert_eq!(c.limits.backend_concurrency, 256);
    }

    #[test]
    fn magic_bytes_parse_as_hex_strings_or_numbers() {
        let c = Config::parse("[policy]\nallowed_magic_bytes = [\"0x11\", \"12\", 19]\n").unwrap();
        assert_eq!(c.policy.allowed_magic_bytes, [0x11, 0x12, 0x13].into());
        assert!(Config::parse("[policy]\nallowed_magic_bytes = [\"0xzz\"]\n").is_err());
    }
}
