//! Responses and the one refusal every listener shares (a method other than GET or HEAD),
//! without IO.

use super::request::Request;

/// A response: status, content type, body, and any header a refusal needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

pub const JSON: &str = "application/json";

/// Prometheus' text exposition format.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4";

impl Response {
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response::with_status(200, content_type, body)
    }

    pub fn with_status(
        status: u16,
        content_type: &'static str,
        body: impl Into<Vec<u8>>,
    ) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A JSON error: `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Response {
        let body = serde_json::json!({ "error": message }).to_string();
        Response::with_status(status, JSON, body)
    }

    /// The bytes on the wire; a HEAD request's without the body.
    pub fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Refuses (405, with `Allow`) any method but GET and HEAD: these APIs only read; what
/// changes the cluster goes through `mmm-control` and its keyed protocol.
pub fn read_only(r: &Request) -> Result<(), Response> {
    if r.method == "GET" || r.method == "HEAD" {
        return Ok(());
    }
    let mut refusal = Response::error(
        405,
        &format!(
            "{} is not served: this API is read-only (GET, HEAD); changes go through mmm-control",
            r.method
        ),
    );
    refusal.headers.push(("Allow", "GET, HEAD".into()));
    Err(refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_response_has_the_headers_without_the_body() {
        let r = Response::ok(JSON, "{}");
        let full = String::from_utf8(r.encode(false)).expect("text");
        let head = String::from_utf8(r.encode(true)).expect("text");
        assert!(full.starts_with("HTTP/1.1 200 OK\r\n") && full.ends_with("\r\n\r\n{}"));
        assert!(head.contains("Content-Length: 2\r\n") && head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn anything_but_get_and_head_is_refused_with_405() {
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let r = Request {
                method: method.into(),
                path: "/".into(),
                authorization: None,
            };
            let refusal = read_only(&r).expect_err(method);
            assert_eq!(refusal.status, 405);
            assert!(refusal.headers.contains(&("Allow", "GET, HEAD".into())));
            assert!(String::from_utf8_lossy(&refusal.body).contains("read-only"));
        }
        for method in ["GET", "HEAD"] {
            let r = Request {
                method: method.into(),
                path: "/".into(),
                authorization: None,
            };
            assert_eq!(read_only(&r), Ok(()));
        }
    }
}
