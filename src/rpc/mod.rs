//! The stdio transport: JSON-RPC 2.0 over newline-delimited JSON.
//!
//! It knows nothing about sessions or domains: it reads lines, hands each to the method table
//! ([`Methods`], filled by the app) through [`dispatch::Dispatcher`], and writes replies
//! through the one [`Outbox`]. What it must know of the methods comes in [`Limits`]: the names of the ones
//! admitted into a reserve past the in-flight bound ([`Limits::reserved_methods`]).
//!
//! **One thread.** [`serve`] is a task of a current-thread runtime, and the handlers it
//! starts, the HTTP client's connection tasks, timers and signals all run on that same
//! thread. stdin and stdout are read and written there too when they are pipes or sockets
//! (Linux, macOS: non-blocking descriptors registered with the runtime's reactor, see
//! [`stdio`]); anything else (a terminal, a file, Windows) gets a reader thread and a writer
//! thread ([`Input::from_reader`], [`Outbox::new`]). So a gated call sleeps twice, once for
//! its backend and once for the next request, and never hands itself from one thread to
//! another; the only blocking work, keyring calls, runs on threads of its own
//! (`session::store`), and nothing on this thread ever waits on a pipe.
//!
//! **The reader never waits for a handler.** For each request line (each batch member), in
//! order:
//!
//! 1. a method with a sync handler (`core_ping`, `core_version`, `rpc.discover`) runs right
//!    there and is answered inline: no slot, no task;
//! 2. an async handler needs a slot of the in-flight bound ([`InFlight`],
//!    `CORE_SIDECAR_MAX_IN_FLIGHT`). Past the bound a **new** request is refused before its
//!    handler starts, so no half-started work is ever dropped: `-32002` `rate_limited`
//!    without a `status` (see `dispatch::refused`). Methods in [`Limits::reserved_methods`]
//!    are admitted past the bound, into a reserve of the same size again, so they run even
//!    when every other slot hangs on a slow upstream;
//! 3. an admitted handler is polled once, inline; if it is done (`auth_get_state` once the
//!    session is loaded, a bad param, `no_session`) it is answered inline and its slot is
//!    free again at once. Otherwise it is spawned as a task with its slot, and the slot is
//!    released once its reply is queued. A panic in a handler, on that first poll or later,
//!    is caught around the handler (`-32603` for that request only): the loop goes on.
//!
//! A batch is admitted member by member (each pending member holds one slot, until the
//! batch's one reply line is queued), so a batch cannot get around the bound; its refused
//! members get the refusal in their place in the batch answer. The reader itself never
//! waits for a slot; memory stays bounded because pending work is bounded by the slots and a
//! refusal costs one short line.
//!
//! **Output** is written once no more input is buffered (one write for a pipelined burst),
//! and a spawned handler's reply as soon as it is ready, by non-blocking writes on this
//! thread. The only thing the reader waits for is stdout itself: when the shell stops reading
//! it, the reader stops reading stdin once [`Outbox::backlog`] passes
//! [`FLUSH_BACKLOG_BYTES`] and waits, asynchronously, until the output is written (see
//! [`outbox`]). [`hangup`] notices a closed stdout or stdin without a read or a write, so the
//! shutdown never depends on the reader.
//!
//! **Cancellation** (`$/cancelRequest`, as in LSP) is the transport's own: pending requests
//! are tracked by id and a cancel drops the one it names and answers -32800 `cancelled` in
//! its place; its slot is freed once that answer is queued (see `dispatch`). What must not
//! stop half-way is up to the method table.
//!
//! **Request bytes are zeroed** once dispatched: the read buffer's bytes and any line put
//! together across reads ([`framing`]) and the reader thread's chunks. Handlers read their
//! params from the line before they return, so no copy of the raw params outlives it (see
//! [`methods`]).

mod dispatch;
mod framing;
pub mod hangup;
mod input;
mod methods;
mod outbox;
pub mod stdio;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub use dispatch::{Admit, Dispatcher, Reply, Ticket};
pub use framing::{Frame, LineReader};
pub use input::Input;
pub use methods::{Answer, AsyncHandler, Handler, Methods, SyncHandler};
pub use outbox::Outbox;

use framing::{Framer, Step};

