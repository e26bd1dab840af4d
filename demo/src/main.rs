//! `cargo run -p doorhub-demo`: the whole doorhub loop on one machine.
//!
//! 1. A broker on a free loopback port: mosquitto when it is installed, else rumqttd embedded
//!    in this process (`DOORHUB_DEMO_BROKER=embedded` or `=mosquitto` forces the choice).
//! 2. Two RS-485 buses of simulated door readers, each on a pty pair: the daemon opens the
//!    slave's path as its serial port, the simulator (`doorhub::sim`) serves the master.
//! 3. The daemon itself, in this process, with a config file and store in a temp dir.
//! 4. A cloud side (an MQTT client): it publishes each door's credential snapshot, revokes a
//!    card, and presents cards at the readers, printing what the hub reports.
//!
//! Every wait has a deadline; a step that fails prints why and the demo exits 1.

mod broker;
mod world;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use doorhub::config::{Config, DoorMode};
use doorhub::daemon::Daemon;
use doorhub::sim::{Action, Mode, Reader, ReaderOptions, Script, SimEvent};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_serial::{SerialPort, SerialStream};

use broker::Broker;
use world::{Input, World};

/// The hub's id, in every topic.
const HUB: &str = "demo-hub";
/// The topic prefix of this hub.
const PREFIX: &str = "doorhub/v1/demo-hub";

/// Deadlines of the steps.
const CONNECT: Duration = Duration::from_secs(5);
const ONLINE: Duration = Duration::from_secs(10);
const SYNC: Duration = Duration::from_secs(15);
const CARD: Duration = Duration::from_secs(5);
const STOP: Duration = Duration::from_secs(10);

/// One simulated door.
struct Door {
    id: &'static str,
    /// Index into [`BUSES`].
    bus: usize,
    address: u8,
    mode: DoorMode,
    /// The cards (indexes into [`CARDS`]) in its first snapshot.
    cards: &'static [usize],
}

/// The buses, by name.
const BUSES: [&str; 2] = ["bus-a", "bus-b"];

const DOORS: [Door; 5] = [
    Door {
        id: "lobby",
        bus: 0,
        address: 1,
        mode: DoorMode::Hub,
        cards: &[0, 1, 2, 3, 4],
    },
    Door {
        id: "garage",
        bus: 0,
        address: 2,
        mode: DoorMode::Stored,
        cards: &[0, 1, 5, 6],
    },
    Door {
        id: "roof",
        bus: 0,
        address: 3,
        mode: DoorMode::Stored,
        cards: &[0, 7],
    },
    Door {
        id: "annex",
        bus: 1,
        address: 1,
        mode: DoorMode::Stored,
        cards: &[0, 2, 3],
    },
    Door {
        id: "loading",
        bus: 1,
        address: 2,
        mode: DoorMode::Hub,
        cards: &[1, 4, 6],
    },
];

/// The building's cards: the cloud's id and the card number (26-bit, facility 42).
const CARDS: [(&str, u32); 8] = [
    ("kc-0001", 1001),
    ("kc-0002", 1002),
    ("kc-0003", 1003),
    ("kc-0004", 1004),
    ("kc-0005", 1005),
    ("kc-0006", 1006),
    ("kc-0007", 1007),
    ("kc-0008", 1008),
];

/// The card revoked at `garage`, then presented there.
const REVOKED: usize = 5;

/// A card's bits as a reader reports them: 26 bits (facility 42, the card number, parity
/// bits left 0), left-justified in 4 bytes.
fn card_data(index: usize) -> Vec<u8> {
    let number = CARDS.get(index).map_or(0, |c| c.1);
    let bits26 = (42u32 << 17) | ((number & 0xFFFF) << 1);
    (bits26 << 6).to_be_bytes().to_vec()
}

fn card_id(index: usize) -> &'static str {
    CARDS.get(index).map_or("?", |c| c.0)
}

fn door(id: &str) -> Result<&'static Door, String> {
    DOORS
        .iter()
        .find(|d| d.id == id)
        .ok_or_else(|| format!("no door {id} in the demo"))
}

/// A bus's name by its index.
fn bus_name(bus: usize) -> &'static str {
    BUSES.get(bus).copied().unwrap_or("bus-?")
}

fn mode_name(mode: DoorMode) -> &'static str {
    match mode {
        DoorMode::Hub => "hub",
        DoorMode::Stored => "stored",
    }
}

