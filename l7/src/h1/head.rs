//! How a parsed HTTP/1 head delimits its body (RFC 9112 §6): the one decision a
//! proxy must make exactly as the peer behind it does, or bodies get smuggled.

use httparse::Header;

/// Headers in one head, at most: more is refused (HAProxy's default is 101).
pub const MAX_HEADERS: usize = 100;

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body: a request with neither header, a response to HEAD, 1xx, 204, 304.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response that runs until the backend closes.
    Close,
}

/// A head whose framing fulcrum will not guess at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// The answer for a request (400, or 501 for an unknown coding).
    pub status: u16,
    pub why: &'static str,
}

const fn malformed(status: u16, why: &'static str) -> Malformed {
    Malformed { status, why }
}

/// The header fields the HTTP/1 path acts on. Told apart by the name's length
/// first: one comparison per field of a head rather than one per name it could be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Forwarded,
    Other,
}

impl Field {
    #[inline(always)]
    pub(super) fn of(name: &str) -> Field {
        let name = name.as_bytes();
        // Every known name is letters and '-': setting bit 0x20 lowers a letter
        // and keeps '-', and no other token byte (RFC 9110 §5.6.2) becomes one.
        // The arm's length makes the two the same length.
        let is = |known: &str| {
            name.iter()
                .zip(known.as_bytes())
                .all(|(&b, &k)| b | 0x20 == k)
        };
        match name.len() {
            2 if is("te") => Field::Te,
            4 if is("host") => Field::Host,
            6 if is("expect") => Field::Expect,
            7 if is("upgrade") => Field::Upgrade,
            9 if is("forwarded") => Field::Forwarded,
            10 if is("connection") => Field::Connection,
            10 if is("keep-alive") => Field::KeepAlive,
            14 if is("content-length") => Field::ContentLength,
            15 if is("x-forwarded-for") => Field::XForwardedFor,
            16 if is("proxy-connection") => Field::ProxyConnection,
            16 if is("x-forwarded-host") => Field::XForwardedHost,
            17 if is("transfer-encoding") => Field::TransferEncoding,
            17 if is("x-forwarded-proto") => Field::XForwardedProto,
            _ => Field::Other,
        }
    }

    /// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1).
    /// `transfer-encoding` is not among them here: bodies keep their framing.
    pub(super) fn hop_by_hop(self) -> bool {
        matches!(
            self,
            Field::Connection
                | Field::KeepAlive
                | Field::ProxyConnection
                | Field::Te
                | Field::Upgrade
        )
    }
}

/// Which of the fields the path acts on a head has, found in the pass that reads
/// its framing: later steps skip a search for what is not there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields {
    seen: u16,
    /// The first Host field's place, and how many there are.
    pub(super) host: Option<u8>,
    pub(super) hosts: u8,
}

impl Fields {
    pub(super) fn has(self, field: Field) -> bool {
        self.seen & (1 << field as u16) != 0
    }
}

/// The framing headers of one head, each seen at most once.
#[derive(Default)]
pub(super) struct Framing<'a> {
    length: Option<&'a [u8]>,
    lengths: u32,
    coding: Option<&'a [u8]>,
    codings: u32,
    pub(super) fields: Fields,
}

