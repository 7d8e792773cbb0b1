//! HTTP routes as plain data: what a request must look like (host, path, method,
//! headers) and where it goes (a pool or a weighted split), plus `find()`, which
//! returns the most specific matching route (linkerd's `http/route` ordering).

use std::cmp::Ordering;
use std::collections::HashMap;

mod action;

pub use action::{Asked, Edit, PathEdit, Redirect};
pub use fulcrum_l4::sni::HostMatch;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use std::sync::Arc;

/// How a route matches the request path (the path alone, not the query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(want) => path == want,
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

/// One header condition: the header has this exact value, or is there at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: HeaderName,
    /// `None`: present with any value.
    pub value: Option<HeaderValue>,
}

/// What a request must look like; an absent condition matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub host: Option<HostMatch>,
    pub path: Option<PathMatch>,
    pub method: Option<Method>,
    pub headers: Vec<HeaderMatch>,
}

/// Where a matched request goes. `P` names a pool: its name in the config, the
/// pool itself once the server has built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<P> {
    Pool(P),
    /// Weighted choice among pools (canary, blue-green); weights are > 0.
    Split(Vec<(P, u32)>),
    /// fulcrum answers with a redirect; no pool is involved.
    Redirect(Arc<Redirect>),
}

impl<P> Target<P> {
    /// The same target over other pool handles.
    pub fn map<Q>(&self, mut f: impl FnMut(&P) -> Q) -> Target<Q> {
        match self {
            Target::Pool(p) => Target::Pool(f(p)),
            Target::Split(split) => Target::Split(split.iter().map(|(p, w)| (f(p), *w)).collect()),
            Target::Redirect(r) => Target::Redirect(Arc::clone(r)),
        }
    }

    /// The pool a split sends `draw` (uniform in `0..total weight`) to; `None`
    /// only for a split without pools, which config validation never builds.
    pub fn choose(&self, draw: u64) -> Option<&P> {
        match self {
            Target::Pool(p) => Some(p),
            Target::Redirect(_) => None,
            Target::Split(split) => {
                let total: u64 = split.iter().map(|(_, w)| u64::from(*w)).sum();
                let mut left = draw % total.max(1);
                for (p, w) in split {
                    if left < u64::from(*w) {
                        return Some(p);
                    }
                    left -= u64::from(*w);
                }
                split.last().map(|(p, _)| p)
            }
        }
    }

    /// Every pool the target can send to.
    pub fn pools(&self) -> impl Iterator<Item = &P> {
        let (one, many) = match self {
            Target::Pool(p) => (Some(p), &[][..]),
            Target::Split(split) => (None, split.as_slice()),
            Target::Redirect(_) => (None, &[][..]),
        };
        one.into_iter().chain(many.iter().map(|(p, _)| p))
    }
}

#[derive(Debug, Clone)]
pub struct Route<P> {
    pub when: Match,
    pub target: Target<P>,
    /// Rewrites of the request the backend gets (path, host).
    pub edit: Option<Arc<Edit>>,
    /// The route's own `rate_limit`.
    pub limit: Option<Arc<crate::limit::RateLimit>>,
}

/// What routing decided for one request: its target and the route's rewrites.
#[derive(Debug, Clone, Copy)]
pub struct Routed<'a, P> {
    pub target: &'a Target<P>,
    pub edit: Option<&'a Edit>,
    pub limit: Option<&'a Arc<crate::limit::RateLimit>>,
}

/// What [`Router::find`] looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Without the port; `None` when the request names no host.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// A listener's routes, most specific first, and the fallback target.
#[derive(Debug, Clone)]
pub struct Router<P> {
    routes: Vec<Route<P>>,
    fallback: Option<Target<P>>,
    /// Routes with an exact host, by that host (indices in `routes` order). Every
    /// exact-host route outranks every other route, so a lookup can try these
    /// first and then only the routes in `rest`.
    by_host: HashMap<String, Vec<usize>>,
    /// Routes without an exact host.
    rest: Vec<usize>,
}

