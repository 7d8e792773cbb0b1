//! Sizes as operators write them: "64KiB", "10MiB", "512B", or a plain byte count.

/// Parses `<integer>[unit]` with unit B, KiB, MiB, GiB (also KB, MB, GB, and k,
/// m, g as NGINX writes them, all powers of 1024).
pub fn parse(text: &str) -> Result<usize, String> {
    let (text, number, unit) = super::duration::split_number(text);
    let bad = || format!("invalid size `{text}` (expected e.g. \"64KiB\", \"10MiB\" or \"4096\")");
    let n: usize = number.parse().map_err(|_| bad())?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "k" | "K" => 1 << 10,
        "MiB" | "MB" | "m" | "M" => 1 << 20,
        "GiB" | "GB" | "g" | "G" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// Formats a size the way the config writes it, for summaries.
pub fn display(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_display() {
        assert_eq!(parse("64KiB"), Ok(64 * 1024));
        assert_eq!(parse("10MiB"), Ok(10 << 20));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("1m"), Ok(1 << 20));
        assert!(parse("64 bytes").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("99999999999999999999GiB").is_err());
        assert_eq!(display(64 * 1024), "64KiB");
        assert_eq!(display(100), "100B");
    }
}
