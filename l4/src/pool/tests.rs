//! Pool snapshots: candidate order, fail-open, ejection, inheritance, slow start.

use super::*;

fn spec(port: u16, weight: u32) -> BackendSpec {
    BackendSpec {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        weight: NonZeroU32::new(weight).unwrap_or(NonZeroU32::MIN),
    }
}

#[test]
fn candidates_start_at_pick_and_wrap() {
    let pool = Pool::new(
        "p",
        Algorithm::RoundRobin,
        &[spec(1, 1), spec(2, 1), spec(3, 1)],
    );
    let ctx = Context::default();
    let ports =
        |pool: &Pool| -> Vec<u16> { pool.candidates(&ctx).map(|b| b.addr().port()).collect() };
    assert_eq!(ports(&pool), vec![1, 2, 3]);
    assert_eq!(ports(&pool), vec![2, 3, 1]);
    assert_eq!(ports(&pool), vec![3, 1, 2]);
}

#[test]
fn empty_pool_has_no_candidates() {
    let pool = Pool::new("p", Algorithm::LeastConn, &[]);
    assert_eq!(pool.candidates(&Context::default()).count(), 0);
}

#[test]
fn fails_open_when_every_backend_is_down() {
    let pool = Pool::new("p", Algorithm::RoundRobin, &[spec(1, 1), spec(2, 1)]);
    for b in pool.backends() {
        b.set_healthy(false);
    }
    assert_eq!(pool.candidates(&Context::default()).count(), 2);
    let closed = Pool::new("p", Algorithm::RoundRobin, &[spec(1, 1)]).with_policy(Policy {
        fail_open: false,
        ..Policy::default()
    });
    closed.backends()[0].set_healthy(false);
    assert_eq!(closed.candidates(&Context::default()).count(), 0);
}

#[test]
fn connect_failures_in_a_row_eject_with_growing_backoff() {
    let policy = Policy {
        fail_open: false,
        eject_after: 3,
        eject_time: Duration::from_secs(10),
        slow_start: Duration::ZERO,
        ..Policy::default()
    };
    let pool = Pool::new("p", Algorithm::RoundRobin, &[spec(1, 1), spec(2, 1)]).with_policy(policy);
    let b = &pool.backends()[0];
    assert_eq!(pool.record_connect_error(b), None);
    assert_eq!(pool.record_connect_error(b), None);
    // A success in between resets the count.
    pool.record_connected(b, Duration::ZERO);
    assert_eq!(pool.record_connect_error(b), None);
    assert_eq!(pool.record_connect_error(b), None);
    assert_eq!(pool.record_connect_error(b), Some(Duration::from_secs(10)));
    assert!(b.is_ejected() && !b.is_up());
    let order: Vec<u16> = pool
        .candidates(&Context::default())
        .map(|b| b.addr().port())
        .collect();
    assert_eq!(order, vec![2]);
    // A passing active check brings it back early; the next ejection lasts longer.
    b.set_healthy(true);
    assert!(b.is_up());
    for _ in 0..2 {
        assert_eq!(pool.record_connect_error(b), None);
    }
    assert_eq!(pool.record_connect_error(b), Some(Duration::from_secs(20)));
    assert_eq!(b.connect_errors(), 8);
}

#[test]
fn ejection_never_takes_more_than_max_ejection_percent() {
    let specs: Vec<BackendSpec> = (1..=4).map(|p| spec(p, 1)).collect();
    let pool = Pool::new("p", Algorithm::RoundRobin, &specs).with_policy(Policy {
        eject_after: 1,
        eject_after_5xx: 2,
        max_ejection_percent: 50,
        ..Policy::default()
    });
    let [a, b, c, d] = pool.backends() else {
        panic!("four backends")
    };
    assert!(pool.record_connect_error(a).is_some());
    // 5xx in a row count apart from connect failures, and a good answer resets them.
    assert!(pool.record_response(b, true).is_none());
    assert!(pool.record_response(b, false).is_none());
    assert!(pool.record_response(b, true).is_none());
    assert!(pool.record_response(b, true).is_some());
    // Half the pool is out: the rest stays in, however it fails.
    assert!(pool.record_connect_error(c).is_none());
    assert!(pool.record_response(d, true).is_none());
    assert!(pool.record_response(d, true).is_none());
    assert_eq!(pool.backends().iter().filter(|x| x.is_ejected()).count(), 2);
    // One backend can always be ejected, and 0% means never.
    let one = Pool::new("p", Algorithm::RoundRobin, &specs[..1]).with_policy(Policy {
        eject_after: 1,
        max_ejection_percent: 10,
        ..Policy::default()
    });
    assert!(one.record_connect_error(&one.backends()[0]).is_some());
    let never = Pool::new("p", Algorithm::RoundRobin, &specs).with_policy(Policy {
        eject_after: 1,
        max_ejection_percent: 0,
        ..Policy::default()
    });
    assert!(never.record_connect_error(&never.backends()[0]).is_none());
}

