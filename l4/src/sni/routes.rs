//! Routes of a `tls` (passthrough) listener: SNI name patterns to pools, the most
//! specific match first (an exact name, then the longest wildcard suffix), and a
//! fallback for hellos without a name or with a name no route has.

use std::collections::HashMap;
use std::sync::Arc;

use crate::pool::Pool;

/// A host name pattern, as HTTP routes match the request's host and TLS routes
/// the SNI name (compared without case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`: any name that ends in `.example.com` (one label or more in
    /// front of it); stored as the suffix, dot included.
    Suffix(String),
}

impl HostMatch {
    /// Parses `host =` from the config: lowercased, `*.` marks a wildcard.
    pub fn parse(text: &str) -> Result<HostMatch, String> {
        let host = text.trim().to_ascii_lowercase();
        let bad = |why: &str| format!("invalid host name pattern `{text}`: {why}");
        if host.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(suffix) = host.strip_prefix('*') {
            if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('*') {
                return Err(bad("a wildcard is written `*.example.com`"));
            }
            return Ok(HostMatch::Suffix(suffix.to_owned()));
        }
        if host.contains(['*', '/', ' ']) {
            return Err(bad("expected a host name such as api.example.com"));
        }
        Ok(HostMatch::Exact(host))
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(want) => host.eq_ignore_ascii_case(want),
            HostMatch::Suffix(suffix) => has_suffix(host, suffix),
        }
    }
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatch::Exact(name) => f.write_str(name),
            HostMatch::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Whether `host` ends in `suffix` (dot included) with a label in front of it.
fn has_suffix(host: &str, suffix: &str) -> bool {
    host.len() > suffix.len()
        && host.as_bytes()[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// A `tls` listener's routes.
#[derive(Debug)]
pub struct SniRoutes {
    exact: HashMap<String, Arc<Pool>>,
    /// Wildcards, longest suffix first.
    suffixes: Vec<(String, Arc<Pool>)>,
    fallback: Option<Arc<Pool>>,
}

impl SniRoutes {
    /// Routes in config order; of two routes with the same pattern the first wins.
    pub fn new(routes: Vec<(HostMatch, Arc<Pool>)>, fallback: Option<Arc<Pool>>) -> Self {
        let mut exact = HashMap::new();
        let mut suffixes: Vec<(String, Arc<Pool>)> = Vec::new();
        for (pattern, pool) in routes {
            match pattern {
                HostMatch::Exact(name) => {
                    exact.entry(name).or_insert(pool);
                }
                HostMatch::Suffix(s) if !suffixes.iter().any(|(t, _)| *t == s) => {
                    suffixes.push((s, pool))
                }
                HostMatch::Suffix(_) => {}
            }
        }
        // Stable: equal lengths keep config order.
        suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        SniRoutes {
            exact,
            suffixes,
            fallback,
        }
    }

    /// The pool for a hello naming `sni` (lowercase, as the parser returns it).
    pub fn find(&self, sni: Option<&str>) -> Option<&Arc<Pool>> {
        let routed = sni.and_then(|name| {
            self.exact.get(name).or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| has_suffix(name, s))
                    .map(|(_, p)| p)
            })
        });
        routed.or(self.fallback.as_ref())
    }
}
