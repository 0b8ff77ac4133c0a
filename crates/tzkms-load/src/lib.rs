//! tzkms-load: drives a remote signer that speaks the Octez HTTP protocol the way bakers do (bursts of
//! consensus signatures per level, `GET /authorized_keys` before each `POST`), or at a constant rate, or
//! as fast as it answers; verifies every signature; and measures, in the same run, what the machine
//! allows (in-process signing, a trivial HTTP handler, fsync) so the results read as ratios.

pub mod client;
pub mod limits;
pub mod local;
pub mod payloads;
pub mod report;
pub mod run;
pub mod scenario;
pub mod verify;
