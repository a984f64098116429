//! What a plugin writes to the router's log: its `log` calls and its stdout
//! and stderr, line by line.
//!
//! A plugin is untrusted, and so is what it prints. One function,
//! [`LogTag::emit`], is the way every plugin line reaches the log, and it
//! keeps three rules:
//!
//! - **bounded lines**: at most [`MAX_LINE`] bytes of the plugin's text per
//!   line; the rest is cut and the line says how much;
//! - **no forged lines**: control characters (a newline, an escape
//!   sequence) are written escaped, so a plugin's text can never start a
//!   line of its own or repaint a terminal;
//! - **bounded volume**: each route has a budget of lines per second
//!   ([`LogBudget`], shared by all its instances); lines past it are
//!   dropped, counted, and the next line admitted says how many went.
//!
//! Output streams hold at most one line each, shared by every handle the
//! plugin opens on them, so handles it leaks cost no buffers.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest plugin text in one log line, in bytes; the rest is cut.
pub const MAX_LINE: usize = 4096;

/// Who wrote a log line: the fields every plugin log line carries, and the
/// route's budget.
#[derive(Debug)]
pub struct LogTag {
    /// The route running the plugin.
    pub route: String,
    /// The plugin's name (its file name without `.wasm`).
    pub plugin: Arc<str>,
    /// The plugin's version.
    pub version: String,
    /// The route's budget of lines.
    pub budget: Arc<LogBudget>,
}

/// How loud a plugin line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `trace`.
    Trace,
    /// `debug`.
    Debug,
    /// `info`; also every stdout and stderr line.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

impl LogTag {
    /// Logs `text` from the plugin at `level`, from `stream` ("stdout",
    /// "stderr") or from its `log` calls (`None`), within the route's
    /// budget, cut and escaped.
    pub fn emit(&self, level: LogLevel, stream: Option<&str>, text: &[u8]) {
        if self.enabled(level) {
            self.emit_clean(level, stream, &clean(text));
        }
    }

    /// [`emit`](Self::emit) of a line already cut and escaped.
    fn emit_clean(&self, level: LogLevel, stream: Option<&str>, line: &str) {
        let dropped = match self.budget.admit() {
            Admit::Drop => return,
            Admit::Log { dropped_before } => dropped_before,
        };
        let (route, plugin, version) = (self.route.as_str(), &*self.plugin, self.version.as_str());
        if dropped > 0 {
            tracing::warn!(
                target: "plugin",
                route,
                plugin,
                version,
                dropped,
                per_second = self.budget.per_second,
                "plugin log lines dropped: over the route's limit (limits.log_lines_per_second)"
            );
        }
        let stream = stream.unwrap_or("log");
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "plugin", route, plugin, version, stream, "{line}");
            }
            LogLevel::Debug => {
                tracing::debug!(target: "plugin", route, plugin, version, stream, "{line}");
            }
            LogLevel::Info => {
                tracing::info!(target: "plugin", route, plugin, version, stream, "{line}");
            }
            LogLevel::Warn => {
                tracing::warn!(target: "plugin", route, plugin, version, stream, "{line}");
            }
            LogLevel::Error => {
                tracing::error!(target: "plugin", route, plugin, version, stream, "{line}");
            }
        }
    }

    /// Whether a line at `level` would be written at all: a line the log
    /// filter drops costs no budget.
    fn enabled(&self, level: LogLevel) -> bool {
        match level {
            LogLevel::Trace => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
            LogLevel::Debug => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
            LogLevel::Info => tracing::enabled!(target: "plugin", tracing::Level::INFO),
            LogLevel::Warn => tracing::enabled!(target: "plugin", tracing::Level::WARN),
            LogLevel::Error => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
        }
    }
}

/// `text` as one safe log line: at most [`MAX_LINE`] bytes of it (cut at a
/// character boundary, saying how much went), invalid UTF-8 replaced,
/// control characters escaped (`\n`, `\u{1b}`), a trailing `\r` dropped.
#[must_use]
pub fn clean(text: &[u8]) -> Cow<'_, str> {
    clean_cut(text, 0)
}

