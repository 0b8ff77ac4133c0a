//! Integration tests: the real server on a loopback port, driven over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;
mod architecture;
mod audit;
mod auth;
mod azure;
pub mod azure_cli;
mod azure_unreachable;
mod azurite;
mod cli;
mod cli_auth;
mod cli_init;
mod cli_output;
mod cli_threshold;
mod consensus_keys;
mod crash;
mod docgen;
mod health;
mod helpers;
mod metrics;
mod operations;
mod operator;
mod payloads;
mod policy;
mod process;
pub(crate) mod reload;
mod routes;
mod sealed;
mod status;
mod table;
mod threshold;
mod tls;
mod watermark;
