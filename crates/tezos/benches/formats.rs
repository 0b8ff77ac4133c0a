//! Criterion micro-benchmarks of the formats on the request path: payload classification, base58check
//! encoding and decoding, signing and verifying per curve (BLAKE2b included, as Tezos signs the digest),
//! and the ECDSA implementations side by side: the pure-Rust `p256`/`k256` crates, OpenSSL (libcrypto) on the
//! same digest, and ring's P-256 assembly (which hashes with SHA-256 itself, so it cannot sign Tezos's
//! BLAKE2b digests: a speed reference only), and a P-256 file key's signature made the old way (OpenSSL, random
//! nonce), tzkms's way (RFC 6979, k·G by OpenSSL) and p256's way. `cargo bench -p tezos --bench formats`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use tezos::builder::{BlockPayload, ConsensusPayload};
use tezos::{classify, BlsScheme, ConsensusKind, Curve, PublicKeyHash, SecretKey, Signature};

fn attestation(curve: Curve) -> Vec<u8> {
    ConsensusPayload::of(ConsensusKind::Attestation, curve, 1_000_000, 0)
        .branch([7; 32])
        .slot(3)
        .payload_hash([9; 32])
        .bytes()
}

fn block() -> Vec<u8> {
    BlockPayload::new(1_000_000, 0)
        .predecessor([1; 32])
        .operations_hash([2; 32])
        .context([3; 32])
        .payload_hash([4; 32])
        .bytes()
}

fn classification(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    for (name, bytes) in [
        ("block", block()),
        ("attestation_tz3", attestation(Curve::P256)),
        ("attestation_tz4_bls_mode", attestation(Curve::Bls)),
        ("generic_0x03", {
            let mut b = vec![0x03];
            b.extend_from_slice(&[5; 32 + 60]);
            b
        }),
    ] {
        assert!(classify(&bytes).is_ok(), "{name}");
        g.bench_function(name, |b| b.iter(|| classify(black_box(&bytes))));
    }
    g.finish();
}

fn base58(c: &mut Criterion) {
    let key = SecretKey::generate(Curve::P256);
    let pkh = key.public_key().hash();
    let pkh_text = pkh.to_string();
    let signature = key.sign(b"\x03base58", BlsScheme::default()).expect("sign");
    let signature_text = signature.to_string();
    let mut g = c.benchmark_group("base58");
    g.bench_function("encode_tz3", |b| b.iter(|| black_box(&pkh).to_string()));
    g.bench_function("decode_tz3", |b| {
        b.iter(|| black_box(&pkh_text).parse::<PublicKeyHash>())
    });
    g.bench_function("encode_p2sig", |b| b.iter(|| black_box(&signature).to_string()));
    g.bench_function("decode_p2sig", |b| {
        b.iter(|| black_box(&signature_text).parse::<Signature>())
    });
    g.finish();
}

fn sign_and_verify(c: &mut Criterion) {
    let message = attestation(Curve::P256);
    for curve in Curve::ALL {
        let key = SecretKey::generate(curve);
        let signature = key.sign(&message, BlsScheme::default()).expect("sign");
        let mut g = c.benchmark_group(curve.name());
        g.bench_function("sign", |b| {
            b.iter(|| key.sign(black_box(&message), BlsScheme::default()))
        });
        g.bench_function("verify", |b| {
            b.iter(|| {
                key.public_key()
                    .verify(black_box(&message), &signature, BlsScheme::default())
            })
        });
        g.finish();
    }
}

/// The same ECDSA work in each implementation, on a precomputed BLAKE2b-256 digest (ring excepted: it hashes
/// with SHA-256 itself, so it is a speed reference only). `verify_from_bytes` adds what a verification
/// costs when it starts from Tezos's bytes: the compressed public key and the 64-byte `r‖s`.
fn ecdsa_implementations(c: &mut Criterion) {
    use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
    let message = attestation(Curve::P256);
    let digest = tezos::blake2b_256(&message);

    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let signature: p256::ecdsa::Signature = key.sign_prehash(&digest).expect("sign");
    let compressed = key.verifying_key().to_encoded_point(true).as_bytes().to_vec();
    let raw: [u8; 64] = signature.to_bytes().into();
    let mut g = c.benchmark_group("p256_rustcrypto");
    g.bench_function("sign", |b| {
        b.iter(|| -> p256::ecdsa::Signature { key.sign_prehash(black_box(&digest)).expect("sign") })
    });
    g.bench_function("verify", |b| {
        b.iter(|| key.verifying_key().verify_prehash(black_box(&digest), &signature))
    });
    g.bench_function("verify_from_bytes", |b| {
        b.iter(|| {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(black_box(&compressed)).expect("key");
            let sig = p256::ecdsa::Signature::from_slice(&raw).expect("sig");
            key.verify_prehash(&digest, &sig).is_ok()
        })
    });
    g.finish();
    openssl_group(c, "p256_openssl", Nid::X9_62_PRIME256V1, &digest);

    let key = k256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let signature: k256::ecdsa::Signature = key.sign_prehash(&digest).expect("sign");
    let compressed = key.verifying_key().to_encoded_point(true).as_bytes().to_vec();
    let raw: [u8; 64] = signature.to_bytes().into();
    let mut g = c.benchmark_group("secp256k1_rustcrypto");
    g.bench_function("sign", |b| {
        b.iter(|| -> k256::ecdsa::Signature { key.sign_prehash(black_box(&digest)).expect("sign") })
    });
    g.bench_function("verify", |b| {
        b.iter(|| key.verifying_key().verify_prehash(black_box(&digest), &signature))
    });
    g.bench_function("verify_from_bytes", |b| {
        b.iter(|| {
            let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(black_box(&compressed)).expect("key");
            let sig = k256::ecdsa::Signature::from_slice(&raw).expect("sig");
            key.verify_prehash(&digest, &sig).is_ok()
        })
    });
    g.finish();
    openssl_group(c, "secp256k1_openssl", Nid::SECP256K1, &digest);

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("ring key");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("ring key");
    let signature = pair.sign(&rng, &message).expect("ring sign");
    let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref().to_vec());
    let mut g = c.benchmark_group("p256_ring_asm_sha256");
    g.bench_function("sign", |b| b.iter(|| pair.sign(&rng, black_box(&message))));
    g.bench_function("verify", |b| {
        b.iter(|| public.verify(black_box(&message), signature.as_ref()))
    });
    g.finish();
}

