//! Reading a PROXY header off a fresh connection: peeked first, so that exactly
//! the header is consumed and whatever follows stays in the socket for the
//! protocol behind it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{parse, Parsed, MAX_HEADER};

/// Time a client gets to send its PROXY header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the PROXY header the load balancer in front sent; returns the real
/// client's address (`None` for LOCAL/UNKNOWN: the connection's own address).
pub async fn read_header(stream: &TcpStream) -> Result<Option<SocketAddr>, String> {
    let reading = async {
        let mut buf = vec![0u8; MAX_HEADER];
        let mut wait = Duration::from_millis(1);
        loop {
            let n = stream.peek(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before its PROXY header".to_owned());
            }
            match parse(&buf[..n]).map_err(|e| e.to_string())? {
                Parsed::Header { len, client } => {
                    consume(stream, len).await.map_err(|e| e.to_string())?;
                    return Ok(client);
                }
                // A header split over segments: peeking again at once would spin
                // on the same bytes, so wait a little (rare; bounded by the timeout).
                Parsed::NeedMore => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(50));
                }
            }
        }
    };
    tokio::time::timeout(HEADER_TIMEOUT, reading)
        .await
        .unwrap_or_else(|_| Err("no PROXY header in time".to_owned()))
}

/// Reads and drops `len` bytes that are known to be there.
async fn consume(stream: &TcpStream, mut len: usize) -> io::Result<()> {
    let mut sink = [0u8; 512];
    while len > 0 {
        stream.readable().await?;
        let want = len.min(sink.len());
        match stream.try_read(&mut sink[..want]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => len -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