fn main() -> ExitCode {
    // The daemon's and the broker's logs go to stderr, warnings only unless RUST_LOG says more.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // rumqttd logs a client's ordinary disconnect as an error.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=off")),
        )
        .init();
    let started = Instant::now();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo failed: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(started));
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One bus of simulated readers: the pty's slave stays open here for the whole run (a pty
/// master reads EIO once no slave is open), the daemon opens the slave's path.
struct SimBus {
    path: String,
    script: mpsc::Sender<Script>,
    _slave: SerialStream,
}

async fn run(started: Instant) -> Result<String, String> {
    let tmp = tempfile::Builder::new()
        .prefix("doorhub-demo-")
        .tempdir()
        .map_err(|e| format!("cannot make a temp dir: {e}"))?;

    println!("== setup: a broker, two buses of simulated doors, the daemon ==");
    // 1. The broker.
    let broker = Broker::start(tmp.path())?;
    println!(
        "[broker] {} on 127.0.0.1:{}",
        broker.describe(),
        broker.port()
    );

    // 2. The simulated doors, one multi-drop line per bus.
    let (tx, rx) = mpsc::unbounded_channel();
    let mut buses = Vec::new();
    for (b, name) in BUSES.iter().enumerate() {
        let bus = start_bus(b, tx.clone())?;
        let doors: Vec<String> = DOORS
            .iter()
            .filter(|d| d.bus == b)
            .map(|d| format!("{}@{} ({})", d.id, d.address, mode_name(d.mode)))
            .collect();
        println!("[sim] {name} on pty {}: {}", bus.path, doors.join(", "));
        buses.push(bus);
    }

    // The cloud subscribes before the daemon starts, so it sees everything the hub publishes.
    let cloud = connect_cloud(broker.port(), tx.clone()).await?;
    let mut world = World::new(rx);
    world
        .wait("the cloud's subscription", CONNECT, |w| w.subscribed)
        .await?;
    println!("[cloud] subscribed to {PREFIX}/#");

    // 3. The daemon.
    let config_path = write_config(tmp.path(), broker.port(), &buses)?;
    // Without the process's DOORHUB__* variables: a shell set up for a real hub must not point
    // the demo's daemon elsewhere.
    let config = Config::load_with_env(&config_path, Vec::new()).map_err(|e| {
        format!(
            "the demo's config {} is invalid:\n{e}",
            config_path.display()
        )
    })?;
    let daemon = Daemon::start(config).map_err(|e| format!("the daemon did not start: {e:#}"))?;
    println!(
        "[hub] doorhub started: hub {HUB}, {} buses, {} doors, store in {}",
        BUSES.len(),
        DOORS.len(),
        tmp.path().join("data").display()
    );
    world
        .wait("every reader to come online", ONLINE, |w| {
            DOORS.iter().all(|d| w.reader_online(d.id))
        })
        .await?;
    println!("=> all {} readers are online", DOORS.len());
    println!("\n== the cloud publishes each door's credential snapshot ==");

    // 4a. A snapshot per door.
    for d in &DOORS {
        publish(&cloud, d.id, 1, d.cards).await?;
    }
    world
        .wait("every door to report in_sync at version 1", SYNC, |w| {
            DOORS.iter().all(|d| w.in_sync_at(d.id, 1))
        })
        .await?;
    world
        .wait(
            "the health message to count every door in sync",
            SYNC,
            |w| w.health_in_sync() == Some(DOORS.len() as u64),
        )
        .await?;
    println!("=> every door enforces its snapshot v1");
    println!("\n== the cloud revokes a card at garage ==");

    // 4b. Revoke a card at garage: version 2 without it.
    let garage = door("garage")?;
    let kept: Vec<usize> = garage
        .cards
        .iter()
        .copied()
        .filter(|&c| c != REVOKED)
        .collect();
    println!("[cloud] revoke {} at garage", card_id(REVOKED));
    let mark = world.sim_mark();
    publish(&cloud, "garage", 2, &kept).await?;
    world
        .wait("garage to apply version 2 as a delta", SYNC, |w| {
            w.in_sync_at("garage", 2)
                && w.sim_since(mark, garage.bus, garage.address).any(|e| {
                    matches!(
                        e,
                        SimEvent::FileApplied {
                            outcome: "delta",
                            version: 2,
                            ..
                        }
                    )
                })
        })
        .await?;
    let delta_size = world
        .sim_since(mark, garage.bus, garage.address)
        .find_map(|e| match e {
            SimEvent::FileApplied {
                outcome: "delta",
                size,
                ..
            } => Some(*size),
            _ => None,
        })
        .unwrap_or_default();
    println!("=> garage applied v2: the reader got a {delta_size}-byte delta, not the whole table");

    // 4c. Cards at the doors.
    println!("\n== people present cards ==");
    let mut reads = Vec::new();
    reads.push(present(&mut world, &buses, "lobby", 2, true).await?);
    reads.push(present(&mut world, &buses, "garage", REVOKED, false).await?);
    reads.push(present(&mut world, &buses, "annex", 3, true).await?);
    reads.push(present(&mut world, &buses, "loading", 7, false).await?);

    // 5. The final state, as the cloud sees it.
    println!("\n== what the cloud sees ==\n{}", world.table(&DOORS));

    // 6. Stop: the daemon first (it says goodbye on the health topic), then the rest.
    println!("\n== shutdown ==");
    let mark = world.mqtt_mark();
    daemon.shutdown();
    match tokio::time::timeout(STOP, daemon.wait()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("the daemon stopped with an error: {e:#}")),
        Err(_) => return Err(format!("the daemon did not stop within {STOP:?}")),
    }
    world
        .wait("the hub's shutdown notice on the health topic", STOP, |w| {
            w.shutdown_notice_since(mark)
        })
        .await?;
    println!("[hub] doorhub stopped cleanly");
    // Not fatal: everything the demo shows has been shown.
    let _ = cloud.disconnect().await;
    drop(buses);
    let broker_name = broker.name();
    broker.stop();

    let granted = reads.iter().filter(|r| **r).count();
    Ok(format!(
        "demo OK in {:.1} s: {} doors in sync on 2 buses, {} revoked at garage by a \
         {delta_size}-byte delta, {} card reads ({granted} granted, {} denied) reported; \
         broker: {broker_name}",
        started.elapsed().as_secs_f64(),
        DOORS.len(),
        card_id(REVOKED),
        reads.len(),
        reads.len() - granted,
    ))
}

