//! URL routing by hand: Key Vault paths allow empty segments (`/keys/{name}//sign`, `/keys/{name}/`), which a
//! pattern router does not match, so paths are split and matched here once.

use crate::faults::Operation;
use axum::http::Method;

/// A data-plane route. `version: None` means "latest" (segment omitted or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VaultRoute {
    CreateKey { name: String },
    ImportKey { name: String },
    GetKey { name: String, version: Option<String> },
    ListKeys,
    ListVersions { name: String },
    UpdateKey { name: String, version: Option<String> },
    Sign { name: String, version: Option<String> },
    Verify { name: String, version: Option<String> },
    WrapKey { name: String, version: Option<String> },
    UnwrapKey { name: String, version: Option<String> },
    Backup { name: String },
    Restore,
    DeleteKey { name: String },
    ListDeleted,
    GetDeleted { name: String },
    PurgeDeleted { name: String },
    RecoverDeleted { name: String },
    Random,
}

impl VaultRoute {
    pub(crate) fn operation(&self) -> Operation {
        match self {
            VaultRoute::CreateKey { .. } => Operation::CreateKey,
            VaultRoute::ImportKey { .. } => Operation::ImportKey,
            VaultRoute::GetKey { .. } => Operation::GetKey,
            VaultRoute::ListKeys => Operation::ListKeys,
            VaultRoute::ListVersions { .. } => Operation::ListKeyVersions,
            VaultRoute::UpdateKey { .. } => Operation::UpdateKey,
            VaultRoute::Sign { .. } => Operation::Sign,
            VaultRoute::Verify { .. } => Operation::Verify,
            VaultRoute::WrapKey { .. } => Operation::WrapKey,
            VaultRoute::UnwrapKey { .. } => Operation::UnwrapKey,
            VaultRoute::Backup { .. } => Operation::BackupKey,
            VaultRoute::Restore => Operation::RestoreKey,
            VaultRoute::DeleteKey { .. } => Operation::DeleteKey,
            VaultRoute::ListDeleted => Operation::ListDeletedKeys,
            VaultRoute::GetDeleted { .. } => Operation::GetDeletedKey,
            VaultRoute::PurgeDeleted { .. } => Operation::PurgeDeletedKey,
            VaultRoute::RecoverDeleted { .. } => Operation::RecoverDeletedKey,
            VaultRoute::Random => Operation::GetRandomBytes,
        }
    }

    /// The key a route acts on (for RBAC denial), if any.
    pub(crate) fn key_name(&self) -> Option<&str> {
        match self {
            VaultRoute::CreateKey { name }
            | VaultRoute::ImportKey { name }
            | VaultRoute::GetKey { name, .. }
            | VaultRoute::ListVersions { name }
            | VaultRoute::UpdateKey { name, .. }
            | VaultRoute::Sign { name, .. }
            | VaultRoute::Verify { name, .. }
            | VaultRoute::WrapKey { name, .. }
            | VaultRoute::UnwrapKey { name, .. }
            | VaultRoute::Backup { name }
            | VaultRoute::DeleteKey { name }
            | VaultRoute::GetDeleted { name }
            | VaultRoute::PurgeDeleted { name }
            | VaultRoute::RecoverDeleted { name } => Some(name),
            VaultRoute::ListKeys | VaultRoute::Restore | VaultRoute::ListDeleted | VaultRoute::Random => None,
        }
    }
}

/// Entra ID and managed identity routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdentityRoute {
    /// `POST /{tenant}/oauth2/v2.0/token` (`v2`) or `POST /{tenant}/oauth2/token`.
    Token { tenant: String, v2: bool },
    /// `GET /{tenant}/v2.0/.well-known/openid-configuration` (`v2`) or `GET /{tenant}/.well-known/...`.
    OpenIdConfiguration { tenant: String, v2: bool },
    /// `GET /common/discovery/instance`.
    InstanceDiscovery,
    /// `GET /{tenant}/discovery/v2.0/keys`.
    Keys { tenant: String },
    /// `GET /metadata/identity/oauth2/token`.
    Imds,
    /// `GET /msi/token` (what `IDENTITY_ENDPOINT` points at).
    AppService,
}

impl IdentityRoute {
    fn operation(&self) -> Operation {
        match self {
            IdentityRoute::Token { .. } => Operation::EntraToken,
            IdentityRoute::OpenIdConfiguration { .. }
            | IdentityRoute::InstanceDiscovery
            | IdentityRoute::Keys { .. } => Operation::EntraDiscovery,
            IdentityRoute::Imds => Operation::ImdsToken,
            IdentityRoute::AppService => Operation::AppServiceToken,
        }
    }
}

