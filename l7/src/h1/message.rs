//! One HTTP/1 message at a time out of a byte stream: the head parsed in place
//! once it is whole, then the body scanned to its end by its framing.

use std::mem::MaybeUninit;
use std::ops::Range;

use httparse::Header;

use super::chunked::{ChunkError, Chunked};
use super::head::{request_framed, response_framed, Body, Fields, Framing, Malformed, MAX_HEADERS};

/// Longest head accepted (HAProxy's `tune.bufsize` default is 16 KiB; hyper's
/// limit is larger): more is refused with 431 (a response: 502).
pub const MAX_HEAD: usize = 64 * 1024;

/// What is being framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    /// A response, to a HEAD request or not (§6.3 rule 1).
    Response {
        head_request: bool,
    },
}

/// A parsed head: where its parts lie in the buffer it was parsed from, and how
/// its body ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Bytes of the head, its final CRLF included.
    pub head_len: usize,
    /// The `x` of HTTP/1.x.
    pub minor: u8,
    pub body: Body,
    /// Requests: the method and request target (responses: the reason phrase
    /// is `target`).
    pub method: Range<usize>,
    pub target: Range<usize>,
    /// Responses: the status code.
    pub status: u16,
    /// Which fields the path acts on are in the head.
    pub fields: Fields,
}

/// Room for a head's fields, left uninitialized: httparse fills what it parses
/// (initializing 100 empty fields per head cost more than parsing most heads).
pub fn storage<'b>() -> [MaybeUninit<Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Why a stream of messages cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    Head(Malformed),
    Chunk(ChunkError),
}

/// Where `part` lies in `buf`; empty when it is not there: httparse answers a
/// static "" for a reason phrase that is absent or holds obs-text (a backend's
/// `HTTP/1.1 200` alone was an out-of-range slice, and the process aborted).
fn offset(buf: &[u8], part: &str) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= buf.len() => start..end,
        _ => 0..0,
    }
}

fn bad(status: u16, why: &'static str) -> Malformed {
    Malformed { status, why }
}

impl Message {
    /// Parses the head at the start of `buf`: `None` until it is whole.
    pub fn parse(buf: &[u8], kind: Kind) -> Result<Option<Message>, Malformed> {
        let mut headers = storage();
        Ok(Message::parse_with(buf, kind, &mut headers)?.map(|(m, _)| m))
    }

    /// As [`Message::parse`], with its header fields, parsed into `storage`.
    pub fn parse_with<'h, 'b>(
        buf: &'b [u8],
        kind: Kind,
        storage: &'h mut [MaybeUninit<Header<'b>>],
    ) -> Result<Option<(Message, &'h [Header<'b>])>, Malformed> {
        // httparse's defaults, as `Request::parse` and `Response::parse` use.
        let config = httparse::ParserConfig::default();
        let parsed = match kind {
            Kind::Request => {
                let mut req = httparse::Request::new(&mut []);
                match config.parse_request_with_uninit_headers(&mut req, buf, storage) {
                    Ok(httparse::Status::Complete(len)) => {
                        let (Some(method), Some(target), Some(minor)) =
                            (req.method, req.path, req.version)
                        else {
                            return Err(bad(400, "incomplete request line"));
                        };
                        let framing = Framing::of(req.headers);
                        let body = request_framed(minor, &framing)?;
                        let message = Message {
                            head_len: len,
                            minor,
                            body,
                            method: offset(buf, method),
                            target: offset(buf, target),
                            status: 0,
                            fields: framing.fields,
                        };
                        Some((message, &*req.headers))
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(bad(431, "too many header fields"))
                    }
                    Err(_) => return Err(bad(400, "malformed request head")),
                }
            }
            Kind::Response { head_request } => {
                let mut res = httparse::Response::new(&mut []);
                match config.parse_response_with_uninit_headers(&mut res, buf, storage) {
                    Ok(httparse::Status::Complete(len)) => {
                        let (Some(status), Some(minor)) = (res.code, res.version) else {
                            return Err(bad(502, "incomplete status line"));
                        };
                        let framing = Framing::of(res.headers);
                        let body = response_framed(status, head_request, &framing)?;
                        let message = Message {
                            head_len: len,
                            minor,
                            body,
                            // Responses: the reason phrase.
                            method: 0..0,
                            target: res.reason.map_or(0..0, |r| offset(buf, r)),
                            status,
                            fields: framing.fields,
                        };
                        Some((message, &*res.headers))
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(_) => return Err(bad(502, "malformed response head")),
                }
            }
        };
        match parsed {
            None if buf.len() >= MAX_HEAD => Err(match kind {
                Kind::Request => bad(431, "request head too large"),
                Kind::Response { .. } => bad(502, "response head too large"),
            }),
            parsed => Ok(parsed),
        }
    }
}

/// Where a body is up to.
#[derive(Debug, Clone)]
pub enum BodyEnd {
    Length(u64),
    Chunked(Chunked),
    /// Runs to the end of the stream.
    Close,
}

impl BodyEnd {
    pub fn new(body: Body) -> Self {
        match body {
            Body::Empty => BodyEnd::Length(0),
            Body::Length(n) => BodyEnd::Length(n),
            Body::Chunked => BodyEnd::Chunked(Chunked::new()),
            Body::Close => BodyEnd::Close,
        }
    }

    /// Scans the next bytes: `Some(n)` when the body ends after `n` of them.
    pub fn scan(&mut self, input: &[u8]) -> Result<Option<usize>, ChunkError> {
        match self {
            BodyEnd::Length(left) => {
                let take = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                *left -= take as u64;
                Ok((*left == 0).then_some(take))
            }
            BodyEnd::Chunked(c) => c.scan(input),
            BodyEnd::Close => Ok(None),
        }
    }
}

