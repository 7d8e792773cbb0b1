//! `fulcrum check` and `fulcrum run` on good and bad configs: exit codes and
//! `FILE:LINE:COL` messages from the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::process::Command;

use common::{bin, scratch};

fn check(text: &str) -> (i32, String, String) {
    let path = scratch("check.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run fulcrum check");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stderr = stderr.replace(path.to_str().expect("utf-8"), "FILE");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

const GOOD: &str = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\npool = \"web\"\n\n[[pool]]\nname = \"web\"\nbackends = [\"127.0.0.1:9001\", { addr = \"127.0.0.1:9002\", weight = 3 }]\n";

#[test]
fn good_config_prints_a_summary() {
    let (code, stdout, _) = check(GOOD);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("1 listener(s), 1 pool(s), 2 backend(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("127.0.0.1:9002           weight 3"),
        "{stdout}"
    );
    assert!(stdout.contains("round-robin"), "{stdout}");
}

#[test]
fn summary_names_the_algorithm_and_its_key() {
    let text = GOOD.replace(
        "name = \"web\"\nbackends",
        "name = \"web\"\nalgorithm = \"hash\"\nhash_key = \"source-addr\"\nbackends",
    );
    let (code, stdout, stderr) = check(&text);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("hash(source-addr)"), "{stdout}");
}

#[test]
fn each_bad_config_exits_2_with_its_position() {
    let cases = [
        (
            "unknown key",
            GOOD.replace("pool = \"web\"\n\n", "pool = \"web\"\ncolour = 1\n\n"),
            "FILE:5:1: unknown field `colour`",
        ),
        (
            "wrong type",
            GOOD.replace("name = \"web\"\nbind", "name = 7\nbind"),
            "FILE:2:8: invalid type",
        ),
        (
            "unknown pool",
            GOOD.replace("pool = \"web\"", "pool = \"api\""),
            "FILE:4:8: listener `web` refers to unknown pool `api`",
        ),
        (
            "duplicate listener",
            format!(
                "{GOOD}[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8081\"\npool = \"web\"\n"
            ),
            "FILE:10:8: duplicate listener name `web`",
        ),
        (
            "duplicate bind",
            format!(
                "{GOOD}[[listener]]\nname = \"b\"\nbind = \"127.0.0.1:8080\"\npool = \"web\"\n"
            ),
            "FILE:11:8: bind address 127.0.0.1:8080 is already used by listener `web`",
        ),
        (
            "empty pool",
            GOOD.replace(
                "[\"127.0.0.1:9001\", { addr = \"127.0.0.1:9002\", weight = 3 }]",
                "[]",
            ),
            "FILE:8:12: pool `web` has no backends",
        ),
        (
            "bad address",
            GOOD.replace("127.0.0.1:9001", "127.0.0.1:"),
            "FILE:8:13: invalid backend address",
        ),
        ("not toml", "[[listener]\n".to_owned(), "FILE:1:"),
    ];
    for (what, text, want) in cases {
        let (code, _, stderr) = check(&text);
        assert_eq!(code, 2, "{what}: {stderr}");
        assert!(
            stderr.starts_with(want),
            "{what}: {stderr:?} does not start with {want:?}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{what}: one line, no Debug dump: {stderr}"
        );
    }
}

#[test]
fn missing_file_exits_2() {
    let out = Command::new(bin())
        .args(["check", "-c", "/nonexistent/fulcrum.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("/nonexistent/fulcrum.toml: cannot read config"));
}

#[test]
fn run_refuses_a_bad_config_with_exit_2() {
    let path = scratch("run.toml");
    std::fs::write(&path, GOOD.replace("pool = \"web\"", "pool = \"api\"")).expect("write");
    let out = Command::new(bin())
        .arg("run")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(":4:8: listener `web` refers to unknown pool"));
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        &["tcp", "--listen", "127.0.0.1:0"][..],
        &["tcp", "--listen", "nowhere", "--backend", "127.0.0.1:1"][..],
        &[
            "tcp",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:1,weight=0",
        ][..],
        &[
            "tcp",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:1",
            "--algorithm",
            "best",
        ][..],
        &[
            "tcp",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:1",
            "--idle-timeout",
            "soon",
        ][..],
    ] {
        let out = Command::new(bin()).args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn every_shipped_example_config_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("conf/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(bin())
                .arg("check")
                .arg("-c")
                .arg(&path)
                .output()
                .expect("run");
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "no example configs in conf/");
}