#[test]
fn a_rebuilt_pool_inherits_state_by_address() {
    let old = Pool::new("p", Algorithm::LeastConn, &[spec(1, 1), spec(2, 1)]);
    let _live = old.backends()[1].track();
    old.backends()[1].set_healthy(false);
    let new = Pool::new("p", Algorithm::RoundRobin, &[spec(2, 5), spec(3, 1)]).inherit(&old);
    let kept = &new.backends()[0];
    assert_eq!(
        (kept.active(), kept.is_healthy(), kept.weight()),
        (1, false, 5)
    );
    assert_eq!(new.backends()[1].active(), 0);
}

#[test]
fn active_guard_counts() {
    let pool = Pool::new("p", Algorithm::LeastConn, &[spec(1, 1)]);
    let b = &pool.backends()[0];
    let g1 = b.track();
    let g2 = b.track();
    assert_eq!(b.active(), 2);
    drop(g1);
    assert_eq!(b.active(), 1);
    drop(g2);
    assert_eq!(b.active(), 0);
}

#[derive(Debug, Default)]
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A manual clock, and pool options and policy with a 10 s slow start.
fn slow_start_setup() -> (Arc<ManualClock>, Options, Policy) {
    let clock = Arc::new(ManualClock::default());
    let options = Options {
        seed: 7,
        clock: clock.clone(),
    };
    let policy = Policy {
        slow_start: Duration::from_secs(10),
        ..Policy::default()
    };
    (clock, options, policy)
}

#[test]
fn slow_start_ramps_a_backend_that_comes_back() {
    let (clock, options, policy) = slow_start_setup();
    let pool = Pool::with_options(
        "p",
        Algorithm::RoundRobin,
        &[spec(1, 1), spec(2, 1)],
        &options,
    )
    .with_policy(policy);
    // Backends there from the start serve fully at once.
    assert_eq!(pool.ramp(&pool.backends()[1]), 1.0);
    let b = &pool.backends()[1];
    pool.set_healthy(b, false);
    clock.0.store(1_000_000_000, Ordering::Relaxed);
    pool.set_healthy(b, true);
    let share = |pool: &Pool| {
        let picks = (0..20_000)
            .filter(|_| {
                pool.candidates(&Context::default())
                    .next()
                    .map(|b| b.addr().port())
                    == Some(2)
            })
            .count();
        picks as f64 / 20_000.0
    };
    let mut shares = Vec::new();
    for secs in [1, 4, 7, 11, 30] {
        clock.0.store(secs * 1_000_000_000, Ordering::Relaxed);
        shares.push(share(&pool));
    }
    // Round robin gives it half; slow start scales that by the ramp (10% floor).
    assert!(shares[0] < 0.1, "{shares:?}");
    assert!(
        shares.windows(2).all(|w| w[0] < w[1] + 0.01),
        "ramps up: {shares:?}"
    );
    assert!(
        (shares[3] - 0.5).abs() < 0.02 && (shares[4] - 0.5).abs() < 0.02,
        "{shares:?}"
    );
    assert!((pool.ramp(b) - 1.0).abs() < f64::EPSILON);
}

#[test]
fn a_backend_added_by_reload_slow_starts() {
    let (clock, options, policy) = slow_start_setup();
    let old =
        Pool::with_options("p", Algorithm::RoundRobin, &[spec(1, 1)], &options).with_policy(policy);
    clock.0.store(5_000_000_000, Ordering::Relaxed);
    let new = Pool::with_options(
        "p",
        Algorithm::RoundRobin,
        &[spec(1, 1), spec(2, 1)],
        &options,
    )
    .with_policy(policy)
    .inherit(&old);
    assert_eq!(new.ramp(&new.backends()[0]), 1.0);
    assert!((new.ramp(&new.backends()[1]) - SLOW_START_FLOOR).abs() < 1e-9);
    clock.0.store(10_000_000_000, Ordering::Relaxed);
    assert!((new.ramp(&new.backends()[1]) - 0.5).abs() < 1e-9);
}

#[tokio::test]
async fn retiring_a_backend_wakes_its_connections() {
    let old = Pool::new("p", Algorithm::RoundRobin, &[spec(1, 1), spec(2, 1)]);
    let new = Pool::new("p", Algorithm::RoundRobin, &[spec(2, 1)]).inherit(&old);
    let removed: Vec<u16> = old
        .removed_in(Some(&new))
        .map(|b| b.addr().port())
        .collect();
    assert_eq!(removed, vec![1]);
    let waiting = tokio::spawn(old.backends()[0].retired());
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    old.backends()[0].retire();
    assert!(tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .is_ok());
}
