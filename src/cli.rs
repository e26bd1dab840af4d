//! What the subcommands do, kept in the library so tests can call them.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::ops::RangeInclusive;
use std::path::Path;
use std::process::ExitCode;

use tracing::{error, warn};

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

/// `doorhub check-config`: prints every problem at once; exit status 1 if there is any. Besides
/// the file itself it checks what `run` needs of the machine (`Config::check`); what `run`
/// copes with (a serial port not plugged in yet) is a warning, which does not fail the check.
pub fn check_config(path: &Path) -> ExitCode {
    match Config::check(path) {
        Ok(checked) => {
            for warning in &checked.warnings {
                tell(format_args!("warning: {warning}"));
            }
            let config = &checked.config;
            let warnings = match checked.warnings.len() {
                0 => String::new(),
                1 => ", 1 warning".to_owned(),
                n => format!(", {n} warnings"),
            };
            let mut out = format!(
                "{}: OK (hub {}, {} buses, {} doors{warnings})\n",
                path.display(),
                config.hub.id,
                config.bus.len(),
                config.door.len()
            );
            for door in &config.door {
                out.push_str(&format!("  {}\n", door.secure_channel_plan()));
            }
            finish(&out, ExitCode::SUCCESS)
        }
        Err(errors) => {
            tell(errors);
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
    let checked = match Config::check(path) {
        Ok(c) => c,
        Err(errors) => {
            tell(errors);
            tell("doorhub: not starting; fix the config and run `doorhub check-config`");
            return ExitCode::FAILURE;
        }
    };
    let config = checked.config;
    crate::logging::init(&config.log.level);
    for warning in &checked.warnings {
        warn!("{warning}");
    }
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
/// used, 0 otherwise (also when nothing answers: that is a finding, not a failure). On a
/// terminal one line on stderr shows the address being probed and what answered so far.
pub fn scan(port: &Path, baud: u32, addresses: RangeInclusive<u8>) -> ExitCode {
    use tokio_serial::SerialPortBuilderExt;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tell(format_args!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let mut view = ScanView::new(&addresses, std::io::stderr().is_terminal());
    let result = runtime.block_on(async {
        let io = tokio_serial::new(port.to_string_lossy(), baud)
            .open_native_async()
            .map_err(|e| {
                format!(
                    "cannot open {}: {e} (is doorhub running? stop it first)",
                    port.display()
                )
            })?;
        tell(format_args!(
            "scanning {} at {baud} baud, addresses {} to {}...",
            port.display(),
            addresses.start(),
            addresses.end()
        ));
        crate::scan::scan(io, baud, addresses.clone(), |p| view.show(p))
            .await
            .map_err(|e| format!("{}: {e}", port.display()))
    });
    view.clear();
    match result {
        Ok(found) if found.is_empty() => finish(
            &format!(
                "no reader answered on {} at {baud} baud (check wiring A/B, termination, baud and power)\n",
                port.display()
            ),
            ExitCode::SUCCESS,
        ),
        Ok(found) => {
            let mut text = String::new();
            for f in &found {
                text.push_str(&format!("{f}\n"));
            }
            text.push_str(&format!("{} reader(s) found\n", found.len()));
            finish(&text, ExitCode::SUCCESS)
        }
        Err(e) => {
            tell(format_args!("doorhub scan: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// Readers named in full on the progress line; more are counted, so it stays one line.
const SHOWN_FOUND: usize = 3;
/// The progress line is cut to this width, so that redrawing it never wraps on a small terminal.
const PROGRESS_WIDTH: usize = 79;

/// `doorhub scan`'s progress line: on a terminal only, since a log or a pipe would get a line
/// per address (127 of them) and nothing a person reads.
struct ScanView {
    tty: bool,
    last: u8,
    found: Vec<String>,
    drawn: bool,
}

impl ScanView {
    fn new(addresses: &RangeInclusive<u8>, tty: bool) -> ScanView {
        ScanView {
            tty,
            last: *addresses.end(),
            found: Vec::new(),
            drawn: false,
        }
    }

    fn show(&mut self, progress: crate::scan::Progress<'_>) {
        let address = match progress {
            crate::scan::Progress::Found(f) => {
                self.found.push(format!(
                    "{} ({})",
                    f.address,
                    hex::encode_upper(f.id.vendor)
                ));
                return;
            }
            crate::scan::Progress::Probing(a) => a,
        };
        if !self.tty {
            return;
        }
        let mut line = format!(
            "probing address {address}/{}, found {}",
            self.last,
            self.found.len()
        );
        if !self.found.is_empty() {
            line.push_str(": ");
            line.push_str(&self.found[..self.found.len().min(SHOWN_FOUND)].join(", "));
            if self.found.len() > SHOWN_FOUND {
                line.push_str(&format!(" and {} more", self.found.len() - SHOWN_FOUND));
            }
        }
        line.truncate(PROGRESS_WIDTH);
        // Carriage return and "erase line": the line is redrawn in place.
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}").and_then(|()| err.flush());
        self.drawn = true;
    }

    /// Erases the progress line, so the findings start on a clean line.
    fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K").and_then(|()| err.flush());
            self.drawn = false;
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
                tell(errors);
                tell("doorhub status: cannot tell the socket from the config; use --socket");
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
        Ok(text) => finish(&text, ExitCode::SUCCESS),
        Err(e) => {
            tell(format_args!("doorhub status: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout and returns `code`. A closed stdout (`doorhub status | head -1`) is a
/// normal end: whoever read it has what they wanted. Any other write error fails the command.
fn finish(text: &str, code: ExitCode) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            tell(format_args!("doorhub: cannot write the output: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// A line on stderr. `eprintln!` would panic if stderr is a closed pipe too (`2>&1 | head`);
/// nobody is left to read the line then, so it is dropped.
fn tell(text: impl fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
