//! The Key Vault / Managed HSM keys data plane: authentication (401 challenge), api-version, RBAC denial, and the
//! create/import/get/list/update/sign/verify/wrapkey/unwrapkey/backup/restore/delete handlers with Azure's JSON
//! shapes.

pub(crate) mod ec;
pub(crate) mod material;
pub(crate) mod store;

use crate::clock;
use crate::config::Flavour;
use crate::encoding::{b64url, from_b64url};
use crate::error::VaultError;
use crate::routes::VaultRoute;
use crate::server::RequestCtx;
use crate::state::Shared;
use crate::token::{Claims, TokenRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ec::{Curve, PrivateKey, SPolicy};
use hmac::{Hmac, Mac};
use material::{KeyMaterial, WrapAlg, WrapError, OCT_SIZES, RSA_SIZES};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::collections::BTreeMap;
use store::{Attributes, DeletedEntry, KeyEntry, KeyFile, KeyVersion, StoreState, RECOVERABLE_DAYS};

/// Every data-plane version the keys API documents, stable and preview (the emulator accepts them all, as
/// Key Vault does: older clients such as signatory and the node.js signers still send `7.0`).
pub const API_VERSIONS: &[&str] = &[
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
    "2026-04-01",
    "7.6-preview.2",
    "2025-06-01-preview",
    "2026-01-01-preview",
    "2026-03-01-preview",
    "2026-05-01-preview",
    "2026-07-01-preview",
];

/// Largest page `maxresults` allows.
const MAX_PAGE: usize = 25;

/// Key name rule from the REST spec: `^[0-9a-zA-Z-]+$`, at most 127 characters.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 127 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The `WWW-Authenticate` challenge Key Vault / Managed HSM sends.
pub(crate) fn challenge(shared: &Shared) -> String {
    format!(
        "Bearer authorization=\"https://login.windows.net/{}\", resource=\"{}\"",
        shared.config.tenant_id,
        shared.config.flavour.resource()
    )
}

/// Check the bearer token; a 401 carries the challenge.
pub(crate) fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Claims, VaultError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty());
    let result = match token {
        None => Err(TokenRejection::Missing),
        Some(t) => shared.tokens.validate(t, shared.config.flavour.resource()),
    };
    result.map_err(|rejection| {
        let mut e = VaultError::new(StatusCode::UNAUTHORIZED, "Unauthorized", rejection.to_string());
        e.challenge = Some(challenge(shared));
        e
    })
}

