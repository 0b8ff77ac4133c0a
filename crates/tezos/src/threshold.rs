//! Threshold BLS (tz4): Shamir shares of a BLS12-381 secret key, partial signatures, and their
//! combination by Lagrange interpolation into a signature that verifies under the original tz4 key,
//! compatible with Octez's `share bls secret key … between N shares with threshold M` and
//! `threshold bls signatures` (`src/lib_crypto/bls.ml`, `src/lib_bls12_381_signature`).
//!
//! Conventions, as Octez has them: the secret polynomial is `s(x) = sk + a_1 x + … + a_{M-1} x^{M-1}`
//! over the scalar field with random `a_i`; share `i` (1 ≤ i ≤ N ≤ 127, an int8 in Octez's JSON) is
//! `s(i)` as an ordinary `BLsk…` key; its public key is `s(i)·G1`. Each share signs like a tz4 key
//! (min-pk: signatures in G2), except that under the AUG scheme the message is prefixed with the
//! GROUP public key. Interpolating M partial signatures at 0 gives the group key's own signature,
//! byte for byte, since BLS signing is deterministic and linear in the key.

use std::collections::HashSet;
use std::fmt;

use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{Curve, KeyError, PublicKey, PublicKeyHash, SecretKey};
use crate::signature::{verify_bls_proof_of_possession, BlsScheme, Signature};

use self::field::{Fr, G1, G2};

/// The most shares a key can be split into: Octez encodes share ids as int8, ids 1..=N.
pub const MAX_SHARES: u8 = 127;

/// The id of one share: the point (1..=127) at which the secret polynomial was evaluated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShareId(u8);

impl ShareId {
    pub fn new(id: u8) -> Result<Self, ThresholdError> {
        if (1..=MAX_SHARES).contains(&id) {
            Ok(Self(id))
        } else {
            Err(ThresholdError::InvalidId(i64::from(id)))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    fn fr(self) -> Fr {
        Fr::from_u64(u64::from(self.0))
    }
}

impl TryFrom<i64> for ShareId {
    type Error = ThresholdError;
    fn try_from(id: i64) -> Result<Self, ThresholdError> {
        u8::try_from(id)
            .map_err(|_| ThresholdError::InvalidId(id))
            .and_then(Self::new)
    }
}

impl fmt::Display for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a threshold operation refused. Each message names the cause and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ThresholdError {
    #[error("share id {0} is out of range: shares are numbered 1 to 127 (Octez encodes the id as an int8)")]
    InvalidId(i64),
    #[error("share id {0} appears twice: each share of a key has its own id")]
    DuplicateId(u8),
    #[error(
        "the share count {0} is out of range: a key splits into 1 to 127 shares (Octez encodes share ids as int8)"
    )]
    ShareCount(u16),
    #[error("the threshold {threshold} is out of range: it must be between 1 and the share count {shares}")]
    ThresholdRange { threshold: u8, shares: u8 },
    #[error(
        "a threshold of {threshold} is not a majority of {shares} shares: two disjoint groups of {threshold} \
         cosigners could then each sign a different payload for the same level and round, a double signature \
         no watermark can stop. Choose a threshold above {shares}/2 (at least {majority} of {shares})"
    )]
    NotMajority { threshold: u8, shares: u8, majority: u8 },
    #[error(
        "a threshold of 1 would give every share holder the whole key: split with a threshold of at least 2 \
         (octez-client refuses it too)"
    )]
    ThresholdOne,
    #[error("{what} is a {curve} key: threshold signing needs a tz4 (BLS12-381) key")]
    NotBls { what: String, curve: Curve },
    #[error("{got} partial signature(s) given but the threshold is {threshold}: ask more cosigners")]
    TooFewPartials { got: usize, threshold: u8 },
    #[error("the partial signature of share {0} is not a BLS12-381 signature (a point of G2): refuse that cosigner's answer")]
    MalformedPartial(u8),
    #[error("the public key of share {0} is not a valid BLS12-381 public key")]
    MalformedShareKey(u8),
    #[error(
        "the share public keys do not match the group key {group}: {detail}. Check that the group key, the \
         threshold and every share key come from the same split"
    )]
    SharesMismatch { group: String, detail: String },
    #[error("share {id}: {error}")]
    ShareKey { id: u8, error: KeyError },
    #[error("{field}: {error}")]
    Field { field: &'static str, error: String },
    #[error("public_key_hash {given} is not the hash of public_key {public_key} (expected {expected})")]
    HashMismatch {
        given: String,
        public_key: String,
        expected: String,
    },
    #[error(
        "proof is not a proof of possession of public_key {0}: the JSON was altered or mixes two splits"
    )]
    BadProof(String),
    #[error("secret_shares is empty")]
    NoShares,
    #[error("a share came out as zero (probability about 2^-255): run the split again")]
    ZeroShare,
}

/// One share of a tz4 secret key. Its secret is zeroized on drop and never printed.
#[derive(Debug)]
pub struct SecretShare {
    pub id: ShareId,
    key: SecretKey,
}

impl SecretShare {
    /// A share from its id and its `BLsk…` secret, as in Octez's `secret_shares`.
    pub fn from_b58(id: u8, sk: &str) -> Result<Self, ThresholdError> {
        let id = ShareId::new(id)?;
        let key: SecretKey = sk
            .parse()
            .map_err(|error| ThresholdError::ShareKey { id: id.0, error })?;
        Self::from_secret_key(id, key)
    }

    /// A share from an already parsed secret key (a share file read like a key file).
    pub fn from_secret_key(id: ShareId, key: SecretKey) -> Result<Self, ThresholdError> {
        if key.curve() != Curve::Bls {
            return Err(ThresholdError::NotBls {
                what: format!("share {id}"),
                curve: key.curve(),
            });
        }
        Ok(Self { id, key })
    }

