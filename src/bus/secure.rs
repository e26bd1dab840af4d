//! The Secure Channel of one reader, control panel side: the handshake after CAP, install mode
//! (SCBK-D, then KEYSET to a fresh random key that is stored before use), and sealing commands
//! and opening replies once the session is up.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::osdp::frame::{Frame, SecurityBlock};
use crate::osdp::message::{Command, MessageError, Reply};
use crate::osdp::secure::{HandshakeMessage, Role, ScError, Scbk, SecureChannel, random_key};

/// Errors of the reader's Secure Channel.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The cryptography refused something (a bad cryptogram or MAC, a message out of turn).
    #[error("secure channel: {0}")]
    Channel(#[from] ScError),
    /// A frame could not be built or read.
    #[error("secure channel frame: {0}")]
    Frame(#[from] crate::osdp::frame::FrameError),
    /// A reply's data could not be read.
    #[error("secure channel reply: {0}")]
    Message(#[from] MessageError),
    /// The new key could not be stored, so it is not installed.
    #[error("cannot store the new key in {path}: {source}")]
    Store {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
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
    /// Up; with `Some(key)` a KEYSET to that key is due (install mode).
    Up(Option<[u8; 16]>),
    /// KEYSET sent, waiting for its ACK.
    KeySent([u8; 16]),
}

/// What the handshake wants next.
pub enum Next {
    /// Send this handshake command.
    Send(Command),
    /// The session is up: serve the reader.
    Ready,
}

/// One reader's Secure Channel.
pub struct ReaderSecurity {
    channel: SecureChannel,
    key: [u8; 16],
    key_file: PathBuf,
    /// Using SCBK-D because the reader refused the configured key (install mode).
    install: bool,
    step: Step,
    pending_block: Option<[u8; 3]>,
}

impl ReaderSecurity {
    /// A channel that will use `key`, stored in `key_file`.
    pub fn new(key: [u8; 16], key_file: PathBuf) -> ReaderSecurity {
        ReaderSecurity {
            channel: SecureChannel::new(Role::Cp),
            key,
            key_file,
            install: false,
            step: Step::Start,
            pending_block: None,
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

    /// The reader refused the handshake: the next one starts with the configured key again.
    pub fn refused(&mut self) {
        self.install = false;
        self.reset();
    }

    /// The next handshake command, or `Ready` once the session is up and keyed.
    pub fn step(&mut self) -> Result<Next, SecureError> {
        match self.step.clone() {
            Step::Start => {
                let scbk = if self.install {
                    Scbk::Default
                } else {
                    Scbk::Key(self.key)
                };
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
                    Err(e) if !self.install => {
                        // The reader does not know our key: perhaps it is new, in install mode,
                        // and takes the default key.
                        warn!("the reader refused the configured key ({e}); trying install mode");
                        self.install = true;
                        self.reset();
                    }
                    Err(e) => {
                        self.install = false;
                        self.reset();
                        return Err(e.into());
                    }
                }
            }
            (Step::Confirming, Reply::RMacI { rmac }) => {
                self.channel.on_rmac_i(rmac)?;
                let new_key = if self.install {
                    let key = random_key()?;
                    // Stored before use: a hub that dies after the KEYSET still knows the key.
                    store_key(&self.key_file, &key)?;
                    info!(file = %self.key_file.display(), "installing a new key on the reader");
                    Some(key)
                } else {
                    None
                };
                self.step = Step::Up(new_key);
            }
            (Step::KeySent(key), Reply::Ack) => {
                info!("the reader took the new key");
                self.key = *key;
                self.install = false;
                self.reset();
            }
            _ => {}
        }
        Ok(reply)
    }
}

/// Stores a key (32 hex digits), mode 0600, replacing the file atomically.
fn store_key(path: &Path, key: &[u8; 16]) -> Result<(), SecureError> {
    let err = |source| SecureError::Store {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    writeln!(f, "{}", hex::encode(key)).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}
