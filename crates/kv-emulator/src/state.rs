//! State shared by every connection of one emulator: configuration, keys, tokens, faults, counters, URLs.

use crate::config::Config;
use crate::faults::{Counters, FaultState};
use crate::token::TokenAuthority;
use crate::vault::store::Store;
use std::sync::Mutex;

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub store: Store,
    pub tokens: TokenAuthority,
    pub faults: Mutex<FaultState>,
    pub counters: Counters,
    /// Secret the App Service identity endpoint expects in `X-IDENTITY-HEADER`.
    pub identity_header: String,
    /// `https://127.0.0.1:PORT` (or `http://` without TLS): vault and Entra ID.
    pub main_base: String,
    /// `http://127.0.0.1:PORT`: IMDS and the App Service identity endpoint.
    pub identity_base: String,
}
