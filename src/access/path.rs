//! The one path normaliser: the proxied request's path as rules see it.
//!
//! A proxy hands over the path the client sent; the upstream app routes a
//! decoded, resolved form of it. Rules must judge what the app will serve,
//! so `/public/%2e%2e/admin` is judged as `/admin`. A path that upstreams
//! read in different ways (an encoded `/`, a backslash, a broken encoding)
//! is refused instead of guessed at. Used only by `access`; nothing else in
//! the crate normalises paths.

use std::borrow::Cow;

/// Why a path is refused before any rule is tried (the caller answers 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRefused {
    #[error("it holds an encoded \"/\" (%2F)")]
    EncodedSlash,
    #[error("it holds an encoded backslash (%5C)")]
    EncodedBackslash,
    #[error("it holds a backslash, which some servers read as \"/\"")]
    Backslash,
    #[error("it holds a NUL byte")]
    Nul,
    #[error("it is not UTF-8 once percent-decoded")]
    InvalidUtf8,
    #[error("it holds a \"%\" that is not followed by two hex digits")]
    BadPercent,
    #[error("it is percent-encoded twice (an encoded \"%\" followed by two hex digits)")]
    DoubleEncoded,
    #[error("servers resolve it differently (a \"..\" after \"//\", or \".\" or \"..\" with \";\" parameters)")]
    Ambiguous,
}

/// The normal form of a request path, or why it has none.
///
/// The query is dropped; each segment loses its `;parameters` (as Java
/// servers read `/admin;jsessionid=x`) and is percent-decoded; empty and `.`
/// segments are dropped and `..` removes the segment before it (never past
/// the root). The result starts with `/`, and ends with `/` when the path
/// did (or ended in `.` or `..`). Letter case is kept: paths are
/// case-sensitive. An already normal path is returned without copying.
pub fn normalise(raw: &str) -> Result<Cow<'_, str>, PathRefused> {
    let path = raw.split_once('?').map_or(raw, |(path, _)| path);
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len() + 1);
    // Where each kept segment starts in `out`, so `..` can cut it off.
    let mut starts: Vec<usize> = Vec::new();
    let mut decoded: Vec<u8> = Vec::new();
    let mut ends_in_slash = false;
    let mut after_empty = false;
    let mut segments = path.split('/');
    if path.starts_with('/') {
        segments.next();
    }
    for raw_segment in segments {
        let (name, had_parameters) = match raw_segment.split_once(';') {
            Some((name, _)) => (name, true),
            None => (raw_segment, false),
        };
        decode(name, &mut decoded)?;
        let name = std::str::from_utf8(&decoded).map_err(|_| PathRefused::InvalidUtf8)?;
        let is_dots = matches!(name, "." | "..");
        // Tomcat reads "/..;/" as "..", most others as a name: either
        // reading would be a guess about the upstream.
        if is_dots && had_parameters {
            return Err(PathRefused::Ambiguous);
        }
        // "/a/b//../c" is "/a/c" to a server that merges slashes first
        // (nginx) and "/a/b/c" to one that does not (RFC 3986).
        if name == ".." && after_empty {
            return Err(PathRefused::Ambiguous);
        }
        match name {
            "" => {
                ends_in_slash = true;
                after_empty = true;
            }
            "." => ends_in_slash = true,
            ".." => {
                if let Some(start) = starts.pop() {
                    out.truncate(start);
                }
                ends_in_slash = true;
            }
            name => {
                starts.push(out.len());
                out.push('/');
                out.push_str(name);
                ends_in_slash = false;
            }
        }
    }
    if out.is_empty() || ends_in_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// True when `path` is its own normal form: the common case, checked
