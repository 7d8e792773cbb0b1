//! fulcrum's Layer 7 (HTTP) mode: routing, header rewriting, splits and sticky
//! sessions over the l4 pools and balancers. HTTP/1 clients are served by
//! fulcrum's own path (`h1`), HTTP/2 clients and the rest by hyper (`hyper_conn`);
//! both take their settings from `settings` and their routing from `choice`.

#![forbid(unsafe_code)]

mod body;
mod choice;
pub mod compress;
mod conn;
mod grpc;
pub mod h1;
pub mod health;
mod hyper_conn;
mod idle;
pub mod limit;
mod listener;
pub mod path;
mod proxy;
pub mod refusal;
pub mod retry;
pub mod rewrite;
pub mod route;
mod send_timeout;
mod settings;
pub mod shared_limit;
pub mod sticky;
pub mod tcp_or_tls;
pub mod tls;
pub mod upstream;
pub mod vet;

pub use listener::{resume, serve};
pub use settings::{
    Http1Engine, Listener, Settings, Stats, Upstream, DEFAULT_BODY_READ_TIMEOUT,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_HTTP2_IDLE_TIMEOUT, DEFAULT_REQUEST_BUFFER,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SEND_TIMEOUT,
};
