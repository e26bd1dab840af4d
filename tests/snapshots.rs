//! The cloud contract's desired snapshots, end to end: a real mosquitto, the daemon in-process
//! with a real sled store, and a subscriber that sees what the cloud would see.

mod common;

use common::hub::{
    HUB, Hub, credentials, digest, health, parts, publish_snapshot, reported, topic,
};
use common::{Broker, Subscriber};

async fn subscriber(broker: &Broker) -> Subscriber {
    Subscriber::connect(broker, &[&format!("doorhub/v1/{HUB}/#")]).await
}

#[tokio::test]
async fn hub_doors_adopt_snapshots_and_report_in_sync() {
    let broker = Broker::start();
    let hub = Hub::new(
        &broker,
        &[
            ("lobby", "hub"),
            ("garage", "hub"),
            ("tower", "hub"),
            ("vault", "stored"),
        ],
        "",
    );
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;

    let lobby = credentials("lobby", 3);
    let tower = credentials("tower", 5000);
    let garage = credentials("garage", 1);
    publish_snapshot(&mut sub, "lobby", 7, &lobby, 1).await;
    publish_snapshot(&mut sub, "tower", 1042, &tower, 4).await;
    publish_snapshot(&mut sub, "garage", 1, &garage, 1).await;
    // A door this hub does not have: kept, and reported unconfigured.
    publish_snapshot(&mut sub, "annex", 3, &credentials("annex", 2), 1).await;
    publish_snapshot(&mut sub, "vault", 5, &credentials("vault", 2), 1).await;

    for (door, version, set) in [
        ("lobby", 7, &lobby),
        ("tower", 1042, &tower),
        ("garage", 1, &garage),
    ] {
        let r = reported(&mut sub, door, |r| {
            r["applied"] == version && r["status"] == "in_sync"
        })
        .await;
        assert_eq!(r["door"], door);
        assert_eq!(r["desired"], version);
        assert_eq!(r["status"], "in_sync");
        assert_eq!(r["credentials"], set.len());
        assert_eq!(r["digest"], digest(set), "{door}");
        assert_eq!(r["error"], serde_json::Value::Null);
        assert!(r["at"].as_str().unwrap().ends_with('Z'));
    }
    let annex = reported(&mut sub, "annex", |r| r["desired"] == 3).await;
    assert_eq!(annex["status"], "unconfigured");
    assert_eq!(annex["applied"], 0);
    // A stored door is applied once its (simulated) reader confirms the table.
    let vault = reported(&mut sub, "vault", |r| r["applied"] == 5).await;
    assert_eq!(vault["status"], "in_sync");
    assert_eq!(vault["digest"], digest(&credentials("vault", 2)));

    let h = health(&mut sub, |h| {
        h["doors"]["in_sync"] == 4 && h["doors"]["unconfigured"] == 1
    })
    .await;
    assert_eq!(h["doors"]["total"], 4);
    assert_eq!(h["doors"]["offline"], 0);
    assert_eq!(h["buses"][0]["online"], 4);
    assert_eq!(h["online"], true);

    daemon.shutdown();
    daemon.wait().await.unwrap();

    // Adding the door later needs no republish: its snapshot was kept.
    let hub2 = Hub {
        dir: hub.dir,
        config_path: hub.config_path.clone(),
        sim: hub.sim,
    };
    let mut toml = std::fs::read_to_string(&hub2.config_path).unwrap();
    toml.push_str("[[door]]\nid = \"annex\"\nbus = \"rs485-a\"\naddress = 9\nmode = \"hub\"\n");
    std::fs::write(&hub2.config_path, toml).unwrap();
    let daemon = hub2.start();
    // No reader answers at its address, but its snapshot is applied on the hub.
    let annex = reported(&mut sub, "annex", |r| r["applied"] == 3).await;
    assert_eq!(annex["status"], "offline");
    assert_eq!(annex["digest"], digest(&credentials("annex", 2)));
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

/// A payload as the cloud would send for `lobby`, version `v`, part 0 of 1.
fn one(v: u64, creds: &str) -> String {
    format!(r#"{{"version":{v},"part":0,"parts":1,"credentials":[{creds}]}}"#)
}

#[tokio::test]
async fn every_rejection_keeps_the_previous_state_with_a_reason() {
    let broker = Broker::start();
    let hub = Hub::new(
        &broker,
        &[("lobby", "hub")],
        // Counters go out with the periodic health message.
        "[limits]\ncredentials_per_door = 3\n\n[health]\ninterval_s = 1\n",
    );
    // Small payload limit so the oversize case stays small.
    let mut toml = std::fs::read_to_string(&hub.config_path).unwrap();
    toml = toml.replace(
        "allow_plaintext = true\n",
        "allow_plaintext = true\nmax_payload = 2048\n",
    );
    std::fs::write(&hub.config_path, toml).unwrap();
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let good = credentials("ok", 2);
    publish_snapshot(&mut sub, "lobby", 10, &good, 1).await;
    reported(&mut sub, "lobby", |r| r["applied"] == 10).await;
    let d10 = digest(&good);

    let card = |id: &str, data: &str| format!(r#"{{"id":"{id}","bits":26,"data":"{data}"}}"#);
    // Just over: a payload far over breaks the connection instead (see tests/junk.rs).
    let big = "x".repeat(2048);
    let cases: Vec<(String, String, &str, Option<u64>)> = vec![
        ("0".into(), "{not json".into(), "malformed JSON", None),
        (
            "0".into(),
            r#"{"part":0,"parts":1,"credentials":[]}"#.into(),
            "missing field `version`",
            None,
        ),
        (
            "0".into(),
            r#"{"version":11,"part":0,"parts":"1","credentials":[]}"#.into(),
            "invalid type",
            Some(11),
        ),
        ("1".into(), one(11, ""), "does not match part 1", Some(11)),
        (
            "2".into(),
            r#"{"version":11,"part":2,"parts":2,"credentials":[]}"#.into(),
            "not below parts",
            Some(11),
        ),
        (
            "0".into(),
            r#"{"version":11,"part":0,"parts":1025,"credentials":[]}"#.into(),
            "parts 1025",
            Some(11),
        ),
        (
            "0".into(),
            one(11, &card("a", "zz88eb80")),
            "not hex",
            Some(11),
        ),
        (
            "0".into(),
            one(11, &card("a", "bd88eb")),
            "26 bits need exactly 4",
            Some(11),
        ),
        (
            "0".into(),
            one(11, &card("a", "bd88eb81")),
            "padding bits",
            Some(11),
        ),
        (
            "0".into(),
            one(
                11,
                &format!("{},{}", card("a", "bd88eb80"), card("a", "bd88eb40")),
            ),
            "duplicate credential id",
            Some(11),
        ),
        (
            "0".into(),
            one(
                11,
                &format!("{},{}", card("a", "bd88eb80"), card("b", "bd88eb80")),
            ),
            "duplicate card",
            Some(11),
        ),
        (
            "0".into(),
            one(
                11,
                &[
                    card("a", "00000040"),
                    card("b", "00000080"),
                    card("c", "000000c0"),
                    card("d", "00000100"),
                ]
                .join(","),
            ),
            "exceed limits.credentials_per_door",
            Some(11),
        ),
        (
            "0".into(),
            format!(r#"{{"version":11,"pad":"{big}"}}"#),
            "over mqtt.max_payload",
            None,
        ),
        (
            "0".into(),
            one(10, &card("zz", "00000040")),
            "version 10 arrived again with different content",
            Some(10),
        ),
        (
            "00".into(),
            one(11, ""),
            "not a decimal number without leading zeros",
            Some(11),
        ),
        (
            "x1".into(),
            one(11, ""),
            "not a decimal number without leading zeros",
            Some(11),
        ),
    ];
    // Each reason differs from the one before, so each rejection changes `reported`.
    let mut invalid = 0;
    for (level, payload, reason, version) in &cases {
        sub.publish(
            &topic(&format!("doors/lobby/desired/{level}")),
            payload.as_str(),
            false,
        )
        .await;
        let r = reported(&mut sub, "lobby", |r| {
            r["error"]["reason"]
                .as_str()
                .is_some_and(|s| s.contains(reason))
        })
        .await;
        assert_eq!(
            r["error"]["version"],
            serde_json::json!(version),
            "{reason}"
        );
        assert_eq!(r["desired"], 10, "{reason}: previous state kept");
        assert_eq!(r["applied"], 10);
        assert_eq!(r["digest"], d10);
        assert_eq!(r["status"], "in_sync");
        invalid += 1;
    }
    // A duplicate card across two parts of one version is caught at assembly.
    let p0 = r#"{"version":500,"part":0,"parts":2,"credentials":[{"id":"a","bits":26,"data":"00000040"}]}"#;
    let p1 = r#"{"version":500,"part":1,"parts":2,"credentials":[{"id":"b","bits":26,"data":"00000040"}]}"#;
    sub.publish(&topic("doors/lobby/desired/0"), p0, false)
        .await;
    sub.publish(&topic("doors/lobby/desired/1"), p1, false)
        .await;
    let r = reported(&mut sub, "lobby", |r| r["error"]["version"] == 500).await;
    assert!(
        r["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("duplicate card")
    );
    assert_eq!(r["applied"], 10);
    invalid += 1;

    // A door id that breaks the naming rules: counted, no door to report it on.
    sub.publish(&topic("doors/Lobby/desired/0"), one(600, ""), false)
        .await;
    invalid += 1;
    let h = health(&mut sub, |h| h["rejected"]["invalid"] == invalid).await;
    assert_eq!(h["rejected"]["invalid"], invalid);

    // The daemon is still up and adopting.
    publish_snapshot(&mut sub, "lobby", 700, &good, 1).await;
    let r = reported(&mut sub, "lobby", |r| r["applied"] == 700).await;
    assert_eq!(r["error"], serde_json::Value::Null);
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn stale_and_redelivered_versions_are_ignored_and_counted() {
    let broker = Broker::start();
    // Counters go out with the periodic health message.
    let hub = Hub::new(&broker, &[("lobby", "hub")], "[health]\ninterval_s = 1\n");
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let set = credentials("s", 10);
    publish_snapshot(&mut sub, "lobby", 20, &set, 2).await;
    let first = reported(&mut sub, "lobby", |r| r["applied"] == 20).await;
    sub.drain();

    // The same version again (as on every reconnect), then an older one.
    publish_snapshot(&mut sub, "lobby", 20, &set, 2).await;
    publish_snapshot(&mut sub, "lobby", 19, &credentials("old", 3), 1).await;
    // Two redelivered parts and one stale part.
    let h0 = health(&mut sub, |h| h["rejected"]["stale"] == 3).await;
    assert_eq!(h0["rejected"]["invalid"], 0);
    // Nothing about the door changed, so nothing new was reported.
    sub.assert_none(std::time::Duration::from_millis(300), |m| {
        m.topic == topic("doors/lobby/reported")
    })
    .await;
    // A zero-length payload (a retained part being cleared) is ignored silently.
    sub.publish(&topic("doors/lobby/desired/1"), "", true).await;
    publish_snapshot(&mut sub, "lobby", 21, &set[..4], 1).await;
    let r = reported(&mut sub, "lobby", |r| r["applied"] == 21).await;
    assert_eq!(r["digest"], digest(&set[..4]));
    assert_ne!(first["digest"], r["digest"]);
    let h = health(&mut sub, |h| {
        h["uptime_s"].as_u64() > h0["uptime_s"].as_u64()
    })
    .await;
    assert_eq!(h["rejected"]["stale"], 3);
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn an_interleaved_newer_version_supersedes_the_one_being_assembled() {
    let broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub")], "");
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let v1 = parts(1, &credentials("a", 6), 3);
    let v2 = parts(2, &credentials("b", 4), 2);
    let t = |p: usize| topic(&format!("doors/lobby/desired/{p}"));
    sub.publish(&t(0), v1[0].as_str(), false).await;
    sub.publish(&t(0), v2[0].as_str(), false).await;
    // Part of the superseded version: stale now.
    sub.publish(&t(1), v1[1].as_str(), false).await;
    sub.publish(&t(1), v2[1].as_str(), false).await;
    let r = reported(&mut sub, "lobby", |r| r["applied"] == 2).await;
    assert_eq!(r["credentials"], 4);
    assert_eq!(r["digest"], digest(&credentials("b", 4)));
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_version_rejected_whole_ignores_its_remaining_parts_and_old_garbage_is_stale() {
    let broker = Broker::start();
    let hub = Hub::new(
        &broker,
        &[("lobby", "hub")],
        "[limits]\ncredentials_per_door = 3\n\n[health]\ninterval_s = 1\n",
    );
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    publish_snapshot(&mut sub, "lobby", 10, &credentials("ok", 2), 1).await;
    reported(&mut sub, "lobby", |r| r["applied"] == 10).await;

    sub.drain();
    // Four credentials over two parts: the second part breaks the limit of three.
    let over = parts(20, &credentials("over", 4), 2);
    let t = |p: usize| topic(&format!("doors/lobby/desired/{p}"));
    sub.publish(&t(0), over[0].as_str(), false).await;
    sub.publish(&t(1), over[1].as_str(), false).await;
    let r = reported(&mut sub, "lobby", |r| r["error"]["version"] == 20).await;
    assert!(
        r["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("credentials_per_door")
    );
    // Its parts again (a redelivery): ignored, not the start of a new assembly.
    sub.publish(&t(0), over[0].as_str(), false).await;
    sub.publish(&t(1), over[1].as_str(), false).await;
    // An invalid payload of an old version: stale, not an error on a healthy door.
    sub.publish(
        &t(0),
        r#"{"version":5,"part":0,"parts":1,"credentials":[{"id":"a","bits":26,"data":"zz"}]}"#,
        false,
    )
    .await;
    let h = health(&mut sub, |h| h["rejected"]["stale"] == 3).await;
    assert_eq!(h["rejected"]["invalid"], 1);
    sub.assert_none(std::time::Duration::from_millis(300), |m| {
        m.topic == topic("doors/lobby/reported") && m.json()["error"]["version"] != 20
    })
    .await;
    // Nothing of version 20 is left staged.
    let staged = daemon.store().parts_except("lobby", 2, 9);
    assert!(staged.is_err(), "staged parts remain: {staged:?}");
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

/// A burst far larger than every queue inside the hub (the broker pushes it without waiting for
/// acknowledgements) is adopted in full: the hub's acks never wait on its own backlog.
#[tokio::test]
async fn a_burst_larger_than_every_internal_queue_is_adopted_in_full() {
    let broker = Broker::start();
    let doors: Vec<String> = (0..8).map(|d| format!("d{d}")).collect();
    let modes: Vec<(&str, &str)> = doors.iter().map(|d| (d.as_str(), "hub")).collect();
    let hub = Hub::new(&broker, &modes, "");
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let rounds = 1000u64;
    let mut burst = Vec::new();
    for v in 1..=rounds {
        for d in &doors {
            let set = credentials(&format!("{d}-{v}"), 2);
            let payload = parts(v, &set, 1).remove(0);
            burst.push((topic(&format!("doors/{d}/desired/0")), payload.into_bytes()));
        }
    }
    let publisher = common::burst::FastPublisher::connect(&broker.endpoint(None)).await;
    publisher.publish_all(burst).await;
    publisher.wait_acked().await;
    for d in &doors {
        let r = reported(&mut sub, d, |r| r["applied"] == rounds).await;
        assert_eq!(
            r["digest"],
            digest(&credentials(&format!("{d}-{rounds}"), 2))
        );
    }
    daemon.shutdown();
    daemon.wait().await.unwrap();
}
