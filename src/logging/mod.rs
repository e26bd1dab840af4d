//! Where the log goes: to the journal when systemd connected stderr to it, each record's fields
//! (its own and its spans', such as `door` and `bus`) as journal fields and in the message's
//! text; to stderr otherwise.

mod journal;
pub mod ratelimit;

use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use journal::{Journal, SOCKET as JOURNAL_SOCKET};
use tracing::{Level, Subscriber, warn};
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, filter_fn};
use tracing_subscriber::layer::{Filter, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// What journal records carry in `SYSLOG_IDENTIFIER` (`journalctl -t doorhub`).
pub const SYSLOG_IDENTIFIER: &str = "doorhub";

/// Sets up the process's log: the journal when stderr is the journal stream systemd set up,
/// stderr otherwise, or when the journal can't be reached (then with a warning saying so).
/// `RUST_LOG`, when set and valid, wins over `level` (the config's `log.level`).
pub fn init(level: &str) {
    let (env, rust_log_problem) = env_filter(level);
    let unreachable = match stderr_is_journal().then(|| Journal::connect(JOURNAL_SOCKET)) {
        Some(Ok(journal)) => {
            install(tracing_subscriber::registry().with(journal.with_filter(filter(env))));
            None
        }
        other => {
            install(tracing_subscriber::registry().with(stderr().with_filter(filter(env))));
            other.and_then(Result::err)
        }
    };
    if let Some(e) = unreachable {
        warn!("cannot reach the journal at {JOURNAL_SOCKET} ({e}); logging to stderr");
    }
    if let Some(problem) = rust_log_problem {
        warn!("{problem}");
    }
}

/// Whether systemd connected stderr to the journal. `JOURNAL_STREAM` holds that stream's
/// `device:inode` (systemd.exec(5)); a process that merely inherited the variable, such as a
/// shell started from the service, has another stderr and keeps logging there.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // A duplicate of fd 2, so std can fstat it safely (dropping it closes only the copy).
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Plain text on stderr.
fn stderr<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        // Colours only for a person at a terminal; log files get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
}

/// The filter `RUST_LOG` says when it is set and valid, else `level`; and, when `RUST_LOG` is
/// set but not used, why.
fn env_filter(level: &str) -> (EnvFilter, Option<String>) {
    let from_level = || EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let Some(value) = std::env::var_os(EnvFilter::DEFAULT_ENV) else {
        return (from_level(), None);
    };
    match value.to_str().map(EnvFilter::try_new) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (
            from_level(),
            Some(format!(
                "RUST_LOG={value:?} is not a valid filter ({e}); using log.level {level:?}"
            )),
        ),
        None => (
            from_level(),
            Some(format!(
                "RUST_LOG={value:?} is not UTF-8; using log.level {level:?}"
            )),
        ),
    }
}

/// `env`, plus every span at info or above whatever `env` says: the daemon's task spans (`bus`,
/// `engine`, `mqtt`) are info spans, and a warning logged at level `warn` must still name its
/// bus. There are few spans (one per task), so enabling them costs little.
fn filter<S>(env: EnvFilter) -> impl Filter<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    env.or(
        filter_fn(|meta| meta.is_span() && *meta.level() <= Level::INFO)
            .with_max_level_hint(LevelFilter::INFO),
    )
}

/// Makes `subscriber` the process's, and the `log` crate's (rumqttc and rustls log through
/// it). That fails only when one is set already (a test running the daemon in-process), which
/// then keeps logging.
fn install(subscriber: impl SubscriberInitExt) {
    let _ = subscriber.try_init();
}
