//! What both HTTP paths choose for a request besides its route: the pool of a
//! split (a sticky cookie keeps a client on its side), the backend a sticky
//! cookie pins, and the host name routing looks at.

use std::sync::{Arc, OnceLock};

use crate::route::Target;
use crate::settings::Upstream;
use crate::sticky::cookie;
use fulcrum_l4::balance::rng::Rng;
use fulcrum_l4::Backend;

/// Picks the pool of a target: a split honours a sticky cookie that names one of
/// its pools' backends (the client stays on its side of a canary), else draws.
pub(crate) fn choose_upstream<'t>(
    target: &'t Target<Arc<Upstream>>,
    headers: &http::HeaderMap,
) -> Option<&'t Upstream> {
    if let Target::Split(split) = target {
        if let Some((u, _)) = split
            .iter()
            .find(|(u, _)| pinned_backend(u, headers).is_some())
        {
            return Some(u);
        }
    }
    target.choose(rng().next_u64()).map(Arc::as_ref)
}

/// The backend a sticky cookie pins the request to, if it names one that is up.
pub(crate) fn pinned_backend<'u>(
    upstream: &'u Upstream,
    headers: &http::HeaderMap,
) -> Option<&'u Backend> {
    let value = cookie(headers, upstream.sticky_cookie.as_deref()?)?;
    let i = upstream.ids.iter().position(|id| id == value)?;
    upstream.pool.backends().get(i).filter(|b| b.is_up())
}

/// Split draws: one process-wide stream, seeded from the clock.
fn rng() -> &'static Rng {
    static RNG: OnceLock<Rng> = OnceLock::new();
    RNG.get_or_init(|| {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng::new(seed)
    })
}

/// A host without its port: `example.com:8080` → `example.com`, `[::1]:80` → `[::1]`.
pub(crate) fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    // A fully qualified name's trailing dot names the same host (RFC 1034 §3.1),
    // and backends serve it as that: routed as that too.
    match name.strip_suffix('.') {
        Some(bare) if !bare.is_empty() => bare,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn ports_are_dropped_from_hosts() {
        assert_eq!(host_name("example.com:8080"), "example.com");
        assert_eq!(host_name("example.com"), "example.com");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("example.com.:80"), "example.com");
        assert_eq!(host_name("example.com."), "example.com");
    }
}
