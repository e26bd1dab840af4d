//! What the demo has seen: every MQTT message the cloud received and every simulator event,
//! printed as a narrative as it arrives, and the waits on them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use doorhub::sim::SimEvent;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{DOORS, Door, PREFIX, bus_name, door_at, mode_name, status_counts};

/// Something that happened.
pub enum Input {
    /// The cloud received a message.
    Mqtt { topic: String, payload: Vec<u8> },
    /// The cloud's subscription was acknowledged.
    Subscribed,
    /// The cloud's connection failed (it keeps retrying).
    CloudError(String),
    /// A simulated reader on bus `bus` reported something.
    Sim { bus: usize, event: SimEvent },
}

/// Everything seen so far.
pub struct World {
    rx: mpsc::UnboundedReceiver<Input>,
    /// The cloud's subscription is in place.
    pub subscribed: bool,
    /// The latest `reported` of each door.
    reported: BTreeMap<String, Value>,
    /// The line last printed for each door, to print changes only.
    printed: BTreeMap<String, String>,
    /// The latest health message.
    health: Option<Value>,
    health_line: String,
    /// Every hub message: the topic after the prefix, and the payload.
    mqtt: Vec<(String, Value)>,
    /// Every simulator event: its bus, and the event.
    sim: Vec<(usize, SimEvent)>,
}

impl World {
    pub fn new(rx: mpsc::UnboundedReceiver<Input>) -> World {
        World {
            rx,
            subscribed: false,
            reported: BTreeMap::new(),
            printed: BTreeMap::new(),
            health: None,
            health_line: String::new(),
            mqtt: Vec::new(),
            sim: Vec::new(),
        }
    }

