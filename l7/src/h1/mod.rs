//! fulcrum's own HTTP/1.1 framing (RFC 9112) for proxying: heads parsed in place
//! with httparse, and where each message's body ends, without owning the body.

mod alarm;
mod chunked;
pub(crate) mod client;
mod edit;
pub(crate) mod engine;
mod forward;
mod head;
mod idle;
mod message;
mod plan;
mod response;

pub use chunked::{ChunkError, Chunked};
pub use head::{request_body, response_body, Body, Fields, Malformed, MAX_HEADERS};
pub use message::{BodyEnd, FrameError, Framed, Framer, Kind, Message, MAX_HEAD};
