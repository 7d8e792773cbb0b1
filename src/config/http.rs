//! Validation of what only `protocol = "http"` and `"https"` listeners have:
//! timeouts, routes (`[[listener.route]]`), header rewriting (`[listener.headers]`)
//! and, for https, the certificates.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fulcrum_l7::retry::RetryOn;
use fulcrum_l7::rewrite::Rewrite;
use fulcrum_l7::route::{HeaderMatch, HostMatch, Match, PathMatch, Route, Target};
use fulcrum_l7::tls::CertFiles;
use fulcrum_l7::upstream::HttpVersion;
use fulcrum_l7::{
    Http1Engine, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_HTTP2_IDLE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};
use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

use super::file::{FileHeaderMatch, FileHeaders, FileListener, FileRoute};
use super::validate::{connect_timeout, invalid, nonzero_duration, retries, Invalid, Result};
use super::{HttpOptions, PoolConfig};

/// Largest weight in a split; keeps the draw exact.
const MAX_SPLIT_WEIGHT: u32 = 10_000;

pub(super) fn options(
    spanned: &Spanned<FileListener>,
    pools: &HashSet<&str>,
    base: &Path,
) -> Result<HttpOptions> {
    let l = spanned.get_ref();
    let https = l.protocol.as_ref().is_some_and(|p| p.get_ref() == "https");
    let (tls, tls_files, client_ca) = if https {
        tls(spanned, base)?
    } else {
        (None, Vec::new(), None)
    };
    let routes = match &l.route {
        Some(routes) => routes
            .get_ref()
            .iter()
            .map(|r| route(r, pools))
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let https_redirect = l.https_redirect.as_ref().is_some_and(|r| *r.get_ref());
    if routes.is_empty() && l.pool.is_none() && !https_redirect {
        return Err(invalid(
            &l.name,
            "an http listener needs a `pool` or at least one [[listener.route]]",
        ));
    }
    Ok(HttpOptions {
        connect_timeout: connect_timeout(l)?,
        retries: retries(l),
        header_read_timeout: match &l.header_read_timeout {
            Some(d) => nonzero_duration(d, "header_read_timeout")?,
            None => DEFAULT_HEADER_READ_TIMEOUT,
        },
        http2_idle_timeout: match &l.http2_idle_timeout {
            Some(d) => nonzero_duration(d, "http2_idle_timeout")?,
            None => DEFAULT_HTTP2_IDLE_TIMEOUT,
        },
        request_timeout: match &l.request_timeout {
            Some(d) => nonzero_duration(d, "request_timeout")?,
            None => DEFAULT_REQUEST_TIMEOUT,
        },
        body_read_timeout: match &l.body_read_timeout {
            Some(d) => nonzero_duration(d, "body_read_timeout")?,
            None => fulcrum_l7::DEFAULT_BODY_READ_TIMEOUT,
        },
        send_timeout: match &l.send_timeout {
            Some(d) => nonzero_duration(d, "send_timeout")?,
            None => fulcrum_l7::DEFAULT_SEND_TIMEOUT,
        },
        request_buffer: match &l.request_buffer {
            Some(s) => super::size::parse(s.get_ref())
                .map_err(|e| invalid(s, format!("`request_buffer`: {e}")))?,
            None => fulcrum_l7::DEFAULT_REQUEST_BUFFER,
        },
        max_request_body: match &l.max_request_body {
            Some(s) => super::size::parse(s.get_ref())
                .map_err(|e| invalid(s, format!("`max_request_body`: {e}")))?,
            None => 0,
        },
        retry_on: match &l.retry_on {
            Some(list) => {
                let mut on = RetryOn::default();
                for item in list.get_ref() {
                    let one =
                        RetryOn::parse([item.get_ref().as_str()]).map_err(|e| invalid(item, e))?;
                    on.reset |= one.reset;
                    on.status_502 |= one.status_502;
                    on.status_503 |= one.status_503;
                    on.status_504 |= one.status_504;
                }
                on
            }
            None => RetryOn::default(),
        },
        try_timeout: match &l.try_timeout {
            Some(d) => Some(nonzero_duration(d, "try_timeout")?),
            None => None,
        },
        upstream_idle_timeout: match &l.upstream_idle_timeout {
            Some(d) => nonzero_duration(d, "upstream_idle_timeout")?,
            None => fulcrum_l7::upstream::DEFAULT_IDLE_TIMEOUT,
        },
        routes,
        rewrite: match &l.headers {
            Some(h) => rewrite(h.get_ref())?,
            None => Rewrite::default(),
        },
        trust_forwarded: l.trust_forwarded.as_ref().is_some_and(|t| *t.get_ref()),
        normalize_path: l.normalize_path.as_ref().is_none_or(|n| *n.get_ref()),
        http1_engine: match &l.http1_engine {
            None => Http1Engine::Hyper,
            Some(e) if e.get_ref() == "hyper" => Http1Engine::Hyper,
            Some(e) if e.get_ref() == "fulcrum" => Http1Engine::Fulcrum,
            Some(e) => {
                return Err(invalid(
                    e,
                    format!(
                        "unknown http1_engine {:?}: write \"fulcrum\" or \"hyper\" (unset: fulcrum's own where it serves the listener)",
                        e.get_ref()
                    ),
                ))
            }
        },
        tls,
        tls_files,
        client_ca,
        https_redirect,
        compress: super::policy::compress(l)?.map(std::sync::Arc::new),
        error_pages: std::sync::Arc::new(match &l.error_pages {
            Some(pages) => super::policy::error_pages(pages, base)?,
            None => Default::default(),
        }),
    })
}

type Tls = (
    Option<Arc<rustls::ServerConfig>>,
    Vec<CertFiles>,
    Option<PathBuf>,
);

/// Loads an https listener's certificates now, so that `fulcrum check` (and a
/// reload) catches a missing file or a key that does not match its certificate.
fn tls(spanned: &Spanned<FileListener>, base: &Path) -> Result<Tls> {
    let l = spanned.get_ref();
    let Some(certs) = &l.tls else {
        return Err(invalid(
            spanned,
            "an https listener needs `tls = [{ cert = \"...\", key = \"...\" }]`",
        ));
    };
    if certs.get_ref().is_empty() {
        return Err(invalid(certs, "`tls` needs at least one { cert, key }"));
    }
    let files: Vec<CertFiles> = certs
        .get_ref()
        .iter()
        .map(|c| CertFiles {
            cert: base.join(&c.cert),
            key: base.join(&c.key),
        })
        .collect();
    let client_ca = l.client_ca.as_ref().map(|ca| base.join(ca.get_ref()));
    let at = l
        .client_ca
        .as_ref()
        .map_or(certs.span().start, |ca| ca.span().start);
    let config = fulcrum_l7::tls::server_config(&files, client_ca.as_deref()).map_err(|e| {
        let at = match e {
            fulcrum_l7::tls::TlsError::Certs { ref path, .. }
            | fulcrum_l7::tls::TlsError::Invalid { ref path, .. }
                if Some(path) == client_ca.as_ref() =>
            {
                at
            }
            _ => certs.span().start,
        };
        Invalid {
            offset: at,
            message: e.to_string(),
        }
    })?;
    Ok((Some(config), files, client_ca))
}

fn route(spanned: &Spanned<FileRoute>, pools: &HashSet<&str>) -> Result<Route<String>> {
    let r = spanned.get_ref();
    if let Some(sni) = &r.sni {
        return Err(invalid(
            sni,
            "`sni` routes apply to tls listeners (not yet supported); http routes match `host`",
        ));
    }
    if let (Some(exact), Some(_)) = (&r.path, &r.path_prefix) {
        return Err(invalid(
            exact,
            "a route has `path` or `path_prefix`, not both",
        ));
    }
    let path_text = |p: &Spanned<String>| -> Result<String> {
        let text = p.get_ref();
        if !text.starts_with('/') || text.contains(char::is_whitespace) {
            return Err(invalid(
                p,
                format!("a route path must start with / and have no spaces, got `{text}`"),
            ));
        }
        Ok(text.clone())
    };
    let path = match (&r.path, &r.path_prefix) {
        (Some(p), _) => Some(PathMatch::Exact(path_text(p)?)),
        (None, Some(p)) => Some(PathMatch::Prefix(path_text(p)?)),
        (None, None) => None,
    };
    let when = Match {
        host: match &r.host {
            Some(h) => Some(HostMatch::parse(h.get_ref()).map_err(|e| invalid(h, e))?),
            None => None,
        },
        path,
        method: match &r.method {
            Some(m) => Some(method(m)?),
            None => None,
        },
        headers: match &r.headers {
            Some(h) => header_matches(h)?,
            None => Vec::new(),
        },
    };
    let known = |p: &Spanned<String>| -> Result<String> {
        if pools.contains(p.get_ref().as_str()) {
            Ok(p.get_ref().clone())
        } else {
            Err(invalid(
                p,
                format!("route refers to unknown pool `{}`", p.get_ref()),
            ))
        }
    };
    let target = match (&r.pool, &r.split) {
        (Some(p), None) => Target::Pool(known(p)?),
        (None, Some(split)) => {
            if split.get_ref().is_empty() {
                return Err(invalid(split, "`split` needs at least one pool"));
            }
            let mut out = Vec::new();
            for s in split.get_ref() {
                let s = s.get_ref();
                let weight = *s.weight.get_ref();
                if weight == 0 || weight > MAX_SPLIT_WEIGHT {
                    return Err(invalid(
                        &s.weight,
                        format!("split weight must be 1..={MAX_SPLIT_WEIGHT}, got {weight}"),
                    ));
                }
                out.push((known(&s.pool)?, weight));
            }
            Target::Split(out)
        }
        (Some(p), Some(_)) => {
            return Err(invalid(p, "a route has `pool` or `split`, not both"));
        }
        (None, None) => match &r.redirect {
            Some(redirect) => {
                Target::Redirect(std::sync::Arc::new(super::policy::redirect(redirect)?))
            }
            None => {
                return Err(invalid(
                    spanned,
                    "a route needs a `pool`, a `split` or a `redirect`",
                ))
            }
        },
    };
    if let (Some(redirect), false) = (&r.redirect, matches!(target, Target::Redirect(_))) {
        return Err(invalid(
            redirect,
            "a route has `redirect` or a `pool`/`split`, not both",
        ));
    }
    let edit = super::policy::edit(r)?;
    let limit = match &r.rate_limit {
        Some(l) => Some(std::sync::Arc::new(super::policy::rate_limit(l, true)?)),
        None => None,
    };
    if let (Some(_), Target::Redirect(_)) = (&edit, &target) {
        return Err(invalid(
            spanned,
            "a redirect route forwards nothing: `strip_prefix`, `replace_prefix` and `set_host` do not apply",
        ));
    }
    Ok(Route {
        when,
        target,
        edit: edit.map(std::sync::Arc::new),
        limit,
    })
}

fn method(m: &Spanned<String>) -> Result<Method> {
    let text = m.get_ref();
    let upper = text.to_ascii_uppercase();
    if upper != *text || upper.is_empty() {
        return Err(invalid(
            m,
            format!("route `method` is written in capitals, e.g. GET, got `{text}`"),
        ));
    }
    Method::from_bytes(upper.as_bytes())
        .map_err(|_| invalid(m, format!("invalid route `method` `{text}`")))
}

fn header_matches(h: &Spanned<BTreeMap<String, FileHeaderMatch>>) -> Result<Vec<HeaderMatch>> {
    h.get_ref()
        .iter()
        .map(|(name, value)| {
            let name = header_name(h, name)?;
            let value = match value {
                FileHeaderMatch::Present(true) => None,
                FileHeaderMatch::Present(false) => {
                    return Err(invalid(
                        h,
                        format!("header `{name}`: use a value, or `true` for \"present\""),
                    ))
                }
                FileHeaderMatch::Exact(v) => Some(header_value(h, v)?),
            };
            Ok(HeaderMatch { name, value })
        })
        .collect()
}

fn rewrite(h: &FileHeaders) -> Result<Rewrite> {
    let adds =
        |m: &Option<Spanned<BTreeMap<String, String>>>| -> Result<Vec<(HeaderName, HeaderValue)>> {
            let Some(m) = m else { return Ok(Vec::new()) };
            m.get_ref()
                .iter()
                .map(|(k, v)| Ok((header_name(m, k)?, header_value(m, v)?)))
                .collect()
        };
    let removes = |l: &Option<Spanned<Vec<String>>>| -> Result<Vec<HeaderName>> {
        let Some(l) = l else { return Ok(Vec::new()) };
        l.get_ref().iter().map(|k| header_name(l, k)).collect()
    };
    Ok(Rewrite {
        request_add: adds(&h.request_add)?,
        request_remove: removes(&h.request_remove)?,
        response_add: adds(&h.response_add)?,
        response_remove: removes(&h.response_remove)?,
    })
}

fn header_name<T>(at: &Spanned<T>, name: &str) -> Result<HeaderName> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| invalid(at, format!("invalid header name `{name}`")))
}

