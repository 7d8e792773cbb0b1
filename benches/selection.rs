//! Cost of one backend pick per algorithm, for pools of 3, 30 and 300 backends.
//!
//! `cargo bench --bench selection`

use std::hint::black_box;
use std::net::SocketAddr;
use std::num::NonZeroU32;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fulcrum_l4::balance::Context;
use fulcrum_l4::{Algorithm, BackendSpec, Pool};

fn pool(algorithm: Algorithm, n: u16) -> Pool {
    let specs: Vec<BackendSpec> = (0..n)
        .map(|i| BackendSpec {
            addr: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80)),
            weight: NonZeroU32::new(u32::from(i % 3) + 1).unwrap_or(NonZeroU32::MIN),
        })
        .collect();
    Pool::new("bench", algorithm, &specs)
}

fn pick(c: &mut Criterion) {
    let ctx = Context {
        client: Some(SocketAddr::from(([192, 0, 2, 1], 40000))),
    };
    for algorithm in [Algorithm::RoundRobin, Algorithm::LeastConn] {
        let mut group = c.benchmark_group(format!("pick/{algorithm}"));
        for n in [3u16, 30, 300] {
            let pool = pool(algorithm, n);
            group.bench_with_input(BenchmarkId::from_parameter(n), &pool, |b, pool| {
                b.iter(|| black_box(pool.candidates(black_box(&ctx)).next().map(|b| b.addr())))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, pick);
criterion_main!(benches);
