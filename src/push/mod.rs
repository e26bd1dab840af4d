//! The credential push for `stored` doors (`reader-link.md`, "Credential push"): the table files
//! sent over osdp_FILETRANSFER and the manufacturer-specific commands and replies.
//!
//! - [`file`](mod@file): full tables (`DHT1`, in parts) and deltas (`DHD1`): building, parsing, and the
//!   PD-side rules for applying them ([`file::Table`]).
//! - [`mfg`]: osdp_MFG sub-commands and osdp_MFGREP replies.

pub mod file;
pub mod mfg;
