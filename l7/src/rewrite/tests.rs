use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    m
}

fn origin<'a>(client: &'a Client, host: &'a HeaderValue) -> Origin<'a> {
    Origin {
        client,
        proto: "http",
        host: Some(host),
    }
}

#[test]
fn hop_by_hop_and_connection_named_headers_go() {
    let mut h = map(&[
        ("connection", "close, x-secret"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("te", "trailers"),
        ("x-kept", "yes"),
    ]);
    strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    assert_eq!(h["x-kept"], "yes");
}

#[test]
fn hop_by_hop_headers_go_without_connection_too() {
    let mut h = map(&[
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("x-kept", "yes"),
    ]);
    strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    assert_eq!(h["x-kept"], "yes");
    let mut untouched = map(&[("host", "a"), ("x-kept", "yes")]);
    strip_hop_by_hop(&mut untouched);
    assert_eq!(untouched.len(), 2);
}

#[test]
fn untrusted_chain_is_replaced() {
    let mut h = map(&[
        ("x-forwarded-for", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
        ("x-forwarded-proto", "https"),
    ]);
    let client = Client::new("10.0.0.1:5000".parse().unwrap());
    let host = HeaderValue::from_static("example.com:8080");
    forwarded(&mut h, &origin(&client, &host), false);
    assert_eq!(h["x-forwarded-for"], "10.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "example.com:8080");
    assert_eq!(
        h["forwarded"],
        "for=10.0.0.1;proto=http;host=example.com:8080"
    );
}

#[test]
fn trusted_chain_is_appended() {
    let mut h = map(&[
        ("x-forwarded-for", "1.1.1.1"),
        ("x-forwarded-for", "2.2.2.2"),
        ("x-forwarded-proto", "https"),
    ]);
    let client = Client::new("[::1]:5000".parse().unwrap());
    let host = HeaderValue::from_static("example.com:8080");
    forwarded(&mut h, &origin(&client, &host), true);
    assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, ::1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(
        h["forwarded"],
        "for=\"[::1]\";proto=http;host=example.com:8080"
    );
}

#[test]
fn upgrade_detection() {
    assert!(is_upgrade(&map(&[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket")
    ])));
    assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
}

#[test]
fn operator_lists_apply() {
    let rw = Rewrite {
        request_add: vec![(
            HeaderName::from_static("x-via"),
            HeaderValue::from_static("fulcrum"),
        )],
        request_remove: vec![HeaderName::from_static("x-debug")],
        ..Rewrite::default()
    };
    let mut h = map(&[("x-debug", "1"), ("x-via", "other")]);
    rw.request(&mut h);
    assert_eq!(h.len(), 1);
    assert_eq!(h["x-via"], "fulcrum");
}

#[test]
fn each_request_on_a_connection_gets_its_own_host() {
    // The element is kept per connection; a request naming another host (or
    // another proto) must not get the first one's.
    let client = Client::new("[2001:db8::1]:5000".parse().unwrap());
    let (a, b) = (
        HeaderValue::from_static("a.example"),
        HeaderValue::from_static("b.example"),
    );
    for (host, proto) in [(&a, "http"), (&b, "http"), (&a, "http"), (&a, "https")] {
        let mut h = HeaderMap::new();
        let origin = Origin {
            client: &client,
            proto,
            host: Some(host),
        };
        forwarded(&mut h, &origin, false);
        let want = format!(
            "for=\"[2001:db8::1]\";proto={proto};host={}",
            host.to_str().unwrap()
        );
        assert_eq!(h["forwarded"], want.as_str());
    }
    let mut h = HeaderMap::new();
    let no_host = Origin {
        client: &client,
        proto: "http",
        host: None,
    };
    forwarded(&mut h, &no_host, false);
    assert_eq!(h["forwarded"], "for=\"[2001:db8::1]\";proto=http");
    assert!(!h.contains_key("x-forwarded-host"));
}

#[test]
fn trailer_is_end_to_end_and_te_trailers_is_seen() {
    let mut h = map(&[("trailer", "x-checksum"), ("te", "gzip, trailers;q=1")]);
    assert!(accepts_trailers(&h));
    strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    assert_eq!(h["trailer"], "x-checksum");
    assert!(!accepts_trailers(&map(&[("te", "gzip")])));
}

#[test]
fn ipv4_clients_are_written_as_display_writes_them() {
    for ip in [
        "0.0.0.0",
        "255.255.255.255",
        "10.100.9.1",
        "127.0.0.1",
        "1.20.199.250",
    ] {
        let client = Client::new(format!("{ip}:80").parse().unwrap());
        assert_eq!(client.ip(), ip.as_bytes());
        assert_eq!(client.node(), format!("for={ip}").as_bytes());
    }
}
