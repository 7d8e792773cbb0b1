//! Health probes that speak a pool's own HTTP: `kind = "http"` over TLS or
//! HTTP/2 when the pool has them, and `kind = "grpc"`, the gRPC health protocol
//! (grpc.health.v1.Health/Check, https://github.com/grpc/grpc/blob/master/doc/health-checking.md).
//! Each probe opens a connection of its own, as HAProxy's checks do.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::{Buf, Bytes};
use fulcrum_l4::health::{ProbeFuture, Prober};
use http::header::{HeaderValue, CONTENT_TYPE, HOST, TE, USER_AGENT};
use http::{Method, Request};
use http_body_util::{BodyExt, Limited};

use crate::body::RequestBody;
use crate::grpc;
use crate::tls::UpstreamTls;
use crate::upstream::{self, HttpVersion};

/// Most response bytes a probe reads.
const MAX_BODY: usize = 64 * 1024;

/// `GET path` in the pool's HTTP version, over its TLS; the status must be in range.
#[derive(Debug)]
pub struct HttpProbe {
    pub path: String,
    pub host: Option<String>,
    pub status: RangeInclusive<u16>,
    pub tls: Option<UpstreamTls>,
    pub version: HttpVersion,
    /// Bounds the connect and handshakes (the check's timeout bounds the whole).
    pub timeout: Duration,
}

/// grpc.health.v1.Health/Check for `service` ("" is the server as a whole) over
/// HTTP/2 (h2c, or ALPN h2 over the pool's TLS); healthy when it says SERVING.
#[derive(Debug)]
pub struct GrpcProbe {
    pub service: String,
    pub tls: Option<UpstreamTls>,
    pub timeout: Duration,
}

impl Prober for HttpProbe {
    fn probe(&self, addr: SocketAddr) -> ProbeFuture<'_> {
        Box::pin(async move {
            let host = self.host.clone().unwrap_or_else(|| addr.to_string());
            let req = Request::builder()
                .method(Method::GET)
                .uri(self.path.as_str())
                .header(HOST, host)
                .header(USER_AGENT, "fulcrum-health")
                .body(RequestBody::full(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let tls = self.tls.as_ref();
            let response = upstream::one_off(addr, self.timeout, tls, self.version, req)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            if !self.status.contains(&status) {
                return Err(format!("HTTP status {status} outside the expected range"));
            }
            // Read the body, so that the backend sees a whole exchange.
            let _ = Limited::new(response.into_body(), MAX_BODY).collect().await;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        let over = match (self.version, self.tls.is_some()) {
            (HttpVersion::Http1, false) => "",
            (HttpVersion::Http1, true) => " over TLS",
            (HttpVersion::Http2, false) => " over h2c",
            (HttpVersion::Http2, true) => " over TLS (h2)",
            (HttpVersion::Auto, true) => " over TLS (h2 or http/1.1 by ALPN)",
            (HttpVersion::Auto, false) => "",
        };
        format!(
            "http GET {}{over} expecting {}-{}",
            self.path,
            self.status.start(),
            self.status.end()
        )
    }
}

impl Prober for GrpcProbe {
    fn probe(&self, addr: SocketAddr) -> ProbeFuture<'_> {
        Box::pin(async move {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/grpc.health.v1.Health/Check")
                .header(HOST, addr.to_string())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
                .header(TE, HeaderValue::from_static("trailers"))
                .header(USER_AGENT, "fulcrum-health")
                .body(RequestBody::full(check_request(&self.service)))
                .map_err(|e| e.to_string())?;
            let tls = self.tls.as_ref();
            let response = upstream::one_off(addr, self.timeout, tls, HttpVersion::Http2, req)
                .await
                .map_err(|e| e.to_string())?;
            if response.status() != 200 {
                return Err(format!("HTTP status {} to a gRPC call", response.status()));
            }
            let in_head = grpc::status_of(response.headers());
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            let code = in_head.or_else(|| body.trailers().and_then(grpc::status_of));
            match code {
                Some(0) => {}
                Some(code) => return Err(format!("grpc-status {code}")),
                None => return Err("no grpc-status in the answer".to_owned()),
            }
            match serving_status(body.to_bytes()) {
                Some(SERVING) => Ok(()),
                Some(other) => Err(format!("health status {other} (not SERVING)")),
                None => Err("malformed HealthCheckResponse".to_owned()),
            }
        })
    }

    fn describe(&self) -> String {
        let over = if self.tls.is_some() {
            "TLS (h2)"
        } else {
            "h2c"
        };
        match self.service.as_str() {
            "" => format!("grpc health over {over}"),
            service => format!("grpc health of `{service}` over {over}"),
        }
    }
}

/// HealthCheckResponse.ServingStatus SERVING.
const SERVING: u64 = 1;

/// A HealthCheckRequest { string service = 1; } in a gRPC frame (1 byte flag,
/// 4 bytes length, the protobuf message).
fn check_request(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

/// `status` (field 1, a varint) of the HealthCheckResponse in a gRPC frame; 0
/// (UNKNOWN) when absent, as protobuf defaults it.
fn serving_status(mut frame: Bytes) -> Option<u64> {
    if frame.len() < 5 || frame[0] != 0 {
        return None;
    }
    frame.advance(1);
    let len = frame.get_u32() as usize;
    let mut message = frame.get(..len)?;
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match key & 7 {
            0 => {
                let value = varint(&mut message)?;
                if key >> 3 == 1 {
                    status = value;
                }
            }
            2 => {
                let len = usize::try_from(varint(&mut message)?).ok()?;
                message = message.get(len..)?;
            }
            _ => return None,
        }
    }
    Some(status)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn varint(input: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages_are_framed_and_parsed() {
        assert_eq!(&check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &check_request("svc")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b's', b'v', b'c']
        );
        let frame = |m: &[u8]| {
            let mut f = vec![0, 0, 0, 0, m.len() as u8];
            f.extend_from_slice(m);
            Bytes::from(f)
        };
        assert_eq!(serving_status(frame(&[0x08, 0x01])), Some(SERVING));
        assert_eq!(serving_status(frame(&[0x08, 0x02])), Some(2));
        assert_eq!(serving_status(frame(&[])), Some(0));
        // An unknown length-delimited field is skipped.
        assert_eq!(
            serving_status(frame(&[0x12, 1, b'x', 0x08, 1])),
            Some(SERVING)
        );
        assert_eq!(serving_status(frame(&[0x08])), None);
        assert_eq!(
            serving_status(Bytes::from_static(&[0, 0, 0, 0, 9, 8])),
            None
        );
        assert_eq!(serving_status(Bytes::from_static(&[1, 0, 0, 0, 0])), None);
    }
}
