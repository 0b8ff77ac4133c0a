//! The cosigner's backend: the shares of this machine's share files. A share signs only on the cosigner
//! route (`POST /cosign/<group>`), after this machine's own policy and watermark for the group key; its
//! signature is a partial signature, checked against the share's public key.

use std::collections::HashMap;

use tezos::threshold::verify_partial;
use tezos::{BlsScheme, PublicKeyHash, Signature};

use super::shares::ShareFile;
use crate::backend::{BackendError, BoxFuture, KeyBackend, KeyInfo, ShareInfo};
use crate::health::Observed;

/// The shares this machine holds, by group key.
#[derive(Debug)]
pub struct ShareBackend {
    shares: HashMap<PublicKeyHash, ShareFile>,
}

impl ShareBackend {
    pub fn new(shares: Vec<ShareFile>) -> Self {
        Self {
            shares: shares.into_iter().map(|s| (s.group.hash(), s)).collect(),
        }
    }

    fn info(share: &ShareFile) -> KeyInfo {
        KeyInfo {
            public_key: share.group.clone(),
            name: format!(
                "share {} of {} (threshold {})",
                share.share.id, share.shares, share.threshold
            ),
        }
    }
}

impl KeyBackend for ShareBackend {
    fn kind(&self) -> &'static str {
        "share"
    }

    fn keys(&self) -> Vec<KeyInfo> {
        self.shares.values().map(Self::info).collect()
    }

    fn key(&self, pkh: &PublicKeyHash) -> Option<KeyInfo> {
        self.shares.get(pkh).map(Self::info)
    }

    fn sign<'a>(
        &'a self,
        pkh: &'a PublicKeyHash,
        message: &'a [u8],
        scheme: BlsScheme,
    ) -> BoxFuture<'a, Result<Signature, BackendError>> {
        Box::pin(async move {
            let share = self.shares.get(pkh).ok_or(BackendError::UnknownKey(*pkh))?;
            Ok(share.share.sign_partial(&share.group, message, scheme))
        })
    }

    fn verify(&self, key: &KeyInfo, message: &[u8], signature: &Signature, scheme: BlsScheme) -> bool {
        self.shares
            .get(&key.public_key.hash())
            .is_some_and(|s| verify_partial(&s.public_key, &s.group, message, scheme, signature))
    }

    fn share(&self, pkh: &PublicKeyHash) -> Option<ShareInfo> {
        self.shares.get(pkh).map(|s| ShareInfo {
            id: s.share.id.get(),
            threshold: s.threshold,
            shares: s.shares,
            public_key: s.public_key.clone(),
        })
    }
}

impl Observed for ShareBackend {
    fn describe(&self) -> String {
        let mut list: Vec<String> = self
            .shares
            .values()
            .map(|s| format!("share {} of {}", s.share.id, s.group.hash()))
            .collect();
        list.sort();
        format!("threshold shares ({})", list.join(", "))
    }
}
