//! Access tokens: HS256-signed JWTs shaped like Entra's (aud, iss, tid, oid, appid, exp), minted and checked here.

use crate::clock;
use crate::encoding::{b64url, from_b64url};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

/// Who a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subject {
    /// Application (client) id: the service principal or managed identity.
    pub app_id: String,
    /// Object id of the principal.
    pub object_id: String,
}

/// The claims the emulator puts in (and reads from) its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub tid: String,
    pub oid: String,
    pub sub: String,
    pub appid: String,
    pub idtyp: String,
    /// Issue order, so that "revoke everything issued so far" needs no clock.
    pub xms_emu_serial: u64,
    /// When the emulator really stops accepting the token (earlier than `exp` under the early-expiry fault).
    pub xms_emu_vexp: i64,
}

/// A freshly minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Minted {
    pub access_token: String,
    pub expires_in: i64,
    pub expires_on: i64,
    pub not_before: i64,
}

/// Why the data plane refused a bearer token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenRejection {
    #[error("AKV10000: Request is missing a Bearer or PoP token.")]
    Missing,
    #[error("AKV10001: Token is not a well-formed JWT.")]
    Malformed,
    #[error("AKV10016: Token signature validation failed (the token was not issued by this tenant).")]
    BadSignature,
    #[error("AKV10022: Invalid audience. Expected {expected}, found: {found}.")]
    WrongAudience { expected: String, found: String },
    #[error(
        "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{expected}/, found: {found}."
    )]
    WrongTenant { expected: String, found: String },
    #[error("AKV10021: Token is expired.")]
    Expired,
    #[error("AKV10023: Token is not yet valid.")]
    NotYetValid,
}

/// Mints and validates tokens for one tenant with one secret.
#[derive(Debug)]
pub(crate) struct TokenAuthority {
    secret: [u8; 32],
    tenant: String,
    lifetime: Duration,
    serial: AtomicU64,
    revoked_below: AtomicU64,
    early_expiry: Mutex<Option<Duration>>,
}

impl TokenAuthority {
    pub(crate) fn new(secret: [u8; 32], tenant: String, lifetime: Duration) -> Self {
        TokenAuthority {
            secret,
            tenant,
            lifetime,
            serial: AtomicU64::new(1),
            revoked_below: AtomicU64::new(0),
            early_expiry: Mutex::new(None),
        }
    }

    /// Tokens minted from now on stop working after `after` (while still advertising the normal lifetime).
    pub(crate) fn set_early_expiry(&self, after: Option<Duration>) {
        *self.early_expiry.lock().unwrap_or_else(|p| p.into_inner()) = after;
    }

    /// Every token minted so far is rejected as expired from now on.
    pub(crate) fn expire_all_issued(&self) {
        let next = self.serial.load(Ordering::SeqCst);
        self.revoked_below.store(next, Ordering::SeqCst);
    }

