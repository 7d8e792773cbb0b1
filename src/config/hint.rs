//! Turns the TOML parser's messages into ones that say what to write instead: an
//! empty message gets the reason from the bytes at the error, a misspelt key gets
//! the closest valid one, `[listener]` gets `[[listener]]`, a bare number where a
//! duration goes gets its quoted form.

/// The message for a TOML error at byte `offset` of `text`.
pub fn explain(text: &str, offset: usize, message: &str) -> String {
    let message = message.trim_end().replace('\n', "; ");
    let at = text.get(offset..).unwrap_or_default();
    let odd_byte = at.starts_with('\r') && !at.starts_with("\r\n")
        || at
            .chars()
            .next()
            .is_some_and(|c| c.is_control() && c != '\t' && c != '\n' && c != '\r');
    if message.is_empty() || odd_byte {
        return from_bytes(text, offset);
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        return unknown_key(rest).unwrap_or(message);
    }
    if message.contains("invalid type: map, expected a sequence") {
        if let Some(name) = table_header(line_at(text, offset)) {
            return format!(
                "`[{name}]` declares one table, but `{name}` is a list of them: write `[[{name}]]` (one per {name})"
            );
        }
    }
    if let Some(number) = message
        .strip_prefix("invalid type: integer `")
        .and_then(|r| r.split_once("`, expected a string"))
        .map(|(n, _)| n)
    {
        let key = key_at(line_at(text, offset));
        return if key.is_some_and(is_duration_key) {
            format!(
                "`{}` is a duration, written as a string with a unit: `\"{number}s\"` (or \"{number}ms\", \"{number}m\")",
                key.unwrap_or_default()
            )
        } else {
            format!("expected a string here: write `\"{number}\"`")
        };
    }
    message
}

/// A reason for an error the parser gave no words for, from the bytes at it.
fn from_bytes(text: &str, offset: usize) -> String {
    let rest = text.get(offset..).unwrap_or_default();
    match rest.chars().next() {
        None => "the file ends where a value should be: write one after `=` (e.g. `name = \"web\"`), or remove the key".to_owned(),
        Some('\r') => "a carriage return not followed by a newline: save the file with LF (or CRLF) line endings".to_owned(),
        Some(c) if c.is_control() && c != '\t' && c != '\n' => format!(
            "control character U+{:04X} is not allowed in TOML, even in a comment: remove it",
            u32::from(c)
        ),
        Some('\n') => "the line ends where a value should be: write one after `=` (e.g. `name = \"web\"`)".to_owned(),
        Some(_) => "this is not valid TOML here (expected `key = value`, `[table]` or `[[array]]`)".to_owned(),
    }
}

/// "unknown field `x`, expected one of `a`, `b`" -> the closest valid key first.
fn unknown_key(rest: &str) -> Option<String> {
    let (unknown, tail) = rest.split_once('`')?;
    let valid: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
    if valid.is_empty() {
        return Some(format!("unknown key `{unknown}`"));
    }
    let closest = valid
        .iter()
        .map(|v| (distance(unknown, v), *v))
        .min()
        .filter(|(d, v)| *d <= (v.len().max(unknown.len()) / 3).max(2));
    Some(match closest {
        Some((_, v)) => format!("unknown key `{unknown}`: did you mean `{v}`?"),
        None => format!(
            "unknown key `{unknown}`; valid keys here: {}",
            valid.join(", ")
        ),
    })
}

/// Levenshtein distance (insert, delete, substitute), ASCII-case-insensitive.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (
        a.to_ascii_lowercase().chars().collect(),
        b.to_ascii_lowercase().chars().collect(),
    );
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The line of `text` that holds byte `offset`.
fn line_at(text: &str, offset: usize) -> &str {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    &text[start..end]
}

/// `name` of a `[name]` header line.
fn table_header(line: &str) -> Option<&str> {
    let inner = line.trim().strip_prefix('[')?.split(']').next()?.trim();
    (!inner.is_empty() && !inner.starts_with('[')).then_some(inner)
}

/// The key of a `key = value` line.
fn key_at(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty()).then_some(key)
}

fn is_duration_key(key: &str) -> bool {
    key.ends_with("timeout")
        || key.ends_with("interval")
        || matches!(key, "slow_start" | "eject_time" | "resolve")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_key_gets_the_closest_one() {
        let m = explain(
            "",
            0,
            "unknown field `backend`, expected one of `name`, `algorithm`, `backends`, `health`",
        );
        assert_eq!(m, "unknown key `backend`: did you mean `backends`?");
        let m = explain(
            "",
            0,
            "unknown field `zzzz`, expected one of `name`, `bind`",
        );
        assert_eq!(m, "unknown key `zzzz`; valid keys here: name, bind");
    }

    #[test]
    fn a_single_table_where_a_list_goes_says_double_brackets() {
        let text = "[listener]\nname = \"a\"\n";
        let m = explain(text, 0, "invalid type: map, expected a sequence");
        assert!(m.contains("write `[[listener]]`"), "{m}");
    }

    #[test]
    fn a_bare_number_for_a_duration_gets_its_quoted_form() {
        let text = "idle_timeout = 300\n";
        let m = explain(text, 15, "invalid type: integer `300`, expected a string");
        assert!(m.contains("\"300s\""), "{m}");
        let text = "name = 300\n";
        let m = explain(text, 7, "invalid type: integer `300`, expected a string");
        assert_eq!(m, "expected a string here: write `\"300\"`");
    }

    #[test]
    fn empty_messages_get_a_reason() {
        assert!(explain("# a\u{7}b", 3, "").contains("U+0007"));
        assert!(explain("a = 1\rb = 2", 5, "").contains("carriage return"));
        assert!(explain("a = 1\rb = 2", 5, "expected newline, `#`").contains("carriage return"));
        assert!(explain("name = ", 7, "").contains("after `=`"));
        assert!(explain("x", 0, "").contains("not valid TOML"));
    }
}
