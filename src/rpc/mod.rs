//! The stdio transport: JSON-RPC 2.0 over newline-delimited JSON.
//!
//! It knows nothing about sessions or domains: it reads lines, hands each to a jsonrpsee
//! method table through [`dispatch::Dispatcher`], and writes replies through the one
//! [`Outbox`].
//!
//! Hot path: a blocking reader thread polls each request's future once. Methods that are
//! already complete (`core_ping`, `auth_get_state`, ...) are answered right there, with no
//! thread hop, and output is flushed only once no more input is buffered. Futures that are
//! still pending go to the tokio runtime, bounded by a semaphore: past the bound the reader
//! waits instead of growing memory.

mod dispatch;
mod framing;
mod outbox;

use std::future::Future;
use std::io::Read;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use jsonrpsee::core::server::Methods;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

pub use dispatch::{Dispatcher, Reply};
pub use framing::{Frame, LineReader};
pub use outbox::Outbox;

/// Limits of the transport (docs/protocol.md, "Wire rules").
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_in_flight: usize,
    pub max_line_bytes: usize,
}

/// Requests handled at once by default (`CORE_SIDECAR_MAX_IN_FLIGHT`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Longest accepted line by default, 16 MiB (`CORE_SIDECAR_MAX_LINE_BYTES`).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// Why the reader stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The client closed our stdin.
    Eof,
    /// The client closed our stdout: nobody can read replies any more.
    OutputClosed,
    /// Reading failed.
    Failed(std::io::ErrorKind),
}

/// Requests handed to the runtime and not yet answered.
#[derive(Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
    max: u32,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS) as u32;
        Self {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }

    /// Waits until every request in flight has finished, at most `timeout`. Returns whether
    /// they all did.
    pub async fn drain(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.permits.acquire_many(self.max))
            .await
            .is_ok_and(|permit| permit.is_ok())
    }
}

/// Reads requests from `input` until EOF and answers them through `outbox`. Blocking: run it
/// on its own thread. `runtime` runs the handlers that do not complete at once.
pub fn serve_blocking(
    input: impl Read,
    outbox: &Outbox,
    methods: impl Into<Methods>,
    limits: Limits,
    in_flight: &InFlight,
    runtime: &Handle,
) -> ReadEnd {
    // Entering the runtime lets handlers polled here register timers and sockets.
    let _enter = runtime.enter();
    let dispatcher = Dispatcher::new(methods);
    let mut reader = LineReader::new(input, limits.max_line_bytes);
    let mut line = Vec::with_capacity(1024);
    loop {
        if outbox.is_closed() {
            return ReadEnd::OutputClosed;
        }
        let frame = match reader.next_line(&mut line) {
            Ok(frame) => frame,
            Err(e) => {
                outbox.flush();
                return ReadEnd::Failed(e.kind());
            }
        };
        match frame {
            Frame::Eof => {
                outbox.flush();
                return ReadEnd::Eof;
            }
            Frame::TooLong => outbox.write_line_buffered(dispatch::line_too_long().as_bytes()),
            Frame::Line => match dispatcher.handle_line(&line) {
                Reply::Now(reply) => write_now(outbox, reply),
                Reply::Later(future) => run_pending(future, outbox, in_flight, runtime),
            },
        }
        if reader.is_drained() {
            outbox.flush();
        }
    }
}

fn write_now(outbox: &Outbox, reply: Option<String>) {
    if let Some(reply) = reply {
        outbox.write_line_buffered(reply.as_bytes());
    }
}

/// Polls a handler's future once on the reader thread; if it is not done, spawns it under
/// the in-flight bound.
fn run_pending(
    future: futures::future::BoxFuture<'static, Option<String>>,
    outbox: &Outbox,
    in_flight: &InFlight,
    runtime: &Handle,
) {
    let mut future = future;
    if let Poll::Ready(reply) = poll_once(&mut future) {
        write_now(outbox, reply);
        return;
    }
    let permit = match in_flight.permits.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            // Backpressure: flush what we have so the client can make progress, then wait.
            outbox.flush();
            match runtime.block_on(in_flight.permits.clone().acquire_owned()) {
                Ok(permit) => permit,
                Err(_) => return,
            }
        }
    };
    let outbox = outbox.clone();
    runtime.spawn(async move {
        if let Some(reply) = future.await {
            outbox.write_line(reply.as_bytes());
        }
        drop(permit);
    });
}

fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(future).poll(&mut cx)
}

#[cfg(test)]
mod tests {
    use std::io::{self, Cursor, Write};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use jsonrpsee::RpcModule;

    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A parent that closed our stdout.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    fn module() -> RpcModule<()> {
        let mut module = RpcModule::new(());
        module.register_method("ping", |_, _, _| "pong").unwrap();
        module
            .register_async_method("later", |_, _, _| async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                "done"
            })
            .unwrap();
        module
    }

    fn serve(input: &str, output: impl Write + Send + 'static) -> (ReadEnd, Outbox) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let outbox = Outbox::new(output);
        let in_flight = InFlight::new(4);
        let end = serve_blocking(
            Cursor::new(input.to_string()),
            &outbox,
            module(),
            Limits::default(),
            &in_flight,
            runtime.handle(),
        );
        assert!(runtime.block_on(in_flight.drain(Duration::from_secs(5))));
        outbox.flush();
        (end, outbox)
    }

    #[test]
    fn answers_every_request_in_memory_then_reports_eof() {
        let mut input = String::new();
        for id in 0..100 {
            let method = if id % 3 == 0 { "later" } else { "ping" };
            input.push_str(&format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"{method}\"}}\n"
            ));
        }
        input.push_str("not json\n");
        let output = Captured::default();
        let (end, _) = serve(&input, output.clone());
        assert_eq!(end, ReadEnd::Eof);

        let text = String::from_utf8(output.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("whole JSON lines"))
            .collect();
        assert_eq!(lines.len(), 101);
        let mut ids: Vec<i64> = lines.iter().filter_map(|l| l["id"].as_i64()).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        assert!(lines.iter().any(|l| l["error"]["code"] == -32700));
    }

    #[test]
    fn stops_reading_when_output_is_closed() {
        let input = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n".repeat(10);
        let (end, outbox) = serve(&input, Closed);
        assert_eq!(end, ReadEnd::OutputClosed);
        assert!(outbox.is_closed());
    }
}