/// The emulator's own test-control API under `/_emulator/` (enabled by `Config::control_api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlRoute {
    /// `POST /_emulator/faults` with one fault command.
    Faults,
    /// `GET /_emulator/counters`.
    Counters,
    /// `POST /_emulator/counters/reset`.
    ResetCounters,
    /// A path under `/_emulator/` that is not one of the above, or the wrong method.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Vault(VaultRoute),
    Identity(IdentityRoute),
    Control(ControlRoute),
    NotFound,
    MethodNotAllowed,
}

impl Route {
    pub(crate) fn operation(&self) -> Operation {
        match self {
            Route::Vault(v) => v.operation(),
            Route::Identity(i) => i.operation(),
            Route::NotFound | Route::MethodNotAllowed | Route::Control(_) => Operation::Unknown,
        }
    }

    pub(crate) fn parse(method: &Method, path: &str) -> Route {
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        if segments.first() == Some(&"_emulator") {
            let control = match (method.clone(), &segments[1..]) {
                (Method::POST, ["faults"]) => ControlRoute::Faults,
                (Method::GET, ["counters"]) => ControlRoute::Counters,
                (Method::POST, ["counters", "reset"]) => ControlRoute::ResetCounters,
                _ => ControlRoute::Unknown,
            };
            return Route::Control(control);
        }
        if let Some(route) = parse_identity(method, &segments) {
            return route;
        }
        parse_vault(method, &segments)
    }
}

fn one(method: &Method, expected: Method, route: VaultRoute) -> Route {
    if *method == expected {
        Route::Vault(route)
    } else {
        Route::MethodNotAllowed
    }
}

fn version_of(segment: &str) -> Option<String> {
    if segment.is_empty() {
        None
    } else {
        Some(segment.to_owned())
    }
}

fn parse_vault(method: &Method, s: &[&str]) -> Route {
    let name = |n: &str| n.to_owned();
    match s {
        ["keys"] | ["keys", ""] => one(method, Method::GET, VaultRoute::ListKeys),
        ["keys", "restore"] if *method == Method::POST => Route::Vault(VaultRoute::Restore),
        ["keys", n] if !n.is_empty() => {
            let n = name(n);
            match *method {
                Method::PUT => Route::Vault(VaultRoute::ImportKey { name: n }),
                Method::GET => Route::Vault(VaultRoute::GetKey {
                    name: n,
                    version: None,
                }),
                Method::PATCH => Route::Vault(VaultRoute::UpdateKey {
                    name: n,
                    version: None,
                }),
                Method::DELETE => Route::Vault(VaultRoute::DeleteKey { name: n }),
                _ => Route::MethodNotAllowed,
            }
        }
        ["keys", n, "create"] if !n.is_empty() => {
            one(method, Method::POST, VaultRoute::CreateKey { name: name(n) })
        }
        ["keys", n, "versions"] if !n.is_empty() => {
            one(method, Method::GET, VaultRoute::ListVersions { name: name(n) })
        }
        ["keys", n, "backup"] if !n.is_empty() => {
            one(method, Method::POST, VaultRoute::Backup { name: name(n) })
        }
        ["keys", n, op @ ("sign" | "verify" | "wrapkey" | "unwrapkey")]
            if !n.is_empty() && *method == Method::POST =>
        {
            Route::Vault(crypto(op, name(n), None))
        }
        ["keys", n, v] if !n.is_empty() => {
            let (n, version) = (name(n), version_of(v));
            match *method {
                Method::GET => Route::Vault(VaultRoute::GetKey { name: n, version }),
                Method::PATCH => Route::Vault(VaultRoute::UpdateKey { name: n, version }),
                _ => Route::MethodNotAllowed,
            }
        }
        ["keys", n, v, op @ ("sign" | "verify" | "wrapkey" | "unwrapkey")] if !n.is_empty() => {
            one(method, Method::POST, crypto(op, name(n), version_of(v)))
        }
        ["deletedkeys"] | ["deletedkeys", ""] => one(method, Method::GET, VaultRoute::ListDeleted),
        ["deletedkeys", n] if !n.is_empty() => match *method {
            Method::GET => Route::Vault(VaultRoute::GetDeleted { name: name(n) }),
            Method::DELETE => Route::Vault(VaultRoute::PurgeDeleted { name: name(n) }),
            _ => Route::MethodNotAllowed,
        },
        ["deletedkeys", n, "recover"] if !n.is_empty() => {
            one(method, Method::POST, VaultRoute::RecoverDeleted { name: name(n) })
        }
        ["rng"] => one(method, Method::POST, VaultRoute::Random),
        _ => Route::NotFound,
    }
}

