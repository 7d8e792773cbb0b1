//! The UDP flow table as a pure core: client address -> flow, with idle expiry,
//! a reply limit and a size cap that evicts the least recently active flow.
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
    /// At most this many flows; a new one evicts the least recently active.
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
    Evicted,
    Removed,
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
    /// Neighbours in recency order (older, newer).
    prev: u32,
    next: u32,
}

#[derive(Debug)]
pub struct FlowTable<T> {
    limits: Limits,
    by_client: HashMap<SocketAddr, u32>,
    nodes: Vec<Node<T>>,
    free: Vec<u32>,
    /// Least and most recently active flows.
    oldest: u32,
    newest: u32,
}

impl<T> FlowTable<T> {
    pub fn new(limits: Limits) -> Self {
        FlowTable {
            limits: Self::clamped(limits),
            by_client: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            oldest: NIL,
            newest: NIL,
        }
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Changes the limits (on reload). A lower `max_flows` takes effect as new flows
    /// arrive: each insert beyond it evicts the least recently active flow.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = Self::clamped(limits);
    }

    fn clamped(limits: Limits) -> Limits {
        Limits {
            max_flows: limits.max_flows.clamp(1, NIL as usize - 1),
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

    /// Starts a flow for `client` (which must have none) with its first datagram.
    /// When the table is full the least recently active flow is evicted and returned.
    pub fn insert(&mut self, client: SocketAddr, value: T, now: u64) -> (FlowId, Option<Ended<T>>) {
        let evicted = if self.len() >= self.limits.max_flows {
            self.end(self.oldest, EndReason::Evicted)
        } else {
            None
        };
        if let Some(old) = self.by_client.get(&client).copied() {
            // Callers check first; replacing keeps the table consistent anyway.
            let _ = self.end(old, EndReason::Removed);
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
                    prev: NIL,
                    next: NIL,
                });
                (self.nodes.len() - 1) as u32
            }
        };
        self.push_newest(slot);
        self.by_client.insert(client, slot);
        let id = FlowId {
            slot,
            generation: self.nodes[slot as usize].generation,
        };
        (id, evicted)
    }

    /// Counts a reply on `id`. Returns the client to send it to, and the flow if that
    /// reply completed it; `None` for a stale id.
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
        while self.oldest != NIL {
            let node = &self.nodes[self.oldest as usize];
            if now.saturating_sub(node.last) < self.limits.idle_ns {
                break;
            }
            ended.extend(self.end(self.oldest, EndReason::Idle));
        }
        ended
    }

    /// When the next flow would go idle, if any.
    pub fn next_expiry(&self) -> Option<u64> {
        let node = self.nodes.get(self.oldest as usize)?;
        Some(node.last.saturating_add(self.limits.idle_ns))
    }

    fn live(&self, id: FlowId) -> Option<u32> {
        let node = self.nodes.get(id.slot as usize)?;
        (node.generation == id.generation && node.value.is_some()).then_some(id.slot)
    }

    fn end(&mut self, slot: u32, why: EndReason) -> Option<Ended<T>> {
        let node = self.nodes.get_mut(slot as usize)?;
        let value = node.value.take()?;
        node.generation = node.generation.wrapping_add(1);
        let (client, requests, replies, started) =
            (node.client, node.requests, node.replies, node.started);
        self.unlink(slot);
        self.by_client.remove(&client);
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
        if self.newest != slot {
            self.unlink(slot);
            self.push_newest(slot);
        }
    }

    fn push_newest(&mut self, slot: u32) {
        let node = &mut self.nodes[slot as usize];
        node.prev = self.newest;
        node.next = NIL;
        if self.newest != NIL {
            self.nodes[self.newest as usize].next = slot;
        } else {
            self.oldest = slot;
        }
        self.newest = slot;
    }

    fn unlink(&mut self, slot: u32) {
        let (prev, next) = {
            let node = &self.nodes[slot as usize];
            (node.prev, node.next)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.oldest = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            self.newest = prev;
        }
        let node = &mut self.nodes[slot as usize];
        node.prev = NIL;
        node.next = NIL;
    }
}

#[cfg(test)]
mod tests;