    /// The unencrypted `BLsk…` form of the share's secret.
    pub fn to_b58(&self) -> Zeroizing<String> {
        self.key.to_b58()
    }

    /// The share as a secret key (to write it to a share file like any key file).
    pub fn secret_key(&self) -> &SecretKey {
        &self.key
    }

    /// The share's own tz4 public key (`BLpk…`), against which its partial signatures are checked.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key().clone()
    }

    /// The partial signature over `message` (the whole payload, magic byte included) for the group key
    /// `group`: POP signs `message` with the POP DST; AUG signs `group ‖ message` with the AUG DST (the
    /// GROUP key is prepended, not the share's, so that the combination is the group key's signature).
    pub fn sign_partial(&self, group: &PublicKey, message: &[u8], scheme: BlsScheme) -> Signature {
        let key = self
            .key
            .bls_inner()
            .expect("a share is a BLS key (checked on construction)");
        let sig = match scheme {
            BlsScheme::ProofOfPossession => key.sign(message, scheme.dst(), &[]),
            BlsScheme::Augmented => key.sign(message, scheme.dst(), group.as_bytes()),
        };
        Signature::Bls(sig.compress())
    }
}

/// Checks one partial signature against the share's public key, with the message rule of
/// [`SecretShare::sign_partial`].
pub fn verify_partial(
    share_pk: &PublicKey,
    group: &PublicKey,
    message: &[u8],
    scheme: BlsScheme,
    sig: &Signature,
) -> bool {
    let (Curve::Bls, Curve::Bls, Signature::Bls(bytes)) = (share_pk.curve(), group.curve(), sig) else {
        return false;
    };
    let (Ok(key), Ok(s)) = (
        blst::min_pk::PublicKey::from_bytes(share_pk.as_bytes()),
        blst::min_pk::Signature::from_bytes(bytes),
    ) else {
        return false;
    };
    let aug: &[u8] = match scheme {
        BlsScheme::ProofOfPossession => &[],
        BlsScheme::Augmented => group.as_bytes(),
    };
    s.verify(true, message, scheme.dst(), aug, &key, true) == blst::BLST_ERROR::BLST_SUCCESS
}

/// Refuses duplicate ids.
fn distinct(ids: impl IntoIterator<Item = ShareId>) -> Result<(), ThresholdError> {
    let mut seen = HashSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(ThresholdError::DuplicateId(id.0));
        }
    }
    Ok(())
}

/// The Lagrange coefficients at `x` of the polynomial through the points with abscissas `ids`
/// (distinct): `λ_i(x) = Π_{j≠i} (x − x_j) / (x_i − x_j)`.
fn lagrange_at(x: &Fr, ids: &[ShareId]) -> Vec<Fr> {
    let xs: Vec<Fr> = ids.iter().map(|id| id.fr()).collect();
    (0..xs.len())
        .map(|i| {
            let mut num = Fr::from_u64(1);
            let mut den = Fr::from_u64(1);
            for (j, xj) in xs.iter().enumerate() {
                if j != i {
                    num = num.mul(&x.sub(xj));
                    den = den.mul(&xs[i].sub(xj));
                }
            }
            num.mul(&den.inverse())
        })
        .collect()
}

