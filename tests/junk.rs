//! Junk on the hub's topics can't grow its store or its memory (cloud.md, "A door that is not in
//! the hub's config", and the payload limit): a real mosquitto, the daemon with a real sled
//! store, and subscribers that see what the cloud would see.

mod common;

use std::collections::BTreeSet;

use common::burst::FastPublisher;
use common::hub::{
    HUB, Hub, WAIT, credentials, health, parts, publish_snapshot, reported, signal, topic,
    wait_exit,
};
use common::{Broker, Msg, Subscriber};
use doorhub::store::{Change, DoorRecord, ErrorReport, Store};

/// Health goes out every second, so counters can be awaited.
const FAST_HEALTH: &str = "[health]\ninterval_s = 1\n";

async fn subscriber(broker: &Broker) -> Subscriber {
    Subscriber::connect(broker, &[&format!("doorhub/v1/{HUB}/#")]).await
}

/// The doors that have a retained `reported` on the broker now, as a fresh subscriber sees them.
async fn retained_reported(broker: &Broker) -> BTreeSet<String> {
    let filter = topic("doors/+/reported");
    let mut sub = Subscriber::connect(broker, &[&filter]).await;
    // The broker sends a subscription's retained messages before anything published after it:
    // once this marker arrives, every retained message has.
    let marker = topic("doors/zz-marker/reported");
    sub.publish(&marker, "marker", false).await;
    let mut doors = BTreeSet::new();
    loop {
        let m = sub.next(WAIT).await;
        if m.topic == marker {
            return doors;
        }
        // A running hub's live updates are not retained deliveries.
        if m.retain {
            doors.insert(m.topic.split('/').nth(4).unwrap().to_owned());
        }
    }
}

/// Publishes a message larger than the test clients' 16 MiB, QoS 1, and waits for its PUBACK.
async fn publish_large(broker: &Broker, topic: &str, payload: Vec<u8>, retain: bool) {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let mut opts = broker
        .endpoint(None)
        .options(&common::client_id("large-pub"));
    opts.set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("no PUBACK for the large message");
}

fn stored_doors(store: &Store) -> Vec<String> {
    store.doors().unwrap().into_iter().map(|(d, _)| d).collect()
}

/// Lines a technician sees (info and above) in the binary's log.
fn info_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            [" INFO ", " WARN ", " ERROR "]
                .iter()
                .any(|lv| l.contains(lv))
        })
        .count()
}

/// Publishes `messages` back to back from one client, and waits until the broker took them all.
async fn publish_burst(broker: &Broker, messages: Vec<(String, Vec<u8>)>) {
    let publisher = FastPublisher::connect(&broker.endpoint(None)).await;
    publisher.publish_all(messages).await;
    publisher.wait_acked().await;
}

/// A valid snapshot (`version`, `per_door` credentials) for each of `n` doors that are not
/// configured, named by `name(i)`.
fn snapshots_for_unknown_doors(
    n: usize,
    version: u64,
    per_door: usize,
    name: impl Fn(usize) -> String,
) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let door = name(i);
            let payload = parts(version, &credentials(&door, per_door), 1).remove(0);
            (
                topic(&format!("doors/{door}/desired/0")),
                payload.into_bytes(),
            )
        })
        .collect()
}

