//! Peeking at a TLS ClientHello without terminating TLS: the server name (SNI) a
//! client asks for, read from the first bytes of a connection so that `tls`
//! listeners can route by it. Pure and bounded: it looks at a byte slice only,
//! handles a ClientHello split over several records and reads, and refuses
//! anything that is not a well-formed ClientHello.
//!
//! Formats: TLS record layer (RFC 8446 §5.1), ClientHello (RFC 8446 §4.1.2, the
//! same layout as RFC 5246 §7.4.1.2), server_name extension (RFC 6066 §3).

mod routes;

pub use routes::{HostMatch, SniRoutes};

/// Largest ClientHello accepted (handshake bytes), as the issue of record
/// reassembly bounds it: one full record's worth (2^14, RFC 8446 §5.1).
pub const MAX_HELLO: usize = 16 * 1024;
/// Most bytes of records (headers included) read before giving up on a hello.
pub const MAX_PEEK: usize = MAX_HELLO + 5 * 8;

const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// A ClientHello may follow: read more and ask again.
    NeedMore,
    /// A complete ClientHello, with its server name if it has one.
    Hello { sni: Option<String> },
}

/// Why the bytes are not a ClientHello fulcrum can route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotHello {
    #[error("not a TLS handshake record")]
    NotHandshake,
    #[error("not a ClientHello")]
    NotClientHello,
    #[error("ClientHello larger than {MAX_HELLO} bytes")]
    TooLarge,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// Looks at the first bytes a client sent.
pub fn peek(buf: &[u8]) -> Result<Peek, NotHello> {
    // Reassemble the handshake bytes from consecutive handshake records.
    let mut hello = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < RECORD_HEADER {
            // The first byte already tells a non-TLS client apart.
            if rest.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
                return Err(NotHello::NotHandshake);
            }
            return Ok(Peek::NeedMore);
        }
        if rest[0] != CONTENT_HANDSHAKE {
            return Err(NotHello::NotHandshake);
        }
        // legacy_record_version: 0x0301 (or 0x0300..=0x0303 from old clients).
        if rest[1] != 3 {
            return Err(NotHello::NotHandshake);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 {
            return Err(NotHello::Malformed("empty record"));
        }
        if len > MAX_HELLO {
            return Err(NotHello::TooLarge);
        }
        let Some(fragment) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
            return Ok(Peek::NeedMore);
        };
        hello.extend_from_slice(fragment);
        rest = &rest[RECORD_HEADER + len..];
        if hello.len() >= 4 {
            if hello[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(NotHello::NotClientHello);
            }
            let body = u32::from_be_bytes([0, hello[1], hello[2], hello[3]]) as usize;
            if body > MAX_HELLO {
                return Err(NotHello::TooLarge);
            }
            if hello.len() >= 4 + body {
                return parse_hello(&hello[4..4 + body]).map(|sni| Peek::Hello { sni });
            }
        }
        if hello.len() > MAX_HELLO {
            return Err(NotHello::TooLarge);
        }
    }
}

/// A cursor over a byte slice that never reads past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], NotHello> {
        if self.0.len() < n {
            return Err(NotHello::Malformed(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, NotHello> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, NotHello> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one- or two-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], NotHello> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], NotHello> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
}

/// The server name in a ClientHello body, if it has one.
fn parse_hello(body: &[u8]) -> Result<Option<String>, NotHello> {
    let mut r = Reader(body);
    r.take(2, "version")?;
    r.take(32, "random")?;
    let session_id = r.vec8("session id")?;
    if session_id.len() > 32 {
        return Err(NotHello::Malformed("session id longer than 32 bytes"));
    }
    let suites = r.vec16("cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(NotHello::Malformed("cipher suites"));
    }
    if r.vec8("compression methods")?.is_empty() {
        return Err(NotHello::Malformed("compression methods"));
    }
    if r.0.is_empty() {
        // An SSLv3-style hello without extensions: no SNI.
        return Ok(None);
    }
    let mut exts = Reader(r.vec16("extensions")?);
    let mut sni = None;
    while !exts.0.is_empty() {
        let kind = exts.u16("extension type")?;
        let data = exts.vec16("extension data")?;
        if kind == EXT_SERVER_NAME {
            if sni.is_some() {
                return Err(NotHello::Malformed("two server_name extensions"));
            }
            sni = server_name(data)?;
        }
    }
    Ok(sni)
}

/// The host name of a server_name extension (RFC 6066 §3), lowercased.
fn server_name(data: &[u8]) -> Result<Option<String>, NotHello> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vec16("server name list")?);
    while !list.0.is_empty() {
        let kind = list.u8("server name type")?;
        let name = list.vec16("server name")?;
        if kind != NAME_TYPE_HOST {
            continue;
        }
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid {
            return Err(NotHello::Malformed("server name is not a host name"));
        }
        // Checked ASCII above, so this cannot fail.
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        return Ok(Some(name));
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
