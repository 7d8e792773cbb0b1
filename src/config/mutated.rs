//! Mutated configs: the shipped examples with values swapped for extreme or
//! wrong ones, lines dropped, doubled and cut, and bytes flipped; each either
//! loads or is refused with a `FILE:LINE:COL` error, and none panics.

use super::parse;

/// The examples that load without files beside them (https.toml needs its
/// certificates).
const EXAMPLES: [(&str, &str); 5] = [
    ("tcp.toml", include_str!("../../conf/tcp.toml")),
    ("udp.toml", include_str!("../../conf/udp.toml")),
    ("http.toml", include_str!("../../conf/http.toml")),
    ("grpc.toml", include_str!("../../conf/grpc.toml")),
    ("edge.toml", include_str!("../../conf/edge.toml")),
];

/// Values put in place of a key's value: the edges of every type a key takes,
/// and wrong types.
const VALUES: [&str; 30] = [
    "0",
    "-1",
    "1",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "nan",
    "true",
    "\"\"",
    "\" \"",
    "\"0\"",
    "\"0s\"",
    "\"0ms\"",
    "\"4294967295h\"",
    "\"18446744073709551615ms\"",
    "\"1\"",
    "\"0k\"",
    "\"18446744073709551615g\"",
    "\"-5s\"",
    "\"é\"",
    "\"\\u0000\"",
    "\"*\"",
    "\"[::]:0\"",
    "\"0.0.0.0:65536\"",
    "\"256.1.1.1:80\"",
    "[]",
    "[\"\"]",
    "{}",
    "[[1]]",
];

/// xorshift64: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(lines.len());
        match rng.below(6) {
            // A key's value replaced.
            0 | 1 => {
                if let Some(eq) = lines[i].find(" = ") {
                    let value = VALUES[rng.below(VALUES.len())];
                    lines[i] = format!("{}{value}", &lines[i][..eq + 3]);
                }
            }
            2 => {
                lines.remove(i);
            }
            3 => {
                let line = lines[i].clone();
                lines.insert(rng.below(lines.len()), line);
            }
            // A line cut anywhere (by character).
            4 => {
                let cut = rng.below(lines[i].chars().count() + 1);
                lines[i] = lines[i].chars().take(cut).collect();
            }
            // A character replaced by one of TOML's own.
            _ => {
                let chars: Vec<char> = lines[i].chars().collect();
                if !chars.is_empty() {
                    let at = rng.below(chars.len());
                    let with = ['"', '[', ']', '=', '{', '}', ',', '#', '\\', '\''];
                    let mut changed = chars;
                    changed[at] = with[rng.below(with.len())];
                    lines[i] = changed.into_iter().collect();
                }
            }
        }
        if lines.is_empty() {
            break;
        }
    }
    lines.join("\n")
}

#[test]
fn no_mutated_example_panics_and_every_error_is_positioned() {
    // FULCRUM_CONFIG_MUTATIONS raises the count for a longer hunt.
    let rounds: usize = std::env::var("FULCRUM_CONFIG_MUTATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1500);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut loaded, mut refused) = (0, 0);
    for (name, text) in EXAMPLES {
        // Named as in the repo (tests run from its root): paths in them resolve.
        let name = format!("conf/{name}");
        let name = name.as_str();
        assert!(parse(text, name).is_ok(), "{name} itself must load");
        for _ in 0..rounds {
            let mutated = mutate(text, &mut rng);
            match parse(&mutated, name) {
                Ok(_) => loaded += 1,
                Err(e) => {
                    refused += 1;
                    let shown = e.to_string();
                    assert!(e.position.is_some(), "{shown}\n--- from:\n{mutated}");
                    assert!(shown.starts_with(&format!("{name}:")), "{shown}");
                }
            }
        }
    }
    // Both outcomes happen, or the mutations test nothing.
    assert!(
        loaded > 0 && refused > 0,
        "{loaded} loaded, {refused} refused"
    );
}
