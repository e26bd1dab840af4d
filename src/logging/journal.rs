//! The journal layer: each record as one datagram in journald's native protocol
//! (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>).
//!
//! Not tracing-journald: it puts only the event's message in `MESSAGE` and every other field in
//! fields of its own, with no way to change that (tokio-rs/tracing#2051). `journalctl` shows
//! `MESSAGE` alone by default, so `journalctl -u doorhub -f` said "reader offline" without the
//! door. Here `MESSAGE` reads like a stderr line (`reader offline door=lobby address=3
//! bus=rs485-a`), and every field still goes as a journal field of its own (`DOOR`, `BUS`) for
//! `journalctl DOOR=lobby`.

use std::fmt::{self, Write as _};
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::SYSLOG_IDENTIFIER;

/// Where journald listens for its native protocol.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// The largest datagram sent. journald takes bigger records through a memfd passed over the
/// socket, but a log record needs no more than this: longer values are cut instead.
const MAX_DATAGRAM: usize = 60 * 1024;
/// The longest `MESSAGE`, leaving room in the datagram for the fields of their own.
const MAX_MESSAGE: usize = 16 * 1024;
/// The longest value of any other field.
const MAX_VALUE: usize = 2 * 1024;
/// How long a send waits while journald's queue is full before the record is dropped.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);
/// What ends a value that was cut.
const ELLIPSIS: &str = "…";

/// The layer that sends each record to the journal.
pub struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
    /// A send timed out: journald is stuck or far behind, so sends drop records at once until
    /// one gets through, rather than stalling every logging task for [`SEND_TIMEOUT`].
    backed_up: AtomicBool,
}

impl Journal {
    /// A layer sending to the journal at `path`, or why it can't be reached: an empty datagram,
    /// which journald ignores, fails when the socket is missing or nobody listens.
    pub fn connect(path: impl Into<PathBuf>) -> io::Result<Journal> {
        let path = path.into();
        let socket = UnixDatagram::unbound()?;
        // Waits a little for a busy journald (a burst can fill its queue, only 10 datagrams
        // where systemd's sysctl defaults aren't applied) but never blocks the daemon for long.
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        socket.send_to(&[], &path)?;
        Ok(Journal {
            socket,
            path,
            backed_up: AtomicBool::new(false),
        })
    }

    /// Sends one record; a record that can't be sent is dropped, as the log has nowhere else
    /// to go.
    fn send(&self, datagram: &[u8]) {
        match self.socket.send_to(datagram, &self.path) {
            Ok(_) => {
                if self.backed_up.swap(false, Ordering::Relaxed) {
                    let _ = self.socket.set_nonblocking(false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !self.backed_up.swap(true, Ordering::Relaxed) {
                    let _ = self.socket.set_nonblocking(true);
                }
            }
            Err(_) => {}
        }
    }
}

impl<S> Layer<S> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(SpanFields(fields)) = span.extensions_mut().get_mut::<SpanFields>() {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();

        // MESSAGE first, so the datagram's size limit cuts other fields before it.
        let mut message = Bounded::new(MAX_MESSAGE);
        let _ = message.write_str(fields.get("message").unwrap_or_default());
        for (name, value) in fields.own() {
            put_text(&mut message, name, value);
        }
        for span in ctx.event_scope(event).into_iter().flatten() {
            if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                for (name, value) in fields.own() {
                    put_text(&mut message, name, value);
                }
            }
        }
        let mut datagram = Datagram::default();
        datagram.put("MESSAGE", &message.text);
        datagram.put("PRIORITY", priority(*meta.level()));
        datagram.put("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER);
        // Records of the `log` crate (rumqttc, rustls) come through tracing-log, which puts
        // where they come from in `log.*` fields rather than in the metadata.
        datagram.put("TARGET", fields.get("log.target").unwrap_or(meta.target()));
        if let Some(file) = fields.get("log.file").or(meta.file()) {
            datagram.put("CODE_FILE", file);
        }
        if let Some(line) = fields.get("log.line") {
            datagram.put("CODE_LINE", line);
        } else if let Some(line) = meta.line() {
            datagram.put("CODE_LINE", &line.to_string());
        }
        datagram.put_fields(&fields);
        for span in ctx.event_scope(event).into_iter().flatten() {
            datagram.put("SPAN_NAME", span.name());
            if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                datagram.put_fields(fields);
            }
        }
        self.send(&datagram.0);
    }
}

/// A span's fields, kept in its extensions for the events inside it.
struct SpanFields(Fields);

