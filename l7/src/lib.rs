//! fulcrum's Layer 7 (HTTP) mode: routing, header rewriting, splits and sticky
//! sessions over the l4 pools and balancers, served with hyper.

#![forbid(unsafe_code)]

mod body;
mod choice;
pub mod compress;
mod grpc;
pub mod h1;
pub mod health;
pub mod limit;
mod listener;
mod proxy;
pub mod refusal;
pub mod retry;
pub mod rewrite;
pub mod route;
pub mod shared_limit;
pub mod sticky;
pub mod tls;
pub mod upstream;
pub mod vet;

pub use listener::{
    resume, serve, Http1Engine, Listener, Settings, Stats, Upstream, DEFAULT_BODY_READ_TIMEOUT,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_REQUEST_BUFFER, DEFAULT_REQUEST_TIMEOUT,
};
