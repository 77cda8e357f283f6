//! The one writer of stdout: every protocol line goes through here, whole, under one lock.

use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

/// A cloneable handle to the output. Lines are written whole; once a write fails (the
/// parent closed our stdout) the outbox is closed and later writes are dropped.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<BufWriter<Box<dyn Write + Send>>>,
    closed: AtomicBool,
}

impl Outbox {
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(BufWriter::with_capacity(64 * 1024, Box::new(writer))),
                closed: AtomicBool::new(false),
            }),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Relaxed)
    }

    /// Buffers one line; the caller decides when to flush (the reader flushes once its input
    /// is drained, so a pipelined burst costs one write syscall).
    pub fn write_line_buffered(&self, line: &[u8]) {
        self.with_writer(|w| {
            w.write_all(line)?;
            w.write_all(b"\n")
        });
    }

    /// Writes one line and flushes: for responses and notifications produced off the reader.
    pub fn write_line(&self, line: &[u8]) {
        self.with_writer(|w| {
            w.write_all(line)?;
            w.write_all(b"\n")?;
            w.flush()
        });
    }

    pub fn flush(&self) {
        self.with_writer(|w| w.flush());
    }

    /// Sends a server-to-client notification.
    pub fn notify(&self, method: &str, params: &impl Serialize) {
        #[derive(Serialize)]
        struct Notification<'a, P> {
            jsonrpc: &'static str,
            method: &'a str,
            params: &'a P,
        }
        let message = Notification {
            jsonrpc: "2.0",
            method,
            params,
        };
        match serde_json::to_vec(&message) {
            Ok(line) => self.write_line(&line),
            Err(e) => tracing::error!(error = %e, method, "notification not serializable"),
        }
    }

    fn with_writer(
        &self,
        op: impl FnOnce(&mut BufWriter<Box<dyn Write + Send>>) -> std::io::Result<()>,
    ) {
        if self.is_closed() {
            return;
        }
        let mut writer = self.lock();
        if let Err(e) = op(&mut writer)
            && !self.inner.closed.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "stdout closed; dropping further output");
        }
    }

    fn lock(&self) -> MutexGuard<'_, BufWriter<Box<dyn Write + Send>>> {
        // A panic while holding the lock cannot leave a half line that matters more than
        // losing every later response, so recover the guard.
        self.inner.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}
