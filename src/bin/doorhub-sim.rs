//! `doorhub-sim`: simulated OSDP door readers on a serial device, for tests and the demo.
//!
//! `doorhub-sim reader --port DEV --address N[,M,...] --mode stored|plain` serves one reader per
//! address on DEV. Script lines on stdin (`card BITS HEX`, `wipe`, `silent on|off`,
//! `tamper [on|off]`, `state`, each optionally prefixed `@ADDRESS`) act on the readers; what
//! happens is printed on stdout as one JSON object per line (see `doorhub::sim::SimEvent`), and
//! logs go to stderr.

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use doorhub::sim::{
    DEFAULT_RX_BUFFER, Mode, Reader, ReaderOptions, Script, SimEvent, parse_addresses,
    parse_vendor_code,
};
use tokio::sync::mpsc;
use tokio_serial::SerialPortBuilderExt;
use tracing_subscriber::EnvFilter;

/// The speed the port is opened at when `--baud` is not given (a pty ignores it).
const DEFAULT_OPEN_BAUD: u32 = 115_200;

#[derive(Parser)]
#[command(version, about = "Simulated OSDP door readers on a serial device")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate one reader, or several on one multi-drop line.
    Reader {
        /// The serial device (or pty) to serve.
        #[arg(long)]
        port: String,
        /// The reader's OSDP address, or a comma-separated list for several on one line.
        #[arg(long, default_value = "0")]
        address: String,
        /// `stored` (own credential table, MFGREP ACCESS) or `plain` (osdp_RAW card reads).
        #[arg(long, default_value = "stored")]
        mode: Mode,
        /// Line speed: pace replies at this many baud (10 bits a byte). Without it, answer at once.
        #[arg(long)]
        baud: Option<u32>,
        /// Processing time before each reply, in ms.
        #[arg(long, default_value_t = 0)]
        reply_delay_ms: u64,
        /// Receive buffer in bytes (PDCAP 0x0A); longer frames are dropped unanswered.
        #[arg(long, default_value_t = DEFAULT_RX_BUFFER)]
        rx_buffer: u16,
        /// Vendor code, 6 hex digits in wire order.
        #[arg(long, default_value = "0A4448")]
        vendor_code: String,
        /// Most table entries held (default: unlimited).
        #[arg(long)]
        capacity: Option<u32>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let Command::Reader {
        port,
        address,
        mode,
        baud,
        reply_delay_ms,
        rx_buffer,
        vendor_code,
        capacity,
    } = Cli::parse().command;
    let options = match (parse_addresses(&address), parse_vendor_code(&vendor_code)) {
        (Ok(addresses), Ok(vendor_code)) => addresses
            .into_iter()
            .map(|address| ReaderOptions {
                rx_buffer,
                vendor_code,
                capacity,
                reply_delay: Duration::from_millis(reply_delay_ms),
                baud,
                ..ReaderOptions::new(address, mode)
            })
            .collect::<Vec<_>>(),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("doorhub-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("doorhub-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(port, baud, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doorhub-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(port: String, baud: Option<u32>, options: Vec<ReaderOptions>) -> anyhow::Result<()> {
    let stream = tokio_serial::new(&port, baud.unwrap_or(DEFAULT_OPEN_BAUD))
        .open_native_async()
        .map_err(|e| anyhow::anyhow!("cannot open {port}: {e}"))?;
    let addresses = options.iter().map(|o| o.address).collect();
    let (script_tx, script_rx) = mpsc::channel::<Script>(64);
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<SimEvent>();

    // Stdin is read on a plain thread: a line at a time, blocking, is all it needs.
    let stdin_events = event_tx.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match line.parse::<Script>() {
                Ok(s) => {
                    if script_tx.blocking_send(s).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = stdin_events.send(SimEvent::Error {
                        address: None,
                        message: e.to_string(),
                    });
                }
            }
        }
    });

    println!("{}", SimEvent::Ready { port, addresses }.to_json());
    let printer = tokio::spawn(async move {
        while let Some(e) = event_rx.recv().await {
            // stdout is line-buffered, so each event reaches a pipe as it happens.
            println!("{}", e.to_json());
        }
    });
    let result = Reader::multidrop(options)
        .run(stream, script_rx, event_tx)
        .await;
    // The run dropped its sender; the stdin thread's clone may live on, so don't wait forever.
    let _ = tokio::time::timeout(Duration::from_millis(200), printer).await;
    Ok(result?)
}
