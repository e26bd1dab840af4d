//! The Secure Channel of one reader, control panel side: the handshake after CAP, pairing a new
//! reader in install mode (SCBK-D, then KEYSET to a fresh random key that is stored before use),
//! and sealing commands and opening replies once the session is up.
//!
//! Install mode is a deliberate act, never a fallback (`reader-link.md`, 2.12): only a door
//! with `install_key = true` whose key file did not exist when its bus started is offered
//! SCBK-D ([`ReaderSecurity::pairing`]); once the new key is stored the door never is again. A
//! reader that refuses the door's key stops the handshake ([`SecureError::KeyRefused`]); it is
//! never offered the default key nor sent a new one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::osdp::frame::{Frame, SecurityBlock};
use crate::osdp::message::{Command, MessageError, Reply};
use crate::osdp::secure::{
    HandshakeMessage, KeyBytes, Role, ScError, Scbk, SecureChannel, random_key,
};
use crate::sync::SecurityProblem;

/// Errors of the reader's Secure Channel.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The cryptography refused something (a bad MAC, a message out of turn).
    #[error("secure channel: {0}")]
    Channel(#[from] ScError),
    /// A frame could not be built or read.
    #[error("secure channel frame: {0}")]
    Frame(#[from] crate::osdp::frame::FrameError),
    /// A reply's data could not be read.
    #[error("secure channel reply: {0}")]
    Message(#[from] MessageError),
    /// The reader answered the door's key with a cryptogram that does not verify: a swapped,
    /// reset or rogue device.
    #[error("secure channel: the reader refused the door's key")]
    KeyRefused,
    /// Pairing: the reader does not take the default key, so it is not in install mode.
    #[error(
        "secure channel: the reader refused the default key; it is not in install mode, so it \
         cannot be paired"
    )]
    NotInstallMode,
    /// Pairing: the new key could not be stored, so it was not sent.
    #[error(
        "secure channel: cannot store the new key in {}: {source}; no key was sent to the reader",
        path.display()
    )]
    Store {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Pairing: a key file was put in place after the bus started; SCBK-D is not offered.
    #[error(
        "secure channel: {} appeared after the door's bus started; reload the configuration \
         to use it",
        path.display()
    )]
    KeyFileAppeared {
        /// The key file.
        path: PathBuf,
    },
    /// The reader cannot run the Secure Channel (its PDCAP or its NAK to osdp_CHLNG says so).
    #[error("secure channel: the reader does not support it, but the door has a key file")]
    Unsupported,
}

