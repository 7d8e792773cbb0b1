//! `/metrics`: fulcrum's live counters in the Prometheus text format (0.0.4),
//! written straight from the atomics l4/l7 keep, so the data path pays nothing.
//! Each family is written once with its HELP and TYPE lines, families in the order
//! of [`names::ALL`] and series in config order (pools, then their backends; then
//! listeners), so two scrapes list the same series in the same order.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use fulcrum_l4::histogram::{Snapshot, BOUNDS};
use fulcrum_l4::udp;

use super::{names, Admin, ListenerView};

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric family: its name, kind and HELP text.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// The series of each family, gathered in whatever order the view is walked and
/// written out family by family.
struct Text {
    series: Vec<String>,
}

impl Text {
    fn new() -> Self {
        Text {
            series: vec![String::new(); names::ALL.len()],
        }
    }

    fn body(&mut self, family: Family) -> &mut String {
        let i = names::ALL
            .iter()
            .position(|f| f.name == family.name)
            .unwrap_or(0);
        &mut self.series[i]
    }

    fn sample(&mut self, family: Family, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels = render(labels);
        let _ = writeln!(self.body(family), "{}{labels} {value}", family.name);
    }

    /// One histogram series: cumulative buckets, sum and count.
    fn histogram(&mut self, family: Family, labels: &[(&str, &str)], h: &Snapshot) {
        let inner = render(labels);
        let inner = inner.trim_start_matches('{').trim_end_matches('}');
        let sep = if inner.is_empty() { "" } else { "," };
        let name = family.name;
        let out = self.body(family);
        for (bound, n) in BOUNDS.iter().zip(h.cumulative) {
            let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{{inner}}} {}", h.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{inner}}} {}", h.count);
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for (family, body) in names::ALL.iter().zip(self.series) {
            if body.is_empty() {
                continue;
            }
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(out, "# TYPE {} {kind}", family.name);
            out.push_str(&body);
        }
        out
    }
}

/// `{k="v",...}`, or nothing without labels.
fn render(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Admin {
    pub(super) fn metrics(&self) -> String {
        let view = self.view.load();
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut text = Text::new();
        for pool in &view.pools {
            for b in pool.backends() {
                let addr = b.addr().to_string();
                let labels = [("pool", pool.name()), ("backend", addr.as_str())];
                text.sample(names::BACKEND_UP, &labels, u8::from(b.is_up()));
                text.sample(names::BACKEND_HEALTHY, &labels, u8::from(b.is_healthy()));
                text.sample(names::BACKEND_ACTIVE, &labels, b.active());
                let (sent, received) = b.bytes();
                for (family, value) in [
                    (names::BACKEND_CONNECTIONS, b.total()),
                    (names::BACKEND_CONNECT_ERRORS, b.connect_errors()),
                    (names::BACKEND_EJECTIONS, u64::from(b.ejections())),
                    (names::BACKEND_SENT_BYTES, sent),
                    (names::BACKEND_RECEIVED_BYTES, received),
                ] {
                    text.sample(family, &labels, value);
                }
                text.histogram(names::BACKEND_CONNECT_SECONDS, &labels, &b.connect_time());
            }
            if pool.policy().max_connections > 0 {
                let q = pool.queue().stats();
                let labels = [("pool", pool.name())];
                text.sample(names::POOL_QUEUE_DEPTH, &labels, q.depth);
                for (family, value) in [
                    (names::POOL_QUEUED, q.queued),
                    (names::POOL_QUEUE_OVERFLOWS, q.overflows),
                    (names::POOL_QUEUE_TIMEOUTS, q.timeouts),
                ] {
                    text.sample(family, &labels, value);
                }
                text.histogram(names::POOL_QUEUE_SECONDS, &labels, &q.wait);
            }
        }
        for listener in &view.listeners {
            match listener {
                ListenerView::Tcp(l, _) => {
                    let name = l.name();
                    let labels = [("listener", &*name)];
                    for (family, value) in [
                        (names::LISTENER_ACCEPTED, &l.stats.accepted),
                        (
                            names::LISTENER_REFUSED_PER_CLIENT,
                            &l.stats.refused_per_client,
                        ),
                        (names::LISTENER_DENIED, &l.stats.denied),
                        (names::LISTENER_RATE_LIMITED, &l.stats.rate_limited),
                        (names::LISTENER_PAUSED_AT_LIMIT, &l.stats.paused_at_limit),
                        (names::LISTENER_RETRIES, &l.stats.retries),
                    ] {
                        text.sample(family, &labels, count(value));
                    }
                }
                ListenerView::Http(l, _) => {
                    let name = l.name();
                    let labels = [("listener", &*name)];
                    text.sample(names::LISTENER_ACCEPTED, &labels, count(&l.stats.accepted));
                    text.sample(names::LISTENER_RETRIES, &labels, count(&l.stats.retries));
                    text.sample(names::LISTENER_DENIED, &labels, count(&l.stats.denied));
                    text.sample(
                        names::LISTENER_RATE_LIMITED,
                        &labels,
                        count(&l.stats.rate_limited),
                    );
                    for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"]
                        .into_iter()
                        .zip(&l.stats.responses)
                    {
                        let labels = [("listener", &*name), ("class", class)];
                        text.sample(names::HTTP_RESPONSES, &labels, count(n));
                    }
                    // Codes seen so far, OK always: 17 series per listener is noise.
                    for (code, n) in names::GRPC_CODES.into_iter().zip(&l.stats.grpc) {
                        let n = count(n);
                        if n > 0 || code == "OK" {
                            let labels = [("listener", &*name), ("code", code)];
                            text.sample(names::GRPC_RESPONSES, &labels, n);
                        }
                    }
                    let snapshot = l.stats.latency.snapshot();
                    text.histogram(names::HTTP_REQUEST_SECONDS, &labels, &snapshot);
                }
                ListenerView::Udp(l, _) => {
                    let name = l.name();
                    let labels = [("listener", &*name)];
                    let s = &l.stats;
                    text.sample(names::UDP_FLOWS_ACTIVE, &labels, l.active_flows());
                    for (family, value) in [
                        (names::UDP_FLOWS_CREATED, &s.flows_created),
                        (names::UDP_FLOWS_EXPIRED, &s.flows_expired),
                        (names::UDP_FLOWS_EVICTED, &s.flows_evicted),
                        (names::UDP_FLOWS_REFUSED, &s.flows_refused),
                        (names::LISTENER_DENIED, &s.denied),
                        (names::LISTENER_RATE_LIMITED, &s.rate_limited),
                        (names::UDP_DATAGRAMS_IN, &s.datagrams_in),
                        (names::UDP_DATAGRAMS_OUT, &s.datagrams_out),
                        (names::UDP_DATAGRAMS_DROPPED, &s.dropped),
                        (names::UDP_BYTES_IN, &s.bytes_in),
                        (names::UDP_BYTES_OUT, &s.bytes_out),
                    ] {
                        text.sample(family, &labels, udp::Stats::get(value));
                    }
                }
            }
        }
        text.sample(names::LOCAL_ERRORS, &[], fulcrum_l4::net::local_errors());
        text.finish()
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
