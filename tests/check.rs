//! `fulcrum check` and `fulcrum run` on good and bad configs: exit codes and
//! `FILE:LINE:COL` messages from the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::process::Command;

use common::{bin, scratch};

fn check(text: &str) -> (i32, String, String) {
    check_bytes(text.as_bytes())
}

fn check_bytes(text: &[u8]) -> (i32, String, String) {
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
fn summary_says_which_http1_path_serves_each_listener() {
    let listener = |name: &str, extra: &str| {
        format!("[[listener]]\nname = \"{name}\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n{extra}\n")
    };
    let text = [
        listener("own", ""),
        listener("asked", "http1_engine = \"hyper\""),
        listener("retries", "retry_on = [\"503\"]"),
        "[[pool]]\nname = \"p\"\nbackends = [\"127.0.0.1:9001\"]\n".to_owned(),
    ]
    .concat();
    let (code, stdout, stderr) = check(&text);
    assert_eq!(code, 0, "{stderr}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("listener {name} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("own").contains("HTTP/1 by fulcrum"), "{stdout}");
    assert!(line("asked").contains("HTTP/1 by hyper"), "{stdout}");
    assert!(line("retries").contains("HTTP/1 by hyper"), "{stdout}");
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
            "FILE:5:1: unknown key `colour`",
        ),
        (
            "wrong type",
            GOOD.replace("name = \"web\"\nbind", "name = 7\nbind"),
            "FILE:2:8: expected a string here",
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
fn messages_say_what_to_write_instead() {
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "misspelt key",
            GOOD.replace("backends = [", "backend = [").into_bytes(),
            "FILE:8:1: ",
            "did you mean `backends`?",
        ),
        (
            "single table",
            GOOD.replace("[[listener]]", "[listener]").into_bytes(),
            "FILE:1:",
            "write `[[listener]]`",
        ),
        (
            "bare number for a duration",
            GOOD.replace(
                "pool = \"web\"\n\n",
                "pool = \"web\"\nidle_timeout = 300\n\n",
            )
            .into_bytes(),
            "FILE:5:",
            "\"300s\"",
        ),
        (
            "control byte in a comment",
            format!("# a\u{1}b\n{GOOD}").into_bytes(),
            "FILE:1:4: ",
            "U+0001",
        ),
        (
            "bare carriage return",
            GOOD.replace("pool = \"web\"\n\n", "pool = \"web\"\rx\n\n")
                .into_bytes(),
            "FILE:4:",
            "carriage return",
        ),
        (
            "key without a value at the end",
            format!("{GOOD}[[listener]]\nname = ").into_bytes(),
            "FILE:10:",
            "after `=`",
        ),
        (
            "not UTF-8",
            [b"# caf\xe9\n".as_slice(), GOOD.as_bytes()].concat(),
            "FILE:1:6: ",
            "not UTF-8",
        ),
    ];
    for (what, text, at, hint) in cases {
        let (code, _, stderr) = check_bytes(&text);
        assert_eq!(code, 2, "{what}: {stderr}");
        assert!(
            stderr.starts_with(at),
            "{what}: {stderr:?} is not at {at:?}"
        );
        assert!(stderr.contains(hint), "{what}: {stderr:?} lacks {hint:?}");
        let message = stderr.trim_end().rsplit(": ").next().unwrap_or_default();
        assert!(!message.is_empty(), "{what}: empty message in {stderr:?}");
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
    }
}

#[test]
fn bad_flags_say_what_to_write() {
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "tcp",
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "127.0.0.1:1",
                "--log-level",
                "verbose",
            ],
            "debug",
        ),
        (
            &["tcp", "--listen", ":18090", "--backend", "127.0.0.1:1"],
            "0.0.0.0:18090",
        ),
        (
            &["tcp", "--listen", "127.0.0.1", "--backend", "127.0.0.1:1"],
            "add a port",
        ),
        (
            &[
                "tcp",
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "127.0.0.1:1",
                "--workers",
                "0",
            ],
            "at least 1",
        ),
    ];
    for (args, hint) in cases {
        let out = Command::new(bin()).args(args).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(hint), "{args:?}: {stderr}");
    }
}

#[test]
fn a_pool_of_dns_names_is_counted_the_same_everywhere() {
    let text = GOOD.replace(
        "[\"127.0.0.1:9001\", { addr = \"127.0.0.1:9002\", weight = 3 }]",
        "[\"app.internal:80\"]",
    );
    let (code, stdout, stderr) = check(&text);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("1 backend(s); drain"), "{stdout}");
    assert!(stdout.contains("1 backend(s) (1 by DNS name)"), "{stdout}");
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
    // Each example is checked from a scratch copy beside a throwaway certificate
    // (conf/https.toml names `certs/site.pem`, which a user supplies), so this
    // passes in a fresh clone with nothing but the Rust toolchain.
    let pki = common::tls::Pki::new("conf-certs");
    let leaf = pki.issue("site", &["localhost"]);
    let work = scratch("conf");
    std::fs::create_dir_all(work.join("certs")).expect("scratch conf/");
    std::fs::copy(&leaf.cert, work.join("certs/site.pem")).expect("copy cert");
    std::fs::copy(&leaf.key, work.join("certs/site.key")).expect("copy key");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    // conf/edge.toml names its error pages beside it.
    std::fs::create_dir_all(work.join("pages")).expect("scratch pages/");
    for page in std::fs::read_dir(dir.join("pages")).expect("conf/pages/") {
        let page = page.expect("entry").path();
        let name = page.file_name().expect("file name");
        std::fs::copy(&page, work.join("pages").join(name)).expect("copy page");
    }
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("conf/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let copy = work.join(path.file_name().expect("file name"));
            std::fs::copy(&path, &copy).expect("copy example");
            let out = Command::new(bin())
                .arg("check")
                .arg("-c")
                .arg(&copy)
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
