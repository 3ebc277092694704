//! A child process under test (vrouterd, a testpmd pod, …): output captured as it arrives,
//! waited for with timeouts, stopped with a signal, and killed if a test fails half-way.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running child with its stdout and stderr collected in the background.
pub struct TestProcess {
    name: String,
    child: Option<Child>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl TestProcess {
    /// Starts `program args…` with stdin closed and both outputs captured.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(program: &Path, args: &[S]) -> TestProcess {
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(collect(out, Arc::clone(&stdout)));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(collect(err, Arc::clone(&stderr)));
        }
        TestProcess {
            name,
            child: Some(child),
            stdout,
            stderr,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until `needle` appears in stdout or stderr; panics with both outputs on timeout or
    /// if the process exits first.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) {
        let seen = crate::wait::poll(
            timeout,
            || {
                let printed = self.stdout().contains(needle) || self.stderr().contains(needle);
                (printed, self.try_wait())
            },
            |&(printed, exit)| printed || exit.is_some(),
        );
        match seen {
            Ok((true, _)) => {}
            Ok((false, Some(status))) => panic!(
                "{} exited ({status}) before printing {needle:?}\n{}",
                self.name,
                self.outputs()
            ),
            _ => panic!(
                "{} did not print {needle:?} within {timeout:?}\n{}",
                self.name,
                self.outputs()
            ),
        }
    }

    /// The exit status if the process has exited (it is reaped then), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with the system's `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the exit, at most `timeout`; panics (after killing it) if it does not exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let Some(child) = self.child.as_mut() else {
            panic!("{} was already waited for", self.name);
        };
        let exited = crate::wait::poll(
            timeout,
            || child.try_wait().expect("try_wait"),
            Option::is_some,
        );
        match exited {
            Ok(Some(status)) => {
                self.child = None;
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                status
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!(
                    "{} did not exit within {timeout:?}\n{}",
                    self.name,
                    self.outputs()
                );
            }
        }
    }

    /// Both outputs, labelled, for assertion messages.
    pub fn outputs(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }
}

impl Drop for TestProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn collect<R: Read + Send + 'static>(source: R, sink: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut line = String::new();
        while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            if let Ok(mut s) = sink.lock() {
                s.push_str(&line);
            }
            line.clear();
        }
    })
}
