//! Durations as operators write them: "250ms", "3s", "5m", "1h".

use std::time::Duration;

/// Parses `<integer><unit>` with unit ms, s, m or h.
pub fn parse(text: &str) -> Result<Duration, String> {
    let (text, number, unit) = split_number(text);
    let bad =
        || format!("invalid duration `{text}` (expected e.g. \"250ms\", \"3s\", \"5m\", \"1h\")");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let per_unit = match unit {
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    u32::try_from(n)
        .ok()
        .and_then(|n| per_unit.checked_mul(n))
        .ok_or_else(|| format!("duration `{text}` is too long"))
}

/// `text` trimmed, and split into its leading digits and the unit after them
/// (durations and sizes are both written this way).
pub(super) fn split_number(text: &str) -> (&str, &str, &str) {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    (text, number, unit)
}

/// Formats a duration the way the config writes it, for summaries.
pub fn display(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_owned(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "3",
            "s",
            "3 sec",
            "-1s",
            "1.5s",
            "99999999999999999999s",
            "5d",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["250ms", "3s", "5m", "1h", "90s"] {
            assert_eq!(
                parse(&display(parse(text).unwrap_or_default())),
                parse(text)
            );
        }
    }
}
