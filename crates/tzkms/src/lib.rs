//! tzkms: a remote signer for Tezos bakers. The request path is in `signer`; `server` is its HTTP(S)
//! shell and `ops` the operations listener; `auth` and `policy` decide who may sign what; `backend` holds
//! the keys and `health` what they report; `audit` records each request; `app` builds and runs the whole
//! from a `config` (through `startup`). docs/architecture.md has the module map.

pub mod app;
pub mod audit;
pub mod auth;
pub mod azure;
pub mod backend;
pub mod config;
pub mod futures;
pub mod health;
pub mod limits;
pub mod metrics;
pub(crate) mod ops;
pub(crate) mod peer;
pub mod policy;
pub mod reload;
pub(crate) mod request;
pub mod sealing;
pub mod secret;
pub mod server;
pub mod signer;
pub mod startup;
pub mod status;
pub mod threshold;
pub mod watermark;

/// The git commit this binary was built from (`unknown` outside a git checkout).
pub const BUILD_COMMIT: &str = env!("TZKMS_BUILD_COMMIT");

/// `tzkms --version`'s long form: version, commit, compiler, profile, target.
pub fn long_version() -> String {
    format!(
        "{} (commit {}, {}, {} profile, {})",
        env!("CARGO_PKG_VERSION"),
        BUILD_COMMIT,
        env!("TZKMS_BUILD_RUSTC"),
        env!("TZKMS_BUILD_PROFILE"),
        env!("TZKMS_BUILD_TARGET"),
    )
}
