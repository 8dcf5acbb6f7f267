//! The control socket: one command line in, MMM's text out, then close. A unix socket
//! (the default) is created 0600 for the monitor's user and needs no key; a TCP socket,
//! loopback included, requires the cluster key over the command and the answer
//! (control::auth).

use crate::control::auth::{self, Part};
use crate::control::{Command, CommandError};
use mmm_common::config::{ClusterKey, ControlAddr};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// A parsed command and where its answer goes.
pub type Request = (Command, oneshot::Sender<String>);

/// Control connections open at once; more are closed at once (each waits up to
/// READ_TIMEOUT for its line, so an idle flood could otherwise pin descriptors).
const MAX_CONNECTIONS: usize = 32;

pub use mmm_common::http::accepted;

/// A command line, or the `ERROR: ` line that refuses it.
pub fn parse_line(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    Command::parse(&words).map_err(|e| match e {
        CommandError::Empty => "ERROR: No command given. Use 'help' for the list.".to_string(),
        e => format!("ERROR: {e}"),
    })
}

/// Longest command line accepted.
const MAX_LINE: u64 = 4096;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    addr: ControlAddr,
    key: Option<ClusterKey>,
    reply_timeout: Duration,
    requests: mpsc::Sender<Request>,
) -> std::io::Result<()> {
    let need_key = addr.keyed();
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    match addr {
        ControlAddr::Tcp(a) => {
            let l = tokio::net::TcpListener::bind(a).await?;
            tracing::info!(addr = %a, key_required = need_key, "control socket listening");
            loop {
                let Some((s, peer)) = accepted(l.accept().await, "control").await else {
                    continue;
                };
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "control connection refused: {MAX_CONNECTIONS} already open");
                    continue;
                };
                let (req, key) = (requests.clone(), key.clone().filter(|_| need_key));
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = connection(s, key, reply_timeout, req).await {
                        tracing::warn!(%peer, error = %e, "control connection failed");
                    }
                });
            }
        }
        ControlAddr::Unix(path) => {
            // A stale socket file (a monitor that died) is replaced; a live one belongs to
            // another monitor and is left alone.
            if tokio::net::UnixStream::connect(&path).await.is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("another monitor serves {}", path.display()),
                ));
            }
            let _ = std::fs::remove_file(&path);
            let l = tokio::net::UnixListener::bind(&path)?;
            // Only the monitor's user (and root) may command it.
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            tracing::info!(path = %path.display(), "control socket listening");
            loop {
                let Some((s, _)) = accepted(l.accept().await, "control").await else {
                    continue;
                };
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    tracing::warn!("control connection refused: {MAX_CONNECTIONS} already open");
                    continue;
                };
                let req = requests.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = connection(s, None, reply_timeout, req).await {
                        tracing::warn!(error = %e, "control connection failed");
                    }
                });
            }
        }
    }
}

async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    let mut limited = tokio::io::AsyncReadExt::take(&mut *r, MAX_LINE);
    let n = tokio::time::timeout(READ_TIMEOUT, limited.read_line(&mut line))
        .await
        .map_err(|_elapsed| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no command line within 10s")
        })??;
    Ok((n > 0).then(|| line.trim_end_matches(['\n', '\r']).to_string()))
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    key: Option<ClusterKey>,
    reply_timeout: Duration,
    requests: mpsc::Sender<Request>,
) -> std::io::Result<()> {
    let mut s = BufReader::new(stream);
    let mut challenge = None;
    let mut claimed = None;
    if key.is_some() {
        let nonce =
            mmm_common::proto::fresh_nonce().map_err(|e| std::io::Error::other(e.to_string()))?;
        let c: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        s.get_mut()
            .write_all(format!("{}{c}\n", auth::CHALLENGE).as_bytes())
            .await?;
        let line = read_line(&mut s).await?.unwrap_or_default();
        claimed = Some(line.strip_prefix(auth::AUTH).unwrap_or("").to_string());
        challenge = Some(c);
    }
    let Some(line) = read_line(&mut s).await? else {
        return Ok(());
    };
    if let (Some(key), Some(c), Some(m)) = (&key, &challenge, &claimed) {
        if !auth::verify(key, c, Part::Command, &line, m) {
            tracing::warn!(
                "control command refused: its MAC does not match (no key, or changed in flight)"
            );
            s.get_mut().write_all(b"ERROR: Authentication failed: this control socket requires the cluster key.\n").await?;
            return Ok(());
        }
    }
    let text = match parse_line(&line) {
        Err(refusal) => refusal,
        Ok(cmd) => {
            let (tx, rx) = oneshot::channel();
            if requests.send((cmd, tx)).await.is_err() {
                "ERROR: The monitor is shutting down.".to_string()
            } else {
                match tokio::time::timeout(reply_timeout, rx).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(_dropped)) => "ERROR: The monitor is shutting down.".to_string(),
                    Err(_elapsed) => {
                        format!("ERROR: No answer from the monitor within {reply_timeout:?}.")
                    }
                }
            }
        }
    };
    let mut text = text;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    if let (Some(key), Some(c)) = (&key, &challenge) {
        let m = auth::mac(key, c, Part::Answer, &text);
        s.get_mut()
            .write_all(format!("{}{m}\n", auth::ANSWER_MAC).as_bytes())
            .await?;
    }
    s.get_mut().write_all(text.as_bytes()).await?;
    s.get_mut().shutdown().await
}
