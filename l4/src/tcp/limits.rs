//! `max_connections_per_client`: live connections counted per client IP, shared by
//! a listener's workers and kept across reloads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
pub struct PerClient {
    live: Mutex<HashMap<IpAddr, u32>>,
}

impl PerClient {
    fn live(&self) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        // The map stays consistent whatever panicked while it was held.
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for one more connection from `ip`, unless it already has `limit`.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, limit: u32) -> Option<ClientSlot> {
        let mut live = self.live();
        let count = live.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            table: Arc::clone(self),
            ip,
        })
    }
}

/// One connection's place in its client's count; released on drop.
#[derive(Debug)]
pub struct ClientSlot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut live = self.table.live();
        if let Some(count) = live.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                live.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_ip_and_forgets_idle_clients() {
        let table = Arc::new(PerClient::default());
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = table.acquire(a, 2);
        let second = table.acquire(a, 2);
        assert!(first.is_some() && second.is_some());
        assert!(table.acquire(a, 2).is_none(), "a third from the same IP");
        let other = table.acquire(b, 2);
        assert!(other.is_some(), "another IP has its own count");
        drop(first);
        assert_eq!(table.live().get(&a), Some(&1));
        let again = table.acquire(a, 2);
        assert!(again.is_some(), "a freed slot can be taken again");
        drop((second, again, other));
        assert!(
            table.live().is_empty(),
            "no entry kept for clients with none live"
        );
    }
}