    pub(crate) fn mint(&self, audience: &str, subject: &Subject) -> Minted {
        let now = clock::now();
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX / 4);
        let exp = now.saturating_add(lifetime);
        let early = *self.early_expiry.lock().unwrap_or_else(|p| p.into_inner());
        let vexp = match early {
            Some(d) => now
                .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .min(exp),
            None => exp,
        };
        let claims = Claims {
            aud: audience.trim_end_matches('/').to_owned(),
            iss: format!("https://sts.windows.net/{}/", self.tenant),
            iat: now,
            nbf: now - 300,
            exp,
            tid: self.tenant.clone(),
            oid: subject.object_id.clone(),
            sub: subject.object_id.clone(),
            appid: subject.app_id.clone(),
            idtyp: "app".to_owned(),
            xms_emu_serial: self.serial.fetch_add(1, Ordering::SeqCst),
            xms_emu_vexp: vexp,
        };
        let header = b64url(br#"{"alg":"HS256","typ":"JWT","kid":"kv-emulator"}"#);
        let payload = b64url(&serde_json::to_vec(&claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let signature = b64url(&self.mac(signing_input.as_bytes()));
        Minted {
            access_token: format!("{signing_input}.{signature}"),
            expires_in: lifetime,
            expires_on: exp,
            not_before: claims.nbf,
        }
    }

    /// Check signature, tenant, audience and expiry.
    pub(crate) fn validate(&self, token: &str, audience: &str) -> Result<Claims, TokenRejection> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRejection::Malformed);
        };
        let signature = from_b64url(signature).ok_or(TokenRejection::Malformed)?;
        let mut mac = self.hmac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| TokenRejection::BadSignature)?;
        let payload = from_b64url(payload).ok_or(TokenRejection::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenRejection::Malformed)?;
        if claims.tid != self.tenant {
            return Err(TokenRejection::WrongTenant {
                expected: self.tenant.clone(),
                found: claims.iss,
            });
        }
        let expected = audience.trim_end_matches('/');
        if claims.aud != expected {
            return Err(TokenRejection::WrongAudience {
                expected: expected.to_owned(),
                found: claims.aud,
            });
        }
        let now = clock::now();
        if claims.xms_emu_serial < self.revoked_below.load(Ordering::SeqCst)
            || now >= claims.exp
            || now >= claims.xms_emu_vexp
        {
            return Err(TokenRejection::Expired);
        }
        if now < claims.nbf {
            return Err(TokenRejection::NotYetValid);
        }
        Ok(claims)
    }

    fn hmac(&self) -> HmacSha256 {
        // HMAC zero-pads short keys to the block size, so padding here is the same MAC and cannot fail.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.secret);
        <HmacSha256 as hmac::digest::KeyInit>::new(&block.into())
    }

    fn mac(&self, input: &[u8]) -> Vec<u8> {
        let mut mac = self.hmac();
        mac.update(input);
        mac.finalize().into_bytes().to_vec()
    }
}

/// Is this a syntactically valid JWT (three base64url parts, JSON header and payload)? Used for client assertions.
pub(crate) fn is_well_formed_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return false;
    }
    let json_part = |p: &str| {
        from_b64url(p)
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v.is_object())
    };
    json_part(parts[0]) && json_part(parts[1]) && from_b64url(parts[2]).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> TokenAuthority {
        TokenAuthority::new([9u8; 32], "tenant-a".to_owned(), Duration::from_secs(3600))
    }

    fn subject() -> Subject {
        Subject {
            app_id: "app".to_owned(),
            object_id: "oid".to_owned(),
        }
    }

    #[test]
    fn minted_token_validates_for_its_audience_only() {
        let a = authority();
        let t = a.mint("https://vault.azure.net", &subject());
        assert!(a.validate(&t.access_token, "https://vault.azure.net").is_ok());
        assert!(matches!(
            a.validate(&t.access_token, "https://managedhsm.azure.net"),
            Err(TokenRejection::WrongAudience { .. })
        ));
    }

    #[test]
    fn foreign_and_tampered_tokens_are_rejected() {
        let a = authority();
        let other = TokenAuthority::new([1u8; 32], "tenant-a".to_owned(), Duration::from_secs(3600));
        let t = other.mint("https://vault.azure.net", &subject());
        assert_eq!(
            a.validate(&t.access_token, "https://vault.azure.net"),
            Err(TokenRejection::BadSignature)
        );
        assert_eq!(
            a.validate("abc", "https://vault.azure.net"),
            Err(TokenRejection::Malformed)
        );
    }

    #[test]
    fn early_expiry_and_revocation_reject_tokens() {
        let a = authority();
        a.set_early_expiry(Some(Duration::ZERO));
        let t = a.mint("https://vault.azure.net", &subject());
        assert_eq!(t.expires_in, 3600);
        assert_eq!(
            a.validate(&t.access_token, "https://vault.azure.net"),
            Err(TokenRejection::Expired)
        );
        a.set_early_expiry(None);
        let t = a.mint("https://vault.azure.net", &subject());
        assert!(a.validate(&t.access_token, "https://vault.azure.net").is_ok());
        a.expire_all_issued();
        assert_eq!(
            a.validate(&t.access_token, "https://vault.azure.net"),
            Err(TokenRejection::Expired)
        );
        let fresh = a.mint("https://vault.azure.net", &subject());
        assert!(a.validate(&fresh.access_token, "https://vault.azure.net").is_ok());
    }

    #[test]
    fn jwt_shape_check() {
        let a = authority();
        assert!(is_well_formed_jwt(&a.mint("x", &subject()).access_token));
        assert!(!is_well_formed_jwt("a.b"));
        assert!(!is_well_formed_jwt("not.a.jwt"));
    }
}
