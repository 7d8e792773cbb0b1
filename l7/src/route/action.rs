//! What a route does to a request besides choosing its pool: rewrite the path
//! (`strip_prefix`, `replace_prefix`) and the host (`set_host`) before it leaves,
//! or answer it with a redirect instead of forwarding it (`redirect`,
//! `https_redirect`).

use http::HeaderValue;

/// A route's rewrites, applied to the request the backend gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    pub path: Option<PathEdit>,
    /// Sent as Host instead of the client's.
    pub set_host: Option<HeaderValue>,
}

/// How the path changes; the query is kept as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathEdit {
    /// `/api/users` with `/api` -> `/users`.
    StripPrefix(String),
    /// `/v1/users` with `/v1/` -> `/` -> `/users`.
    ReplacePrefix { from: String, to: String },
}

impl Edit {
    /// The origin-form target (`path?query`) the backend gets, when it changes.
    pub fn target(&self, target: &str) -> Option<String> {
        let edit = self.path.as_ref()?;
        let (path, query) = match target.find('?') {
            Some(i) => target.split_at(i),
            None => (target, ""),
        };
        let rest = match edit {
            PathEdit::StripPrefix(prefix) => path.strip_prefix(prefix.as_str())?.to_owned(),
            PathEdit::ReplacePrefix { from, to } => {
                format!("{to}{}", path.strip_prefix(from.as_str())?)
            }
        };
        // Whatever was cut, the backend gets an origin-form path.
        let slash = if rest.starts_with('/') { "" } else { "/" };
        Some(format!("{slash}{rest}{query}"))
    }
}

/// Where a redirect sends the client; what is not given is the request's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// Host, with a port when it needs one.
    pub host: Option<String>,
    /// The new path; `{path}` stands for the request's path. The query is
    /// appended unless the path has one or says `{query}`.
    pub path: Option<String>,
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
}

/// The request a redirect is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// `http` or `https`: how the client reached fulcrum.
    pub scheme: &'a str,
    /// The request's host, with its port if it had one.
    pub host: Option<&'a str>,
    /// Origin form: path and query.
    pub target: &'a str,
}

impl Redirect {
    /// `https_redirect = true`: the same host and target over https, 308 (the
    /// method and body are kept, RFC 9110 §15.4.9).
    pub fn https() -> Redirect {
        Redirect {
            scheme: Some("https".to_owned()),
            host: None,
            path: None,
            code: 308,
        }
    }

    /// The `Location` for `asked`; `None` when there is no host to send the client
    /// to (an HTTP/1.0 request without Host, and no `host` here).
    pub fn location(&self, asked: &Asked<'_>) -> Option<String> {
        let scheme = self.scheme.as_deref().unwrap_or(asked.scheme);
        let host = match &self.host {
            Some(host) => host.clone(),
            None => {
                let host = asked.host?;
                // A port belongs to the scheme the client used: dropped with it.
                if scheme != asked.scheme {
                    crate::choice::host_name(host).to_owned()
                } else {
                    host.to_owned()
                }
            }
        };
        let (path, query) = match asked.target.find('?') {
            Some(i) => asked.target.split_at(i),
            None => (asked.target, ""),
        };
        let target = match &self.path {
            None => asked.target.to_owned(),
            Some(template) => {
                let says_query = template.contains("{query}");
                let mut out = template
                    .replace("{path}", path)
                    .replace("{query}", query.trim_start_matches('?'));
                if !says_query && !out.contains('?') {
                    out.push_str(query);
                }
                out
            }
        };
        Some(format!("{scheme}://{host}{target}"))
    }
}

#[cfg(test)]
mod tests {
    use super::{Asked, Edit, PathEdit, Redirect};

    #[test]
    fn prefixes_are_stripped_or_replaced_and_the_query_kept() {
        let strip = Edit {
            path: Some(PathEdit::StripPrefix("/api".to_owned())),
            set_host: None,
        };
        assert_eq!(
            strip.target("/api/users?id=7").as_deref(),
            Some("/users?id=7")
        );
        assert_eq!(strip.target("/api").as_deref(), Some("/"));
        assert_eq!(strip.target("/api?x").as_deref(), Some("/?x"));
        assert_eq!(strip.target("/apix").as_deref(), Some("/x"));
        assert_eq!(strip.target("/other"), None);
        let replace = Edit {
            path: Some(PathEdit::ReplacePrefix {
                from: "/v1/".to_owned(),
                to: "/internal/".to_owned(),
            }),
            set_host: None,
        };
        assert_eq!(
            replace.target("/v1/a/b?q=1").as_deref(),
            Some("/internal/a/b?q=1")
        );
    }

    #[test]
    fn redirects_keep_what_they_do_not_set() {
        let asked = Asked {
            scheme: "http",
            host: Some("example.com:8080"),
            target: "/a/b?x=1",
        };
        assert_eq!(
            Redirect::https().location(&asked).as_deref(),
            Some("https://example.com/a/b?x=1")
        );
        let moved = Redirect {
            scheme: None,
            host: Some("new.example".to_owned()),
            path: Some("/v2{path}".to_owned()),
            code: 301,
        };
        assert_eq!(
            moved.location(&asked).as_deref(),
            Some("http://new.example/v2/a/b?x=1")
        );
        let fixed = Redirect {
            scheme: None,
            host: None,
            path: Some("/login?next={path}".to_owned()),
            code: 302,
        };
        assert_eq!(
            fixed.location(&asked).as_deref(),
            Some("http://example.com:8080/login?next=/a/b")
        );
        let v6 = Asked {
            scheme: "http",
            host: Some("[::1]:8080"),
            target: "/",
        };
        assert_eq!(
            Redirect::https().location(&v6).as_deref(),
            Some("https://[::1]/")
        );
        let no_host = Asked {
            host: None,
            ..asked
        };
        assert_eq!(Redirect::https().location(&no_host), None);
    }
}
