//! The sync of one `stored` door (`reader-link.md`, "Sync of one door"): QUERY the reader's
//! state; if it already holds the target, it is applied; otherwise send a delta (when the reader
//! holds what the hub last confirmed and the change fits one file) or the full table in parts,
//! each file as FILETRANSFER fragments sized to the reader's receive buffer, then QUERY again.
//! Only a reader that reports the target version and digest is applied.
//!
//! The job is a state machine: [`SyncJob::next`] says what to send, the `on_*` methods take what
//! came back. It does no I/O, so every rule is testable without a line.

use std::time::Duration;

use tokio::time::Instant;

use crate::credset::SetView;
use crate::osdp::message::{Command, FileTransfer};
use crate::push::file::{DELTA, FULL_TABLE, delta_file, full_table_files};
use crate::snapshot::SetDigest;
use crate::store::SetState;
use crate::sync::Target;

/// How long the reader has to send its STATE after a QUERY was acknowledged.
const STATE_WAIT: Duration = Duration::from_secs(2);
/// Bytes of a FILETRANSFER frame on the wire besides the fragment: the mark byte, the header
/// (SOM, address, LEN, CTRL), the command code, the 11-byte transfer header and the CRC.
pub const FRAGMENT_OVERHEAD: usize = 1 + 5 + 1 + 11 + 2;
/// Fragments go out in a row only while the reader still gets a POLL at least this often.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// What the sync wants sent next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// osdp_MFG QUERY.
    Query,
    /// A POLL (the STATE comes as the reply to one).
    Poll,
    /// osdp_ABORT.
    Abort,
    /// One FILETRANSFER fragment.
    Fragment(Command),
}

/// How the reader's state compares with what the hub wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Keep going.
    Continue,
    /// The reader reported the target: it is applied.
    Applied(SetState),
    /// The reader holds neither the target nor what the hub last confirmed.
    Lost,
    /// The attempt failed; why.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Query { last: bool },
    AwaitState { last: bool, until: Instant },
    Abort,
    Transfer,
}

/// One sync of one door towards one target.
#[derive(Debug, Clone)]
pub struct SyncJob {
    /// What the door must reach.
    pub target: Target,
    /// The target's set, as the store holds it.
    pub blob: sled::IVec,
    /// Whether the change takes a card away (such syncs go first).
    pub revokes: bool,
    step: Step,
    /// Whether only a full table may be sent (after a failure).
    full: bool,
    files: Vec<(u8, Vec<u8>)>,
    file: usize,
    offset: usize,
    /// Fragments lost in a row.
    lost: u32,
    /// When the first fragment of the planned files went out.
    started: Option<Instant>,
}

/// How far a transfer of files to a stored door has got (`doorhub status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Files the reader has taken whole.
    pub files_sent: usize,
    /// Files planned.
    pub files_total: usize,
    /// Bytes the reader has taken, counting a file resent after a lost fragment from its start.
    pub bytes_sent: usize,
    /// Bytes of every planned file.
    pub bytes_total: usize,
    /// When the first fragment went out.
    pub started: Instant,
}

/// What the job needs to know of its reader and bus.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    /// The reader's receive buffer (PDCAP 0x0A; 128 until known).
    pub rx_buffer: usize,
    /// `bus.max_file_bytes`.
    pub max_file_bytes: usize,
    /// Whether the reader is known to hold no half-received file.
    pub idle: bool,
    /// Whether commands go over the Secure Channel (more bytes per frame).
    pub secure: bool,
}

impl Line {
    /// The largest fragment whose FILETRANSFER frame fits the reader's receive buffer, every
    /// byte on the wire counted. In the clear: the mark byte, the header, the code, the 11-byte
    /// transfer header and the CRC. Over the Secure Channel: also the 2-byte security block and
    /// the MAC, with the transfer header and fragment encrypted and padded (at least one byte)
    /// to whole 16-byte blocks.
    pub fn fragment_room(&self) -> usize {
        if self.secure {
            let encrypted = self.rx_buffer.saturating_sub(1 + 5 + 2 + 1 + 4 + 2) / 16 * 16;
            encrypted.saturating_sub(11 + 1).max(1)
        } else {
            self.rx_buffer.saturating_sub(FRAGMENT_OVERHEAD).max(1)
        }
    }
}

impl SyncJob {
    /// A job towards `target`, whose set is `blob`; `full` forbids a delta.
    pub fn new(target: Target, blob: sled::IVec, full: bool) -> SyncJob {
        SyncJob {
            target,
            blob,
            revokes: false,
            step: Step::Query { last: false },
            full,
            files: Vec::new(),
            file: 0,
            offset: 0,
            lost: 0,
            started: None,
        }
    }

