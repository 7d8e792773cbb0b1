//! The ClientHello peek on arbitrary bytes: it must never panic, a verdict on a
//! complete hello must not change when more bytes follow it, and a prefix of
//! bytes that gave a hello must never be called "not TLS" early.
#![no_main]

use fulcrum_l4::sni::{peek, Peek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let verdict = peek(data);
    if let Ok(Peek::Hello { .. }) = &verdict {
        let mut longer = data.to_vec();
        longer.extend_from_slice(&[23, 3, 3, 0, 2, 0xab, 0xcd]);
        assert_eq!(peek(&longer), verdict, "trailing bytes changed the verdict");
        for cut in [
            0,
            data.len() / 3,
            data.len() / 2,
            data.len().saturating_sub(1),
        ] {
            let early = peek(&data[..cut]);
            assert!(
                matches!(early, Ok(Peek::NeedMore)) || early == verdict,
                "prefix of {cut} bytes gave {early:?}, the whole {verdict:?}"
            );
        }
    }
});
