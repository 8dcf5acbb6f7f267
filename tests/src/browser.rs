//! Debian's headless Chromium in a node's namespace, driven over the DevTools protocol on
//! a pipe (`--remote-debugging-pipe`: Chromium reads commands on fd 3 and writes answers
//! and events on fd 4, each a JSON message ended by NUL), so a test loads a page once and
//! reads its DOM while the page updates by itself: no WebSocket, no port.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Browser {
    child: Child,
    to: std::fs::File,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: String,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both descriptors, which nothing else owns; they are wrapped
    // in OwnedFd at once.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if r != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both are fresh, open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Browser {
    /// Chromium in namespace `ns`, with its profile in `profile`, showing `url`. A
    /// Chromium that exits before it answered (seen once in CI, with nothing in its log)
    /// is started again, up to three times; the error names each exit status.
    pub fn open(ns: &str, profile: &Path, url: &str, log: &Path) -> Result<Browser> {
        let mut exits = Vec::new();
        for attempt in 1..=3 {
            // A fresh profile too: a crashed Chromium may leave its profile locked.
            let (log, profile) = if attempt == 1 {
                (log.to_path_buf(), profile.to_path_buf())
            } else {
                (
                    log.with_extension(format!("{attempt}.log")),
                    profile.with_extension(attempt.to_string()),
                )
            };
            let mut b = Self::start(ns, &profile, &log)?;
            let e = match b.show(url) {
                Ok(()) => return Ok(b),
                Err(e) => e,
            };
            match b.exit_status(Duration::from_secs(2)) {
                Some(status) => exits.push(format!(
                    "attempt {attempt}: {status} ({e:#}); its log: {:?}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )),
                // Still running and not answering: not a start-up crash.
                None => return Err(e),
            }
        }
        bail!("chromium exited before it answered, three times: {exits:#?}")
    }

    /// The child's exit status if it ends within `within`.
    fn exit_status(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Opens `url` in a new tab and attaches to it.
    fn show(&mut self, url: &str) -> Result<()> {
        let target = self.call("Target.createTarget", json!({ "url": url }), None)?;
        let target_id = target["targetId"]
            .as_str()
            .context("no targetId")?
            .to_string();
        let attached = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
            None,
        )?;
        self.session = attached["sessionId"]
            .as_str()
            .context("no sessionId")?
            .to_string();
        Ok(())
    }

    /// Chromium started on about:blank, its pipes connected.
    fn start(ns: &str, profile: &Path, log: &Path) -> Result<Browser> {
        let (cmd_read, cmd_write) = pipe()?;
        let (out_read, out_write) = pipe()?;
        let (r3, w4) = (cmd_read.as_raw_fd(), out_write.as_raw_fd());
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                ns,
                "chromium",
                "--headless",
                "--no-sandbox",
            ])
            .args(["--remote-debugging-pipe", "--disable-gpu", "--no-first-run"])
            // A container's /dev/shm is often 64 MiB, too small for Chromium.
            .arg("--disable-dev-shm-usage")
            .args(["--window-size=1280,1500", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        // SAFETY: between fork and exec only fcntl, dup2 and close run (all
        // async-signal-safe) on descriptors this child owns.
        unsafe {
            command.pre_exec(move || {
                // The pipe ends may themselves be fds 3 or 4 (a test process with only
                // 0-2 open gets exactly those): dup2 onto the same number is a no-op
                // that keeps O_CLOEXEC, and a plain dup2(r3, 3) could overwrite w4.
                // Copies above 9 first, then onto 3 and 4, which clears O_CLOEXEC.
                let high_r = libc::fcntl(r3, libc::F_DUPFD, 10);
                let high_w = libc::fcntl(w4, libc::F_DUPFD, 10);
                if high_r < 0
                    || high_w < 0
                    || libc::dup2(high_r, 3) < 0
                    || libc::dup2(high_w, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(high_r);
                libc::close(high_w);
                Ok(())
            });
        }
        let child = command.spawn().context("starting chromium")?;
        drop((cmd_read, out_write));
        let (tx, from) = mpsc::channel();
        let reader = std::fs::File::from(out_read);
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            loop {
                let mut message = Vec::new();
                match r.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        message.pop();
                        if let Ok(v) = serde_json::from_slice::<Value>(&message) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Browser {
            child,
            to: std::fs::File::from(cmd_write),
            from,
            next: 1,
            session: String::new(),
        })
    }

    fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Result<Value> {
        let id = self.next;
        self.next += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message)?;
        bytes.push(0);
        self.to.write_all(&bytes).context("writing to chromium")?;
        loop {
            let v = self
                .from
                .recv_timeout(Duration::from_secs(60))
                .with_context(|| format!("no answer from chromium to {method}"))?;
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    pub fn eval(&mut self, expression: &str) -> Result<Value> {
        let session = self.session.clone();
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
            Some(&session),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `expression` is true in the page; false after `timeout`.
    pub fn wait_true(&mut self, expression: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.eval(expression).is_ok_and(|v| v == json!(true)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// A PNG of the page as it is now.
    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        let session = self.session.clone();
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png" }),
            Some(&session),
        )?;
        let data = r["data"].as_str().context("no screenshot data")?;
        let png = base64_decode(data).context("screenshot data is not base64")?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Our own child, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in s {
        acc = acc << 6 | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
