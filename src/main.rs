//! The `doorhub` command: parses arguments and calls the library.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The default config file.
const DEFAULT_CONFIG: &str = "/etc/doorhub/doorhub.toml";

#[derive(Parser)]
#[command(
    version,
    about = "Gateway daemon: makes a building's wired doors follow the cloud's credential sets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// The config file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Find the readers on a bus and list them (stop the daemon first: the port is exclusive).
    Scan {
        /// The serial port, e.g. /dev/ttyUSB0.
        #[arg(long)]
        port: PathBuf,
        /// Line speed.
        #[arg(long, default_value_t = 9600)]
        baud: u32,
        /// The addresses to probe: FIRST-LAST, or one address.
        #[arg(long, default_value = "0-126", value_parser = addresses)]
        addresses: RangeInclusive<u8>,
    },
    /// Show the running daemon's state: MQTT link, buses and readers, doors, outbox.
    Status {
        /// The daemon's status socket [default: /run/doorhub/status.sock].
        #[arg(long, conflicts_with = "config")]
        socket: Option<PathBuf>,
        /// Take the socket from this config file's hub.status_socket.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check a config file, print every problem, and exit non-zero if there is any.
    CheckConfig {
        /// The config file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => doorhub::cli::check_config(&config),
        Command::Run { config } => doorhub::cli::run(&config),
        Command::Scan {
            port,
            baud,
            addresses,
        } => doorhub::cli::scan(&port, baud, addresses),
        Command::Status {
            socket,
            config,
            json,
        } => doorhub::cli::status(socket.as_deref(), config.as_deref(), json),
    }
}

/// `--addresses`: `FIRST-LAST` or one address, each 0..=126.
fn addresses(text: &str) -> Result<RangeInclusive<u8>, String> {
    let one = |t: &str| match t.trim().parse::<u8>() {
        Ok(a) if a <= 126 => Ok(a),
        _ => Err(format!("{t:?} is not an address; use 0 to 126")),
    };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => (one(text)?, one(text)?),
    };
    if first > last {
        return Err(format!("{text:?}: the first address is above the last"));
    }
    Ok(first..=last)
}
