//! Flow table behaviour with an injected clock.

use super::*;

const S: u64 = 1_000_000_000;

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], i))
}

fn table(responses: u32, max_flows: usize) -> FlowTable<u16> {
    FlowTable::new(Limits {
        idle_ns: 30 * S,
        responses,
        max_flows,
    })
}

#[test]
fn a_client_keeps_its_flow() {
    let mut t = table(0, 10);
    let (id, evicted) = t.insert(addr(1), 7, 0);
    assert!(evicted.is_none());
    for now in [1, 2, 3] {
        let (again, value) = t
            .touch_client(addr(1), now * S)
            .map(|(i, v)| (i, *v))
            .unzip();
        assert_eq!(again, Some(id));
        assert_eq!(value, Some(7));
    }
    assert!(t.touch_client(addr(2), 0).is_none());
}

#[test]
fn idle_flows_expire_and_activity_defers_expiry() {
    let mut t = table(0, 10);
    let (a, _) = t.insert(addr(1), 1, 0);
    t.insert(addr(2), 2, 10 * S);
    assert_eq!(t.next_expiry(), Some(30 * S));
    assert!(t.expire(29 * S).is_empty());
    // A reply is activity too.
    assert!(t.reply(a, 25 * S).is_some());
    let gone = t.expire(41 * S);
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (gone[0].client, gone[0].value, gone[0].why),
        (addr(2), 2, EndReason::Idle)
    );
    let gone = t.expire(55 * S);
    assert_eq!(gone.iter().map(|e| e.value).collect::<Vec<_>>(), vec![1]);
    assert!(t.is_empty());
    assert_eq!(t.next_expiry(), None);
}

#[test]
fn one_way_traffic_keeps_a_flow_alive() {
    let mut t = table(0, 10);
    t.insert(addr(1), 1, 0);
    for s in 1..100 {
        assert!(t.touch_client(addr(1), s * 20 * S).is_some());
        assert!(t.expire(s * 20 * S).is_empty());
    }
}

#[test]
fn responses_limit_ends_the_flow() {
    let mut t = table(1, 10);
    let (id, _) = t.insert(addr(1), 9, 0);
    let (client, ended) = t.reply(id, S).unzip();
    assert_eq!(client, Some(addr(1)));
    let ended = ended.flatten();
    assert_eq!(
        ended.map(|e| (e.value, e.why)),
        Some((9, EndReason::Responses))
    );
    assert!(t.is_empty());
    // A late reply on the ended flow is recognised as stale.
    assert!(t.reply(id, 2 * S).is_none());
    // The client's next datagram starts a new flow.
    assert!(t.touch_client(addr(1), 3 * S).is_none());
}

#[test]
fn responses_count_per_client_datagram() {
    // Three queries in flight on one flow: it ends with the third answer, not the
    // first, so no answer is lost.
    let mut t = table(1, 10);
    let (id, _) = t.insert(addr(1), 9, 0);
    t.touch_client(addr(1), 1);
    t.touch_client(addr(1), 2);
    assert!(matches!(t.reply(id, 3), Some((_, None))));
    assert!(matches!(t.reply(id, 4), Some((_, None))));
    assert!(matches!(t.reply(id, 5), Some((_, Some(_)))));
    assert!(t.is_empty());
}

#[test]
fn full_table_evicts_the_least_recently_active() {
    let mut t = table(0, 3);
    for i in 1..=3 {
        t.insert(addr(i), i, u64::from(i) * S);
    }
    t.touch_client(addr(1), 10 * S);
    let (_, evicted) = t.insert(addr(4), 4, 11 * S);
    let evicted = evicted.map(|e| (e.client, e.value, e.why));
    assert_eq!(evicted, Some((addr(2), 2, EndReason::Evicted)));
    assert_eq!(t.len(), 3);
}

#[test]
fn stale_ids_do_nothing_after_slot_reuse() {
    let mut t = table(0, 10);
    let (old, _) = t.insert(addr(1), 1, 0);
    assert_eq!(t.remove(old).map(|e| e.value), Some(1));
    let (new, _) = t.insert(addr(2), 2, S);
    assert_ne!(old, new);
    assert!(t.remove(old).is_none());
    assert!(t.reply(old, S).is_none());
    assert_eq!(t.len(), 1);
}

#[test]
fn every_value_comes_back_exactly_once() {
    // 10k one-shot clients through a small table: each value leaves exactly once,
    // by eviction, the reply limit or expiry, and nothing stays behind.
    let mut t = FlowTable::new(Limits {
        idle_ns: 5 * S,
        responses: 1,
        max_flows: 100,
    });
    let mut out = vec![0u8; 10_000];
    let mut ids = Vec::new();
    for i in 0..10_000u32 {
        let now = u64::from(i) * S / 100;
        let client = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 53));
        let (id, evicted) = t.insert(client, i, now);
        if let Some(e) = evicted {
            out[e.value as usize] += 1;
        }
        ids.push(id);
        if i % 3 == 0 {
            if let Some((_, Some(e))) = t.reply(id, now) {
                out[e.value as usize] += 1;
            }
        }
        for e in t.expire(now) {
            out[e.value as usize] += 1;
        }
    }
    for e in t.expire(u64::MAX) {
        out[e.value as usize] += 1;
    }
    assert!(t.is_empty());
    assert!(out.iter().all(|&n| n == 1), "a value left twice or never");
}
