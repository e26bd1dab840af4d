//! The document as a table for a technician's terminal, at most [`WIDTH`] columns for the usual
//! ids and versions (a very long id widens its column rather than being cut).

use std::fmt::Write;
use std::time::SystemTime;

use super::{BusSection, Document, DoorSection, TransferSection};
use crate::reload::Outcome;

/// The width the table is made for: a small laptop's terminal.
const WIDTH: usize = 100;
/// The width of the header's labels.
const LABEL: usize = 10;

/// The document as text, ending with a newline.
pub fn table(doc: &Document) -> String {
    let now = humantime::parse_rfc3339(&doc.hub.at).ok();
    let mut out = String::new();
    header(&mut out, doc, now);
    for bus in &doc.buses {
        out.push('\n');
        bus_block(&mut out, bus, now);
    }
    out.push('\n');
    doors(&mut out, &doc.doors);
    out
}

fn header(out: &mut String, doc: &Document, now: Option<SystemTime>) {
    let hub = &doc.hub;
    line(
        out,
        "Hub",
        &format!(
            "{}, doorhub {}, up {} (started {})",
            hub.id,
            hub.version,
            duration(hub.uptime_s),
            hub.started_at
        ),
    );
    let m = &doc.mqtt;
    let state = if m.connected {
        "connected"
    } else {
        "DISCONNECTED"
    };
    line(
        out,
        "MQTT",
        &format!(
            "{state} {} to {} (client id {})",
            since(&m.since, now),
            m.url,
            m.client_id
        ),
    );
    if let Some(e) = &m.last_error {
        let when = ago(&e.at, now);
        line(out, "", &format!("last error {when}: {}", e.message));
    }
    line(out, "Doors", &door_summary(&doc.doors));
    line(
        out,
        "Outbox",
        &format!(
            "{} events waiting for the broker, {} dropped",
            doc.outbox.events, doc.outbox.dropped
        ),
    );
    line(
        out,
        "Rejected",
        &format!(
            "{} invalid, {} stale snapshot parts",
            doc.rejected.invalid, doc.rejected.stale
        ),
    );
    if let Some(r) = &doc.reload {
        reload(out, r, now);
    }
}

/// The last reload: when, and what changed or why it was refused.
fn reload(out: &mut String, r: &Outcome, now: Option<SystemTime>) {
    let when = ago(&r.at, now);
    if !r.ok {
        line(
            out,
            "Reload",
            &format!("REFUSED {when}; the previous config is running:"),
        );
        for e in &r.errors {
            line(out, "", e);
        }
        return;
    }
    let mut changes = Vec::new();
    if let Some(a) = &r.applied {
        for (what, names) in [
            ("buses added", &a.buses_added),
            ("buses removed", &a.buses_removed),
            ("buses restarted", &a.buses_restarted),
            ("doors added", &a.doors_added),
            ("doors removed", &a.doors_removed),
            ("doors changed", &a.doors_changed),
        ] {
            if !names.is_empty() {
                changes.push(format!("{what}: {}", names.join(", ")));
            }
        }
    }
    if changes.is_empty() {
        changes.push("no bus or door changed".into());
    }
    line(
        out,
        "Reload",
        &format!("applied {when}; {}", changes.join("; ")),
    );
    if !r.needs_restart.is_empty() {
        line(
            out,
            "",
            &format!(
                "changed [{}]: takes effect after `systemctl restart doorhub`",
                r.needs_restart.join("], [")
            ),
        );
    }
}

/// A header line: the label, then the text wrapped under it.
fn line(out: &mut String, label: &str, text: &str) {
    let first = format!("{label:LABEL$}");
    wrap(out, &first, &" ".repeat(LABEL), text);
}

fn door_summary(doors: &[DoorSection]) -> String {
    let configured: Vec<&DoorSection> = doors.iter().filter(|d| d.bus.is_some()).collect();
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for d in &configured {
        match counts.iter_mut().find(|(s, _)| *s == d.status) {
            Some((_, n)) => *n += 1,
            None => counts.push((&d.status, 1)),
        }
    }
    let order = ["in_sync", "pending", "offline", "error"];
    // Known statuses first in their usual order, anything newer after them.
    counts.sort_by_key(|(s, _)| order.iter().position(|o| o == s).unwrap_or(order.len()));
    let mut text = format!("{} configured", configured.len());
    if !counts.is_empty() {
        let list: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let _ = write!(text, ": {}", list.join(", "));
    }
    let unconfigured = doors.len() - configured.len();
    if unconfigured > 0 {
        let _ = write!(text, "; {unconfigured} unconfigured");
    }
    text
}

