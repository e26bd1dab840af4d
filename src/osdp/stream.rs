//! Reading frames from a byte stream, resynchronising after noise, and writing frames whole.
//!
//! The reader skips bytes until SOM (0x53); a SOM whose LEN is out of range, or whose frame fails
//! its CRC, checksum or structure checks, is dropped on its own and the search goes on from the
//! next byte, so a real frame that noise (or a truncated frame) hid is still found. Its buffer
//! never holds more than [`MAX_FRAME`] bytes plus what one read adds, whatever the input.

use super::frame::{self, Frame, FrameError, MARK, MAX_FRAME, SOM};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes asked of the stream per read by [`FrameReader::read_frame`].
const READ_CHUNK: usize = 256;

/// What a [`FrameReader`] has seen, for health reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Frames returned.
    pub frames_ok: u64,
    /// Candidate frames dropped for a bad CRC-16 or checksum.
    pub crc_errors: u64,
    /// Candidate frames dropped for another reason (bad LEN, bad security block).
    pub bad_frames: u64,
    /// Bytes discarded outside returned frames, mark/idle bytes (0xFF) not counted: an idle
    /// RS-485 line with fail-safe bias reads as 0xFF, and that is not noise.
    pub bytes_skipped: u64,
}

/// Accumulates bytes and yields the frames in them. Cancel-safe: everything read is kept in the
/// struct, so a [`FrameReader::read_frame`] future dropped at its await point loses nothing.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Bytes not yet returned as a frame or discarded. After [`FrameReader::next_frame`] returns
    /// `None` this is empty or an incomplete frame starting at SOM (so under MAX_FRAME bytes).
    buf: Vec<u8>,
    stats: ReaderStats,
    /// Whether frames with the 8-bit checksum are accepted (see [`FrameReader::crc_only`]).
    reject_checksum: bool,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader that drops frames checked by the 8-bit checksum rather than CRC-16. The hub
    /// sends CRC-16 and a PD answers in kind (a libosdp PD always uses CRC-16), so on the hub's
    /// bus a checksum frame is noise; and a checksum passes one random byte run in 256, which
    /// after every resynchronisation would let noise through as a frame far too often.
    pub fn crc_only() -> Self {
        Self {
            reject_checksum: true,
            ..Self::default()
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// Bytes held, waiting to complete a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Adds bytes from the line. Drain with [`FrameReader::next_frame`] after each push: to keep
    /// the buffer bounded, a push keeps at most [`MAX_FRAME`] older bytes (any frame is at most
    /// that long) and discards the rest, counted as skipped.
    pub fn push(&mut self, bytes: &[u8]) {
        let limit = MAX_FRAME + bytes.len();
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > limit {
            let excess = self.buf.len() - limit;
            self.discard(excess);
        }
    }

    /// The next complete, valid frame in the buffer, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            // Noise (and marks) before the next SOM go.
            match self.buf.iter().position(|&b| b == SOM) {
                Some(0) => {}
                Some(start) => self.discard(start),
                None => {
                    self.discard(self.buf.len());
                    return None;
                }
            }
            match frame::decode(&self.buf) {
                Ok(Some((frame, _))) if self.reject_checksum && !frame.use_crc => {
                    self.stats.bad_frames += 1;
                    self.discard(1);
                }
                Ok(Some((frame, consumed))) => {
                    self.buf.drain(..consumed.min(self.buf.len()));
                    self.stats.frames_ok += 1;
                    return Some(frame);
                }
                Ok(None) => return None,
                Err(err) => {
                    match err {
                        FrameError::BadCrc { .. } | FrameError::BadChecksum { .. } => {
                            self.stats.crc_errors += 1;
                        }
                        _ => self.stats.bad_frames += 1,
                    }
                    // Only the SOM goes: its LEN may have been noise, and a real frame may
                    // start inside what it claimed.
                    self.discard(1);
                }
            }
        }
    }

    /// The line has gone quiet (the caller's reply or inter-frame timeout): a partial frame
    /// held now will never complete, so its SOM is dropped and the bytes after it are searched
    /// again. Returns whether anything was dropped; call [`FrameReader::next_frame`] after.
    /// Without this, a truncated frame (or a SOM in noise) whose LEN exceeds what follows would
    /// hold the frames after it until enough further bytes arrive.
    pub fn line_idle(&mut self) -> bool {
        if self.buf.is_empty() {
            return false;
        }
        self.stats.bad_frames += 1;
        self.discard(1);
        true
    }

    /// Drops everything buffered (e.g. after the bus task lost track of the line), counted as
    /// skipped.
    pub fn clear(&mut self) {
        self.discard(self.buf.len());
    }

    /// Drops the first `n` bytes of the buffer, counting the ones that are not marks.
    fn discard(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        let skipped = self.buf.iter().take(n).filter(|&&b| b != MARK).count();
        self.stats.bytes_skipped += skipped as u64;
        self.buf.drain(..n);
    }

    /// Reads from `r` until a frame is complete. `Ok(None)` at end of stream, once nothing
    /// buffered can make a frame any more. Cancel-safe: bytes read are kept in `self` before the
    /// next await.
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.next_frame() {
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let n = r.read(&mut chunk).await?;
            if n == 0 {
                // End of stream: a partial frame never completes; look past it.
                loop {
                    if let Some(frame) = self.next_frame() {
                        return Ok(Some(frame));
                    }
                    if !self.line_idle() {
                        return Ok(None);
                    }
                }
            }
            self.push(chunk.get(..n).unwrap_or_default());
        }
    }
}

