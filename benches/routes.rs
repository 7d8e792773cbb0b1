//! Cost of one route lookup with 10 and 1000 routes: a request matching a route
//! near the front, one matching near the end, and one that falls through to the
//! listener's default pool (every route is looked at).
//!
//! `cargo bench --bench routes`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fulcrum_l7::route::{
    HeaderMatch, HostMatch, Match, PathMatch, RequestInfo, Route, Router, Target,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// `n` routes of mixed kinds: exact hosts, wildcard hosts, path prefixes with a
/// method, and header matches.
fn routes(n: usize) -> Router<usize> {
    let routes = (0..n)
        .map(|i| {
            let when = match i % 4 {
                0 => Match {
                    host: Some(HostMatch::Exact(format!("api{i}.example.com"))),
                    ..Match::default()
                },
                1 => Match {
                    host: Some(HostMatch::Suffix(format!(".svc{i}.example.com"))),
                    path: Some(PathMatch::Prefix(format!("/v{i}/"))),
                    ..Match::default()
                },
                2 => Match {
                    path: Some(PathMatch::Prefix(format!("/service{i}/"))),
                    method: Some(Method::POST),
                    ..Match::default()
                },
                _ => Match {
                    headers: vec![HeaderMatch {
                        name: HeaderName::from_static("x-tenant"),
                        value: HeaderValue::from_str(&format!("t{i}")).ok(),
                    }],
                    ..Match::default()
                },
            };
            Route {
                when,
                target: Target::Pool(i),
                edit: None,
                limit: None,
            }
        })
        .collect();
    Router::new(routes, Some(Target::Pool(usize::MAX)))
}

fn lookup(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("bench"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    for n in [10usize, 1000] {
        let router = routes(n);
        let mut group = c.benchmark_group(format!("route/{n}"));
        let cases = [
            ("first-host", "api0.example.com".to_owned(), "/".to_owned()),
            (
                "last-prefix",
                "www.example.com".to_owned(),
                format!("/service{}/x", n - 2),
            ),
            (
                "fallback",
                "www.example.com".to_owned(),
                "/nothing".to_owned(),
            ),
        ];
        for (name, host, path) in &cases {
            group.bench_with_input(
                BenchmarkId::from_parameter(name),
                &(host, path),
                |b, (host, path)| {
                    b.iter(|| {
                        let info = RequestInfo {
                            host: Some(host.as_str()),
                            path: path.as_str(),
                            method: &Method::POST,
                            headers: &headers,
                        };
                        black_box(
                            router
                                .find(black_box(&info))
                                .and_then(|t| t.choose(0).copied()),
                        )
                    })
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, lookup);
criterion_main!(benches);