/// Serve one authenticated data-plane request.
pub(crate) fn dispatch(shared: &Shared, ctx: &RequestCtx, caller: &Claims, route: VaultRoute) -> Response {
    match dispatch_inner(shared, ctx, caller, route) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn dispatch_inner(
    shared: &Shared,
    ctx: &RequestCtx,
    caller: &Claims,
    route: VaultRoute,
) -> Result<Response, VaultError> {
    check_api_version(ctx)?;
    if let Some(name) = route.key_name() {
        if !valid_name(name) {
            return Err(VaultError::bad_parameter(format!(
                "The request URI contains an invalid name: {name}"
            )));
        }
        let denied = shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_denied(name, route.operation());
        if denied {
            return Err(forbidden_by_rbac(shared, caller, &route, name));
        }
    }
    let d = DataPlane { shared, ctx };
    let value = match route {
        VaultRoute::CreateKey { name } => d.create(&name)?,
        VaultRoute::ImportKey { name } => d.import(&name)?,
        VaultRoute::GetKey { name, version } => d.get(&name, version.as_deref())?,
        VaultRoute::ListKeys => d.list_keys()?,
        VaultRoute::ListVersions { name } => d.list_versions(&name)?,
        VaultRoute::UpdateKey { name, version } => d.update(&name, version.as_deref())?,
        VaultRoute::Sign { name, version } => d.sign(&name, version.as_deref())?,
        VaultRoute::Verify { name, version } => d.verify(&name, version.as_deref())?,
        VaultRoute::WrapKey { name, version } => d.wrap(&name, version.as_deref(), Wrap::Wrap)?,
        VaultRoute::UnwrapKey { name, version } => d.wrap(&name, version.as_deref(), Wrap::Unwrap)?,
        VaultRoute::Backup { name } => d.backup(&name)?,
        VaultRoute::Restore => d.restore()?,
        VaultRoute::DeleteKey { name } => d.delete(&name)?,
        VaultRoute::ListDeleted => d.list_deleted()?,
        VaultRoute::GetDeleted { name } => d.get_deleted(&name)?,
        VaultRoute::PurgeDeleted { name } => {
            d.purge(&name)?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        VaultRoute::RecoverDeleted { name } => d.recover(&name)?,
        VaultRoute::Random => d.random()?,
    };
    Ok(Json(value).into_response())
}

fn check_api_version(ctx: &RequestCtx) -> Result<(), VaultError> {
    match ctx.query("api-version") {
        None | Some("") => Err(VaultError::bad_parameter(
            "The 'api-version' query parameter is missing. Supply a supported api-version, e.g. 2025-07-01.",
        )),
        Some(v) if API_VERSIONS.contains(&v) => Ok(()),
        Some(v) => Err(VaultError::bad_parameter(format!(
            "The specified version ({v}) is not recognized. Consider using the latest supported version (2025-07-01)."
        ))),
    }
}

fn data_action(flavour: Flavour, route: &VaultRoute) -> String {
    let prefix = match flavour {
        Flavour::Vault => "Microsoft.KeyVault/vaults/keys",
        Flavour::ManagedHsm => "Microsoft.KeyVault/managedHsm/keys",
    };
    let action = match route {
        VaultRoute::CreateKey { .. } => "create/action",
        VaultRoute::ImportKey { .. } => "import/action",
        VaultRoute::GetKey { .. } | VaultRoute::ListVersions { .. } | VaultRoute::ListKeys => "read",
        VaultRoute::UpdateKey { .. } => "write",
        VaultRoute::Sign { .. } => "sign/action",
        VaultRoute::Verify { .. } => "verify/action",
        VaultRoute::WrapKey { .. } => "wrap/action",
        VaultRoute::UnwrapKey { .. } => "unwrap/action",
        VaultRoute::Backup { .. } => "backup/action",
        VaultRoute::Restore => "restore/action",
        VaultRoute::DeleteKey { .. } => "delete",
        VaultRoute::ListDeleted | VaultRoute::GetDeleted { .. } => "deletedKeys/read",
        VaultRoute::PurgeDeleted { .. } => "deletedKeys/delete",
        VaultRoute::RecoverDeleted { .. } => "deletedKeys/recover/action",
        VaultRoute::Random => "rng/action",
    };
    format!("{prefix}/{action}")
}

fn forbidden_by_rbac(shared: &Shared, caller: &Claims, route: &VaultRoute, name: &str) -> VaultError {
    let vault = &shared.config.vault_name;
    VaultError::forbidden(
        format!(
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or \
             role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};\
             iss=https://sts.windows.net/{}/\r\nAction: '{}'\r\nResource: '/subscriptions/00000000-0000-0000-0000-\
             000000000000/resourcegroups/tzkms/providers/microsoft.keyvault/vaults/{vault}/keys/{name}'\r\n\
             Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: {vault};\
             location=emulator\r\n",
            caller.appid,
            caller.oid,
            caller.tid,
            data_action(shared.config.flavour, route)
        ),
        "ForbiddenByRbac",
    )
}

// ---- request bodies ------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct AttributeParams {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct CreateParams {
    kty: Option<String>,
    crv: Option<String>,
    key_size: Option<u32>,
    public_exponent: Option<u32>,
    key_ops: Option<Vec<String>>,
    attributes: Option<AttributeParams>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct UpdateParams {
    key_ops: Option<Vec<String>>,
    attributes: Option<AttributeParams>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct SignParams {
    alg: Option<String>,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct VerifyParams {
    alg: Option<String>,
    digest: Option<String>,
    value: Option<String>,
}

/// `KeyOperationsParameters` of wrapkey / unwrapkey (`iv`, `aad`, `tag` are for the symmetric encrypt family).
#[derive(Debug, Deserialize)]
struct WrapParams {
    alg: Option<String>,
    value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrap {
    Wrap,
    Unwrap,
}

#[derive(Debug, Deserialize)]
struct ValueParam {
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RandomParams {
    count: Option<i64>,
}

fn parse_body<T: serde::de::DeserializeOwned>(ctx: &RequestCtx) -> Result<T, VaultError> {
    if ctx.body.is_empty() {
        return Err(VaultError::bad_parameter("The request body is missing."));
    }
    serde_json::from_slice(&ctx.body).map_err(|e| {
        VaultError::bad_parameter(format!(
            "The request body is not valid JSON for this operation: {e}"
        ))
    })
}

const KEY_OPS: &[&str] = &[
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
    "import",
    "export",
];

fn check_key_ops(ops: &[String]) -> Result<(), VaultError> {
    match ops.iter().find(|o| !KEY_OPS.contains(&o.as_str())) {
        Some(bad) => Err(VaultError::bad_parameter(format!("Invalid key operation: {bad}"))),
        None => Ok(()),
    }
}

fn default_key_ops() -> Vec<String> {
    vec!["sign".to_owned(), "verify".to_owned()]
}

/// Without `key_ops`, a key may do every operation its type supports (as the service does).
fn default_key_ops_for(kind: KeyKind) -> Vec<String> {
    let ops: &[&str] = match kind {
        KeyKind::Ec => return default_key_ops(),
        KeyKind::Rsa => &["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
        KeyKind::Oct => &["encrypt", "decrypt", "wrapKey", "unwrapKey"],
    };
    ops.iter().map(|o| (*o).to_owned()).collect()
}

/// The key types the emulator creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Ec,
    Rsa,
    Oct,
}

/// The key type and whether it is an HSM type; Err for unsupported types.
fn parse_kty(kty: &str, flavour: Flavour) -> Result<(KeyKind, bool), VaultError> {
    let (kind, hsm) = match kty {
        "EC-HSM" => (KeyKind::Ec, true),
        "EC" => (KeyKind::Ec, false),
        "RSA-HSM" => (KeyKind::Rsa, true),
        "RSA" => (KeyKind::Rsa, false),
        "oct-HSM" => (KeyKind::Oct, true),
        "oct" => (KeyKind::Oct, false),
        other => {
            return Err(VaultError::bad_parameter(format!(
                "Invalid key type (kty): {other}"
            )))
        }
    };
    if flavour == Flavour::ManagedHsm && !hsm {
        return Err(VaultError::bad_parameter(format!(
            "Managed HSM supports only HSM-protected keys; use kty {kty}-HSM."
        )));
    }
    if flavour == Flavour::Vault && kind == KeyKind::Oct {
        return Err(VaultError::bad_parameter(format!(
            "Key type {kty} is supported only by Managed HSM; a key vault holds EC and RSA keys."
        )));
    }
    Ok((kind, hsm))
}

/// New key material of `kind`: RSA 2048 (default), 3072 or 4096 bits with exponent 65537; AES 128, 192 or
/// 256 (default) bits; EC on `crv`.
fn generate_material(kind: KeyKind, p: &CreateParams) -> Result<KeyMaterial, VaultError> {
    match kind {
        KeyKind::Ec => Ok(KeyMaterial::Ec(PrivateKey::generate(parse_curve(
            p.crv.as_deref(),
        )?))),
        KeyKind::Rsa => {
            let bits = p.key_size.unwrap_or(2048);
            if !RSA_SIZES.contains(&bits) {
                return Err(VaultError::bad_parameter(format!(
                    "Invalid key size {bits} for an RSA key: use 2048, 3072 or 4096."
                )));
            }
            if p.public_exponent.is_some_and(|e| e != 65537) {
                return Err(VaultError::bad_parameter(
                    "Invalid public exponent: this emulator creates RSA keys with 65537 only.",
                ));
            }
            KeyMaterial::generate_rsa(bits).map_err(|e| internal(e.to_string()))
        }
        KeyKind::Oct => {
            let bits = p.key_size.unwrap_or(256);
            if !OCT_SIZES.contains(&bits) {
                return Err(VaultError::bad_parameter(format!(
                    "Invalid key size {bits} for an oct-HSM key: use 128, 192 or 256."
                )));
            }
            Ok(KeyMaterial::generate_oct(bits))
        }
    }
}

fn internal(message: String) -> VaultError {
    VaultError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", message)
}

fn parse_curve(crv: Option<&str>) -> Result<Curve, VaultError> {
    match crv {
        None => Ok(Curve::P256),
        Some(name) => Curve::from_jwk_name(name).ok_or_else(|| {
            VaultError::bad_parameter(format!(
                "The curve {name} is not supported by this emulator (P-256, P-256K/SECP256K1 only)."
            ))
        }),
    }
}

fn decode_b64(field: &str, value: Option<&str>) -> Result<Vec<u8>, VaultError> {
    let text = value.ok_or_else(|| VaultError::bad_parameter(format!("Property '{field}' is required.")))?;
    from_b64url(text).ok_or_else(|| {
        VaultError::bad_parameter(format!("Property '{field}' is not valid base64url-encoded data."))
    })
}

// ---- responses -----------------------------------------------------------------------------------------------

fn attributes_json(a: &Attributes) -> Value {
    let mut v = json!({
        "enabled": a.enabled,
        "created": a.created,
        "updated": a.updated,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": RECOVERABLE_DAYS,
        "exportable": false,
    });
    if let Some(nbf) = a.nbf {
        v["nbf"] = json!(nbf);
    }
    if let Some(exp) = a.exp {
        v["exp"] = json!(exp);
    }
    v
}

fn key_bundle(base: &str, name: &str, v: &KeyVersion) -> Value {
    let kty = if v.hsm {
        format!("{}-HSM", v.key.kty())
    } else {
        v.key.kty().to_owned()
    };
    let mut key = json!({
        "kid": format!("{base}/keys/{name}/{}", v.version),
        "kty": kty,
        "key_ops": v.key_ops,
    });
    match &v.key {
        KeyMaterial::Ec(ec) => {
            let (x, y) = ec.public_xy();
            key["crv"] = json!(ec.curve().jwk_name());
            key["x"] = json!(b64url(&x));
            key["y"] = json!(b64url(&y));
        }
        KeyMaterial::Rsa(_) => {
            if let Some((n, e)) = v.key.rsa_public() {
                key["n"] = json!(b64url(&n));
                key["e"] = json!(b64url(&e));
            }
        }
        // A symmetric key's material never leaves the HSM.
        KeyMaterial::Oct(_) => {}
    }
    if let (KeyMaterial::Oct(_), Some(bits)) = (&v.key, v.key.size_bits()) {
        key["key_size"] = json!(bits);
    }
    let mut bundle = json!({ "key": key, "attributes": attributes_json(&v.attributes) });
    if !v.tags.is_empty() {
        bundle["tags"] = json!(v.tags);
    }
    bundle
}

fn key_item(kid: String, v: &KeyVersion) -> Value {
    let mut item = json!({ "kid": kid, "attributes": attributes_json(&v.attributes) });
    if !v.tags.is_empty() {
        item["tags"] = json!(v.tags);
    }
    item
}

fn deleted_fields(target: &mut Value, base: &str, name: &str, d: &DeletedEntry) {
    target["recoveryId"] = json!(format!("{base}/deletedkeys/{name}"));
    target["deletedDate"] = json!(d.deleted_date);
    target["scheduledPurgeDate"] = json!(d.scheduled_purge_date);
}

fn not_found(name: &str, version: Option<&str>) -> VaultError {
    VaultError::key_not_found(name, version.filter(|v| !v.is_empty()))
}

fn deleted_not_found(name: &str) -> VaultError {
    VaultError::new(
        StatusCode::NOT_FOUND,
        "KeyNotFound",
        format!("Deleted Key not found: {name}"),
    )
}

fn in_deleted_state(name: &str) -> VaultError {
    VaultError::conflict(format!(
        "Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this \
         state, the key can only be recovered or purged."
    ))
}

/// A page of `items` starting at `$skiptoken`, with an absolute `nextLink` when more remain.
fn page(ctx: &RequestCtx, path: &str, items: Vec<Value>) -> Result<Value, VaultError> {
    let max = match ctx.query("maxresults") {
        None | Some("") => MAX_PAGE,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(VaultError::bad_parameter(format!(
                    "Invalid value for maxresults: {m}. It must be an integer between 1 and {MAX_PAGE}."
                )))
            }
        },
    };
    let start = match ctx.query("$skiptoken") {
        None | Some("") => 0,
        Some(t) => from_b64url(t)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse::<usize>().ok()))
            .ok_or_else(|| VaultError::bad_parameter("The $skiptoken is not valid."))?,
    };
    let end = start.saturating_add(max).min(items.len());
    let value: Vec<Value> = items.get(start..end).map(<[Value]>::to_vec).unwrap_or_default();
    let next = if end < items.len() {
        let api = ctx.query("api-version").unwrap_or("2025-07-01");
        let token = b64url(format!("offset:{end}").as_bytes());
        json!(format!(
            "{}{path}?api-version={api}&$skiptoken={token}&maxresults={max}",
            ctx.base
        ))
    } else {
        Value::Null
    };
    Ok(json!({ "value": value, "nextLink": next }))
}

struct DataPlane<'a> {
    shared: &'a Shared,
    ctx: &'a RequestCtx,
}

