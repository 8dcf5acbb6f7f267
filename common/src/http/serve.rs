//! One bounded HTTP/1.x listener for the agent and the monitor, on hyper. A client is
//! bounded, so that none can hold a descriptor, a task or the program's own work for long:
//! at most [`Limits::connections`] at once (more are answered 503 and closed),
//! [`Limits::read`] to send its request head ([`MAX_HEAD`] at most, else 431; 408 when it
//! is late), [`Limits::write`] to take the answer, one request per connection. A program
//! gives the routing and the answers as `handler`.

use super::request::{Request, MAX_HEAD};
use super::response::Response;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

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

/// Serves `l` for ever: each request, parsed and bounded by hyper, goes to `handler`; a
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
            let _ = s.try_write(&busy.encode());
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(s, limits, handler).await;
        });
    }
}

/// One request on `s`, in three bounded stages: the head within `limits.read`, the
/// handler on its own bounds, the answer within `limits.write`. hyper's own header
/// timeout would close a late client without a word; this one answers 408.
async fn connection<H, F>(s: TcpStream, limits: Limits, handler: Arc<H>)
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let head_read = Arc::new(Notify::new());
    let answered = Arc::new(Notify::new());
    let service = {
        let (head_read, answered) = (head_read.clone(), answered.clone());
        hyper::service::service_fn(move |r: hyper::Request<Incoming>| {
            head_read.notify_one();
            let (answered, handler) = (answered.clone(), handler.clone());
            async move {
                let response = respond(r, handler.as_ref()).await;
                answered.notify_one();
                Ok::<_, Infallible>(response)
            }
        })
    };
    // One request per connection, so a permit is held for one answer at most; header names
    // in title case, as scripts matching `Content-Type:` have always read them; hyper's
    // smallest buffer is the head's bound (431 past it).
    let mut conn = http1::Builder::new()
        .keep_alive(false)
        .title_case_headers(true)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(s), service);
    tokio::select! {
        // The connection first: it is what calls the service, and so notifies.
        biased;
        _ = &mut conn => return,
        () = head_read.notified() => {}
        () = tokio::time::sleep(limits.read) => {
            let late = Response::error(
                408,
                &format!("no complete request head within {:?}", limits.read),
            );
            let mut s = conn.into_parts().io.into_inner();
            let _ = tokio::time::timeout(limits.write, async {
                s.write_all(&late.encode()).await?;
                s.shutdown().await
            })
            .await;
            return;
        }
    }
    tokio::select! {
        _ = &mut conn => return,
        () = answered.notified() => {}
    }
    let _ = tokio::time::timeout(limits.write, conn).await;
}

/// The handler's answer to `r`, or the refusal of a request hyper parsed but we do not.
async fn respond<H, F>(r: hyper::Request<Incoming>, handler: &H) -> hyper::Response<Full<Bytes>>
where
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
{
    let (head, _body) = r.into_parts();
    let response = match Request::from_head(&head) {
        Err(e) => Response::error(400, &e.to_string()),
        Ok(r) => {
            let (method, path) = (r.method.clone(), r.path.clone());
            let response = handler(r).await;
            // 503 is an answer, not a refusal: a load balancer's check of a host that is
            // not the writer gets one every few seconds.
            if response.status >= 400 && response.status != 503 {
                tracing::debug!(%method, %path, status = response.status, "HTTP request refused");
            }
            response
        }
    };
    response.into_hyper()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn ask(addr: std::net::SocketAddr, raw: String) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(raw.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        // A reset after a refused head is an answer too: what came before it counts.
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn echo(limits: Limits) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(serve(l, limits, |r: Request| async move {
            if r.path == "/slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            match r.path.as_str() {
                "/missing" => Response::error(404, "no such path"),
                _ => Response::ok("text/plain", format!("{} {}", r.method, r.path)),
            }
        }));
        addr
    }

    /// A silent client holds one connection, not the listener; bad heads are refused
    /// before the handler; HEAD has the headers of GET without the body.
    #[tokio::test]
    async fn serves_requests_and_refuses_bad_heads() {
        let addr = echo(Limits::default()).await;
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let r = ask(addr, "GET /a%2Fb?q HTTP/1.1\r\nHost: x\r\n\r\n".into()).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nGET /a/b"), "{r}");
        for header in [
            "Content-Type: text/plain\r\n",
            "Content-Length: 8\r\n",
            "Cache-Control: no-store\r\n",
            "X-Content-Type-Options: nosniff\r\n",
            "Connection: close\r\n",
        ] {
            assert!(r.contains(header), "{header} in {r}");
        }
        let r = ask(addr, "HEAD /x HTTP/1.1\r\n\r\n".into()).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("Content-Length: 7\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = ask(addr, "GET /missing HTTP/1.0\r\n\r\n".into()).await;
        assert!(r.starts_with("HTTP/1.0 404 Not Found\r\n"), "{r}");
        let r = ask(
            addr,
            "POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nab".into(),
        )
        .await;
        assert!(r.ends_with("\r\n\r\nPOST /x"), "the handler decides: {r}");
        let r = ask(addr, "GET /%zz HTTP/1.1\r\n\r\n".into()).await;
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
        let r = ask(addr, "nonsense\r\n\r\n".into()).await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        let r = ask(addr, big).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_is_answered_408_after_the_read_limit() {
        let addr = echo(Limits {
            read: Duration::from_millis(50),
            ..Limits::default()
        })
        .await;
        let r = ask(addr, String::new()).await;
        assert!(r.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{r}");
        let r = ask(addr, "GET / HTTP/1.1\r\n".into()).await;
        assert!(r.starts_with("HTTP/1.1 408 "), "half a head: {r}");
        // The read limit is on the head only: a slow handler still answers.
        let r = ask(addr, "GET /slow HTTP/1.1\r\n\r\n".into()).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_answered_503() {
        let addr = echo(Limits {
            connections: 1,
            ..Limits::default()
        })
        .await;
        let held = TcpStream::connect(addr).await.expect("connect");
        // The held connection is accepted before the next one asks.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = ask(addr, "GET / HTTP/1.1\r\n\r\n".into()).await;
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        drop(held);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = ask(addr, "GET / HTTP/1.1\r\n\r\n".into()).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    }
}
