//! Consistent hashing with Maglev (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, section 3.4), weighted.
//!
//! The lookup table is built once per pool snapshot from the backends' addresses
//! with fixed seeds, so every fulcrum process with the same pool builds the same
//! table and sends a key to the same backend. A down backend's keys fall through
//! to the next table entries, so only that backend's keys move.

use std::net::{IpAddr, SocketAddr};

use super::rng::mix;
use super::{Balance, Context, Fallback, HashKey};
use crate::pool::Backend;

/// The table size: a prime well above the backend count (the paper uses 65537).
pub const TABLE_SIZE: usize = 65_537;

// Fixed seeds: changing them moves every key, so they are part of the contract.
const OFFSET_SEED: u64 = 0x6d61_676c_6576_0001;
const SKIP_SEED: u64 = 0x6d61_676c_6576_0002;
const KEY_SEED: u64 = 0x6d61_676c_6576_0003;

#[derive(Debug)]
pub struct Maglev {
    key: HashKey,
    /// Slot -> backend index.
    table: Box<[u32]>,
}

impl Maglev {
    pub fn new(backends: &[Backend], key: HashKey) -> Self {
        let specs: Vec<(SocketAddr, u32)> =
            backends.iter().map(|b| (b.addr(), b.weight())).collect();
        Maglev {
            key,
            table: build(&specs, TABLE_SIZE).into_boxed_slice(),
        }
    }

    fn slot(&self, ctx: &Context) -> usize {
        let hash = match (ctx.key, self.key, ctx.client) {
            (Some(key), _, _) => mix(key ^ KEY_SEED),
            (None, HashKey::SourceIp | HashKey::Sni, Some(addr)) => hash_ip(addr.ip(), KEY_SEED),
            (None, HashKey::SourceAddr, Some(addr)) => {
                mix(hash_ip(addr.ip(), KEY_SEED) ^ u64::from(addr.port()))
            }
            (None, _, None) => 0,
        };
        (hash % self.table.len() as u64) as usize
    }
}

impl Balance for Maglev {
    fn pick(&self, backends: &[Backend], ctx: &Context) -> Option<usize> {
        let start = self.slot(ctx);
        let n = self.table.len();
        (0..n)
            .map(|k| self.table[(start + k) % n] as usize)
            .find(|&i| backends.get(i).is_some_and(Backend::is_up))
    }

    fn fallback(&self, ctx: &Context) -> Fallback<'_> {
        Fallback::Table {
            table: &self.table,
            start: self.slot(ctx),
        }
    }
}

/// Builds a Maglev lookup table of `size` slots (prime, > backends) for weighted
/// backends identified by address.
///
/// Each backend walks its own permutation `(offset + j * skip) mod size` and claims
/// the next free slot; a backend claims slots in proportion to its weight (each
/// round it earns `weight` credits and spends `max_weight` per slot).
pub fn build(backends: &[(SocketAddr, u32)], size: usize) -> Vec<u32> {
    let mut table = vec![u32::MAX; size];
    if backends.is_empty() {
        return Vec::new();
    }
    let m = size as u64;
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|(addr, _)| {
            let h = hash_addr(addr);
            (mix(h ^ OFFSET_SEED) % m, mix(h ^ SKIP_SEED) % (m - 1) + 1)
        })
        .collect();
    let max_weight = u64::from(backends.iter().map(|b| b.1).max().unwrap_or(1).max(1));
    let mut next = vec![0u64; backends.len()];
    let mut credit = vec![0u64; backends.len()];
    let mut filled = 0;
    while filled < size {
        for (i, &(offset, skip)) in perms.iter().enumerate() {
            credit[i] += u64::from(backends[i].1);
            while credit[i] >= max_weight && filled < size {
                credit[i] -= max_weight;
                let mut slot = ((offset + next[i] * skip) % m) as usize;
                while table[slot] != u32::MAX {
                    next[i] += 1;
                    slot = ((offset + next[i] * skip) % m) as usize;
                }
                table[slot] = i as u32;
                next[i] += 1;
                filled += 1;
            }
        }
    }
    table
}

/// 64-bit FNV-1a (Fowler, Noll, Vo; draft-eastlake-fnv): a stable, specified
/// hash, the same on every build and platform, unlike std's hasher.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn hash_addr(addr: &SocketAddr) -> u64 {
    mix(hash_ip(addr.ip(), 0) ^ u64::from(addr.port()))
}

fn hash_ip(ip: IpAddr, seed: u64) -> u64 {
    let h = match ip {
        IpAddr::V4(v4) => fnv1a(&v4.octets()),
        IpAddr::V6(v6) => fnv1a(&v6.octets()),
    };
    mix(h ^ seed)
}

#[cfg(test)]
mod tests;