    /// Starts with the delta at once, without the first QUERY, when the hub has confirmed the
    /// reader holding `confirmed` since it last came online: the delta names the version it
    /// applies to, and the reader refuses it (ERROR 2) if it holds anything else, so nothing is
    /// risked, and a revocation saves a round trip and 66 bytes. Returns whether it did.
    pub fn skip_query(
        &mut self,
        confirmed: SetState,
        confirmed_blob: &sled::IVec,
        line: &Line,
    ) -> bool {
        if self.full || self.step != (Step::Query { last: false }) {
            return false;
        }
        match self.plan(Some((confirmed, confirmed_blob)), line) {
            Ok(files) if files.first().is_some_and(|(t, _)| *t == DELTA) => {
                self.files = files;
                self.step = if line.idle {
                    Step::Transfer
                } else {
                    Step::Abort
                };
                true
            }
            _ => false,
        }
    }

    /// Whether a file transfer is under way (fragments must be interleaved with POLLs).
    pub fn transferring(&self) -> bool {
        self.step == Step::Transfer
    }

    /// What to send next, or the failure once the STATE wait has expired.
    pub fn next(&mut self, line: &Line, now: Instant) -> Result<Want, Outcome> {
        match &self.step {
            Step::Query { .. } => Ok(Want::Query),
            Step::AwaitState { until, .. } if now >= *until => Err(Outcome::Failed(
                "the reader did not report its state after a QUERY".to_owned(),
            )),
            Step::AwaitState { .. } => Ok(Want::Poll),
            Step::Abort => Ok(Want::Abort),
            Step::Transfer => {
                self.started.get_or_insert(now);
                let (file_type, file) = &self.files[self.file];
                let room = line.fragment_room();
                let end = (self.offset + room).min(file.len());
                Ok(Want::Fragment(Command::FileTransfer(FileTransfer {
                    file_type: *file_type,
                    total_size: file.len() as u32,
                    offset: self.offset as u32,
                    data: file[self.offset..end].to_vec(),
                })))
            }
        }
    }

    /// The QUERY was acknowledged: the STATE follows at a POLL.
    pub fn on_query_ack(&mut self, now: Instant) {
        if let Step::Query { last } = self.step {
            self.step = Step::AwaitState {
                last,
                until: now + STATE_WAIT,
            };
        }
    }

    /// The reader reported its state. `confirmed` is what the hub last confirmed it holding,
    /// with that set's blob.
    pub fn on_state(
        &mut self,
        reported: SetState,
        confirmed: Option<(SetState, &sled::IVec)>,
        line: &Line,
    ) -> Outcome {
        let Step::AwaitState { last, .. } = self.step else {
            return Outcome::Continue;
        };
        let target = SetState {
            version: self.target.version,
            count: self.target.count,
            digest: self.target.digest,
        };
        if reported.version == target.version && reported.digest == target.digest {
            return Outcome::Applied(reported);
        }
        if last {
            return Outcome::Failed(format!(
                "after the transfer the reader reports version {} digest {}, not version {} \
                 digest {}",
                reported.version, reported.digest, target.version, target.digest
            ));
        }
        let holds_confirmed = confirmed
            .as_ref()
            .is_some_and(|(c, _)| c.version == reported.version && c.digest == reported.digest);
        match self.plan(if holds_confirmed { confirmed } else { None }, line) {
            Ok(files) => {
                self.files = files;
                self.file = 0;
                self.offset = 0;
                self.started = None;
                self.step = if line.idle {
                    Step::Transfer
                } else {
                    Step::Abort
                };
                if confirmed.is_some() && !holds_confirmed {
                    Outcome::Lost
                } else {
                    Outcome::Continue
                }
            }
            Err(e) => Outcome::Failed(e),
        }
    }

