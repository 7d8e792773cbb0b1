//! The UDP flow table as a pure core: client address -> flow, with idle expiry,
//! a reply limit and a size cap that evicts the least recently active flow.
//!
//! An evicted flow leaves the client lookup (the client's next datagram starts a new
//! flow) but lingers until it idles out or gets its replies: its upstream socket
//! stays open and late replies still reach its own client. Closing it at once would
//! free its local port for the kernel to hand to the next flow to the same backend,
//! which would then receive, and relay to another client, replies meant for this
//! one. Lingering flows are capped at `max_flows` too; when both are full a new flow
//! is refused rather than a lingering one cut.
//!
//! No I/O and no clock: time comes in as an argument (ns on any monotonic scale),
//! so it is unit-tested and fuzzed as is. Each flow carries an opaque value `T`
//! (the shell keeps its upstream socket there); whatever leaves the table is handed
//! back to the caller, so nothing can leak silently.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Identifies a live flow. Stale ids (of ended flows) are recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId {
    slot: u32,
    generation: u32,
}

/// How flows end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A flow with no datagram either way for this long ends.
    pub idle_ns: u64,
    /// A flow ends once every client datagram got this many replies (0 = never),
    /// as NGINX's `proxy_responses`: with 1, a DNS flow ends when every query it
    /// carried is answered.
    pub responses: u32,
    /// At most this many active flows; a new one evicts the least recently active,
    /// which lingers (at most this many more) until its replies are in or it idles.
    pub max_flows: usize,
}

/// A flow that left the table, with its value.
#[derive(Debug, PartialEq, Eq)]
pub struct Ended<T> {
    pub client: SocketAddr,
    pub value: T,
    pub why: EndReason,
    /// Datagrams from the client, and replies to it, over the flow's life.
    pub requests: u64,
    pub replies: u64,
    /// When the flow started, on the caller's clock.
    pub started: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Idle,
    Responses,
    /// Evicted from a full table, then idled out while lingering.
    Evicted,
    Removed,
}

impl EndReason {
    /// The word access logs use, in the vocabulary TCP and HTTP logs share.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Idle => "idle",
            EndReason::Responses => "responses",
            EndReason::Evicted => "evicted",
            EndReason::Removed => "upstream-error",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Node<T> {
    client: SocketAddr,
    value: Option<T>,
    last: u64,
    started: u64,
    /// Datagrams from the client, and replies to it.
    requests: u64,
    replies: u64,
    generation: u32,
    /// Which list the node is on: `ACTIVE` or `LINGERING`.
    list: usize,
    /// Neighbours in recency order on that list (older, newer).
    prev: u32,
    next: u32,
}

const ACTIVE: usize = 0;
const LINGERING: usize = 1;

/// A recency-ordered list of nodes.
#[derive(Debug, Clone, Copy)]
struct List {
    oldest: u32,
    newest: u32,
    len: usize,
}

const EMPTY: List = List {
    oldest: NIL,
    newest: NIL,
    len: 0,
};

#[derive(Debug)]
pub struct FlowTable<T> {
    limits: Limits,
    by_client: HashMap<SocketAddr, u32>,
    nodes: Vec<Node<T>>,
    free: Vec<u32>,
    /// Active flows (found by client) and lingering ones (evicted, awaiting replies).
    lists: [List; 2],
}

impl<T> FlowTable<T> {
    pub fn new(limits: Limits) -> Self {
        FlowTable {
            limits: Self::clamped(limits),
            by_client: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            lists: [EMPTY; 2],
        }
    }

    /// Flows holding a value: active and lingering.
    pub fn len(&self) -> usize {
        self.lists[ACTIVE].len + self.lists[LINGERING].len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flows a client's datagram can find (at most `max_flows`).
    pub fn active(&self) -> usize {
        self.lists[ACTIVE].len
    }

    /// Evicted flows kept open for their late replies (at most `max_flows`).
    pub fn lingering(&self) -> usize {
        self.lists[LINGERING].len
    }

    /// Changes the limits (on reload). A lower `max_flows` takes effect as new flows
    /// arrive: each insert beyond it evicts the least recently active flow.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = Self::clamped(limits);
    }

    fn clamped(limits: Limits) -> Limits {
        Limits {
            max_flows: limits.max_flows.clamp(1, (NIL as usize - 1) / 2),
            ..limits
        }
    }

    /// The live flow of `client`, counting a datagram from it.
    pub fn touch_client(&mut self, client: SocketAddr, now: u64) -> Option<(FlowId, &T)> {
        let slot = *self.by_client.get(&client)?;
        self.bump(slot, now);
        let node = &mut self.nodes[slot as usize];
        node.requests += 1;
        let id = FlowId {
            slot,
            generation: node.generation,
        };
        node.value.as_ref().map(|v| (id, v))
    }

    /// Whether a new flow would be refused now: the table is full and so is the
    /// room for evicted flows to linger.
    pub fn is_full(&self) -> bool {
        self.active() >= self.limits.max_flows && self.lingering() >= self.limits.max_flows
    }