/// Combines partial signatures by Lagrange interpolation at 0 in G2. Uses the first `threshold` of
/// `partials`, whose ids must be distinct. The result is the group key's signature when every partial
/// used is valid (check each with [`verify_partial`] first, or the result with the group key).
pub fn combine(partials: &[(ShareId, Signature)], threshold: u8) -> Result<Signature, ThresholdError> {
    if threshold == 0 {
        return Err(ThresholdError::ThresholdRange {
            threshold,
            shares: u8::try_from(partials.len()).unwrap_or(u8::MAX),
        });
    }
    if partials.len() < usize::from(threshold) {
        return Err(ThresholdError::TooFewPartials {
            got: partials.len(),
            threshold,
        });
    }
    let used = &partials[..usize::from(threshold)];
    distinct(used.iter().map(|(id, _)| *id))?;
    let points = used
        .iter()
        .map(|(id, sig)| match sig {
            Signature::Bls(bytes) => G2::from_compressed(bytes).ok_or(ThresholdError::MalformedPartial(id.0)),
            _ => Err(ThresholdError::MalformedPartial(id.0)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<ShareId> = used.iter().map(|(id, _)| *id).collect();
    let coeffs = lagrange_at(&Fr::from_u64(0), &ids);
    Ok(Signature::Bls(
        G2::linear_combination(&points, &coeffs).compress(),
    ))
}

/// Checks that the group key and the share public keys agree: the first `threshold` share keys
/// interpolate at 0 (in G1) to `group`, and every other share key lies on the same polynomial. Refuses
/// duplicate ids, fewer than `threshold` keys, and non-BLS keys.
pub fn check_share_keys(
    group: &PublicKey,
    shares: &[(ShareId, PublicKey)],
    threshold: u8,
) -> Result<(), ThresholdError> {
    if group.curve() != Curve::Bls {
        return Err(ThresholdError::NotBls {
            what: format!("the group key {group}"),
            curve: group.curve(),
        });
    }
    let count = u8::try_from(shares.len()).map_err(|_| ThresholdError::ShareCount(shares.len() as u16))?;
    if threshold == 0 || threshold > count {
        return Err(ThresholdError::ThresholdRange {
            threshold,
            shares: count,
        });
    }
    distinct(shares.iter().map(|(id, _)| *id))?;
    let points = shares
        .iter()
        .map(|(id, pk)| {
            if pk.curve() != Curve::Bls {
                return Err(ThresholdError::NotBls {
                    what: format!("the public key of share {id}"),
                    curve: pk.curve(),
                });
            }
            G1::from_compressed(pk.as_bytes()).ok_or(ThresholdError::MalformedShareKey(id.0))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let m = usize::from(threshold);
    let base_ids: Vec<ShareId> = shares[..m].iter().map(|(id, _)| *id).collect();
    let names = base_ids
        .iter()
        .map(ShareId::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let at_zero = G1::linear_combination(&points[..m], &lagrange_at(&Fr::from_u64(0), &base_ids));
    if at_zero.compress().as_slice() != group.as_bytes() {
        return Err(ThresholdError::SharesMismatch {
            group: group.to_string(),
            detail: format!("shares {names} interpolate to another key"),
        });
    }
    for (k, (id, _)) in shares.iter().enumerate().skip(m) {
        let expected = G1::linear_combination(&points[..m], &lagrange_at(&id.fr(), &base_ids));
        if expected.compress().as_slice() != shares[k].1.as_bytes() {
            return Err(ThresholdError::SharesMismatch {
                group: group.to_string(),
                detail: format!(
                    "the public key of share {id} does not lie on the polynomial of shares {names} (threshold {threshold})"
                ),
            });
        }
    }
    Ok(())
}

/// The safety rule a threshold deployment must meet: `1 <= M <= N <= 127` and `M > N/2`. With
/// `M <= N/2`, two disjoint sets of M share holders could each sign a different payload at the same
/// level and round, each with its own honest watermark.
pub fn check_parameters(threshold: u8, shares: u8) -> Result<(), ThresholdError> {
    check_ranges(threshold, shares)?;
    if u16::from(threshold) * 2 <= u16::from(shares) {
        return Err(ThresholdError::NotMajority {
            threshold,
            shares,
            majority: shares / 2 + 1,
        });
    }
    Ok(())
}

fn check_ranges(threshold: u8, shares: u8) -> Result<(), ThresholdError> {
    if !(1..=MAX_SHARES).contains(&shares) {
        return Err(ThresholdError::ShareCount(u16::from(shares)));
    }
    if threshold == 0 || threshold > shares {
        return Err(ThresholdError::ThresholdRange { threshold, shares });
    }
    Ok(())
}

/// Shamir split of a tz4 secret key as octez-client does it: a random polynomial of degree M−1
/// whose constant term is `sk` (the other coefficients drawn like fresh BLS keys from the OS RNG),
/// evaluated at ids 1..=N. Enforces Octez's rule `2 <= M <= N <= 127`, not the majority rule: callers
/// that deploy cosigners check [`check_parameters`] too.
pub fn split(sk: &SecretKey, shares: u8, threshold: u8) -> Result<ShareSet, ThresholdError> {
    if sk.curve() != Curve::Bls {
        return Err(ThresholdError::NotBls {
            what: format!("the key {}", sk.public_key().hash()),
            curve: sk.curve(),
        });
    }
    check_ranges(threshold, shares)?;
    if threshold < 2 {
        return Err(ThresholdError::ThresholdOne);
    }
    let constant = Fr::from_le_bytes(&sk.to_raw()).expect("a BLS secret key is a field element");
    let mut coeffs = vec![constant];
    for _ in 1..threshold {
        let random = SecretKey::generate(Curve::Bls);
        coeffs.push(Fr::from_le_bytes(&random.to_raw()).expect("a BLS secret key is a field element"));
    }
    let mut out = Vec::with_capacity(usize::from(shares));
    for id in 1..=shares {
        let id = ShareId::new(id)?;
        let x = id.fr();
        // Horner: s(x) = (…(a_{M-1} x + a_{M-2}) x + …) x + a_0.
        let mut acc = coeffs[coeffs.len() - 1].clone();
        for c in coeffs.iter().rev().skip(1) {
            acc = acc.mul(&x).add(c);
        }
        let raw = acc.to_le_bytes();
        let key = SecretKey::from_raw(Curve::Bls, raw.as_ref()).map_err(|_| ThresholdError::ZeroShare)?;
        out.push(SecretShare { id, key });
    }
    let proof = sk
        .bls_prove_possession(None)
        .expect("a BLS key proves possession");
    Ok(ShareSet {
        public_key: sk.public_key().clone(),
        proof,
        shares: out,
        threshold,
    })
}

/// What `octez-client share bls secret key <sk> between <N> shares with threshold <M>` prints: the
/// group key, its hash, a proof of possession of the group key made with the group secret (what a
/// reveal of the tz4 account needs), and the shares. Serializes to exactly Octez's JSON fields;
/// deserializing checks every field: the hash, the proof, the ids (1..=127, distinct), the shares
/// (BLS keys that interpolate to the group key). Octez's JSON does not state the threshold: it is
/// read off the shares as one more than the degree of the polynomial they lie on (exact when the
/// JSON holds more shares than the threshold; with N = M it can only be N).
#[derive(Debug)]
pub struct ShareSet {
    public_key: PublicKey,
    proof: Signature,
    shares: Vec<SecretShare>,
    threshold: u8,
}

impl ShareSet {
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }
    pub fn public_key_hash(&self) -> PublicKeyHash {
        self.public_key.hash()
    }
    /// The proof of possession of the group key (`BLsig…`), as Octez's `proof`.
    pub fn proof(&self) -> &Signature {
        &self.proof
    }
    pub fn shares(&self) -> &[SecretShare] {
        &self.shares
    }
    pub fn into_shares(self) -> Vec<SecretShare> {
        self.shares
    }
    pub fn share(&self, id: ShareId) -> Option<&SecretShare> {
        self.shares.iter().find(|s| s.id == id)
    }
    pub fn threshold(&self) -> u8 {
        self.threshold
    }
    /// N, the number of shares in the set.
    pub fn share_count(&self) -> u8 {
        self.shares.len() as u8
    }
    /// Each share's id and public key: what a coordinator's configuration lists.
    pub fn share_public_keys(&self) -> Vec<(ShareId, PublicKey)> {
        self.shares.iter().map(|s| (s.id, s.public_key())).collect()
    }

    fn from_parsed(raw: &RawShareSet) -> Result<Self, ThresholdError> {
        let field = |field: &'static str, e: &dyn fmt::Display| ThresholdError::Field {
            field,
            error: e.to_string(),
        };
        let public_key: PublicKey = raw.public_key.parse().map_err(|e| field("public_key", &e))?;
        if public_key.curve() != Curve::Bls {
            return Err(ThresholdError::NotBls {
                what: format!("public_key {public_key}"),
                curve: public_key.curve(),
            });
        }
        let pkh: PublicKeyHash = raw
            .public_key_hash
            .parse()
            .map_err(|e| field("public_key_hash", &e))?;
        if pkh != public_key.hash() {
            return Err(ThresholdError::HashMismatch {
                given: pkh.to_string(),
                public_key: public_key.to_string(),
                expected: public_key.hash().to_string(),
            });
        }
        let proof: Signature = raw.proof.parse().map_err(|e| field("proof", &e))?;
        if !verify_bls_proof_of_possession(&public_key, &public_key, &proof) {
            return Err(ThresholdError::BadProof(public_key.to_string()));
        }
        if raw.secret_shares.is_empty() {
            return Err(ThresholdError::NoShares);
        }
        if raw.secret_shares.len() > usize::from(MAX_SHARES) {
            return Err(ThresholdError::ShareCount(raw.secret_shares.len() as u16));
        }
        let shares = raw
            .secret_shares
            .iter()
            .map(|s| {
                let id = ShareId::try_from(s.id)?;
                let key: SecretKey = s
                    .secret_key
                    .parse()
                    .map_err(|error| ThresholdError::ShareKey { id: id.0, error })?;
                SecretShare::from_secret_key(id, key)
            })
            .collect::<Result<Vec<_>, _>>()?;
        distinct(shares.iter().map(|s| s.id))?;
        let threshold = infer_threshold(&shares);
        // The constant term of the polynomial through the first `threshold` shares is the group secret.
        let ids: Vec<ShareId> = shares[..usize::from(threshold)].iter().map(|s| s.id).collect();
        let lambdas = lagrange_at(&Fr::from_u64(0), &ids);
        let mut secret = Fr::from_u64(0);
        for (share, lambda) in shares.iter().zip(&lambdas) {
            let y = Fr::from_le_bytes(&share.key.to_raw()).expect("a BLS secret key is a field element");
            secret = secret.add(&y.mul(lambda));
        }
        let matches = SecretKey::from_raw(Curve::Bls, secret.to_le_bytes().as_ref())
            .is_ok_and(|sk| sk.public_key() == &public_key);
        if !matches {
            return Err(ThresholdError::SharesMismatch {
                group: public_key.to_string(),
                detail: "the secret shares interpolate to another key".into(),
            });
        }
        if threshold < 2 {
            return Err(ThresholdError::ThresholdOne);
        }
        Ok(Self {
            public_key,
            proof,
            shares,
            threshold,
        })
    }
}

/// One more than the degree of the lowest-degree polynomial through the shares: the degree is the index
/// of the last non-zero Newton divided difference.
fn infer_threshold(shares: &[SecretShare]) -> u8 {
    let xs: Vec<Fr> = shares.iter().map(|s| s.id.fr()).collect();
    let mut table: Vec<Fr> = shares
        .iter()
        .map(|s| Fr::from_le_bytes(&s.key.to_raw()).expect("a BLS secret key is a field element"))
        .collect();
    let mut degree = 0;
    // After round k, table[i] = f[x_{i-k}, …, x_i] for i >= k; table[k] is the k-th Newton coefficient.
    for k in 1..table.len() {
        for i in (k..table.len()).rev() {
            let diff = table[i].sub(&table[i - 1]);
            table[i] = diff.mul(&xs[i].sub(&xs[i - k]).inverse());
        }
        if !table[k].is_zero() {
            degree = k;
        }
    }
    (degree + 1) as u8
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShareSet {
    public_key: String,
    public_key_hash: String,
    proof: String,
    secret_shares: Vec<RawShare>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShare {
    id: i64,
    secret_key: String,
}

impl Drop for RawShare {
    fn drop(&mut self) {
        self.secret_key.zeroize();
    }
}

impl<'de> Deserialize<'de> for ShareSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawShareSet::deserialize(d)?;
        ShareSet::from_parsed(&raw).map_err(serde::de::Error::custom)
    }
}

struct SharesOut<'a>(&'a [SecretShare]);
struct ShareOut<'a>(&'a SecretShare);

impl Serialize for ShareSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ShareSet", 4)?;
        st.serialize_field("public_key", &self.public_key.to_string())?;
        st.serialize_field("public_key_hash", &self.public_key.hash().to_string())?;
        st.serialize_field("proof", &self.proof.to_string())?;
        st.serialize_field("secret_shares", &SharesOut(&self.shares))?;
        st.end()
    }
}

