//! The sd_notify protocol against a socket this test listens on: READY=1 once the doors are
//! served (here without any broker), WATCHDOG=1 at half the interval while every main loop is
//! alive, none while the engine's loop is stalled, still after a reload restarted a bus loop, and
//! STOPPING=1 on the way out.
//! (A file of its own: it sets process-wide environment variables.)

mod common;

use std::time::Duration;

use common::hub::Hub;
use tokio::net::UnixDatagram;
use tokio::time::{Instant, timeout};

async fn next(sock: &UnixDatagram, within: Duration) -> Option<String> {
    let mut buf = [0u8; 256];
    match timeout(within, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

/// Messages received during `window`.
async fn during(sock: &UnixDatagram, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut got = Vec::new();
    while let Some(m) = next(sock, end.saturating_duration_since(Instant::now())).await {
        got.push(m);
    }
    got
}

#[tokio::test]
async fn ready_then_watchdog_pings_that_stop_while_the_engine_is_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    // SAFETY: this test binary has this one test, and nothing else reads the environment
    // concurrently while it is set, before the daemon starts.
    unsafe {
        std::env::set_var("NOTIFY_SOCKET", &path);
        std::env::set_var("WATCHDOG_USEC", "400000");
    }
    // No broker at all: the doors are served regardless.
    let unused = common::free_port();
    let hub = Hub::with_mqtt(
        &format!("url = \"mqtt://127.0.0.1:{unused}\"\nallow_plaintext = true\n"),
        &[("lobby", "hub")],
        "",
    );
    let daemon = hub.start();
    assert_eq!(
        next(&sock, Duration::from_secs(5)).await.as_deref(),
        Some("READY=1")
    );
    let pings = during(&sock, Duration::from_millis(900)).await;
    assert!(
        pings.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3,
        "every 200 ms: {pings:?}"
    );

    daemon.stall_engine(Duration::from_millis(1800)).await;
    // At most the ping for the epoch acknowledged before the stall, then none.
    during(&sock, Duration::from_millis(450)).await;
    let stalled = during(&sock, Duration::from_millis(900)).await;
    assert!(
        stalled.is_empty(),
        "pings while the engine was stuck: {stalled:?}"
    );

    let after = during(&sock, Duration::from_millis(1500)).await;
    assert!(
        after.iter().any(|m| m == "WATCHDOG=1"),
        "pings resume: {after:?}"
    );

    // A reload stops the bus task and starts a new one: the stopped loop no longer counts, the
    // new one does, and the pings go on.
    let mut config = hub.config();
    config.door[0].strike_ms = 500;
    let applied = daemon.reload(config).await.unwrap();
    assert_eq!(applied.buses_restarted, ["rs485-a"]);
    let reloaded = during(&sock, Duration::from_millis(900)).await;
    assert!(
        reloaded.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3,
        "pings after a reload: {reloaded:?}"
    );

    daemon.shutdown();
    let end = Instant::now() + Duration::from_secs(2);
    let stopping = loop {
        match next(&sock, end.saturating_duration_since(Instant::now())).await {
            Some(m) if m == "WATCHDOG=1" => continue,
            other => break other,
        }
    };
    assert_eq!(stopping.as_deref(), Some("STOPPING=1"));
    daemon.wait().await.unwrap();
}
