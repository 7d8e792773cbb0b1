//! Hot reload end to end: SIGHUP under load drops nothing, keeps per-backend state,
//! lets transfers through removed backends finish, and ignores a broken file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const PAYLOAD: usize = 32 * 1024;

/// One client transfer: send PAYLOAD pattern bytes, half-close, read them all back.
fn transfer(addr: SocketAddr, seed: u64) -> Result<(), String> {
    let mut c = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(PATIENCE))
        .map_err(|e| e.to_string())?;
    let mut data = vec![0u8; PAYLOAD];
    Pattern::new(seed).fill(&mut data);
    c.write_all(&data).map_err(|e| format!("write: {e}"))?;
    c.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut back = Vec::with_capacity(PAYLOAD);
    c.read_to_end(&mut back).map_err(|e| format!("read: {e}"))?;
    if back != data {
        return Err(format!(
            "echo differs: {} of {PAYLOAD} bytes back",
            back.len()
        ));
    }
    Ok(())
}

fn pool_of(backends: &[&Backend]) -> String {
    let list: Vec<String> = backends.iter().map(|b| quoted(b.addr)).collect();
    config(&list, "round-robin", "")
}

#[test]
fn ten_reloads_under_load_drop_nothing_and_keep_backend_state() {
    let b: Vec<Backend> = (0..4).map(|_| Backend::echo()).collect();
    let mut f = Fulcrum::run(&pool_of(&[&b[0], &b[1], &b[2]]));
    let addr = f.addr("l");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..6u64)
        .map(|i| {
            let (stop, done, failures) =
                (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&failures));
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut seed = i * 1_000_000;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    seed += 1;
                    match transfer(addr, seed) {
                        Ok(()) => done.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            failures.lock().unwrap().push(e);
                            0
                        }
                    };
                }
            })
        })
        .collect();
    let layouts: [&[usize]; 10] = [
        &[1, 2, 3],
        &[2, 3],
        &[0, 2],
        &[2],
        &[0, 1, 2, 3],
        &[3, 2],
        &[1, 2],
        &[0, 2, 3],
        &[2, 1],
        &[0, 1, 2],
    ];
    for layout in layouts {
        // Let traffic flow before each reload, so every reload lands under load.
        let before = done.load(Ordering::SeqCst);
        let wait = Instant::now() + PATIENCE;
        while done.load(Ordering::SeqCst) < before + 20 && Instant::now() < wait {
            thread::sleep(Duration::from_millis(5));
        }
        let backends: Vec<&Backend> = layout.iter().map(|&i| &b[i]).collect();
        let outcome = f.reload(&pool_of(&backends));
        assert!(outcome.contains("reloaded"), "{outcome}");
    }
    let before = done.load(Ordering::SeqCst);
    while done.load(Ordering::SeqCst) < before + 20 {
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed transfers, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        done.load(Ordering::SeqCst) > 200,
        "too little load: {}",
        done.load(Ordering::SeqCst)
    );

    // Backend 2 was in every layout: its connection count carried over each reload.
    let target = format!("backend={}", b[2].addr);
    let totals: Vec<u64> = f
        .log()
        .lines()
        .filter(|l| l.contains("backend state after reload") && l.contains(&target))
        .filter_map(|l| l.split(" total=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(totals.len(), 10, "one state line per reload for backend 2");
    assert!(
        totals.windows(2).all(|w| w[0] <= w[1]),
        "counters reset by a reload: {totals:?}"
    );
    assert!(totals[9] > totals[0], "{totals:?}");
}

#[test]
fn a_transfer_through_a_removed_backend_completes() {
    let (old, new) = (Backend::echo(), Backend::named("n"));
    let mut f = Fulcrum::run(&pool_of(&[&old]));
    let mut c = connect(f.addr("l"));
    let mut data = vec![0u8; 4 << 20];
    Pattern::new(11).fill(&mut data);
    let (first, second) = data.split_at(data.len() / 2);
    c.write_all(first).expect("first half");
    let mut back = vec![0u8; data.len()];
    c.read_exact(&mut back[..first.len()])
        .expect("first half back");
    assert!(f.reload(&pool_of(&[&new])).contains("reloaded"));
    // New connections go to the new backend...
    assert_eq!(hello(f.addr("l")).1, 'n');
    // ...while the old transfer runs to its end on the removed one.
    c.write_all(second).expect("second half");
    c.shutdown(Shutdown::Write).expect("shutdown");
    c.read_exact(&mut back[first.len()..])
        .expect("second half back");
    assert!(
        back == data,
        "transfer through the removed backend was corrupted"
    );
}

#[test]
fn a_broken_file_keeps_the_running_config() {
    let a = Backend::named("a");
    let mut f = Fulcrum::run(&pool_of(&[&a]));
    let outcome = f.reload("[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\npool = \"nope\"\n");
    let path = f.config_path().display().to_string();
    assert!(outcome.contains("reload failed"), "{outcome}");
    assert!(
        outcome.contains(&format!("{path}:4:8:")),
        "FILE:LINE:COL in {outcome}"
    );
    assert_eq!(hello(f.addr("l")).1, 'a');
}

#[test]
fn reload_adds_and_removes_listeners() {
    let a = Backend::named("a");
    let base = pool_of(&[&a]);
    let mut f = Fulcrum::run(&base);
    let second =
        format!("{base}\n[[listener]]\nname = \"m\"\nbind = \"127.0.0.2:0\"\npool = \"p\"\n");
    assert!(f.reload(&second).contains("reloaded"));
    let line = f.saw("listening listener=m");
    let m: SocketAddr = line
        .split(" addr=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|a| a.parse().ok())
        .expect("addr");
    assert_eq!(hello(m).1, 'a');
    assert_eq!(hello(f.addr("l")).1, 'a');
    assert!(f.reload(&base).contains("reloaded"));
    f.saw("listener removed");
    f.saw("listener closed");
    assert!(
        std::net::TcpStream::connect(m).is_err(),
        "removed listener still accepts"
    );
    assert_eq!(hello(f.addr("l")).1, 'a');
}

#[test]
fn connections_to_a_removed_backend_are_cut_after_the_drain_timeout() {
    let (old, new) = (Backend::named("o"), Backend::named("n"));
    let with = |b: &Backend| format!("drain_timeout = \"300ms\"\n{}", pool_of(&[b]));
    let mut f = Fulcrum::run(&with(&old));
    let (mut held, name) = hello(f.addr("l"));
    assert_eq!(name, 'o');
    assert!(f.reload(&with(&new)).contains("reloaded"));
    // Still served until the drain timeout passes...
    assert_eq!(hello(f.addr("l")).1, 'n');
    let cut = f.saw("connection cut");
    assert!(cut.contains(&old.addr.to_string()), "{cut}");
    // ...then closed.
    let mut rest = Vec::new();
    let _ = held.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn a_backend_added_back_before_its_drain_ends_keeps_its_connections() {
    let (a, b, c) = (
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    );
    let with = |list: &[&Backend]| format!("drain_timeout = \"300ms\"\n{}", pool_of(list));
    let mut f = Fulcrum::run(&with(&[&a, &c]));
    // One held connection to each of `a` and `c` (round robin alternates).
    let (mut held_a, mut held_c) = (None, None);
    while held_a.is_none() || held_c.is_none() {
        let (conn, name) = hello(f.addr("l"));
        match name {
            'a' => held_a = Some(conn),
            _ => held_c = Some(conn),
        }
    }
    // Both leave the config (their drain starts); `a` comes back at once.
    assert!(f.reload(&with(&[&b])).contains("reloaded"));
    assert!(f.reload(&with(&[&a, &b])).contains("reloaded"));
    f.saw("backend back before its drain ended");
    // `c`'s drain ends with a cut; `a`'s was cancelled and its connection stays.
    let cut = f.saw("connection cut");
    assert!(cut.contains(&c.addr.to_string()), "{cut}");
    let mut rest = Vec::new();
    let _ = held_c.take().expect("held c").read_to_end(&mut rest);
    let held_a = held_a.take().expect("held a");
    held_a
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    match (&held_a).read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!(
            "the connection to the re-added backend ended: {other:?}\n{}",
            f.log()
        ),
    }
    assert!(
        !f.log()
            .lines()
            .any(|l| l.contains("connection cut") && l.contains(&a.addr.to_string())),
        "{}",
        f.log()
    );
}
