//! Token issuers: Entra ID (v2.0 `scope` and v1 `resource`; client secret and client assertion grants), its
//! OpenID/instance discovery documents, IMDS, and the App Service / Container Apps identity endpoint.

use crate::error::{IdentityError, OAuthError};
use crate::routes::IdentityRoute;
use crate::server::RequestCtx;
use crate::state::Shared;
use crate::token::{is_well_formed_jwt, Minted, Subject};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Audiences Entra and the managed identity endpoints will issue tokens for.
const KNOWN_RESOURCES: &[&str] = &[
    "https://vault.azure.net",
    "https://managedhsm.azure.net",
    "https://storage.azure.com",
    "https://management.azure.com",
];

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub(crate) fn dispatch(shared: &Shared, ctx: &RequestCtx, route: IdentityRoute) -> Response {
    match route {
        IdentityRoute::Token { tenant, v2 } => {
            entra_token(shared, ctx, &tenant, v2).unwrap_or_else(|e| e.into_response())
        }
        IdentityRoute::OpenIdConfiguration { tenant, v2 } => {
            openid_configuration(shared, ctx, &tenant, v2).unwrap_or_else(|e| e.into_response())
        }
        IdentityRoute::InstanceDiscovery => instance_discovery(shared, ctx),
        IdentityRoute::Keys { .. } => Json(json!({ "keys": [] })).into_response(),
        IdentityRoute::Imds => imds(shared, ctx).unwrap_or_else(|e| e.into_response()),
        IdentityRoute::AppService => app_service(shared, ctx).unwrap_or_else(|e| e.into_response()),
    }
}

/// Normalise `https://vault.azure.net/` and `https://vault.azure.net` to the latter; None if unknown.
fn known_resource(resource: &str) -> Option<&'static str> {
    let trimmed = resource.trim_end_matches('/');
    KNOWN_RESOURCES.iter().copied().find(|r| *r == trimmed)
}

fn tenant_not_found(tenant: &str) -> OAuthError {
    OAuthError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        90002,
        format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into \
             the correct cloud."
        ),
    )
}

fn missing(param: &str) -> OAuthError {
    OAuthError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{param}'."),
    )
}

fn entra_token(shared: &Shared, ctx: &RequestCtx, tenant: &str, v2: bool) -> Result<Response, OAuthError> {
    let config = &shared.config;
    if !tenant.eq_ignore_ascii_case(&config.tenant_id) {
        return Err(tenant_not_found(tenant));
    }
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&ctx.body).map_err(|_| {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        )
    })?;
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let grant = get("grant_type").ok_or_else(|| missing("grant_type"))?;
    if grant != "client_credentials" {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        ));
    }
    let client_id = get("client_id").ok_or_else(|| missing("client_id"))?;
    if !client_id.eq_ignore_ascii_case(&config.client_id) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                config.tenant_id
            ),
        ));
    }
    match (get("client_secret"), get("client_assertion")) {
        (Some(secret), _) => {
            if secret != config.client_secret {
                return Err(OAuthError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client \
                         secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                ));
            }
        }
        (None, Some(assertion)) => {
            if get("client_assertion_type") != Some(JWT_BEARER) {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    50027,
                    format!("client_assertion_type must be '{JWT_BEARER}'."),
                ));
            }
            if !is_well_formed_jwt(assertion) {
                return Err(OAuthError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    50027,
                    "JWT token is invalid or malformed.",
                ));
            }
            if let Some(expected) = &config.federated_token {
                if assertion != expected.trim() {
                    return Err(OAuthError::new(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        700213,
                        "No matching federated identity record found for presented assertion.",
                    ));
                }
            }
        }
        (None, None) => {
            return Err(OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant \
                 type.",
            ))
        }
    }

    let resource = if v2 {
        let scope = get("scope").ok_or_else(|| missing("scope"))?;
        // MSAL may add OIDC scopes; the client-credentials resource is the one `/.default` scope.
        let resource_scope = scope
            .split(' ')
            .find(|s| !matches!(*s, "openid" | "profile" | "offline_access" | ""))
            .unwrap_or("");
        let Some(resource) = resource_scope.strip_suffix("/.default") else {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope \
                     value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            ));
        };
        resource.to_owned()
    } else {
        get("resource").ok_or_else(|| missing("resource"))?.to_owned()
    };
    let audience = known_resource(&resource).ok_or_else(|| {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            if v2 { "invalid_scope" } else { "invalid_resource" },
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {}.",
                config.tenant_id
            ),
        )
    })?;
    let minted = shared.tokens.mint(
        audience,
        &Subject {
            app_id: config.client_id.clone(),
            object_id: format!("{}-sp", config.client_id),
        },
    );
    let body = if v2 {
        json!({
            "token_type": "Bearer",
            "expires_in": minted.expires_in,
            "ext_expires_in": minted.expires_in,
            "access_token": minted.access_token,
        })
    } else {
        json!({
            "token_type": "Bearer",
            "expires_in": minted.expires_in.to_string(),
            "ext_expires_in": minted.expires_in.to_string(),
            "expires_on": minted.expires_on.to_string(),
            "not_before": minted.not_before.to_string(),
            "resource": audience,
            "access_token": minted.access_token,
        })
    };
    Ok(Json(body).into_response())
}

