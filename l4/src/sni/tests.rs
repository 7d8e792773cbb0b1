use super::*;

/// A ClientHello handshake message (without record framing) naming `sni`, with
/// `padding` bytes of an unknown extension to make it as large as wanted.
fn hello(sni: Option<&str>, padding: usize) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(32);
    body.extend_from_slice(&[1; 32]);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[1, 0]);
    let mut exts = Vec::new();
    if let Some(name) = sni {
        let name = name.as_bytes();
        let mut list = vec![NAME_TYPE_HOST];
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        exts.extend_from_slice(&EXT_SERVER_NAME.to_be_bytes());
        exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
        exts.extend_from_slice(&data);
    }
    if padding > 0 {
        exts.extend_from_slice(&21u16.to_be_bytes());
        exts.extend_from_slice(&(padding as u16).to_be_bytes());
        exts.extend(std::iter::repeat_n(0u8, padding));
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

/// Frames handshake bytes into records of at most `per_record` bytes.
fn records(msg: &[u8], per_record: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in msg.chunks(per_record) {
        out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn sni(name: &str) -> Result<Peek, NotHello> {
    Ok(Peek::Hello {
        sni: Some(name.to_owned()),
    })
}

#[test]
fn finds_the_server_name() {
    let bytes = records(&hello(Some("Example.COM"), 0), MAX_HELLO);
    assert_eq!(peek(&bytes), sni("example.com"));
    let bytes = records(&hello(None, 0), MAX_HELLO);
    assert_eq!(peek(&bytes), Ok(Peek::Hello { sni: None }));
}

#[test]
fn every_prefix_needs_more_and_never_panics() {
    let bytes = records(&hello(Some("a.example.com"), 100), MAX_HELLO);
    for n in 0..bytes.len() {
        assert_eq!(peek(&bytes[..n]), Ok(Peek::NeedMore), "at {n} bytes");
    }
    assert_eq!(peek(&bytes), sni("a.example.com"));
}

#[test]
fn hello_split_over_records() {
    let msg = hello(Some("split.example"), 3000);
    for per_record in [1, 2, 3, 5, 100, 1000] {
        let bytes = records(&msg, per_record);
        assert_eq!(
            peek(&bytes),
            sni("split.example"),
            "{per_record} per record"
        );
    }
    // Application data after the hello is left alone.
    let mut bytes = records(&msg, 700);
    bytes.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
    assert_eq!(peek(&bytes), sni("split.example"));
}

#[test]
fn bounded_at_16_kib() {
    let near = hello(Some("big.example"), MAX_HELLO - 200);
    assert_eq!(peek(&records(&near, MAX_HELLO)), sni("big.example"));
    let over = hello(Some("big.example"), MAX_HELLO);
    assert_eq!(peek(&records(&over, MAX_HELLO)), Err(NotHello::TooLarge));
}

#[test]
fn garbage_is_refused() {
    assert_eq!(peek(b"GET / HTTP/1.1\r\n"), Err(NotHello::NotHandshake));
    assert_eq!(peek(b"G"), Err(NotHello::NotHandshake));
    assert_eq!(
        peek(&[22, 3, 1, 0, 0]),
        Err(NotHello::Malformed("empty record"))
    );
    // A ServerHello where a ClientHello belongs.
    let mut msg = hello(Some("x"), 0);
    msg[0] = 2;
    assert_eq!(peek(&records(&msg, 100)), Err(NotHello::NotClientHello));
    // A length that runs past the end of the body.
    let mut msg = hello(Some("x.example"), 0);
    let last = msg.len() - 1;
    msg.truncate(last);
    msg[3] -= 1;
    assert!(matches!(
        peek(&records(&msg, 100)),
        Err(NotHello::Malformed(_))
    ));
    // A server name that is not a host name.
    let msg = hello(Some("bad name/"), 0);
    assert!(matches!(
        peek(&records(&msg, 100)),
        Err(NotHello::Malformed(_))
    ));
}

#[test]
fn a_real_rustls_client_hello() {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("real.example.org").unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut bytes = Vec::new();
    client.write_tls(&mut bytes).unwrap();
    assert_eq!(peek(&bytes), sni("real.example.org"));
}