fn bus_block(out: &mut String, bus: &BusSection, now: Option<SystemTime>) {
    let online = bus.readers.iter().filter(|r| r.online).count();
    let state = if bus.open { "open" } else { "NOT OPEN" };
    wrap(
        out,
        "",
        "    ",
        &format!(
            "Bus {} on {} at {} baud: {state}, {online} of {} readers online",
            bus.name,
            bus.port,
            bus.baud,
            bus.readers.len()
        ),
    );
    let _ = writeln!(
        out,
        "    frames sent {}, received {}; {} CRC errors, {} timeouts",
        bus.tx_frames, bus.rx_frames, bus.crc_errors, bus.timeouts
    );
    if bus.readers.is_empty() {
        out.push_str("    no readers configured\n");
        return;
    }
    let mut t = Table::new(&[
        ("ADDR", true),
        ("DOOR", false),
        ("MODE", false),
        ("READER", false),
    ]);
    for r in &bus.readers {
        let state = if r.online { "online" } else { "offline" };
        let reader = match &r.since {
            Some(s) => format!("{state} {}", since(s, now)),
            None => state.to_owned(),
        };
        t.row(vec![
            r.address.to_string(),
            r.door.clone(),
            r.mode.clone(),
            reader,
        ]);
    }
    for l in t.lines() {
        let _ = writeln!(out, "    {l}");
    }
    for transfer in &bus.transfers {
        wrap(out, "    ", "      ", &transfer_line(transfer));
    }
}

/// `sending lobby (address 1) its table: 3 of 12 files, 18.4 KiB of 57.1 KiB, 880 B/s, 44s left`.
fn transfer_line(t: &TransferSection) -> String {
    let pace = match (t.rate_bytes_per_s, t.eta_s) {
        (Some(rate), Some(eta)) => format!("{}/s, {} left", bytes(rate), duration(eta)),
        _ => "rate not known yet".to_owned(),
    };
    format!(
        "sending {} (address {}) its table: {} of {} files, {} of {}, {pace}",
        t.door,
        t.address,
        t.files_sent,
        t.files_total,
        bytes(t.bytes_sent as u64),
        bytes(t.bytes_total as u64)
    )
}

/// `880 B`, `18.4 KiB`, `2.1 MiB`.
fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    match n {
        0..KIB => format!("{n} B"),
        KIB..1_048_576 => format!("{:.1} KiB", n as f64 / KIB as f64),
        _ => format!("{:.1} MiB", n as f64 / (KIB * KIB) as f64),
    }
}

fn doors(out: &mut String, doors: &[DoorSection]) {
    if doors.is_empty() {
        out.push_str("No doors.\n");
        return;
    }
    let mut t = Table::new(&[
        ("DOOR", false),
        ("BUS", false),
        ("ADDR", true),
        ("STATUS", false),
        ("DESIRED", true),
        ("APPLIED", true),
        ("CREDENTIALS", true),
    ]);
    let dash = || "-".to_owned();
    for d in doors {
        t.row(vec![
            d.id.clone(),
            d.bus.clone().unwrap_or_else(dash),
            d.address.map_or_else(dash, |a| a.to_string()),
            d.status.clone(),
            d.desired.to_string(),
            d.applied.to_string(),
            d.credentials.to_string(),
        ]);
    }
    let mut lines = t.lines().into_iter();
    if let Some(head) = lines.next() {
        let _ = writeln!(out, "{head}");
    }
    for (d, l) in doors.iter().zip(lines) {
        let _ = writeln!(out, "{l}");
        if let Some(e) = &d.error {
            let text = match e.version {
                Some(v) => format!("error (version {v}): {}", e.reason),
                None => format!("error: {}", e.reason),
            };
            wrap(out, "  ! ", "    ", &text);
        }
    }
}

