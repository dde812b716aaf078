//! What an append expects a stream's version to be.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What an append expects the stream's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check: append at the end, whatever the version.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must be exactly at this version. `Exact(0)` means the same as `NoStream`.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub fn matches(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::Exact(v) => v == actual,
        }
    }

    /// The version expected before the first event when a retry is checked: `None` for `Any`.
    pub(crate) fn start(self) -> Option<u64> {
        match self {
            Self::Any => None,
            Self::NoStream => Some(0),
            Self::Exact(v) => Some(v),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream (version 0)"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

impl From<u64> for ExpectedVersion {
    fn from(version: u64) -> Self {
        Self::Exact(version)
    }
}
