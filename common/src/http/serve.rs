//! One bounded HTTP/1.x listener for the agent and the monitor. A client is bounded, so
//! that none can hold a descriptor, a task or the program's own work for long: at most
//! [`Limits::connections`] at once (more are answered 503 and closed), [`Limits::read`]
//! to send its request head ([`MAX_HEAD`] at most), [`Limits::write`] to take the answer,
//! one request per connection. A program gives the routing and the answers as `handler`.

use super::request::{self, BadRequest, Request, MAX_HEAD};
use super::response::Response;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The bounds on every client of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connections: usize,
    pub read: Duration,
    pub write: Duration,
}

impl Default for Limits {
    /// A load balancer's checks and a scrape each take one connection for a moment; a
    /// browser polls on a few: 32 leaves room for all of them with descriptors to spare.
    fn default() -> Limits {
        Limits {
            connections: 32,
            read: Duration::from_secs(5),
            write: Duration::from_secs(10),
        }
    }
}

/// An accepted connection, or None after a failed accept (EMFILE, ECONNABORTED...): the
/// listener keeps serving after a pause instead of ending (and with it the program).
pub async fn accepted<T>(result: std::io::Result<T>, what: &str) -> Option<T> {
    match result {
        Ok(x) => Some(x),
        Err(e) => {
            tracing::warn!(error = %e, "accepting a {what} connection failed; retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Serves `l` for ever: each request head, parsed and bounded, goes to `handler`; a
/// HEAD request is answered without the body.
pub async fn serve<H, F>(l: TcpListener, limits: Limits, handler: H)
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let handler = Arc::new(handler);
    let open = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    loop {
        let Some((s, peer)) = accepted(l.accept().await, "HTTP").await else {
            continue;
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "HTTP connection refused: {} already open", limits.connections);
            let busy = Response::error(503, "too many connections at once; retry shortly");
            // Never waits: a client that does not read gets nothing.
            let _ = s.try_write(&busy.encode(false));
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(s, limits, |r| handler(r)).await;
        });
    }
}

async fn connection<F>(mut s: TcpStream, limits: Limits, handler: impl FnOnce(Request) -> F)
where
    F: Future<Output = Response>,
{
    let (response, head_only) = match tokio::time::timeout(limits.read, read_head(&mut s)).await {
        Err(_elapsed) => (
            Response::error(
                408,
                &format!("no complete request head within {:?}", limits.read),
            ),
            false,
        ),
        Ok(None) => return,
        Ok(Some(Err(e @ BadRequest::TooLarge))) => (Response::error(431, &e.to_string()), false),
        Ok(Some(Err(e))) => (Response::error(400, &e.to_string()), false),
        Ok(Some(Ok(r))) => {
            let head_only = r.method == "HEAD";
            let (method, path) = (r.method.clone(), r.path.clone());
            let response = handler(r).await;
            // 503 is an answer, not a refusal: a load balancer's check of a host that is
            // not the writer gets one every few seconds.
            if response.status >= 400 && response.status != 503 {
                tracing::debug!(%method, %path, status = response.status, "HTTP request refused");
            }
            (response, head_only)
        }
    };
    let bytes = response.encode(head_only);
    let _ = tokio::time::timeout(limits.write, async {
        s.write_all(&bytes).await?;
        s.shutdown().await
    })
    .await;
}

/// The request head, bounded; `None` when the client closed before sending one.
async fn read_head(s: &mut TcpStream) -> Option<Result<Request, BadRequest>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = request::head_end(&buf) {
            return Some(request::parse(&buf[..end]));
        }
        if buf.len() > MAX_HEAD {
            return Some(Err(BadRequest::TooLarge));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listener on loopback with a handler that echoes the path: a silent client holds
    /// one connection, not the listener; bad heads are refused before the handler.
    #[tokio::test]
    async fn serves_requests_and_refuses_bad_heads() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(serve(l, Limits::default(), |r: Request| async move {
            Response::ok("text/plain", r.path)
        }));
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let ask = |raw: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(raw.as_bytes()).await.expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let r = ask("GET /a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("/a/b"),
            "{r}"
        );
        let r = ask("HEAD /x HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 ") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = ask("nonsense\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let big: &'static str = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD)).leak();
        let r = ask(big).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_is_answered_408_after_the_read_limit() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let limits = Limits {
            read: Duration::from_millis(50),
            ..Limits::default()
        };
        tokio::spawn(serve(l, limits, |_r: Request| async move {
            Response::ok("text/plain", "")
        }));
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    }
}
