//! `notify_command`: every notice the core emits (state changes, role moves, promotion
//! steps and results, refusals) goes to an operator's program as one JSON line on its
//! stdin, as MMM and mmm-manager mailed their operators.
//!
//! One task runs the program for one event at a time, in the order the core emitted them;
//! each run is bounded (a hung program is killed). The core never waits: the queue is
//! bounded and a notice that does not fit is dropped with a log line saying so.

use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Notices waiting for the program; beyond this they are dropped (and logged).
const QUEUE: usize = 256;
/// Bound on one run of the program.
const RUN_BOUND: Duration = Duration::from_secs(10);

/// One notice, as the program reads it.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// Milliseconds since the Unix epoch (the monitor's clock).
    pub at_ms: u64,
    pub host: Option<String>,
    pub message: String,
}

#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Notice>,
}

impl Notifier {
    /// Starts the task that runs `command`.
    pub fn start(command: PathBuf) -> Notifier {
        let (tx, mut rx) = mpsc::channel::<Notice>(QUEUE);
        tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                run(&command, &n).await;
            }
        });
        Notifier { tx }
    }

    /// Queues a notice; never waits.
    pub fn send(&self, notice: Notice) {
        if let Err(e) = self.tx.try_send(notice) {
            tracing::warn!(error = %e, "notify_command is behind: a notice was dropped");
        }
    }
}

async fn run(command: &PathBuf, n: &Notice) {
    let mut line = serde_json::to_string(n).unwrap_or_default();
    line.push('\n');
    let work = async {
        let mut child = tokio::process::Command::new(command)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(line.as_bytes()).await?;
        }
        child.wait_with_output().await
    };
    match tokio::time::timeout(RUN_BOUND, work).await {
        Ok(Ok(out)) if out.status.success() => {}
        Ok(Ok(out)) => tracing::warn!(
            command = %command.display(),
            status = %out.status,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "notify_command failed"
        ),
        Ok(Err(e)) => {
            tracing::warn!(command = %command.display(), error = %e, "notify_command could not run")
        }
        Err(_elapsed) => {
            tracing::warn!(command = %command.display(), "notify_command killed: no exit within {RUN_BOUND:?}")
        }
    }
}
