//! The runtime write API under `/api/`: reads a write (path, method, JSON body),
//! checks the bearer token, and hands the server a [`Command`]; the server's
//! answer becomes the JSON reply.
//!
//! ```text
//! PUT    /api/pools/{pool}/backends/{addr}           {"state":"drain"} and/or {"weight":5}
//! POST   /api/pools/{pool}/backends                  {"addr":"10.0.0.1:80","weight":2}
//! DELETE /api/pools/{pool}/backends/{addr}           remove (its connections drain)
//! DELETE /api/pools/{pool}/backends/{addr}/override  back to what the config says
//! POST   /api/upgrade                                start the new binary, hand over, drain
//! ```

use std::net::SocketAddr;
use std::num::NonZeroU32;

use fulcrum_l4::pool::AdminState;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Token, MAX_WEIGHT};

/// Largest write body read.
const MAX_BODY: usize = 64 * 1024;

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Backend(Command),
    /// Start the binary anew and hand everything over (`fulcrum upgrade`).
    Upgrade,
}

/// One runtime change to one backend of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub pool: String,
    pub addr: SocketAddr,
    pub change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A state, a weight, or both.
    Set {
        state: Option<AdminState>,
        weight: Option<NonZeroU32>,
    },
    Add {
        weight: Option<NonZeroU32>,
    },
    Remove,
    /// Drops every override of the backend.
    Clear,
}

/// Why a write was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

impl Refused {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Refused {
        Refused {
            status,
            message: message.into(),
        }
    }
}

/// What the server says of a command: what changed, or why nothing did.
pub type Outcome = Result<String, Refused>;

/// Where the admin listener sends commands; the server's control loop answers.
pub type Commands = mpsc::UnboundedSender<(Write, oneshot::Sender<Outcome>)>;

/// Who may write.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The listener is on loopback or a unix socket: this host only.
    pub local: bool,
    pub token: Option<Token>,
}

impl Auth {
    fn check<B>(&self, req: &Request<B>) -> Result<(), Refused> {
        if self.local {
            return Ok(());
        }
        let Some(token) = &self.token else {
            return Err(Refused::new(
                StatusCode::FORBIDDEN,
                "writes to an admin listener off loopback need [admin] token_file; \
                 or bind it to 127.0.0.1 or a unix: socket",
            ));
        };
        let offered = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        match offered {
            Some(offered) if token.matches(offered) => Ok(()),
            _ => Err(Refused::new(
                StatusCode::UNAUTHORIZED,
                "writes need Authorization: Bearer <the token in [admin] token_file>",
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    state: Option<String>,
    weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    addr: String,
    weight: Option<u32>,
}

/// Reads one write, or says why it is refused.
pub async fn read(req: Request<Incoming>, auth: &Auth) -> Result<Write, Refused> {
    if req.uri().path() == "/api/upgrade" {
        if req.method() != Method::POST {
            return Err(Refused::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST /api/upgrade starts the new binary",
            ));
        }
        auth.check(&req)?;
        return Ok(Write::Upgrade);
    }
    read_backend(req, auth).await.map(Write::Backend)
}

async fn read_backend(req: Request<Incoming>, auth: &Auth) -> Result<Command, Refused> {
    let segments: Vec<String> = req
        .uri()
        .path()
        .trim_start_matches("/api/")
        .split('/')
        .map(decode)
        .collect::<Result<_, _>>()?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let (pool, addr, tail) = match segments.as_slice() {
        ["pools", pool, "backends"] => (*pool, None, None),
        ["pools", pool, "backends", addr] => (*pool, Some(*addr), None),
        ["pools", pool, "backends", addr, tail] => (*pool, Some(*addr), Some(*tail)),
        _ => return Err(Refused::new(StatusCode::NOT_FOUND, USAGE)),
    };
    let pool = pool.to_owned();
    let allowed = match (addr, tail) {
        (None, _) => "POST",
        (Some(_), None) => "PUT, DELETE",
        (Some(_), Some("override")) => "DELETE",
        (Some(_), Some(_)) => return Err(Refused::new(StatusCode::NOT_FOUND, USAGE)),
    };
    if !allowed.split(", ").any(|m| m == method.as_str()) {
        return Err(Refused::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} {}: use {allowed}", method, req.uri().path()),
        ));
    }
    auth.check(&req)?;
    let addr = addr.map(parse_addr).transpose()?;
    let body = read_body(req).await?;
    let command = match (method, addr, tail) {
        (Method::POST, None, _) => {
            let add: AddBody = json(&body)?;
            Command {
                pool,
                addr: parse_addr(&add.addr)?,
                change: Change::Add {
                    weight: add.weight.map(weight).transpose()?,
                },
            }
        }
        (Method::PUT, Some(addr), None) => {
            let set: SetBody = json(&body)?;
            let state = set
                .state
                .map(|s| s.parse::<AdminState>())
                .transpose()
                .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, e))?;
            let weight = set.weight.map(weight).transpose()?;
            if state.is_none() && weight.is_none() {
                return Err(Refused::new(
                    StatusCode::BAD_REQUEST,
                    r#"nothing to change: send {"state":"drain"} (ready, drain, maint) and/or {"weight":5}"#,
                ));
            }
            Command {
                pool,
                addr,
                change: Change::Set { state, weight },
            }
        }
        (Method::DELETE, Some(addr), None) => Command {
            pool,
            addr,
            change: Change::Remove,
        },
        (Method::DELETE, Some(addr), Some(_)) => Command {
            pool,
            addr,
            change: Change::Clear,
        },
        _ => return Err(Refused::new(StatusCode::NOT_FOUND, USAGE)),
    };
    Ok(command)
}

/// Hands `write` to the server and waits for its answer.
pub async fn carry_out(commands: &Commands, write: Write) -> Outcome {
    let (tx, rx) = oneshot::channel();
    let gone = || Refused::new(StatusCode::SERVICE_UNAVAILABLE, "fulcrum is shutting down");
    commands.send((write, tx)).map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?
}

const USAGE: &str = "unknown API path: PUT or DELETE /api/pools/POOL/backends/ADDR, \
     POST /api/pools/POOL/backends, DELETE /api/pools/POOL/backends/ADDR/override, \
     POST /api/upgrade";

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Refused> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) => Err(Refused::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body (at most {MAX_BODY} bytes): {e}"),
        )),
    }
}

fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Refused> {
    serde_json::from_slice(body)
        .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

fn weight(n: u32) -> Result<NonZeroU32, Refused> {
    NonZeroU32::new(n)
        .filter(|w| w.get() <= MAX_WEIGHT)
        .ok_or_else(|| {
            Refused::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "weight {n} is out of range: 1 to {MAX_WEIGHT} (to stop traffic, drain it)"
                ),
            )
        })
}

fn parse_addr(text: &str) -> Result<SocketAddr, Refused> {
    text.parse().map_err(|_| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            format!("`{text}` is not IP:PORT (e.g. 10.0.0.1:80 or [::1]:80)"),
        )
    })
}

/// Undoes percent-encoding in one path segment (`%5B::1%5D:80`).
fn decode(segment: &str) -> Result<String, Refused> {
    let bad = || {
        Refused::new(
            StatusCode::BAD_REQUEST,
            format!("bad escape in `{segment}`"),
        )
    };
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn segments_decode_and_bad_escapes_are_refused() {
        assert_eq!(decode("%5B::1%5D:80").ok().as_deref(), Some("[::1]:80"));
        assert_eq!(decode("web").ok().as_deref(), Some("web"));
        assert!(decode("%5").is_err());
        assert!(decode("%zz").is_err());
        assert!(decode("%FF").is_err());
    }
}
