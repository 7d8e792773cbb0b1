//! fulcrum's Layer 7 (HTTP) mode: routing, rewriting and TLS termination over l4 pools.
//!
//! Not built yet: `protocol = "http" | "https"` listeners are refused by the config
//! loader with a "not yet supported" error until this crate grows its server.

/// The listener protocols this crate will serve once it exists.
pub const PROTOCOLS: &[&str] = &["http", "https"];
