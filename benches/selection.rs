//! Cost of one backend pick per algorithm with 3, 30 and 300 backends, and of
//! building a Maglev table for 10 and 1000 backends.
//!
//! `cargo bench --bench selection`

use std::hint::black_box;
use std::net::SocketAddr;
use std::num::NonZeroU32;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fulcrum_l4::balance::{Context, Options, TABLE_SIZE};
use fulcrum_l4::{Algorithm, BackendSpec, HashKey, Pool};

fn specs(n: u16) -> Vec<BackendSpec> {
    (0..n)
        .map(|i| BackendSpec {
            addr: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80)),
            weight: NonZeroU32::new(u32::from(i % 3) + 1).unwrap_or(NonZeroU32::MIN),
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    for algorithm in Algorithm::ALL {
        let mut group = c.benchmark_group(format!("pick/{}", algorithm.name()));
        for n in [3u16, 30, 300] {
            let pool = Pool::with_options("bench", algorithm, &specs(n), &Options::default());
            let mut i = 0u32;
            group.bench_with_input(BenchmarkId::from_parameter(n), &pool, |b, pool| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let ctx = Context {
                        client: Some(SocketAddr::from((i.to_be_bytes(), 40000))),
                        key: None,
                    };
                    black_box(pool.candidates(&ctx).next().map(|b| b.addr()))
                })
            });
        }
        group.finish();
    }
}

fn maglev_build(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("maglev_build/{TABLE_SIZE}"));
    group.sample_size(20);
    for n in [10u16, 1000] {
        let specs = specs(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &specs, |b, specs| {
            b.iter(|| {
                black_box(Pool::new(
                    "bench",
                    Algorithm::Hash(HashKey::SourceIp),
                    specs,
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pick, maglev_build);
criterion_main!(benches);
