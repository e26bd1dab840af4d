//! What the subcommands do, kept in the library so tests can call them.

use std::path::Path;
use std::process::ExitCode;

use tracing::error;
use tracing_subscriber::EnvFilter;

use crate::config::Config;

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
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
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
    init_logging(&config.log.level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` wins over the config's `log.level`.
fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