impl DataPlane<'_> {
    fn base(&self) -> &str {
        &self.ctx.base
    }

    fn flavour(&self) -> Flavour {
        self.shared.config.flavour
    }

    fn new_version(&self, name: &str, version: KeyVersion) -> Result<Value, VaultError> {
        let base = self.base().to_owned();
        self.shared.store.mutate(|s| {
            let lower = name.to_ascii_lowercase();
            if s.deleted.contains_key(&lower) {
                return Err(in_deleted_state(name));
            }
            let entry = s.keys.entry(lower).or_insert_with(|| KeyEntry {
                name: name.to_owned(),
                versions: Vec::new(),
            });
            entry.versions.push(version);
            let display = entry.name.clone();
            let latest = entry.latest().ok_or_else(|| not_found(name, None))?;
            Ok(key_bundle(&base, &display, latest))
        })
    }

    fn create(&self, name: &str) -> Result<Value, VaultError> {
        let p: CreateParams = parse_body(self.ctx)?;
        let kty = p
            .kty
            .clone()
            .ok_or_else(|| VaultError::bad_parameter("Property 'kty' is required."))?;
        let (kind, hsm) = parse_kty(&kty, self.flavour())?;
        let material = generate_material(kind, &p)?;
        let key_ops = p.key_ops.clone().unwrap_or_else(|| default_key_ops_for(kind));
        check_key_ops(&key_ops)?;
        let attrs = p.attributes.unwrap_or_default();
        let now = clock::now();
        self.new_version(
            name,
            KeyVersion {
                version: clock::key_version(),
                key: material,
                hsm,
                key_ops,
                attributes: Attributes {
                    enabled: attrs.enabled.unwrap_or(true),
                    nbf: attrs.nbf,
                    exp: attrs.exp,
                    created: now,
                    updated: now,
                },
                tags: p.tags.unwrap_or_default(),
            },
        )
    }

    fn import(&self, name: &str) -> Result<Value, VaultError> {
        let body: Map<String, Value> = parse_body(self.ctx)?;
        // The service binds these properties case-insensitively (the spec says `Hsm`, Signatory sends `hsm`).
        let field = |wanted: &str| {
            body.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(wanted))
                .map(|(_, v)| v.clone())
        };
        let key = field("key")
            .and_then(|v| v.as_object().cloned())
            .ok_or_else(|| VaultError::bad_parameter("Property 'key' is required."))?;
        let hsm_flag = match field("hsm") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(VaultError::bad_parameter("Property 'Hsm' must be a boolean.")),
        };
        let text = |k: &str| key.get(k).and_then(Value::as_str);
        let kty = text("kty").ok_or_else(|| VaultError::bad_parameter("Property 'key.kty' is required."))?;
        let (kind, kty_hsm) = parse_kty(kty, Flavour::Vault)?;
        if kind != KeyKind::Ec {
            return Err(VaultError::bad_parameter(format!(
                "Importing {kty} keys is not supported by this emulator (EC keys only)."
            )));
        }
        let hsm = hsm_flag || kty_hsm || self.flavour() == Flavour::ManagedHsm;
        let curve = parse_curve(text("crv"))?;
        let d = decode_b64("key.d", text("d"))?;
        let private =
            PrivateKey::from_scalar(curve, &d).map_err(|e| VaultError::bad_parameter(e.to_string()))?;
        let (x, y) = private.public_xy();
        for (field_name, expected) in [("x", x), ("y", y)] {
            if let Some(given) = text(field_name) {
                let given = decode_b64(field_name, Some(given))?;
                if given.as_slice() != expected.as_slice() {
                    return Err(VaultError::bad_parameter(
                        "The public key (x, y) does not match the private key (d).",
                    ));
                }
            }
        }
        let key_ops = match key.get("key_ops") {
            None | Some(Value::Null) => default_key_ops(),
            Some(v) => serde_json::from_value::<Vec<String>>(v.clone()).map_err(|_| {
                VaultError::bad_parameter("Property 'key.key_ops' must be an array of strings.")
            })?,
        };
        check_key_ops(&key_ops)?;
        let attrs: AttributeParams = match field("attributes") {
            None | Some(Value::Null) => AttributeParams::default(),
            Some(v) => serde_json::from_value(v)
                .map_err(|e| VaultError::bad_parameter(format!("Property 'attributes' is not valid: {e}")))?,
        };
        let tags: BTreeMap<String, String> = match field("tags") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => serde_json::from_value(v)
                .map_err(|_| VaultError::bad_parameter("Property 'tags' must map strings to strings."))?,
        };
        let now = clock::now();
        self.new_version(
            name,
            KeyVersion {
                version: clock::key_version(),
                key: KeyMaterial::Ec(private),
                hsm,
                key_ops,
                attributes: Attributes {
                    enabled: attrs.enabled.unwrap_or(true),
                    nbf: attrs.nbf,
                    exp: attrs.exp,
                    created: now,
                    updated: now,
                },
                tags,
            },
        )
    }

    fn get(&self, name: &str, version: Option<&str>) -> Result<Value, VaultError> {
        self.shared.store.read(|s| {
            let entry = s.key(name).ok_or_else(|| not_found(name, version))?;
            let v = entry.version(version).ok_or_else(|| not_found(name, version))?;
            Ok(key_bundle(self.base(), &entry.name, v))
        })
    }

    fn list_keys(&self) -> Result<Value, VaultError> {
        let items = self.shared.store.read(|s| {
            s.keys
                .values()
                .filter_map(|e| {
                    e.latest()
                        .map(|v| key_item(format!("{}/keys/{}", self.base(), e.name), v))
                })
                .collect::<Vec<_>>()
        });
        page(self.ctx, "/keys", items)
    }

    fn list_versions(&self, name: &str) -> Result<Value, VaultError> {
        let items = self.shared.store.read(|s| {
            let entry = s.key(name).ok_or_else(|| not_found(name, None))?;
            Ok::<_, VaultError>(
                entry
                    .versions
                    .iter()
                    .map(|v| key_item(format!("{}/keys/{}/{}", self.base(), entry.name, v.version), v))
                    .collect::<Vec<_>>(),
            )
        })?;
        page(self.ctx, &format!("/keys/{name}/versions"), items)
    }

    fn update(&self, name: &str, version: Option<&str>) -> Result<Value, VaultError> {
        let p: UpdateParams = parse_body(self.ctx)?;
        if let Some(ops) = &p.key_ops {
            check_key_ops(ops)?;
        }
        let base = self.base().to_owned();
        self.shared.store.mutate(|s| {
            let entry = s
                .keys
                .get_mut(&name.to_ascii_lowercase())
                .ok_or_else(|| not_found(name, version))?;
            let display = entry.name.clone();
            let v = entry
                .version_mut(version)
                .ok_or_else(|| not_found(name, version))?;
            if let Some(a) = p.attributes {
                if let Some(enabled) = a.enabled {
                    v.attributes.enabled = enabled;
                }
                if a.nbf.is_some() {
                    v.attributes.nbf = a.nbf;
                }
                if a.exp.is_some() {
                    v.attributes.exp = a.exp;
                }
            }
            if let Some(ops) = p.key_ops {
                v.key_ops = ops;
            }
            if let Some(tags) = p.tags {
                v.tags = tags;
            }
            v.attributes.updated = clock::now();
            Ok(key_bundle(&base, &display, v))
        })
    }

    /// Find a version usable for `operation` (enabled, within nbf/exp, permitted op).
    fn usable(
        &self,
        s: &StoreState,
        name: &str,
        version: Option<&str>,
        operation: &str,
    ) -> Result<(String, KeyVersion), VaultError> {
        let entry = s.key(name).ok_or_else(|| not_found(name, version))?;
        let v = entry.version(version).ok_or_else(|| not_found(name, version))?;
        let now = clock::now();
        if !v.attributes.enabled {
            return Err(VaultError::forbidden(
                format!("Operation {operation} is not allowed on a disabled key."),
                "KeyDisabled",
            ));
        }
        if v.attributes.nbf.is_some_and(|nbf| now < nbf) {
            return Err(VaultError::forbidden(
                format!("Operation {operation} is not allowed on a key that is not yet valid (nbf)."),
                "KeyNotYetValid",
            ));
        }
        if v.attributes.exp.is_some_and(|exp| now >= exp) {
            return Err(VaultError::forbidden(
                format!("Operation {operation} is not allowed on an expired key."),
                "KeyExpired",
            ));
        }
        if !v.key_ops.iter().any(|o| o == operation) {
            return Err(VaultError::forbidden(
                format!("Operation {operation} is not permitted on this key (key_ops)."),
                "KeyOperationForbidden",
            ));
        }
        Ok((entry.name.clone(), v.clone()))
    }

    /// Algorithm must name the key's curve; digest must be exactly 32 bytes.
    fn check_alg_and_digest(
        curve: Curve,
        alg: Option<&str>,
        digest_field: &str,
        digest: &[u8],
    ) -> Result<[u8; 32], VaultError> {
        let alg = alg.ok_or_else(|| VaultError::bad_parameter("Property 'alg' is required."))?;
        let known = [
            "ES256", "ES256K", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
        ];
        if !known.contains(&alg) {
            return Err(VaultError::bad_parameter(format!("Invalid algorithm: {alg}")));
        }
        if alg != curve.algorithm() {
            return Err(VaultError::bad_parameter(format!(
                "Key and signing algorithm are incompatible. The key uses curve {} which requires {}, not {alg}.",
                curve.jwk_name(),
                curve.algorithm()
            )));
        }
        <[u8; 32]>::try_from(digest).map_err(|_| {
            VaultError::bad_parameter(format!(
                "Invalid length of '{digest_field}': {} bytes. {alg} requires 32 bytes, encoded with base64url.",
                digest.len()
            ))
        })
    }

    fn sign(&self, name: &str, version: Option<&str>) -> Result<Value, VaultError> {
        let p: SignParams = parse_body(self.ctx)?;
        let (display, v) = self
            .shared
            .store
            .read(|s| self.usable(s, name, version, "sign"))?;
        let value = decode_b64("value", p.value.as_deref())?;
        let ec = ec_key(&v, p.alg.as_deref())?;
        let digest = Self::check_alg_and_digest(ec.curve(), p.alg.as_deref(), "value", &value)?;
        let high = self
            .shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .force_high_s;
        let policy = if high {
            SPolicy::ForceHigh
        } else {
            SPolicy::Natural
        };
        let signature = ec.sign_digest(&digest, policy).map_err(|e| {
            VaultError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                e.to_string(),
            )
        })?;
        Ok(json!({
            "kid": format!("{}/keys/{display}/{}", self.base(), v.version),
            "value": b64url(&signature),
        }))
    }

    fn verify(&self, name: &str, version: Option<&str>) -> Result<Value, VaultError> {
        let p: VerifyParams = parse_body(self.ctx)?;
        let (_, v) = self
            .shared
            .store
            .read(|s| self.usable(s, name, version, "verify"))?;
        let digest = decode_b64("digest", p.digest.as_deref())?;
        let signature = decode_b64("value", p.value.as_deref())?;
        let ec = ec_key(&v, p.alg.as_deref())?;
        let digest = Self::check_alg_and_digest(ec.curve(), p.alg.as_deref(), "digest", &digest)?;
        Ok(json!({ "value": ec.verify_digest(&digest, &signature) }))
    }

    /// `wrapkey` / `unwrapkey`: the version must be usable and permit `wrapKey` / `unwrapKey` (403 otherwise,
    /// as for sign), `alg` must be a wrap algorithm that fits the key type and size (400 `BadParameter`),
    /// `value` base64url. A ciphertext that does not open under this key is a 400 too.
    fn wrap(&self, name: &str, version: Option<&str>, op: Wrap) -> Result<Value, VaultError> {
        let p: WrapParams = parse_body(self.ctx)?;
        let operation = match op {
            Wrap::Wrap => "wrapKey",
            Wrap::Unwrap => "unwrapKey",
        };
        let (display, v) = self
            .shared
            .store
            .read(|s| self.usable(s, name, version, operation))?;
        let alg_name = p
            .alg
            .as_deref()
            .ok_or_else(|| VaultError::bad_parameter("Property 'alg' is required."))?;
        let alg = WrapAlg::parse(alg_name)
            .ok_or_else(|| VaultError::bad_parameter(format!("Invalid algorithm: {alg_name}")))?;
        let value = decode_b64("value", p.value.as_deref())?;
        let result = match op {
            Wrap::Wrap => v.key.wrap(alg, alg_name, &value),
            Wrap::Unwrap => v.key.unwrap(alg, alg_name, &value),
        };
        let out = result.map_err(|e| match e {
            WrapError::Internal => internal(e.to_string()),
            _ => VaultError::bad_parameter(e.to_string()),
        })?;
        Ok(json!({
            "kid": format!("{}/keys/{display}/{}", self.base(), v.version),
            "value": b64url(&out),
        }))
    }

    fn backup(&self, name: &str) -> Result<Value, VaultError> {
        let file = self.shared.store.read(|s| {
            s.key(name)
                .map(KeyFile::from_entry)
                .ok_or_else(|| not_found(name, None))
        })?;
        let blob = BackupBlob {
            flavour: flavour_tag(self.flavour()).to_owned(),
            key: file,
        };
        Ok(json!({ "value": b64url(&seal_backup(&blob)?) }))
    }

    fn restore(&self) -> Result<Value, VaultError> {
        let p: ValueParam = parse_body(self.ctx)?;
        let bytes = decode_b64("value", p.value.as_deref())?;
        let corrupt = || VaultError::bad_parameter("Backup blob contains invalid or corrupt version.");
        let blob = open_backup(&bytes).ok_or_else(corrupt)?;
        if blob.flavour != flavour_tag(self.flavour()) {
            return Err(VaultError::bad_parameter(
                "The backup blob was created by a different kind of resource (vault vs managed HSM) and cannot be \
                 restored here.",
            ));
        }
        let entry = blob.key.into_entry().map_err(|_| corrupt())?;
        let base = self.base().to_owned();
        self.shared.store.mutate(|s| {
            let lower = entry.name.to_ascii_lowercase();
            if s.deleted.contains_key(&lower) {
                return Err(in_deleted_state(&entry.name));
            }
            if s.keys.contains_key(&lower) {
                return Err(VaultError::conflict(format!(
                    "Key {} already exists. A key cannot be restored over an existing key.",
                    entry.name
                )));
            }
            let bundle = entry
                .latest()
                .map(|v| key_bundle(&base, &entry.name, v))
                .ok_or_else(corrupt)?;
            s.keys.insert(lower, entry);
            Ok(bundle)
        })
    }

    fn delete(&self, name: &str) -> Result<Value, VaultError> {
        let base = self.base().to_owned();
        self.shared.store.mutate(|s| {
            let lower = name.to_ascii_lowercase();
            let entry = s.keys.remove(&lower).ok_or_else(|| not_found(name, None))?;
            let now = clock::now();
            let deleted = DeletedEntry {
                entry,
                deleted_date: now,
                scheduled_purge_date: now + RECOVERABLE_DAYS * 86_400,
            };
            let mut bundle = deleted
                .entry
                .latest()
                .map(|v| key_bundle(&base, &deleted.entry.name, v))
                .unwrap_or_else(|| json!({}));
            deleted_fields(&mut bundle, &base, &deleted.entry.name, &deleted);
            s.deleted.insert(lower, deleted);
            Ok(bundle)
        })
    }

    fn list_deleted(&self) -> Result<Value, VaultError> {
        let items = self.shared.store.read(|s| {
            s.deleted
                .values()
                .filter_map(|d| {
                    d.entry.latest().map(|v| {
                        let mut item = key_item(format!("{}/keys/{}", self.base(), d.entry.name), v);
                        deleted_fields(&mut item, self.base(), &d.entry.name, d);
                        item
                    })
                })
                .collect::<Vec<_>>()
        });
        page(self.ctx, "/deletedkeys", items)
    }

    fn get_deleted(&self, name: &str) -> Result<Value, VaultError> {
        self.shared.store.read(|s| {
            let d = s
                .deleted
                .get(&name.to_ascii_lowercase())
                .ok_or_else(|| deleted_not_found(name))?;
            let v = d.entry.latest().ok_or_else(|| deleted_not_found(name))?;
            let mut bundle = key_bundle(self.base(), &d.entry.name, v);
            deleted_fields(&mut bundle, self.base(), &d.entry.name, d);
            Ok(bundle)
        })
    }

    fn purge(&self, name: &str) -> Result<(), VaultError> {
        self.shared.store.mutate(|s| {
            s.deleted
                .remove(&name.to_ascii_lowercase())
                .map(|_| ())
                .ok_or_else(|| deleted_not_found(name))
        })
    }

    fn recover(&self, name: &str) -> Result<Value, VaultError> {
        let base = self.base().to_owned();
        self.shared.store.mutate(|s| {
            let lower = name.to_ascii_lowercase();
            if !s.deleted.contains_key(&lower) {
                return Err(deleted_not_found(name));
            }
            if s.keys.contains_key(&lower) {
                return Err(VaultError::conflict(format!(
                    "Key {name} already exists and is not deleted."
                )));
            }
            let d = s.deleted.remove(&lower).ok_or_else(|| deleted_not_found(name))?;
            let bundle = d
                .entry
                .latest()
                .map(|v| key_bundle(&base, &d.entry.name, v))
                .unwrap_or_else(|| json!({}));
            s.keys.insert(lower, d.entry);
            Ok(bundle)
        })
    }

    fn random(&self) -> Result<Value, VaultError> {
        if self.flavour() != Flavour::ManagedHsm {
            return Err(VaultError::bad_parameter(
                "Getting random bytes is supported only by Managed HSM.",
            ));
        }
        let p: RandomParams = parse_body(self.ctx)?;
        let count = p
            .count
            .ok_or_else(|| VaultError::bad_parameter("Property 'count' is required."))?;
        let count = usize::try_from(count)
            .ok()
            .filter(|c| (1..=128).contains(c))
            .ok_or_else(|| VaultError::bad_parameter("Property 'count' must be between 1 and 128."))?;
        let mut bytes = vec![0u8; count];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
        Ok(json!({ "value": b64url(&bytes) }))
    }
}