fn header_value<T>(at: &Spanned<T>, value: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(value).map_err(|_| Invalid {
        offset: at.span().start,
        message: format!("invalid header value {value:?}"),
    })
}

#[cfg(test)]
mod tests;

/// `http1_engine = "fulcrum"` serves http and https listeners in front of HTTP/1.1
/// pools without TLS, retrying on connect failures only: anything else is said
/// at config time, not found out by a request.
pub(super) fn own_engine_fits(l: &FileListener, pools: &[PoolConfig]) -> Result<()> {
    let Some(engine) = l.http1_engine.as_ref().filter(|e| e.get_ref() == "fulcrum") else {
        return Ok(());
    };
    match own_engine_misfit(l, pools) {
        None => Ok(()),
        Some(what) => Err(invalid(
            engine,
            format!("http1_engine = \"fulcrum\" does not serve {what} yet: remove http1_engine (hyper serves it)"),
        )),
    }
}

/// What of this listener fulcrum's own HTTP/1 path does not serve, if anything.
pub(super) fn own_engine_misfit(l: &FileListener, pools: &[PoolConfig]) -> Option<String> {
    let unsupported = |what: &str| Some(what.to_owned());
    let after_sending = l.retry_on.as_ref().is_some_and(|list| {
        list.get_ref()
            .iter()
            .any(|r| r.get_ref() != "connect-failure")
    });
    if after_sending || l.try_timeout.is_some() {
        return unsupported("retry_on beyond connect-failure, or try_timeout");
    }
    if l.compress.is_some() {
        return unsupported("compress");
    }
    let routes = l.route.as_ref().map_or(&[][..], |r| r.get_ref().as_slice());
    let split = routes
        .iter()
        .flat_map(|r| r.get_ref().split.iter().flat_map(|s| s.get_ref().iter()));
    let named = l
        .pool
        .iter()
        .chain(routes.iter().filter_map(|r| r.get_ref().pool.as_ref()))
        .chain(split.map(|s| &s.get_ref().pool));
    for name in named {
        let pool = pools.iter().find(|p| p.name == *name.get_ref());
        if pool.is_some_and(|p| p.tls.is_some() || p.http_version != HttpVersion::Http1) {
            return unsupported(&format!(
                "pool `{}` (TLS or HTTP/2 to its backends)",
                name.get_ref()
            ));
        }
    }
    None
}