impl<P> Router<P> {
    /// Orders `routes` by specificity; among equals the one written first wins.
    pub fn new(mut routes: Vec<Route<P>>, fallback: Option<Target<P>>) -> Self {
        // Stable: config order breaks ties.
        routes.sort_by_key(|r| std::cmp::Reverse(specificity(&r.when)));
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        let mut rest = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            match &r.when.host {
                Some(HostMatch::Exact(h)) => by_host.entry(h.clone()).or_default().push(i),
                _ => rest.push(i),
            }
        }
        Router {
            routes,
            fallback,
            by_host,
            rest,
        }
    }

    /// The target of the most specific route that matches, else the fallback;
    /// `None` (a 404) when neither applies.
    pub fn find(&self, req: &RequestInfo<'_>) -> Option<&Target<P>> {
        self.route(req).map(|r| r.target)
    }

    /// As [`Router::find`], with the matching route's rewrites.
    pub fn route(&self, req: &RequestInfo<'_>) -> Option<Routed<'_, P>> {
        let exact = req.host.and_then(|h| {
            if h.bytes().any(|b| b.is_ascii_uppercase()) {
                self.by_host.get(&h.to_ascii_lowercase())
            } else {
                self.by_host.get(h)
            }
        });
        exact
            .into_iter()
            .flatten()
            .chain(&self.rest)
            .map(|&i| &self.routes[i])
            .find(|r| matches(&r.when, req))
            .map(|r| Routed {
                target: &r.target,
                edit: r.edit.as_deref(),
                limit: r.limit.as_ref(),
            })
            .or_else(|| {
                self.fallback.as_ref().map(|target| Routed {
                    target,
                    edit: None,
                    limit: None,
                })
            })
    }

    /// Whether any route looks at header fields.
    pub fn reads_headers(&self) -> bool {
        self.routes.iter().any(|r| !r.when.headers.is_empty())
    }

    pub fn routes(&self) -> &[Route<P>] {
        &self.routes
    }

    pub fn fallback(&self) -> Option<&Target<P>> {
        self.fallback.as_ref()
    }

    /// The same routes over other pool handles.
    pub fn map<Q>(&self, mut f: impl FnMut(&P) -> Q) -> Router<Q> {
        Router {
            by_host: self.by_host.clone(),
            rest: self.rest.clone(),
            routes: self
                .routes
                .iter()
                .map(|r| Route {
                    when: r.when.clone(),
                    target: r.target.map(&mut f),
                    edit: r.edit.clone(),
                    limit: r.limit.clone(),
                })
                .collect(),
            fallback: self.fallback.as_ref().map(|t| t.map(&mut f)),
        }
    }
}

fn matches(when: &Match, req: &RequestInfo<'_>) -> bool {
    if let Some(method) = &when.method {
        if method != req.method {
            return false;
        }
    }
    if let Some(path) = &when.path {
        if !path.matches(req.path) {
            return false;
        }
    }
    if let Some(host) = &when.host {
        match req.host {
            Some(h) if host.matches(h) => {}
            _ => return false,
        }
    }
    when.headers.iter().all(|h| match &h.value {
        None => req.headers.contains_key(&h.name),
        Some(want) => req.headers.get_all(&h.name).iter().any(|v| v == want),
    })
}

/// How specific a match is; greater wins. Host first (exact, then the longer
/// wildcard suffix), then path (exact, then the longer prefix), then method, then
/// the number of header conditions.
fn specificity(m: &Match) -> Specificity {
    let host = match &m.host {
        Some(HostMatch::Exact(h)) => (2, h.len()),
        Some(HostMatch::Suffix(s)) => (1, s.len()),
        None => (0, 0),
    };
    let path = match &m.path {
        Some(PathMatch::Exact(p)) => (2, p.len()),
        Some(PathMatch::Prefix(p)) => (1, p.len()),
        None => (0, 0),
    };
    Specificity(host, path, m.method.is_some(), m.headers.len())
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Specificity((u8, usize), (u8, usize), bool, usize);

/// Orders two matches by specificity (for tests and `fulcrum check`).
pub fn compare(a: &Match, b: &Match) -> Ordering {
    specificity(a).cmp(&specificity(b))
}

#[cfg(test)]
mod tests;