/// Fields by name, their values as text, in the order recorded.
#[derive(Default)]
struct Fields(Vec<(&'static str, String)>);

impl Fields {
    /// The value of field `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The fields other than the message and tracing-log's `log.*`.
    fn own(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.0
            .iter()
            .filter(|(n, _)| *n != "message" && !n.starts_with("log."))
            .map(|(n, v)| (*n, v.as_str()))
    }

    /// Records `value` as field `field`'s, in place of any earlier value (a span's
    /// `record`).
    fn set(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let limit = match field.name() {
            "message" => MAX_MESSAGE,
            _ => MAX_VALUE,
        };
        let mut text = Bounded::new(limit);
        let _ = text.write_fmt(value);
        match self.0.iter_mut().find(|(n, _)| *n == field.name()) {
            Some((_, old)) => *old = text.text,
            None => self.0.push((field.name(), text.text)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, format_args!("{value:?}"));
    }
}

/// Appends ` name=value` to MESSAGE, the value quoted (and escaped) when empty or holding
/// whitespace, so the text stays one line of `key=value` pairs.
fn put_text(message: &mut Bounded, name: &str, value: &str) {
    let separator = if message.text.is_empty() { "" } else { " " };
    let _ = if value.is_empty() || value.contains(char::is_whitespace) {
        write!(message, "{separator}{name}={value:?}")
    } else {
        write!(message, "{separator}{name}={value}")
    };
}

/// journald's priority (syslog's severity) for a level.
fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        _ => "7",
    }
}

/// Text that stops growing at a limit, ending in [`ELLIPSIS`] when cut.
struct Bounded {
    text: String,
    limit: usize,
    cut: bool,
}

impl Bounded {
    /// Empty text that takes up to `limit` bytes.
    fn new(limit: usize) -> Bounded {
        Bounded {
            text: String::new(),
            limit,
            cut: false,
        }
    }
}

impl fmt::Write for Bounded {
    /// Fails once cut, which stops a long `Debug` output early.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Err(fmt::Error);
        }
        if self.text.len() + s.len() <= self.limit {
            self.text.push_str(s);
            return Ok(());
        }
        let keep = self.limit.saturating_sub(ELLIPSIS.len());
        let room = keep.saturating_sub(self.text.len());
        self.text.push_str(&s[..floor_char_boundary(s, room)]);
        self.text.truncate(floor_char_boundary(&self.text, keep));
        self.text.push_str(ELLIPSIS);
        self.cut = true;
        Err(fmt::Error)
    }
}