/// Limits of the transport (docs/protocol.md, "Wire rules").
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests pending at once (batch members counted one each); past it new requests are
    /// refused, except reserved methods.
    pub max_in_flight: usize,
    pub max_line_bytes: usize,
    /// Methods admitted past `max_in_flight`, into a reserve of the same size (the app
    /// reserves its session methods, so a shell can still read its state, sign out and
    /// refresh while every other slot hangs on a slow upstream). Only async handlers are ever
    /// counted, so sync ones need not be listed.
    pub reserved_methods: &'static [&'static str],
}

/// Requests handled at once by default (`CORE_SIDECAR_MAX_IN_FLIGHT`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Longest accepted line by default, 16 MiB (`CORE_SIDECAR_MAX_LINE_BYTES`).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// Unwritten output past which the reader reads no more input until it is written.
pub const FLUSH_BACKLOG_BYTES: usize = 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            reserved_methods: &[],
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

/// The in-flight bound: requests handed to the runtime and not yet answered, counted in
/// slots. `bound` slots for any request, and a reserve of `bound` more that only local
/// methods may use.
#[derive(Clone)]
pub struct InFlight {
    slots: Arc<Semaphore>,
    bound: usize,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        let bound = max.clamp(1, (u32::MAX as usize).min(Semaphore::MAX_PERMITS) / 2);
        Self {
            slots: Arc::new(Semaphore::new(2 * bound)),
            bound,
        }
    }

    /// The bound (`CORE_SIDECAR_MAX_IN_FLIGHT`, clamped to at least 1).
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// Requests pending now.
    pub fn pending(&self) -> usize {
        2 * self.bound - self.slots.available_permits()
    }

    /// A slot for a new request, or `Refuse`: any request while fewer than `bound` are
    /// pending, a local one while fewer than twice that. Never waits.
    pub fn admit(&self, local: bool) -> Admit {
        // Only the reader takes slots (the drain aside), so the count cannot drop between the
        // check and the take.
        let room = if local { 0 } else { self.bound };
        if self.slots.available_permits() <= room {
            return Admit::Refuse(self.bound);
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(ticket) => Admit::Run(Some(ticket)),
            Err(_) => Admit::Refuse(self.bound),
        }
    }

    /// Waits until every request in flight has been answered (its reply queued), at most
    /// `timeout`. Returns whether they all were. New requests are refused meanwhile.
    pub async fn drain(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.idle()).await.is_ok()
    }

    /// Waits until no request is in flight. New requests are refused meanwhile.
    pub async fn idle(&self) {
        let all = (2 * self.bound) as u32;
        let _ = self.slots.acquire_many(all).await;
    }
}