impl Serialize for SharesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for share in self.0 {
            seq.serialize_element(&ShareOut(share))?;
        }
        seq.end()
    }
}

impl Serialize for ShareOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SecretShare", 2)?;
        st.serialize_field("id", &self.0.id.0)?;
        st.serialize_field("secret_key", self.0.to_b58().as_str())?;
        st.end()
    }
}

/// The scalar field and curve groups through blst's low-level functions: the safe API has no field
/// arithmetic and no point-times-scalar. Every call below reads and writes only the stack values
/// passed by reference, with the lengths blst documents (32-byte scalars, 48/96-byte compressed points).
#[allow(unsafe_code)]
mod field {
    use blst::*;
    use zeroize::{Zeroize, Zeroizing};

    /// An element of the BLS12-381 scalar field, zeroized on drop (it may hold a share).
    pub(super) struct Fr(blst_fr);

    impl Drop for Fr {
        fn drop(&mut self) {
            self.0.l.zeroize();
        }
    }

    impl Clone for Fr {
        fn clone(&self) -> Self {
            Fr(self.0)
        }
    }

    impl Fr {
        pub(super) fn from_u64(v: u64) -> Self {
            let mut out = blst_fr::default();
            let limbs = [v, 0, 0, 0];
            unsafe { blst_fr_from_uint64(&mut out, limbs.as_ptr()) };
            Fr(out)
        }