/// The EC key behind a sign / verify; other key types are a 400 like an algorithm mismatch.
fn ec_key<'a>(v: &'a KeyVersion, alg: Option<&str>) -> Result<&'a PrivateKey, VaultError> {
    v.key.ec().ok_or_else(|| {
        VaultError::bad_parameter(format!(
            "Key and signing algorithm are incompatible: this emulator signs with EC keys only, not {} ({}).",
            v.key.kty(),
            alg.unwrap_or("no alg")
        ))
    })
}

// ---- backup blobs --------------------------------------------------------------------------------------------

#[derive(Debug, serde::Serialize, Deserialize)]
struct BackupBlob {
    flavour: String,
    key: KeyFile,
}

const BACKUP_MAGIC: &[u8] = b"KVEMU-BACKUP-1";
/// Stands in for the "same subscription and geography" key Azure protects backups with: any emulator restores
/// any emulator's backup of the same flavour; tampered blobs are refused.
const BACKUP_MAC_KEY: &[u8] = b"kv-emulator backup integrity key";

fn flavour_tag(f: Flavour) -> &'static str {
    match f {
        Flavour::Vault => "vault",
        Flavour::ManagedHsm => "managedhsm",
    }
}

fn backup_mac() -> Hmac<Sha256> {
    let mut block = [0u8; 64];
    block[..BACKUP_MAC_KEY.len()].copy_from_slice(BACKUP_MAC_KEY);
    <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into())
}