impl SecureError {
    /// What the door reports when this stops its handshake: `None` for a failure of the line
    /// or the cryptography, which just restarts the handshake.
    pub fn problem(&self) -> Option<SecurityProblem> {
        let error = match self {
            SecureError::KeyRefused
            | SecureError::NotInstallMode
            | SecureError::Store { .. }
            | SecureError::KeyFileAppeared { .. } => true,
            SecureError::Unsupported => false,
            SecureError::Channel(_) | SecureError::Frame(_) | SecureError::Message(_) => {
                return None;
            }
        };
        Some(SecurityProblem {
            reason: self.to_string(),
            error,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Send CHLNG next.
    Start,
    /// CHLNG sent, waiting for CCRYPT.
    Challenged,
    /// SCRYPT is next (its data and block are held).
    Cryptogram(HandshakeMessage),
    /// SCRYPT sent, waiting for RMAC_I.
    Confirming,
    /// Up; with `Some(key)` a KEYSET to that key is due (pairing).
    Up(Option<KeyBytes>),
    /// KEYSET sent, waiting for its ACK.
    KeySent(KeyBytes),
}

/// What the handshake wants next.
pub enum Next {
    /// Send this handshake command.
    Send(Command),
    /// The session is up: serve the reader.
    Ready,
}

/// One reader's Secure Channel.
#[derive(Debug)]
pub struct ReaderSecurity {
    channel: SecureChannel,
    /// The door's key; `None` while a new reader is to be paired.
    key: Option<KeyBytes>,
    key_file: PathBuf,
    step: Step,
    pending_block: Option<[u8; 3]>,
    /// Why the last handshake stopped, until [`ReaderSecurity::take_stop`].
    stopped: Option<SecureError>,
    /// The reason reported since the session was last up, so a retry does not repeat it.
    reported: Option<String>,
    /// Whether `tamper` was raised since the session was last up.
    tamper_raised: bool,
}

impl ReaderSecurity {
    /// A channel that uses the door's `key`, read from `key_file`.
    pub fn new(key: KeyBytes, key_file: PathBuf) -> ReaderSecurity {
        ReaderSecurity::with_key(Some(key), key_file)
    }

    /// A channel that pairs a new reader in install mode: the door has `install_key = true`
    /// and `key_file` does not exist yet. The new key is written there before it is sent.
    pub fn pairing(key_file: PathBuf) -> ReaderSecurity {
        ReaderSecurity::with_key(None, key_file)
    }

    fn with_key(key: Option<KeyBytes>, key_file: PathBuf) -> ReaderSecurity {
        ReaderSecurity {
            channel: SecureChannel::new(Role::Cp),
            key,
            key_file,
            step: Step::Start,
            pending_block: None,
            stopped: None,
            reported: None,
            tamper_raised: false,
        }
    }

    /// Whether commands are sealed now.
    pub fn established(&self) -> bool {
        self.channel.is_established()
    }

    /// Starts over (the reader restarted, a MAC failed, or sequence 0 was sent).
    pub fn reset(&mut self) {
        self.channel.reset();
        self.step = Step::Start;
        self.pending_block = None;
    }

    /// Why the handshake stopped at the last reply (the reader refused the key, a new key
    /// could not be stored), once; the reader then waits for its next probe.
    pub fn take_stop(&mut self) -> Option<SecureError> {
        self.stopped.take()
    }

    /// Records that `problem` stopped the handshake. Returns whether to report it (it differs
    /// from what was reported since the session was last up) and whether to raise `tamper`
    /// (the reader refused the door's key, for the first time since then).
    pub fn note(&mut self, problem: &SecurityProblem, refused: bool) -> (bool, bool) {
        let report = self.reported.as_deref() != Some(problem.reason.as_str());
        if report {
            self.reported = Some(problem.reason.clone());
        }
        let tamper = refused && !self.tamper_raised;
        self.tamper_raised |= refused;
        (report, tamper)
    }

    /// The session is up with the door's key: a new episode starts. Returns whether a problem
    /// had been reported, which the door now clears.
    pub fn came_up(&mut self) -> bool {
        self.tamper_raised = false;
        self.reported.take().is_some()
    }

    /// The next handshake command, or `Ready` once the session is up and keyed.
    pub fn step(&mut self) -> Result<Next, SecureError> {
        match self.step.clone() {
            Step::Start => {
                let scbk = self.key.map_or(Scbk::Default, |k| Scbk::Key(k.0));
                let msg = self.channel.begin(scbk)?;
                self.step = Step::Challenged;
                self.pending_block = Some(msg.security_block);
                let random: [u8; 8] =
                    msg.data
                        .as_slice()
                        .try_into()
                        .map_err(|_| ScError::BadLength {
                            what: "CHLNG random",
                            got: msg.data.len(),
                        })?;
                Ok(Next::Send(Command::Chlng { random }))
            }
            Step::Cryptogram(msg) => {
                self.step = Step::Confirming;
                self.pending_block = Some(msg.security_block);
                let cryptogram: [u8; 16] =
                    msg.data
                        .as_slice()
                        .try_into()
                        .map_err(|_| ScError::BadLength {
                            what: "SCRYPT cryptogram",
                            got: msg.data.len(),
                        })?;
                Ok(Next::Send(Command::Scrypt { cryptogram }))
            }
            Step::Up(Some(key)) => {
                self.step = Step::KeySent(key);
                Ok(Next::Send(Command::KeySet { key }))
            }
            Step::Up(None) => Ok(Next::Ready),
            // Waiting for a reply: the handshake restarts (the reply was lost).
            Step::Challenged | Step::Confirming | Step::KeySent(_) => {
                self.reset();
                self.step()
            }
        }
    }

    /// Builds the frame for `cmd`: handshake commands carry their security block in the clear;
    /// once the session is up every command is sealed (MAC, and encrypted data).
    pub fn frame(&mut self, cmd: &Command, address: u8, seq: u8) -> Result<Frame, SecureError> {
        let mut frame = cmd.to_frame(address, seq);
        if matches!(cmd, Command::Chlng { .. } | Command::Scrypt { .. }) {
            let block = self
                .pending_block
                .take()
                .ok_or(ScError::OutOfOrder("handshake command"))?;
            frame.security = Some(SecurityBlock {
                kind: block[1],
                data: block[2..].to_vec(),
            });
            return Ok(frame);
        }
        if !self.channel.is_established() {
            return Ok(frame);
        }
        let sealing = self.channel.seal_command(&frame.data)?;
        let block = sealing.security_block();
        frame.security = Some(SecurityBlock {
            kind: block[1],
            data: Vec::new(),
        });
        frame.data = sealing.payload().to_vec();
        frame.mac = Some([0; 4]);
        let mac = sealing.finish(&frame.mac_input()?)?;
        frame.mac = Some(mac);
        Ok(frame)
    }

    /// Reads a reply: sealed replies are opened; handshake replies advance the handshake.
    pub fn reply(&mut self, frame: &Frame) -> Result<Reply, SecureError> {
        let reply = match (&frame.security, frame.mac) {
            (Some(_), Some(mac)) if self.channel.is_established() => {
                let data = self.channel.open_reply(&frame.mac_input()?, &mac)?;
                Reply::decode(frame.code, &data)?
            }
            _ => {
                let reply = Reply::from_frame(frame)?;
                if self.channel.is_established() && matches!(reply, Reply::Nak(_)) {
                    // A plain NAK during a session: the reader dropped it.
                    self.reset();
                }
                reply
            }
        };
        match (&self.step, &reply) {
            (Step::Challenged, Reply::CCrypt(c)) => {
                let mut data = Vec::with_capacity(32);
                data.extend_from_slice(&c.client_uid);
                data.extend_from_slice(&c.pd_random);
                data.extend_from_slice(&c.pd_cryptogram);
                match self.channel.on_ccrypt(&data) {
                    Ok(msg) => self.step = Step::Cryptogram(msg),
                    Err(ScError::BadClientCryptogram) => {
                        // Never a fallback to SCBK-D: the handshake stops here.
                        self.stopped = Some(match self.key {
                            Some(_) => SecureError::KeyRefused,
                            None => SecureError::NotInstallMode,
                        });
                        self.reset();
                    }
                    Err(e) => {
                        self.reset();
                        return Err(e.into());
                    }
                }
            }
            (Step::Confirming, Reply::RMacI { rmac }) => {
                self.channel.on_rmac_i(rmac)?;
                if self.key.is_some() {
                    self.step = Step::Up(None);
                } else {
                    self.pair()?;
                }
            }
            (Step::KeySent(_), Reply::Ack) => {
                info!("the reader took the new key");
                self.reset();
            }
            _ => {}
        }
        Ok(reply)
    }

    /// In the SCBK-D session of a reader in install mode: a fresh key, stored before use (a hub
    /// that dies after the KEYSET still knows the key), then KEYSET. From the moment the file
    /// exists the door uses that key, even if the KEYSET never arrives. If it cannot be stored,
    /// nothing is sent and the handshake stops.
    fn pair(&mut self) -> Result<(), SecureError> {
        let key = KeyBytes(random_key()?);
        let stored = link_new_key(&self.key_file, &key).and_then(|()| {
            self.key = Some(key);
            sync_dir(&self.key_file)
        });
        match stored {
            Ok(()) => {
                info!(file = %self.key_file.display(), "installing a new key on the reader");
                self.step = Step::Up(Some(key));
            }
            Err(source) => {
                self.stopped = Some(SecureError::Store {
                    path: self.key_file.clone(),
                    source,
                });
                self.reset();
            }
        }
        Ok(())
    }

    /// Before a handshake: a door that pairs must still have no key file (it may have been put
    /// there since the bus started); SCBK-D is never offered once it exists.
    pub fn check_start(&self) -> Result<(), SecureError> {
        if self.key.is_none() && std::fs::symlink_metadata(&self.key_file).is_ok() {
            return Err(SecureError::KeyFileAppeared {
                path: self.key_file.clone(),
            });
        }
        Ok(())
    }
}

/// Puts a new key (32 hex digits) where there is none: a `.new` file beside it, mode 0600 and
/// synced, is linked into place, which fails if a file is there (a key file is never replaced).
fn link_new_key(path: &Path, key: &KeyBytes) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let tmp = path.with_file_name(name);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let linked = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{}", hex::encode(key.0))?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    if let Err(e) = std::fs::remove_file(&tmp)
        && linked.is_ok()
    {
        // Harmless: the key is in place, and a stale `.new` is removed before the next use.
        warn!(file = %tmp.display(), "cannot remove the temporary key file: {e}");
    }
    linked
}

/// Syncs the directory of `path`, so a name just linked there survives a power cut.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::osdp::secure::assert_key_hidden;

    const KEY: [u8; 16] = [
        0xA7, 0x3C, 0x19, 0xE2, 0x5D, 0x80, 0x41, 0xF6, 0x0B, 0x92, 0xC8, 0x37, 0x6E, 0xD4, 0x25,
        0xBF,
    ];
    const NEW: [u8; 16] = [
        0x5E, 0xC1, 0x08, 0x9B, 0x73, 0x2A, 0xE4, 0x16, 0xD0, 0x4F, 0xB5, 0x61, 0x9C, 0x3E, 0x87,
        0xFA,
    ];

    #[test]
    fn debug_never_shows_key_material() {
        let mut sc = ReaderSecurity::new(KeyBytes(KEY), PathBuf::from("/k/lobby.scbk"));
        assert_key_hidden(&format!("{sc:?}"), &KEY);
        for step in [Step::Up(Some(KeyBytes(NEW))), Step::KeySent(KeyBytes(NEW))] {
            assert_key_hidden(&format!("{step:?}"), &NEW);
            sc.step = step;
            let shown = format!("{sc:?}");
            assert_key_hidden(&shown, &KEY);
            assert_key_hidden(&shown, &NEW);
        }
        let keyset = sc.step().map(|n| match n {
            Next::Send(cmd) => format!("{cmd:?}"),
            Next::Ready => String::new(),
        });
        assert!(keyset.is_ok());
        assert_key_hidden(&keyset.unwrap_or_default(), &NEW);
    }

    #[test]
    fn a_new_key_goes_where_there_is_none_never_over_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lobby.scbk");
        link_new_key(&path, &KeyBytes(NEW)).unwrap();
        sync_dir(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", hex::encode(NEW))
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second key does not replace the first, and nothing is left beside it.
        let err = link_new_key(&path, &KeyBytes(KEY)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", hex::encode(NEW))
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["lobby.scbk"]);
    }

    #[test]
    fn a_refused_key_is_reported_once_and_tamper_raised_once_per_episode() {
        let mut sc = ReaderSecurity::new(KeyBytes(KEY), PathBuf::from("/k/lobby.scbk"));
        let refused = SecureError::KeyRefused.problem().unwrap();
        assert!(refused.error);
        assert_eq!(
            refused.reason,
            "secure channel: the reader refused the door's key"
        );
        assert_eq!(sc.note(&refused, true), (true, true));
        assert_eq!(sc.note(&refused, true), (false, false));
        let unsupported = SecureError::Unsupported.problem().unwrap();
        assert!(!unsupported.error);
        assert_eq!(sc.note(&unsupported, false), (true, false));
        assert_eq!(sc.note(&refused, true), (true, false));
        // Up once: the next refusal is a new episode.
        assert!(sc.came_up());
        assert!(!sc.came_up());
        assert_eq!(sc.note(&refused, true), (true, true));
    }

    #[test]
    fn a_door_that_pairs_stops_once_its_key_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lobby.scbk");
        let sc = ReaderSecurity::pairing(path.clone());
        assert!(sc.check_start().is_ok());
        std::fs::write(&path, "x").unwrap();
        assert!(matches!(
            sc.check_start(),
            Err(SecureError::KeyFileAppeared { .. })
        ));
        assert!(
            ReaderSecurity::new(KeyBytes(KEY), path)
                .check_start()
                .is_ok()
        );
    }
}
