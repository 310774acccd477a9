//! The terminal: timestamped lines on stdout, one live progress line on stderr.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Who a timeline line is about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// The demo's script did something.
    Script,
    /// The pool reported an event.
    Pool,
    /// The webhook receiver got a delivery.
    Webhook,
}

impl Source {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Script => "script",
            Self::Pool => "pool",
            Self::Webhook => "webhook",
        }
    }
}

/// Shared by every task that prints.
#[derive(Debug)]
pub(crate) struct Console {
    start: Instant,
    /// The same instant on the system clock (events carry wall-clock times).
    start_utc: DateTime<Utc>,
    /// stderr is a terminal: the progress line is redrawn in place.
    live: bool,
    /// The progress line currently shown (empty: none).
    progress: Mutex<String>,
}

/// Width of the credential column in timeline lines.
pub(crate) const ID_WIDTH: usize = 11;

impl Console {
    /// A console whose clock starts now.
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            start_utc: Utc::now(),
            live: std::io::stderr().is_terminal(),
            progress: Mutex::new(String::new()),
        }
    }

    pub(crate) const fn start(&self) -> Instant {
        self.start
    }

    pub(crate) const fn start_utc(&self) -> DateTime<Utc> {
        self.start_utc
    }

    /// Time from the start to `at` (zero before it).
    pub(crate) fn offset(&self, at: DateTime<Utc>) -> Duration {
        (at - self.start_utc).to_std().unwrap_or_default()
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whether the progress line is drawn in place (else printed now and then).
    pub(crate) const fn is_live(&self) -> bool {
        self.live
    }

    /// Prints a timeline line stamped with the time since the start.
    pub(crate) fn event(&self, source: Source, credential: &str, text: &str) {
        self.event_at(self.elapsed(), source, credential, text);
    }

    /// Prints a timeline line stamped `at`.
    pub(crate) fn event_at(&self, at: Duration, source: Source, credential: &str, text: &str) {
        self.line(&format!(
            "  {:>6}  {:<8}{credential:<ID_WIDTH$} {text}",
            format!("{:.1}s", at.as_secs_f64()),
            source.as_str(),
        ));
    }

    /// Prints a line on stdout without tearing the progress line.
    pub(crate) fn line(&self, text: &str) {
        let progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        let mut err = std::io::stderr().lock();
        if self.live && !progress.is_empty() {
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
        if self.live && !progress.is_empty() {
            let _ = write!(err, "{progress}");
            let _ = err.flush();
        }
    }

    /// Replaces the progress line (in place on a terminal, else as a new stderr line).
    pub(crate) fn progress(&self, text: String) {
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        let mut err = std::io::stderr().lock();
        if self.live {
            let _ = write!(err, "\r\x1b[2K{text}");
        } else {
            let _ = writeln!(err, "{text}");
        }
        let _ = err.flush();
        *progress = text;
    }

    /// Leaves the progress line on screen as it last was and moves below it.
    pub(crate) fn end_progress(&self) {
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        if self.live && !progress.is_empty() {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err);
            let _ = err.flush();
        }
        progress.clear();
    }
}