/// [`clean`], for a line of which `already_cut` more bytes were not kept.
fn clean_cut(text: &[u8], already_cut: usize) -> Cow<'_, str> {
    let kept = &text[..text.len().min(MAX_LINE)];
    let cut = text.len() - kept.len() + already_cut;
    let kept = kept.strip_suffix(b"\r").unwrap_or(kept);
    let text = String::from_utf8_lossy(kept);
    // A cut may split a character: drop the replacement it became.
    let text = if cut > 0 {
        Cow::Owned(text.trim_end_matches('\u{fffd}').to_owned())
    } else {
        text
    };
    if cut == 0 && !text.chars().any(char::is_control) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 32);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if cut > 0 {
        out.push_str(&format!("... [{cut} more bytes cut]"));
    }
    Cow::Owned(out)
}

/// A route's budget of plugin log lines: `per_second` lines a second, and
/// up to a second's worth at once (a token bucket), shared by every
/// instance of the route.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    bucket: Mutex<Bucket>,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Dropped since the last admitted line.
    dropped: u64,
}

enum Admit {
    Log { dropped_before: u64 },
    Drop,
}

impl LogBudget {
    /// A budget of `per_second` lines a second (0 drops every line).
    #[must_use]
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(per_second),
                refilled: Instant::now(),
                dropped: 0,
            }),
            dropped: AtomicU64::new(0),
        }
    }

    /// Lines dropped so far.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn admit(&self) -> Admit {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Admit {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let rate = f64::from(self.per_second);
        let earned = now.duration_since(bucket.refilled).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + earned).min(rate);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Admit::Log {
                dropped_before: std::mem::take(&mut bucket.dropped),
            }
        } else {
            bucket.dropped += 1;
            self.dropped.fetch_add(1, Ordering::Relaxed);
            Admit::Drop
        }
    }
}

/// The last few lines a plugin wrote, each tagged with the call that wrote
/// it, so that a trap can be explained by what the plugin printed during
/// that call (a panic message, typically).
#[derive(Debug, Default)]
pub struct RecentLines {
    call: AtomicU64,
    lines: Mutex<VecDeque<(u64, String)>>,
}

impl RecentLines {
    const KEEP: usize = 8;

    /// Marks the start of a new call (one relaxed atomic add, no lock).
    pub fn next_call(&self) {
        self.call.fetch_add(1, Ordering::Relaxed);
    }

    /// Lines written during the current call, oldest first.
    pub fn of_current_call(&self) -> Vec<String> {
        let call = self.call.load(Ordering::Relaxed);
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines
            .iter()
            .filter(|(c, _)| *c == call)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Keeps `line` (already cut and escaped).
    fn push(&self, line: String) {
        let call = self.call.load(Ordering::Relaxed);
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == Self::KEEP {
            lines.pop_front();
        }
        lines.push_back((call, line));
    }
}

/// One of a plugin's output streams ("stdout", "stderr"): every handle the
/// plugin opens on it writes into the same line.
#[derive(Debug, Clone)]
pub struct LogStream {
    line: Arc<Mutex<PendingLine>>,
}

impl LogStream {
    /// Logs lines of `stream` ("stdout", "stderr") of the plugin `tag`
    /// says.
    pub fn new(tag: Arc<LogTag>, stream: &'static str) -> Self {
        Self {
            line: Arc::new(Mutex::new(PendingLine {
                tag,
                stream,
                recent: None,
                bytes: Vec::new(),
                cut: 0,
            })),
        }
    }

    /// Also keeps recent lines in `recent` (even those the budget drops).
    #[must_use]
    pub fn keeping_recent(self, recent: Arc<RecentLines>) -> Self {
        self.line
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recent = Some(recent);
        self
    }

    fn write(&self, bytes: &[u8]) {
        self.line
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(bytes);
    }

