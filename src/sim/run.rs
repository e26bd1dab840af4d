//! [`Reader`]: the task that serves one or several simulated PDs on one byte stream (a serial
//! port, a pty, or an in-memory pipe), answering frames, doing scripted actions, and reporting
//! [`SimEvent`]s.
//!
//! Several devices on one stream are a multi-drop bus: every frame reaches every device, each
//! answers only its own address, and the CP serves them in turn.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span, warn};

use super::{Device, ReaderOptions, Script, SimError, SimEvent};
use crate::osdp::frame::{self, Frame, MARK, MAX_FRAME, SOM};

/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 512;

/// How long the line must be quiet before a partial frame is given up: a CP writes each frame
/// at once, so a frame still incomplete after this is a truncated one, and the frames behind
/// its bogus LEN must not wait for more bytes.
const LINE_IDLE: Duration = Duration::from_millis(100);

/// Bits per byte on the line: start, 8 data, stop.
const BITS_PER_BYTE: u64 = 10;

/// Time to send `bytes` at `baud`.
pub fn wire_time(bytes: usize, baud: u32) -> Duration {
    let bits = (bytes as u64).saturating_mul(BITS_PER_BYTE);
    Duration::from_micros(bits.saturating_mul(1_000_000) / u64::from(baud.max(1)))
}

/// Splits the incoming bytes into frames and remembers how many bytes each took on the wire,
/// the mark byte included, because that is what a libosdp PD counts against its receive buffer.
#[derive(Debug, Default)]
struct Wire {
    buf: Vec<u8>,
}

impl Wire {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Any frame is at most MAX_FRAME bytes plus the mark; older bytes can't be part of one.
        let limit = MAX_FRAME + 1 + bytes.len();
        if self.buf.len() > limit {
            let excess = self.buf.len() - limit;
            self.buf.drain(..excess);
        }
    }

    /// The next valid frame and its length on the wire, or `None` until more bytes arrive.
    fn next_frame(&mut self) -> Option<(Frame, usize)> {
        loop {
            let Some(som) = self.buf.iter().position(|&b| b == SOM) else {
                // Keep a trailing mark: the SOM after it may be in the next read.
                let keep = usize::from(self.buf.last() == Some(&MARK));
                let drop = self.buf.len() - keep;
                self.buf.drain(..drop);
                return None;
            };
            let start = match som.checked_sub(1) {
                Some(before) if self.buf.get(before) == Some(&MARK) => before,
                _ => som,
            };
            self.buf.drain(..start);
            match frame::decode(&self.buf) {
                Ok(Some((f, consumed))) => {
                    self.buf.drain(..consumed.min(self.buf.len()));
                    return Some((f, consumed));
                }
                Ok(None) => return None,
                Err(_) => {
                    // Drop through this SOM and search on: a real frame may start inside what
                    // its LEN claimed.
                    let through = (som - start + 1).min(self.buf.len());
                    self.buf.drain(..through);
                }
            }
        }
    }

    /// The line went quiet with a partial frame held: it will never complete, so its SOM goes.
    fn line_idle(&mut self) {
        if let Some(som) = self.buf.iter().position(|&b| b == SOM) {
            self.buf.drain(..=som);
        } else {
            self.buf.clear();
        }
    }
}

/// The current unix time in seconds (0 if the system clock is before 1970).
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// One or several simulated readers sharing one line.
#[derive(Debug)]
pub struct Reader {
    devices: Vec<Device>,
}

impl Reader {
    /// One reader.
    pub fn new(options: ReaderOptions) -> Reader {
        Reader {
            devices: vec![Device::new(options)],
        }
    }

    /// Several readers on one multi-drop line, each with its own options (distinct addresses).
    pub fn multidrop(options: impl IntoIterator<Item = ReaderOptions>) -> Reader {
        Reader {
            devices: options.into_iter().map(Device::new).collect(),
        }
    }

