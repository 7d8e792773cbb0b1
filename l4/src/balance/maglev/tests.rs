//! Maglev table properties from the paper: balance, minimal disruption, and
//! agreement between independent builds.

use super::*;

fn addrs(n: usize) -> Vec<(SocketAddr, u32)> {
    (0..n)
        .map(|i| {
            (
                SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8 + 1], 8080)),
                1,
            )
        })
        .collect()
}

fn counts(table: &[u32], n: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for &i in table {
        c[i as usize] += 1;
    }
    c
}

#[test]
fn every_slot_is_filled() {
    let t = build(&addrs(7), TABLE_SIZE);
    assert_eq!(t.len(), TABLE_SIZE);
    assert!(t.iter().all(|&i| i < 7));
}

#[test]
fn equal_weights_balance_within_1_percent() {
    for n in [2, 3, 5, 10, 100] {
        let c = counts(&build(&addrs(n), TABLE_SIZE), n);
        let fair = TABLE_SIZE as f64 / n as f64;
        for (i, &k) in c.iter().enumerate() {
            let off = (k as f64 - fair).abs() / fair;
            assert!(off <= 0.01, "n={n} backend {i}: {k} slots vs {fair:.0}");
        }
    }
}

#[test]
fn weights_set_the_share_of_slots() {
    let mut b = addrs(3);
    b[0].1 = 1;
    b[1].1 = 2;
    b[2].1 = 3;
    let c = counts(&build(&b, TABLE_SIZE), 3);
    for (i, want) in [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0].into_iter().enumerate() {
        let share = c[i] as f64 / TABLE_SIZE as f64;
        assert!((share - want).abs() < 0.01, "{c:?}");
    }
}

#[test]
fn removing_one_backend_moves_few_keys() {
    for n in [3, 5, 10, 50] {
        let all = addrs(n);
        let before = build(&all, TABLE_SIZE);
        let removed = n / 2;
        let rest: Vec<_> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != removed)
            .map(|(_, b)| *b)
            .collect();
        let after = build(&rest, TABLE_SIZE);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(&b, &a)| all[b as usize].0 != rest[a as usize].0)
            .count();
        let share = moved as f64 / TABLE_SIZE as f64;
        assert!(
            share <= 1.0 / n as f64 + 0.01,
            "n={n}: {share:.4} of keys moved"
        );
    }
}

#[test]
fn independent_builds_agree() {
    let a = build(&addrs(30), TABLE_SIZE);
    let b = build(&addrs(30), TABLE_SIZE);
    assert!(a == b);
}

#[test]
fn no_backends_no_table() {
    assert!(build(&[], TABLE_SIZE).is_empty());
}