fn seal_backup(blob: &BackupBlob) -> Result<Vec<u8>, VaultError> {
    let json = serde_json::to_vec(blob).map_err(|e| {
        VaultError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            e.to_string(),
        )
    })?;
    let mut mac = backup_mac();
    mac.update(&json);
    let tag = mac.finalize().into_bytes();
    let mut out = Vec::with_capacity(BACKUP_MAGIC.len() + tag.len() + json.len());
    out.extend_from_slice(BACKUP_MAGIC);
    out.extend_from_slice(&tag);
    out.extend_from_slice(&json);
    Ok(out)
}

fn open_backup(bytes: &[u8]) -> Option<BackupBlob> {
    let rest = bytes.strip_prefix(BACKUP_MAGIC)?;
    if rest.len() < 32 {
        return None;
    }
    let (tag, json) = rest.split_at(32);
    let mut mac = backup_mac();
    mac.update(json);
    mac.verify_slice(tag).ok()?;
    serde_json::from_slice(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_follow_the_spec_pattern() {
        assert!(valid_name("baker-1"));
        assert!(!valid_name("baker_1"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(128)));
    }

    #[test]
    fn tampered_backups_are_refused() {
        let entry = KeyEntry {
            name: "k".to_owned(),
            versions: vec![KeyVersion {
                version: clock::key_version(),
                key: KeyMaterial::Ec(PrivateKey::generate(Curve::P256)),
                hsm: false,
                key_ops: default_key_ops(),
                attributes: Attributes {
                    enabled: true,
                    nbf: None,
                    exp: None,
                    created: 0,
                    updated: 0,
                },
                tags: BTreeMap::new(),
            }],
        };
        let blob = BackupBlob {
            flavour: "vault".to_owned(),
            key: KeyFile::from_entry(&entry),
        };
        let mut sealed = seal_backup(&blob).expect("seal");
        assert!(open_backup(&sealed).is_some());
        let last = sealed.len() - 2;
        sealed[last] ^= 1;
        assert!(open_backup(&sealed).is_none());
        assert!(open_backup(b"garbage").is_none());
    }
}
