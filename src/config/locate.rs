//! Key paths (`door[1].address`) and finding where a key was set: a file line or an environment
//! variable.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use toml_edit::{Item, TableLike};

use super::error::ConfigError;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A table key.
    Key(String),
    /// An element of an array (of tables).
    Index(usize),
}

/// A key path such as `door[1].address`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// The path of a top-level key.
    pub(crate) fn top(key: &str) -> Self {
        KeyPath(vec![Seg::Key(key.to_owned())])
    }

    /// This path extended by a table key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Seg::Key(key.to_owned()));
        path
    }

    /// This path extended by an array index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Seg::Index(index));
        path
    }

    /// The `section.key` form environment variables map to, when the path has no index.
    fn dotted(&self) -> Option<String> {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Index(_) => return None,
            }
        }
        Some(out)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Knows where each key came from, to turn a problem into a [`ConfigError`].
pub(crate) struct Locator<'a> {
    /// The configuration file as given.
    pub(crate) file: &'a Path,
    /// Its text, to turn byte offsets into lines.
    pub(crate) text: &'a str,
    /// Its parsed form, which keeps the spans of keys.
    pub(crate) doc: &'a toml_edit::Document<String>,
    /// `section.key` (lowercase) → the environment variable that set it.
    pub(crate) env: &'a BTreeMap<String, String>,
}

impl Locator<'_> {
    /// A problem with `key`, placed at the environment variable or file line that set it.
    pub(crate) fn error(&self, key: &KeyPath, message: impl Into<String>) -> ConfigError {
        let mut message = message.into();
        // The environment wins over the file, so a variable that sets the key is the culprit.
        if let Some(var) = key.dotted().and_then(|d| self.env.get(&d)) {
            message.push_str(&format!(" (set by environment variable {var})"));
            return ConfigError {
                key: key.to_string(),
                file: None,
                line: None,
                message,
            };
        }
        ConfigError {
            key: key.to_string(),
            file: Some(self.file.to_path_buf()),
            line: self.span(key).map(|s| line_of(self.text, s.start)),
            message,
        }
    }

    /// The span of the key, or of the deepest part of its path the file has (so a missing key
    /// points at its table's header).
    fn span(&self, key: &KeyPath) -> Option<Range<usize>> {
        let mut best = None;
        let mut table: &dyn TableLike = self.doc.as_table();
        let mut item: Option<&Item> = None;
        for seg in &key.0 {
            match seg {
                Seg::Key(k) => {
                    if let Some(it) = item {
                        let Some(t) = it.as_table_like() else {
                            return best;
                        };
                        table = t;
                    }
                    let Some((k, it)) = table.get_key_value(k) else {
                        return best;
                    };
                    best = k.span().or_else(|| it.span()).or(best);
                    item = Some(it);
                }
                Seg::Index(n) => {
                    // Either `[[door]]` tables or an inline array `door = [{ ... }]`.
                    let Some(it) = item else { return best };
                    let element: &dyn TableLike = match it {
                        Item::ArrayOfTables(aot) => {
                            let Some(t) = aot.get(*n) else { return best };
                            best = t.span().or(best);
                            t
                        }
                        Item::Value(v) => {
                            let Some(v) = v.as_array().and_then(|a| a.get(*n)) else {
                                return best;
                            };
                            best = v.span().or(best);
                            let Some(t) = v.as_inline_table() else {
                                return best;
                            };
                            t
                        }
                        _ => return best,
                    };
                    table = element;
                    item = None;
                }
            }
        }
        best
    }
}

/// The 1-based line holding byte `offset` of `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    before.iter().filter(|&&b| b == b'\n').count() + 1
}
