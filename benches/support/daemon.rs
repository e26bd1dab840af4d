//! Running the daemon for a benchmark: in this process as the binary runs it, or the release
//! binary itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::common::hub::Hub;

/// How long the daemon may take to stop.
const STOP: Duration = Duration::from_secs(60);

/// The release binary cargo built for this bench (`target/release/doorhub`: benches use the
/// `bench` profile, which inherits `release`).
pub fn binary() -> PathBuf {
    // Cargo sets CARGO_BIN_EXE_<name> for integration tests and benches, and builds the binary
    // first; check it anyway, next to this executable (target/<profile>/deps/<bench>-*).
    let exe = std::env::current_exe().unwrap();
    let beside = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("doorhub"));
    let candidates = [beside, Some(PathBuf::from(env!("CARGO_BIN_EXE_doorhub")))];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the doorhub binary is not next to the bench ({}) : run the bench with \
                 `cargo bench`, which builds target/release/doorhub first",
                exe.display()
            )
        })
}

/// The daemon process, killed if the bench panics.
pub struct Process(pub Child);

impl Process {
    /// Runs `bin` with `hub`'s config at the config's log level (info, as in production), its log
    /// in the hub's folder.
    pub fn spawn(bin: &Path, hub: &Hub) -> Process {
        let log = std::fs::File::create(hub.dir.path().join("doorhub.log")).unwrap();
        Process(
            Command::new(bin)
                .args(["run", "--config"])
                .arg(&hub.config_path)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display())),
        )
    }

    /// Sends SIGTERM and checks the daemon exits with status 0 in time (its log follows if not).
    pub fn terminate(&mut self, rt: &Runtime, hub: &Hub) {
        crate::common::hub::signal(&self.0, "TERM");
        let code = rt.block_on(crate::common::hub::wait_exit(
            &mut self.0,
            Duration::from_secs(20),
        ));
        if code != Some(0) {
            panic!(
                "doorhub exited with {code:?} after SIGTERM; its log:\n{}",
                hub.log()
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts the daemon in this process, on a runtime built as the binary builds its own.
pub fn start_daemon(hub: &Hub) -> (Runtime, doorhub::daemon::Daemon) {
    let rt = doorhub::cli::runtime().unwrap();
    let daemon = {
        let _guard = rt.enter();
        hub.start()
    };
    (rt, daemon)
}

/// Stops an in-process daemon and waits for it.
pub fn stop_daemon(rt: Runtime, daemon: doorhub::daemon::Daemon) {
    daemon.shutdown();
    rt.block_on(async {
        tokio::time::timeout(STOP, daemon.wait())
            .await
            .expect("the daemon did not stop")
            .expect("the daemon failed");
    });
}

/// Sends the in-process daemon's log to `path`.
pub fn init_logging(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .init();
}
