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
            "version: must be an integer in 1..=9007199254740991, and is missing",
            None,
        ),
        (
            "0".into(),
            r#"{"version":11,"part":0,"parts":"1","credentials":[]}"#.into(),
            "parts: must be an integer in 1..=1024, not a string",
            Some(11),
        ),
        (
            "1".into(),
            one(11, ""),
            "part: must match part 1 in the topic, not 0",
            Some(11),
        ),
        (
            "2".into(),
            r#"{"version":11,"part":2,"parts":2,"credentials":[]}"#.into(),
            "part: must be below parts (2), not 2",
            Some(11),
        ),
        (
            "0".into(),
            r#"{"version":11,"part":0,"parts":1025,"credentials":[]}"#.into(),
            "parts: must be an integer in 1..=1024, not 1025",
            Some(11),
        ),
        (
            "0".into(),
            one(11, &card("a", "zz88eb80")),
            "credentials[0].data (id \"a\"): must be hex digits",
            Some(11),
        ),
        (
            "0".into(),
            one(11, &card("a", "bd88eb")),
            "must be exactly 4 bytes (8 hex digits) for 26 bits, not 3 bytes",
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

/// 64 distinct four-byte characters: the longest id the contract allows (256 bytes of UTF-8).
fn longest_id() -> String {
    let id: String = (0..64)
        .map(|i| char::from_u32(0x1F600 + i).unwrap())
        .collect();
    assert_eq!((id.chars().count(), id.len()), (64, 256));
    id
}

/// Presents `data` (26 bits) at the plain reader at address 0 and returns the access event.
async fn present(hub: &Hub, sub: &mut Subscriber, data: &[u8]) -> serde_json::Value {
    sub.drain();
    let action = doorhub::sim::Action::Card {
        bits: 26,
        data: data.to_vec(),
    };
    hub.sim.as_ref().unwrap().act(0, action).await;
    sub.wait_for(common::hub::WAIT, |m| {
        m.topic == topic("events") && m.json()["type"] == "access"
    })
    .await
    .json()
}

#[tokio::test]
async fn an_id_of_64_four_byte_characters_is_stored_whole_and_granted() {
    let broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub")], "");
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let mut set = credentials("x", 3);
    set[1].id = longest_id();
    publish_snapshot(&mut sub, "lobby", 3, &set, 1).await;
    let r = reported(&mut sub, "lobby", |r| {
        r["applied"] == 3 && r["reader"]["online"] == true
    })
    .await;
    assert_eq!(r["status"], "in_sync");
    assert_eq!(r["digest"], digest(&set));
    let e = present(&hub, &mut sub, &set[1].data).await;
    assert_eq!(e["granted"], true, "{e}");
    assert_eq!(e["reason"], "ok");
    assert_eq!(e["credential"], set[1].id);
    daemon.shutdown();
    daemon.wait().await.unwrap();

    // Read back from the store after a restart: still whole, still in sync.
    sub.drain();
    let daemon = hub.start();
    let r = reported(&mut sub, "lobby", |r| r["reader"]["online"] == true).await;
    assert_eq!(
        (r["status"].as_str(), r["applied"].as_u64()),
        (Some("in_sync"), Some(3))
    );
    let e = present(&hub, &mut sub, &set[1].data).await;
    assert_eq!(
        (e["granted"].as_bool(), &e["credential"]),
        (Some(true), &serde_json::json!(set[1].id))
    );
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

/// A store written before ids could take 256 bytes: its sets are still read, and a set that the
/// old encoding cut (an id of 64 four-byte characters, cut at byte 255) shows as `error`, never
/// `in_sync`, until the cloud's snapshot is adopted again.
#[tokio::test]
async fn a_set_damaged_by_the_old_encoding_is_reported_error_until_adopted_again() {
    use doorhub::snapshot::SetDigest;
    use doorhub::store::{DesiredMeta, DoorRecord, SetState};
    let broker = Broker::start();
    let hub = Hub::new(&broker, &[("lobby", "hub"), ("hall", "hub")], "");
    let mut cut = credentials("x", 2);
    cut[1].id = longest_id();
    let intact = credentials("h", 2);
    {
        let db = sled::open(hub.data_dir().join("db")).unwrap();
        for (door, set) in [("lobby", &cut), ("hall", &intact)] {
            let state = SetState {
                version: 3,
                count: set.len(),
                digest: SetDigest::of(set.iter()),
            };
            let record = DoorRecord {
                desired: Some(DesiredMeta {
                    set: state,
                    part_hashes: vec!["00".repeat(16)],
                }),
                applied: Some(state),
                ..DoorRecord::default()
            };
            db.insert(format!("d/{door}"), serde_json::to_vec(&record).unwrap())
                .unwrap();
            db.insert(format!("s/{door}"), old_blob(3, set)).unwrap();
        }
        db.flush().unwrap();
    }
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let r = reported(&mut sub, "lobby", |r| r["reader"]["online"] == true).await;
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(r["applied"], 0, "{r}");
    assert!(
        r["error"]["reason"].as_str().unwrap().contains("damaged"),
        "{r}"
    );
    let h = reported(&mut sub, "hall", |r| r["reader"]["online"] == true).await;
    assert_eq!(
        (h["status"].as_str(), h["applied"].as_u64()),
        (Some("in_sync"), Some(3))
    );
    assert_eq!(h["digest"], digest(&intact));
    // The cloud's snapshot (the same version) is adopted again and the card works.
    publish_snapshot(&mut sub, "lobby", 3, &cut, 1).await;
    let r = reported(&mut sub, "lobby", |r| r["status"] == "in_sync").await;
    assert_eq!(r["applied"], 3);
    assert_eq!(r["error"], serde_json::Value::Null);
    let e = present(&hub, &mut sub, &cut[1].data).await;
    assert_eq!(e["credential"], cut[1].id, "{e}");
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

/// A set in the store's first layout (`DHS1`, ids' lengths in one byte, cut at 255 bytes), as the
/// code before ids of 256 bytes wrote it.
fn old_blob(version: u64, set: &[doorhub::snapshot::Credential]) -> Vec<u8> {
    let mut order: Vec<_> = set.iter().collect();
    order.sort_by(|a, b| (a.bits, &a.data).cmp(&(b.bits, &b.data)));
    let mut out = b"DHS1".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(set.len() as u32).to_le_bytes());
    let mut offset = 16 + 4 * set.len();
    for c in &order {
        out.extend_from_slice(&(offset as u32).to_le_bytes());
        offset += 10 + c.data.len() + c.id.len().min(255);
    }
    for c in order {
        out.push(c.bits);
        out.extend_from_slice(&c.data);
        out.extend_from_slice(&c.not_before.to_le_bytes());
        out.extend_from_slice(&c.not_after.to_le_bytes());
        let id = &c.id.as_bytes()[..c.id.len().min(255)];
        out.push(id.len() as u8);
        out.extend_from_slice(id);
    }
    out
}

/// Hostile payloads: every reason names the field by its path and states the contract's rule in
/// its words; none shows the parser's or Rust's names for things.
#[test]
fn every_rejection_reason_names_the_field_and_the_rule() {
    use doorhub::snapshot::{Limits, parse_part};
    let limits = Limits {
        max_payload: 1 << 20,
        credentials_per_door: 100,
    };
    const V: &str = "version: must be an integer in 1..=9007199254740991";
    const BITS: &str = r#"credentials[0].bits (id "a"): must be an integer in 1..=128"#;
    const DATA: &str = r#"credentials[0].data (id "a")"#;
    const NB: &str = r#"credentials[0].not_before (id "a")"#;
    const TS: &str =
        "must be an RFC 3339 UTC timestamp from 1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z";
    let part = |rest: &str| format!(r#"{{"version":7,"part":0,"parts":1,{rest}}}"#);
    let cred = |fields: &str| part(&format!(r#""credentials":[{{{fields}}}]"#));
    let good = r#""id":"a","bits":26,"data":"bd88eb80""#;
    let with = |extra: &str| cred(&format!("{good},{extra}"));
    let at = |i: usize, fields: &str| {
        let mut list = vec![r#"{"id":"c0","bits":8,"data":"00"}"#.to_owned()];
        for j in 1..i {
            list.push(format!(r#"{{"id":"c{j}","bits":8,"data":"{j:02x}"}}"#));
        }
        list.push(fields.to_owned());
        part(&format!(r#""credentials":[{}]"#, list.join(",")))
    };
    let cases: Vec<(String, String)> = vec![
        (
            "[1,2,3,4]".into(),
            "payload: must be a JSON object, not an array".into(),
        ),
        (
            r#""x""#.into(),
            "payload: must be a JSON object, not a string".into(),
        ),
        (
            "null".into(),
            "payload: must be a JSON object, not null".into(),
        ),
        ("7".into(), "payload: must be a JSON object, not 7".into()),
        (
            r#"{"part":0,"parts":1,"credentials":[]}"#.into(),
            format!("{V}, and is missing"),
        ),
        (
            r#"{"version":"7","part":0,"parts":1,"credentials":[]}"#.into(),
            format!("{V}, not a string"),
        ),
        (
            r#"{"version":7.0,"part":0,"parts":1,"credentials":[]}"#.into(),
            format!("{V}, not 7.0"),
        ),
        (
            r#"{"version":1e3,"part":0,"parts":1,"credentials":[]}"#.into(),
            format!("{V}, not 1000.0"),
        ),
        (
            r#"{"version":-1,"part":0,"parts":1,"credentials":[]}"#.into(),
            format!("{V}, not -1"),
        ),
        (
            r#"{"version":0,"part":0,"parts":1,"credentials":[]}"#.into(),
            format!("{V}, not 0"),
        ),
        (
            r#"{"version":9007199254740992,"part":0,"parts":1,"credentials":[]}"#.into(),
            format!("{V}, not 9007199254740992"),
        ),
        (
            r#"{"version":18446744073709551616,"part":0,"parts":1,"credentials":[]}"#.into(),
            format!("{V}, not 1.8446744073709552e19"),
        ),
        (
            r#"{"version":null,"part":0,"parts":1,"credentials":[]}"#.into(),
            format!("{V}, not null"),
        ),
        (
            r#"{"version":true,"part":0,"parts":1,"credentials":[]}"#.into(),
            format!("{V}, not true"),
        ),
        (
            r#"{"version":[7],"part":0,"parts":1,"credentials":[]}"#.into(),
            format!("{V}, not an array"),
        ),
        (
            r#"{"version":{},"part":0,"parts":1,"credentials":[]}"#.into(),
            format!("{V}, not an object"),
        ),
        (
            r#"{"version":7,"version":8,"part":0,"parts":1,"credentials":[]}"#.into(),
            "version: must be given only once".into(),
        ),
        (
            r#"{"version":7,"part":"0","parts":1,"credentials":[]}"#.into(),
            "part: must be an integer in 0..=1023, not a string".into(),
        ),
        (
            r#"{"version":7,"part":-1,"parts":1,"credentials":[]}"#.into(),
            "part: must be an integer in 0..=1023, not -1".into(),
        ),
        (
            r#"{"version":7,"parts":1,"credentials":[]}"#.into(),
            "part: must be an integer in 0..=1023, and is missing".into(),
        ),
        (
            r#"{"version":7,"part":2,"parts":1,"credentials":[]}"#.into(),
            "part: must match part 0 in the topic, not 2".into(),
        ),
        (
            r#"{"version":7,"part":0,"parts":0,"credentials":[]}"#.into(),
            "parts: must be an integer in 1..=1024, not 0".into(),
        ),
        (
            r#"{"version":7,"part":0,"parts":1025,"credentials":[]}"#.into(),
            "parts: must be an integer in 1..=1024, not 1025".into(),
        ),
        (
            r#"{"version":7,"part":0,"parts":1.5,"credentials":[]}"#.into(),
            "parts: must be an integer in 1..=1024, not 1.5".into(),
        ),
        (
            r#"{"version":7,"part":0,"parts":"1","credentials":[]}"#.into(),
            "parts: must be an integer in 1..=1024, not a string".into(),
        ),
        (
            r#"{"version":7,"part":0,"parts":1}"#.into(),
            "credentials: must be an array of credentials, and is missing".into(),
        ),
        (
            part(r#""credentials":null"#),
            "credentials: must be an array of credentials, not null".into(),
        ),
        (
            part(r#""credentials":{}"#),
            "credentials: must be an array of credentials, not an object".into(),
        ),
        (
            part(r#""credentials":"a""#),
            "credentials: must be an array of credentials, not a string".into(),
        ),
        (
            at(3, "5"),
            "credentials[3]: must be an object, not 5".into(),
        ),
        (
            at(3, r#""kc-1""#),
            "credentials[3]: must be an object, not a string".into(),
        ),
        (
            at(3, "null"),
            "credentials[3]: must be an object, not null".into(),
        ),
        (
            at(3, "[]"),
            "credentials[3]: must be an object, not an array".into(),
        ),
        (
            at(3, r#"{"id":"c3","bits":300,"data":"00"}"#),
            r#"credentials[3].bits (id "c3"): must be an integer in 1..=128, not 300"#.into(),
        ),
        (
            cred(r#""bits":26,"data":"bd88eb80""#),
            "credentials[0].id: must be a string of 1..=64 characters, and is missing".into(),
        ),
        (
            cred(r#""id":null,"bits":26,"data":"bd88eb80""#),
            "credentials[0].id: must be a string of 1..=64 characters, not null".into(),
        ),
        (
            cred(r#""id":5,"bits":26,"data":"bd88eb80""#),
            "credentials[0].id: must be a string of 1..=64 characters, not 5".into(),
        ),
        (
            cred(r#""id":["a"],"bits":26,"data":"bd88eb80""#),
            "credentials[0].id: must be a string of 1..=64 characters, not an array".into(),
        ),
        (
            cred(r#""id":"","bits":26,"data":"bd88eb80""#),
            "credentials[0].id: must be 1..=64 characters, not 0".into(),
        ),
        (
            cred(&format!(
                r#""id":"{}","bits":26,"data":"bd88eb80""#,
                "x".repeat(65)
            )),
            "credentials[0].id: must be 1..=64 characters, not 65".into(),
        ),
        (
            cred(r#""id":"a","id":"b","bits":26,"data":"bd88eb80""#),
            "credentials[0].id: must be given only once".into(),
        ),
        (
            cred(r#""id":"a","data":"bd88eb80""#),
            format!("{BITS}, and is missing"),
        ),
        (
            cred(r#""id":"a","bits":"26","data":"bd88eb80""#),
            format!("{BITS}, not a string"),
        ),
        (
            cred(r#""id":"a","bits":26.0,"data":"bd88eb80""#),
            format!("{BITS}, not 26.0"),
        ),
        (
            cred(r#""id":"a","bits":-26,"data":"bd88eb80""#),
            format!("{BITS}, not -26"),
        ),
        (
            cred(r#""id":"a","bits":0,"data":"""#),
            format!("{BITS}, not 0"),
        ),
        (
            cred(r#""id":"a","bits":129,"data":"""#),
            format!("{BITS}, not 129"),
        ),
        (
            cred(r#""id":"a","bits":null,"data":"""#),
            format!("{BITS}, not null"),
        ),
        (
            cred(r#""id":"a","bits":26,"data":"bd88eb80","bits":27"#),
            r#"credentials[0].bits (id "a"): must be given only once"#.into(),
        ),
        (
            cred(r#""id":"a","bits":26"#),
            format!("{DATA}: must be a string of hex digits, and is missing"),
        ),
        (
            cred(r#""id":"a","bits":26,"data":3183012736"#),
            format!("{DATA}: must be a string of hex digits, not 3183012736"),
        ),
        (
            cred(r#""id":"a","bits":26,"data":null"#),
            format!("{DATA}: must be a string of hex digits, not null"),
        ),
        (
            cred(r#""id":"a","bits":26,"data":["bd"]"#),
            format!("{DATA}: must be a string of hex digits, not an array"),
        ),
        (
            cred(r#""id":"a","bits":26,"data":"zz88eb80""#),
            format!("{DATA}: must be hex digits (0-9, a-f or A-F), two per byte"),
        ),
        (
            cred(r#""id":"a","bits":26,"data":"bd88eb8""#),
            format!("{DATA}: must be hex digits (0-9, a-f or A-F), two per byte"),
        ),
        (
            cred(r#""id":"a","bits":26,"data":"bd88eb""#),
            format!("{DATA}: must be exactly 4 bytes (8 hex digits) for 26 bits, not 3 bytes"),
        ),
        (
            cred(r#""id":"a","bits":26,"data":"bd88eb81""#),
            format!("{DATA}: must have its padding bits after the last card bit zero"),
        ),
        (
            with(r#""not_before":5"#),
            format!("{NB}: {TS}, or null, not 5"),
        ),
        (
            with(r#""not_before":true"#),
            format!("{NB}: {TS}, or null, not true"),
        ),
        (
            with(r#""not_before":{}"#),
            format!("{NB}: {TS}, or null, not an object"),
        ),
        (with(r#""not_before":"tomorrow""#), format!("{NB}: {TS}")),
        (
            with(r#""not_before":"2026-11-01T00:00:00+01:00""#),
            format!("{NB}: {TS}"),
        ),
        (with(r#""not_before":"2026-11-01""#), format!("{NB}: {TS}")),
        (
            with(r#""not_before":"2026-13-01T00:00:00Z""#),
            format!("{NB}: {TS}"),
        ),
        (
            with(r#""not_before":"1969-12-31T23:59:59Z""#),
            format!("{NB}: {TS}"),
        ),
        (
            with(r#""not_before":"2106-02-07T06:28:16Z""#),
            format!("{NB}: {TS}"),
        ),
        (
            with(r#""not_before":"2027-01-01T00:00:00Z","not_after":"2026-01-01T00:00:00Z""#),
            r#"credentials[0].not_after (id "a"): must not be before not_before"#.into(),
        ),
        (
            with(r#""not_after":"2026-01-01T00:00:00Z","not_after":null"#),
            r#"credentials[0].not_after (id "a"): must be given only once"#.into(),
        ),
    ];
    let rust_isms = [
        "struct",
        "enum",
        "Raw",
        "u8",
        "u16",
        "u32",
        "u64",
        "i64",
        "f64",
        "usize",
        "invalid type",
        "invalid value",
        "invalid length",
        "variant",
        "Option",
        "Vec",
        "String",
        "sequence",
        "map",
        "expected",
        "`",
        "::",
        "line ",
        "column",
    ];
    for (payload, want) in &cases {
        let got = parse_part(payload.as_bytes(), 0, limits)
            .expect_err(payload)
            .error
            .to_string();
        assert_eq!(&got, want, "{payload}");
        for bad in rust_isms {
            assert!(!got.contains(bad), "{payload}: {got:?} contains {bad:?}");
        }
    }
    // Nesting is skipped, not followed: deep where a value is wanted is just "an array", and in
    // a field the contract does not name it is ignored.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let got = parse_part(deep.as_bytes(), 0, limits).unwrap_err().error;
    assert_eq!(
        got.to_string(),
        "payload: must be a JSON object, not an array"
    );
    let got = parse_part(part(r#""credentials":[]"#).as_bytes(), 0, limits).unwrap();
    assert_eq!(got.version, 7);
    let ignored = part(&format!(
        r#""extra":{deep},"credentials":[{{"id":"a","bits":8,"data":"01","x":{deep}}}]"#
    ));
    assert_eq!(
        parse_part(ignored.as_bytes(), 0, limits)
            .unwrap()
            .credentials
            .len(),
        1
    );
    // Syntax errors are the JSON parser's, behind "malformed JSON", and never a Rust name.
    for payload in [
        "{not json",
        "",
        "{\"version\":1e400}",
        "{\"a\":1}x",
        "{\"version\":\"\\ud800\"}",
    ] {
        let got = parse_part(payload.as_bytes(), 0, limits)
            .expect_err(payload)
            .error
            .to_string();
        assert!(got.starts_with("malformed JSON: "), "{payload}: {got}");
        for bad in &rust_isms[..17] {
            assert!(!got.contains(bad), "{payload}: {got:?} contains {bad:?}");
        }
    }
}
