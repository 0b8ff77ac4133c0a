//! Criterion micro-benchmarks of the formats on the request path: payload classification, base58check
//! encoding and decoding, signing and verifying per curve (BLAKE2b included, as Tezos signs the digest),
//! and, for P-256, the pure-Rust `p256` crate beside ring's assembly (which hashes with SHA-256 itself,
//! so it cannot sign Tezos's BLAKE2b digests: a speed reference only). `cargo bench -p tezos --bench formats`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use tezos::{classify, BlsScheme, Curve, PublicKeyHash, SecretKey, Signature};

fn attestation(curve: Curve) -> Vec<u8> {
    let mut b = vec![0x13, 0x7a, 0x06, 0xa7, 0x70];
    b.extend_from_slice(&[7; 32]);
    if curve == Curve::Bls {
        b.push(41);
    } else {
        b.push(21);
        b.extend_from_slice(&3u16.to_be_bytes());
    }
    b.extend_from_slice(&1_000_000u32.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&[9; 32]);
    b
}

fn block() -> Vec<u8> {
    let mut b = vec![0x11, 0x7a, 0x06, 0xa7, 0x70];
    b.extend_from_slice(&1_000_000u32.to_be_bytes());
    b.push(1);
    b.extend_from_slice(&[1; 32]);
    b.extend_from_slice(&1_700_000_000i64.to_be_bytes());
    b.push(4);
    b.extend_from_slice(&[2; 32]);
    b.extend_from_slice(&33u32.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 1, 2, 0, 0, 0, 4]);
    b.extend_from_slice(&1_000_000u32.to_be_bytes());
    b.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 4, 0, 0, 0, 0,
    ]);
    b.extend_from_slice(&[3; 32]);
    b.extend_from_slice(&[4; 32]);
    b.extend_from_slice(&[0; 4 + 8 + 1]);
    b.push(2);
    b
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

fn p256_implementations(c: &mut Criterion) {
    let message = attestation(Curve::P256);
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

criterion_group!(
    benches,
    classification,
    base58,
    sign_and_verify,
    p256_implementations
);
criterion_main!(benches);
