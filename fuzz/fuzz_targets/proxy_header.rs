//! The PROXY protocol header parser on arbitrary bytes: it must never panic, never
//! claim more bytes than it was given, keep its verdict when more bytes follow a
//! header, and read back exactly what the encoder wrote.
#![no_main]

use std::net::SocketAddr;

use fulcrum_l4::proxy_protocol::{encode, parse, Parsed, Transport, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let verdict = parse(data);
    if let Ok(Parsed::Header { len, .. }) = &verdict {
        assert!(*len <= data.len());
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\r\nmore");
        assert_eq!(parse(&longer), verdict);
    }
    // Addresses from the input, through the encoder and back.
    if data.len() >= 13 {
        let ip: [u8; 4] = [data[0], data[1], data[2], data[3]];
        let port = u16::from_be_bytes([data[4], data[5]]);
        let client = SocketAddr::from((ip, port));
        let local = SocketAddr::from(([10, 0, 0, 1], 443));
        let version = if data[6] & 1 == 0 {
            Version::V1
        } else {
            Version::V2
        };
        let header = encode(version, client, local, Transport::Stream);
        assert_eq!(
            parse(&header),
            Ok(Parsed::Header {
                len: header.len(),
                client: Some(client)
            })
        );
    }
});
