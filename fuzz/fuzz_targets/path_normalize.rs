//! `normalize_path` on arbitrary text: it must never panic, and what it gives is
//! normal already (normalizing it again changes nothing), still an origin-form
//! path, with no `.`/`..` segment, no run of slashes and the query untouched.
#![no_main]

use fulcrum_l7::path::normalize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let normal = normalize(target);
    assert_eq!(normalize(&normal), normal, "not idempotent for {target:?}");
    let query = |t: &str| t.find('?').map(|at| t[at..].to_owned());
    assert_eq!(
        query(&normal),
        query(target),
        "query changed for {target:?}"
    );
    if target.starts_with('/') {
        let path = normal.split('?').next().unwrap_or("");
        assert!(path.starts_with('/'), "{target:?} -> {normal:?}");
        assert!(!path.contains("//"), "{target:?} -> {normal:?}");
        assert!(
            path.split('/').all(|s| s != "." && s != ".."),
            "{target:?} -> {normal:?}"
        );
    }
});
