//! A backend connection's byte stream: TCP in the clear, or TLS over it.

use tokio::net::TcpStream;

/// A backend connection, in the clear or over TLS.
pub type Stream = crate::tcp_or_tls::TcpOrTls<tokio_rustls::client::TlsStream<TcpStream>>;
