//! tzkms: a remote signer for Tezos bakers. The request path is in `signer`; `server` is its HTTP shell;
//! `backend` holds the keys; `startup` turns a `config` into a running signer.

pub mod azure;
pub mod backend;
pub mod config;
pub mod server;
pub mod signer;
pub mod startup;
pub mod watermark;
