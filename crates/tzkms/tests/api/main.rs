//! Integration tests: the real server on a loopback port, driven over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod routes;
mod watermark;