fn openid_configuration(
    shared: &Shared,
    ctx: &RequestCtx,
    tenant: &str,
    v2: bool,
) -> Result<Response, OAuthError> {
    if !tenant.eq_ignore_ascii_case(&shared.config.tenant_id) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            format!("Tenant '{tenant}' not found."),
        ));
    }
    let base = &ctx.base;
    let t = &shared.config.tenant_id;
    let (oauth, issuer) = if v2 {
        (format!("{base}/{t}/oauth2/v2.0"), format!("{base}/{t}/v2.0"))
    } else {
        (
            format!("{base}/{t}/oauth2"),
            format!("https://sts.windows.net/{t}/"),
        )
    };
    Ok(Json(json!({
        "token_endpoint": format!("{oauth}/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{t}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{oauth}/authorize"),
        "device_authorization_endpoint": format!("{oauth}/devicecode"),
        "end_session_endpoint": format!("{oauth}/logout"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    }))
    .into_response())
}

fn instance_discovery(shared: &Shared, ctx: &RequestCtx) -> Response {
    let host = ctx.base.split("://").nth(1).unwrap_or_default().to_owned();
    Json(json!({
        "tenant_discovery_endpoint": format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            ctx.base, shared.config.tenant_id
        ),
        "api-version": "1.1",
        "metadata": [{ "preferred_network": host, "preferred_cache": host, "aliases": [host] }],
    }))
    .into_response()
}

/// Which of the configured managed identity's ids a request named, if any; an unknown id → "Identity not found".
fn select_identity(shared: &Shared, ctx: &RequestCtx, params: &[&str]) -> Result<(), IdentityError> {
    let mi = &shared.config.managed_identity;
    let given: Vec<(&str, &str)> = params
        .iter()
        .filter_map(|p| ctx.query(p).filter(|v| !v.is_empty()).map(|v| (*p, v)))
        .collect();
    if given.len() > 1 {
        return Err(IdentityError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Only one of client_id, object_id or msi_res_id may be specified.",
        ));
    }
    let Some((param, value)) = given.first() else {
        return Ok(());
    };
    let matches = match *param {
        "client_id" => value.eq_ignore_ascii_case(&mi.client_id),
        "object_id" | "principal_id" => value.eq_ignore_ascii_case(&mi.object_id),
        _ => value.eq_ignore_ascii_case(&mi.resource_id),
    };
    if matches {
        Ok(())
    } else {
        Err(IdentityError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        ))
    }
}

fn managed_identity_token(
    shared: &Shared,
    ctx: &RequestCtx,
) -> Result<(Minted, &'static str), IdentityError> {
    let resource = ctx.query("resource").filter(|r| !r.is_empty()).ok_or_else(|| {
        IdentityError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required audience parameter not specified",
        )
    })?;
    let audience = known_resource(resource).ok_or_else(|| {
        IdentityError::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            format!("AADSTS500011: The resource principal named {resource} was not found in the tenant."),
        )
    })?;
    let mi = &shared.config.managed_identity;
    let minted = shared.tokens.mint(
        audience,
        &Subject {
            app_id: mi.client_id.clone(),
            object_id: mi.object_id.clone(),
        },
    );
    Ok((minted, audience))
}

fn imds(shared: &Shared, ctx: &RequestCtx) -> Result<Response, IdentityError> {
    if !ctx
        .header("metadata")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Err(IdentityError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        ));
    }
    if ctx.query("api-version").is_none_or(str::is_empty) {
        return Err(IdentityError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        ));
    }
    select_identity(shared, ctx, &["client_id", "object_id", "msi_res_id"])?;
    let (minted, audience) = managed_identity_token(shared, ctx)?;
    Ok(Json(json!({
        "access_token": minted.access_token,
        "client_id": shared.config.managed_identity.client_id,
        "expires_in": minted.expires_in.to_string(),
        "expires_on": minted.expires_on.to_string(),
        "ext_expires_in": minted.expires_in.to_string(),
        "not_before": minted.not_before.to_string(),
        "refresh_token": "",
        "resource": audience,
        "token_type": "Bearer",
    }))
    .into_response())
}

fn app_service(shared: &Shared, ctx: &RequestCtx) -> Result<Response, IdentityError> {
    if ctx.header("x-identity-header") != Some(shared.identity_header.as_str()) {
        return Err(IdentityError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.",
        ));
    }
    if ctx.query("api-version").is_none_or(str::is_empty) {
        return Err(IdentityError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        ));
    }
    select_identity(
        shared,
        ctx,
        &["client_id", "principal_id", "object_id", "mi_res_id"],
    )?;
    let (minted, audience) = managed_identity_token(shared, ctx)?;
    let body: Value = json!({
        "access_token": minted.access_token,
        "expires_on": minted.expires_on.to_string(),
        "resource": audience,
        "token_type": "Bearer",
        "client_id": shared.config.managed_identity.client_id,
    });
    Ok(Json(body).into_response())
}
