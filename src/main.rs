//! The `doorhub` command: parses arguments and calls the library.

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
    }
}
