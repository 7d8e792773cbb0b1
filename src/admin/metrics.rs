//! `/metrics`: fulcrum's live counters in Prometheus text format. They are copied
//! into the exporter's registry when scraped, so the data path pays nothing; the
//! histograms (kept as atomics by l4/l7) are written out directly.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use fulcrum_l4::histogram::{Snapshot, BOUNDS};
use fulcrum_l4::udp;

use super::{names, Admin, ListenerView};

impl Admin {
    pub(super) fn metrics(&self) -> String {
        let view = self.view.load();
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut histograms = String::new();
        metrics::with_local_recorder(&self.recorder, || {
            for pool in &view.pools {
                for b in pool.backends() {
                    let labels = [
                        ("pool", pool.name().to_owned()),
                        ("backend", b.addr().to_string()),
                    ];
                    let gauge = |name: &'static str, v: f64| metrics::gauge!(name, &labels).set(v);
                    gauge(names::BACKEND_UP, f64::from(u8::from(b.is_up())));
                    gauge(names::BACKEND_HEALTHY, f64::from(u8::from(b.is_healthy())));
                    gauge(names::BACKEND_ACTIVE, f64::from(b.active()));
                    let (sent, received) = b.bytes();
                    for (name, value) in [
                        (names::BACKEND_CONNECTIONS, b.total()),
                        (names::BACKEND_CONNECT_ERRORS, b.connect_errors()),
                        (names::BACKEND_EJECTIONS, u64::from(b.ejections())),
                        (names::BACKEND_SENT_BYTES, sent),
                        (names::BACKEND_RECEIVED_BYTES, received),
                    ] {
                        metrics::counter!(name, &labels).absolute(value);
                    }
                    let labels =
                        format!("pool=\"{}\",backend=\"{}\"", escape(pool.name()), b.addr());
                    histogram(
                        &mut histograms,
                        names::BACKEND_CONNECT_SECONDS,
                        &labels,
                        &b.connect_time(),
                    );
                }
            }
            for listener in &view.listeners {
                match listener {
                    ListenerView::Tcp(l, _) => {
                        let labels = [("listener", l.name().to_string())];
                        for (name, value) in [
                            (names::TCP_ACCEPTED, &l.stats.accepted),
                            (names::TCP_REFUSED_PER_CLIENT, &l.stats.refused_per_client),
                            (names::TCP_PAUSED_AT_LIMIT, &l.stats.paused_at_limit),
                            (names::LISTENER_RETRIES, &l.stats.retries),
                        ] {
                            metrics::counter!(name, &labels).absolute(count(value));
                        }
                    }
                    ListenerView::Http(l, _) => {
                        let name = l.name().to_string();
                        let labels = [("listener", name.clone())];
                        metrics::counter!(names::HTTP_ACCEPTED, &labels)
                            .absolute(count(&l.stats.accepted));
                        metrics::counter!(names::LISTENER_RETRIES, &labels)
                            .absolute(count(&l.stats.retries));
                        for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"]
                            .into_iter()
                            .zip(&l.stats.responses)
                        {
                            metrics::counter!(names::HTTP_RESPONSES, "listener" => name.clone(), "class" => class)
                                .absolute(count(n));
                        }
                        let labels = format!("listener=\"{}\"", escape(&name));
                        histogram(
                            &mut histograms,
                            names::HTTP_REQUEST_SECONDS,
                            &labels,
                            &l.stats.latency.snapshot(),
                        );
                    }
                    ListenerView::Udp(l, _) => {
                        let labels = [("listener", l.name().to_string())];
                        let s = &l.stats;
                        for (name, value) in [
                            (names::UDP_FLOWS_CREATED, &s.flows_created),
                            (names::UDP_FLOWS_EVICTED, &s.flows_evicted),
                            (names::UDP_FLOWS_EXPIRED, &s.flows_expired),
                            (names::UDP_DATAGRAMS_IN, &s.datagrams_in),
                            (names::UDP_DATAGRAMS_OUT, &s.datagrams_out),
                            (names::UDP_BYTES_IN, &s.bytes_in),
                            (names::UDP_BYTES_OUT, &s.bytes_out),
                        ] {
                            metrics::counter!(name, &labels).absolute(udp::Stats::get(value));
                        }
                        metrics::gauge!(names::UDP_FLOWS_ACTIVE, &labels)
                            .set(l.active_flows() as f64);
                    }
                }
            }
        });
        let mut text = self.handle.render();
        text.push_str(&histograms);
        text
    }
}

/// Writes one histogram series (with its TYPE line the first time) in the
/// Prometheus text format.
fn histogram(out: &mut String, name: &str, labels: &str, h: &Snapshot) {
    if !out.contains(&format!("# TYPE {name} ")) {
        let _ = writeln!(out, "# TYPE {name} histogram");
    }
    for (bound, n) in BOUNDS.iter().zip(h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