/// The largest index at most `i` that starts a character of `s` (`str::floor_char_boundary`
/// needs a newer Rust than ours).
fn floor_char_boundary(s: &str, i: usize) -> usize {
    (0..=i.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// One record in journald's native protocol, no bigger than [`MAX_DATAGRAM`].
#[derive(Default)]
struct Datagram(Vec<u8>);

impl Datagram {
    /// Appends field `name` (a valid journal field name): `NAME=value\n`, or, for a value
    /// holding a newline, `NAME\n`, the value's length as a little-endian u64, the value and
    /// `\n`. The value is cut to what room is left; with none, the field is left out.
    fn put(&mut self, name: &str, value: &str) {
        // The binary form's framing: two newlines and the length.
        let room = MAX_DATAGRAM.saturating_sub(self.0.len() + name.len() + 10);
        if room == 0 {
            return;
        }
        let value = &value[..floor_char_boundary(value, room)];
        self.0.extend_from_slice(name.as_bytes());
        if value.contains('\n') {
            self.0.push(b'\n');
            self.0
                .extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            self.0.push(b'=');
        }
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(b'\n');
    }

    /// Appends `fields` other than the message and `log.*`, under their journal names.
    fn put_fields(&mut self, fields: &Fields) {
        for (name, value) in fields.own() {
            if let Some(name) = journal_name(name) {
                self.put(&name, value);
            }
        }
    }
}

/// A field's name as the journal takes it: `.` becomes `_`, letters are uppercased, other
/// characters dropped; no leading `_` (the journal's trusted fields) or digit; at most 64
/// characters. `None` when nothing is left. Names are used as they are, without a prefix: none
/// of ours is named like the journal's own fields (`MESSAGE`, `PRIORITY`, ...).
fn journal_name(name: &str) -> Option<String> {
    let name: String = name
        .chars()
        .map(|c| {
            if c == '.' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .filter(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
        .skip_while(|c| *c == '_' || c.is_ascii_digit())
        .take(64)
        .collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::{info, info_span, warn};
    use tracing_subscriber::layer::SubscriberExt;

    /// A journal socket in a temporary directory and a layer sending there.
    fn journal() -> (tempfile::TempDir, UnixDatagram, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let socket = UnixDatagram::bind(&path).unwrap();
        let layer = Journal::connect(&path).unwrap();
        let mut probe = [0u8; 1];
        assert_eq!(socket.recv(&mut probe).unwrap(), 0);
        (dir, socket, layer)
    }

    /// Runs `log` with `layer` as the subscriber and returns the datagram it sent.
    fn record(socket: &UnixDatagram, layer: Journal, log: impl FnOnce()) -> Vec<u8> {
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        let mut buf = vec![0u8; 128 * 1024];
        let n = socket.recv(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    /// The datagram's `NAME=value` lines (binary-form fields show as their name alone).
    fn lines(datagram: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(datagram)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn message_holds_the_event_fields_then_the_span_fields() {
        let (_dir, socket, layer) = journal();
        let datagram = record(&socket, layer, || {
            let _bus = info_span!("bus", bus = "rs485-a").entered();
            let _poll = info_span!("poll", round = 7).entered();
            warn!(
                door = "lobby",
                address = 3,
                reason = "no reply",
                "reader offline"
            );
        });
        let lines = lines(&datagram);
        for expected in [
            "MESSAGE=reader offline door=lobby address=3 reason=\"no reply\" round=7 bus=rs485-a",
            "PRIORITY=4",
            "SYSLOG_IDENTIFIER=doorhub",
            "TARGET=doorhub::logging::journal::tests",
            "CODE_FILE=src/logging/journal.rs",
            "DOOR=lobby",
            "ADDRESS=3",
            "REASON=no reply",
            "SPAN_NAME=poll",
            "ROUND=7",
            "SPAN_NAME=bus",
            "BUS=rs485-a",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{expected} in {lines:#?}"
            );
        }
        assert!(
            lines.iter().any(|l| l.starts_with("CODE_LINE=")),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_value_with_a_newline_uses_the_binary_form() {
        let mut datagram = Datagram::default();
        datagram.put("MESSAGE", "sync failed:\ntimeout");
        datagram.put("DOOR", "lobby");
        let mut expected = b"MESSAGE\n".to_vec();
        expected.extend_from_slice(&20u64.to_le_bytes());
        expected.extend_from_slice(b"sync failed:\ntimeout\nDOOR=lobby\n");
        assert_eq!(datagram.0, expected);
    }

    #[test]
    fn a_field_with_a_newline_is_quoted_in_message_and_binary_on_its_own() {
        let (_dir, socket, layer) = journal();
        let datagram = record(&socket, layer, || info!(error = "a\nb", "sync failed"));
        let message = "sync failed error=\"a\\nb\"";
        assert!(
            lines(&datagram).contains(&format!("MESSAGE={message}")),
            "{datagram:?}"
        );
        let mut error = b"\nERROR\n".to_vec();
        error.extend_from_slice(&3u64.to_le_bytes());
        error.extend_from_slice(b"a\nb\n");
        assert!(
            datagram.windows(error.len()).any(|w| w == error),
            "{datagram:?}"
        );
    }

    #[test]
    fn huge_values_are_cut() {
        let (_dir, socket, layer) = journal();
        let big = "é".repeat(100_000);
        let datagram = record(&socket, layer, || info!(door = %big, "{big}"));
        let lines = lines(&datagram);
        let message = lines.iter().find(|l| l.starts_with("MESSAGE=")).unwrap();
        assert!(
            message.len() <= "MESSAGE=".len() + MAX_MESSAGE,
            "{}",
            message.len()
        );
        assert!(message.ends_with(ELLIPSIS), "{message}");
        let door = lines.iter().find(|l| l.starts_with("DOOR=")).unwrap();
        // Whole characters only: 1022 two-byte ones, then the three-byte ellipsis.
        assert_eq!(door.len(), "DOOR=".len() + MAX_VALUE - 1);
        assert!(door.ends_with(ELLIPSIS), "{door}");
        assert!(lines.contains(&"PRIORITY=6".to_owned()), "{lines:#?}");
    }

    #[test]
    fn the_datagram_stops_at_its_limit() {
        let mut datagram = Datagram::default();
        let value = "x".repeat(MAX_VALUE);
        for _ in 0..100 {
            datagram.put("FIELD", &value);
        }
        assert!(datagram.0.len() <= MAX_DATAGRAM, "{}", datagram.0.len());
        assert!(
            datagram.0.len() > MAX_DATAGRAM - MAX_VALUE,
            "{}",
            datagram.0.len()
        );
        assert!(datagram.0.ends_with(b"\n"));
    }

    #[test]
    fn field_names_follow_the_journal_rules() {
        assert_eq!(journal_name("door").as_deref(), Some("DOOR"));
        assert_eq!(journal_name("rx_buffer").as_deref(), Some("RX_BUFFER"));
        assert_eq!(journal_name("peer.addr").as_deref(), Some("PEER_ADDR"));
        assert_eq!(journal_name("_pid").as_deref(), Some("PID"));
        assert_eq!(journal_name("2fa-code").as_deref(), Some("FACODE"));
        assert_eq!(journal_name("ü").as_deref(), None);
        assert_eq!(journal_name(&"x".repeat(100)).map(|n| n.len()), Some(64));
    }

    #[test]
    fn an_absent_journal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Journal::connect(dir.path().join("socket")).is_err());
    }
}