impl<'a> Framing<'a> {
    pub(super) fn of(headers: &[Header<'a>]) -> Self {
        let mut f = Framing::default();
        for (i, h) in headers.iter().enumerate() {
            let field = Field::of(h.name);
            f.fields.seen |= 1 << field as u16;
            match field {
                Field::Host => {
                    // At most MAX_HEADERS (100) fields: the place fits.
                    f.fields.host = f.fields.host.or(u8::try_from(i).ok());
                    f.fields.hosts = f.fields.hosts.saturating_add(1);
                }
                Field::ContentLength => {
                    f.length = Some(h.value);
                    f.lengths += 1;
                }
                Field::TransferEncoding => {
                    f.coding = Some(h.value);
                    f.codings += 1;
                }
                _ => {}
            }
        }
        f
    }

    /// `chunked` and nothing else, as one header: what fulcrum forwards unchanged.
    fn chunked(&self) -> Result<(), Malformed> {
        let Some(value) = self.coding.filter(|_| self.codings == 1) else {
            return Err(malformed(400, "more than one Transfer-Encoding header"));
        };
        let value = trim(value);
        if value.eq_ignore_ascii_case(b"chunked") {
            return Ok(());
        }
        if value
            .split(|&b| b == b',')
            .all(|c| trim(c).eq_ignore_ascii_case(b"chunked"))
        {
            // §6.1: chunked applied more than once.
            return Err(malformed(400, "invalid Transfer-Encoding"));
        }
        // §6.1: a coding the server does not understand is answered 501.
        Err(malformed(
            501,
            "transfer codings other than chunked are not supported",
        ))
    }

    /// One Content-Length of 1*DIGIT (RFC 9110 §8.6), no list, sign or space.
    fn length(&self) -> Result<u64, Malformed> {
        let Some(value) = self.length.filter(|_| self.lengths == 1) else {
            return Err(malformed(400, "more than one Content-Length header"));
        };
        let value = trim(value);
        if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
            return Err(malformed(400, "invalid Content-Length"));
        }
        Ok(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
    }
}

/// How the body of a request with these headers ends (§6.3 rules 3–6); `minor` is
/// the HTTP/1.x minor version.
pub fn request_body(minor: u8, headers: &[Header<'_>]) -> Result<Body, Malformed> {
    request_framed(minor, &Framing::of(headers))
}

/// As [`request_body`], from the head's framing fields.
pub(super) fn request_framed(minor: u8, framing: &Framing<'_>) -> Result<Body, Malformed> {
    if framing.codings > 0 {
        if minor == 0 {
            // §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
            return Err(malformed(400, "Transfer-Encoding in an HTTP/1.0 request"));
        }
        // An unknown coding is 501 whatever else the head says (as hyper's path).
        framing.chunked()?;
        if framing.lengths > 0 {
            // §6.3: a sign of smuggling; refused rather than one length picked.
            return Err(malformed(400, "both Transfer-Encoding and Content-Length"));
        }
        return Ok(Body::Chunked);
    }
    if framing.lengths > 0 {
        return Ok(match framing.length()? {
            0 => Body::Empty,
            n => Body::Length(n),
        });
    }
    Ok(Body::Empty)
}

/// How the body of a response with this status and headers ends (§6.3 rules 1–7),
/// for a request whose method was HEAD or not.
pub fn response_body(
    status: u16,
    head_request: bool,
    headers: &[Header<'_>],
) -> Result<Body, Malformed> {
    response_framed(status, head_request, &Framing::of(headers))
}

/// As [`response_body`], from the head's framing fields.
pub(super) fn response_framed(
    status: u16,
    head_request: bool,
    framing: &Framing<'_>,
) -> Result<Body, Malformed> {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Body::Empty);
    }
    if framing.codings > 0 {
        if framing.lengths > 0 {
            return Err(malformed(502, "both Transfer-Encoding and Content-Length"));
        }
        return match framing.chunked() {
            Ok(()) => Ok(Body::Chunked),
            // §6.3 rule 4: not chunked last: the body runs to the close.
            Err(m) if m.status == 501 => Ok(Body::Close),
            Err(_) => Err(malformed(502, "invalid Transfer-Encoding")),
        };
    }
    if framing.lengths > 0 {
        return framing
            .length()
            .map(Body::Length)
            .map_err(|m| malformed(502, m.why));
    }
    Ok(Body::Close)
}

/// `value` without the optional whitespace around it (RFC 9110 §5.5).
pub(super) fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<Header<'a>> {
        pairs
            .iter()
            .map(|(n, v)| Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect()
    }

