//! Responses and the one refusal every listener shares (a method other than GET or HEAD),
//! without IO.

use super::request::Request;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::StatusCode;

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

    /// The headers every answer carries, the content type first, then the refusal's own.
    fn header_lines(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("Content-Type", self.content_type),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        .into_iter()
        .chain(self.headers.iter().map(|(n, v)| (*n, v.as_str())))
    }

    /// The response hyper sends: it adds Content-Length and Connection, and leaves a HEAD
    /// request's body out.
    pub fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let mut out = hyper::Response::new(Full::new(Bytes::new()));
        *out.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in self.header_lines() {
            match HeaderValue::from_str(value) {
                Ok(v) => {
                    out.headers_mut().append(name, v);
                }
                Err(e) => tracing::warn!(name, error = %e, "HTTP header left out: not text"),
            }
        }
        *out.body_mut() = Full::new(Bytes::from(self.body));
        out
    }

    /// The bytes on the wire, for the answers written without hyper: to a connection over
    /// the limit, or to one whose head did not come in time.
    pub fn encode(&self) -> Vec<u8> {
        let reason = StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let mut out = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in self.header_lines() {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
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
    fn the_raw_encoding_carries_the_headers_and_the_body() {
        let mut r = Response::error(503, "busy");
        r.headers.push(("Retry-After", "1".into()));
        let text = String::from_utf8(r.encode()).expect("text");
        assert!(
            text.starts_with(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            ),
            "{text}"
        );
        assert!(text.contains("\r\nRetry-After: 1\r\n"), "{text}");
        assert!(
            text.ends_with("\r\nConnection: close\r\n\r\n{\"error\":\"busy\"}"),
            "{text}"
        );
    }

    #[test]
    fn hyper_gets_the_status_and_every_header() {
        let mut r = Response::ok(PROMETHEUS, "x 1\n");
        r.headers.push(("Allow", "GET, HEAD".into()));
        let h = r.into_hyper();
        assert_eq!(h.status(), StatusCode::OK);
        assert_eq!(h.headers()["content-type"], PROMETHEUS);
        assert_eq!(h.headers()["cache-control"], "no-store");
        assert_eq!(h.headers()["allow"], "GET, HEAD");
        let odd = Response::with_status(1000, JSON, "").into_hyper();
        assert_eq!(odd.status(), StatusCode::INTERNAL_SERVER_ERROR);
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