    fn plan(
        &self,
        confirmed: Option<(SetState, &sled::IVec)>,
        line: &Line,
    ) -> Result<Vec<(u8, Vec<u8>)>, String> {
        let to = SetView::new(&self.blob)
            .and_then(|v| v.to_vec())
            .map_err(|e| e.to_string())?;
        if let (Some((from_state, from_blob)), false) = (confirmed, self.full) {
            let from = SetView::new(from_blob)
                .and_then(|v| v.to_vec())
                .map_err(|e| e.to_string())?;
            if let Some(file) = delta_file(
                from_state.version,
                self.target.version,
                &from,
                &to,
                line.max_file_bytes,
            ) {
                return Ok(vec![(DELTA, file)]);
            }
        }
        // Files of whole fragments: a short last fragment per file costs a round trip.
        let room = line.fragment_room();
        let file_bytes = if room < line.max_file_bytes {
            line.max_file_bytes / room * room
        } else {
            line.max_file_bytes
        };
        let parts = full_table_files(self.target.version, &to, file_bytes)
            .map_err(|e| format!("cannot build the table: {e}"))?;
        Ok(parts.into_iter().map(|p| (FULL_TABLE, p)).collect())
    }

    /// An ACK that answers an ABORT: the reader holds no half file. False if no ABORT was
    /// waiting for it.
    pub fn on_abort_ack(&mut self) -> bool {
        if self.step == Step::Abort {
            self.step = Step::Transfer;
            true
        } else {
            false
        }
    }

    /// A fragment arrived (FTSTAT with a status of 0 or more): move on.
    pub fn on_fragment_ok(&mut self, line: &Line) {
        if self.step != Step::Transfer {
            return;
        }
        self.lost = 0;
        let room = line.fragment_room();
        let len = self.files[self.file].1.len();
        self.offset = (self.offset + room).min(len);
        if self.offset >= len {
            self.file += 1;
            self.offset = 0;
            if self.file >= self.files.len() {
                self.step = Step::Query { last: true };
            }
        }
    }

    /// A fragment timed out: never resent with the same sequence; ABORT, then the file again
    /// from its start.
    pub fn on_fragment_lost(&mut self) {
        if self.step == Step::Transfer {
            self.lost += 1;
            self.offset = 0;
            self.step = Step::Abort;
        }
    }

    /// Fragments lost in a row.
    pub fn lost_fragments(&self) -> u32 {
        self.lost
    }

    /// The transfer's progress, from its first fragment until the last file is sent.
    pub fn progress(&self) -> Option<Progress> {
        let started = self.started?;
        (self.file < self.files.len()).then(|| Progress {
            files_sent: self.file,
            files_total: self.files.len(),
            bytes_sent: self.files[..self.file]
                .iter()
                .map(|(_, f)| f.len())
                .sum::<usize>()
                + self.offset,
            bytes_total: self.planned_bytes(),
            started,
        })
    }

    /// Bytes of the files planned so far (for the benchmarks and the logs).
    pub fn planned_bytes(&self) -> usize {
        self.files.iter().map(|(_, f)| f.len()).sum()
    }

    /// The kind of transfer planned: a delta or a full table.
    pub fn is_delta(&self) -> bool {
        self.files.first().is_some_and(|(t, _)| *t == DELTA)
    }
}

