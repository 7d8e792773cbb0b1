//! Policy keys of listeners and routes: `allow` and `deny` address ranges,
//! `rate_limit`, a route's `redirect` and its rewrites (`strip_prefix`,
//! `replace_prefix`, `set_host`).

use fulcrum_l4::access::{Access, Cidr};
use fulcrum_l4::ratelimit::Quota;
use std::sync::Arc;

use fulcrum_l7::compress::{Coding, Compress, DEFAULT_MIN_SIZE, DEFAULT_TYPES};
use fulcrum_l7::limit::RateLimit;
use fulcrum_l7::refusal::{ErrorPages, Page};
use fulcrum_l7::route::{Edit, PathEdit, Redirect};
use fulcrum_l7::shared_limit::{OnFailure, Redis, SharedRule};
use fulcrum_l7::sticky::RequestKey;
use http::HeaderValue;
use toml::Spanned;

use super::file::{FileListener, FileRateLimit, FileRedirect, FileRoute, FileSharedLimits};
use super::validate::{invalid, Result};
use super::{ListenerConfig, Protocol};

/// Most ranges in one list: a longer list belongs in a firewall, not a linear scan.
const MAX_RANGES: usize = 4096;

/// A listener's `allow` and `deny` lists.
pub(super) fn access(l: &FileListener) -> Result<Access> {
    Ok(Access {
        allow: ranges(l.allow.as_ref(), "allow")?,
        deny: ranges(l.deny.as_ref(), "deny")?,
    })
}

fn ranges(list: Option<&Spanned<Vec<Spanned<String>>>>, key: &str) -> Result<Vec<Cidr>> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    if list.get_ref().len() > MAX_RANGES {
        return Err(invalid(
            list,
            format!("`{key}` lists more than {MAX_RANGES} ranges; merge them into wider ones"),
        ));
    }
    list.get_ref()
        .iter()
        .map(|c| {
            c.get_ref()
                .trim()
                .parse::<Cidr>()
                .map_err(|e| invalid(c, format!("`{key}`: {e}")))
        })
        .collect()
}

/// A route's `redirect`.
pub(super) fn redirect(raw: &Spanned<FileRedirect>) -> Result<Redirect> {
    let r = raw.get_ref();
    let scheme = match &r.scheme {
        Some(s) if s.get_ref() == "http" || s.get_ref() == "https" => Some(s.get_ref().clone()),
        Some(s) => {
            return Err(invalid(
                s,
                format!("redirect `scheme` is http or https, got `{}`", s.get_ref()),
            ))
        }
        None => None,
    };
    let host = match &r.host {
        Some(h) if valid_host(h.get_ref()) => Some(h.get_ref().clone()),
        Some(h) => {
            return Err(invalid(
                h,
                "redirect `host` is a host name or address, with a port if needed (example.com, example.com:8443)",
            ))
        }
        None => None,
    };
    let path = match &r.path {
        // `{path}` starts with / itself.
        Some(p) if valid_path(p.get_ref().replacen("{path}", "/", 1).as_str()) => {
            Some(p.get_ref().clone())
        }
        Some(p) => {
            return Err(invalid(
                p,
                "redirect `path` starts with / and has no spaces; {path} and {query} stand for the request's",
            ))
        }
        None => None,
    };
    let code = match &r.code {
        Some(c) if [301, 302, 303, 307, 308].contains(c.get_ref()) => *c.get_ref(),
        Some(c) => {
            return Err(invalid(
                c,
                format!(
                    "redirect `code` is 301, 302, 303, 307 or 308, got {}",
                    c.get_ref()
                ),
            ))
        }
        None => 302,
    };
    if scheme.is_none() && host.is_none() && path.is_none() {
        return Err(invalid(
            raw,
            "a redirect needs a `scheme`, a `host` or a `path` to change",
        ));
    }
    Ok(Redirect {
        scheme,
        host,
        path,
        code,
    })
}