/// One whole message out of a [`Framer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framed {
    pub message: Message,
    /// The head's bytes.
    pub head: Vec<u8>,
    /// The body's length once decoded (chunk framing and trailers left out).
    pub body_len: u64,
}

/// Frames a stream of messages fed in pieces of any size: heads gathered until
/// whole, then bodies scanned. For tests and fuzzing of the framing as one piece.
#[derive(Debug)]
pub struct Framer {
    kind: Kind,
    head: Vec<u8>,
    body: Option<(Message, BodyEnd)>,
}

impl Framer {
    pub fn new(kind: Kind) -> Self {
        Framer {
            kind,
            head: Vec::new(),
            body: None,
        }
    }

    /// Feeds `input`; each message that ends in it goes to `done`, also those
    /// before an error.
    pub fn push(&mut self, mut input: &[u8], done: &mut Vec<Framed>) -> Result<(), FrameError> {
        while !input.is_empty() {
            if let Some((message, end)) = &mut self.body {
                match end.scan(input).map_err(FrameError::Chunk)? {
                    Some(n) => {
                        input = &input[n..];
                        let body_len = match (&*end, message.body) {
                            (BodyEnd::Chunked(c), _) => c.data_len(),
                            (_, Body::Length(n)) => n,
                            _ => 0,
                        };
                        done.push(Framed {
                            message: message.clone(),
                            head: std::mem::take(&mut self.head),
                            body_len,
                        });
                        self.body = None;
                    }
                    None => input = &[],
                }
                continue;
            }
            // Gather the head a byte run at a time, up to its final CRLF.
            let before = self.head.len();
            self.head.extend_from_slice(input);
            match Message::parse(&self.head, self.kind).map_err(FrameError::Head)? {
                None => input = &[],
                Some(message) => {
                    let used = message.head_len - before;
                    self.head.truncate(message.head_len);
                    input = &input[used..];
                    let end = BodyEnd::new(message.body);
                    if matches!(end, BodyEnd::Length(0)) {
                        done.push(Framed {
                            message,
                            head: std::mem::take(&mut self.head),
                            body_len: 0,
                        });
                    } else {
                        self.body = Some((message, end));
                    }
                }
            }
        }
        Ok(())
    }

    /// The message whose body is being scanned, if any.
    pub fn current(&self) -> Option<&Message> {
        self.body.as_ref().map(|(m, _)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, target, decoded body length) of each whole message in `stream`, fed
    /// whole and split at every byte boundary: all must agree.
    fn frame(stream: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
        let run = |pieces: &[&[u8]]| {
            let mut f = Framer::new(Kind::Request);
            let mut seen = Vec::new();
            for piece in pieces {
                let mut done = Vec::new();
                f.push(piece, &mut done)?;
                for framed in done {
                    let text =
                        |r: Range<usize>| String::from_utf8_lossy(&framed.head[r]).into_owned();
                    seen.push((text(framed.message.method), text(framed.message.target)));
                }
            }
            Ok(seen)
        };
        let whole = run(&[stream]);
        for cut in 0..=stream.len() {
            assert_eq!(
                run(&[&stream[..cut], &stream[cut..]]),
                whole,
                "split at {cut}"
            );
        }
        whole
    }

    #[test]
    fn pipelined_requests_end_where_their_framing_says() {
        let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /c\
            PUT /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\nGET\r\n0\r\nx: y\r\n\r\n\
            GET /e HTTP/1.1\r\nHost: x\r\n\r\nGET /partial";
        let seen = frame(stream).expect("frames");
        let paths: Vec<&str> = seen.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(paths, ["/a", "/b", "/d", "/e"]);
        assert_eq!(seen[1].0, "POST");
    }

    #[test]
    fn a_bad_head_or_body_stops_the_stream() {
        let smuggle = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\
            Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(matches!(frame(smuggle), Err(FrameError::Head(m)) if m.status == 400));
        let folded = b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n";
        assert!(matches!(frame(folded), Err(FrameError::Head(m)) if m.status == 400));
        let chunk = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n";
        assert_eq!(frame(chunk), Err(FrameError::Chunk(ChunkError::Size)));
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        let mut f = Framer::new(Kind::Request);
        let pushed = f.push(huge.as_bytes(), &mut Vec::new());
        assert!(matches!(pushed, Err(FrameError::Head(m)) if m.status == 431));
    }

    #[test]
    fn responses_to_head_and_304_have_no_body() {
        let mut f = Framer::new(Kind::Response { head_request: true });
        let mut got = Vec::new();
        f.push(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", &mut got)
            .expect("frames");
        assert_eq!(got.len(), 1);
        let mut f = Framer::new(Kind::Response {
            head_request: false,
        });
        let mut got = Vec::new();
        f.push(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\n\r\nbody",
            &mut got,
        )
        .expect("frames");
        assert_eq!(got.len(), 1);
        assert_eq!(f.current().map(|m| m.body), Some(Body::Close));
    }

    #[test]
    fn a_reason_phrase_absent_or_in_obs_text_is_empty() {
        let kind = Kind::Response {
            head_request: false,
        };
        for head in [
            &b"HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.0 002\n\n",
            b"HTTP/1.1 200 \xe9t\xe9\r\n\r\n",
        ] {
            let message = Message::parse(head, kind).ok().flatten();
            assert_eq!(message.map(|m| m.target), Some(0..0), "{head:?}");
        }
        let message = Message::parse(b"HTTP/1.1 404 Not Found\r\n\r\n", kind);
        assert_eq!(message.ok().flatten().map(|m| m.target), Some(13..22));
    }
}
