//! `/status` (JSON) and `/` (an HTML page a person reads: pools and backends
//! coloured by health, connection and byte counts, refreshed every few seconds,
//! with no outside resources), both built from one snapshot of the running state.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use fulcrum_l4::pool::QueueStats;
use fulcrum_l4::udp;
use serde_json::json;

use super::{Admin, ListenerView, View};

/// Seconds between refreshes of the HTML page.
const REFRESH: u32 = 5;

struct ListenerRow {
    name: String,
    protocol: &'static str,
    addr: String,
    pool: Option<String>,
    connections: u64,
    /// Requests (http) or flows (udp).
    extra: Option<(&'static str, u64)>,
}

struct BackendRow {
    addr: String,
    /// The operator's state: ready, drain or maint.
    state: &'static str,
    /// Runtime overrides, for people (`state=drain weight=5`).
    overridden: Option<String>,
    weight: u32,
    up: bool,
    healthy: bool,
    ejected: bool,
    active: u32,
    connections: u64,
    connect_errors: u64,
    sent: u64,
    received: u64,
}

struct PoolRow {
    name: String,
    algorithm: String,
    backends: Vec<BackendRow>,
    /// Backends the config has that were removed at runtime.
    removed: Vec<String>,
    /// Under `max_connections`: the limit per backend and the queue.
    queue: Option<(u32, QueueStats)>,
}

fn rows(view: &View) -> (Vec<ListenerRow>, Vec<PoolRow>) {
    let mut listeners: Vec<ListenerRow> = view
        .listeners
        .iter()
        .map(|l| match l {
            ListenerView::Tcp(l, addr) => {
                let current = l.current();
                ListenerRow {
                    name: current.settings.name.to_string(),
                    protocol: if current.settings.sni.is_some() {
                        "tls"
                    } else {
                        "tcp"
                    },
                    addr: addr.to_string(),
                    pool: Some(current.pool.name().to_owned()),
                    connections: l.stats.accepted.load(Ordering::Relaxed),
                    extra: None,
                }
            }
            ListenerView::Http(l, addr) => {
                // The pool for requests no route matches (its default), if any.
                let current = l.current();
                let pool = current
                    .router
                    .fallback()
                    .and_then(|t| t.pools().next())
                    .map(|u| u.pool.name().to_owned());
                let requests = l
                    .stats
                    .responses
                    .iter()
                    .map(|n| n.load(Ordering::Relaxed))
                    .sum();
                ListenerRow {
                    name: l.name().to_string(),
                    protocol: if current.settings.tls.is_some() {
                        "https"
                    } else {
                        "http"
                    },
                    addr: addr.to_string(),
                    pool,
                    connections: l.stats.accepted.load(Ordering::Relaxed),
                    extra: Some(("requests", requests)),
                }
            }
            ListenerView::Udp(l, addr) => {
                let current = l.current();
                ListenerRow {
                    name: current.settings.name.to_string(),
                    protocol: "udp",
                    addr: addr.to_string(),
                    pool: Some(current.pool.name().to_owned()),
                    connections: udp::Stats::get(&l.stats.flows_created),
                    extra: Some(("live flows", l.active_flows())),
                }
            }
        })
        .collect();
    listeners.sort_by(|a, b| a.name.cmp(&b.name));
    let mut pools: Vec<PoolRow> = view
        .pools
        .iter()
        .map(|p| PoolRow {
            removed: view
                .overrides
                .iter()
                .filter(|o| o.removed && o.pool == p.name())
                .map(|o| o.addr.to_string())
                .collect(),
            name: p.name().to_owned(),
            algorithm: p.algorithm().to_string(),
            queue: match p.policy().max_connections {
                0 => None,
                max => Some((max, p.queue().stats())),
            },
            backends: p
                .backends()
                .iter()
                .map(|b| {
                    let (sent, received) = b.bytes();
                    BackendRow {
                        addr: b.addr().to_string(),
                        state: b.admin_state().as_str(),
                        overridden: view
                            .overrides
                            .iter()
                            .find(|o| o.pool == p.name() && o.addr == b.addr())
                            .map(|o| o.what.clone()),
                        weight: b.weight(),
                        up: b.is_up(),
                        healthy: b.is_healthy(),
                        ejected: b.is_ejected(),
                        active: b.active(),
                        connections: b.total(),
                        connect_errors: b.connect_errors(),
                        sent,
                        received,
                    }
                })
                .collect(),
        })
        .collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    (listeners, pools)
}

impl Admin {
    pub(super) fn status(&self) -> String {
        let (listeners, pools) = rows(&self.view.load());
        let listeners: Vec<_> = listeners
            .iter()
            .map(|l| {
                let mut v = json!({
                    "name": l.name, "protocol": l.protocol, "addr": l.addr,
                    "pool": l.pool, "connections": l.connections,
                });
                if let (Some((key, n)), Some(map)) = (l.extra, v.as_object_mut()) {
                    map.insert(key.replace(' ', "_"), json!(n));
                }
                v
            })
            .collect();
        let pools: Vec<_> = pools
            .iter()
            .map(|p| {
                let backends: Vec<_> = p
                    .backends
                    .iter()
                    .map(|b| {
                        json!({
                            "addr": b.addr, "state": b.state, "override": b.overridden,
                            "weight": b.weight, "up": b.up,
                            "healthy": b.healthy, "ejected": b.ejected, "active": b.active,
                            "connections": b.connections, "connect_errors": b.connect_errors,
                            "bytes_sent": b.sent, "bytes_received": b.received,
                        })
                    })
                    .collect();
                let mut pool = json!({
                    "name": p.name, "algorithm": p.algorithm, "backends": backends,
                    "removed": p.removed,
                });
                if let (Some((max, q)), Some(map)) = (&p.queue, pool.as_object_mut()) {
                    map.insert("max_connections".to_owned(), json!(max));
                    map.insert(
                        "queue".to_owned(),
                        json!({
                            "depth": q.depth, "queued": q.queued,
                            "overflows": q.overflows, "timeouts": q.timeouts,
                        }),
                    );
                }
                pool
            })
            .collect();
        let mut text = json!({ "listeners": listeners, "pools": pools }).to_string();
        text.push('\n');
        text
    }

