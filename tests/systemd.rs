//! systemd notifications observed on a test NOTIFY_SOCKET.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::os::unix::net::UnixDatagram;

use common::*;

fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("notification");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_reloading_and_stopping_are_notified() {
    let path = scratch("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let backend = Backend::named("a");
    let text = config(&[quoted(backend.addr)], "round-robin", "");
    let mut f = Fulcrum::run_env(
        &text,
        &["--workers", "1"],
        &[("NOTIFY_SOCKET", path.to_str().expect("utf-8"))],
    );
    assert_eq!(next(&socket), "READY=1");
    assert_eq!(
        hello(f.addr("l")).1,
        'a',
        "listeners are up when READY=1 is sent"
    );
    assert!(f.reload(&text).contains("reloaded"));
    let reloading = next(&socket);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert_eq!(next(&socket), "READY=1");
    f.signal(rustix::process::Signal::TERM);
    assert_eq!(next(&socket), "STOPPING=1");
    assert!(f.wait().success());
    let _ = std::fs::remove_file(&path);
}