    /// Logs the line written so far, if any.
    pub(super) fn finish_line(&self) {
        self.line
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .emit();
    }
}

/// The line being written on a stream: at most [`MAX_LINE`] bytes kept,
/// the rest of it only counted.
#[derive(Debug)]
struct PendingLine {
    tag: Arc<LogTag>,
    stream: &'static str,
    recent: Option<Arc<RecentLines>>,
    bytes: Vec<u8>,
    /// Bytes of this line past [`MAX_LINE`], not kept.
    cut: usize,
}

impl PendingLine {
    fn push(&mut self, mut bytes: &[u8]) {
        loop {
            let (part, rest) = match bytes.iter().position(|&b| b == b'\n') {
                Some(pos) => (&bytes[..pos], Some(&bytes[pos + 1..])),
                None => (bytes, None),
            };
            let room = MAX_LINE.saturating_sub(self.bytes.len());
            let taken = part.len().min(room);
            self.bytes.extend_from_slice(&part[..taken]);
            self.cut += part.len() - taken;
            match rest {
                Some(rest) => {
                    self.emit();
                    bytes = rest;
                }
                None => return,
            }
        }
    }

    fn emit(&mut self) {
        if self.bytes.is_empty() && self.cut == 0 {
            return;
        }
        let line = clean_cut(&self.bytes, self.cut).into_owned();
        if let Some(recent) = &self.recent {
            recent.push(line.clone());
        }
        if self.tag.enabled(LogLevel::Info) {
            self.tag
                .emit_clean(LogLevel::Info, Some(self.stream), &line);
        }
        self.bytes.clear();
        self.cut = 0;
    }
}

impl Drop for PendingLine {
    fn drop(&mut self) {
        self.emit();
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        LogStream::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        LogStream::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.finish_line();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_so_a_plugin_cannot_start_a_line_of_its_own() {
        let forged = b"harmless\n2026-01-01T00:00:00Z ERROR switchyard: forged\x1b[2J";
        let line = clean(forged);
        assert_eq!(
            line,
            "harmless\\n2026-01-01T00:00:00Z ERROR switchyard: forged\\u{1b}[2J"
        );
        assert!(!line.contains('\n'));
        assert_eq!(clean(b"plain text"), Cow::Borrowed("plain text"));
        assert_eq!(clean(b"windows line\r"), "windows line");
    }

    #[test]
    fn a_long_line_is_cut_and_says_how_much_went() {
        let long = vec![b'x'; MAX_LINE + 1000];
        let line = clean(&long);
        assert!(line.starts_with(&"x".repeat(MAX_LINE)));
        assert!(
            line.ends_with("... [1000 more bytes cut]"),
            "{}",
            &line[MAX_LINE..]
        );
        // A cut inside a multi-byte character keeps whole characters.
        let mut text = vec![b'a'; MAX_LINE - 1];
        text.extend_from_slice("é and more".as_bytes());
        let line = clean(&text);
        assert!(!line.contains('\u{fffd}'), "{line}");
    }

    #[test]
    fn the_budget_admits_a_second_of_lines_then_drops_and_counts_the_rest() {
        let budget = LogBudget::new(10);
        let start = budget
            .bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .refilled;
        let admitted = (0..25)
            .filter(|_| matches!(budget.admit_at(start), Admit::Log { .. }))
            .count();
        assert_eq!(admitted, 10);
        assert_eq!(budget.dropped(), 15);
        // A tenth of a second later, one more line, which reports the drops.
        match budget.admit_at(start + std::time::Duration::from_millis(110)) {
            Admit::Log { dropped_before } => assert_eq!(dropped_before, 15),
            Admit::Drop => panic!("a refilled budget dropped a line"),
        }
    }

    fn tag() -> Arc<LogTag> {
        Arc::new(LogTag {
            route: "r".to_owned(),
            plugin: "p".into(),
            version: "v".to_owned(),
            budget: Arc::new(LogBudget::new(1000)),
        })
    }

    #[test]
    fn a_stream_keeps_at_most_one_bounded_line_whatever_the_plugin_writes() {
        let recent = Arc::new(RecentLines::default());
        let stream = LogStream::new(tag(), "stderr").keeping_recent(recent.clone());
        // A second handle on the same stream shares the line.
        let other = stream.clone();
        for _ in 0..1000 {
            stream.write(&[b'y'; 1024]);
        }
        other.write(b"\nnext");
        let pending = stream.line.lock().unwrap().bytes.len();
        assert_eq!(pending, 4, "only 'next' is pending");
        let lines = recent.of_current_call();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with(&"y".repeat(MAX_LINE)));
        assert!(
            lines[0].ends_with(&format!("... [{} more bytes cut]", 1000 * 1024 - MAX_LINE)),
            "{}",
            &lines[0][MAX_LINE..]
        );
    }
}