/// A route's rewrites: `strip_prefix` or `replace_prefix`, and `set_host`.
pub(super) fn edit(r: &FileRoute) -> Result<Option<Edit>> {
    let prefix = |p: &Spanned<String>, key: &str| -> Result<String> {
        match valid_path(p.get_ref()) {
            true => Ok(p.get_ref().clone()),
            false => Err(invalid(
                p,
                format!("`{key}` starts with / and has no spaces, e.g. \"/api\""),
            )),
        }
    };
    let path = match (&r.strip_prefix, &r.replace_prefix) {
        (Some(strip), Some(_)) => {
            return Err(invalid(
                strip,
                "a route has `strip_prefix` or `replace_prefix`, not both",
            ))
        }
        (Some(strip), None) => Some(PathEdit::StripPrefix(prefix(strip, "strip_prefix")?)),
        (None, Some(replace)) => {
            let replace = replace.get_ref();
            Some(PathEdit::ReplacePrefix {
                from: prefix(&replace.from, "replace_prefix.from")?,
                to: prefix(&replace.to, "replace_prefix.to")?,
            })
        }
        (None, None) => None,
    };
    let set_host = match &r.set_host {
        Some(h) => match (valid_host(h.get_ref()), HeaderValue::from_str(h.get_ref())) {
            (true, Ok(value)) => Some(value),
            _ => {
                return Err(invalid(
                    h,
                    "`set_host` is a host name or address, with a port if needed",
                ))
            }
        },
        None => None,
    };
    Ok((path.is_some() || set_host.is_some()).then_some(Edit { path, set_host }))
}

fn valid_path(p: &str) -> bool {
    p.starts_with('/')
        && !p
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

fn valid_host(h: &str) -> bool {
    !h.is_empty() && fulcrum_l7::vet::valid_host(h.as_bytes())
}

/// A `rate_limit`: `rate` as N/s, N/m or N/h, `burst` (default: one second's
/// worth, at least 1), `key` (`source-ip`, or on http `header:NAME`/`cookie:NAME`).
pub(super) fn rate_limit(raw: &Spanned<FileRateLimit>, http: bool) -> Result<RateLimit> {
    let r = raw.get_ref();
    let per_second = parse_rate(r.rate.get_ref()).map_err(|e| invalid(&r.rate, e))?;
    let burst = match &r.burst {
        Some(b) if *b.get_ref() == 0 => {
            return Err(invalid(b, "`burst` must be at least 1"));
        }
        Some(b) => *b.get_ref(),
        None => per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
    };
    let key = match r.key.as_ref().map(|k| (k, k.get_ref().trim())) {
        None | Some((_, "source-ip")) => None,
        Some((k, text)) => match (RequestKey::parse(text), http) {
            (Some(Ok(key)), true) => Some(key),
            (Some(Ok(_)), false) => {
                return Err(invalid(
                    k,
                    "tcp, tls and udp listeners limit by `source-ip` only (header and cookie keys are http)",
                ))
            }
            (Some(Err(e)), _) => return Err(invalid(k, e.replace("hash_key", "rate_limit"))),
            (None, _) => {
                return Err(invalid(
                    k,
                    format!("unknown rate_limit key `{text}`: write source-ip, header:NAME or cookie:NAME"),
                ))
            }
        },
    };
    Ok(RateLimit::new(Quota { per_second, burst }, key))
}

/// `100/s`, `6000/m`, `10/h` -> per second.
fn parse_rate(text: &str) -> std::result::Result<f64, String> {
    let bad =
        || format!("`rate` is a count per s, m or h, e.g. \"100/s\" or \"600/m\"; got `{text}`");
    let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: f64 = count
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(bad)?
        .into();
    let seconds = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return Err(bad()),
    };
    Ok(count / seconds)
}