        /// From 32 little-endian bytes; `None` when not below the field order.
        pub(super) fn from_le_bytes(bytes: &[u8; 32]) -> Option<Self> {
            let mut s = blst_scalar::default();
            let mut out = blst_fr::default();
            let ok = unsafe {
                blst_scalar_from_lendian(&mut s, bytes.as_ptr());
                let ok = blst_scalar_fr_check(&s);
                blst_fr_from_scalar(&mut out, &s);
                ok
            };
            s.b.zeroize();
            let out = Fr(out);
            ok.then_some(out)
        }

        pub(super) fn to_le_bytes(&self) -> Zeroizing<[u8; 32]> {
            let mut s = blst_scalar::default();
            let mut out = Zeroizing::new([0u8; 32]);
            unsafe {
                blst_scalar_from_fr(&mut s, &self.0);
                blst_lendian_from_scalar(out.as_mut_ptr(), &s);
            }
            s.b.zeroize();
            out
        }

        pub(super) fn add(&self, other: &Fr) -> Fr {
            let mut out = blst_fr::default();
            unsafe { blst_fr_add(&mut out, &self.0, &other.0) };
            Fr(out)
        }

        pub(super) fn sub(&self, other: &Fr) -> Fr {
            let mut out = blst_fr::default();
            unsafe { blst_fr_sub(&mut out, &self.0, &other.0) };
            Fr(out)
        }

        pub(super) fn mul(&self, other: &Fr) -> Fr {
            let mut out = blst_fr::default();
            unsafe { blst_fr_mul(&mut out, &self.0, &other.0) };
            Fr(out)
        }

        /// The inverse (callers never invert zero: share ids are distinct).
        pub(super) fn inverse(&self) -> Fr {
            let mut out = blst_fr::default();
            unsafe { blst_fr_inverse(&mut out, &self.0) };
            Fr(out)
        }

        pub(super) fn is_zero(&self) -> bool {
            self.to_le_bytes().iter().all(|b| *b == 0)
        }
    }

    /// A point of G1 (public keys).
    pub(super) struct G1(blst_p1);

    impl G1 {
        /// A compressed point, checked to be on the curve and in the subgroup.
        pub(super) fn from_compressed(bytes: &[u8]) -> Option<Self> {
            if bytes.len() != 48 {
                return None;
            }
            let mut aff = blst_p1_affine::default();
            let mut out = blst_p1::default();
            unsafe {
                if blst_p1_uncompress(&mut aff, bytes.as_ptr()) != BLST_ERROR::BLST_SUCCESS
                    || !blst_p1_affine_in_g1(&aff)
                    || blst_p1_affine_is_inf(&aff)
                {
                    return None;
                }
                blst_p1_from_affine(&mut out, &aff);
            }
            Some(G1(out))
        }

        /// `Σ coeffs[i]·points[i]` (non-empty, same lengths).
        pub(super) fn linear_combination(points: &[G1], coeffs: &[Fr]) -> G1 {
            let mut acc = blst_p1::default();
            for (i, (p, c)) in points.iter().zip(coeffs).enumerate() {
                let k = c.to_le_bytes();
                let mut term = blst_p1::default();
                unsafe {
                    blst_p1_mult(&mut term, &p.0, k.as_ptr(), 255);
                    if i == 0 {
                        acc = term;
                    } else {
                        let prev = acc;
                        blst_p1_add_or_double(&mut acc, &prev, &term);
                    }
                }
            }
            G1(acc)
        }

        pub(super) fn compress(&self) -> [u8; 48] {
            let mut out = [0u8; 48];
            unsafe { blst_p1_compress(out.as_mut_ptr(), &self.0) };
            out
        }
    }

    /// A point of G2 (signatures).
    pub(super) struct G2(blst_p2);

    impl G2 {
        /// A compressed point, checked to be on the curve and in the subgroup.
        pub(super) fn from_compressed(bytes: &[u8]) -> Option<Self> {
            if bytes.len() != 96 {
                return None;
            }
            let mut aff = blst_p2_affine::default();
            let mut out = blst_p2::default();
            unsafe {
                if blst_p2_uncompress(&mut aff, bytes.as_ptr()) != BLST_ERROR::BLST_SUCCESS
                    || !blst_p2_affine_in_g2(&aff)
                    || blst_p2_affine_is_inf(&aff)
                {
                    return None;
                }
                blst_p2_from_affine(&mut out, &aff);
            }
            Some(G2(out))
        }

