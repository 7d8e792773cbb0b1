//! Balancer properties: weights honoured, down backends skipped, p2c and ewma
//! behave as their papers say. Seeds and the clock are fixed, so runs repeat.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::pool::{BackendSpec, Pool};

#[derive(Debug, Default)]
pub(crate) struct FakeClock(AtomicU64);

impl FakeClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Clock for FakeClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub(crate) fn specs(weights: &[u32]) -> Vec<BackendSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| BackendSpec {
            addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)),
            weight: NonZeroU32::new(w).unwrap_or(NonZeroU32::MIN),
        })
        .collect()
}

fn pool(algorithm: Algorithm, weights: &[u32], clock: Arc<dyn Clock>) -> Pool {
    // Failing closed, so that "all down" means no candidates here.
    let policy = crate::pool::Policy {
        fail_open: false,
        ..Default::default()
    };
    Pool::with_options(
        "t",
        algorithm,
        &specs(weights),
        &Options { seed: 42, clock },
    )
    .with_policy(policy)
}

fn index(pool: &Pool, ctx: &Context) -> Option<usize> {
    let first = pool.candidates(ctx).next()?;
    pool.backends()
        .iter()
        .position(|b| b.addr() == first.addr())
}

fn client(i: u32) -> Context {
    Context {
        client: Some(SocketAddr::from((i.to_be_bytes(), 40000))),
        key: None,
    }
}

/// Shares of `picks` per backend.
fn shares(counts: &[u32]) -> Vec<f64> {
    let total: u32 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| f64::from(c) / f64::from(total))
        .collect()
}

fn assert_within(counts: &[u32], weights: &[u32], tolerance: f64) {
    let total: u32 = weights.iter().sum();
    for (i, share) in shares(counts).into_iter().enumerate() {
        let want = f64::from(weights[i]) / f64::from(total);
        assert!(
            (share - want).abs() <= tolerance,
            "backend {i}: {share:.4} vs {want:.4} ({counts:?})"
        );
    }
}

const N: u32 = 100_000;
const WEIGHTS: [u32; 3] = [5, 3, 2];

#[test]
fn round_robin_weights_exact() {
    let p = pool(Algorithm::RoundRobin, &WEIGHTS, Arc::new(SystemClock));
    let mut counts = [0u32; 3];
    for _ in 0..N {
        counts[index(&p, &Context::default()).unwrap_or(9)] += 1;
    }
    assert_eq!(counts, [50_000, 30_000, 20_000]);
}

#[test]
fn random_weights_within_2_percent() {
    let p = pool(Algorithm::Random, &WEIGHTS, Arc::new(SystemClock));
    let mut counts = [0u32; 3];
    for _ in 0..N {
        counts[index(&p, &Context::default()).unwrap_or(9)] += 1;
    }
    assert_within(&counts, &WEIGHTS, 0.02);
}

#[test]
fn least_conn_weights_under_equal_load() {
    // Every pick stays connected: least-conn keeps active/weight level, so the
    // connections split by weight.
    let p = pool(Algorithm::LeastConn, &WEIGHTS, Arc::new(SystemClock));
    let mut held = Vec::new();
    for _ in 0..N {
        let b = p.candidates(&Context::default()).next().map(|b| b.track());
        held.extend(b);
    }
    let counts: Vec<u32> = p.backends().iter().map(|b| b.active()).collect();
    assert_within(&counts, &WEIGHTS, 0.02);
}

#[test]
fn hash_weights_within_2_percent_over_distinct_keys() {
    let p = pool(
        Algorithm::Hash(HashKey::SourceIp),
        &WEIGHTS,
        Arc::new(SystemClock),
    );
    let mut counts = [0u32; 3];
    for i in 0..N {
        counts[index(&p, &client(0x0a00_0000 + i)).unwrap_or(9)] += 1;
    }
    assert_within(&counts, &WEIGHTS, 0.02);
}

#[test]
fn hash_keeps_a_client_on_one_backend() {
    let p = pool(
        Algorithm::Hash(HashKey::SourceIp),
        &[1, 1, 1],
        Arc::new(SystemClock),
    );
    for i in 0..1000 {
        let ip = client(0x0a00_0000 + i).client;
        let a = index(
            &p,
            &Context {
                client: ip,
                key: None,
            },
        );
        let other_port = ip.map(|a| SocketAddr::new(a.ip(), 1234));
        assert_eq!(
            a,
            index(
                &p,
                &Context {
                    client: other_port,
                    key: None
                }
            ),
            "source-ip ignores the port"
        );
    }
}

