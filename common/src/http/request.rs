//! An HTTP/1.x request head, parsed without IO: the request line and the one header the
//! monitor's API reads (Authorization). Everything is bounded before it is parsed (see
//! `read_head` in serve.rs); a body is never read, since only GET and HEAD are served.

/// The longest request head read (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without its query string, percent-decoded.
    pub path: String,
    pub authorization: Option<String>,
}

/// Why a request head is refused (400, or 431 for [`BadRequest::TooLarge`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("the request head is larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("the request head is not UTF-8")]
    NotText,
    #[error("the request line is not METHOD PATH HTTP/1.x: {line:?}")]
    RequestLine { line: String },
    #[error("the path must start with '/': {target:?}")]
    Target { target: String },
    #[error("the path has a bad percent-escape: {target:?}")]
    Escape { target: String },
    #[error("a header line has no ':': {line:?}")]
    Header { line: String },
}

/// Where the head ends in `buf` (after its blank line), once it is all there.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a complete head (up to and including its blank line).
pub fn parse(head: &[u8]) -> Result<Request, BadRequest> {
    if head.len() > MAX_HEAD {
        return Err(BadRequest::TooLarge);
    }
    let text = std::str::from_utf8(head).map_err(|_not_utf8| BadRequest::NotText)?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(BadRequest::RequestLine { line: line.into() });
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !token(method) || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(BadRequest::RequestLine { line: line.into() });
    }
    if !target.starts_with('/') {
        return Err(BadRequest::Target {
            target: target.into(),
        });
    }
    let raw_path = target.split(['?', '#']).next().unwrap_or_default();
    let path = percent_decode(raw_path).ok_or_else(|| BadRequest::Escape {
        target: target.into(),
    })?;
    let mut authorization = None;
    for l in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = l.split_once(':').ok_or_else(|| BadRequest::Header {
            line: l.chars().take(100).collect(),
        })?;
        if name.trim().eq_ignore_ascii_case("authorization") {
            authorization = Some(value.trim().to_string());
        }
    }
    Ok(Request {
        method: method.into(),
        path,
        authorization,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_request_line_and_the_authorization_header() {
        let r = parse(
            b"GET /hosts/db%31?x=1 HTTP/1.1\r\nHost: a\r\nauthorization:  Bearer t0k \r\n\r\n",
        )
        .expect("valid");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/hosts/db1");
        assert_eq!(r.authorization.as_deref(), Some("Bearer t0k"));
        let r = parse(b"HEAD / HTTP/1.0\r\n\r\n").expect("valid");
        assert_eq!((r.method.as_str(), r.path.as_str()), ("HEAD", "/"));
        assert_eq!(r.authorization, None);
    }

    #[test]
    fn refuses_what_is_not_a_request_head() {
        assert!(matches!(
            parse(b"GET /\r\n\r\n"),
            Err(BadRequest::RequestLine { .. })
        ));
        assert!(matches!(
            parse(b"GET / SPDY/3\r\n\r\n"),
            Err(BadRequest::RequestLine { .. })
        ));
        assert!(matches!(
            parse(b"G3T / HTTP/1.1\r\n\r\n"),
            Err(BadRequest::RequestLine { .. })
        ));
        assert!(matches!(
            parse(b"GET http://x/ HTTP/1.1\r\n\r\n"),
            Err(BadRequest::Target { .. })
        ));
        assert!(matches!(
            parse(b"GET /%zz HTTP/1.1\r\n\r\n"),
            Err(BadRequest::Escape { .. })
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            Err(BadRequest::Header { .. })
        ));
        assert_eq!(
            parse(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Err(BadRequest::NotText)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(big.as_bytes()), Err(BadRequest::TooLarge));
    }

    #[test]
    fn the_head_ends_at_its_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
    }
}
