//! DNS discovery: backends given as `HOST:PORT` become every A/AAAA record of HOST,
//! looked up at start (and on reload) and again every `resolve` interval; a pool
//! follows the answer, and a failed lookup keeps the last good set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use fulcrum_l4::BackendSpec;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DnsBackend};

/// One DNS backend entry: its pool and its place among the pool's DNS entries.
pub type EntryKey = (String, usize);

/// The addresses each entry resolved to last.
pub type Resolved = HashMap<EntryKey, Vec<SocketAddr>>;

/// A changed answer for one entry.
pub type Change = (EntryKey, Vec<SocketAddr>);

/// The resolver `config` asks for: its `[resolver]` name servers, else the
/// system's (/etc/resolv.conf). Answers are not cached: every lookup asks.
pub fn resolver(config: &Config) -> anyhow::Result<TokioResolver> {
    let mut builder = match &config.resolver {
        Some(r) => {
            let servers = r
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| anyhow::anyhow!("cannot read the system's DNS configuration: {e}"))?,
    };
    let options = builder.options_mut();
    options.cache_size = 0;
    if let Some(r) = &config.resolver {
        options.timeout = r.timeout;
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up the DNS resolver: {e}"))
}

/// Every DNS entry of `config`.
fn entries(config: &Config) -> impl Iterator<Item = (EntryKey, &DnsBackend)> {
    config.pools.iter().flat_map(|p| {
        p.dns
            .iter()
            .enumerate()
            .map(move |(i, d)| ((p.name.clone(), i), d))
    })
}

/// Looks up one entry: its addresses, sorted (so that equal answers compare equal).
async fn lookup(resolver: &TokioResolver, entry: &DnsBackend) -> Result<Vec<SocketAddr>, String> {
    let answer = resolver
        .lookup_ip(entry.host.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let mut addrs: Vec<SocketAddr> = answer
        .iter()
        .map(|ip| SocketAddr::new(ip, entry.port))
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// Resolves every entry once; entries that fail keep what `previous` had.
pub async fn resolve_all(
    resolver: &TokioResolver,
    config: &Config,
    previous: &Resolved,
) -> Resolved {
    let mut resolved = Resolved::new();
    for (key, entry) in entries(config) {
        match lookup(resolver, entry).await {
            Ok(addrs) => {
                tracing::info!(pool = %key.0, host = %entry.host, backends = ?addrs, "dns: resolved");
                resolved.insert(key, addrs);
            }
            Err(e) => {
                tracing::warn!(pool = %key.0, host = %entry.host, error = %e, "dns: lookup failed; keeping the last answer");
                if let Some(last) = previous.get(&key) {
                    resolved.insert(key, last.clone());
                }
            }
        }
    }
    resolved
}

/// `config` with each pool's resolved addresses added to its backends (an address
/// already listed is not added twice).
pub fn expand(config: &Config, resolved: &Resolved) -> Config {
    let mut expanded = config.clone();
    for pool in &mut expanded.pools {
        for (i, entry) in pool.dns.iter().enumerate() {
            let Some(addrs) = resolved.get(&(pool.name.clone(), i)) else {
                continue;
            };
            for &addr in addrs {
                if !pool.backends.iter().any(|b| b.addr == addr) {
                    pool.backends.push(BackendSpec {
                        addr,
                        weight: entry.weight,
                    });
                }
            }
        }
    }
    expanded
}

/// Re-resolves every entry on its interval until `stop`, sending answers that
/// differ from the last one; a failed lookup sends nothing.
pub fn watch(
    resolver: &TokioResolver,
    config: &Config,
    resolved: &Resolved,
    changes: mpsc::UnboundedSender<Change>,
    stop: CancellationToken,
) {
    for (key, entry) in entries(config) {
        let (resolver, entry, changes, stop) = (
            resolver.clone(),
            entry.clone(),
            changes.clone(),
            stop.clone(),
        );
        let mut last = resolved.get(&key).cloned();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(entry.every) => {}
                }
                match lookup(&resolver, &entry).await {
                    Ok(addrs) if last.as_ref() != Some(&addrs) => {
                        tracing::info!(pool = %key.0, host = %entry.host, backends = ?addrs, "dns: answer changed");
                        last = Some(addrs.clone());
                        if changes.send((key.clone(), addrs)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(pool = %key.0, host = %entry.host, error = %e, "dns: lookup failed; keeping the last answer");
                    }
                }
            }
        });
    }
}

/// Whether any pool of `config` has DNS backends.
pub fn needed(config: &Config) -> bool {
    config.pools.iter().any(|p| !p.dns.is_empty())
}

/// A DNS lookup is bounded by the resolver's own timeout and attempts; this is the
/// bound on a whole start-up round.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's DNS state: the config as written, the last answers, and the
/// watchers of the current config.
#[derive(Debug)]
pub struct Dns {
    resolver: Option<TokioResolver>,
    base: Option<Config>,
    resolved: Resolved,
    changes: mpsc::UnboundedSender<Change>,
    stop: CancellationToken,
}

impl Dns {
    pub fn new(changes: mpsc::UnboundedSender<Change>) -> Dns {
        Dns {
            resolver: None,
            base: None,
            resolved: Resolved::new(),
            changes,
            stop: CancellationToken::new(),
        }
    }

    /// Resolves `config`'s DNS backends (at start, or on reload) and starts
    /// watching them; returns the config with their addresses in the pools.
    pub async fn prepare(&mut self, config: Config) -> anyhow::Result<Config> {
        self.stop.cancel();
        if !needed(&config) {
            self.base = Some(config.clone());
            return Ok(config);
        }
        // A reload may change `[resolver]`: build it again.
        let resolver = resolver(&config)?;
        let round = resolve_all(&resolver, &config, &self.resolved);
        self.resolved = tokio::time::timeout(ROUND_TIMEOUT, round)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!("dns: lookups timed out; starting with the last answers");
                self.resolved.clone()
            });
        self.stop = CancellationToken::new();
        watch(
            &resolver,
            &config,
            &self.resolved,
            self.changes.clone(),
            self.stop.clone(),
        );
        self.resolver = Some(resolver);
        let expanded = expand(&config, &self.resolved);
        self.base = Some(config);
        Ok(expanded)
    }

    /// Records a changed answer; returns the config to apply now.
    pub fn changed(&mut self, (key, addrs): Change) -> Option<Config> {
        self.resolved.insert(key, addrs);
        self.base.as_ref().map(|base| expand(base, &self.resolved))
    }
}