/// Opens a pty pair and starts the bus's simulated readers on its master.
fn start_bus(b: usize, tx: mpsc::UnboundedSender<Input>) -> Result<SimBus, String> {
    let (master, slave) =
        SerialStream::pair().map_err(|e| format!("cannot open a pty pair: {e}"))?;
    let path = slave
        .name()
        .ok_or_else(|| "the pty slave has no path".to_owned())?;
    let options = DOORS.iter().filter(|d| d.bus == b).map(|d| {
        let mode = match d.mode {
            DoorMode::Hub => Mode::Plain,
            DoorMode::Stored => Mode::Stored,
        };
        ReaderOptions::new(d.address, mode)
    });
    let reader = Reader::multidrop(options);
    let (script, script_rx) = mpsc::channel(16);
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        if let Err(e) = reader.run(master, script_rx, events_tx).await {
            eprintln!("[sim] {}: the simulator stopped: {e}", bus_name(b));
        }
    });
    tokio::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            if tx.send(Input::Sim { bus: b, event }).is_err() {
                break;
            }
        }
    });
    Ok(SimBus {
        path,
        script,
        _slave: slave,
    })
}

/// The daemon's config file, in the temp dir.
fn write_config(dir: &Path, port: u16, buses: &[SimBus]) -> Result<std::path::PathBuf, String> {
    let mut toml = String::new();
    let _ = write!(
        toml,
        "[hub]\nid = \"{HUB}\"\ndata_dir = \"{}\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nallow_plaintext = true\n\n",
        dir.join("data").display()
    );
    for (name, bus) in BUSES.iter().zip(buses) {
        let _ = write!(
            toml,
            "[[bus]]\nname = \"{name}\"\nport = \"{}\"\nbaud = 115200\n\n",
            bus.path
        );
    }
    for d in &DOORS {
        let _ = write!(
            toml,
            "[[door]]\nid = \"{}\"\nbus = \"{}\"\naddress = {}\nmode = \"{}\"\n\n",
            d.id,
            bus_name(d.bus),
            d.address,
            mode_name(d.mode)
        );
    }
    let path = dir.join("doorhub.toml");
    std::fs::write(&path, toml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Connects the cloud's MQTT client and subscribes to everything the hub publishes; its
/// messages arrive as [`Input::Mqtt`].
async fn connect_cloud(port: u16, tx: mpsc::UnboundedSender<Input>) -> Result<AsyncClient, String> {
    let mut opts = MqttOptions::new("demo-cloud", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    client
        .subscribe(format!("{PREFIX}/#"), QoS::AtLeastOnce)
        .await
        .map_err(|e| format!("cloud subscribe: {e}"))?;
    tokio::spawn(async move {
        let mut reported_error = false;
        loop {
            let input = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => Input::Mqtt {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                },
                Ok(Event::Incoming(Packet::SubAck(_))) => Input::Subscribed,
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => continue,
                Err(e) => {
                    if !reported_error {
                        reported_error = true;
                        let _ = tx.send(Input::CloudError(e.to_string()));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if tx.send(input).is_err() {
                return;
            }
        }
    });
    Ok(client)
}

/// Publishes `door`'s snapshot `version` with `cards` (retained, QoS 1, one part).
async fn publish(
    cloud: &AsyncClient,
    door: &str,
    version: u64,
    cards: &[usize],
) -> Result<(), String> {
    let credentials: Vec<Value> = cards
        .iter()
        .map(|&c| {
            json!({
                "id": card_id(c),
                "bits": 26,
                "data": hex(&card_data(c)),
            })
        })
        .collect();
    let payload = json!({"version": version, "part": 0, "parts": 1, "credentials": credentials});
    let ids: Vec<&str> = cards.iter().map(|&c| card_id(c)).collect();
    println!(
        "[cloud] publish {door} v{version} ({} credentials: {})",
        cards.len(),
        ids.join(" ")
    );
    cloud
        .publish(
            format!("{PREFIX}/doors/{door}/desired/0"),
            QoS::AtLeastOnce,
            true,
            payload.to_string(),
        )
        .await
        .map_err(|e| format!("cloud publish to {door}: {e}"))
}

/// Presents card `card` at `door_id`'s reader and waits for the decision to be reported;
/// returns whether access was granted. Fails if the decision is not `expect_granted`.
async fn present(
    world: &mut World,
    buses: &[SimBus],
    door_id: &str,
    card: usize,
    expect_granted: bool,
) -> Result<bool, String> {
    let d = door(door_id)?;
    let bus = buses
        .get(d.bus)
        .ok_or_else(|| format!("no bus for {door_id}"))?;
    let data = card_data(card);
    println!(
        "[person] presents {} (26 bits {}) at {door_id} ({} door)",
        card_id(card),
        hex(&data),
        mode_name(d.mode)
    );
    let sim_mark = world.sim_mark();
    let mqtt_mark = world.mqtt_mark();
    bus.script
        .send(Script {
            to: Some(d.address),
            action: Action::Card { bits: 26, data },
        })
        .await
        .map_err(|_| format!("the simulator of {} has stopped", bus_name(d.bus)))?;
    world
        .wait(&format!("the access event of {door_id}"), CARD, |w| {
            w.access_since(mqtt_mark, door_id).is_some()
        })
        .await?;
    if d.mode == DoorMode::Hub {
        // The hub decided; the reader shows it: LED and buzzer, and the strike when granted.
        world
            .wait(
                &format!("the LED and buzzer commands at {door_id}'s reader"),
                CARD,
                |w| {
                    let mut sim = w.sim_since(sim_mark, d.bus, d.address);
                    let (mut led, mut buz) = (false, false);
                    for e in &mut sim {
                        led |= matches!(e, SimEvent::Led { .. });
                        buz |= matches!(e, SimEvent::Buz { .. });
                    }
                    led && buz
                },
            )
            .await?;
    }
    let event = world
        .access_since(mqtt_mark, door_id)
        .cloned()
        .unwrap_or_default();
    let granted = event["granted"] == true;
    let reason = event["reason"].as_str().unwrap_or("?");
    let who = event["credential"].as_str().unwrap_or("an unknown card");
    let decided = match d.mode {
        DoorMode::Hub => "the hub decided from its store",
        DoorMode::Stored => "the reader decided from its own table",
    };
    let strike = world
        .sim_since(sim_mark, d.bus, d.address)
        .any(|e| matches!(e, SimEvent::Out { .. }));
    let what = if granted { "granted" } else { "denied" };
    let mut line = format!("=> {door_id}: {what} ({reason}) for {who}; {decided}");
    if d.mode == DoorMode::Hub {
        line.push_str(if strike {
            ", strike released"
        } else {
            ", strike stays locked"
        });
    }
    println!("{line}");
    if granted != expect_granted {
        return Err(format!(
            "{door_id}: expected access to be {}, the hub reported {event}",
            if expect_granted { "granted" } else { "denied" }
        ));
    }
    if strike != granted && d.mode == DoorMode::Hub {
        return Err(format!(
            "{door_id}: the strike command does not match the decision ({what})"
        ));
    }
    Ok(granted)
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The door → (bus, address) map, for naming simulator events.
fn door_at(bus: usize, address: u8) -> Option<&'static str> {
    DOORS
        .iter()
        .find(|d| d.bus == bus && d.address == address)
        .map(|d| d.id)
}

/// Counts per status, for messages.
fn status_counts(reported: &BTreeMap<String, Value>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in reported.values() {
        *counts
            .entry(r["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}