        /// `Σ coeffs[i]·points[i]` (non-empty, same lengths).
        pub(super) fn linear_combination(points: &[G2], coeffs: &[Fr]) -> G2 {
            let mut acc = blst_p2::default();
            for (i, (p, c)) in points.iter().zip(coeffs).enumerate() {
                let k = c.to_le_bytes();
                let mut term = blst_p2::default();
                unsafe {
                    blst_p2_mult(&mut term, &p.0, k.as_ptr(), 255);
                    if i == 0 {
                        acc = term;
                    } else {
                        let prev = acc;
                        blst_p2_add_or_double(&mut acc, &prev, &term);
                    }
                }
            }
            G2(acc)
        }

        pub(super) fn compress(&self) -> [u8; 96] {
            let mut out = [0u8; 96];
            unsafe { blst_p2_compress(out.as_mut_ptr(), &self.0) };
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMES: [BlsScheme; 2] = [BlsScheme::ProofOfPossession, BlsScheme::Augmented];

    fn partials(set: &ShareSet, ids: &[u8], msg: &[u8], scheme: BlsScheme) -> Vec<(ShareId, Signature)> {
        ids.iter()
            .map(|&i| {
                let share = set.share(ShareId::new(i).unwrap()).unwrap();
                (share.id, share.sign_partial(set.public_key(), msg, scheme))
            })
            .collect()
    }

    /// Every `k`-subset of `1..=n`, in lexicographic order.
    fn subsets(n: u8, k: usize) -> Vec<Vec<u8>> {
        fn go(start: u8, n: u8, k: usize, cur: &mut Vec<u8>, out: &mut Vec<Vec<u8>>) {
            if cur.len() == k {
                out.push(cur.clone());
                return;
            }
            for i in start..=n {
                cur.push(i);
                go(i + 1, n, k, cur, out);
                cur.pop();
            }
        }
        let mut out = Vec::new();
        go(1, n, k, &mut Vec::new(), &mut out);
        out
    }

    #[test]
    fn threshold_partials_combine_into_the_group_keys_own_signature() {
        for (n, m) in [(3u8, 2u8), (5, 3), (127, 64)] {
            let sk = SecretKey::generate(Curve::Bls);
            let set = split(&sk, n, m).unwrap();
            assert_eq!(set.share_count(), n);
            assert_eq!(set.threshold(), m);
            let msg = b"\x13some attestation bytes";
            for scheme in SCHEMES {
                // The last M shares, in reverse order: any M distinct shares in any order.
                let ids: Vec<u8> = (n - m + 1..=n).rev().collect();
                let parts = partials(&set, &ids, msg, scheme);
                for (id, sig) in &parts {
                    let share_pk = set.share(*id).unwrap().public_key();
                    assert!(
                        verify_partial(&share_pk, set.public_key(), msg, scheme, sig),
                        "{n}/{m} share {id}"
                    );
                }
                let combined = combine(&parts, m).unwrap();
                assert!(
                    set.public_key().verify(msg, &combined, scheme),
                    "{m}-of-{n} {scheme:?}"
                );
                assert_eq!(combined, sk.sign(msg, scheme).unwrap(), "{m}-of-{n} {scheme:?}");
            }
        }
    }

    #[test]
    fn every_majority_of_a_3_of_5_gives_the_same_signature() {
        let sk = SecretKey::generate(Curve::Bls);
        let set = split(&sk, 5, 3).unwrap();
        let msg = b"\x11a block header";
        for scheme in SCHEMES {
            let expected = sk.sign(msg, scheme).unwrap();
            let all = subsets(5, 3);
            assert_eq!(all.len(), 10);
            for ids in all {
                assert_eq!(
                    combine(&partials(&set, &ids, msg, scheme), 3).unwrap(),
                    expected,
                    "{ids:?}"
                );
            }
            // More than M given: the first M are used.
            let four = partials(&set, &[5, 1, 3, 2], msg, scheme);
            assert_eq!(combine(&four, 3).unwrap(), expected);
        }
    }

    #[test]
    fn fewer_than_the_threshold_cannot_sign() {
        let sk = SecretKey::generate(Curve::Bls);
        let set = split(&sk, 5, 3).unwrap();
        let msg = b"\x12preattestation";
        let parts = partials(&set, &[1, 2], msg, BlsScheme::ProofOfPossession);
        assert_eq!(
            combine(&parts, 3),
            Err(ThresholdError::TooFewPartials { got: 2, threshold: 3 })
        );
        // Interpolating two shares of a degree-2 polynomial gives some other signature, not the key's.
        let wrong = combine(&parts, 2).unwrap();
        assert!(!set.public_key().verify(msg, &wrong, BlsScheme::ProofOfPossession));
    }

    #[test]
    fn a_wrong_partial_is_caught_before_combining() {
        let sk = SecretKey::generate(Curve::Bls);
        let set = split(&sk, 3, 2).unwrap();
        let group = set.public_key();
        let msg = b"\x13attestation";
        let s1 = set.share(ShareId::new(1).unwrap()).unwrap();
        let s2 = set.share(ShareId::new(2).unwrap()).unwrap();
        for scheme in SCHEMES {
            let good = s1.sign_partial(group, msg, scheme);
            assert!(verify_partial(&s1.public_key(), group, msg, scheme, &good));
            // Another share's signature, another message, the other scheme, the share's own AUG rule.
            let by_other = s2.sign_partial(group, msg, scheme);
            assert!(!verify_partial(&s1.public_key(), group, msg, scheme, &by_other));
            let other_msg = s1.sign_partial(group, b"\x13other", scheme);
            assert!(!verify_partial(&s1.public_key(), group, msg, scheme, &other_msg));
            let other_scheme = if scheme == BlsScheme::Augmented {
                BlsScheme::ProofOfPossession
            } else {
                BlsScheme::Augmented
            };
            assert!(!verify_partial(&s1.public_key(), group, msg, other_scheme, &good));
            // A wrong partial makes a combination that does not verify.
            let bad = combine(&[(s1.id, by_other), (s2.id, by_other)], 2).unwrap();
            assert!(!group.verify(msg, &bad, scheme));
        }
        // AUG prepends the group key, not the share's: a share's plain AUG signature is not a partial.
        let own_aug = s1.secret_key().sign(msg, BlsScheme::Augmented).unwrap();
        assert!(!verify_partial(
            &s1.public_key(),
            group,
            msg,
            BlsScheme::Augmented,
            &own_aug
        ));
        // Not a G2 point.
        let mut junk = [0u8; 96];
        junk[0] = 0x80 | 0x1f;
        assert!(!verify_partial(
            &s1.public_key(),
            group,
            msg,
            BlsScheme::default(),
            &Signature::Bls(junk)
        ));
        assert_eq!(
            combine(&[(s1.id, Signature::Bls(junk)), (s2.id, Signature::Bls(junk))], 2),
            Err(ThresholdError::MalformedPartial(1))
        );
        let ed = Signature::Ed25519([1; 64]);
        assert_eq!(
            combine(&[(s2.id, ed), (s1.id, ed)], 2),
            Err(ThresholdError::MalformedPartial(2))
        );
    }

    #[test]
    fn duplicate_and_zero_ids_are_refused() {
        assert_eq!(ShareId::new(0), Err(ThresholdError::InvalidId(0)));
        assert_eq!(ShareId::new(128), Err(ThresholdError::InvalidId(128)));
        assert_eq!(ShareId::try_from(-1), Err(ThresholdError::InvalidId(-1)));
        assert_eq!(ShareId::new(127).unwrap().get(), 127);
        let sk = SecretKey::generate(Curve::Bls);
        let set = split(&sk, 3, 2).unwrap();
        let msg = b"\x11block";
        let p = partials(&set, &[1, 1], msg, BlsScheme::default());
        assert_eq!(combine(&p, 2), Err(ThresholdError::DuplicateId(1)));
        let keys = set.share_public_keys();
        let dup = vec![keys[0].clone(), keys[1].clone(), (keys[0].0, keys[2].1.clone())];
        assert_eq!(
            check_share_keys(set.public_key(), &dup, 2),
            Err(ThresholdError::DuplicateId(1))
        );
        assert!(SecretShare::from_b58(0, &set.shares()[0].to_b58()).is_err());
    }

    #[test]
    fn check_share_keys_accepts_a_split_and_catches_a_swapped_key() {
        let sk = SecretKey::generate(Curve::Bls);
        let set = split(&sk, 5, 3).unwrap();
        let group = set.public_key();
        let keys = set.share_public_keys();
        check_share_keys(group, &keys, 3).unwrap();
        // Any order: the first M used for the group check are then 5, 4, 3.
        let mut reversed = keys.clone();
        reversed.reverse();
        check_share_keys(group, &reversed, 3).unwrap();
        let stranger = SecretKey::generate(Curve::Bls).public_key().clone();
        // A swapped key among the first M (group check) and after them (polynomial check).
        for at in [0, 4] {
            let mut swapped = keys.clone();
            swapped[at].1 = stranger.clone();
            let err = check_share_keys(group, &swapped, 3).unwrap_err();
            assert!(matches!(err, ThresholdError::SharesMismatch { .. }), "{err}");
        }
        // Two shares' keys exchanged between their ids.
        let mut exchanged = keys.clone();
        let (a, b) = (exchanged[3].1.clone(), exchanged[4].1.clone());
        exchanged[3].1 = b;
        exchanged[4].1 = a;
        assert!(check_share_keys(group, &exchanged, 3).is_err());
        // Another split's shares of the same key do not mix with these.
        let other = split(&sk, 5, 3).unwrap().share_public_keys();
        let mixed = vec![
            keys[0].clone(),
            keys[1].clone(),
            other[2].clone(),
            keys[3].clone(),
        ];
        assert!(check_share_keys(group, &mixed, 3).is_err());
        // The wrong threshold: a 3-of-5 split's keys do not lie on a degree-1 polynomial.
        assert!(check_share_keys(group, &keys, 2).is_err());
        assert!(check_share_keys(&stranger, &keys, 3).is_err());
        assert!(matches!(
            check_share_keys(group, &keys[..2], 3),
            Err(ThresholdError::ThresholdRange {
                threshold: 3,
                shares: 2
            })
        ));
    }

    #[test]
    fn parameters_must_form_a_majority() {
        for (m, n) in [(2, 3), (3, 5), (3, 4), (1, 1), (2, 2), (64, 127), (127, 127)] {
            assert_eq!(check_parameters(m, n), Ok(()), "{m}-of-{n}");
        }
        for (m, n) in [(1, 2), (2, 4), (2, 5), (63, 127)] {
            let err = check_parameters(m, n).unwrap_err();
            assert!(matches!(err, ThresholdError::NotMajority { .. }), "{m}-of-{n}");
            let text = err.to_string();
            assert!(text.contains("two disjoint groups"), "{text}");
            assert!(text.contains("double signature"), "{text}");
        }
        assert!(check_parameters(2, 4)
            .unwrap_err()
            .to_string()
            .contains("at least 3 of 4"));
        assert!(matches!(
            check_parameters(0, 3),
            Err(ThresholdError::ThresholdRange { .. })
        ));
        assert!(matches!(
            check_parameters(4, 3),
            Err(ThresholdError::ThresholdRange { .. })
        ));
        assert!(matches!(
            check_parameters(100, 128),
            Err(ThresholdError::ShareCount(128))
        ));
        assert!(matches!(
            check_parameters(0, 0),
            Err(ThresholdError::ShareCount(0))
        ));
    }

    #[test]
    fn split_follows_octezs_rules() {
        let sk = SecretKey::generate(Curve::Bls);
        assert_eq!(split(&sk, 3, 1).unwrap_err(), ThresholdError::ThresholdOne);
        assert!(matches!(
            split(&sk, 3, 4),
            Err(ThresholdError::ThresholdRange { .. })
        ));
        assert!(matches!(
            split(&sk, 128, 64),
            Err(ThresholdError::ShareCount(128))
        ));
        // Octez allows M <= N/2 in the split itself; the majority rule is the deployment's.
        assert!(split(&sk, 5, 2).is_ok());
        let ed = SecretKey::generate(Curve::Ed25519);
        assert!(matches!(
            split(&ed, 3, 2),
            Err(ThresholdError::NotBls {
                curve: Curve::Ed25519,
                ..
            })
        ));
        // Ids 1..=N in order, every share distinct, none equal to the key.
        let set = split(&sk, 4, 3).unwrap();
        let ids: Vec<u8> = set.shares().iter().map(|s| s.id.get()).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        let pks: HashSet<_> = set.shares().iter().map(|s| s.public_key()).collect();
        assert_eq!(pks.len(), 4);
        assert!(!pks.contains(sk.public_key()));
        // Two splits of one key use different random polynomials.
        assert_ne!(
            split(&sk, 4, 3).unwrap().shares()[0].public_key(),
            set.shares()[0].public_key()
        );
        assert!(!format!("{set:?}").contains(set.shares()[0].to_b58().as_str()));
    }

    #[test]
    fn share_set_json_has_octezs_fields_and_parses_back() {
        let sk = SecretKey::generate(Curve::Bls);
        let set = split(&sk, 5, 3).unwrap();
        let json = serde_json::to_value(&set).unwrap();
        let obj = json.as_object().unwrap();
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4);
        for k in ["public_key", "public_key_hash", "proof", "secret_shares"] {
            assert!(obj.contains_key(k), "{k}");
        }
        assert_eq!(json["public_key"], sk.public_key().to_string());
        assert_eq!(json["public_key_hash"], sk.public_key().hash().to_string());
        assert!(json["proof"].as_str().unwrap().starts_with("BLsig"));
        // The proof is the group key's proof of possession, as `create bls proof for` makes it.
        assert_eq!(json["proof"], sk.bls_prove_possession(None).unwrap().to_string());
        let shares = json["secret_shares"].as_array().unwrap();
        assert_eq!(shares.len(), 5);
        assert_eq!(shares[0]["id"], 1);
        assert!(shares[0]["secret_key"].as_str().unwrap().starts_with("BLsk"));

        let text = serde_json::to_string_pretty(&set).unwrap();
        let back: ShareSet = serde_json::from_str(&text).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
        assert_eq!(back.threshold(), 3);
        assert_eq!(back.share_count(), 5);
        assert_eq!(back.share_public_keys(), set.share_public_keys());
        // With N = M the threshold cannot be told from the shares: it is N.
        let full: ShareSet =
            serde_json::from_value(serde_json::to_value(split(&sk, 3, 3).unwrap()).unwrap()).unwrap();
        assert_eq!(full.threshold(), 3);
        let two: ShareSet =
            serde_json::from_value(serde_json::to_value(split(&sk, 7, 2).unwrap()).unwrap()).unwrap();
        assert_eq!(two.threshold(), 2);
    }

