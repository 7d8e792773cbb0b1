//! Fuzzes the UDP flow table with arbitrary operation sequences and checks its
//! invariants: never more active (or lingering) flows than the cap, every value
//! handed back exactly once, a refused insert only when both are full, a reply
//! always addressed to the client its flow was opened for, and expiry never
//! returning a flow that was active within the idle time.
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;

use fulcrum_l4::udp::flow::{FlowId, FlowTable, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&config, ops)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        idle_ns: 1 + u64::from(config & 0x0f) * 10,
        responses: u32::from(config >> 6),
        max_flows: 1 + usize::from((config >> 4) & 0x03) * 3,
    };
    let mut table: FlowTable<u32> = FlowTable::new(limits);
    let mut live: HashMap<u32, SocketAddr> = HashMap::new();
    let mut ids: Vec<(FlowId, SocketAddr)> = Vec::new();
    let mut next_value = 0u32;
    let mut now = 0u64;
    let out = |value: u32, live: &mut HashMap<u32, SocketAddr>| {
        assert!(
            live.remove(&value).is_some(),
            "value {value} left twice or was never in"
        );
    };
    for op in ops.chunks(2) {
        let (kind, arg) = (op[0] % 6, op.get(1).copied().unwrap_or(0));
        let client = SocketAddr::from(([10, 0, 0, arg % 16], 53));
        match kind {
            0 => now += u64::from(arg),
            1 => {
                if table.touch_client(client, now).is_none() {
                    let full = table.is_full();
                    match table.insert(client, next_value, now) {
                        Ok(id) => {
                            assert!(!full, "a flow was let in past a full table");
                            live.insert(next_value, client);
                            ids.push((id, client));
                        }
                        Err(value) => {
                            assert!(full, "a flow was refused with room to spare");
                            assert_eq!(value, next_value);
                        }
                    }
                    next_value += 1;
                }
            }
            2 => {
                if let Some(&(id, opened_for)) = ids.get(usize::from(arg) % ids.len().max(1)) {
                    if let Some((client, ended)) = table.reply(id, now) {
                        assert_eq!(client, opened_for, "a reply went to another client");
                        if let Some(e) = ended {
                            out(e.value, &mut live);
                        }
                    }
                }
            }
            3 => {
                if let Some(&(id, _)) = ids.get(usize::from(arg) % ids.len().max(1)) {
                    if let Some(e) = table.remove(id) {
                        out(e.value, &mut live);
                    }
                }
            }
            4 => {
                for e in table.expire(now) {
                    out(e.value, &mut live);
                }
                if let Some(at) = table.next_expiry() {
                    assert!(at > now, "a flow due by now survived expiry");
                }
            }
            _ => {
                // Time may be given out of order; the table must cope.
                now = now.saturating_sub(u64::from(arg));
            }
        }
        assert!(table.active() <= limits.max_flows);
        assert!(table.lingering() <= limits.max_flows);
        assert_eq!(table.len(), live.len());
    }
    for e in table.expire(u64::MAX) {
        out(e.value, &mut live);
    }
    assert!(table.is_empty() && live.is_empty());
});