/// The digest and version a STATE reports, as a [`SetState`].
pub fn state_of(version: u64, count: u32, digest: SetDigest) -> SetState {
    SetState {
        version,
        count: count as usize,
        digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Credential;

    fn creds(n: usize, skip: Option<usize>) -> Vec<Credential> {
        (0..n)
            .filter(|i| Some(*i) != skip)
            .map(|i| Credential {
                id: format!("c{i}"),
                bits: 26,
                data: ((i as u32 + 1) << 6).to_be_bytes().to_vec(),
                not_before: 0,
                not_after: 0,
            })
            .collect()
    }

    fn target_of(version: u64, set: &[Credential]) -> (Target, sled::IVec) {
        (
            Target {
                version,
                count: set.len(),
                digest: SetDigest::of(set),
            },
            crate::credset::encode(version, set).unwrap().into(),
        )
    }

    const LINE: Line = Line {
        rx_buffer: 256,
        max_file_bytes: 4096,
        idle: false,
        secure: false,
    };

    #[test]
    fn a_reader_holding_the_target_is_applied_at_once() {
        let set = creds(10, None);
        let (target, blob) = target_of(5, &set);
        let mut job = SyncJob::new(target, blob, false);
        let now = Instant::now();
        assert_eq!(job.next(&LINE, now), Ok(Want::Query));
        job.on_query_ack(now);
        assert_eq!(job.next(&LINE, now), Ok(Want::Poll));
        let state = state_of(5, 10, SetDigest::of(&set));
        assert_eq!(job.on_state(state, None, &LINE), Outcome::Applied(state));
    }

    #[test]
    fn a_revocation_goes_as_one_small_delta_after_an_abort() {
        let old = creds(10_000, None);
        let new = creds(10_000, Some(77));
        let (target, blob) = target_of(2, &new);
        let (_, old_blob) = target_of(1, &old);
        let confirmed = state_of(1, 10_000, SetDigest::of(&old));
        let mut job = SyncJob::new(target, blob, false);
        let now = Instant::now();
        job.next(&LINE, now).unwrap();
        job.on_query_ack(now);
        let outcome = job.on_state(confirmed, Some((confirmed, &old_blob)), &LINE);
        assert_eq!(outcome, Outcome::Continue);
        assert!(job.is_delta());
        assert_eq!(job.planned_bytes(), 41);
        assert_eq!(job.next(&LINE, now), Ok(Want::Abort));
        job.on_abort_ack();
        let Ok(Want::Fragment(Command::FileTransfer(ft))) = job.next(&LINE, now) else {
            panic!("a fragment");
        };
        assert_eq!(
            (ft.file_type, ft.total_size, ft.data.len()),
            (DELTA, 41, 41)
        );
        job.on_fragment_ok(&LINE);
        assert_eq!(job.next(&LINE, now), Ok(Want::Query));
        job.on_query_ack(now);
        let wrong = state_of(1, 10_000, SetDigest::of(&old));
        assert!(matches!(
            job.on_state(wrong, Some((confirmed, &old_blob)), &LINE),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn a_wiped_reader_gets_the_full_table_in_fragments_that_fit_its_buffer() {
        let set = creds(3000, None);
        let (target, blob) = target_of(9, &set);
        let (_, old_blob) = target_of(8, &set[..10]);
        let confirmed = state_of(8, 10, SetDigest::of(&set[..10]));
        let mut job = SyncJob::new(target, blob, false);
        let now = Instant::now();
        job.next(&LINE, now).unwrap();
        job.on_query_ack(now);
        let wiped = state_of(0, 0, SetDigest::default());
        let line = Line { idle: true, ..LINE };
        assert_eq!(
            job.on_state(wiped, Some((confirmed, &old_blob)), &line),
            Outcome::Lost
        );
        assert!(!job.is_delta());
        assert_eq!(job.progress(), None, "nothing sent yet");
        let total = job.planned_bytes();
        let mut fragments = 0;
        let mut last_sent = 0;
        while let Ok(Want::Fragment(cmd)) = job.next(&line, now) {
            let p = job.progress().expect("a transfer under way");
            assert_eq!((p.bytes_total, p.started), (total, now));
            assert!(p.files_sent < p.files_total && p.bytes_sent < p.bytes_total);
            assert!(p.bytes_sent >= last_sent || fragments == 3, "{p:?}");
            last_sent = p.bytes_sent;
            let frame = cmd.to_frame(1, 1).encode(true).unwrap();
            assert!(frame.len() <= 256, "{} bytes on the wire", frame.len());
            fragments += 1;
            if fragments == 3 {
                // A lost fragment: ABORT, then that file again from its start.
                job.on_fragment_lost();
                assert_eq!(job.next(&line, now), Ok(Want::Abort));
                job.on_abort_ack();
                continue;
            }
            job.on_fragment_ok(&line);
        }
        assert!(fragments > 3000 * 13 / 236);
        assert_eq!(job.progress(), None, "every file sent");
        assert_eq!(job.next(&line, now), Ok(Want::Query));
    }

    #[test]
    fn a_reader_confirmed_since_it_came_online_gets_the_delta_without_a_first_query() {
        let old = creds(100, None);
        let new = creds(100, Some(3));
        let (target, blob) = target_of(2, &new);
        let (_, old_blob) = target_of(1, &old);
        let confirmed = state_of(1, 100, SetDigest::of(&old));
        let mut job = SyncJob::new(target, blob, false);
        let line = Line { idle: true, ..LINE };
        assert!(job.skip_query(confirmed, &old_blob, &line));
        let now = Instant::now();
        assert!(matches!(job.next(&line, now), Ok(Want::Fragment(_))));
        job.on_fragment_ok(&line);
        // The QUERY after the transfer still decides.
        assert_eq!(job.next(&line, now), Ok(Want::Query));
    }

    #[test]
    fn no_state_in_time_is_a_failure() {
        let (target, blob) = target_of(1, &creds(1, None));
        let mut job = SyncJob::new(target, blob, true);
        let now = Instant::now();
        job.on_query_ack(now);
        assert!(matches!(
            job.next(&LINE, now + STATE_WAIT),
            Err(Outcome::Failed(_))
        ));
    }
}
