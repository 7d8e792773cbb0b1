use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::*;

fn route(when: Match, pool: &'static str) -> Route<&'static str> {
    Route {
        when,
        target: Target::Pool(pool),
        edit: None,
        limit: None,
    }
}

fn host(h: &str) -> Option<HostMatch> {
    Some(HostMatch::parse(h).unwrap())
}

fn prefix(p: &str) -> Option<PathMatch> {
    Some(PathMatch::Prefix(p.to_owned()))
}

fn header(name: &str, value: Option<&str>) -> HeaderMatch {
    HeaderMatch {
        name: HeaderName::from_bytes(name.as_bytes()).unwrap(),
        value: value.map(|v| HeaderValue::from_str(v).unwrap()),
    }
}

/// Finds the pool for a request described by its parts.
fn find(
    router: &Router<&'static str>,
    host: Option<&str>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<&'static str> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let info = RequestInfo {
        host,
        path,
        method: &method,
        headers: &map,
    };
    router.find(&info).and_then(|t| t.choose(0).copied())
}

#[test]
fn each_condition_routes_to_its_pool() {
    let router = Router::new(
        vec![
            route(
                Match {
                    host: host("api.example.com"),
                    ..Match::default()
                },
                "api",
            ),
            route(
                Match {
                    path: prefix("/static/"),
                    ..Match::default()
                },
                "static",
            ),
            route(
                Match {
                    method: Some(Method::POST),
                    ..Match::default()
                },
                "writes",
            ),
            route(
                Match {
                    headers: vec![header("x-canary", Some("1"))],
                    ..Match::default()
                },
                "canary",
            ),
        ],
        Some(Target::Pool("default")),
    );
    let f = |h, m, p, hs| find(&router, h, m, p, hs);
    assert_eq!(f(Some("api.example.com"), "GET", "/", &[]), Some("api"));
    assert_eq!(f(Some("API.Example.COM"), "GET", "/", &[]), Some("api"));
    assert_eq!(
        f(Some("www.example.com"), "GET", "/static/a.css", &[]),
        Some("static")
    );
    assert_eq!(f(None, "POST", "/form", &[]), Some("writes"));
    assert_eq!(f(None, "GET", "/", &[("x-canary", "1")]), Some("canary"));
    assert_eq!(f(None, "GET", "/", &[("x-canary", "2")]), Some("default"));
    assert_eq!(f(None, "GET", "/statics", &[]), Some("default"));
}

#[test]
fn no_match_and_no_fallback_is_none() {
    let router = Router::new(
        vec![route(
            Match {
                path: Some(PathMatch::Exact("/only".into())),
                ..Match::default()
            },
            "only",
        )],
        None,
    );
    assert_eq!(find(&router, None, "GET", "/only", &[]), Some("only"));
    assert_eq!(find(&router, None, "GET", "/only/", &[]), None);
    assert_eq!(find(&router, None, "GET", "/", &[]), None);
}

#[test]
fn most_specific_wins_whatever_the_order() {
    let routes = vec![
        route(
            Match {
                path: prefix("/"),
                ..Match::default()
            },
            "root",
        ),
        route(
            Match {
                path: prefix("/v1/"),
                ..Match::default()
            },
            "v1",
        ),
        route(
            Match {
                path: Some(PathMatch::Exact("/v1/health".into())),
                ..Match::default()
            },
            "health",
        ),
        route(
            Match {
                host: host("*.example.com"),
                ..Match::default()
            },
            "wild",
        ),
        route(
            Match {
                host: host("*.eu.example.com"),
                ..Match::default()
            },
            "eu",
        ),
        route(
            Match {
                host: host("api.eu.example.com"),
                ..Match::default()
            },
            "exact-host",
        ),
        route(
            Match {
                path: prefix("/v1/"),
                method: Some(Method::DELETE),
                ..Match::default()
            },
            "v1-delete",
        ),
        route(
            Match {
                path: prefix("/v1/"),
                method: Some(Method::DELETE),
                headers: vec![header("x-admin", None)],
                ..Match::default()
            },
            "v1-delete-admin",
        ),
    ];
    // Any order of the same routes gives the same answers.
    for rotate in 0..routes.len() {
        let mut rotated = routes.clone();
        rotated.rotate_left(rotate);
        let router = Router::new(rotated, None);
        let f = |h, m, p, hs| find(&router, h, m, p, hs);
        assert_eq!(f(None, "GET", "/x", &[]), Some("root"));
        assert_eq!(f(None, "GET", "/v1/users", &[]), Some("v1"));
        assert_eq!(f(None, "GET", "/v1/health", &[]), Some("health"));
        assert_eq!(f(None, "DELETE", "/v1/users", &[]), Some("v1-delete"));
        assert_eq!(
            f(None, "DELETE", "/v1/users", &[("x-admin", "")]),
            Some("v1-delete-admin")
        );
        // Host beats path, exact host beats wildcards, the longer wildcard wins.
        assert_eq!(
            f(Some("a.example.com"), "GET", "/v1/health", &[]),
            Some("wild")
        );
        assert_eq!(f(Some("x.eu.example.com"), "GET", "/", &[]), Some("eu"));
        assert_eq!(
            f(Some("api.eu.example.com"), "GET", "/", &[]),
            Some("exact-host")
        );
        // A wildcard needs a label in front of its suffix.
        assert_eq!(f(Some("example.com"), "GET", "/x", &[]), Some("root"));
    }
}

#[test]
fn ties_keep_config_order() {
    let a = Match {
        path: prefix("/a"),
        ..Match::default()
    };
    let router = Router::new(vec![route(a.clone(), "first"), route(a, "second")], None);
    assert_eq!(find(&router, None, "GET", "/a", &[]), Some("first"));
}

#[test]
fn header_presence_and_repeated_values() {
    let router = Router::new(
        vec![route(
            Match {
                headers: vec![header("x-flag", None), header("x-tier", Some("gold"))],
                ..Match::default()
            },
            "both",
        )],
        Some(Target::Pool("other")),
    );
    let both = [
        ("x-flag", "anything"),
        ("x-tier", "silver"),
        ("x-tier", "gold"),
    ];
    assert_eq!(find(&router, None, "GET", "/", &both), Some("both"));
    assert_eq!(find(&router, None, "GET", "/", &both[1..]), Some("other"));
}

#[test]
fn host_parsing() {
    assert_eq!(
        HostMatch::parse("*.Example.com"),
        Ok(HostMatch::Suffix(".example.com".into()))
    );
    for bad in ["", "*", "*example.com", "a.*.com", "*.", "a b"] {
        assert!(HostMatch::parse(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn split_choice_follows_weights() {
    let t = Target::Split(vec![("blue", 90), ("green", 10)]);
    let green = (0..100).filter(|&d| t.choose(d) == Some(&"green")).count();
    assert_eq!(green, 10);
    assert_eq!(t.choose(89), Some(&"blue"));
    assert_eq!(t.choose(90), Some(&"green"));
    assert_eq!(t.pools().copied().collect::<Vec<_>>(), ["blue", "green"]);
}

#[test]
fn specificity_orders_as_documented() {
    let exact_path = Match {
        path: Some(PathMatch::Exact("/a".into())),
        ..Match::default()
    };
    let long_prefix = Match {
        path: prefix("/abc"),
        ..Match::default()
    };
    assert_eq!(compare(&exact_path, &long_prefix), Ordering::Greater);
    let wildcard = Match {
        host: host("*.x.io"),
        ..Match::default()
    };
    assert_eq!(compare(&wildcard, &exact_path), Ordering::Greater);
}
