//! Criterion: the cost of recording one mark in the file watermark store (a reservation and its durable
//! write, fsync included) with 10 and with 20,000 marks already in it. A signature's cost should not grow
//! with the marks. `cargo bench -p tzkms --bench watermark_store`; the store lives under the target
//! directory (a real disk, not a tmpfs).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tezos::{BlsScheme, ChainId, ConsensusKind, Curve, Level, PublicKeyHash, Round, SecretKey};
use tzkms::watermark::file::{self, FileStore};
use tzkms::watermark::interchange::Marks;
use tzkms::watermark::{Begin, Mark, MarkKey, MarkRequest, WatermarkStore};

fn one_mark(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let chain: ChainId = "NetXdQprcVkpaWU".parse().expect("chain");
    let signature = SecretKey::generate(Curve::P256)
        .sign(b"\x12mark", BlsScheme::default())
        .expect("sign");
    let key_of = |i: u32| MarkKey {
        chain,
        pkh: PublicKeyHash::new(
            Curve::P256,
            [&i.to_be_bytes()[..], &[7; 16]]
                .concat()
                .try_into()
                .expect("20 bytes"),
        ),
        kind: ConsensusKind::Preattestation,
    };
    let mut g = c.benchmark_group("watermark_file_one_mark");
    g.sample_size(20);
    for marks_in_store in [10u32, 20_000] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let marks: Marks = (0..marks_in_store)
            .map(|i| {
                let mark = Mark {
                    level: Level(1000),
                    round: Round(0),
                    hash: [1; 32],
                    signature: Some(signature),
                };
                (key_of(i), mark)
            })
            .collect();
        file::write(dir.path(), &marks).expect("write");
        file::mark_initialized(dir.path()).expect("marker");
        let (store, _) = FileStore::open(dir.path()).expect("open");
        let key = key_of(0);
        let mut level = 2000;
        g.bench_with_input(BenchmarkId::from_parameter(marks_in_store), &(), |b, ()| {
            b.iter(|| {
                level += 1;
                let request = MarkRequest {
                    level: Level(level),
                    round: Round(0),
                    hash: [2; 32],
                };
                runtime.block_on(async {
                    let Begin::Sign(ticket) = store.begin(key, request).await.expect("begin") else {
                        panic!("expected to sign")
                    };
                    store.finish(ticket, signature).await.expect("finish");
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, one_mark);
criterion_main!(benches);