fn crypto(op: &str, name: String, version: Option<String>) -> VaultRoute {
    match op {
        "sign" => VaultRoute::Sign { name, version },
        "wrapkey" => VaultRoute::WrapKey { name, version },
        "unwrapkey" => VaultRoute::UnwrapKey { name, version },
        _ => VaultRoute::Verify { name, version },
    }
}

fn parse_identity(method: &Method, s: &[&str]) -> Option<Route> {
    let route = match s {
        ["metadata", "identity", "oauth2", "token"] => IdentityRoute::Imds,
        ["msi", "token"] => IdentityRoute::AppService,
        ["common", "discovery", "instance"] => IdentityRoute::InstanceDiscovery,
        [t, "oauth2", "v2.0", "token"] => IdentityRoute::Token {
            tenant: (*t).to_owned(),
            v2: true,
        },
        [t, "oauth2", "token"] if *t != "keys" => IdentityRoute::Token {
            tenant: (*t).to_owned(),
            v2: false,
        },
        [t, "v2.0", ".well-known", "openid-configuration"] => IdentityRoute::OpenIdConfiguration {
            tenant: (*t).to_owned(),
            v2: true,
        },
        [t, ".well-known", "openid-configuration"] => IdentityRoute::OpenIdConfiguration {
            tenant: (*t).to_owned(),
            v2: false,
        },
        [t, "discovery", "v2.0", "keys"] | [t, "discovery", "keys"] => IdentityRoute::Keys {
            tenant: (*t).to_owned(),
        },
        _ => return None,
    };
    let expected = match route {
        IdentityRoute::Token { .. } => Method::POST,
        _ => Method::GET,
    };
    Some(if *method == expected {
        Route::Identity(route)
    } else {
        Route::MethodNotAllowed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(method: Method, path: &str) -> Route {
        Route::parse(&method, path)
    }

    #[test]
    fn versions_may_be_empty_or_omitted() {
        let latest = Route::Vault(VaultRoute::Sign {
            name: "k".into(),
            version: None,
        });
        assert_eq!(v(Method::POST, "/keys/k/sign"), latest);
        assert_eq!(v(Method::POST, "/keys/k//sign"), latest);
        assert_eq!(
            v(Method::POST, "/keys/k/abc/sign"),
            Route::Vault(VaultRoute::Sign {
                name: "k".into(),
                version: Some("abc".into())
            })
        );
        assert_eq!(
            v(Method::GET, "/keys/k/"),
            Route::Vault(VaultRoute::GetKey {
                name: "k".into(),
                version: None
            })
        );
    }

    #[test]
    fn table_of_routes() {
        let cases: &[(Method, &str, Operation)] = &[
            (Method::POST, "/keys/k/create", Operation::CreateKey),
            (Method::PUT, "/keys/k", Operation::ImportKey),
            (Method::GET, "/keys", Operation::ListKeys),
            (Method::GET, "/keys/k/versions", Operation::ListKeyVersions),
            (Method::PATCH, "/keys/k/0123", Operation::UpdateKey),
            (Method::POST, "/keys/k/0123/verify", Operation::Verify),
            (Method::POST, "/keys/k/0123/wrapkey", Operation::WrapKey),
            (Method::POST, "/keys/k//unwrapkey", Operation::UnwrapKey),
            (Method::POST, "/keys/k/unwrapkey", Operation::UnwrapKey),
            (Method::GET, "/keys/k/0123/wrapkey", Operation::Unknown),
            (Method::POST, "/keys/k/backup", Operation::BackupKey),
            (Method::POST, "/keys/restore", Operation::RestoreKey),
            (Method::DELETE, "/keys/k", Operation::DeleteKey),
            (Method::GET, "/deletedkeys", Operation::ListDeletedKeys),
            (Method::GET, "/deletedkeys/k", Operation::GetDeletedKey),
            (Method::DELETE, "/deletedkeys/k", Operation::PurgeDeletedKey),
            (
                Method::POST,
                "/deletedkeys/k/recover",
                Operation::RecoverDeletedKey,
            ),
            (Method::POST, "/rng", Operation::GetRandomBytes),
            (Method::POST, "/t/oauth2/v2.0/token", Operation::EntraToken),
            (Method::POST, "/t/oauth2/token", Operation::EntraToken),
            (
                Method::GET,
                "/t/v2.0/.well-known/openid-configuration",
                Operation::EntraDiscovery,
            ),
            (
                Method::GET,
                "/metadata/identity/oauth2/token",
                Operation::ImdsToken,
            ),
            (Method::GET, "/msi/token", Operation::AppServiceToken),
            (Method::GET, "/nothing/here", Operation::Unknown),
            (Method::DELETE, "/keys/k/create", Operation::Unknown),
        ];
        for (method, path, op) in cases {
            assert_eq!(Route::parse(method, path).operation(), *op, "{method} {path}");
        }
    }
}
