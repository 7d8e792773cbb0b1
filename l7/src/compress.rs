//! Response compression (`compress = ["zstd", "br", "gzip"]`): the coding is
//! chosen by the client's `Accept-Encoding` q-values (RFC 9110 §12.5.3), ties
//! going to the listener's order; only for the listed content types, above a
//! size, never for a response already encoded, partial (206 / Content-Range),
//! marked `no-transform` (RFC 9111 §5.2.2.6) or without a body. The body is
//! encoded as it streams, a few KiB at a time, and `Vary: Accept-Encoding` is
//! added.

use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use async_compression::Level;
use futures_util::TryStreamExt as _;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyDataStream, BodyExt as _, StreamBody};
use hyper::body::Frame;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::upstream::ProxyBody;

/// A content coding fulcrum can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Zstd,
    Br,
    Gzip,
}

impl Coding {
    pub fn parse(name: &str) -> Option<Coding> {
        match name {
            "zstd" => Some(Coding::Zstd),
            "br" => Some(Coding::Br),
            "gzip" => Some(Coding::Gzip),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// A listener's compression settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compress {
    /// In the operator's order of preference.
    pub codings: Vec<Coding>,
    /// Media types compressed (`text/` ends in a slash: every text type).
    pub types: Vec<String>,
    /// Bodies of a known length under this are sent as they are.
    pub min_size: u64,
}

/// Types worth compressing when the operator names none (nginx's `gzip_types`
/// idea, widened to what sites serve as text).
pub const DEFAULT_TYPES: [&str; 7] = [
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "image/svg+xml",
    "application/wasm",
];

/// Smallest body compressed by default.
pub const DEFAULT_MIN_SIZE: u64 = 1024;

impl Compress {
    /// The coding this response gets, if any.
    pub fn choose(
        &self,
        accept: Option<&HeaderValue>,
        head: bool,
        response: &Response<ProxyBody>,
    ) -> Option<Coding> {
        let headers = response.headers();
        if head
            || response.status() != StatusCode::OK
            || headers.contains_key(header::CONTENT_ENCODING)
            || headers.contains_key(header::CONTENT_RANGE)
        {
            return None;
        }
        let no_transform = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|d| d.trim().eq_ignore_ascii_case("no-transform"));
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if no_transform || length.is_some_and(|n| n < self.min_size) {
            return None;
        }
        let media = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })?;
        let listed = self.types.iter().any(|t| match t.strip_suffix('/') {
            Some(top) => media.split('/').next() == Some(top),
            None => media == *t,
        });
        if !listed {
            return None;
        }
        negotiate(accept?.to_str().ok()?, &self.codings)
    }
}

/// The best of `offered` for an `Accept-Encoding` value: the highest q wins,
/// ties go to the earlier in `offered`; q=0 refuses a coding, `*` stands for
/// every coding not named.
pub fn negotiate(accept: &str, offered: &[Coding]) -> Option<Coding> {
    let mut named: Vec<(&str, f32)> = Vec::new();
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        let mut q = 1.0f32;
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
        }
        named.push((name, q.clamp(0.0, 1.0)));
    }
    let star = named.iter().find(|(n, _)| *n == "*").map(|(_, q)| *q);
    let mut best: Option<(Coding, f32)> = None;
    for &coding in offered {
        let q = named
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(coding.name()))
            .map(|(_, q)| *q)
            .or(star)
            .unwrap_or(0.0);
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((coding, q));
        }
    }
    best.map(|(c, _)| c)
}

/// `response` with its body encoded as `coding` while it streams.
pub fn apply(response: Response<ProxyBody>, coding: Coding) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.name()),
    );
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    // The bytes differ from the backend's: a strong validator would lie (RFC 9110
    // §8.8.1); nginx weakens it the same way.
    if let Some(tag) = parts.headers.get(header::ETAG).cloned() {
        if !tag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(tag.as_bytes());
            match HeaderValue::from_bytes(&weak) {
                Ok(weak) => parts.headers.insert(header::ETAG, weak),
                Err(_) => parts.headers.remove(header::ETAG),
            };
        }
    }
    let source = StreamReader::new(BodyDataStream::new(body).map_err(std::io::Error::other));
    let body = match coding {
        // Levels that keep a stream's memory small (a few hundred KiB at most).
        Coding::Zstd => encoded(ZstdEncoder::with_quality(source, Level::Precise(3))),
        Coding::Br => encoded(BrotliEncoder::with_quality(source, Level::Precise(4))),
        Coding::Gzip => encoded(GzipEncoder::with_quality(source, Level::Default)),
    };
    Response::from_parts(parts, body)
}

fn encoded<R>(encoder: R) -> ProxyBody
where
    R: tokio::io::AsyncRead + Send + Sync + 'static,
{
    let frames = ReaderStream::with_capacity(encoder, 8 * 1024)
        .map_ok(Frame::data)
        .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
    ProxyBody::Encoded(StreamBody::new(frames).boxed())
}

#[cfg(test)]
mod tests {
    use super::{negotiate, Coding};

    const ALL: [Coding; 3] = [Coding::Zstd, Coding::Br, Coding::Gzip];

    #[test]
    fn q_values_choose_the_coding() {
        assert_eq!(negotiate("gzip", &ALL), Some(Coding::Gzip));
        assert_eq!(negotiate("gzip, br", &ALL), Some(Coding::Br));
        assert_eq!(
            negotiate("gzip;q=1.0, br;q=0.5, zstd;q=0.8", &ALL),
            Some(Coding::Gzip)
        );
        assert_eq!(negotiate("br;q=0, gzip;q=0.1", &ALL), Some(Coding::Gzip));
        assert_eq!(negotiate("*", &ALL), Some(Coding::Zstd));
        assert_eq!(negotiate("*;q=0.5, zstd;q=0", &ALL), Some(Coding::Br));
        assert_eq!(negotiate("identity", &ALL), None);
        assert_eq!(negotiate("", &ALL), None);
        assert_eq!(negotiate("GZIP;Q=0.7", &[Coding::Gzip]), Some(Coding::Gzip));
        assert_eq!(negotiate("deflate, compress", &ALL), None);
    }
}
