//! vrouterd under test: started with its own control socket, socket base and EAL file prefix
//! (so tests run side by side), driven through the real control API, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use control_api::BlockingClient;

use crate::process::TestProcess;

/// A running vrouterd with a private directory for its sockets.
pub struct Vrouterd {
    pub process: TestProcess,
    dir: tempfile::TempDir,
    client: BlockingClient,
}

impl Vrouterd {
    /// Starts `binary` with `args` (vrouterd options, before the EAL ones) and `eal` (after `--`;
    /// `--no-pci`, a memory size and a unique file prefix are added), and waits until its control
    /// API answers.
    pub fn start(binary: &Path, args: &[&str], eal: &[&str]) -> Vrouterd {
        crate::hugepages::ensure(1024);
        let dir = tempfile::Builder::new()
            .prefix("vrouterd-test")
            .tempdir()
            .expect("temporary directory");
        let control = dir.path().join("vrouter.sock");
        let base = dir.path().join("pods");
        std::fs::create_dir_all(&base).expect("socket base");
        let prefix = format!(
            "--file-prefix=vrt{}x{}",
            std::process::id(),
            dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        );
        let mut full: Vec<String> = vec![
            "--control-socket".into(),
            control.display().to_string(),
            "--socket-base".into(),
            base.display().to_string(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        full.push("--".into());
        full.extend(["--no-pci".into(), "-m".into(), "256".into(), prefix]);
        full.extend(eal.iter().map(|a| a.to_string()));
        let mut process = TestProcess::spawn(binary, &full);
        process.wait_for_output("control API listening", Duration::from_secs(30));
        let client = BlockingClient::new(&control).expect("control client");
        Vrouterd {
            process,
            dir,
            client,
        }
    }

    /// The directory vhost-user socket directories must lie under.
    pub fn socket_base(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.path().join("vrouter.sock")
    }

    /// Runs control API calls: `vr.api(|c| async move { c.vifs().await })`.
    pub fn api<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(control_api::Client) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        self.client.run(f)
    }

    /// SIGTERM, then waits for the exit; returns the status.
    pub fn stop(mut self) -> ExitStatus {
        self.process.signal("TERM");
        self.process.wait(Duration::from_secs(30))
    }
}
