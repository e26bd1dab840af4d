//! The hub's bus task against an independent OSDP implementation: a libosdp peripheral
//! (`tests/interop/pd_peer.py`) on the other end of a pty, the daemon in-process with a real
//! mosquitto and sled.

mod common;

use std::time::Duration;

use common::hub::{HUB, Hub, WAIT, credentials, digest, publish_snapshot, reported, topic};
use common::peer::{Mode, Peer, PeerOptions};
use common::{Broker, Subscriber};
use serde_json::Value;

/// How long the peer may take to show something.
const PEER: Duration = Duration::from_secs(15);

async fn subscriber(broker: &Broker) -> Subscriber {
    Subscriber::connect(broker, &[&format!("doorhub/v1/{HUB}/#")]).await
}

#[tokio::test]
async fn a_hub_door_reads_a_card_and_drives_strike_led_and_buzzer() {
    let broker = Broker::start();
    let mut peer = Peer::spawn_pty(&PeerOptions::new(1, Mode::Plain)).await;
    let hub = Hub::with_bus(&broker, peer.port(), 115_200, &[("front", "hub", 1)], "");
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let set = credentials("front", 3);
    publish_snapshot(&mut sub, "front", 1, &set, 1).await;
    // Online: ID, CAP, polls.
    let r = reported(&mut sub, "front", |r| {
        r["reader"]["online"] == true && r["applied"] == 1
    })
    .await;
    assert_eq!(r["status"], "in_sync");

    let card = hex::encode(&set[1].data);
    peer.send(&format!("card 26 {card}")).await;
    let out = peer
        .wait_for(PEER, |v| {
            v["event"] == "command" && v["command"] == "output"
        })
        .await;
    assert_eq!(out["control_code"], 5, "{out}");
    assert_eq!(
        out["timer_count"], 30,
        "strike_ms 3000 in 100 ms units: {out}"
    );
    let led = peer
        .wait_for(PEER, |v| v["event"] == "command" && v["command"] == "led")
        .await;
    assert_eq!(led["on_color"], 2, "green: {led}");
    peer.wait_for(PEER, |v| {
        v["event"] == "command" && v["command"] == "buzzer"
    })
    .await;
    let e = sub
        .wait_for(PEER, |m| {
            m.topic == topic("events") && m.json()["type"] == "access"
        })
        .await
        .json();
    assert_eq!(e["granted"], true);
    assert_eq!(e["credential"], set[1].id);
    assert_eq!(e["data"], card);

    // An unknown card: red, no strike.
    peer.drain();
    peer.send("card 26 ffffffc0").await;
    let led = peer
        .wait_for(PEER, |v| v["event"] == "command" && v["command"] == "led")
        .await;
    assert_eq!(led["on_color"], 1, "red: {led}");
    let e = sub
        .wait_for(PEER, |m| {
            m.topic == topic("events") && m.json()["type"] == "access"
        })
        .await
        .json();
    assert_eq!(
        (e["granted"].clone(), e["reason"].clone()),
        (Value::Bool(false), "unknown_card".into())
    );
    assert!(
        peer.history()
            .iter()
            .filter(|v| v["command"] == "output")
            .count()
            == 1
    );
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_stored_door_gets_a_full_table_then_a_delta_and_matches_the_hub_digest() {
    let broker = Broker::start();
    let mut peer = Peer::spawn_pty(&PeerOptions::new(2, Mode::Stored)).await;
    let hub = Hub::with_bus(&broker, peer.port(), 115_200, &[("vault", "stored", 2)], "");
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let v1 = credentials("vault", 600);
    publish_snapshot(&mut sub, "vault", 1, &v1, 2).await;
    let r = reported(&mut sub, "vault", |r| r["applied"] == 1).await;
    assert_eq!(r["status"], "in_sync");
    assert_eq!(r["digest"], digest(&v1));
    let state = peer
        .wait_for(PEER, |v| v["event"] == "state" && v["version"] == 1)
        .await;
    assert_eq!(
        state["digest"],
        digest(&v1),
        "the reader holds what the hub reports"
    );
    assert!(
        peer.history()
            .iter()
            .any(|v| v["event"] == "file" && v["type"] == 128),
        "a full table"
    );

    // Revoke one card: a delta.
    let v2: Vec<_> = v1.iter().filter(|c| c.id != v1[10].id).cloned().collect();
    publish_snapshot(&mut sub, "vault", 2, &v2, 1).await;
    let r = reported(&mut sub, "vault", |r| r["applied"] == 2).await;
    assert_eq!(r["digest"], digest(&v2));
    let file = peer
        .wait_for(PEER, |v| v["event"] == "file" && v["version"] == 2)
        .await;
    assert_eq!(file["type"], 129, "a delta: {file}");
    assert_eq!(file["size"], 41, "{file}");
    let state = peer
        .wait_for(PEER, |v| v["event"] == "state" && v["version"] == 2)
        .await;
    assert_eq!(state["digest"], digest(&v2));
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_hub_restarted_mid_transfer_still_converges() {
    let broker = Broker::start();
    let mut peer = Peer::spawn_pty(&PeerOptions::new(3, Mode::Stored)).await;
    let hub = Hub::with_bus(&broker, peer.port(), 115_200, &[("vault", "stored", 3)], "");
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let set = credentials("big", 3000);
    publish_snapshot(&mut sub, "vault", 7, &set, 3).await;
    // Stop the hub once the first table part has arrived, before the rest.
    peer.wait_for(PEER, |v| v["event"] == "file" && v["result"] == "staged")
        .await;
    daemon.shutdown();
    daemon.wait().await.unwrap();
    let daemon = hub.start();
    let r = reported(&mut sub, "vault", |r| r["applied"] == 7).await;
    assert_eq!(r["digest"], digest(&set));
    let state = peer
        .wait_for(PEER, |v| v["event"] == "state" && v["version"] == 7)
        .await;
    assert_eq!(state["digest"], digest(&set));
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

/// A hub whose one door, `(id, mode, address)`, talks to `peer` over the Secure Channel with
/// the key in `key`.
fn secure_hub(broker: &Broker, peer: &Peer, door: (&str, &str, u8), key: &std::path::Path) -> Hub {
    secure_hub_on(broker, peer.port(), door, key, "")
}

/// [`secure_hub`] on the serial device `port`, with `more` added to the door's table.
fn secure_hub_on(
    broker: &Broker,
    port: &str,
    door: (&str, &str, u8),
    key: &std::path::Path,
    more: &str,
) -> Hub {
    let (id, mode, address) = door;
    Hub::with_bus(
        broker,
        port,
        115_200,
        &[],
        &format!(
            "[[door]]\nid = \"{id}\"\nbus = \"rs485-a\"\naddress = {address}\nmode = \"{mode}\"\nscbk_file = \"{}\"\n{more}",
            key.display()
        ),
    )
}

/// Writes a Secure Channel key file (mode 0600) and returns its path.
fn key_file(dir: &std::path::Path, key: &[u8; 16]) -> std::path::PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("front.scbk");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    writeln!(f, "{}", hex::encode(key)).unwrap();
    path
}

#[tokio::test]
async fn the_secure_channel_carries_a_card_read_with_a_libosdp_reader() {
    let broker = Broker::start();
    let key = [0x11u8; 16];
    let mut opts = PeerOptions::new(1, Mode::Plain);
    opts.scbk = Some(key);
    let mut peer = Peer::spawn_pty(&opts).await;
    let keys = tempfile::tempdir().unwrap();
    let path = key_file(keys.path(), &key);
    let hub = secure_hub(&broker, &peer, ("front", "hub", 1), &path);
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    let set = credentials("sc", 2);
    publish_snapshot(&mut sub, "front", 1, &set, 1).await;
    reported(&mut sub, "front", |r| {
        r["reader"]["online"] == true && r["applied"] == 1
    })
    .await;
    peer.send(&format!("card 26 {}", hex::encode(&set[0].data)))
        .await;
    // The peer enforces the Secure Channel: it only acts on sealed commands.
    peer.wait_for(PEER, |v| {
        v["event"] == "command" && v["command"] == "output"
    })
    .await;
    let e = sub
        .wait_for(PEER, |m| {
            m.topic == topic("events") && m.json()["type"] == "access"
        })
        .await
        .json();
    assert_eq!(e["credential"], set[0].id);
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

/// What a door whose reader refuses its key reports.
const REFUSED: &str = "secure channel: the reader refused the door's key";
/// osdp_CHLNG, osdp_SCRYPT and osdp_KEYSET.
const CHLNG: u64 = 0x76;
const SCRYPT: u64 = 0x77;
const KEYSET: u64 = 0x75;

/// A libosdp peer that prints every frame it receives; `scbk` as in [`PeerOptions::scbk`].
async fn tracing_peer(scbk: Option<[u8; 16]>) -> Peer {
    let mut opts = PeerOptions::new(1, Mode::Plain);
    opts.scbk = scbk;
    opts.trace = true;
    Peer::spawn_pty(&opts).await
}

/// Waits until the peer has received `n` more osdp_CHLNG.
async fn challenges(peer: &mut Peer, n: usize) {
    for _ in 0..n {
        peer.wait_for(PEER, |v| v["event"] == "rx" && v["code"] == CHLNG)
            .await;
    }
}

/// The key file's bytes and modification time.
fn snapshot(path: &std::path::Path) -> (Vec<u8>, std::time::SystemTime) {
    let meta = std::fs::metadata(path).unwrap();
    (std::fs::read(path).unwrap(), meta.modified().unwrap())
}

/// Asserts that the door `front` ends up `error` with [`REFUSED`], with one `tamper` event
/// over several handshake retries, no default-key handshake, no session and no KEYSET, and the
/// key file as it was `before` the hub started.
async fn refused_without_fallback(
    sub: &mut Subscriber,
    peer: &mut Peer,
    key: &std::path::Path,
    before: (Vec<u8>, std::time::SystemTime),
) {
    let r = reported(sub, "front", |r| r["status"] == "error").await;
    assert_eq!(r["error"]["reason"], REFUSED, "{r}");
    assert_eq!(r["reader"]["online"], false, "{r}");
    // Three more handshakes, one probe (2 s) apart.
    challenges(peer, 3).await;
    sub.wait_for(WAIT, |m| {
        m.topic == topic("events") && m.json()["type"] == "tamper"
    })
    .await;
    sub.assert_none(Duration::from_millis(500), |m| {
        m.topic == topic("events") && m.json()["type"] == "tamper"
    })
    .await;
    peer.drain();
    let rx: Vec<_> = peer
        .history()
        .iter()
        .filter(|v| v["event"] == "rx")
        .collect();
    assert!(
        rx.iter()
            .filter(|v| v["code"] == CHLNG)
            .all(|v| v["scb"] == "031101"),
        "a CHLNG for the default key (k = 0): {rx:?}"
    );
    assert!(
        !rx.iter()
            .any(|v| v["code"] == SCRYPT || v["code"] == KEYSET),
        "a session or a KEYSET: {rx:?}"
    );
    assert_eq!(snapshot(key), before, "the key file changed");
}

#[tokio::test]
async fn a_reader_with_another_key_gets_no_default_key_and_no_new_one() {
    let broker = Broker::start();
    let mut peer = tracing_peer(Some([0x44; 16])).await;
    let keys = tempfile::tempdir().unwrap();
    let path = key_file(keys.path(), &[0x55; 16]);
    let hub = secure_hub(&broker, &peer, ("front", "hub", 1), &path);
    let mut sub = subscriber(&broker).await;
    let before = snapshot(&path);
    let daemon = hub.start();
    refused_without_fallback(&mut sub, &mut peer, &path, before).await;
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_reader_in_install_mode_on_a_door_with_a_key_file_is_not_paired() {
    let broker = Broker::start();
    // Keyless: it would accept SCBK-D.
    let mut peer = tracing_peer(None).await;
    let keys = tempfile::tempdir().unwrap();
    let path = key_file(keys.path(), &[0x22; 16]);
    let hub = secure_hub_on(
        &broker,
        peer.port(),
        ("front", "hub", 1),
        &path,
        "install_key = true\n",
    );
    let mut sub = subscriber(&broker).await;
    let before = snapshot(&path);
    let daemon = hub.start();
    refused_without_fallback(&mut sub, &mut peer, &path, before).await;
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn install_key_pairs_a_new_reader_once_and_never_offers_the_default_key_again() {
    use std::os::unix::fs::PermissionsExt;
    let broker = Broker::start();
    let mut peer = tracing_peer(None).await;
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("front.scbk");
    let hub = secure_hub_on(
        &broker,
        peer.port(),
        ("front", "hub", 1),
        &path,
        "install_key = true\n",
    );
    let mut sub = subscriber(&broker).await;
    let daemon = hub.start();
    let set = credentials("inst", 2);
    publish_snapshot(&mut sub, "front", 1, &set, 1).await;
    reported(&mut sub, "front", |r| {
        r["reader"]["online"] == true && r["applied"] == 1
    })
    .await;
    // SCBK-D, then KEYSET, then the new key.
    let first = peer
        .wait_for(PEER, |v| v["event"] == "rx" && v["code"] == CHLNG)
        .await;
    assert_eq!(first["scb"], "031100", "install mode: {first}");
    peer.wait_for(PEER, |v| {
        v["event"] == "command" && v["command"] == "keyset"
    })
    .await;
    let next = peer
        .wait_for(PEER, |v| v["event"] == "rx" && v["code"] == CHLNG)
        .await;
    assert_eq!(next["scb"], "031101", "the new key: {next}");
    let stored = std::fs::read_to_string(&path).unwrap();
    assert_eq!(stored.trim().len(), 32, "{stored}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_dir(keys.path()).unwrap().count(),
        1,
        "only the key file"
    );
    // The reader works under it.
    peer.send(&format!("card 26 {}", hex::encode(&set[1].data)))
        .await;
    let e = sub
        .wait_for(PEER, |m| {
            m.topic == topic("events") && m.json()["type"] == "access"
        })
        .await
        .json();
    assert_eq!(e["granted"], true);
    daemon.shutdown();
    daemon.wait().await.unwrap();
    peer.drain();
    assert_eq!(
        peer.history()
            .iter()
            .filter(|v| v["event"] == "command" && v["command"] == "keyset")
            .count(),
        1,
        "one KEYSET"
    );

    // Another new reader in its place, same config (install_key = true): the file exists now.
    drop(peer);
    let mut peer = tracing_peer(None).await;
    let hub2 = secure_hub_on(
        &broker,
        peer.port(),
        ("front", "hub", 1),
        &path,
        "install_key = true\n",
    );
    let before = snapshot(&path);
    let daemon = hub2.start();
    refused_without_fallback(&mut sub, &mut peer, &path, before).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), stored);
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_table_goes_to_a_stored_libosdp_reader_over_the_secure_channel() {
    let broker = Broker::start();
    let key = [0x33u8; 16];
    let mut opts = PeerOptions::new(2, Mode::Stored);
    opts.scbk = Some(key);
    let mut peer = Peer::spawn_pty(&opts).await;
    let keys = tempfile::tempdir().unwrap();
    let path = key_file(keys.path(), &key);
    let hub = secure_hub(&broker, &peer, ("safe", "stored", 2), &path);
    let daemon = hub.start();
    let mut sub = subscriber(&broker).await;
    // Encrypted fragments padded to 16-byte blocks must still fit libosdp's 256-byte buffer.
    let set = credentials("safe", 900);
    publish_snapshot(&mut sub, "safe", 3, &set, 2).await;
    let r = reported(&mut sub, "safe", |r| r["applied"] == 3).await;
    assert_eq!(r["digest"], digest(&set));
    let state = peer
        .wait_for(PEER, |v| v["event"] == "state" && v["version"] == 3)
        .await;
    assert_eq!(state["digest"], digest(&set));
    assert!(
        !peer.history().iter().any(|v| v["event"] == "dropped"),
        "a frame was over the receive buffer"
    );
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

/// What a door whose reader cannot run the Secure Channel reports.
const UNSUPPORTED: &str =
    "secure channel: the reader does not support it, but the door has a key file";

#[tokio::test]
async fn a_key_file_for_a_reader_without_secure_channel_is_said_once_at_warn_and_in_reported() {
    use common::simbus::SimBus;
    use doorhub::sim::{Mode as SimMode, ReaderOptions};
    let broker = Broker::start();
    // The simulator's PDCAP says communication security without AES-128.
    let mut sim = SimBus::start(vec![ReaderOptions::new(1, SimMode::Plain)]);
    let keys = tempfile::tempdir().unwrap();
    let path = key_file(keys.path(), &[0x66; 16]);
    let hub = secure_hub_on(&broker, &sim.path, ("front", "hub", 1), &path, "");
    let mut sub = subscriber(&broker).await;
    let mut child = hub.spawn();
    let r = reported(&mut sub, "front", |r| !r["error"].is_null()).await;
    assert_eq!(r["error"]["reason"], UNSUPPORTED, "{r}");
    assert_eq!(r["status"], "offline", "{r}");
    // Three more probes, 2 s apart, each up to CAP.
    for _ in 0..3 {
        sim.wait_for(PEER, |v| v["event"] == "cap" && v["address"] == 1)
            .await;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doorhub"))
        .arg("status")
        .arg("--config")
        .arg(&hub.config_path)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains(UNSUPPORTED), "{status}");
    common::hub::signal(&child, "TERM");
    assert_eq!(common::hub::wait_exit(&mut child, WAIT).await, Some(0));
    let log = hub.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(UNSUPPORTED))
        .count();
    assert_eq!(warned, 1, "{log}");
}

#[tokio::test]
async fn a_new_key_that_cannot_be_stored_is_never_sent() {
    let broker = Broker::start();
    let mut peer = tracing_peer(None).await;
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("front.scbk");
    // Where the new key is written first: a directory holding a file cannot be replaced.
    let blocker = keys.path().join("front.scbk.new");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("x"), "x").unwrap();
    let hub = secure_hub_on(
        &broker,
        peer.port(),
        ("front", "hub", 1),
        &path,
        "install_key = true\n",
    );
    let mut sub = subscriber(&broker).await;
    let daemon = hub.start();
    let r = reported(&mut sub, "front", |r| r["status"] == "error").await;
    let reason = r["error"]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.starts_with("secure channel: cannot store the new key in")
            && reason.ends_with("no key was sent to the reader"),
        "{r}"
    );
    // Pairing is tried again (SCBK-D, as no key file exists), and still nothing is sent.
    challenges(&mut peer, 2).await;
    peer.drain();
    assert!(
        !peer
            .history()
            .iter()
            .any(|v| v["code"] == KEYSET || (v["event"] == "command" && v["command"] == "keyset")),
        "a KEYSET went out"
    );
    assert!(!path.exists());
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_replacement_reader_pairs_once_its_key_file_is_removed_and_the_config_reloaded() {
    let broker = Broker::start();
    let mut peer = tracing_peer(None).await;
    let keys = tempfile::tempdir().unwrap();
    let old = [0x77; 16];
    let path = key_file(keys.path(), &old);
    let hub = secure_hub_on(
        &broker,
        peer.port(),
        ("front", "hub", 1),
        &path,
        "install_key = true\n",
    );
    let mut sub = subscriber(&broker).await;
    let daemon = hub.start();
    let r = reported(&mut sub, "front", |r| r["status"] == "error").await;
    assert_eq!(r["error"]["reason"], REFUSED, "{r}");
    // The technician's way to pair the new reader.
    std::fs::remove_file(&path).unwrap();
    let applied = daemon.reload(hub.config()).await.unwrap();
    assert_eq!(applied.buses_restarted, ["rs485-a"], "{applied:?}");
    peer.wait_for(PEER, |v| {
        v["event"] == "command" && v["command"] == "keyset"
    })
    .await;
    let r = reported(&mut sub, "front", |r| r["reader"]["online"] == true).await;
    assert!(r["error"].is_null(), "{r}");
    let stored = std::fs::read_to_string(&path).unwrap();
    assert_eq!(stored.trim().len(), 32, "{stored}");
    assert_ne!(stored.trim(), hex::encode(old));
    daemon.shutdown();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_reader_whose_sealed_replies_fail_their_mac_is_warned_of_once_over_many_restarts() {
    let broker = Broker::start();
    let key = [0x12u8; 16];
    let mut opts = PeerOptions::new(1, Mode::Plain);
    opts.scbk = Some(key);
    opts.trace = true;
    // The handshake succeeds, then every sealed reply fails its MAC: a restart per session.
    opts.bad_mac = true;
    let mut peer = Peer::spawn_pty(&opts).await;
    let keys = tempfile::tempdir().unwrap();
    let path = key_file(keys.path(), &key);
    let hub = secure_hub(&broker, &peer, ("front", "hub", 1), &path);
    // The binary, for its log.
    let mut child = hub.spawn();
    // Ten spoiled replies, each answered by a new handshake (a CHLNG after it).
    for _ in 0..10 {
        peer.wait_for(PEER, |v| v["event"] == "bad-mac").await;
        peer.wait_for(PEER, |v| v["event"] == "rx" && v["code"] == CHLNG)
            .await;
    }
    common::hub::signal(&child, "TERM");
    assert_eq!(common::hub::wait_exit(&mut child, WAIT).await, Some(0));
    let log = hub.log();
    let warned: Vec<_> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("; starting it again"))
        .collect();
    // Well within a minute: the first failure only.
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(
        warned[0].contains("the message MAC does not verify"),
        "{}",
        warned[0]
    );
}