/// A route matching `content-type = "application/grpc..."` carries gRPC calls,
/// which need HTTP/2 to the backends: each pool it names must speak it.
pub(super) fn grpc_routes_speak_h2(l: &FileListener, pools: &[PoolConfig]) -> Result<()> {
    let routes = l.route.as_ref().map_or(&[][..], |r| r.get_ref().as_slice());
    for route in routes {
        let r = route.get_ref();
        let grpc = r.headers.as_ref().is_some_and(|h| {
            h.get_ref().iter().any(|(name, value)| {
                name.eq_ignore_ascii_case("content-type")
                    && matches!(value, FileHeaderMatch::Exact(v) if is_grpc_type(v))
            })
        });
        if !grpc {
            continue;
        }
        let split = r.split.iter().flat_map(|s| s.get_ref().iter());
        let named = r.pool.iter().chain(split.map(|s| &s.get_ref().pool));
        for name in named {
            let pool = pools.iter().find(|p| p.name == *name.get_ref());
            if let Some(p) = pool.filter(|p| !speaks_h2(p)) {
                return Err(invalid(
                    name,
                    format!(
                        "this route matches gRPC calls (content-type application/grpc), but pool `{}` speaks HTTP/1.1 to its backends: add http_version = \"2\" to that [[pool]] (or \"auto\" with tls)",
                        p.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn is_grpc_type(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    v.strip_prefix("application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'))
}

fn speaks_h2(p: &PoolConfig) -> bool {
    p.http_version.may_speak_h2(p.tls.is_some())
}
