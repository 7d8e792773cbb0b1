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

#[test]
fn the_unit_file_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/fulcrum.service"
    ))
    .expect("unit");
    let unit = unit.replace("/usr/local/bin/fulcrum", bin());
    let dir = scratch("unit");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("fulcrum.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIPPED: systemd-analyze not available ({e})");
            return;
        }
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && report.trim().is_empty(),
        "systemd-analyze verify:\n{report}"
    );
}
