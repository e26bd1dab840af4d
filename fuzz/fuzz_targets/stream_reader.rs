//! The stream reader (`osdp::stream::FrameReader`) on any bytes in any chunks. Input: a flags
//! byte (bit 0: CRC-16 only, as on the hub's bus), a byte seeding the chunk sizes, then the line's
//! bytes.
//!
//! - `read_frame` over an in-memory `AsyncRead` that hands out the chunks finds exactly the
//!   frames, with the same counters, as one push of the whole input: chunking changes nothing.
//! - Pushing with idle gaps, or without draining, keeps the buffer within its bound.
//! - Every frame returned re-encodes and decodes to itself.
#![no_main]

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use doorhub::osdp::frame::{self, Frame, MAX_FRAME};
use doorhub::osdp::stream::FrameReader;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// Chunk sizes 1..=300 (a read returns at most 256), from a small xorshift.
struct Chunks(u32);

impl Chunks {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        1 + (self.0 % 300) as usize
    }
}

/// The line as an `AsyncRead` that is always ready and returns one chunk per read.
struct Line<'a> {
    bytes: &'a [u8],
    chunks: Chunks,
}

impl AsyncRead for Line<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .chunks
            .next()
            .min(buf.remaining())
            .min(self.bytes.len());
        let (head, tail) = self.bytes.split_at(n);
        buf.put_slice(head);
        self.bytes = tail;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that never waits (the line is always ready) to completion.
fn run<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fn reader(crc_only: bool) -> FrameReader {
    if crc_only {
        FrameReader::crc_only()
    } else {
        FrameReader::new()
    }
}

fn check(frame: &Frame, crc_only: bool) {
    assert!(!crc_only || frame.use_crc);
    let bytes = frame.encode(false).expect("a frame read encodes");
    assert_eq!(
        frame::decode(&bytes),
        Ok(Some((frame.clone(), bytes.len())))
    );
}

fuzz_target!(|data: &[u8]| {
    let [flags, seed, line @ ..] = data else {
        return;
    };
    let crc_only = flags & 1 != 0;
    let seed = u32::from(*seed) << 8 | u32::from(*flags) | 1;

    // Over an AsyncRead, in chunks, until the end of the stream.
    let mut chunked = reader(crc_only);
    let mut input = Line {
        bytes: line,
        chunks: Chunks(seed),
    };
    let mut got = Vec::new();
    while let Some(frame) = run(chunked.read_frame(&mut input)).expect("an in-memory read") {
        check(&frame, crc_only);
        got.push(frame);
        assert!(
            got.len() <= line.len() / 7,
            "more frames than the bytes hold"
        );
    }
    assert_eq!(chunked.pending(), 0);

    // The whole input at once, then the line going idle until nothing is held.
    let mut whole = reader(crc_only);
    whole.push(line);
    let mut want = Vec::new();
    loop {
        while let Some(frame) = whole.next_frame() {
            want.push(frame);
        }
        if !whole.line_idle() {
            break;
        }
    }
    assert_eq!(got, want);
    assert_eq!(chunked.stats(), whole.stats());
    assert_eq!(whole.stats().frames_ok, want.len() as u64);

    // Idle gaps between some chunks, and chunks pushed without draining.
    let mut gaps = reader(crc_only);
    let mut chunks = Chunks(seed.rotate_left(16) | 1);
    let mut rest = line;
    while !rest.is_empty() {
        let n = chunks.next().min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        gaps.push(chunk);
        assert!(gaps.pending() <= MAX_FRAME + n);
        match n % 4 {
            0 => continue,
            1 => {
                gaps.line_idle();
            }
            _ => {}
        }
        while let Some(frame) = gaps.next_frame() {
            check(&frame, crc_only);
        }
        assert!(gaps.pending() < MAX_FRAME);
    }
});
