//! `doorhub scan`: a field technician's look at a bus. It asks every address for osdp_ID and
//! osdp_CAP and lists the readers that answer: address, vendor, model, serial number, firmware
//! and capabilities.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::osdp::frame::Frame;
use crate::osdp::message::{Capability, Command, PdCap, PdId, Reply};
use crate::osdp::stream::{FrameReader, write_frame};

/// How long an address has to answer, besides transmit times (the 200 ms OSDP allows).
const WAIT: Duration = Duration::from_millis(200);

/// A reader found on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its address.
    pub address: u8,
    /// Its identification.
    pub id: PdId,
    /// Its capabilities, if it answered osdp_CAP.
    pub capabilities: Option<PdCap>,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = &self.id;
        write!(
            f,
            "address {:3}  vendor {}  model {}  version {}  serial {}  firmware {}.{}.{}",
            self.address,
            hex::encode_upper(id.vendor),
            id.model,
            id.version,
            id.serial,
            id.firmware_major,
            id.firmware_minor,
            id.firmware_build
        )?;
        if let Some(cap) = &self.capabilities {
            if let Some(size) = cap.receive_buffer_size() {
                write!(f, "  rx buffer {size}")?;
            }
            write!(
                f,
                "  secure channel {}",
                if cap.supports_secure_channel() {
                    "yes"
                } else {
                    "no"
                }
            )?;
            let all: Vec<String> = cap
                .capabilities
                .iter()
                .map(
                    |Capability {
                         function,
                         compliance,
                         number,
                     }| { format!("{function}:{compliance}/{number}") },
                )
                .collect();
            write!(f, "  capabilities [{}]", all.join(" "))?;
        }
        Ok(())
    }
}

/// What [`scan`] tells its caller as it goes, so a technician sees it work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// This address is being asked now.
    Probing(u8),
    /// A reader answered (before the next address is probed).
    Found(&'a Found),
}

/// Probes `addresses` on `io` at `baud`; `progress` is told each address as it is tried and
/// each reader as it is found.
pub async fn scan<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    baud: u32,
    addresses: impl IntoIterator<Item = u8>,
    mut progress: impl FnMut(Progress<'_>),
) -> std::io::Result<Vec<Found>> {
    let (mut rx, mut tx) = tokio::io::split(io);
    let mut frames = FrameReader::crc_only();
    let mut found = Vec::new();
    for address in addresses {
        progress(Progress::Probing(address));
        // Sequence 0: a reader that answers starts its sequence afresh, as on coming online.
        let Some(Reply::PdId(id)) = ask(
            &mut rx,
            &mut tx,
            &mut frames,
            baud,
            Command::Id.to_frame(address, 0),
        )
        .await?
        else {
            continue;
        };
        let capabilities = match ask(
            &mut rx,
            &mut tx,
            &mut frames,
            baud,
            Command::Cap.to_frame(address, 1),
        )
        .await?
        {
            Some(Reply::PdCap(cap)) => Some(cap),
            _ => None,
        };
        let reader = Found {
            address,
            id,
            capabilities,
        };
        progress(Progress::Found(&reader));
        found.push(reader);
    }
    Ok(found)
}

async fn ask<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    rx: &mut R,
    tx: &mut W,
    frames: &mut FrameReader,
    baud: u32,
    frame: Frame,
) -> std::io::Result<Option<Reply>> {
    write_frame(tx, &frame, true).await?;
    let bytes = frame.encoded_len().unwrap_or(0) + 64;
    let deadline = Instant::now()
        + WAIT
        + Duration::from_micros(bytes as u64 * 10_000_000 / u64::from(baud.max(1)));
    loop {
        match tokio::time::timeout_at(deadline, frames.read_frame(rx)).await {
            Err(_) | Ok(Ok(None)) => {
                frames.line_idle();
                return Ok(None);
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Some(f)))
                if f.reply && f.address == frame.address && f.sequence == frame.sequence =>
            {
                return Ok(Reply::from_frame(&f).ok());
            }
            Ok(Ok(Some(_))) => {}
        }
    }
}
