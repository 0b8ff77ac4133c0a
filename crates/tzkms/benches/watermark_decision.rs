//! Criterion micro-benchmarks of the watermark: the decision for one request against its mark (Octez's
//! rule), and the encoding of the whole store that every durable batch rewrites (its cost grows with the
//! number of keys). `cargo bench -p tzkms --bench watermark_decision`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tezos::{BlsScheme, ChainId, ConsensusKind, Curve, Level, Round, SecretKey};
use tzkms::watermark::interchange::{self, Marks};
use tzkms::watermark::{decide, Mark, MarkKey, MarkRequest};

fn decision(c: &mut Criterion) {
    let key = SecretKey::generate(Curve::P256);
    let signature = key.sign(b"\x13mark", BlsScheme::default()).expect("sign");
    let mark = Mark {
        level: Level(1000),
        round: Round(0),
        hash: [1; 32],
        signature: Some(signature),
    };
    let request = |level, hash| MarkRequest {
        level: Level(level),
        round: Round(0),
        hash: [hash; 32],
    };
    let mut g = c.benchmark_group("watermark_decide");
    g.bench_function("no_mark", |b| {
        b.iter(|| decide(None, black_box(&request(1001, 2))))
    });
    g.bench_function("above", |b| {
        b.iter(|| decide(Some(&mark), black_box(&request(1001, 2))))
    });
    g.bench_function("identical_replay", |b| {
        b.iter(|| decide(Some(&mark), black_box(&request(1000, 1))))
    });
    g.bench_function("below_refused", |b| {
        b.iter(|| decide(Some(&mark), black_box(&request(999, 2))))
    });
    g.finish();
}

fn store_encoding(c: &mut Criterion) {
    let chain: ChainId = "NetXdQprcVkpaWU".parse().expect("chain");
    let mut g = c.benchmark_group("watermark_store_encode");
    g.sample_size(20);
    for delegates in [10usize, 500, 2000] {
        let mut marks = Marks::new();
        for _ in 0..delegates {
            let key = SecretKey::generate(Curve::P256);
            let signature = key.sign(b"\x13mark", BlsScheme::default()).expect("sign");
            for kind in ConsensusKind::ALL {
                marks.insert(
                    MarkKey {
                        chain,
                        pkh: key.public_key().hash(),
                        kind,
                    },
                    Mark {
                        level: Level(1000),
                        round: Round(0),
                        hash: [1; 32],
                        signature: Some(signature),
                    },
                );
            }
        }
        g.bench_with_input(BenchmarkId::from_parameter(delegates), &marks, |b, m| {
            b.iter(|| interchange::encode(black_box(m)))
        });
    }
    g.finish();
}

criterion_group!(benches, decision, store_encoding);
criterion_main!(benches);
