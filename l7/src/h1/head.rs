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

/// The framing headers of one head, each seen at most once.
#[derive(Default)]
struct Framing<'a> {
    length: Option<&'a [u8]>,
    lengths: u32,
    coding: Option<&'a [u8]>,
    codings: u32,
}

impl<'a> Framing<'a> {
    fn of(headers: &[Header<'a>]) -> Self {
        let mut f = Framing::default();
        for h in headers {
            if h.name.eq_ignore_ascii_case("content-length") {
                f.length = Some(h.value);
                f.lengths += 1;
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                f.coding = Some(h.value);
                f.codings += 1;
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
    let framing = Framing::of(headers);
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
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Body::Empty);
    }
    let framing = Framing::of(headers);
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
