//! Emulator configuration: what to listen on, which Azure resource to imitate, and the identities it knows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which Azure resource the data plane imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavour {
    /// Key Vault (Premium): `*.vault.azure.net`, token audience `https://vault.azure.net`.
    #[default]
    Vault,
    /// Managed HSM: `*.managedhsm.azure.net`, token audience `https://managedhsm.azure.net`, HSM keys only.
    ManagedHsm,
}

impl Flavour {
    /// The token audience (`resource`) the data plane demands and names in its challenge.
    pub fn resource(self) -> &'static str {
        match self {
            Flavour::Vault => "https://vault.azure.net",
            Flavour::ManagedHsm => "https://managedhsm.azure.net",
        }
    }

    /// The OAuth scope a client asks Entra ID for.
    pub fn scope(self) -> String {
        format!("{}/.default", self.resource())
    }
}

/// The managed identity (system-assigned by default) that IMDS and the App Service endpoint hand tokens for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedIdentity {
    /// Client (application) id of the identity; IMDS `client_id`, App Service `client_id`.
    pub client_id: String,
    /// Object (principal) id; IMDS `object_id`, App Service `principal_id`/`object_id`.
    pub object_id: String,
    /// ARM resource id; IMDS `msi_res_id`, App Service `mi_res_id`.
    pub resource_id: String,
}

impl Default for ManagedIdentity {
    fn default() -> Self {
        ManagedIdentity {
            client_id: "6b0c2a3e-4d5f-4a61-8b7c-000000000003".to_owned(),
            object_id: "7c1d3b4f-5e60-4b72-9c8d-000000000004".to_owned(),
            resource_id:
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/tzkms/providers/\
                          Microsoft.ManagedIdentity/userAssignedIdentities/tzkms-emulator"
                    .to_owned(),
        }
    }
}

/// Everything [`crate::Emulator::start`] needs. `Config::default()` is a loopback, plain-HTTP, in-memory vault.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the main listener (vault data plane, Entra ID endpoints, identity endpoints). Port 0 picks one.
    pub listen: SocketAddr,
    /// Serve the main listener over HTTPS with a freshly generated (or persisted) self-signed CA.
    pub tls: bool,
    /// Address of the plain-HTTP listener that stands in for IMDS and the App Service identity endpoint (both are
    /// plain HTTP in Azure). Used only when `tls` is on; with `tls` off the main listener already serves them.
    pub identity_listen: SocketAddr,
    /// Key Vault or Managed HSM behaviour.
    pub flavour: Flavour,
    /// Keep keys (and the CA key and token signing secret) in this directory across restarts; `None` = in memory.
    pub persist_dir: Option<PathBuf>,
    /// Where to write the CA certificate (PEM). Default: `<persist_dir>/ca.pem`, else a private temporary directory.
    pub ca_pem_path: Option<PathBuf>,
    /// Entra tenant id that the token endpoints serve and the challenge names.
    pub tenant_id: String,
    /// Service principal (application) id accepted by the client-secret and client-assertion grants.
    pub client_id: String,
    /// Secret accepted by the client-secret grant.
    pub client_secret: String,
    /// If set, the client-assertion grant accepts exactly this assertion (e.g. the federated token file's
    /// content); if `None`, any well-formed JWT is accepted.
    pub federated_token: Option<String>,
    /// Managed identity served by IMDS and the App Service endpoint.
    pub managed_identity: ManagedIdentity,
    /// Secret expected in `X-IDENTITY-HEADER` by the App Service endpoint; `None` picks a random one.
    pub identity_header: Option<String>,
    /// Lifetime of issued access tokens.
    pub token_lifetime: Duration,
    /// Name used in error messages (`Vault: {name}`), purely cosmetic.
    pub vault_name: String,
    /// Serve the unauthenticated test-control API under `/_emulator/` (faults and counters over HTTP, for
    /// out-of-process tests of the binary). Not part of Azure; off by default.
    pub control_api: bool,
}

impl Default for Config {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Config {
            listen: loopback,
            tls: false,
            identity_listen: loopback,
            flavour: Flavour::Vault,
            persist_dir: None,
            ca_pem_path: None,
            tenant_id: "8e2e9a41-6c3b-4d8a-9f4e-000000000001".to_owned(),
            client_id: "5b1f6e2c-2d7a-4e55-8c1b-000000000002".to_owned(),
            client_secret: "kv-emulator-client-secret".to_owned(),
            federated_token: None,
            managed_identity: ManagedIdentity::default(),
            identity_header: None,
            token_lifetime: Duration::from_secs(3599),
            vault_name: "tzkms-emulator".to_owned(),
            control_api: false,
        }
    }
}

impl Config {
    /// The default vault served over HTTPS (its CA from [`crate::Emulator::ca_pem`]), as tzkms and the Azure
    /// SDKs need a vault to be; the identity endpoints stay plain HTTP as in Azure. What tests, benches and
    /// the load tool start unless they need a plain-HTTP vault.
    pub fn tls() -> Self {
        Config {
            tls: true,
            ..Config::default()
        }
    }
}
