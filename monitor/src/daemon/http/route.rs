//! What a request asks for, and whether it may: the routes of the read-only API, the
//! token check, and the responses, all without IO. Nothing here changes state: only GET
//! and HEAD are served; anything that changes the cluster stays on the keyed control
//! protocol.

use mmm_common::http::response::read_only;
pub use mmm_common::http::{Request, Response, JSON};

/// What the listener serves: everything (`monitor.http`), or the metrics alone on any
/// path (`monitor.metrics`, as it always answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    Full,
    MetricsOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The live page and its script and style, served from the binary.
    Page,
    Script,
    Style,
    /// `show --json`.
    Status,
    /// One host of `show --json`.
    Host(String),
    /// The recent transitions and failovers of `show --json`.
    Events,
    Metrics,
}

/// The route of `r`, or the response that refuses it: a method other than GET or HEAD
/// (405), a missing or wrong token (401), an unknown path (404). Authentication comes
/// before the path, so an unauthenticated client learns nothing of the routes.
pub fn route(r: &Request, exposure: Exposure, token: Option<&str>) -> Result<Route, Response> {
    read_only(r)?;
    if exposure == Exposure::MetricsOnly {
        return Ok(Route::Metrics);
    }
    if let Some(token) = token {
        if !authorized(r.authorization.as_deref(), token) {
            let mut refusal = Response::error(
                401,
                "a token is required: Authorization: Bearer TOKEN, or basic auth with the token as the password",
            );
            refusal.headers.push((
                "WWW-Authenticate",
                "Basic realm=\"mmm\", charset=\"UTF-8\"".into(),
            ));
            return Err(refusal);
        }
    }
    match r.path.as_str() {
        "/" | "/index.html" => Ok(Route::Page),
        "/app.js" => Ok(Route::Script),
        "/style.css" => Ok(Route::Style),
        "/status" => Ok(Route::Status),
        "/events" => Ok(Route::Events),
        "/metrics" => Ok(Route::Metrics),
        p => match p.strip_prefix("/hosts/") {
            Some(name) if !name.is_empty() && !name.contains('/') => Ok(Route::Host(name.into())),
            _ => Err(Response::error(
                404,
                &format!("no such path {p:?}: try /, /status, /hosts/NAME, /events or /metrics"),
            )),
        },
    }
}

/// Whether `header` carries `token`: as a bearer token, or as basic auth's password (any
/// user name), so a browser's login prompt works for the page. Compared through BLAKE3
/// digests, whose equality takes the same time wherever they differ.
pub fn authorized(header: Option<&str>, token: &str) -> bool {
    let Some((scheme, value)) = header.and_then(|h| h.split_once(' ')) else {
        return false;
    };
    let given = if scheme.eq_ignore_ascii_case("bearer") {
        value.trim().to_string()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let Some(decoded) = base64_decode(value.trim()) else {
            return false;
        };
        match String::from_utf8(decoded) {
            Ok(pair) => match pair.split_once(':') {
                Some((_user, password)) => password.to_string(),
                None => return false,
            },
            Err(_not_utf8) => return false,
        }
    } else {
        return false;
    };
    blake3::hash(given.as_bytes()) == blake3::hash(token.as_bytes())
}

/// Standard base64 (RFC 4648, padded), as basic auth sends it.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.chunks(4) {
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, auth: Option<&str>) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            authorization: auth.map(String::from),
        }
    }

    #[test]
    fn routes_the_read_only_api() {
        let r = |p: &str| route(&get(p, None), Exposure::Full, None);
        assert_eq!(r("/"), Ok(Route::Page));
        assert_eq!(r("/app.js"), Ok(Route::Script));
        assert_eq!(r("/status"), Ok(Route::Status));
        assert_eq!(r("/events"), Ok(Route::Events));
        assert_eq!(r("/metrics"), Ok(Route::Metrics));
        assert_eq!(r("/hosts/db1"), Ok(Route::Host("db1".into())));
        for missing in ["/hosts/", "/hosts/db1/x", "/nope"] {
            let refusal = r(missing).expect_err(missing);
            assert_eq!(refusal.status, 404, "{missing}");
            assert_eq!(refusal.content_type, JSON);
        }
        let head = Request {
            method: "HEAD".into(),
            ..get("/status", None)
        };
        assert_eq!(route(&head, Exposure::Full, None), Ok(Route::Status));
    }

    #[test]
    fn anything_but_get_and_head_is_refused_with_405_on_either_listener() {
        let r = Request {
            method: "POST".into(),
            ..get("/status", None)
        };
        for exposure in [Exposure::Full, Exposure::MetricsOnly] {
            assert_eq!(route(&r, exposure, None).expect_err("POST").status, 405);
        }
    }

    #[test]
    fn the_metrics_listener_answers_metrics_on_any_path() {
        let r = route(&get("/whatever", None), Exposure::MetricsOnly, Some("t"));
        assert_eq!(r, Ok(Route::Metrics));
    }

    #[test]
    fn a_token_is_required_as_bearer_or_basic_password() {
        let token = "s3cret-token";
        let r = |auth: Option<&str>| route(&get("/status", auth), Exposure::Full, Some(token));
        assert_eq!(r(Some("Bearer s3cret-token")), Ok(Route::Status));
        assert_eq!(r(Some("bearer s3cret-token")), Ok(Route::Status));
        // "anyone:s3cret-token"
        assert_eq!(
            r(Some("Basic YW55b25lOnMzY3JldC10b2tlbg==")),
            Ok(Route::Status)
        );
        for bad in [
            None,
            Some("Bearer wrong"),
            Some("Bearer"),
            Some("Basic !!!!"),
            Some("Basic YW55b25lOndyb25n"), // anyone:wrong
            Some("Digest s3cret-token"),
        ] {
            let refusal = r(bad).expect_err("refused");
            assert_eq!(refusal.status, 401, "{bad:?}");
            assert!(refusal
                .headers
                .iter()
                .any(|(n, v)| *n == "WWW-Authenticate" && v.starts_with("Basic")));
        }
        // Unknown paths are not told apart before authentication.
        let refusal = route(&get("/nope", None), Exposure::Full, Some(token)).expect_err("401");
        assert_eq!(refusal.status, 401);
    }

    #[test]
    fn base64_decodes_padded_input_only() {
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode("YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode("YQ"), None);
        assert_eq!(base64_decode("Y==="), None);
    }
}
