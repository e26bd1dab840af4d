//! SIGHUP reloads the config of the running binary: added and removed doors are applied without
//! dropping the MQTT session or the untouched bus, and an invalid file is refused while the old
//! config keeps running.

mod common;

use common::hub::{HUB, Hub, WAIT, credentials, publish_snapshot, reported, signal, wait_exit};
use common::simbus::SimBus;
use common::status::{json_until, table, text};
use common::{Broker, Msg, Subscriber};
use doorhub::sim::{Mode, ReaderOptions};

fn stored(addresses: &[u8]) -> Vec<ReaderOptions> {
    addresses
        .iter()
        .map(|a| ReaderOptions::new(*a, Mode::Stored))
        .collect()
}

/// The hub's MQTT connections the broker logged.
fn connections(broker: &Broker) -> usize {
    broker
        .log()
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains(&format!(" as {HUB} ")))
        .count()
}

/// The status document's entry for `id`.
fn door<'a>(doc: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    doc["doors"].as_array()?.iter().find(|d| d["id"] == id)
}

fn in_sync(version: u64) -> impl FnMut(&serde_json::Value) -> bool {
    move |r| r["status"] == "in_sync" && r["applied"] == version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_added_and_removed_doors_and_refuses_an_invalid_file() {
    let broker = Broker::start();
    let bus_a = SimBus::start(stored(&[0, 1, 2]));
    let bus_b = SimBus::start(stored(&[0]));
    let hub = Hub::with_buses(
        &broker,
        &[
            ("rs485-a", bus_a.path.as_str(), 115_200),
            ("rs485-b", bus_b.path.as_str(), 115_200),
        ],
        "",
        &[
            ("lobby", "stored", "rs485-a", 0),
            ("garage", "stored", "rs485-a", 1),
            ("annex", "stored", "rs485-b", 0),
        ],
        "",
    );
    let mut sub = Subscriber::connect(&broker, &[&common::hub::topic("#")]).await;
    // The cloud already knows "roof", which this hub does not serve yet.
    for door in ["lobby", "garage", "annex", "roof"] {
        publish_snapshot(&mut sub, door, 1, &credentials(door, 20), 1).await;
    }
    let mut child = hub.spawn();
    for door in ["lobby", "garage", "annex"] {
        reported(&mut sub, door, in_sync(1)).await;
    }
    reported(&mut sub, "roof", |r| r["status"] == "unconfigured").await;
    assert_eq!(connections(&broker), 1);

    // Garage goes, roof comes (on garage's bus, at the third reader's address).
    hub.rewrite(|text| {
        text.replace(
            "id = \"garage\"\nbus = \"rs485-a\"\naddress = 1",
            "id = \"roof\"\nbus = \"rs485-a\"\naddress = 2",
        )
    });
    sub.drain();
    signal(&child, "HUP");
    let roof = reported(&mut sub, "roof", in_sync(1)).await;
    assert_eq!(roof["credentials"], 20);
    let garage = reported(&mut sub, "garage", |r| r["status"] == "unconfigured").await;
    assert_eq!(garage["desired"], 1, "a removed door's snapshot is kept");
    reported(&mut sub, "lobby", in_sync(1)).await;
    // The untouched bus kept serving its door: annex never left in_sync.
    let annex_flicker: Vec<Msg> = sub
        .drain()
        .into_iter()
        .filter(|m| m.topic.ends_with("/annex/reported") && m.json()["status"] != "in_sync")
        .collect();
    assert!(annex_flicker.is_empty(), "annex changed: {annex_flicker:?}");
    assert_eq!(connections(&broker), 1, "the MQTT session was not dropped");
    let log = hub.log();
    assert!(log.contains("config reloaded"), "{log}");
    // `doorhub status` shows the new doors and what the reload did.
    let socket = hub.dir.path().join("status.sock");
    let doc = json_until(&socket, "roof configured and in sync", |d| {
        door(d, "roof").is_some_and(|r| r["bus"] == "rs485-a" && r["status"] == "in_sync")
    })
    .await;
    assert_eq!(door(&doc, "garage").unwrap()["status"], "unconfigured");
    assert_eq!(
        door(&doc, "garage").unwrap()["bus"],
        serde_json::Value::Null
    );
    assert_eq!(doc["reload"]["ok"], true);
    assert_eq!(
        doc["reload"]["applied"]["doors_added"],
        serde_json::json!(["roof"])
    );
    assert_eq!(
        doc["reload"]["applied"]["doors_removed"],
        serde_json::json!(["garage"])
    );
    assert_eq!(
        doc["reload"]["applied"]["buses_restarted"],
        serde_json::json!(["rs485-a"])
    );
    let readers: Vec<_> = doc["buses"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| {
            b["readers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["door"].clone())
        })
        .collect();
    assert_eq!(readers.len(), 3, "{doc:#}");
    assert!(!readers.contains(&"garage".into()), "{doc:#}");

    // A file with a mistake is refused, every problem logged; the old config keeps running.
    hub.rewrite(|text| text.replacen("baud = 115200", "baud = 9601", 1) + "\n[bogus]\n");
    signal(&child, "HUP");
    assert!(
        common::wait_until(WAIT, || hub.log().contains("config reload refused")).await,
        "{}",
        hub.log()
    );
    let log = hub.log();
    assert!(log.contains("bus[0].baud: 9601 is not allowed"), "{log}");
    assert!(log.contains("bogus"), "{log}");
    let doc = json_until(&socket, "the refused reload", |d| {
        d["reload"]["ok"] == false
    })
    .await;
    let errors = doc["reload"]["errors"].to_string();
    assert!(
        errors.contains("bus[0].baud: 9601 is not allowed"),
        "{errors}"
    );
    assert!(door(&doc, "roof").is_some_and(|r| r["bus"] == "rs485-a"));
    let shown = table(&["--socket", text(&socket)]).await;
    assert!(shown.contains("REFUSED"), "{shown}");
    assert!(
        shown.contains("bus[0].baud: 9601 is not allowed"),
        "{shown}"
    );
    publish_snapshot(&mut sub, "roof", 2, &credentials("roof2", 5), 1).await;
    reported(&mut sub, "roof", in_sync(2)).await;
    assert_eq!(connections(&broker), 1);

    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, WAIT).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_buses_and_refuses_an_unusable_key() {
    use doorhub::config::{BusConfig, DoorConfig};
    let broker = Broker::start();
    let bus_a = SimBus::start(stored(&[0]));
    let bus_b = SimBus::start(stored(&[0]));
    let hub = Hub::with_buses(
        &broker,
        &[("rs485-a", bus_a.path.as_str(), 115_200)],
        "",
        &[("lobby", "stored", "rs485-a", 0)],
        "",
    );
    let mut sub = Subscriber::connect(&broker, &[&common::hub::topic("#")]).await;
    for door in ["lobby", "annex"] {
        publish_snapshot(&mut sub, door, 1, &credentials(door, 10), 1).await;
    }
    let daemon = hub.start();
    reported(&mut sub, "lobby", in_sync(1)).await;
    reported(&mut sub, "annex", |r| r["status"] == "unconfigured").await;

    // A second bus with its door; a [health] change waits for a restart.
    let mut config = hub.config();
    config.bus.push(BusConfig {
        name: "rs485-b".into(),
        port: bus_b.path.clone().into(),
        ..config.bus[0].clone()
    });
    config.door.push(DoorConfig {
        id: "annex".into(),
        bus: "rs485-b".into(),
        ..config.door[0].clone()
    });
    config.health.interval_s = 5;
    let applied = daemon.reload(config.clone()).await.unwrap();
    assert_eq!(applied.buses_added, ["rs485-b"]);
    assert_eq!(applied.doors_added, ["annex"]);
    assert!(applied.buses_restarted.is_empty() && applied.buses_removed.is_empty());
    let outcome = daemon.control().outcomes().borrow().clone().unwrap();
    assert!(outcome.ok);
    assert_eq!(outcome.needs_restart, ["health"]);
    reported(&mut sub, "annex", in_sync(1)).await;

    // A key file others can read refuses the whole reload; nothing changes.
    let key = hub.dir.path().join("annex.scbk");
    std::fs::write(&key, "000102030405060708090a0b0c0d0e0f\n").unwrap();
    let mut bad = config.clone();
    bad.door[1].scbk_file = Some(key);
    bad.door.remove(0);
    let err = daemon.reload(bad).await.unwrap_err().to_string();
    assert!(err.contains("door annex: scbk_file"), "{err}");
    let outcome = daemon.control().outcomes().borrow().clone().unwrap();
    assert!(!outcome.ok && outcome.errors == [err]);
    sub.assert_none(std::time::Duration::from_millis(500), |m| {
        m.topic.ends_with("/lobby/reported") && m.json()["status"] == "unconfigured"
    })
    .await;

    // The first bus goes, with its door.
    let mut fewer = config.clone();
    fewer.bus.remove(0);
    fewer.door.remove(0);
    let applied = daemon.reload(fewer).await.unwrap();
    assert_eq!(applied.buses_removed, ["rs485-a"]);
    assert_eq!(applied.doors_removed, ["lobby"]);
    reported(&mut sub, "lobby", |r| r["status"] == "unconfigured").await;
    common::hub::health(&mut sub, |h| {
        h["buses"]
            .as_array()
            .is_some_and(|b| b.len() == 1 && b[0]["name"] == "rs485-b")
            && h["doors"]["total"] == 1
            && h["doors"]["in_sync"] == 1
    })
    .await;

    daemon.shutdown();
    daemon.wait().await.unwrap();
}