    pub(super) fn page(&self) -> String {
        let (listeners, pools) = rows(&self.view.load());
        let mut out = String::with_capacity(8192);
        let _ = write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"{REFRESH}\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>fulcrum status</title><style>{CSS}</style></head><body>\
             <h1>fulcrum <span class=\"dim\">{}</span></h1>",
            env!("CARGO_PKG_VERSION")
        );
        out.push_str("<h2>Listeners</h2><table><tr><th>name</th><th>protocol</th><th>address</th><th>pool</th><th class=\"n\">connections</th><th class=\"n\">more</th></tr>");
        for l in &listeners {
            let extra = l.extra.map_or(String::new(), |(k, n)| format!("{n} {k}"));
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&l.name),
                l.protocol,
                esc(&l.addr),
                esc(l.pool.as_deref().unwrap_or("routes")),
                l.connections,
                extra
            );
        }
        out.push_str("</table>");
        for p in &pools {
            let up = p.backends.iter().filter(|b| b.up).count();
            let queue = p.queue.as_ref().map_or(String::new(), |(max, q)| {
                format!(
                    " &middot; max {max} per backend &middot; {} queued now ({} so far, {} overflowed, {} timed out)",
                    q.depth, q.queued, q.overflows, q.timeouts
                )
            });
            let _ = write!(
                out,
                "<h2>Pool {} <span class=\"dim\">{} &middot; {up}/{} up{queue}</span></h2>\
                 <table><tr><th>backend</th><th>state</th><th class=\"n\">weight</th><th class=\"n\">active</th>\
                 <th class=\"n\">connections</th><th class=\"n\">connect errors</th><th class=\"n\">sent</th><th class=\"n\">received</th></tr>",
                esc(&p.name),
                esc(&p.algorithm),
                p.backends.len()
            );
            for b in &p.backends {
                let (class, state) = match (b.state, b.up, b.healthy, b.ejected) {
                    ("drain", ..) => ("admin", "draining"),
                    ("maint", ..) => ("admin", "maintenance (checks paused)"),
                    (_, true, _, _) => ("up", "up"),
                    (_, false, _, true) => ("ejected", "ejected"),
                    (_, false, false, _) => ("down", "down (health check)"),
                    (_, false, true, false) => ("down", "down"),
                };
                let state = match &b.overridden {
                    Some(what) => format!(
                        "{state} <span class=\"dim\">(runtime: {})</span>",
                        esc(what)
                    ),
                    None => state.to_owned(),
                };
                let _ = write!(
                    out,
                    "<tr class=\"{class}\"><td>{}</td><td><span class=\"dot\"></span>{state}</td><td class=\"n\">{}</td>\
                     <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    esc(&b.addr),
                    b.weight,
                    b.active,
                    b.connections,
                    b.connect_errors,
                    bytes(b.sent),
                    bytes(b.received)
                );
            }
            out.push_str("</table>");
            if !p.removed.is_empty() {
                let _ = write!(
                    out,
                    "<p class=\"dim\">Removed at runtime: {}</p>",
                    esc(&p.removed.join(", "))
                );
            }
        }
        let _ = writeln!(
            out,
            "<p class=\"dim\">Refreshes every {REFRESH} s &middot; <a href=\"/status\">/status</a> (JSON) &middot; <a href=\"/metrics\">/metrics</a> (Prometheus)</p></body></html>"
        );
        out
    }
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2329;background:#f7f8fa}\
h1{font-size:22px;margin:0 0 8px}h2{font-size:16px;margin:24px 0 8px}.dim{color:#6b7580;font-weight:normal}\
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002;min-width:640px}\
th,td{padding:6px 12px;border-bottom:1px solid #e4e7eb;text-align:left}th{background:#eef1f4;font-weight:600}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;background:#999}\
tr.up .dot{background:#1f9d55}tr.down .dot{background:#d64545}tr.ejected .dot{background:#e8a317}\
tr.down{background:#fdecec}tr.ejected{background:#fff6e0}\
tr.admin .dot{background:#5a6b7d}tr.admin{background:#eef1f4}";

/// Text made safe for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A byte count for people: 1.5 MiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}
