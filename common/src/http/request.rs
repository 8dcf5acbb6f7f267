//! What a handler sees of a request: its method, its path and the one header the
//! monitor's API reads (Authorization). hyper parses and bounds the head (see serve.rs);
//! a body is never read, since only GET and HEAD are served.

/// The longest request head read (request line and headers): hyper's smallest buffer,
/// past which it answers 431 itself.
pub const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without its query string, percent-decoded.
    pub path: String,
    pub authorization: Option<String>,
}

/// Why a request hyper parsed is still refused (400).
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    #[error("the path has a bad percent-escape or is not UTF-8: {path:?}")]
    Escape { path: String },
    #[error("the Authorization header is not visible ASCII")]
    Authorization {
        #[source]
        source: hyper::header::ToStrError,
    },
}

impl Request {
    /// The request of a head hyper parsed.
    pub fn from_head(head: &hyper::http::request::Parts) -> Result<Request, BadRequest> {
        let raw_path = head.uri.path();
        let path = percent_decode(raw_path).ok_or_else(|| BadRequest::Escape {
            path: raw_path.into(),
        })?;
        let authorization = match head.headers.get(hyper::header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|source| BadRequest::Authorization { source })?
                    .trim()
                    .to_string(),
            ),
        };
        Ok(Request {
            method: head.method.as_str().into(),
            path,
            authorization,
        })
    }
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

    fn head(target: &str, authorization: Option<&[u8]>) -> hyper::http::request::Parts {
        let mut b = hyper::Request::builder().method("GET").uri(target);
        if let Some(a) = authorization {
            b = b.header("authorization", a);
        }
        b.body(()).expect("a valid head").into_parts().0
    }

    #[test]
    fn takes_the_decoded_path_and_the_authorization_header() {
        let r = Request::from_head(&head("/hosts/db%31?x=1", Some(b" Bearer t0k "))).expect("ok");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/hosts/db1");
        assert_eq!(r.authorization.as_deref(), Some("Bearer t0k"));
        let r = Request::from_head(&head("/", None)).expect("ok");
        assert_eq!(r.authorization, None);
    }

    #[test]
    fn refuses_bad_escapes_and_an_authorization_that_is_not_text() {
        for bad in ["/%zz", "/%4", "/%ff"] {
            assert!(
                matches!(
                    Request::from_head(&head(bad, None)),
                    Err(BadRequest::Escape { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Request::from_head(&head("/", Some(b"Basic \xff"))),
            Err(BadRequest::Authorization { .. })
        ));
    }
}