    /// Starts a flow for `client` (which must have none) with its first datagram.
    /// When the table is full the least recently active flow is evicted: it lingers
    /// for its late replies. When there is no room to linger either, the new flow is
    /// refused and its value handed back.
    pub fn insert(&mut self, client: SocketAddr, value: T, now: u64) -> Result<FlowId, T> {
        if let Some(old) = self.by_client.get(&client).copied() {
            // Callers check first; the client's datagrams belong to the new flow.
            self.linger(old);
        }
        while self.active() >= self.limits.max_flows {
            if self.lingering() >= self.limits.max_flows {
                return Err(value);
            }
            self.linger(self.lists[ACTIVE].oldest);
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                let node = &mut self.nodes[slot as usize];
                node.client = client;
                node.value = Some(value);
                node.last = now;
                node.started = now;
                node.requests = 1;
                node.replies = 0;
                slot
            }
            None => {
                self.nodes.push(Node {
                    client,
                    value: Some(value),
                    last: now,
                    started: now,
                    requests: 1,
                    replies: 0,
                    generation: 0,
                    list: ACTIVE,
                    prev: NIL,
                    next: NIL,
                });
                (self.nodes.len() - 1) as u32
            }
        };
        self.push_newest(ACTIVE, slot);
        self.by_client.insert(client, slot);
        Ok(FlowId {
            slot,
            generation: self.nodes[slot as usize].generation,
        })
    }

    /// Counts a reply on `id` (active or lingering). Returns the client to send it
    /// to, and the flow if that reply completed it; `None` for a stale id.
    pub fn reply(&mut self, id: FlowId, now: u64) -> Option<(SocketAddr, Option<Ended<T>>)> {
        let slot = self.live(id)?;
        self.bump(slot, now);
        let node = &mut self.nodes[slot as usize];
        node.replies = node.replies.saturating_add(1);
        let client = node.client;
        let wanted = node
            .requests
            .saturating_mul(u64::from(self.limits.responses));
        let done = self.limits.responses > 0 && node.replies >= wanted;
        let ended = if done {
            self.end(slot, EndReason::Responses)
        } else {
            None
        };
        Some((client, ended))
    }

    /// The value of live flow `id`.
    pub fn get(&self, id: FlowId) -> Option<&T> {
        let slot = self.live(id)?;
        self.nodes[slot as usize].value.as_ref()
    }

    /// Ends flow `id` (for example after its upstream failed).
    pub fn remove(&mut self, id: FlowId) -> Option<Ended<T>> {
        let slot = self.live(id)?;
        self.end(slot, EndReason::Removed)
    }

    /// Ends every flow idle for `idle_ns` by `now`, oldest first.
    pub fn expire(&mut self, now: u64) -> Vec<Ended<T>> {
        let mut ended = Vec::new();
        for (list, why) in [(ACTIVE, EndReason::Idle), (LINGERING, EndReason::Evicted)] {
            while self.lists[list].oldest != NIL {
                let oldest = self.lists[list].oldest;
                if now.saturating_sub(self.nodes[oldest as usize].last) < self.limits.idle_ns {
                    break;
                }
                ended.extend(self.end(oldest, why));
            }
        }
        ended
    }

    /// When the next flow would go idle, if any.
    pub fn next_expiry(&self) -> Option<u64> {
        self.lists
            .iter()
            .filter_map(|list| self.nodes.get(list.oldest as usize))
            .map(|node| node.last.saturating_add(self.limits.idle_ns))
            .min()
    }

    fn live(&self, id: FlowId) -> Option<u32> {
        let node = self.nodes.get(id.slot as usize)?;
        (node.generation == id.generation && node.value.is_some()).then_some(id.slot)
    }

    /// Takes an active flow out of the client lookup and onto the lingering list.
    fn linger(&mut self, slot: u32) {
        let Some(node) = self.nodes.get(slot as usize) else {
            return;
        };
        if node.list != ACTIVE || node.value.is_none() {
            return;
        }
        let client = node.client;
        self.unlink(slot);
        self.by_client.remove(&client);
        self.push_newest(LINGERING, slot);
    }

    fn end(&mut self, slot: u32, why: EndReason) -> Option<Ended<T>> {
        let node = self.nodes.get_mut(slot as usize)?;
        let value = node.value.take()?;
        node.generation = node.generation.wrapping_add(1);
        let (client, requests, replies, started, list) = (
            node.client,
            node.requests,
            node.replies,
            node.started,
            node.list,
        );
        self.unlink(slot);
        if list == ACTIVE {
            self.by_client.remove(&client);
        }
        self.free.push(slot);
        Some(Ended {
            client,
            value,
            why,
            requests,
            replies,
            started,
        })
    }

    fn bump(&mut self, slot: u32, now: u64) {
        let node = &mut self.nodes[slot as usize];
        // Time never runs backwards in here, whatever the caller passes.
        node.last = node.last.max(now);
        let list = node.list;
        if self.lists[list].newest != slot {
            self.unlink(slot);
            self.push_newest(list, slot);
        }
    }

    fn push_newest(&mut self, list: usize, slot: u32) {
        let newest = self.lists[list].newest;
        let node = &mut self.nodes[slot as usize];
        node.list = list;
        node.prev = newest;
        node.next = NIL;
        if newest != NIL {
            self.nodes[newest as usize].next = slot;
        } else {
            self.lists[list].oldest = slot;
        }
        self.lists[list].newest = slot;
        self.lists[list].len += 1;
    }

    fn unlink(&mut self, slot: u32) {
        let (prev, next, list) = {
            let node = &self.nodes[slot as usize];
            (node.prev, node.next, node.list)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.lists[list].oldest = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            self.lists[list].newest = prev;
        }
        self.lists[list].len -= 1;
        let node = &mut self.nodes[slot as usize];
        node.prev = NIL;
        node.next = NIL;
    }
}

#[cfg(test)]
mod tests;
