//! What the subcommands do, kept in the library so tests can call them.

use std::path::Path;
use std::process::ExitCode;

use tracing::error;

use crate::config::Config;

/// The daemon's runtime. One worker: the hub's work is mostly waiting (the line, the broker,
/// sled's own flush thread), and every extra worker adds thread hand-offs to each exchange on the
/// line: idle polling of 32 readers took 1.8-2.1 % of a core with two workers, 1.4-1.6 % with one.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

/// `doorhub check-config`: prints every problem at once; exit status 1 if there is any.
pub fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!(
                "{}: OK (hub {}, {} buses, {} doors)",
                path.display(),
                config.hub.id,
                config.bus.len(),
                config.door.len()
            );
            for door in &config.door {
                println!("  {}", door.secure_channel_plan());
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// Tunes glibc's allocator for a long-running daemon on a small board: large buffers (snapshot
/// parts, credential sets, table files) get their own mappings, returned to the system when freed,
/// instead of fragmenting the heap; and at most two arenas, since the daemon has few threads.
/// Without this a burst of 64 sets of 10,000 credentials left 5-15 MiB more resident.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called once, before the runtime
    // starts any thread, with parameters and values glibc documents.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// `doorhub run`: loads the config (refusing to start on any problem), then runs the daemon
/// until SIGTERM or SIGINT. Exit status 0 after a clean shutdown.
pub fn run(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("doorhub: not starting; fix the config and run `doorhub check-config`");
            return ExitCode::FAILURE;
        }
    };
    crate::logging::init(&config.log.level);
    tune_allocator();
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::daemon::run(config, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `doorhub scan`: lists the readers that answer on a bus; exit status 1 if the port can't be
/// used, 0 otherwise (also when nothing answers: that is a finding, not a failure).
pub fn scan(port: &Path, baud: u32) -> ExitCode {
    use std::io::Write;
    use tokio_serial::SerialPortBuilderExt;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let io = tokio_serial::new(port.to_string_lossy(), baud)
            .open_native_async()
            .map_err(|e| {
                format!(
                    "cannot open {}: {e} (is doorhub running? stop it first)",
                    port.display()
                )
            })?;
        eprintln!(
            "scanning {} at {baud} baud, addresses 0 to 126...",
            port.display()
        );
        crate::scan::scan(io, baud, 0..=126, |a| {
            eprint!("\r  address {a:3}");
            let _ = std::io::stderr().flush();
        })
        .await
        .map_err(|e| format!("{}: {e}", port.display()))
    });
    eprintln!();
    match result {
        Ok(found) if found.is_empty() => {
            println!(
                "no reader answered on {} at {baud} baud (check wiring A/B, termination, baud and power)",
                port.display()
            );
            ExitCode::SUCCESS
        }
        Ok(found) => {
            for f in &found {
                println!("{f}");
            }
            println!("{} reader(s) found", found.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("doorhub scan: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where `doorhub status` looks without `--socket` or `--config`.
pub const DEFAULT_STATUS_SOCKET: &str = "/run/doorhub/status.sock";

/// `doorhub status`: prints the running daemon's status, as a table or (`json`) as the JSON
/// document. The socket is `socket`, else the `config` file's `hub.status_socket`, else
/// [`DEFAULT_STATUS_SOCKET`]. Exit status 1 if the daemon cannot be asked, 0 otherwise.
pub fn status(socket: Option<&Path>, config: Option<&Path>, json: bool) -> ExitCode {
    let path = match (socket, config) {
        (Some(socket), _) => socket.to_path_buf(),
        (None, Some(config)) => match Config::status_socket(config) {
            Ok(path) => path,
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("doorhub status: cannot tell the socket from the config; use --socket");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => DEFAULT_STATUS_SOCKET.into(),
    };
    let shown = crate::status::fetch(&path).and_then(|bytes| {
        if json {
            // As sent (indented, sections in order), once it is known to be JSON.
            serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
                .map(|_| String::from_utf8_lossy(&bytes).into_owned())
                .map_err(crate::status::StatusError::NotJson)
        } else {
            crate::status::parse(&bytes).map(|doc| crate::status::table(&doc))
        }
    });
    match shown {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("doorhub status: {e}");
            ExitCode::FAILURE
        }
    }
}
