//! The link's promises under failure: TLS and mutual TLS, broker restarts with events queued,
//! the real binary killed with SIGKILL and stopped with SIGTERM.

mod common;

use std::time::{Duration, SystemTime};

use common::hub::{
    HUB, Hub, WAIT, credentials, digest, health, publish_snapshot, reported, signal, topic,
    wait_exit,
};
use common::{Broker, Msg, Subscriber, TestCerts};
use doorhub::events::{Event, EventKind};
use doorhub::store::Store;

fn access(door: &str, n: usize) -> Event {
    Event {
        at: SystemTime::now(),
        door: door.to_owned(),
        kind: EventKind::Access {
            granted: false,
            reason: doorhub::events::AccessReason::UnknownCard,
            credential: None,
            bits: 26,
            data: format!("{:08x}", (n as u32) << 6),
        },
    }
}

fn seq(m: &Msg) -> u64 {
    m.json()["seq"].as_u64().unwrap()
}

/// Waits until events up to `last` have arrived; returns their seqs in arrival order.
async fn events_until(sub: &mut Subscriber, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    let t = topic("events");
    while !seen.contains(&last) {
        seen.push(seq(&sub.wait_for(WAIT, |m| m.topic == t).await));
    }
    seen
}

/// First occurrences, in order: what a cloud that drops duplicates by `seq` keeps.
fn deduplicated(seqs: &[u64]) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for &s in seqs {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

#[tokio::test]
async fn mutual_tls_works_and_an_untrusted_server_is_refused() {
    let certs = TestCerts::new(HUB);
    let broker = Broker::start_tls(&certs);
    let mqtt = format!(
        "url = \"{}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        broker.url(),
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display()
    );
    let hub = Hub::with_mqtt(&mqtt, &[("lobby", "hub")], "");
    let daemon = hub.start();
    let mut sub = Subscriber::connect(broker.endpoint(Some(&certs)), &[&topic("#")]).await;
    health(&mut sub, |h| h["online"] == true).await;
    let set = credentials("tls", 5);
    publish_snapshot(&mut sub, "lobby", 3, &set, 1).await;
    let r = reported(&mut sub, "lobby", |r| r["applied"] == 3).await;
    assert_eq!(r["digest"], digest(&set));
    // The broker knows the hub by its certificate (use_identity_as_username).
    assert!(
        broker.log().contains(&format!("u'{HUB}'")),
        "{}",
        broker.log()
    );
    daemon.shutdown();
    daemon.wait().await.unwrap();

    // Same hub config, but the server's certificate is signed by a CA the hub does not trust.
    let rogue = Broker::start_tls_rogue(&certs);
    let mqtt = mqtt.replace(&broker.url(), &rogue.url());
    let hub = Hub::with_mqtt(&mqtt, &[("lobby", "hub")], "");
    let daemon = hub.start();
    // Two attempts (the hub retries after about a second), and neither became a session.
    common::wait_until(WAIT, || {
        rogue.log().matches("New connection from").count() >= 3
    })
    .await;
    assert!(
        !rogue.log().contains("New client connected"),
        "{}",
        rogue.log()
    );
    assert!(!daemon.health().mqtt_connected());
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn plaintext_is_refused_unless_allowed() {
    let broker = Broker::start();
    let hub = Hub::with_mqtt(&format!("url = \"{}\"\n", broker.url()), &[], "");
    let err = doorhub::config::Config::load(&hub.config_path).unwrap_err();
    assert!(err.to_string().contains("mqtt.url"), "{err}");
    assert!(err.to_string().contains("allow_plaintext"), "{err}");
    // The daemon refuses to start on it, and says why.
    let mut child = hub.spawn();
    assert_eq!(wait_exit(&mut child, WAIT).await, Some(1));
    assert!(hub.log().contains("allow_plaintext"), "{}", hub.log());
}

#[tokio::test]
async fn events_survive_a_broker_restart_in_order_without_gaps() {
    let mut broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub")], "");
    let daemon = hub.start();
    let events = daemon.events();
    let mut sub =
        Subscriber::connect_persistent(&broker, "cloud-events", &[&topic("events")]).await;
    for n in 0..50 {
        events.send(access("lobby", n)).await.unwrap();
    }
    let before = events_until(&mut sub, 50).await;
    broker.stop();
    // Queued while the broker is down.
    for n in 50..150 {
        events.send(access("lobby", n)).await.unwrap();
    }
    common::wait_until(WAIT, || daemon.store().outbox_stats().events >= 100).await;
    // The link may hear of the broker's loss after the events were stored.
    assert!(common::wait_until(WAIT, || !daemon.health().mqtt_connected()).await);
    broker.start_again();
    for n in 150..200 {
        events.send(access("lobby", n)).await.unwrap();
    }
    let after = events_until(&mut sub, 200).await;
    let all: Vec<u64> = before.into_iter().chain(after).collect();
    assert_eq!(deduplicated(&all), (1..=200).collect::<Vec<_>>(), "{all:?}");
    // Everything acknowledged leaves the outbox.
    assert!(common::wait_until(WAIT, || daemon.store().outbox_stats().events == 0).await);
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

/// Appends events to a stopped hub's store, as its components would have.
async fn append_offline(hub: &Hub, range: std::ops::Range<usize>) {
    let store = Store::open(&hub.data_dir()).unwrap();
    let events: Vec<Event> = range.map(|n| access("lobby", n)).collect();
    store
        .append_events(&events, 100_000, |s, e| e.to_json(s))
        .unwrap();
    store.flush().await.unwrap();
}

#[tokio::test]
async fn sigkill_after_puback_loses_nothing_and_seq_continues() {
    let broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub")], "");
    append_offline(&hub, 0..5).await;
    let mut sub = Subscriber::connect(&broker, &[&topic("#")]).await;

    let mut child = hub.spawn();
    health(&mut sub, |h| h["online"] == true).await;
    assert_eq!(
        deduplicated(&events_until(&mut sub, 5).await),
        vec![1, 2, 3, 4, 5]
    );
    let v1 = credentials("v1", 3000);
    publish_snapshot(&mut sub, "lobby", 1, &v1, 3).await;
    // `reported` goes out only after the parts were stored, flushed and acknowledged.
    reported(&mut sub, "lobby", |r| r["applied"] == 1).await;
    signal(&child, "KILL");
    wait_exit(&mut child, WAIT).await;
    // The broker publishes the last will when the connection drops.
    let will = health(&mut sub, |h| h["online"] == false).await;
    assert_eq!(
        will,
        serde_json::json!({"hub": HUB, "online": false, "reason": "connection_lost"})
    );

    // While the hub is down: a new snapshot (queued by the broker for the hub's persistent
    // session) and more events raised into its store.
    let v2 = credentials("v2", 10);
    publish_snapshot(&mut sub, "lobby", 2, &v2, 1).await;
    append_offline(&hub, 5..8).await;

    let mut child = hub.spawn();
    let r = reported(&mut sub, "lobby", |r| r["applied"] == 2).await;
    assert_eq!(r["digest"], digest(&v2));
    assert_eq!(r["credentials"], 10);
    health(&mut sub, |h| h["online"] == true).await;
    assert_eq!(
        deduplicated(&events_until(&mut sub, 8).await),
        vec![6, 7, 8]
    );

    // SIGTERM: the shutdown notice, then exit 0 within 5 s.
    signal(&child, "TERM");
    let started = std::time::Instant::now();
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(5)).await,
        Some(0),
        "{}",
        hub.log()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let notice = health(&mut sub, |h| h["online"] == false).await;
    assert_eq!(
        notice,
        serde_json::json!({"hub": HUB, "online": false, "reason": "shutdown"})
    );
}

#[tokio::test]
async fn a_restart_republishes_every_door_even_unchanged() {
    let broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub"), ("vault", "stored")], "");
    let daemon = hub.start();
    let mut sub = Subscriber::connect(&broker, &[&topic("#")]).await;
    publish_snapshot(&mut sub, "lobby", 4, &credentials("r", 2), 1).await;
    reported(&mut sub, "lobby", |r| r["applied"] == 4).await;
    daemon.shutdown();
    daemon.wait().await.unwrap();
    sub.drain();
    let daemon = hub.start();
    // Not a retained replay (the subscription is older): a fresh publish of each door.
    let lobby = reported(&mut sub, "lobby", |r| r["applied"] == 4).await;
    assert_eq!(lobby["desired"], 4);
    let vault = reported(&mut sub, "vault", |_| true).await;
    assert_eq!(vault["desired"], 0);
    health(&mut sub, |h| h["online"] == true).await;
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_broker_that_lost_its_sessions_gets_a_new_subscription_and_every_retained_state() {
    let mut broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub"), ("vault", "stored")], "");
    let daemon = hub.start();
    let mut sub = Subscriber::connect(&broker, &[&topic("#")]).await;
    publish_snapshot(&mut sub, "lobby", 1, &credentials("a", 3), 1).await;
    reported(&mut sub, "lobby", |r| r["applied"] == 1).await;
    drop(sub);

    // The broker comes back with nothing: no session, no retained messages.
    broker.stop();
    let mut removed = 0;
    for entry in walk(broker.dir()) {
        if entry.extension().is_some_and(|e| e == "db") {
            std::fs::remove_file(entry).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 1, "mosquitto's persistence file");
    broker.start_again();

    // Retained state is back: the hub republished it after a CONNACK without a session.
    let mut sub = Subscriber::connect(&broker, &[&topic("#")]).await;
    let lobby = reported(&mut sub, "lobby", |r| r["applied"] == 1).await;
    assert_eq!(lobby["digest"], digest(&credentials("a", 3)));
    reported(&mut sub, "vault", |r| r["desired"] == 0).await;
    health(&mut sub, |h| h["online"] == true).await;
    // And it subscribed again: a new snapshot is adopted.
    publish_snapshot(&mut sub, "lobby", 2, &credentials("b", 2), 1).await;
    reported(&mut sub, "lobby", |r| r["applied"] == 2).await;
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
