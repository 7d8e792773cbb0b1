use super::*;

#[test]
fn cookies_are_found_among_others() {
    let mut h = HeaderMap::new();
    h.append(header::COOKIE, HeaderValue::from_static("a=1; FULCRUM=abc"));
    h.append(header::COOKIE, HeaderValue::from_static("b=\"2\""));
    assert_eq!(cookie(&h, "FULCRUM"), Some("abc"));
    assert_eq!(cookie(&h, "b"), Some("2"));
    assert_eq!(cookie(&h, "FULC"), None);
}

#[test]
fn keys_parse_and_hash() {
    let key = RequestKey::parse("header:X-User").unwrap().unwrap();
    let mut h = HeaderMap::new();
    assert_eq!(key.hash(&h), None);
    h.insert("x-user", HeaderValue::from_static("alice"));
    assert_eq!(key.hash(&h), key.hash(&h.clone()));
    assert!(RequestKey::parse("cookie:a b").unwrap().is_err());
    assert!(RequestKey::parse("source-ip").is_none());
}

#[test]
fn ids_are_stable_and_distinct() {
    let a: SocketAddr = "127.0.0.1:9001".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:9002".parse().unwrap();
    assert_eq!(backend_id(a), backend_id(a));
    assert_ne!(backend_id(a), backend_id(b));
    assert_eq!(backend_id(a).len(), 16);
}
