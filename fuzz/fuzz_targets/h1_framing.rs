//! fulcrum's HTTP/1 framing on arbitrary bytes: it must never panic, and a stream
//! framed whole, split at any byte, or fed a byte at a time must give the same
//! messages (the same heads, the same decoded body lengths) and the same error.
//! The first byte picks what is framed: requests, responses, or responses to HEAD.
#![no_main]

use fulcrum_l7::h1::{FrameError, Framed, Framer, Kind};
use libfuzzer_sys::fuzz_target;

fn frame(kind: Kind, pieces: &[&[u8]]) -> (Vec<Framed>, Option<FrameError>) {
    let mut framer = Framer::new(kind);
    let mut seen = Vec::new();
    for piece in pieces {
        if let Err(e) = framer.push(piece, &mut seen) {
            return (seen, Some(e));
        }
    }
    (seen, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let kind = match pick % 3 {
        0 => Kind::Request,
        1 => Kind::Response {
            head_request: false,
        },
        _ => Kind::Response { head_request: true },
    };
    let whole = frame(kind, &[stream]);
    for framed in &whole.0 {
        assert!(framed.message.head_len == framed.head.len());
        assert!(framed.message.method.end <= framed.head.len());
        assert!(framed.message.target.end <= framed.head.len());
    }
    // Every split point of short inputs; a spread of them for long ones.
    let step = (stream.len() / 64).max(1);
    for cut in (0..=stream.len()).step_by(step) {
        assert_eq!(
            frame(kind, &[&stream[..cut], &stream[cut..]]),
            whole,
            "split at {cut}"
        );
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(frame(kind, &bytes), whole, "a byte at a time");
});