/// without allocating.
fn is_normal(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if path
        .bytes()
        .any(|b| matches!(b, b'%' | b';' | b'\\' | b'\0'))
    {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if matches!(segment, "." | "..") || (segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// Percent-decodes one segment into `out`, refusing what must not be in it.
fn decode(segment: &str, out: &mut Vec<u8>) -> Result<(), PathRefused> {
    out.clear();
    let bytes = segment.as_bytes();
    let mut i = 0;
    let mut had_percent = false;
    while i < bytes.len() {
        let byte = match bytes[i] {
            b'\\' => return Err(PathRefused::Backslash),
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                let (Some(high), Some(low)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                    return Err(PathRefused::BadPercent);
                };
                i += 3;
                had_percent = true;
                match (high * 16 + low) as u8 {
                    b'/' => return Err(PathRefused::EncodedSlash),
                    b'\\' => return Err(PathRefused::EncodedBackslash),
                    decoded => decoded,
                }
            }
            raw => {
                i += 1;
                raw
            }
        };
        if byte == 0 {
            return Err(PathRefused::Nul);
        }
        out.push(byte);
    }
    // A server that decodes twice would see "%2e%2e" in "%252e%252e" as "..".
    if had_percent
        && out
            .windows(3)
            .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
    {
        return Err(PathRefused::DoubleEncoded);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::PathRefused::*;
    use super::*;

    #[test]
    fn hostile_paths_normalise_to_what_the_upstream_serves_or_are_refused() {
        let table: &[(&str, Result<&str, PathRefused>)] = &[
            ("/", Ok("/")),
            ("", Ok("/")),
            ("/admin", Ok("/admin")),
            ("/admin/", Ok("/admin/")),
            ("/admin?x=/../public", Ok("/admin")),
            ("/public?/../admin", Ok("/public")),
            // Dot segments, plain and encoded.
            ("/public/../admin", Ok("/admin")),
            ("/public/./../admin", Ok("/admin")),
            ("/./admin", Ok("/admin")),
            ("/admin/.", Ok("/admin/")),
            ("/admin/x/..", Ok("/admin/")),
            ("/../../../admin", Ok("/admin")),
            ("/..", Ok("/")),
            ("/public/%2e%2e/admin", Ok("/admin")),
            ("/public/%2E%2E/admin", Ok("/admin")),
            ("/public/.%2e/admin", Ok("/admin")),
            ("/public/%2e/../admin", Ok("/admin")),
            ("/%2e%2e/admin", Ok("/admin")),
            // Repeated slashes.
            ("//admin", Ok("/admin")),
            ("/admin//x", Ok("/admin/x")),
            ("///", Ok("/")),
            ("/a//b/../c", Err(Ambiguous)),
            ("/public//../admin", Err(Ambiguous)),
            // Unreserved characters decoded; the rest decoded too.
            ("/%61dmin", Ok("/admin")),
            ("/ad%6Din", Ok("/admin")),
            ("/caf%C3%A9", Ok("/café")),
            ("/café", Ok("/café")),
            ("/a%20b", Ok("/a b")),
            ("/100%25", Ok("/100%")),
            // Encoded separators, NUL and broken encodings are refused.
            ("/admin%2Fx", Err(EncodedSlash)),
            ("/public%2f..%2fadmin", Err(EncodedSlash)),
            ("/public/..%2Fadmin", Err(EncodedSlash)),
            ("/admin%5Cx", Err(EncodedBackslash)),
            ("/public\\..\\admin", Err(Backslash)),
            ("\\admin", Err(Backslash)),
            ("/admin%00", Err(Nul)),
            ("/admin\0", Err(Nul)),
            ("/%c0%ae%c0%ae/admin", Err(InvalidUtf8)),
            ("/public/%c0%ae%c0%ae/admin", Err(InvalidUtf8)),
            ("/%e0%80%ae", Err(InvalidUtf8)),
            ("/%ff", Err(InvalidUtf8)),
            ("/caf%C3", Err(InvalidUtf8)),
            ("/%ed%a0%80", Err(InvalidUtf8)),
            ("/%zz", Err(BadPercent)),
            ("/%4", Err(BadPercent)),
            ("/admin%", Err(BadPercent)),
            ("/public/%252e%252e/admin", Err(DoubleEncoded)),
            ("/admin%252F", Err(DoubleEncoded)),
            // Parameters, as Java servers read them.
            ("/admin;x", Ok("/admin")),
            ("/admin;jsessionid=1/users", Ok("/admin/users")),
            ("/public;x/../admin", Ok("/admin")),
            ("/public/..;/admin", Err(Ambiguous)),
            ("/public/.;x/admin", Err(Ambiguous)),
            ("/admin%3Bx", Ok("/admin;x")),
            // Case is kept: paths are case-sensitive.
            ("/ADMIN", Ok("/ADMIN")),
            ("/%41dmin", Ok("/Admin")),
            // Relative forms are read from the root.
            ("admin", Ok("/admin")),
            ("../admin", Ok("/admin")),
        ];
        for (raw, expected) in table {
            let got = normalise(raw);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                *expected,
                "normalise({raw:?})"
            );
        }
    }

    #[test]
    fn a_normal_path_is_not_copied() {
        for path in ["/", "/admin", "/admin/", "/a/b.c/d-e_f~g", "/a.b/..c/.d"] {
            assert!(
                matches!(normalise(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path:?}"
            );
        }
        assert!(matches!(normalise("/a?q"), Ok(Cow::Borrowed("/a"))));
    }

    #[test]
    fn very_long_paths_take_linear_time() {
        let deep = "/a".repeat(200_000) + &"/..".repeat(199_999) + "/admin";
        assert_eq!(normalise(&deep).unwrap(), "/a/admin");
        let wide = format!("/{}", "%61".repeat(300_000));
        assert_eq!(normalise(&wide).unwrap().len(), 300_001);
        let slashes = "/".repeat(500_000) + "admin";
        assert_eq!(normalise(&slashes).unwrap(), "/admin");
    }
}
