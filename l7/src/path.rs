//! The one path a request is routed and forwarded by (`normalize_path`): its
//! percent-encoded unreserved characters decoded and its `.` and `..` segments
//! removed (RFC 3986 §6.2.2.2 and §5.2.4), and runs of slashes merged (as NGINX,
//! often the backend, does by default), so `/%61dmin`, `/v1/../admin` and
//! `//admin` are routed as the `/admin` a backend reads them as, and forwarded as
//! that.

use std::borrow::Cow;

/// `target` (an origin-form path with its query) normalized; borrowed when it
/// already was, as nearly every request's is. The query is left as it came,
/// and so are `%2F` and every other encoded reserved character: decoding them
/// would change what the path means (RFC 3986 §2.2).
pub fn normalize(target: &str) -> Cow<'_, str> {
    let (path, query) = match target.find('?') {
        Some(at) => target.split_at(at),
        None => (target, ""),
    };
    let dots = path.contains("/.") && has_dot_segment(path);
    if !path.starts_with('/') || (!path.contains('%') && !dots && !path.contains("//")) {
        return Cow::Borrowed(target);
    }
    let decoded = decode_unreserved(path);
    let normal = remove_dot_segments(&decoded);
    match normal == path {
        true => Cow::Borrowed(target),
        false => Cow::Owned(normal + query),
    }
}

/// Whether a segment of `path` is `.` or `..`.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

/// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX` of an unreserved character becomes the character; any other stays
/// encoded, its hex digits in upper case (RFC 3986 §6.2.2.1). A `%` not followed
/// by two hex digits is itself encoded (`%25`): left bare, it could make an
/// escape with what decoding brings next to it (`%%66` would become `%f6`).
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let pair = bytes
            .get(i + 1)
            .copied()
            .and_then(hex)
            .zip(bytes.get(i + 2).copied().and_then(hex));
        match (bytes[i], pair) {
            (b'%', Some((high, low))) => {
                let b = high << 4 | low;
                if unreserved(b) {
                    out.push(char::from(b));
                } else {
                    out.push('%');
                    out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                    out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
                }
                i += 3;
            }
            (b'%', None) => {
                out.push_str("%25");
                i += 1;
            }
            _ => {
                // Up to the next `%` (ASCII, so a char boundary, as `i` is).
                let next = bytes[i + 1..]
                    .iter()
                    .position(|&b| b == b'%')
                    .map_or(bytes.len(), |n| i + 1 + n);
                out.push_str(&path[i..next]);
                i = next;
            }
        }
    }
    out
}

/// RFC 3986 §5.2.4 for a path that starts with `/`: `.` segments go, `..` takes
/// the segment before it with it (none above the root); a path that ended in
/// either ends in `/`. Empty segments go too but for a last one (`//a//b/` is
/// `/a/b/`).
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut ends_in_dot = false;
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        ends_in_dot = matches!(segment, "." | "..");
        match segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            "" if segments.peek().is_some() => {}
            s => kept.push(s),
        }
    }
    if ends_in_dot {
        kept.push("");
    }
    let mut out = String::with_capacity(path.len());
    for segment in kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_routed_as_a_backend_reads_them() {
        for (sent, normal) in [
            ("/", "/"),
            ("/a/b?x=/../y", "/a/b?x=/../y"),
            ("/%61dmin", "/admin"),
            ("/%2e%2e/admin", "/admin"),
            ("/v1/../admin", "/admin"),
            ("/v1/%2E%2E/admin?q=1", "/admin?q=1"),
            ("/a/./b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/../../x", "/x"),
            ("/a//b", "/a/b"),
            ("//admin/", "/admin/"),
            ("/a//", "/a/"),
            ("///", "/"),
            ("/a/.//../b", "/b"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
            ("/%7euser/%zz/%4", "/~user/%25zz/%254"),
            ("//%%666/c", "/%25f6/c"),
            ("/caf%C3%A9/é", "/caf%C3%A9/é"),
            ("/%41é/%42€%", "/Aé/B€%25"),
            ("/é%", "/é%25"),
            ("/..a/.b/c..", "/..a/.b/c.."),
            ("*", "*"),
            ("?q", "?q"),
        ] {
            assert_eq!(normalize(sent), normal, "{sent}");
        }
    }

    #[test]
    fn any_text_is_taken_without_a_panic() {
        let pieces = ["%", "%4", "%41", "é", "€", "/", ".", "..", "?", "%2e", "a"];
        let mut at = 0usize;
        for _ in 0..20_000 {
            let mut path = String::from("/");
            for _ in 0..(at % 7) {
                path.push_str(pieces[at % pieces.len()]);
                at = at.wrapping_mul(31).wrapping_add(7) % 1_000_003;
            }
            at += 1;
            let normal = normalize(&path);
            assert!(normal.starts_with('/'), "{path} -> {normal}");
        }
    }

    #[test]
    fn a_normal_path_is_not_copied() {
        for target in ["/", "/index.html?a=%2e%2e", "/a/b/c", "/.well-known/x"] {
            assert!(matches!(normalize(target), Cow::Borrowed(_)), "{target}");
        }
    }
}
