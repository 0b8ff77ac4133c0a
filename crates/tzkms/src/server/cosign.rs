//! The cosigner route of threshold keys: `POST /cosign/<group>` answers this machine's partial signature
//! (`{"signature", "share_id"}`) after its own policy and watermark, to a coordinator that presents a
//! verified client certificate; `GET /cosign/<group>` describes the share.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::{answer, parse_pkh, sign, ApiError, AppState, Peer};
use crate::audit::AuditRecord;
use crate::signer::{Outcome, SignError, SignRoute};

/// Why a cosigning request without a verified client certificate is refused.
const NEEDS_MTLS: &str = "/cosign needs mTLS: serve it on an HTTPS listener ([server.tls]) with client_ca \
     set, and call it with the coordinator's client certificate ([threshold.client] on the coordinator)";

pub(super) async fn post_cosign(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    Path(pkh): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut record = AuditRecord::new("cosign", None, None);
    record.pkh = Some(pkh.clone());
    if peer
        .as_ref()
        .and_then(|Extension(p)| p.certificate.as_ref())
        .is_none()
    {
        record.rule = Some("threshold.mtls".into());
        return answer(
            record,
            Outcome::RefusedAuth,
            Err(ApiError::new(Outcome::RefusedAuth, NEEDS_MTLS)),
        );
    }
    let result = sign(
        &state,
        SignRoute::Cosign,
        peer,
        &pkh,
        query.as_deref(),
        &headers,
        body,
        &mut record,
    )
    .await;
    match result {
        Ok(signed) => {
            let share = signed_share(&state, &pkh);
            let response =
                Json(json!({ "signature": signed.signature.to_string(), "share_id": share })).into_response();
            answer(record, signed.outcome(), Ok(response))
        }
        Err((e, rule)) => {
            record.rule = rule.or(record.rule.take());
            answer(record, e.outcome, Err(e))
        }
    }
}

fn signed_share(state: &AppState, pkh: &str) -> Option<u8> {
    let pkh = pkh.parse().ok()?;
    state
        .signer
        .rules()
        .keyring
        .get(&pkh)?
        .backend
        .share(&pkh)
        .map(|s| s.id)
}

pub(super) async fn get_cosign(State(state): State<AppState>, Path(pkh): Path<String>) -> Response {
    let mut record = AuditRecord::new("cosign_info", None, None);
    record.pkh = Some(pkh.clone());
    let result = (|| {
        let pkh = parse_pkh(&pkh)?;
        let share = state
            .signer
            .rules()
            .keyring
            .get(&pkh)
            .and_then(|k| k.backend.share(&pkh))
            .ok_or(SignError::NotAShare(pkh))?;
        Ok::<_, ApiError>(
            Json(json!({
                "share_id": share.id,
                "share_public_key": share.public_key.to_string(),
                "threshold": share.threshold,
                "shares": share.shares,
            }))
            .into_response(),
        )
    })();
    answer(record, Outcome::Served, result)
}
