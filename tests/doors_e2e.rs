//! Wired doors end to end: mosquitto, the daemon, and simulated readers (`doorhub::sim`) on pty
//! pairs, two buses, stored and hub doors.

mod common;

use std::time::Duration;

use common::hub::{
    HUB, Hub, credentials, digest, publish_snapshot, reported, signal, topic, wait_exit,
};
use common::simbus::SimBus;
use common::{Broker, Subscriber};
use doorhub::sim::{Action, Mode, ReaderOptions};

/// How long a sync may take on these (unpaced or fast) lines.
const SYNC: Duration = Duration::from_secs(20);

async fn subscriber(broker: &Broker) -> Subscriber {
    Subscriber::connect(broker, &[&format!("doorhub/v1/{HUB}/#")]).await
}

fn stored(address: u8) -> ReaderOptions {
    ReaderOptions::new(address, Mode::Stored)
}

fn plain(address: u8) -> ReaderOptions {
    ReaderOptions::new(address, Mode::Plain)
}

#[tokio::test]
async fn five_doors_on_two_buses_reach_in_sync_and_a_revocation_goes_as_a_delta() {
    let broker = Broker::start();
    let mut a = SimBus::start(vec![stored(1), stored(2), plain(3)]);
    let b = SimBus::start(vec![stored(1), plain(2)]);
    let hub = Hub::with_buses(
        &broker,
        &[("a", &a.path, 115_200), ("b", &b.path, 115_200)],
        "",
        &[
            ("a1", "stored", "a", 1),
            ("a2", "stored", "a", 2),
            ("a3", "hub", "a", 3),
            ("b1", "stored", "b", 1),
            ("b2", "hub", "b", 2),
        ],
        "",
    );
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let doors = ["a1", "a2", "a3", "b1", "b2"];
    for (i, door) in doors.iter().enumerate() {
        publish_snapshot(&mut sub, door, 1, &credentials(door, 50 + 100 * i), 1).await;
    }
    for (i, door) in doors.iter().enumerate() {
        let r = reported(&mut sub, door, |r| {
            r["status"] == "in_sync" && r["applied"] == 1 && r["reader"]["online"] == true
        })
        .await;
        assert_eq!(
            r["digest"],
            digest(&credentials(door, 50 + 100 * i)),
            "{door}"
        );
        assert_eq!(r["reader"]["online"], true, "{door}");
    }
    let h = common::hub::health(&mut sub, |h| h["doors"]["in_sync"] == 5).await;
    assert_eq!(h["buses"].as_array().unwrap().len(), 2);
    assert_eq!(h["buses"][0]["online"], 3, "{h}");

    // Revoke one card at a2: a delta of 41 bytes.
    a.drain();
    let old = credentials("a2", 150);
    let new: Vec<_> = old.iter().filter(|c| c.id != old[7].id).cloned().collect();
    publish_snapshot(&mut sub, "a2", 2, &new, 1).await;
    let file = a
        .wait_for(SYNC, |e| {
            e["event"] == "file_applied" && e["address"] == 2 && e["version"] == 2
        })
        .await;
    assert_eq!(file["file_type"], 0x81, "a delta: {file}");
    assert_eq!(file["size"], 41, "{file}");
    assert_eq!(file["outcome"], "delta");
    let r = reported(&mut sub, "a2", |r| r["applied"] == 2).await;
    assert_eq!(r["digest"], digest(&new));
    assert_eq!(r["status"], "in_sync");

    // The revoked card is now refused by the door's own table, and the event names nobody.
    a.act(
        2,
        Action::Card {
            bits: 26,
            data: old[7].data.clone(),
        },
    )
    .await;
    let e = sub
        .wait_for(SYNC, |m| {
            m.topic == topic("events") && m.json()["door"] == "a2" && m.json()["type"] == "access"
        })
        .await
        .json();
    assert_eq!(e["granted"], false);
    assert_eq!(e["reason"], "unknown_card");
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_silenced_reader_goes_offline_then_comes_back_and_a_wiped_one_is_resynced() {
    let broker = Broker::start();
    let mut bus = SimBus::start(vec![stored(1), stored(2)]);
    let hub = Hub::with_bus(
        &broker,
        &bus.path,
        115_200,
        &[("front", "stored", 1), ("back", "stored", 2)],
        "",
    );
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let set = credentials("f", 300);
    publish_snapshot(&mut sub, "front", 4, &set, 1).await;
    publish_snapshot(&mut sub, "back", 1, &credentials("b", 3), 1).await;
    reported(&mut sub, "front", |r| r["applied"] == 4).await;
    reported(&mut sub, "back", |r| r["applied"] == 1).await;

    // Unplugged: offline after three missed replies, and an event.
    sub.drain();
    bus.act(1, Action::Silent(true)).await;
    let r = reported(&mut sub, "front", |r| {
        r["status"] == "offline" && r["desired"] == 4
    })
    .await;
    assert_eq!(r["reader"]["online"], false);
    assert_eq!(
        r["applied"], 4,
        "applied stays what the reader last confirmed"
    );
    let e = sub
        .wait_for(SYNC, |m| {
            m.topic == topic("events") && m.json()["type"] == "reader_offline"
        })
        .await
        .json();
    assert_eq!(e["door"], "front");
    // The other reader on the bus stays online.
    let h = common::hub::health(&mut sub, |h| h["doors"]["offline"] == 1).await;
    assert_eq!(h["buses"][0]["online"], 1, "{h}");

    // Plugged back in after a factory reset: found on the next probe, resynced in full.
    bus.drain();
    bus.act(1, Action::Wipe).await;
    bus.act(1, Action::Silent(false)).await;
    let e = sub
        .wait_for(SYNC, |m| {
            m.topic == topic("events") && m.json()["type"] == "reader_online"
        })
        .await
        .json();
    assert_eq!(e["door"], "front");
    let file = bus
        .wait_for(SYNC, |e| {
            e["event"] == "file_applied" && e["address"] == 1 && e["version"] == 4
        })
        .await;
    assert_eq!(file["file_type"], 0x80, "a full table: {file}");
    let r = reported(&mut sub, "front", |r| {
        r["status"] == "in_sync" && r["reader"]["online"] == true
    })
    .await;
    assert_eq!(r["digest"], digest(&set));
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_reader_wiped_without_a_link_drop_is_found_at_verification() {
    let broker = Broker::start();
    let mut bus = SimBus::start(vec![stored(5)]);
    let hub = Hub::with_buses(
        &broker,
        &[("a", &bus.path, 115_200)],
        "verify_interval_s = 10\n",
        &[("lobby", "stored", "a", 5)],
        "",
    );
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let set = credentials("v", 40);
    publish_snapshot(&mut sub, "lobby", 2, &set, 1).await;
    reported(&mut sub, "lobby", |r| r["applied"] == 2).await;
    bus.drain();
    bus.act(5, Action::Wipe).await;
    bus.wait_for(SYNC, |e| e["event"] == "wiped").await;
    // Within one verify interval the hub QUERYs, sees version 0, and sends the full table.
    let file = bus
        .wait_for(Duration::from_secs(25), |e| {
            e["event"] == "file_applied" && e["version"] == 2
        })
        .await;
    assert_eq!(file["file_type"], 0x80);
    let state = bus
        .wait_for(SYNC, |e| e["event"] == "state" && e["version"] == 2)
        .await;
    assert_eq!(state["digest"], digest(&set));
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn byte_errors_on_the_line_do_not_stop_a_3000_credential_sync() {
    let broker = Broker::start();
    // One byte in 10,000 corrupted, both ways.
    let mut bus = SimBus::start_noisy(vec![stored(1), plain(2)], 1e-4, 7);
    let hub = Hub::with_bus(
        &broker,
        &bus.path,
        115_200,
        &[("noisy", "stored", 1), ("calm", "hub", 2)],
        "[health]\ninterval_s = 1\n",
    );
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let set = credentials("n", 3000);
    publish_snapshot(&mut sub, "noisy", 9, &set, 3).await;
    let r = reported(&mut sub, "noisy", |r| r["applied"] == 9).await;
    assert_eq!(r["digest"], digest(&set));
    let state = bus
        .wait_for(SYNC, |e| e["event"] == "state" && e["version"] == 9)
        .await;
    assert_eq!(state["digest"], digest(&set));
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_daemon_killed_mid_transfer_converges_after_restart() {
    let broker = Broker::start();
    // Paced at 115,200 baud, so a 3,000-credential table takes seconds to send.
    let mut opts = stored(1);
    opts.baud = Some(115_200);
    let mut bus = SimBus::start(vec![opts]);
    let hub = Hub::with_bus(&broker, &bus.path, 115_200, &[("vault", "stored", 1)], "");
    let mut sub = subscriber(&broker).await;
    let mut child = hub.spawn();
    let set = credentials("k", 3000);
    publish_snapshot(&mut sub, "vault", 3, &set, 3).await;
    // Killed once the first part is staged, with the rest still to come.
    bus.wait_for(SYNC, |e| {
        e["event"] == "file_applied" && e["outcome"] == "staged"
    })
    .await;
    signal(&child, "KILL");
    wait_exit(&mut child, SYNC).await;
    let mut child = hub.spawn();
    let r = reported(&mut sub, "vault", |r| r["applied"] == 3).await;
    assert_eq!(r["digest"], digest(&set));
    let state = bus
        .wait_for(SYNC, |e| e["event"] == "state" && e["version"] == 3)
        .await;
    assert_eq!(state["digest"], digest(&set));
    signal(&child, "TERM");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(5)).await,
        Some(0),
        "{}",
        hub.log()
    );
}

#[tokio::test]
async fn a_reader_in_a_long_transfer_is_still_polled_so_its_events_go_out() {
    let broker = Broker::start();
    let mut opts = stored(1);
    opts.baud = Some(38_400);
    let mut bus = SimBus::start(vec![opts]);
    let hub = Hub::with_bus(&broker, &bus.path, 38_400, &[("vault", "stored", 1)], "");
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let set = credentials("t", 2000);
    publish_snapshot(&mut sub, "vault", 1, &set, 2).await;
    // A few seconds of table at 38,400 baud; a card is presented early in it.
    bus.wait_for(SYNC, |e| {
        e["event"] == "abort" || e["event"] == "file_applied"
    })
    .await;
    bus.act(
        1,
        Action::Card {
            bits: 26,
            data: set[0].data.clone(),
        },
    )
    .await;
    let e = sub
        .wait_for(SYNC, |m| {
            m.topic == topic("events") && m.json()["type"] == "access"
        })
        .await
        .json();
    assert_eq!(e["door"], "vault");
    // The event went out during the transfer, not after it.
    let seen = bus.seen().to_vec();
    assert!(
        !seen
            .iter()
            .any(|e| e["event"] == "state" && e["version"] == 1),
        "the table was already complete: the card waited for the transfer"
    );
    reported(&mut sub, "vault", |r| r["applied"] == 1).await;
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_stored_reader_gets_the_time_on_coming_online_and_tamper_raises_an_event() {
    let broker = Broker::start();
    let mut bus = SimBus::start(vec![stored(1)]);
    let hub = Hub::with_bus(&broker, &bus.path, 115_200, &[("gate", "stored", 1)], "");
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let time = bus.wait_for(SYNC, |e| e["event"] == "time").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sent = time["unix_seconds"].as_u64().unwrap();
    assert!(now.abs_diff(sent) <= 5, "TIME {sent} vs now {now}");
    bus.act(1, Action::Tamper(true)).await;
    let e = sub
        .wait_for(SYNC, |m| {
            m.topic == topic("events") && m.json()["type"] == "tamper"
        })
        .await
        .json();
    assert_eq!(e["door"], "gate");
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_missing_or_unplugged_adapter_does_not_stop_the_other_bus() {
    let broker = Broker::start();
    let a = SimBus::start(vec![stored(1)]);
    let b = SimBus::start(vec![stored(1)]);
    let hub = Hub::with_buses(
        &broker,
        &[
            ("a", &a.path, 115_200),
            ("b", &b.path, 115_200),
            ("c", "/dev/ttyDOORHUB-missing", 9600),
        ],
        "",
        &[
            ("left", "stored", "a", 1),
            ("right", "stored", "b", 1),
            ("ghost", "stored", "c", 1),
        ],
        "",
    );
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    publish_snapshot(&mut sub, "left", 1, &credentials("l", 5), 1).await;
    publish_snapshot(&mut sub, "right", 1, &credentials("r", 5), 1).await;
    reported(&mut sub, "left", |r| {
        r["status"] == "in_sync" && r["applied"] == 1
    })
    .await;
    reported(&mut sub, "right", |r| {
        r["status"] == "in_sync" && r["applied"] == 1
    })
    .await;
    // A health message is made of the buses' live figures and the doors' counts as the engine
    // last published them, so one sent while the engine is still catching up can show bus b's
    // reader online and its door not yet: wait for the one where both agree.
    let h = common::hub::health(&mut sub, |h| {
        h["buses"][1]["online"] == 1 && h["doors"]["offline"] == 1
    })
    .await;
    assert_eq!(h["buses"][2]["open"], false, "{h}");
    assert_eq!(h["doors"]["in_sync"], 2, "left and right: {h}");

    // Bus b's adapter is pulled out: its reader goes offline, bus a carries on.
    drop(b);
    let e = sub
        .wait_for(SYNC, |m| {
            m.topic == topic("events") && m.json()["type"] == "reader_offline"
        })
        .await
        .json();
    assert_eq!(e["door"], "right");
    publish_snapshot(&mut sub, "left", 2, &credentials("l", 6), 1).await;
    reported(&mut sub, "left", |r| r["applied"] == 2).await;
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_revocation_overtakes_a_long_table_on_the_same_bus() {
    let broker = Broker::start();
    let (mut big, mut small) = (stored(1), stored(2));
    big.baud = Some(38_400);
    small.baud = Some(38_400);
    let mut bus = SimBus::start(vec![big, small]);
    let hub = Hub::with_bus(
        &broker,
        &bus.path,
        38_400,
        &[("hall", "stored", 1), ("vault", "stored", 2)],
        "",
    );
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let vault = credentials("v", 50);
    publish_snapshot(&mut sub, "hall", 1, &credentials("h", 10), 1).await;
    publish_snapshot(&mut sub, "vault", 1, &vault, 1).await;
    reported(&mut sub, "hall", |r| r["applied"] == 1).await;
    reported(&mut sub, "vault", |r| r["applied"] == 1).await;

    // A large addition at hall: a full table of several seconds at 38,400 baud.
    bus.drain();
    publish_snapshot(&mut sub, "hall", 2, &credentials("h", 2000), 1).await;
    bus.wait_for(SYNC, |e| {
        e["event"] == "file_applied" && e["address"] == 1 && e["outcome"] == "staged"
    })
    .await;
    // Meanwhile a card is revoked at vault.
    let revoked: Vec<_> = vault[1..].to_vec();
    publish_snapshot(&mut sub, "vault", 2, &revoked, 1).await;
    let first = sub
        .wait_for(Duration::from_secs(30), |m| {
            m.topic.ends_with("/reported") && m.json()["applied"] == 2
        })
        .await
        .json();
    assert_eq!(first["door"], "vault", "the revocation went first: {first}");
    let hall = reported(&mut sub, "hall", |r| r["applied"] == 2).await;
    assert_eq!(hall["digest"], digest(&credentials("h", 2000)));
    daemon.shutdown();
    daemon.wait().await.unwrap();
}
