//! Integration tests: the real server on a loopback port, driven over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod azure;
mod azure_cli;
mod azurite;
mod cli;
mod crash;
mod helpers;
mod process;
mod routes;
mod table;
mod watermark;
