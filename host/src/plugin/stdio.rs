//! A plugin's stdout and stderr, line by line into the router's log.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line kept before it is logged anyway (a plugin printing without
/// newlines must not grow the router's memory).
const MAX_LINE: usize = 16 * 1024;

/// Who wrote a log line: the fields every plugin log line carries.
#[derive(Debug)]
pub struct LogTag {
    /// The route running the plugin.
    pub route: String,
    /// The plugin's name (its file name without `.wasm`).
    pub plugin: Arc<str>,
    /// The plugin's version.
    pub version: String,
}

/// One of a plugin's output streams.
#[derive(Debug, Clone)]
pub struct LogStream {
    tag: Arc<LogTag>,
    stream: &'static str,
    /// Where recent lines go too, if someone wants them.
    recent: Option<Arc<RecentLines>>,
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
        self.lines.lock().map_or_else(
            |_| Vec::new(),
            |lines| {
                lines
                    .iter()
                    .filter(|(c, _)| *c == call)
                    .map(|(_, l)| l.clone())
                    .collect()
            },
        )
    }

    fn push(&self, line: &str) {
        let call = self.call.load(Ordering::Relaxed);
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() == Self::KEEP {
                lines.pop_front();
            }
            lines.push_back((call, line.to_owned()));
        }
    }
}

impl LogStream {
    /// Logs lines of `stream` ("stdout", "stderr") of the plugin `tag`
    /// says.
    pub fn new(tag: Arc<LogTag>, stream: &'static str) -> Self {
        Self {
            tag,
            stream,
            recent: None,
        }
    }

    /// Also keeps recent lines in `recent`.
    pub fn keeping_recent(mut self, recent: Arc<RecentLines>) -> Self {
        self.recent = Some(recent);
        self
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter::new(self.clone()))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter::new(self.clone()))
    }
}

struct LineWriter {
    target: LogStream,
    line: Vec<u8>,
}

impl LineWriter {
    fn new(target: LogStream) -> Self {
        Self {
            target,
            line: Vec::new(),
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&bytes[..pos]);
            self.emit();
            bytes = &bytes[pos + 1..];
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() >= MAX_LINE {
            self.emit();
        }
    }

    fn emit(&mut self) {
        if !self.line.is_empty() {
            let text = String::from_utf8_lossy(&self.line);
            let text = text.trim_end_matches('\r');
            let tag = &self.target.tag;
            tracing::info!(
                target: "plugin",
                route = tag.route,
                plugin = &*tag.plugin,
                version = tag.version,
                stream = self.target.stream,
                "{text}"
            );
            if let Some(recent) = &self.target.recent {
                recent.push(text);
            }
            self.line.clear();
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}

#[async_trait::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}
