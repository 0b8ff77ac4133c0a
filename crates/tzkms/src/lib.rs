//! tzkms: a remote signer for Tezos bakers. The request path is in `signer`; `server` is its HTTP(S)
//! shell; `auth` and `policy` decide who may sign what; `backend` holds the keys; `audit` records each
//! request; `startup` turns a `config` into a running signer.

pub mod audit;
pub mod auth;
pub mod azure;
pub mod backend;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod signer;
pub mod startup;
pub mod watermark;
