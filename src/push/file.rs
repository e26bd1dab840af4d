//! Placeholder; filled in by the push work.
