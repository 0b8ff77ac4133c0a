//! Integration tests: the real server on a loopback port, driven over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;
mod audit;
mod auth;
mod azure;
mod azure_cli;
mod azurite;
mod cli;
mod crash;
mod helpers;
mod metrics;
mod policy;
mod process;
mod routes;
mod table;
mod tls;
mod watermark;
