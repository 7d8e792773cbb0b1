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
    let dir = scratch("unit");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut paths = Vec::new();
    for name in ["fulcrum.service", "fulcrum.socket"] {
        let unit =
            std::fs::read_to_string(format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR")))
                .expect("unit");
        for line in unit.lines().filter(|l| l.starts_with("Documentation=")) {
            assert!(
                !line.contains(".invalid") && !line.contains("example."),
                "{name}: a placeholder in {line}"
            );
        }
        let path = dir.join(name);
        std::fs::write(&path, unit.replace("/usr/local/bin/fulcrum", bin())).expect("write unit");
        paths.push(path);
    }
    let out = match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            // Past the harness's capture, so the skip shows (see common::have).
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED: systemd-analyze not available ({e})\n").as_bytes(),
            );
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

/// Socket activation: the listener uses the socket it is given (LISTEN_FDS=1 on
/// fd 3, LISTEN_PID = its own pid, as systemd sets them), on every worker.
#[test]
fn listen_fds_activation_serves_traffic() {
    use std::os::fd::AsRawFd;
    let backend = Backend::named("a");
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = \"{addr}\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\nbackends = [{}]\n",
        quoted(backend.addr)
    );
    let path = scratch("activated.toml");
    std::fs::write(&path, text).expect("config");
    // The child must inherit the socket: clear close-on-exec, and have the shell
    // move it to fd 3 before it execs fulcrum under its own pid (bash: dash
    // refuses fd numbers above 9, which the socket gets when other tests run).
    rustix::io::fcntl_setfd(&socket, rustix::io::FdFlags::empty()).expect("inheritable");
    let fd = socket.as_raw_fd();
    let mut command = std::process::Command::new("bash");
    command
        .arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\" 3<&{fd} {fd}<&-"
        ))
        .arg(bin())
        .args(["run", "-c", path.to_str().expect("utf-8"), "--workers", "2"]);
    let mut f = Fulcrum::spawn_command(command, 1);
    rustix::io::fcntl_setfd(&socket, rustix::io::FdFlags::CLOEXEC).expect("cloexec again");
    f.saw("socket activation: sockets received");
    assert_eq!(f.addr("l"), addr);
    // Close our copy: connections can only be served through fulcrum's.
    drop(socket);
    for _ in 0..10 {
        assert_eq!(hello(addr).1, 'a');
    }
}

#[test]
fn an_upgrade_hands_systemd_the_new_main_pid() {
    let path = scratch("notify-upgrade.sock");
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
    f.signal(rustix::process::Signal::USR2);
    let said = next(&socket);
    let pid: i32 = said
        .strip_prefix("MAINPID=")
        .and_then(|rest| rest.strip_suffix("\nREADY=1"))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("{said:?}"));
    assert_ne!(pid as u32, f.pid());
    let new = rustix::process::Pid::from_raw(pid).expect("pid");
    assert!(f.wait().success());
    // The old process said nothing more (no STOPPING=1): the service is up.
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 512];
    let more = socket
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(more.is_err(), "the old process said {more:?}");
    assert_eq!(hello(f.addr("l")).1, 'a');
    socket.set_nonblocking(false).expect("blocking");
    rustix::process::kill_process(new, rustix::process::Signal::TERM).expect("kill");
    assert_eq!(next(&socket), "STOPPING=1");
    let _ = std::fs::remove_file(&path);
}
