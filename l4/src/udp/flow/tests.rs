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
    let id = t.insert(addr(1), 7, 0).expect("room");
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
    let a = t.insert(addr(1), 1, 0).expect("room");
    assert!(t.insert(addr(2), 2, 10 * S).is_ok());
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
    assert!(t.insert(addr(1), 1, 0).is_ok());
    for s in 1..100 {
        assert!(t.touch_client(addr(1), s * 20 * S).is_some());
        assert!(t.expire(s * 20 * S).is_empty());
    }
}

#[test]
fn responses_limit_ends_the_flow() {
    let mut t = table(1, 10);
    let id = t.insert(addr(1), 9, 0).expect("room");
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
    let id = t.insert(addr(1), 9, 0).expect("room");
    t.touch_client(addr(1), 1);
    t.touch_client(addr(1), 2);
    assert!(matches!(t.reply(id, 3), Some((_, None))));
    assert!(matches!(t.reply(id, 4), Some((_, None))));
    assert!(matches!(t.reply(id, 5), Some((_, Some(_)))));
    assert!(t.is_empty());
}

#[test]
fn full_table_evicts_the_least_recently_active_which_lingers() {
    let mut t = table(0, 3);
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(t.insert(addr(i), i, u64::from(i) * S).expect("room"));
    }
    t.touch_client(addr(1), 10 * S);
    assert!(t.insert(addr(4), 4, 11 * S).is_ok());
    assert_eq!((t.active(), t.lingering()), (3, 1));
    // Client 2's next datagram starts a new flow, but a late reply on its old flow
    // still goes to client 2, and no one else.
    assert!(t.touch_client(addr(2), 12 * S).is_none());
    assert_eq!(t.reply(ids[1], 12 * S), Some((addr(2), None)));
    // Two more evictions fill the lingering room; then new flows are refused
    // rather than a lingering one cut.
    assert!(t.insert(addr(5), 5, 13 * S).is_ok());
    assert!(t.insert(addr(6), 6, 14 * S).is_ok());
    assert_eq!((t.active(), t.lingering()), (3, 3));
    assert!(t.is_full());
    assert_eq!(t.insert(addr(7), 7, 15 * S), Err(7));
    // Lingering flows end when they idle out, as evicted.
    let gone = t.expire(50 * S);
    let lingered: Vec<_> = gone
        .iter()
        .filter(|e| e.why == EndReason::Evicted)
        .map(|e| e.value)
        .collect();
    assert_eq!(lingered.len(), 3);
    assert!(lingered.contains(&2));
    assert!(t.insert(addr(7), 7, 50 * S).is_ok());
}

#[test]
fn a_lingering_flow_ends_with_its_replies() {
    let mut t = table(1, 1);
    let a = t.insert(addr(1), 1, 0).expect("room");
    assert!(t.insert(addr(2), 2, S).is_ok());
    assert_eq!(t.lingering(), 1);
    let (client, ended) = t.reply(a, 2 * S).expect("lingering flow");
    assert_eq!(client, addr(1));
    assert_eq!(
        ended.map(|e| (e.value, e.why)),
        Some((1, EndReason::Responses))
    );
    assert_eq!((t.active(), t.lingering()), (1, 0));
}

#[test]
fn stale_ids_do_nothing_after_slot_reuse() {
    let mut t = table(0, 10);
    let old = t.insert(addr(1), 1, 0).expect("room");
    assert_eq!(t.remove(old).map(|e| e.value), Some(1));
    let new = t.insert(addr(2), 2, S).expect("room");
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
        let id = match t.insert(client, i, now) {
            Ok(id) => id,
            Err(refused) => {
                out[refused as usize] += 1;
                continue;
            }
        };
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