/// Reads requests from `input` until EOF and answers them through `outbox`. Must run on a
/// runtime (a task of it, usually: see the module docs); handlers that do not complete at
/// once are spawned onto it. Never waits for a handler or a slot (only, when the shell stops
/// reading stdout, for stdout).
pub async fn serve(
    mut input: Input,
    outbox: Outbox,
    dispatcher: Dispatcher,
    limits: Limits,
    in_flight: InFlight,
) -> ReadEnd {
    let mut admit = |method: &str| in_flight.admit(limits.reserved_methods.contains(&method));
    let mut framer = Framer::new(limits.max_line_bytes);
    loop {
        if outbox.is_closed() {
            return ReadEnd::OutputClosed;
        }
        match framer.next() {
            Step::Line(line) => match dispatcher.handle_line_admitted(line, &mut admit) {
                (Reply::Now(Some(reply)), _) => outbox.queue_line(reply.as_bytes()),
                (Reply::Now(None), _) => {}
                (Reply::Later(future), tickets) => {
                    let outbox = outbox.clone();
                    tokio::spawn(async move {
                        let reply = future.await;
                        outbox.write_line_releasing(reply.as_deref().map(str::as_bytes), tickets);
                    });
                }
            },
            Step::TooLong => outbox.queue_line(dispatch::line_too_long().as_bytes()),
            Step::Eof => {
                outbox.flush();
                return ReadEnd::Eof;
            }
            Step::NeedInput => {
                // Nothing more is buffered: write the replies before waiting for input.
                outbox.flush();
                match input.read(framer.space()).await {
                    Ok(n) => framer.filled(n),
                    Err(e) => return ReadEnd::Failed(e.kind()),
                }
                continue;
            }
        }
        if outbox.backlog() >= FLUSH_BACKLOG_BYTES {
            // The shell is not keeping up: read no more until what waits is written.
            outbox.flush();
            if outbox.backlog() >= FLUSH_BACKLOG_BYTES {
                outbox.drained().await;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::{self, Cursor, Write};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::FutureExt;
    use serde_json::Value;

    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        fn json_lines(&self) -> Vec<Value> {
            self.text()
                .lines()
                .map(|l| serde_json::from_str(l).expect("whole JSON lines"))
                .collect()
        }
    }

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
    pub(crate) struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    /// `ping` (sync), `later` (async, done after 1 ms), `hang` (async, never done; stands for
    /// a call hanging on an upstream) and `local` (async, never done, but listed as local).
    fn module() -> Methods {
        let mut module = Methods::new();
        module.add_sync("ping", |_| Ok(r#""pong""#.into()));
        module.add_async("later", |_| {
            async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(r#""done""#.into())
            }
            .boxed()
        });
        module.add_async("hang", |_| std::future::pending().boxed());
        module.add_async("local", |_| std::future::pending().boxed());
        module
    }

    fn limits(max_in_flight: usize) -> Limits {
        Limits {
            max_in_flight,
            reserved_methods: &["local"],
            ..Limits::default()
        }
    }

    fn request(id: impl std::fmt::Display, method: &str) -> String {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}"}}"#)
    }

    /// Serves `input` to EOF on a current-thread runtime, the way the app does. The reader
    /// returns whatever its requests do (a hanging one included); the in-flight ones are then
    /// given `drain` to finish. Returns how many were pending when the reader returned.
    fn serve(
        input: &str,
        output: impl Write + Send + 'static,
        limits: Limits,
        drain: Duration,
    ) -> (ReadEnd, Outbox, usize) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outbox = Outbox::new(output);
        let in_flight = InFlight::new(limits.max_in_flight);
        let input = Input::from_reader(Cursor::new(input.to_string())).unwrap();
        let (end, pending) = runtime.block_on(async {
            let dispatcher = Dispatcher::new(module());
            let end =
                super::serve(input, outbox.clone(), dispatcher, limits, in_flight.clone()).await;
            let pending = in_flight.pending();
            in_flight.drain(drain).await;
            tokio::time::timeout(TIMEOUT, outbox.drained())
                .await
                .expect("output written");
            (end, pending)
        });
        runtime.shutdown_background();
        (end, outbox, pending)
    }

    #[test]
    fn answers_every_request_in_memory_then_reports_eof() {
        let mut input = String::new();
        for id in 0..100 {
            let method = if id % 3 == 0 { "later" } else { "ping" };
            input.push_str(&request(id, method));
            input.push('\n');
        }
        input.push_str("not json\n");
        let output = Captured::default();
        let (end, _, _) = serve(&input, output.clone(), limits(4), TIMEOUT);
        assert_eq!(end, ReadEnd::Eof);

        let lines = output.json_lines();
        assert_eq!(lines.len(), 101);
        let mut ids: Vec<i64> = lines.iter().filter_map(|l| l["id"].as_i64()).collect();
        ids.sort_unstable();
        // 34 `later` calls and a bound of 4: pending ones past the bound would have been
        // refused, so every id answered with a result means none was pending long.
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        assert!(lines.iter().any(|l| l["error"]["code"] == -32700));
    }

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Every slot hangs: the reader still reads to EOF, refuses what needs a slot, and
    /// answers sync methods and local ones (from the reserve) without waiting.
    #[test]
    fn past_the_bound_new_requests_are_refused_and_the_reader_never_waits() {
        let mut input = String::new();
        for id in 0..5 {
            input.push_str(&request(id, "hang"));
            input.push('\n');
        }
        input.push_str(&request(10, "ping"));
        input.push('\n');
        for id in 20..25 {
            input.push_str(&request(id, "local"));
            input.push('\n');
        }
        // A notification past the bound is dropped silently.
        input.push_str("{\"jsonrpc\":\"2.0\",\"method\":\"hang\"}\n");
        let output = Captured::default();
        // No drain: the hanging requests never end.
        let (end, _, pending) = serve(&input, output.clone(), limits(2), Duration::ZERO);
        assert_eq!(end, ReadEnd::Eof, "the reader got to the end");
        assert_eq!(pending, 2 + 2, "two hang, two local in the reserve");

        let lines = output.json_lines();
        let ids: Vec<i64> = lines.iter().map(|l| l["id"].as_i64().unwrap()).collect();
        // Hangs 0 and 1 fill the bound, locals 20 and 21 the reserve; the rest is refused.
        assert_eq!(ids, [2, 3, 4, 10, 22, 23, 24], "{lines:?}");
        for refused in lines.iter().filter(|l| l["id"] != 10) {
            assert_eq!(refused["error"]["code"], -32002, "{refused}");
            assert_eq!(
                refused["error"]["data"]["kind"], "rate_limited",
                "{refused}"
            );
            assert_eq!(refused["error"]["data"]["retryable"], true, "{refused}");
            assert!(
                refused["error"]["data"].get("status").is_none(),
                "{refused}"
            );
            let message = refused["error"]["message"].as_str().unwrap();
            assert!(message.contains("bound is 2"), "{message}");
        }
        assert_eq!(lines[3]["result"], "pong");
    }

    /// A batch takes one slot per pending member; members past the bound are refused in
    /// their place; the answer is one line in member order.
    #[test]
    fn batch_members_count_one_each_against_the_bound() {
        let members: Vec<String> = (0..6)
            .map(|id| request(id, if id == 3 { "ping" } else { "hang" }))
            .collect();
        let input = format!("[{}]\n{}\n", members.join(","), request(9, "hang"));
        let output = Captured::default();
        let (end, _, pending) = serve(&input, output.clone(), limits(2), Duration::ZERO);
        assert_eq!(end, ReadEnd::Eof);
        assert_eq!(pending, 2, "two members hang, each in a slot");
        // The batch never completes (two members hang); the request after it is refused.
        let lines = output.json_lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["id"], 9);
        assert_eq!(lines[0]["error"]["code"], -32002);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_answer_keeps_member_order_with_refusals_in_place() {
        let in_flight = InFlight::new(2);
        let dispatcher = Dispatcher::new(module());
        let members: Vec<String> = (0..5)
            .map(|id| request(id, if id == 1 { "ping" } else { "later" }))
            .collect();
        let line = format!("[{}]", members.join(","));
        let mut admit = |method: &str| in_flight.admit(method == "local");
        let (reply, tickets) = dispatcher.handle_line_admitted(line.as_bytes(), &mut admit);
        assert_eq!(tickets.len(), 2, "two pending members, one slot each");
        assert_eq!(in_flight.pending(), 2);
        let Reply::Later(future) = reply else {
            panic!("pending members: the batch completes later");
        };
        let answer: Vec<Value> = serde_json::from_str(&future.await.unwrap()).unwrap();
        let ids: Vec<i64> = answer.iter().map(|a| a["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4], "member order");
        assert_eq!(answer[0]["result"], "done");
        assert_eq!(answer[1]["result"], "pong");
        assert_eq!(answer[2]["result"], "done");
        for refused in &answer[3..] {
            assert_eq!(refused["error"]["code"], -32002, "{refused}");
        }
        drop(tickets);
        assert_eq!(in_flight.pending(), 0, "slots free once the answer is out");
    }

    /// A request done on its first poll on the reader thread takes no slot, even at the bound.
    #[tokio::test(start_paused = true)]
    async fn a_request_done_on_its_first_poll_frees_its_slot_at_once() {
        let mut module = Methods::new();
        module.add_async("ready", |_| async { Ok(r#""ready""#.into()) }.boxed());
        let dispatcher = Dispatcher::new(module);
        let in_flight = InFlight::new(1);
        let mut admit = |_: &str| in_flight.admit(false);
        for id in 0..3 {
            let (reply, tickets) =
                dispatcher.handle_line_admitted(request(id, "ready").as_bytes(), &mut admit);
            assert!(tickets.is_empty());
            let Reply::Now(Some(reply)) = reply else {
                panic!("answered inline");
            };
            assert!(reply.contains(r#""result":"ready""#), "{reply}");
        }
        assert_eq!(in_flight.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_the_slots_and_is_bounded() {
        let in_flight = InFlight::new(2);
        let Admit::Run(Some(ticket)) = in_flight.admit(false) else {
            panic!("a slot");
        };
        let start = tokio::time::Instant::now();
        assert!(!in_flight.drain(Duration::from_secs(5)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        drop(ticket);
        assert!(in_flight.drain(Duration::from_secs(5)).await);
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(5),
            "at once when none is pending"
        );
    }

    /// Pings that never end.
    struct Endless;

    impl io::Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let line = format!("{}\n", request(1, "ping"));
            let n = line.len().min(buf.len());
            buf[..n].copy_from_slice(&line.as_bytes()[..n]);
            Ok(n)
        }
    }

    /// Input never ends: the reader stops because its replies cannot be written.
    #[test]
    fn stops_reading_when_output_is_closed() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outbox = Outbox::new(Closed);
        let end = runtime.block_on(async {
            let input = Input::from_reader(Endless).unwrap();
            let serve = super::serve(
                input,
                outbox.clone(),
                Dispatcher::new(module()),
                limits(4),
                InFlight::new(4),
            );
            tokio::time::timeout(TIMEOUT, serve)
                .await
                .expect("the reader stops")
        });
        assert_eq!(end, ReadEnd::OutputClosed);
        assert!(outbox.is_closed());
    }

    /// The path the binary takes on Linux: stdin and stdout are pipes in non-blocking mode,
    /// read and written on the runtime's one thread. A burst larger than the output pipe
    /// holds is answered in full, in order, while the test reads slowly; then EOF.
    #[cfg(target_os = "linux")]
    #[test]
    fn nonblocking_pipes_on_one_thread_answer_a_burst_larger_than_the_pipe() {
        use std::io::{BufRead, BufReader};
        use std::os::fd::AsRawFd;

        fn nonblocking(fd: &impl AsRawFd) {
            let fd = fd.as_raw_fd();
            // SAFETY: F_GETFL/F_SETFL on descriptors this test owns; no pointer is passed.
            unsafe {
                let flags = nix::libc::fcntl(fd, nix::libc::F_GETFL);
                assert!(flags >= 0);
                assert_eq!(
                    nix::libc::fcntl(fd, nix::libc::F_SETFL, flags | nix::libc::O_NONBLOCK),
                    0
                );
            }
        }

        const REQUESTS: usize = 5_000;
        let (in_reader, mut in_writer) = std::io::pipe().unwrap();
        let (out_reader, out_writer) = std::io::pipe().unwrap();
        nonblocking(&in_reader);
        nonblocking(&out_writer);
        let client = std::thread::spawn(move || {
            let mut burst = String::new();
            for id in 0..REQUESTS {
                let method = if id % 10 == 0 { "later" } else { "ping" };
                burst.push_str(&request(id, method));
                burst.push('\n');
            }
            in_writer.write_all(burst.as_bytes()).unwrap();
        });
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for line in BufReader::new(out_reader).lines() {
                let line: Value = serde_json::from_str(&line.unwrap()).unwrap();
                assert!(line.get("result").is_some(), "{line}");
                ids.push(line["id"].as_u64().unwrap() as usize);
            }
            ids
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let end = runtime.block_on(async {
            let input = Input::from_nonblocking_fd(std::fs::File::from(
                std::os::fd::OwnedFd::from(in_reader),
            ))
            .unwrap();
            let outbox = Outbox::from_nonblocking_fd(std::fs::File::from(
                std::os::fd::OwnedFd::from(out_writer),
            ))
            .unwrap();
            assert!(input.is_async_fd() && outbox.is_async_fd());
            let in_flight = InFlight::new(REQUESTS);
            let serve = super::serve(
                input,
                outbox.clone(),
                Dispatcher::new(module()),
                limits(REQUESTS),
                in_flight.clone(),
            );
            let end = tokio::time::timeout(TIMEOUT, serve).await.expect("EOF");
            assert!(in_flight.drain(TIMEOUT).await);
            tokio::time::timeout(TIMEOUT, outbox.drained())
                .await
                .expect("written");
            end
        });
        runtime.shutdown_background();
        client.join().unwrap();
        assert_eq!(end, ReadEnd::Eof);
        let mut ids = reader.join().unwrap();
        let pings: Vec<usize> = ids.iter().copied().filter(|id| id % 10 != 0).collect();
        assert!(pings.is_sorted(), "inline replies keep their order");
        ids.sort_unstable();
        assert_eq!(ids, (0..REQUESTS).collect::<Vec<_>>());
    }
}
