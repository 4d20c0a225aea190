//! Shared helpers for the broker integration tests: the broker binary as a child process
//! (started, waited on by its readiness line, killed in `Drop`), short socket paths, events.
//!
//! Waits are on real signals (a line on stderr/stdout, a message on a socket); the timeouts
//! here only turn a hang into a failure.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::DateTime;
use procmond_wal::ProcessEvent;

/// Failure guard for any single wait; never a synchronisation mechanism.
pub const GUARD: Duration = Duration::from_secs(60);

/// A temporary directory under /tmp, so socket paths stay far below `sun_path`'s limit.
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pwb")
        .tempdir_in("/tmp")
        .expect("create temporary directory")
}

/// A small event whose pid identifies it.
pub fn event(pid: u32) -> ProcessEvent {
    let mut event = ProcessEvent::new(
        pid,
        format!("proc-{pid}"),
        DateTime::from_timestamp_nanos(1_700_000_000_000_000_000),
    );
    event.command_line = vec![format!("proc-{pid}"), "--flag".into(), "two words".into()];
    event
        .platform_metadata
        .insert("linux.cgroup".into(), "/system.slice".into());
    event
}

#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

/// The broker binary running as a child process.
pub struct BrokerProcess {
    child: Child,
    /// The socket path it listens on.
    pub socket: PathBuf,
    stderr: Arc<Lines>,
    stdout: Option<mpsc::Receiver<String>>,
}

/// How a broker failed to start.
#[derive(Debug)]
pub struct StartFailure {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl BrokerProcess {
    /// Starts `procmond-wal broker --socket SOCKET ARGS…` and waits for its readiness line.
    pub fn start(socket: &Path, args: &[&str]) -> BrokerProcess {
        match BrokerProcess::try_start(socket, args) {
            Ok(broker) => broker,
            Err(failure) => panic!("broker did not start: {failure:?}"),
        }
    }

    /// Like [`BrokerProcess::start`], returning the exit status and stderr if it exits first.
    pub fn try_start(socket: &Path, args: &[&str]) -> Result<BrokerProcess, StartFailure> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
            .arg("broker")
            .arg("--socket")
            .arg(socket)
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the broker binary");
        let stderr = Arc::new(Lines::default());
        let (ready_sender, ready) = mpsc::channel();
        let stderr_thread = {
            let pipe = child.stderr.take().expect("stderr is piped");
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.starts_with("listening on ") {
                        let _ = ready_sender.send(());
                    }
                    stderr.lines.lock().expect("lock").push(line);
                    stderr.changed.notify_all();
                }
            })
        };
        let (stdout_sender, stdout) = mpsc::channel();
        {
            let pipe = child.stdout.take().expect("stdout is piped");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if stdout_sender.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        match ready.recv_timeout(GUARD) {
            Ok(()) => Ok(BrokerProcess {
                child,
                socket: socket.to_owned(),
                stderr,
                stdout: Some(stdout),
            }),
            Err(_) => {
                // The reader thread ended (the process exited) or the guard expired.
                let _ = child.kill();
                let status = child.wait().expect("wait for the broker");
                // The reader sees end of file once the process is gone; join it so every
                // line is collected.
                let _ = stderr_thread.join();
                let stderr = stderr.lines.lock().expect("lock").join("\n");
                Err(StartFailure { status, stderr })
            }
        }
    }

    /// Waits until a stderr line contains `needle`; panics after [`GUARD`].
    pub fn wait_for_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + GUARD;
        let mut lines = self.stderr.lines.lock().expect("lock");
        loop {
            if let Some(line) = lines.iter().find(|line| line.contains(needle)) {
                return line.clone();
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            assert!(
                !remaining.is_zero(),
                "no stderr line contains {needle:?}; stderr:\n{}",
                lines.join("\n")
            );
            lines = self
                .stderr
                .changed
                .wait_timeout(lines, remaining)
                .expect("lock")
                .0;
        }
    }

    /// The next line the broker printed on stdout; panics after [`GUARD`].
    pub fn next_stdout_line(&self) -> String {
        self.stdout
            .as_ref()
            .expect("stdout reader")
            .recv_timeout(GUARD)
            .expect("a line on the broker's stdout")
    }

    /// Kills the broker with SIGKILL (a crash: nothing is cleaned up).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        self.child.wait().expect("wait for the broker")
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
