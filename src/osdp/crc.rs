//! Placeholder; filled in by the OSDP work.