#[tokio::test]
async fn invalid_payloads_for_unknown_doors_leave_no_record_and_few_log_lines() {
    let broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub")], FAST_HEALTH);
    let mut child = hub.spawn();
    let mut sub = subscriber(&broker).await;
    reported(&mut sub, "lobby", |r| r["status"] == "in_sync").await;
    let quiet = info_lines(&hub.log());

    let n = 2000;
    let junk: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let (level, payload) = match i % 4 {
                0 => ("0", b"{not json".to_vec()),
                1 => ("0", br#"{"version":1,"part":0,"parts":1}"#.to_vec()),
                2 => (
                    "07",
                    parts(1, &credentials("j", 1), 1).remove(0).into_bytes(),
                ),
                _ => (
                    "0",
                    br#"{"version":0,"part":0,"parts":1,"credentials":[]}"#.to_vec(),
                ),
            };
            (
                topic(&format!("doors/junk-{i:05}/desired/{level}")),
                payload,
            )
        })
        .collect();
    publish_burst(&broker, junk).await;
    let h = health(&mut sub, |h| h["rejected"]["invalid"] == n).await;
    assert_eq!(h["doors"]["unconfigured"], 0);
    // Still adopting for its own doors.
    publish_snapshot(&mut sub, "lobby", 5, &credentials("l", 2), 1).await;
    reported(&mut sub, "lobby", |r| r["applied"] == 5).await;

    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, WAIT).await, Some(0));
    let log = hub.log();
    let lines = info_lines(&log) - quiet;
    assert!(
        lines < 20,
        "{lines} info/warn lines for {n} rejections:\n{}",
        log.lines()
            .filter(|l| !l.contains("DEBUG"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        stored_doors(&Store::open(&hub.data_dir()).unwrap()),
        ["lobby"]
    );
    assert_eq!(
        retained_reported(&broker).await,
        BTreeSet::from(["lobby".to_owned()])
    );
}

#[tokio::test]
async fn at_most_64_unconfigured_doors_are_kept_and_a_cleared_one_stays_gone() {
    let broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub")], FAST_HEALTH);
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let burst = snapshots_for_unknown_doors(65, 3, 2, |i| format!("u{i:02}"));
    publish_burst(&broker, burst).await;
    // The broker delivers in order: the first 64 are kept, the 65th is refused and counted.
    let h = health(&mut sub, |h| {
        h["doors"]["unconfigured"] == 64 && h["rejected"]["invalid"] == 1
    })
    .await;
    assert_eq!(h["doors"]["total"], 1);
    let r = reported(&mut sub, "u00", |r| r["desired"] == 3).await;
    assert_eq!(r["status"], "unconfigured");
    // lobby has no snapshot, so no stored record yet.
    let doors = stored_doors(daemon.store());
    assert_eq!(doors.len(), 64, "{doors:?}");
    assert!(!doors.contains(&"u64".to_owned()));
    // Another valid snapshot for a kept door is fine; one for a new door is still refused.
    publish_snapshot(&mut sub, "u01", 4, &credentials("u1", 3), 1).await;
    reported(&mut sub, "u01", |r| r["desired"] == 4).await;
    publish_snapshot(&mut sub, "u99", 1, &credentials("u99", 1), 1).await;
    health(&mut sub, |h| h["rejected"]["invalid"] == 2).await;

    // The cloud clears u00's part 0: its record goes, and so does its retained reported.
    sub.clear_retained(&topic("doors/u00/desired/0")).await;
    let reported_u00 = topic("doors/u00/reported");
    sub.wait_for(WAIT, |m: &Msg| {
        m.topic == reported_u00 && m.payload.is_empty()
    })
    .await;
    health(&mut sub, |h| h["doors"]["unconfigured"] == 63).await;
    assert!(!stored_doors(daemon.store()).contains(&"u00".to_owned()));
    daemon.shutdown();
    daemon.wait().await.unwrap();

    // After a restart it is still gone: no record, no retained reported, 63 doors counted.
    let daemon = hub.start();
    health(&mut sub, |h| h["doors"]["unconfigured"] == 63).await;
    assert!(!stored_doors(daemon.store()).contains(&"u00".to_owned()));
    let retained = retained_reported(&broker).await;
    assert_eq!(retained.len(), 64, "lobby and u01..u63: {retained:?}");
    assert!(!retained.contains("u00") && !retained.contains("u64") && !retained.contains("u99"));
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_restart_drops_unconfigured_records_without_a_snapshot_and_their_retained_state() {
    let broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub")], "");
    // What an earlier hub left: a record made by a rejected payload for an unknown door, and
    // its retained reported.
    {
        let store = Store::open(&hub.data_dir()).unwrap();
        let junk = DoorRecord {
            error: Some(ErrorReport {
                version: None,
                reason: "malformed JSON: expected value at line 1 column 1".into(),
            }),
            ..DoorRecord::default()
        };
        let mut change = Change::new();
        change.put_door("old-junk", &junk).unwrap();
        store.apply(change).unwrap();
        store.flush().await.unwrap();
    }
    let mut sub = subscriber(&broker).await;
    let old = topic("doors/old-junk/reported");
    sub.publish(&old, r#"{"door":"old-junk","status":"unconfigured"}"#, true)
        .await;
    let daemon = hub.start();
    sub.wait_for(WAIT, |m: &Msg| m.topic == old && m.payload.is_empty())
        .await;
    assert!(stored_doors(daemon.store()).is_empty());
    health(&mut sub, |h| h["doors"]["unconfigured"] == 0).await;
    daemon.shutdown();
    daemon.wait().await.unwrap();
    assert_eq!(
        retained_reported(&broker).await,
        BTreeSet::from(["lobby".to_owned()])
    );
}

#[tokio::test]
async fn a_clearing_the_broker_never_took_goes_out_after_the_next_start() {
    let mut broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub")], "");
    {
        let store = Store::open(&hub.data_dir()).unwrap();
        let mut change = Change::new();
        change.put_door("old-junk", &DoorRecord::default()).unwrap();
        store.apply(change).unwrap();
        store.flush().await.unwrap();
    }
    let old = topic("doors/old-junk/reported");
    let mut sub = subscriber(&broker).await;
    sub.publish(&old, r#"{"door":"old-junk","status":"unconfigured"}"#, true)
        .await;
    drop(sub);
    // The hub removes the record while the broker is away, and stops before it could clear the
    // retained reported.
    broker.stop();
    let daemon = hub.start();
    assert!(stored_doors(daemon.store()).is_empty());
    daemon.shutdown();
    daemon.wait().await.unwrap();
    broker.start_again();
    let mut sub = subscriber(&broker).await;
    let daemon = hub.start();
    sub.wait_for(WAIT, |m: &Msg| m.topic == old && m.payload.is_empty())
        .await;
    daemon.shutdown();
    daemon.wait().await.unwrap();
    assert_eq!(
        retained_reported(&broker).await,
        BTreeSet::from(["lobby".to_owned()])
    );
}

#[tokio::test]
async fn a_payload_just_over_the_limit_is_rejected_and_one_far_over_does_not_stick_the_hub() {
    let broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub"), ("garage", "hub")], "");
    hub.rewrite(|t| {
        t.replace(
            "allow_plaintext = true\n",
            "allow_plaintext = true\nmax_payload = 2048\n",
        )
    });
    let daemon = hub.start();
    // Not on the desired topics: the far-over message is past this client's limit too.
    let mut sub =
        Subscriber::connect(&broker, &[&topic("doors/+/reported"), &topic("health")]).await;
    publish_snapshot(&mut sub, "lobby", 1, &credentials("l", 1), 1).await;
    reported(&mut sub, "lobby", |r| r["applied"] == 1).await;

    // Just over: read, rejected with the reason, the link stays up.
    let pad = "x".repeat(2048);
    sub.publish(
        &topic("doors/lobby/desired/0"),
        format!(r#"{{"version":2,"pad":"{pad}"}}"#),
        false,
    )
    .await;
    let r = reported(&mut sub, "lobby", |r| !r["error"].is_null()).await;
    assert_eq!(
        r["error"]["reason"],
        format!(
            "payload is {} bytes, over mqtt.max_payload (2048)",
            2048 + 22
        )
    );
    assert_eq!(r["applied"], 1);

    // Far over (past rumqttc's old 16 MiB room too), queued in the hub's persistent session:
    // the hub drops the connection before reading it, and its clean reconnection makes the
    // broker drop it. Other doors' snapshots then go on being adopted.
    publish_large(
        &broker,
        &topic("doors/lobby/desired/0"),
        vec![b' '; 17 << 20],
        false,
    )
    .await;
    publish_snapshot(&mut sub, "garage", 7, &credentials("g", 3), 1).await;
    let r = reported(&mut sub, "garage", |r| r["applied"] == 7).await;
    assert_eq!(r["status"], "in_sync");
    let lobby = reported(&mut sub, "lobby", |r| r["applied"] == 1).await;
    assert_eq!(lobby["desired"], 1, "lobby kept its state");
    assert!(daemon.health().mqtt().connected);
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_retained_message_far_over_the_limit_leaves_the_configured_doors_followed() {
    let broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub"), ("garage", "hub")], "");
    // Junk first: the broker sends retained messages in the order they came, so with a
    // subscription to every door the hub would never get past it to garage's snapshot.
    publish_large(
        &broker,
        &topic("doors/junk/desired/0"),
        vec![b' '; 17 << 20],
        true,
    )
    .await;
    let mut sub = Subscriber::connect(&broker, &[&topic("doors/+/reported")]).await;
    publish_snapshot(&mut sub, "garage", 7, &credentials("g", 3), 1).await;
    let daemon = hub.start();
    let r = reported(&mut sub, "garage", |r| r["applied"] == 7).await;
    assert_eq!(r["status"], "in_sync");
    // Live snapshots of configured doors still arrive.
    publish_snapshot(&mut sub, "lobby", 2, &credentials("l", 2), 1).await;
    reported(&mut sub, "lobby", |r| r["applied"] == 2).await;
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

/// A burst of valid snapshots for unknown doors keeps the store within the cap whatever its size.
#[tokio::test]
async fn a_burst_of_valid_snapshots_for_unknown_doors_keeps_the_store_bounded() {
    let broker = Broker::start();
    let hub = Hub::new(
        &broker,
        &[("lobby", "hub")],
        "[limits]\nunconfigured_doors = 4\n\n[health]\ninterval_s = 1\n",
    );
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let n = 3000;
    let burst = snapshots_for_unknown_doors(n as usize, 1, 20, |i| format!("b{i:05}"));
    publish_burst(&broker, burst).await;
    health(&mut sub, |h| {
        h["doors"]["unconfigured"] == 4 && h["rejected"]["invalid"] == n - 4
    })
    .await;
    assert_eq!(stored_doors(daemon.store()).len(), 4);
    // The sets of the four kept doors; nothing of the refused ones.
    let sets = (0..n)
        .filter(|i| {
            daemon
                .store()
                .set_blob(&format!("b{i:05}"))
                .unwrap()
                .is_some()
        })
        .count();
    assert_eq!(sets, 4);
    daemon.shutdown();
    daemon.wait().await.unwrap();
}