    #[test]
    fn fields_are_told_apart_by_name_in_any_case() {
        let cases = [
            ("TE", Field::Te),
            ("Host", Field::Host),
            ("hosT", Field::Host),
            ("Expect", Field::Expect),
            ("UPGRADE", Field::Upgrade),
            ("Forwarded", Field::Forwarded),
            ("Connection", Field::Connection),
            ("Keep-Alive", Field::KeepAlive),
            ("Content-Length", Field::ContentLength),
            ("X-Forwarded-For", Field::XForwardedFor),
            ("Proxy-Connection", Field::ProxyConnection),
            ("X-Forwarded-Host", Field::XForwardedHost),
            ("Transfer-Encoding", Field::TransferEncoding),
            ("X-Forwarded-Proto", Field::XForwardedProto),
            // Same lengths, other names.
            ("user-agent", Field::Other),
            ("hostx", Field::Other),
            ("hos", Field::Other),
            ("content-lengtx", Field::Other),
            ("x-forwarded-fox", Field::Other),
            ("", Field::Other),
        ];
        for (name, field) in cases {
            assert_eq!(Field::of(name), field, "{name}");
        }
        assert!(Field::Upgrade.hop_by_hop() && !Field::TransferEncoding.hop_by_hop());
        // Bytes that are not letters or '-' never pass for one.
        for name in ["^ost", "h\x0fst", "hos\x14", "\x08ost"] {
            assert_eq!(Field::of(name), Field::Other, "{name:?}");
        }
        // One byte changed anywhere in a known name makes it another name.
        for (known, _) in cases.iter().filter(|(_, f)| *f != Field::Other) {
            for at in 0..known.len() {
                let mut other = known.as_bytes().to_vec();
                // No known name has a digit.
                other[at] = b'9';
                let other = String::from_utf8(other).unwrap_or_default();
                assert_eq!(Field::of(&other), Field::Other, "{other}");
            }
        }
        let fields = Framing::of(&headers(&[("a", "1"), ("Host", "x"), ("host", "y")])).fields;
        assert_eq!((fields.host, fields.hosts), (Some(1), 2));
        assert!(fields.has(Field::Host) && !fields.has(Field::Connection));
    }

    #[test]
    fn requests_frame_by_length_chunked_or_nothing() {
        let req = |pairs: &[(&str, &str)]| request_body(1, &headers(pairs));
        assert_eq!(req(&[]), Ok(Body::Empty));
        assert_eq!(req(&[("Content-Length", " 12 ")]), Ok(Body::Length(12)));
        assert_eq!(req(&[("content-length", "0")]), Ok(Body::Empty));
        assert_eq!(req(&[("Transfer-Encoding", "Chunked")]), Ok(Body::Chunked));
        let status = |pairs: &[(&str, &str)]| req(pairs).map_err(|m| m.status);
        for bad in [
            &[("content-length", "5"), ("content-length", "5")][..],
            &[("content-length", "5, 5")],
            &[("content-length", "+5")],
            &[("content-length", "")],
            &[("content-length", "99999999999999999999")],
            &[("transfer-encoding", "chunked"), ("content-length", "5")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "chunked, chunked")],
        ] {
            assert_eq!(status(bad), Err(400), "{bad:?}");
        }
        assert_eq!(status(&[("transfer-encoding", "gzip, chunked")]), Err(501));
        assert_eq!(
            request_body(0, &headers(&[("transfer-encoding", "chunked")])).map_err(|m| m.status),
            Err(400)
        );
    }

    #[test]
    fn responses_follow_rfc_9112_section_6_3() {
        let chunked = headers(&[("transfer-encoding", "chunked")]);
        assert_eq!(response_body(204, false, &chunked), Ok(Body::Empty));
        assert_eq!(response_body(304, false, &chunked), Ok(Body::Empty));
        assert_eq!(response_body(101, false, &chunked), Ok(Body::Empty));
        assert_eq!(response_body(200, true, &chunked), Ok(Body::Empty));
        assert_eq!(response_body(200, false, &chunked), Ok(Body::Chunked));
        let gzip = headers(&[("transfer-encoding", "gzip")]);
        assert_eq!(response_body(200, false, &gzip), Ok(Body::Close));
        assert_eq!(response_body(200, false, &[]), Ok(Body::Close));
        let length = headers(&[("content-length", "7")]);
        assert_eq!(response_body(200, false, &length), Ok(Body::Length(7)));
        let both = headers(&[("content-length", "7"), ("transfer-encoding", "chunked")]);
        assert_eq!(
            response_body(200, false, &both).map_err(|m| m.status),
            Err(502)
        );
    }
}