#[test]
fn p2c_never_picks_the_most_loaded() {
    let p = pool(Algorithm::P2c, &[1, 1, 1, 1], Arc::new(SystemClock));
    let b = p.backends();
    let _load: Vec<_> = [(0, 10), (1, 3), (3, 5)]
        .into_iter()
        .flat_map(|(i, n)| (0..n).map(move |_| b[i].track()))
        .collect();
    let mut counts = [0u32; 4];
    for _ in 0..10_000 {
        counts[index(&p, &Context::default()).unwrap_or(9)] += 1;
    }
    assert_eq!(counts[0], 0, "{counts:?}");
    assert!(
        counts[2] > counts[1] && counts[1] > counts[3],
        "lighter wins more often: {counts:?}"
    );
}

#[test]
fn p2c_honours_weights_when_idle() {
    let p = pool(Algorithm::P2c, &[1, 3], Arc::new(SystemClock));
    let mut counts = [0u32; 2];
    for _ in 0..10_000 {
        counts[index(&p, &Context::default()).unwrap_or(9)] += 1;
    }
    assert!(counts[1] > 2 * counts[0], "{counts:?}");
}

#[test]
fn ewma_moves_traffic_away_from_a_slow_backend_and_probes_it_later() {
    let clock = Arc::new(FakeClock::default());
    let p = pool(Algorithm::Ewma, &[1, 1, 1], clock.clone());
    let b = p.backends();
    let ms = Duration::from_millis(1);
    for _ in 0..5 {
        p.record_connected(&b[0], ms);
        p.record_connected(&b[1], ms);
        p.record_connected(&b[2], ms * 10);
        clock.advance(Duration::from_millis(100));
    }
    let count = |p: &Pool| {
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            counts[index(p, &Context::default()).unwrap_or(9)] += 1;
        }
        counts
    };
    let slow = count(&p);
    assert!(
        slow[2] < 100,
        "the 10x slower backend still gets traffic: {slow:?}"
    );
    assert!(slow[0] > 4000 && slow[1] > 4000, "{slow:?}");
    // A minute on, the fast ones were measured again; the slow estimate has decayed
    // below theirs, so the slow backend is tried again.
    clock.advance(Duration::from_secs(60));
    p.record_connected(&b[0], ms);
    p.record_connected(&b[1], ms);
    let later = count(&p);
    assert!(
        later[2] > 3000,
        "slow backend never probed again: {later:?}"
    );
}

#[test]
fn ewma_neither_favours_nor_starves_an_unsampled_backend() {
    let clock = Arc::new(FakeClock::default());
    let p = pool(Algorithm::Ewma, &[1, 1], clock);
    p.record_connected(&p.backends()[0], Duration::from_millis(5));
    let mut counts = [0u32; 2];
    for _ in 0..10_000 {
        counts[index(&p, &Context::default()).unwrap_or(9)] += 1;
    }
    let share = shares(&counts)[1];
    assert!((0.4..=0.6).contains(&share), "{counts:?}");
}

#[test]
fn every_algorithm_skips_down_backends() {
    for algorithm in Algorithm::ALL
        .into_iter()
        .chain([Algorithm::Hash(HashKey::SourceAddr)])
    {
        let p = pool(algorithm, &[1, 5, 1], Arc::new(SystemClock));
        p.backends()[1].set_healthy(false);
        for i in 0..2000 {
            let ctx = client(0x0a00_0000 + i);
            let order: Vec<SocketAddr> = p.candidates(&ctx).map(|b| b.addr()).collect();
            assert_eq!(order.len(), 2, "{algorithm}: {order:?}");
            assert!(
                !order.contains(&p.backends()[1].addr()),
                "{algorithm} picked a down backend"
            );
        }
        p.backends()[0].set_healthy(false);
        p.backends()[2].set_healthy(false);
        assert_eq!(p.candidates(&client(1)).count(), 0, "{algorithm}: all down");
    }
}

#[test]
fn candidates_cover_every_up_backend_once() {
    for algorithm in [
        Algorithm::RoundRobin,
        Algorithm::P2c,
        Algorithm::Hash(HashKey::SourceAddr),
    ] {
        let p = pool(algorithm, &[1, 2, 3, 4, 5], Arc::new(SystemClock));
        for i in 0..200 {
            let mut order: Vec<SocketAddr> = p.candidates(&client(i)).map(|b| b.addr()).collect();
            order.sort();
            order.dedup();
            assert_eq!(order.len(), 5, "{algorithm}");
        }
    }
}

#[test]
fn hash_fallback_is_deterministic() {
    let a = pool(
        Algorithm::Hash(HashKey::SourceIp),
        &[1, 1, 1, 1],
        Arc::new(SystemClock),
    );
    let b = pool(
        Algorithm::Hash(HashKey::SourceIp),
        &[1, 1, 1, 1],
        Arc::new(SystemClock),
    );
    for i in 0..500 {
        let order = |p: &Pool| {
            p.candidates(&client(i))
                .map(|b| b.addr())
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&a), order(&b));
    }
}

#[test]
fn names_round_trip() {
    for algorithm in Algorithm::ALL {
        assert_eq!(algorithm.name().parse::<Algorithm>(), Ok(algorithm));
    }
    assert!("fastest".parse::<Algorithm>().is_err());
}