    #[test]
    fn share_set_json_is_checked_field_by_field() {
        let sk = SecretKey::generate(Curve::Bls);
        let set = split(&sk, 3, 2).unwrap();
        let good = serde_json::to_value(&set).unwrap();
        let parse =
            |v: &serde_json::Value| serde_json::from_value::<ShareSet>(v.clone()).map_err(|e| e.to_string());
        assert!(parse(&good).is_ok());
        let other = SecretKey::generate(Curve::Bls);
        type Change<'a> = Box<dyn Fn(&mut serde_json::Value) + 'a>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "is not the hash",
                Box::new(|v| v["public_key_hash"] = other.public_key().hash().to_string().into()),
            ),
            (
                "proof",
                Box::new(|v| v["proof"] = other.bls_prove_possession(None).unwrap().to_string().into()),
            ),
            (
                "interpolate to another key",
                Box::new(|v| v["public_key"] = other.public_key().to_string().into()),
            ),
            (
                "appears twice",
                Box::new(|v| v["secret_shares"][1]["id"] = 1.into()),
            ),
            (
                "out of range",
                Box::new(|v| v["secret_shares"][0]["id"] = 0.into()),
            ),
            (
                "out of range",
                Box::new(|v| v["secret_shares"][0]["id"] = 300.into()),
            ),
            (
                "interpolate to another key",
                Box::new(|v| v["secret_shares"][0]["id"] = 4.into()),
            ),
            (
                "secret_shares is empty",
                Box::new(|v| v["secret_shares"] = serde_json::json!([])),
            ),
            ("unknown field", Box::new(|v| v["threshold"] = 2.into())),
            (
                "missing field",
                Box::new(|v| _ = v.as_object_mut().unwrap().remove("proof")),
            ),
            (
                "tz4 (BLS12-381)",
                Box::new(|v| {
                    v["secret_shares"][0]["secret_key"] =
                        SecretKey::generate(Curve::Ed25519).to_b58().as_str().into()
                }),
            ),
        ];
        for (expected, change) in cases {
            let mut v = good.clone();
            // The "public_key" case must keep hash and proof consistent to reach the share check.
            change(&mut v);
            if v["public_key"] != good["public_key"] {
                v["public_key_hash"] = other.public_key().hash().to_string().into();
                v["proof"] = other.bls_prove_possession(None).unwrap().to_string().into();
            }
            let err = parse(&v).unwrap_err();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }
}
