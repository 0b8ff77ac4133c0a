//! The emulator's own control API (`/_emulator/...`, opt-in): the same fault and counter handles the library
//! gives in-process tests, over HTTP for tests that run the binary.

use crate::faults::{Faults, Operation, Target};
use crate::routes::ControlRoute;
use crate::state::Shared;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Which requests a command targets: `"All"`, `"DataPlane"`, `"Identity"` or an operation name (`"Sign"`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum TargetName {
    Group(Group),
    Op(Operation),
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum Group {
    All,
    DataPlane,
    Identity,
}

impl From<TargetName> for Target {
    fn from(t: TargetName) -> Target {
        match t {
            TargetName::Group(Group::All) => Target::All,
            TargetName::Group(Group::DataPlane) => Target::DataPlane,
            TargetName::Group(Group::Identity) => Target::Identity,
            TargetName::Op(op) => Target::Op(op),
        }
    }
}

/// One fault command, e.g. `{"fault":"throttle_next","target":"Sign","n":2,"retry_after_s":1}`.
#[derive(Debug, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    Latency {
        target: TargetName,
        fixed_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
    },
    ClearLatency,
    ThrottleNext {
        target: TargetName,
        n: u64,
        retry_after_s: Option<u64>,
    },
    ThrottleAboveRate {
        target: TargetName,
        max: usize,
        per_ms: u64,
        retry_after_s: Option<u64>,
    },
    FailNext {
        target: TargetName,
        n: u64,
        status: u16,
    },
    DropNext {
        target: TargetName,
        n: u64,
    },
    StallNext {
        target: TargetName,
        n: u64,
        duration_ms: u64,
    },
    ForceHighS {
        on: bool,
    },
    DenyKey {
        key: String,
        operation: Option<Operation>,
    },
    AllowKey {
        key: String,
    },
    TokensExpireAfter {
        seconds: Option<u64>,
    },
    ExpireIssuedTokens,
    SetKeyEnabled {
        key: String,
        enabled: bool,
    },
    Reset,
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": "BadParameter", "message": message}})),
    )
        .into_response()
}

pub(crate) async fn dispatch(shared: &Arc<Shared>, route: ControlRoute, body: Body) -> Response {
    let faults = Faults {
        shared: shared.clone(),
    };
    match route {
        ControlRoute::Counters => {
            let map: Map<String, Value> = shared
                .counters
                .snapshot()
                .into_iter()
                .map(|(op, s)| {
                    let name = serde_json::to_value(op)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    (
                        name,
                        json!({"received": s.received, "succeeded": s.succeeded, "failed": s.failed}),
                    )
                })
                .collect();
            Json(Value::Object(map)).into_response()
        }
        ControlRoute::ResetCounters => {
            shared.counters.reset();
            StatusCode::NO_CONTENT.into_response()
        }
        ControlRoute::Unknown => StatusCode::NOT_FOUND.into_response(),
        ControlRoute::Faults => {
            let bytes = match axum::body::to_bytes(body, 64 * 1024).await {
                Ok(b) => b,
                Err(e) => return bad_request(format!("cannot read the body: {e}")),
            };
            let command: Command = match serde_json::from_slice(&bytes) {
                Ok(c) => c,
                Err(e) => return bad_request(format!("not a fault command: {e}")),
            };
            match apply(&faults, command) {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(message) => (
                    StatusCode::NOT_FOUND,
                    Json(json!({"error": {"code": "KeyNotFound", "message": message}})),
                )
                    .into_response(),
            }
        }
    }
}

fn apply(faults: &Faults, command: Command) -> Result<(), String> {
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    match command {
        Command::Latency {
            target,
            fixed_ms,
            jitter_ms,
        } => faults.set_latency(target, ms(fixed_ms), ms(jitter_ms)),
        Command::ClearLatency => faults.clear_latency(),
        Command::ThrottleNext {
            target,
            n,
            retry_after_s,
        } => faults.throttle_next(target, n, retry_after_s.map(secs)),
        Command::ThrottleAboveRate {
            target,
            max,
            per_ms,
            retry_after_s,
        } => faults.throttle_above_rate(target, max, ms(per_ms), retry_after_s.map(secs)),
        Command::FailNext { target, n, status } => faults.fail_next(target, n, status),
        Command::DropNext { target, n } => faults.drop_next(target, n),
        Command::StallNext {
            target,
            n,
            duration_ms,
        } => faults.stall_next(target, n, ms(duration_ms)),
        Command::ForceHighS { on } => faults.force_high_s(on),
        Command::DenyKey { key, operation } => match operation {
            Some(op) => faults.deny_key_operation(&key, op),
            None => faults.deny_key(&key),
        },
        Command::AllowKey { key } => faults.allow_key(&key),
        Command::TokensExpireAfter { seconds } => faults.tokens_expire_after(seconds.map(secs)),
        Command::ExpireIssuedTokens => faults.expire_issued_tokens(),
        Command::SetKeyEnabled { key, enabled } => {
            if !faults.set_key_enabled(&key, enabled) {
                return Err(format!("no key named {key}"));
            }
        }
        Command::Reset => faults.reset(),
    }
    Ok(())
}