/// Columns sized to their widest cell, two spaces apart.
struct Table {
    /// Each column's heading and whether it is right-aligned (numbers).
    columns: Vec<(&'static str, bool)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The heading line, then one line per row, without trailing spaces.
    fn lines(&self) -> Vec<String> {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .chain([self.columns[i].0.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let heading: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        std::iter::once(&heading)
            .chain(&self.rows)
            .map(|cells| {
                let mut l = String::new();
                for (i, cell) in cells.iter().enumerate() {
                    let (w, right) = (widths[i], self.columns[i].1);
                    if i > 0 {
                        l.push_str("  ");
                    }
                    let _ = if right {
                        write!(l, "{cell:>w$}")
                    } else {
                        write!(l, "{cell:<w$}")
                    };
                }
                l.trim_end().to_owned()
            })
            .collect()
    }
}

/// Writes `text` word by word in lines of at most [`WIDTH`] columns: the first after `first`,
/// the rest after `rest`. A word longer than a line gets a line of its own.
fn wrap(out: &mut String, first: &str, rest: &str, text: &str) {
    let mut current = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        let len = current.chars().count();
        if !empty && len + 1 + word.chars().count() > WIDTH {
            let _ = writeln!(out, "{}", current.trim_end());
            current = rest.to_owned();
            empty = true;
        }
        if !empty {
            current.push(' ');
        }
        current.push_str(word);
        empty = false;
    }
    let _ = writeln!(out, "{}", current.trim_end());
}

/// `for 2h 3m`, or `since TIME` when the times cannot be read.
fn since(at: &str, now: Option<SystemTime>) -> String {
    match elapsed(at, now) {
        Some(s) => format!("for {}", duration(s)),
        None => format!("since {at}"),
    }
}

/// `2h 3m ago`, or `at TIME` when the times cannot be read.
fn ago(at: &str, now: Option<SystemTime>) -> String {
    match elapsed(at, now) {
        Some(s) => format!("{} ago", duration(s)),
        None => format!("at {at}"),
    }
}

fn elapsed(at: &str, now: Option<SystemTime>) -> Option<u64> {
    let at = humantime::parse_rfc3339(at).ok()?;
    // A time a moment after `now` (made in another order) counts as no time at all.
    Some(now?.duration_since(at).map_or(0, |d| d.as_secs()))
}

/// `45s`, `3m 12s`, `2h 3m`, `4d 1h`: the two largest units.
fn duration(s: u64) -> String {
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{m}m {}s", s % 60),
        3600..86_400 => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{
        HubSection, LinkError, MqttSection, OutboxSection, ReaderSection, RejectedSection,
        StoreSection,
    };
    use crate::store::ErrorReport;

    fn door(id: &str, bus: Option<(&str, u8)>, status: &str, v: (u64, u64, usize)) -> DoorSection {
        DoorSection {
            id: id.into(),
            bus: bus.map(|b| b.0.into()),
            address: bus.map(|b| b.1),
            mode: bus.map(|_| "stored".into()),
            status: status.into(),
            desired: v.0,
            applied: v.1,
            credentials: v.2,
            digest: "9f2c51a0be13d4e7".into(),
            error: None,
        }
    }

    fn reader(address: u8, door: &str, online: bool, since: &str) -> ReaderSection {
        ReaderSection {
            address,
            door: door.into(),
            mode: "stored".into(),
            online,
            since: Some(since.into()),
        }
    }

    /// A hub with ids and versions of realistic size: two buses, an error, an unconfigured door.
    fn document() -> Document {
        let mut lobby = door(
            "bldg-12-lobby-north-entrance",
            Some(("rs485-a", 1)),
            "error",
            (1_732_640_000_123, 1_732_639_000_456, 100_000),
        );
        lobby.error = Some(ErrorReport {
            version: Some(1_732_640_000_123),
            reason: "the reader refused the table file: osdp_NAK 0x05 (unsupported command) \
                     after 3 attempts; the door keeps enforcing its previous set"
                .into(),
        });
        Document {
            hub: HubSection {
                id: "bldg-12-hub-1".into(),
                version: "0.1.0".into(),
                started_at: "2026-11-26T16:00:00Z".into(),
                uptime_s: 7385,
                at: "2026-11-26T18:03:05Z".into(),
            },
            mqtt: MqttSection {
                url: "mqtts://iot.example.com:8883".into(),
                client_id: "bldg-12-hub-1".into(),
                connected: false,
                since: "2026-11-26T18:02:00Z".into(),
                last_error: Some(LinkError {
                    at: "2026-11-26T18:03:00Z".into(),
                    message: "I/O: Connection refused (os error 111)".into(),
                }),
            },
            buses: vec![
                BusSection {
                    name: "rs485-a".into(),
                    port: "/dev/ttyUSB0".into(),
                    baud: 9600,
                    open: true,
                    tx_frames: 123_456_789,
                    rx_frames: 123_456_700,
                    crc_errors: 3,
                    timeouts: 86,
                    readers: vec![
                        reader(
                            1,
                            "bldg-12-lobby-north-entrance",
                            true,
                            "2026-11-26T16:00:02Z",
                        ),
                        reader(2, "garage", false, "2026-11-26T18:02:55Z"),
                    ],
                    // 20,000 credentials to a reader at 9600 baud: about 6 minutes.
                    transfers: vec![TransferSection {
                        door: "bldg-12-lobby-north-entrance".into(),
                        address: 1,
                        files_sent: 17,
                        files_total: 72,
                        bytes_sent: 69_632,
                        bytes_total: 294_912,
                        started_at: "2026-11-26T18:01:45Z".into(),
                        rate_bytes_per_s: Some(870),
                        eta_s: Some(259),
                    }],
                },
                BusSection {
                    name: "rs485-b".into(),
                    port: "/dev/ttyUSB1".into(),
                    baud: 115_200,
                    open: false,
                    tx_frames: 0,
                    rx_frames: 0,
                    crc_errors: 0,
                    timeouts: 0,
                    readers: vec![],
                    transfers: vec![],
                },
            ],
            doors: vec![
                lobby,
                door("garage", Some(("rs485-a", 2)), "offline", (7, 7, 12)),
                door("visitor-lot", None, "unconfigured", (17, 0, 0)),
            ],
            outbox: OutboxSection {
                events: 42,
                dropped: 0,
            },
            rejected: RejectedSection {
                invalid: 1,
                stale: 2,
            },
            store: StoreSection { bytes: 1 << 20 },
            reload: None,
        }
    }

    #[test]
    fn the_last_reload_is_shown_applied_or_refused() {
        use crate::buses::Applied;
        let mut doc = document();
        doc.reload = Some(Outcome {
            at: "2026-11-26T18:03:00Z".into(),
            ok: true,
            errors: Vec::new(),
            applied: Some(Applied {
                doors_added: vec!["roof".into()],
                buses_restarted: vec!["rs485-a".into()],
                ..Applied::default()
            }),
            needs_restart: vec!["mqtt".into()],
        });
        let text = table(&doc);
        assert!(
            text.contains("Reload    applied 5s ago; buses restarted: rs485-a; doors added: roof"),
            "{text}"
        );
        assert!(
            text.contains("changed [mqtt]: takes effect after `systemctl restart doorhub`"),
            "{text}"
        );
        doc.reload = Some(Outcome::refused(vec![
            "/etc/doorhub/doorhub.toml:9: bus[0].baud: 9601 is not allowed".into(),
        ]));
        let text = table(&doc);
        assert!(text.contains("REFUSED"), "{text}");
        assert!(text.contains("bus[0].baud: 9601 is not allowed"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
    }

    #[test]
    fn the_table_shows_each_part_and_fits_the_width() {
        let text = table(&document());
        println!("{text}");
        for l in text.lines() {
            assert!(l.chars().count() <= WIDTH, "{} columns: {l}", l.len());
            assert_eq!(l, l.trim_end(), "trailing spaces: {l:?}");
        }
        let has = |needle: &str| {
            assert!(text.contains(needle), "no {needle:?} in\n{text}");
        };
        has("Hub       bldg-12-hub-1, doorhub 0.1.0, up 2h 3m (started 2026-11-26T16:00:00Z)\n");
        has(
            "MQTT      DISCONNECTED for 1m 5s to mqtts://iot.example.com:8883 (client id bldg-12-hub-1)\n",
        );
        has("          last error 5s ago: I/O: Connection refused (os error 111)\n");
        has("Doors     2 configured: 1 offline, 1 error; 1 unconfigured\n");
        has("Outbox    42 events waiting for the broker, 0 dropped\n");
        has("Rejected  1 invalid, 2 stale snapshot parts\n");
        has("Bus rs485-a on /dev/ttyUSB0 at 9600 baud: open, 1 of 2 readers online\n");
        has("    frames sent 123456789, received 123456700; 3 CRC errors, 86 timeouts\n");
        has("       1  bldg-12-lobby-north-entrance  stored  online for 2h 3m\n");
        has("       2  garage                        stored  offline for 10s\n");
        // The transfer under the readers, wrapped; at its rate the rest takes 4m 19s.
        let words: Vec<&str> = text.split_whitespace().collect();
        let flat = words.join(" ");
        assert!(
            flat.contains(
                "offline for 10s sending bldg-12-lobby-north-entrance (address 1) its table: \
                 17 of 72 files, 68.0 KiB of 288.0 KiB, 870 B/s, 4m 19s left Bus rs485-b"
            ),
            "{text}"
        );
        has("Bus rs485-b on /dev/ttyUSB1 at 115200 baud: NOT OPEN, 0 of 0 readers online\n");
        has("    no readers configured\n");
        has("DOOR                          BUS      ADDR  STATUS        ");
        has("garage                        rs485-a     2  offline       ");
        has("visitor-lot                   -           -  unconfigured  ");
        // The error is under its door, wrapped.
        let lobby = text
            .lines()
            .position(|l| l.starts_with("bldg-12-lobby-north-entrance"))
            .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[lobby + 1].starts_with("  ! error (version 1732640000123): the reader refused"),
            "{}",
            lines[lobby + 1]
        );
        assert!(lines[lobby + 2].starts_with("    "), "{}", lines[lobby + 2]);
        assert!(
            lines[lobby + 3].starts_with("garage"),
            "{}",
            lines[lobby + 3]
        );
    }

    #[test]
    fn numbers_are_right_aligned_under_their_heading() {
        let text = table(&document());
        let head = text.lines().find(|l| l.starts_with("DOOR")).unwrap();
        let garage = text.lines().find(|l| l.starts_with("garage")).unwrap();
        for heading in ["ADDR", "DESIRED", "APPLIED", "CREDENTIALS"] {
            let end = head.find(heading).unwrap() + heading.len();
            let cell_end = garage[..end].trim_end().len();
            assert_eq!(cell_end, end, "{heading} in\n{head}\n{garage}");
        }
    }

    #[test]
    fn a_connected_hub_without_doors_or_errors() {
        let mut doc = document();
        doc.mqtt.connected = true;
        doc.mqtt.last_error = None;
        doc.buses.clear();
        doc.doors.clear();
        let text = table(&doc);
        assert!(text.contains("MQTT      connected for 1m 5s to"), "{text}");
        assert!(!text.contains("last error"), "{text}");
        assert!(text.contains("Doors     0 configured\n"), "{text}");
        assert!(text.ends_with("\nNo doors.\n"), "{text}");
    }

    #[test]
    fn unreadable_times_are_shown_as_written() {
        let mut doc = document();
        doc.mqtt.since = "not a time".into();
        assert!(table(&doc).contains("DISCONNECTED since not a time to"));
    }

    #[test]
    fn durations_keep_two_units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(60), "1m 0s");
        assert_eq!(duration(3599), "59m 59s");
        assert_eq!(duration(3600), "1h 0m");
        assert_eq!(duration(86_399), "23h 59m");
        assert_eq!(duration(90_061), "1d 1h");
    }

    #[test]
    fn a_transfer_without_a_rate_yet_says_so() {
        let mut doc = document();
        let t = &mut doc.buses[0].transfers[0];
        (t.bytes_sent, t.rate_bytes_per_s, t.eta_s) = (0, None, None);
        let text = table(&doc);
        let words: Vec<&str> = text.split_whitespace().collect();
        assert!(
            words
                .join(" ")
                .contains("0 B of 288.0 KiB, rate not known yet"),
            "{text}"
        );
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn long_words_get_their_own_line() {
        let mut out = String::new();
        let long = "x".repeat(WIDTH + 5);
        wrap(&mut out, "> ", "  ", &format!("a {long} b"));
        assert_eq!(out, format!("> a\n  {long}\n  b\n"));
    }
}
