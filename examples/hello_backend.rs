//! A tiny TCP backend for the demo: binds 127.0.0.1:0, prints its address, and
//! answers every connection with one line naming itself.
//!
//! `cargo run --example hello_backend -- NAME`

use std::io::Write;
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "backend".to_owned());
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        match stream {
            Ok(mut s) => {
                let _ = writeln!(s, "hello from {name}");
            }
            Err(e) => eprintln!("hello_backend {name}: accept: {e}"),
        }
    }
    Ok(())
}
