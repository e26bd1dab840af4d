//! The errors `Config::load` reports: one per problem, all of them at once.

use std::fmt;
use std::path::PathBuf;

/// One problem with the configuration.
///
/// Displays as `FILE:LINE: KEY: MESSAGE`, leaving out whatever is unknown, for example
/// `/etc/doorhub/doorhub.toml:12: door[1].address: 130 is out of range; allowed 0..=126`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key the problem is about, such as `door[1].address`; empty when the problem is with
    /// the file as a whole (it cannot be read, or is not valid TOML).
    pub key: String,
    /// The file that set the key, or that should set it; `None` when the value came from an
    /// environment variable (the message then names the variable) or there is no file.
    pub file: Option<PathBuf>,
    /// The 1-based line in `file` of the key, or of the nearest enclosing table that exists.
    pub line: Option<usize>,
    /// What is wrong and what is allowed. Never holds the contents of a key or password file.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
            if let Some(line) = self.line {
                write!(f, "{line}:")?;
            }
            f.write_str(" ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one load, in the order found (never empty when returned as an error).
///
/// Displays one problem per line, so `check-config` can print it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The problems.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// Wraps a single problem, for failures that stop the load early (an unreadable file).
    pub fn one(error: ConfigError) -> Self {
        ConfigErrors {
            errors: vec![error],
        }
    }

    /// The problems, in the order found.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// True when there are none (never so for an error returned by `Config::load`).
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}