    /// Takes in what happens until `done` holds; fails after `deadline` saying what it waited
    /// for and where each door stands.
    pub async fn wait(
        &mut self,
        what: &str,
        deadline: Duration,
        mut done: impl FnMut(&World) -> bool,
    ) -> Result<(), String> {
        let end = Instant::now() + deadline;
        loop {
            if done(self) {
                return Ok(());
            }
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(input)) => self.take(input),
                Ok(None) => return Err(format!("waiting for {what}: every input has closed")),
                Err(_) => {
                    return Err(format!(
                        "timed out after {deadline:?} waiting for {what}.\nWhat each door reported:\n{}",
                        self.table(&DOORS)
                    ));
                }
            }
        }
    }

    fn take(&mut self, input: Input) {
        match input {
            Input::Subscribed => self.subscribed = true,
            Input::CloudError(e) => println!("[cloud] connection problem, retrying: {e}"),
            Input::Mqtt { topic, payload } => self.mqtt_message(&topic, &payload),
            Input::Sim { bus, event } => {
                if let Some(line) = describe_sim(bus, &event) {
                    println!("{line}");
                }
                self.sim.push((bus, event));
            }
        }
    }

    fn mqtt_message(&mut self, topic: &str, payload: &[u8]) {
        let Some(rest) = topic.strip_prefix(PREFIX).and_then(|t| t.strip_prefix('/')) else {
            return;
        };
        // A cleared retained message, or the cloud's own desired snapshots echoed back.
        if payload.is_empty() || rest.contains("/desired/") {
            return;
        }
        let json: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                println!("[cloud] {rest}: not JSON ({e})");
                return;
            }
        };
        if rest == "health" {
            let line = health_line(&json);
            if line != self.health_line {
                println!("{line}");
                self.health_line = line;
            }
            self.health = Some(json.clone());
        } else if rest == "events" {
            println!("{}", event_line(&json));
        } else if let Some(door) = rest
            .strip_prefix("doors/")
            .and_then(|d| d.strip_suffix("/reported"))
        {
            let line = reported_line(door, &json);
            if self.printed.get(door) != Some(&line) {
                println!("{line}");
                self.printed.insert(door.to_owned(), line);
            }
            self.reported.insert(door.to_owned(), json.clone());
        }
        self.mqtt.push((rest.to_owned(), json));
    }

    /// Whether `door`'s reader is reported online.
    pub fn reader_online(&self, door: &str) -> bool {
        self.reported
            .get(door)
            .is_some_and(|r| r["reader"]["online"] == true)
    }

    /// Whether `door` reports `in_sync` with `version` desired and applied.
    pub fn in_sync_at(&self, door: &str, version: u64) -> bool {
        self.reported.get(door).is_some_and(|r| {
            r["status"] == "in_sync" && r["applied"] == version && r["desired"] == version
        })
    }

    /// `doors.in_sync` of the latest health message.
    pub fn health_in_sync(&self) -> Option<u64> {
        self.health.as_ref()?["doors"]["in_sync"].as_u64()
    }

    /// A mark to look at simulator events after.
    pub fn sim_mark(&self) -> usize {
        self.sim.len()
    }

    /// Simulator events since `mark` of the reader at `bus`/`address`.
    pub fn sim_since(
        &self,
        mark: usize,
        bus: usize,
        address: u8,
    ) -> impl Iterator<Item = &SimEvent> {
        self.sim
            .iter()
            .skip(mark)
            .filter(move |(b, e)| *b == bus && sim_address(e) == Some(address))
            .map(|(_, e)| e)
    }

    /// A mark to look at hub messages after.
    pub fn mqtt_mark(&self) -> usize {
        self.mqtt.len()
    }

    /// The first access event of `door` since `mark`.
    pub fn access_since(&self, mark: usize, door: &str) -> Option<&Value> {
        self.mqtt
            .iter()
            .skip(mark)
            .find(|(t, e)| t == "events" && e["type"] == "access" && e["door"] == door)
            .map(|(_, e)| e)
    }

    /// Whether the hub said on its health topic, since `mark`, that it shut down.
    pub fn shutdown_notice_since(&self, mark: usize) -> bool {
        self.mqtt
            .iter()
            .skip(mark)
            .any(|(t, h)| t == "health" && h["online"] == false && h["reason"] == "shutdown")
    }

    /// The doors as the cloud sees them, one row each.
    pub fn table(&self, doors: &[Door]) -> String {
        let mut rows = vec![[
            "door".to_owned(),
            "bus".to_owned(),
            "mode".to_owned(),
            "desired".to_owned(),
            "applied".to_owned(),
            "status".to_owned(),
            "creds".to_owned(),
            "digest".to_owned(),
        ]];
        for d in doors {
            let r = self.reported.get(d.id);
            let field = |k: &str| match r.map(|r| &r[k]) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => "-".to_owned(),
                Some(v) => v.to_string(),
            };
            rows.push([
                d.id.to_owned(),
                format!("{}@{}", bus_name(d.bus), d.address),
                mode_name(d.mode).to_owned(),
                field("desired"),
                field("applied"),
                field("status"),
                field("credentials"),
                field("digest"),
            ]);
        }
        let mut widths = [0usize; 8];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let mut out = String::new();
        for (i, row) in rows.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
                out.push_str(&rule.join("  "));
                out.push('\n');
            }
        }
        out.push_str(&format!("({})", status_counts(&self.reported)));
        out
    }
}

/// `[garage] reported in_sync desired=2 applied=2 credentials=3 digest=… reader online`
fn reported_line(door: &str, r: &Value) -> String {
    let mut line = format!(
        "[{door}] reported {} desired={} applied={} credentials={} digest={} reader {}",
        r["status"].as_str().unwrap_or("?"),
        r["desired"],
        r["applied"],
        r["credentials"],
        r["digest"].as_str().unwrap_or("?"),
        if r["reader"]["online"] == true {
            "online"
        } else {
            "offline"
        },
    );
    if !r["error"].is_null() {
        line.push_str(&format!(
            " error=v{}: {}",
            r["error"]["version"],
            r["error"]["reason"].as_str().unwrap_or("?")
        ));
    }
    line
}

/// `[health] hub online: doors 5 total, … | bus-a open, 3/3 readers online | …`
fn health_line(h: &Value) -> String {
    if h["online"] == false {
        return format!(
            "[health] hub offline ({})",
            h["reason"].as_str().unwrap_or("?")
        );
    }
    let d = &h["doors"];
    let mut line = format!(
        "[health] hub online: doors {} total, {} in_sync, {} pending, {} offline, {} error",
        d["total"], d["in_sync"], d["pending"], d["offline"], d["error"]
    );
    if let Some(buses) = h["buses"].as_array() {
        for b in buses {
            line.push_str(&format!(
                " | {} {}, {}/{} readers online",
                b["name"].as_str().unwrap_or("?"),
                if b["open"] == true { "open" } else { "closed" },
                b["online"],
                b["readers"]
            ));
        }
    }
    line
}