    /// The simulated devices.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Serves the line until it ends (end of stream, or the pty's other side closed: `Ok`) or
    /// fails. Scripted actions arrive on `script` (its closing is not the end of the run); what
    /// happens is sent on `events` (a dropped receiver only stops the reporting).
    pub async fn run<S>(
        mut self,
        io: S,
        script: mpsc::Receiver<Script>,
        events: mpsc::UnboundedSender<SimEvent>,
    ) -> Result<(), SimError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let addresses: Vec<u8> = self.devices.iter().map(Device::address).collect();
        let span = info_span!("sim", address = ?addresses);
        self.serve(io, script, events).instrument(span).await
    }

    async fn serve<S>(
        &mut self,
        mut io: S,
        mut script: mpsc::Receiver<Script>,
        events: mpsc::UnboundedSender<SimEvent>,
    ) -> Result<(), SimError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut wire = Wire::default();
        let mut script_open = true;
        let mut chunk = [0u8; READ_CHUNK];
        let mut pending: Vec<SimEvent> = Vec::new();
        loop {
            while let Some((frame, wire_len)) = wire.next_frame() {
                self.answer(&mut io, &frame, wire_len, &mut pending).await?;
                flush_events(&mut pending, &events);
            }
            tokio::select! {
                // Scripted actions first, so a card presented before a POLL is seen by it.
                biased;
                s = script.recv(), if script_open => match s {
                    Some(s) => {
                        let now = unix_now();
                        let mut matched = false;
                        for d in &mut self.devices {
                            if s.to.is_none_or(|a| a == d.address()) {
                                matched = true;
                                d.act(&s.action, now, &mut pending);
                            }
                        }
                        if !matched {
                            pending.push(SimEvent::Error {
                                address: s.to,
                                message: "no simulated reader at that address".to_owned(),
                            });
                        }
                        flush_events(&mut pending, &events);
                    }
                    None => script_open = false,
                },
                // `read` is cancel-safe: if the timeout wins, no byte is lost.
                r = tokio::time::timeout(LINE_IDLE, io.read(&mut chunk)) => match r {
                    Err(_) => wire.line_idle(),
                    Ok(Ok(0)) => return Ok(()),
                    Ok(Ok(n)) => wire.push(chunk.get(..n).unwrap_or_default()),
                    // A pty whose other side closed reads as EIO: the line is gone.
                    Ok(Err(e)) if e.raw_os_error() == Some(EIO) => return Ok(()),
                    Ok(Err(e)) => return Err(e.into()),
                },
            }
        }
    }

    /// Hands a frame to every device and writes the replies, paced as the options say.
    async fn answer<S>(
        &mut self,
        io: &mut S,
        frame: &Frame,
        wire_len: usize,
        pending: &mut Vec<SimEvent>,
    ) -> Result<(), SimError>
    where
        S: AsyncWrite + Unpin,
    {
        let now = unix_now();
        for d in &mut self.devices {
            let Some(reply) = d.on_frame(frame, wire_len, now, pending) else {
                continue;
            };
            let bytes = match reply.encode(true) {
                Ok(b) => b,
                Err(e) => {
                    // Only an MFGREP or RAW built from odd input could be too long; report it.
                    warn!(address = d.address(), "reply can't be encoded: {e}");
                    pending.push(SimEvent::Error {
                        address: Some(d.address()),
                        message: format!("reply can't be encoded: {e}"),
                    });
                    continue;
                }
            };
            let opts = d.options();
            // The command's own transmit time (a pty delivers it at once), the processing time,
            // then the reply's transmit time: the CP sees the reply when it would on a real line.
            let mut delay = opts.reply_delay;
            if let Some(baud) = opts.baud {
                delay += wire_time(wire_len, baud) + wire_time(bytes.len(), baud);
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            debug!(
                address = d.address(),
                code = reply.code,
                seq = reply.sequence,
                "reply"
            );
            // One write per frame: a libosdp peer drops a frame that arrives in pieces.
            io.write_all(&bytes).await?;
            io.flush().await?;
        }
        Ok(())
    }
}

/// Linux's EIO, what reading a pty returns once the other side has closed.
const EIO: i32 = 5;

fn flush_events(pending: &mut Vec<SimEvent>, events: &mpsc::UnboundedSender<SimEvent>) {
    for e in pending.drain(..) {
        // A receiver that went away only means nobody is listening any more.
        let _ = events.send(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osdp::message::Command;

    #[test]
    fn wire_counts_the_mark_and_resyncs() {
        let poll = Command::Poll.to_frame(0, 0);
        let with_mark = poll.encode(true).unwrap_or_default();
        let without = poll.encode(false).unwrap_or_default();
        let mut w = Wire::default();
        w.push(&[0x00, 0x53, 0x00, 0xFF]);
        w.push(&with_mark);
        w.push(&without);
        let got: Vec<usize> = std::iter::from_fn(|| w.next_frame().map(|(_, n)| n)).collect();
        assert_eq!(got, vec![with_mark.len(), without.len()]);
        // A truncated frame is dropped once the line is idle.
        w.push(&[0x53, 0x00, 0xE8, 0x03, 0x04]);
        w.push(&with_mark);
        assert!(w.next_frame().is_none());
        w.line_idle();
        assert_eq!(w.next_frame().map(|(_, n)| n), Some(with_mark.len()));
    }

    #[test]
    fn wire_time_is_ten_bits_a_byte() {
        assert_eq!(wire_time(96, 9600), Duration::from_millis(100));
        assert_eq!(wire_time(1, 0), Duration::from_secs(10));
    }
}
