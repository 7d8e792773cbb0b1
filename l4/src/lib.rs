//! fulcrum's Layer 4 core: backend pools, balancing algorithms, and the TCP and UDP
//! data paths.
//!
//! Nothing here knows about HTTP, serde or TOML: the binary validates its config into
//! these types and hands over bound sockets.

#![forbid(unsafe_code)]

pub mod access;
pub mod balance;
pub mod handover;
pub mod health;
pub mod histogram;
pub mod net;
pub mod pool;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod sni;
pub mod tcp;
pub mod udp;

pub use balance::{Algorithm, HashKey};
pub use pool::{Backend, BackendSpec, Pool};