/// `[event] #7 access granted lobby kc-0003`
fn event_line(e: &Value) -> String {
    let door = e["door"].as_str().unwrap_or("?");
    let kind = e["type"].as_str().unwrap_or("?");
    if kind == "access" {
        let verdict = if e["granted"] == true {
            "granted"
        } else {
            "denied"
        };
        let who = e["credential"].as_str().unwrap_or("(unknown card)");
        format!(
            "[event] #{} access {verdict} {door} {who} reason={} card={}/{}",
            e["seq"],
            e["reason"].as_str().unwrap_or("?"),
            e["bits"],
            e["data"].as_str().unwrap_or("?")
        )
    } else {
        format!("[event] #{} {kind} {door}", e["seq"])
    }
}

/// The reader a simulator event is about.
fn sim_address(e: &SimEvent) -> Option<u8> {
    serde_json::to_value(e)
        .ok()
        .and_then(|v| v["address"].as_u64())
        .and_then(|a| u8::try_from(a).ok())
}

/// A simulator event worth showing, as a line; `None` for routine ones (ID, CAP, clock,
/// state queries).
fn describe_sim(bus: usize, e: &SimEvent) -> Option<String> {
    let who = match sim_address(e) {
        Some(a) => door_at(bus, a).map_or_else(|| format!("{}@{a}", bus_name(bus)), str::to_owned),
        None => bus_name(bus).to_owned(),
    };
    let what = match e {
        SimEvent::Card {
            bits,
            data,
            granted: None,
            ..
        } => format!("card {bits}/{data} read: sent to the hub as osdp_RAW"),
        SimEvent::Card {
            bits,
            data,
            granted: Some(g),
            reason,
            ..
        } => format!(
            "card {bits}/{data} read: decided from its own table: {} ({})",
            if *g { "granted" } else { "denied" },
            match reason {
                Some(0) => "ok",
                Some(1) => "unknown_card",
                Some(2) => "not_yet_valid",
                Some(3) => "expired",
                _ => "?",
            }
        ),
        SimEvent::Out {
            output,
            control,
            timer_100ms,
            ..
        } => format!(
            "got OUT: output {output} control {control} (temporary on) for {:.1} s: strike released",
            f64::from(*timer_100ms) / 10.0
        ),
        SimEvent::Led { temporary, .. } => format!(
            "got LED: {} for {:.1} s",
            match temporary.on_color {
                1 => "red".to_owned(),
                2 => "green".to_owned(),
                c => format!("colour {c}"),
            },
            f64::from(temporary.timer_100ms) / 10.0
        ),
        SimEvent::Buz { tone, count, .. } => {
            format!("got BUZ: tone {tone}, {count} beep(s)")
        }
        SimEvent::FileApplied {
            file_type,
            size,
            version,
            outcome,
            held,
            parts,
            ..
        } => match (held, parts) {
            (Some(h), Some(p)) => format!(
                "file_applied full table (type {file_type:#04x}) v{version} part {h}/{p}: \
                 {size} bytes, {outcome}"
            ),
            _ => format!("file_applied {outcome} (type {file_type:#04x}) v{version}: {size} bytes"),
        },
        SimEvent::FileRefused {
            version,
            code,
            error,
            ..
        } => format!("file refused v{version}: code {code}, {error}"),
        SimEvent::State {
            cause: "applied",
            version,
            count,
            digest,
            ..
        } => format!("table now v{version}: {count} entries, digest {digest}"),
        // The hub sends ABORT before every full table, in case a transfer was cut off; only
        // one that found a partial file is worth a line.
        SimEvent::Abort {
            discarded: true, ..
        } => "ABORT: a partial file was discarded".to_owned(),
        SimEvent::Dropped { wire_bytes, .. } => {
            format!("dropped a {wire_bytes}-byte frame (over its receive buffer)")
        }
        SimEvent::Nak {
            command, reason, ..
        } => format!("NAK to command {command:#04x}, reason {reason}"),
        SimEvent::Wiped { .. } => "table wiped".to_owned(),
        SimEvent::Error { message, .. } => format!("error: {message}"),
        _ => return None,
    };
    Some(format!("[sim {who}] {what}"))
}