/// `[rate_limit] redis`: every http listener's and route's `rate_limit` keeps its
/// buckets in that Redis (tcp and udp limits stay per instance).
pub(super) fn share_limits(
    raw: &Spanned<FileSharedLimits>,
    listeners: &mut [ListenerConfig],
) -> Result<()> {
    let raw = raw.get_ref();
    let on_failure = match &raw.on_redis_failure {
        None => OnFailure::Local,
        Some(f) => match f.get_ref().as_str() {
            "local" => OnFailure::Local,
            "allow" => OnFailure::Allow,
            "deny" => OnFailure::Deny,
            other => {
                return Err(invalid(
                    f,
                    format!("on_redis_failure is local, allow or deny, got `{other}`"),
                ))
            }
        },
    };
    let Some(url) = &raw.redis else {
        return Ok(());
    };
    let redis = Redis::open(url.get_ref()).map_err(|e| invalid(url, e))?;
    let share = |limit: &Arc<RateLimit>, id: String| {
        Arc::new(RateLimit {
            limiter: Arc::clone(&limit.limiter),
            key: limit.key.clone(),
            shared: Some(SharedRule::new(Arc::clone(&redis), on_failure, id)),
        })
    };
    for l in listeners {
        let Protocol::Http(h) = &mut l.protocol else {
            continue;
        };
        if let Some(limit) = &l.rate_limit {
            l.rate_limit = Some(share(limit, l.name.clone()));
        }
        for (i, route) in h.routes.iter_mut().enumerate() {
            if let Some(limit) = &route.limit {
                route.limit = Some(share(limit, format!("{}/{i}", l.name)));
            }
        }
    }
    Ok(())
}

/// Largest error page.
const MAX_PAGE: u64 = 1024 * 1024;

/// `error_pages = { 503 = "pages/503.html" }`: read and checked now, so a
/// missing page is a config error, not a surprise under load.
pub(super) fn error_pages(
    raw: &Spanned<std::collections::BTreeMap<String, Spanned<String>>>,
    base: &std::path::Path,
) -> Result<ErrorPages> {
    let mut pages = ErrorPages::new();
    for (status, file) in raw.get_ref() {
        let code = status
            .parse::<u16>()
            .ok()
            .filter(|c| (400..=599).contains(c))
            .ok_or_else(|| {
                invalid(
                    raw,
                    format!("error_pages key `{status}` is not a status from 400 to 599"),
                )
            })?;
        let path = base.join(file.get_ref());
        let body = match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_PAGE => {
                return Err(invalid(
                    file,
                    format!(
                        "{} is over 1 MiB; an error page should be small",
                        path.display()
                    ),
                ))
            }
            Ok(_) => std::fs::read(&path),
            Err(e) => Err(e),
        }
        .map_err(|e| {
            invalid(
                file,
                format!("cannot read error page {}: {e}", path.display()),
            )
        })?;
        let content_type = match path.extension().and_then(|e| e.to_str()) {
            Some("html" | "htm") => "text/html; charset=utf-8",
            Some("json") => "application/json",
            _ => "text/plain; charset=utf-8",
        };
        pages.insert(
            code,
            Page {
                body: body.into(),
                content_type,
            },
        );
    }
    Ok(pages)
}

/// `compress`, `compress_types` and `compress_min_size`.
pub(super) fn compress(l: &FileListener) -> Result<Option<Compress>> {
    let Some(list) = &l.compress else {
        if let Some(types) = &l.compress_types {
            return Err(invalid(types, "`compress_types` needs `compress`"));
        }
        return Ok(None);
    };
    let mut codings = Vec::new();
    for name in list.get_ref() {
        let coding = Coding::parse(name.get_ref().trim()).ok_or_else(|| {
            invalid(
                name,
                format!(
                    "unknown coding `{}`: write zstd, br or gzip",
                    name.get_ref()
                ),
            )
        })?;
        if !codings.contains(&coding) {
            codings.push(coding);
        }
    }
    if codings.is_empty() {
        return Err(invalid(
            list,
            "`compress` lists no coding: write [\"zstd\", \"br\", \"gzip\"] or remove it",
        ));
    }
    let types = match &l.compress_types {
        Some(types) => types
            .get_ref()
            .iter()
            .map(|t| {
                let text = t.get_ref().trim().to_ascii_lowercase();
                match text.split_once('/') {
                    Some((top, _)) if !top.is_empty() => Ok(text),
                    _ => Err(invalid(
                        t,
                        "a media type, e.g. \"application/json\", or \"text/\" for every text type",
                    )),
                }
            })
            .collect::<Result<Vec<_>>>()?,
        None => DEFAULT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
    };
    let min_size = match &l.compress_min_size {
        Some(size) => super::size::parse(size.get_ref())
            .map_err(|e| invalid(size, format!("`compress_min_size`: {e}")))?
            as u64,
        None => DEFAULT_MIN_SIZE,
    };
    Ok(Some(Compress {
        codings,
        types,
        min_size,
    }))
}
