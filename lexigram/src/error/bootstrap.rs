//! Bootstrap problems, collected and reported together, like rustc.

use std::fmt;

/// Where something was declared, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The source file.
    pub file: &'static str,
    /// The line.
    pub line: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One thing wrong with the app's wiring: what, where, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where: each location with a label (usually the item's path).
    pub locations: Vec<(Location, String)>,
    /// How to fix it, if there is a usual fix.
    pub help: Option<String>,
}

impl Problem {
    /// A problem with no location yet.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            locations: Vec::new(),
            help: None,
        }
    }

    /// Adds a location.
    #[must_use]
    pub fn at(mut self, location: Location, label: impl Into<String>) -> Self {
        self.locations.push((location, label.into()));
        self
    }

    /// Adds the usual fix.
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every problem found while building an app, sorted.
///
/// ```
/// use lexigram::module::{BootstrapReport, Problem};
/// use lexigram::registration::Location;
///
/// let report = BootstrapReport::new(vec![
///     Problem::new("handler `notify` needs `Dep<Mailer>`, but no module provides it")
///         .at(Location { file: "src/notify.rs", line: 7 }, "bank::notify")
///         .help("register it with `.provide(Mailer::new(..))`"),
/// ]);
/// assert_eq!(report.to_string(), "\
/// lexigram bootstrap failed with 1 problem
///   [1] handler `notify` needs `Dep<Mailer>`, but no module provides it
///       --> src/notify.rs:7  bank::notify
///       help: register it with `.provide(Mailer::new(..))`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapReport {
    problems: Vec<Problem>,
}

impl BootstrapReport {
    /// Sorts and deduplicates the problems.
    pub fn new(mut problems: Vec<Problem>) -> Self {
        for p in &mut problems {
            p.locations.sort();
        }
        problems.sort();
        problems.dedup();
        Self { problems }
    }

    /// The problems, sorted.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for BootstrapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "lexigram bootstrap failed with {n} problem{}",
            if n == 1 { "" } else { "s" }
        )?;
        let width = self
            .problems
            .iter()
            .flat_map(|p| &p.locations)
            .map(|(l, _)| l.to_string().len())
            .max()
            .unwrap_or(0);
        for (i, problem) in self.problems.iter().enumerate() {
            write!(f, "\n  [{}] {}", i + 1, problem.message)?;
            for (location, label) in &problem.locations {
                write!(f, "\n      --> {:<width$}  {label}", location.to_string())?;
            }
            if let Some(help) = &problem.help {
                write!(f, "\n      help: {help}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for BootstrapReport {}
