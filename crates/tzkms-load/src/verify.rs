//! Checks every signature a signer returned against the delegate's public key, after the run and on all
//! cores, so verification does not take CPU from the signer while it is being measured.

use tezos::PublicKey;

use crate::client::SCHEME;
use crate::report::{Signed, Verification};

pub fn verify_all(signed: &[Signed], public_keys: &[PublicKey]) -> Verification {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = signed.len().div_ceil(threads).max(1);
    let results: Vec<(u64, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = signed
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut bad = 0u64;
                    let mut first = None;
                    for item in part {
                        let pk = &public_keys[item.delegate];
                        if !pk.verify(&item.payload, &item.signature, SCHEME) {
                            bad += 1;
                            first.get_or_insert_with(|| {
                                format!(
                                    "{} for {} over {} does not verify",
                                    item.signature,
                                    pk.hash(),
                                    hex::encode(&item.payload)
                                )
                            });
                        }
                    }
                    (bad, first)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, None)))
            .collect()
    });
    Verification {
        checked: signed.len() as u64,
        bad: results.iter().map(|r| r.0).sum(),
        first_bad: results.into_iter().find_map(|r| r.1),
    }
}