/// Writes `frame` (after the mark byte when `mark`) with a single `write_all`, then flushes: a
/// libosdp PD drops a frame that reaches it in pieces. A frame that can't be encoded is an
/// `InvalidInput` error and nothing is written.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
    mark: bool,
) -> io::Result<()> {
    let bytes = frame
        .encode(mark)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    w.write_all(&bytes).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: [u8; 9] = [0xFF, 0x53, 0x00, 0x08, 0x00, 0x04, 0x60, 0xEB, 0xAA];
    const ACK: [u8; 8] = [0x53, 0x80, 0x08, 0x00, 0x04, 0x40, 0x59, 0xAC];

    #[test]
    fn frames_between_noise() {
        let mut r = FrameReader::new();
        r.push(&[0x00, 0x12, 0xFF]);
        r.push(&POLL);
        r.push(&[0x53, 0x00]); // a SOM with a truncated header
        assert_eq!(r.next_frame().map(|f| f.code), Some(0x60));
        assert_eq!(r.next_frame(), None);
        r.push(&[0x99, 0x99, 0x04]); // ...whose LEN turns out to be bad
        r.push(&ACK);
        assert_eq!(r.next_frame().map(|f| f.code), Some(0x40));
        assert_eq!(r.next_frame(), None);
        let stats = r.stats();
        assert_eq!(stats.frames_ok, 2);
        assert_eq!(stats.bad_frames, 1);
        // 0x00, 0x12 before; 0x53 0x00 0x99 0x99 0x04 of the bad header.
        assert_eq!(stats.bytes_skipped, 7);
    }

    #[test]
    fn byte_at_a_time() {
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for &b in POLL.iter().chain(ACK.iter()).chain(POLL.iter()) {
            r.push(&[b]);
            while let Some(f) = r.next_frame() {
                got.push(f.code);
            }
        }
        assert_eq!(got, [0x60, 0x40, 0x60]);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn crc_error_resyncs_inside_the_bad_frame() {
        // A frame whose CRC is bad, with a valid frame in its claimed span.
        let mut bad = vec![0x53, 0x00, 0x10, 0x00, 0x04];
        bad.extend_from_slice(&ACK);
        bad.extend_from_slice(&[0, 0, 0]);
        let mut r = FrameReader::new();
        r.push(&bad);
        assert_eq!(r.next_frame().map(|f| f.code), Some(0x40));
        assert_eq!(r.stats().crc_errors, 1);
    }

    #[test]
    fn idle_releases_frames_behind_a_long_partial() {
        // A truncated frame claiming 1000 bytes, then a valid ACK.
        let mut r = FrameReader::new();
        r.push(&[0x53, 0x00, 0xE8, 0x03, 0x04, 0x01]);
        r.push(&ACK);
        assert_eq!(r.next_frame(), None);
        assert!(r.line_idle());
        assert_eq!(r.next_frame().map(|f| f.code), Some(0x40));
        assert!(!r.line_idle());
    }

    #[test]
    fn garbage_does_not_grow_the_buffer() {
        let mut r = FrameReader::new();
        // A SOM with a plausible long LEN, then noise with no SOM: it waits, bounded.
        r.push(&[0x53, 0x00, 0xA0, 0x05, 0x04]);
        for _ in 0..100 {
            r.push(&[0x11; 97]);
            assert_eq!(r.next_frame(), None);
            assert!(r.pending() <= MAX_FRAME + 97);
        }
        // Pushing without draining is bounded too.
        let mut r = FrameReader::new();
        for _ in 0..100 {
            r.push(&[0x53; 50]);
            assert!(r.pending() <= MAX_FRAME + 50);
        }
    }

    #[test]
    fn crc_only_drops_checksum_frames() {
        // POLL seq 0 to address 0 with the checksum: 53 00 07 00 00 60 46.
        let sum = [0x53, 0x00, 0x07, 0x00, 0x00, 0x60, 0x46];
        let mut r = FrameReader::new();
        r.push(&sum);
        assert_eq!(r.next_frame().map(|f| f.use_crc), Some(false));
        let mut r = FrameReader::crc_only();
        r.push(&sum);
        r.push(&ACK);
        assert_eq!(r.next_frame().map(|f| f.code), Some(0x40));
        assert_eq!(r.stats().bad_frames, 1);
    }

    #[tokio::test]
    async fn async_read_and_write() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let frame = match frame::decode(&POLL) {
            Ok(Some((f, _))) => f,
            other => panic!("{other:?}"),
        };
        let sent = frame.clone();
        let writer = tokio::spawn(async move {
            for _ in 0..3 {
                write_frame(&mut a, &sent, true).await?;
            }
            // Dropping `a` ends the stream.
            io::Result::Ok(())
        });
        let mut r = FrameReader::new();
        for _ in 0..3 {
            assert_eq!(
                r.read_frame(&mut b).await.ok().flatten(),
                Some(frame.clone())
            );
        }
        assert_eq!(r.read_frame(&mut b).await.ok(), Some(None));
        assert!(matches!(writer.await, Ok(Ok(()))));
    }

    #[tokio::test]
    async fn eof_releases_frames_behind_a_partial() {
        let mut bytes = vec![0x53, 0x00, 0xE8, 0x03, 0x04, 0x01];
        bytes.extend_from_slice(&ACK);
        let mut input: &[u8] = &bytes;
        let mut r = FrameReader::new();
        assert_eq!(
            r.read_frame(&mut input)
                .await
                .ok()
                .flatten()
                .map(|f| f.code),
            Some(0x40)
        );
        assert_eq!(r.read_frame(&mut input).await.ok(), Some(None));
    }

    #[tokio::test]
    async fn write_frame_refuses_a_bad_frame() {
        let mut out = Vec::new();
        let frame = Frame::plain(0x80, false, 0, 0x60, vec![]);
        let err = write_frame(&mut out, &frame, true).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
        assert!(out.is_empty());
    }
}
