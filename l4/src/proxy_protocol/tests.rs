use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn v1_as_the_spec_writes_it() {
    let h = encode(
        Version::V1,
        addr("192.0.2.7:51000"),
        addr("10.0.0.1:443"),
        Transport::Stream,
    );
    assert_eq!(h, b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n");
    let h6 = encode(
        Version::V1,
        addr("[2001:db8::1]:4000"),
        addr("[::1]:80"),
        Transport::Stream,
    );
    assert_eq!(h6, b"PROXY TCP6 2001:db8::1 ::1 4000 80\r\n");
    assert_eq!(encode_local(Version::V1), b"PROXY UNKNOWN\r\n");
}

#[test]
fn round_trips() {
    for (c, l) in [
        ("192.0.2.7:51000", "10.0.0.1:443"),
        ("[2001:db8::1]:4000", "[::1]:80"),
        ("192.0.2.9:1", "[::1]:80"),
    ] {
        for v in [Version::V1, Version::V2] {
            for t in [Transport::Stream, Transport::Datagram] {
                let mut h = encode(v, addr(c), addr(l), t);
                let len = h.len();
                h.extend_from_slice(b"GET / HTTP/1.1\r\n");
                let Ok(Parsed::Header {
                    len: got,
                    client: Some(client),
                }) = parse(&h)
                else {
                    panic!("{v:?} {c} -> {:?}", parse(&h));
                };
                assert_eq!(got, len);
                assert_eq!(client.port(), addr(c).port());
                let want = addr(c).ip();
                let mapped = match (want, client.ip()) {
                    (IpAddr::V4(w), IpAddr::V6(g)) => g.to_ipv4_mapped() == Some(w),
                    (w, g) => w == g,
                };
                assert!(mapped, "{want} came back as {client}");
            }
        }
    }
}

#[test]
fn every_prefix_needs_more() {
    for v in [Version::V1, Version::V2] {
        let h = encode(
            v,
            addr("192.0.2.7:51000"),
            addr("10.0.0.1:443"),
            Transport::Stream,
        );
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]), Ok(Parsed::NeedMore), "{v:?} at {n}");
        }
    }
}

#[test]
fn local_and_unknown_keep_the_connection_address() {
    for v in [Version::V1, Version::V2] {
        let h = encode_local(v);
        assert_eq!(
            parse(&h),
            Ok(Parsed::Header {
                len: h.len(),
                client: None
            })
        );
    }
}

#[test]
fn v2_with_tlvs_skips_them() {
    let mut h = encode(
        Version::V2,
        addr("192.0.2.7:5"),
        addr("10.0.0.1:6"),
        Transport::Stream,
    );
    // One TLV (PP2_TYPE_AUTHORITY "a.example"), length fixed up.
    let tlv = [&[0x02, 0x00, 0x09][..], b"a.example"].concat();
    let len = u16::from_be_bytes([h[14], h[15]]) as usize + tlv.len();
    h[14..16].copy_from_slice(&(len as u16).to_be_bytes());
    h.extend_from_slice(&tlv);
    assert_eq!(
        parse(&h),
        Ok(Parsed::Header {
            len: h.len(),
            client: Some(addr("192.0.2.7:5"))
        })
    );
}

#[test]
fn garbage_is_refused() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(BadHeader::Missing));
    assert!(parse(b"PROXY TCP4 1.2.3.4\r\n").is_err());
    assert!(parse(b"PROXY TCP4 ::1 ::1 1 2\r\n").is_err());
    assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n").is_err());
    assert!(parse(&[b"PROXY ".as_slice(), &[b'x'; 120]].concat()).is_err());
    let mut v2 = encode_local(Version::V2);
    v2[12] = 0x31;
    assert!(parse(&v2).is_err());
    let mut long = encode_local(Version::V2);
    long[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    assert!(parse(&long).is_err());
}