/// OpenSSL's ECDSA on a digest (random nonce), and verification from parsed or from Tezos's bytes.
fn openssl_group(c: &mut Criterion, name: &str, curve: Nid, digest: &[u8; 32]) {
    let group = EcGroup::from_curve_name(curve).expect("group");
    let key = EcKey::generate(&group).expect("key");
    let signature = EcdsaSig::sign(digest, &key).expect("sign");
    let mut ctx = BigNumContext::new().expect("ctx");
    let compressed = key
        .public_key()
        .to_bytes(&group, PointConversionForm::COMPRESSED, &mut ctx)
        .expect("point");
    let uncompressed = key
        .public_key()
        .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
        .expect("point");
    let mut raw = signature.r().to_vec_padded(32).expect("r");
    raw.extend(signature.s().to_vec_padded(32).expect("s"));
    let from_bytes = |point: &[u8], ctx: &mut BigNumContext| {
        let point = EcPoint::from_bytes(&group, point, ctx).expect("point");
        let key = EcKey::from_public_key(&group, &point).expect("key");
        let sig = EcdsaSig::from_private_components(
            BigNum::from_slice(&raw[..32]).expect("r"),
            BigNum::from_slice(&raw[32..]).expect("s"),
        )
        .expect("sig");
        sig.verify(digest, &key).expect("verify")
    };
    let mut g = c.benchmark_group(name);
    g.bench_function("sign", |b| b.iter(|| EcdsaSig::sign(black_box(digest), &key)));
    g.bench_function("verify", |b| b.iter(|| signature.verify(black_box(digest), &key)));
    g.bench_function("verify_from_bytes", |b| {
        b.iter(|| from_bytes(black_box(&compressed), &mut ctx))
    });
    g.bench_function("verify_from_uncompressed_bytes", |b| {
        b.iter(|| from_bytes(black_box(&uncompressed), &mut ctx))
    });
    g.finish();
}

/// One P-256 file-key signature three ways, same key, same message, BLAKE2b-256 and low S included in each:
/// OpenSSL with a random nonce (tzkms until RFC 6979 came back), tzkms now (RFC 6979 nonce and scalar
/// arithmetic in Rust, k·G by OpenSSL), and the pure-Rust `p256` RFC 6979 signer.
fn p256_file_key_signing(c: &mut Criterion) {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    let message = attestation(Curve::P256);
    let key = SecretKey::generate(Curve::P256);
    let raw = key.to_raw();
    let rust = p256::ecdsa::SigningKey::from_slice(raw.as_ref()).expect("p256 key");
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
    let mut ctx = BigNumContext::new().expect("ctx");
    let point = EcPoint::from_bytes(
        &group,
        rust.verifying_key().to_encoded_point(false).as_bytes(),
        &mut ctx,
    )
    .expect("point");
    let openssl_key =
        EcKey::from_private_components(&group, &BigNum::from_slice(raw.as_ref()).expect("d"), &point)
            .expect("OpenSSL key");
    let mut g = c.benchmark_group("p256_file_key_sign");
    g.bench_function("openssl_random_nonce", |b| {
        b.iter(|| {
            let sig = EcdsaSig::sign(&tezos::blake2b_256(black_box(&message)), &openssl_key).expect("sign");
            let mut out = [0u8; 64];
            out[..32].copy_from_slice(&sig.r().to_vec_padded(32).expect("r"));
            out[32..].copy_from_slice(&sig.s().to_vec_padded(32).expect("s"));
            let sig = p256::ecdsa::Signature::from_slice(&out).expect("sig");
            sig.normalize_s().unwrap_or(sig)
        })
    });
    g.bench_function("rfc6979_openssl_kg", |b| {
        b.iter(|| key.sign(black_box(&message), BlsScheme::default()))
    });
    g.bench_function("rfc6979_p256_pure_rust", |b| {
        b.iter(|| {
            let sig: p256::ecdsa::Signature = rust
                .sign_prehash(&tezos::blake2b_256(black_box(&message)))
                .expect("sign");
            sig.normalize_s().unwrap_or(sig)
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    classification,
    base58,
    sign_and_verify,
    ecdsa_implementations,
    p256_file_key_signing
);
criterion_main!(benches);
