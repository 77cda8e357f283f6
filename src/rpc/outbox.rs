//! The one writer of stdout: every protocol line goes through here, whole, in the order it
//! was queued. Nothing here ever blocks the loop's thread on a full pipe.
//!
//! Lines are appended to one in-memory queue under a short lock. How the queue reaches the
//! output depends on the output:
//!
//! - **A non-blocking descriptor** ([`Outbox::from_nonblocking_fd`]: stdout when it is a pipe
//!   or a socket on Linux and macOS, see [`super::stdio`]). Whoever queues a line writes the
//!   queue out right there, with a non-blocking `write(2)`, on its own thread (the loop's, for
//!   every reply): no thread hop. A write that would block leaves the rest in the queue and
//!   wakes the outbox's task, which waits on the runtime for the descriptor to become
//!   writable and writes the rest; meanwhile lines are only queued.
//! - **Any [`Write`]** ([`Outbox::new`]: a terminal, a file, every output on Windows, and the
//!   tests' buffers): a writer thread of its own does every write, since any write may block.
//!
//! The reader queues its inline replies with [`Outbox::queue_line`] and writes them with one
//! [`Outbox::flush`] once its input is drained (a pipelined burst costs one write); everything
//! else uses [`Outbox::write_line`]. When the shell stops reading, the queue grows; the reader
//! then stops reading input once [`Outbox::backlog`] passes its high-water mark and waits,
//! asynchronously, for [`Outbox::drained`]: memory stays bounded and the runtime (timers,
//! signals, the shutdown) keeps running. Shutdown waits for the queue at most a deadline.
//!
//! Once a write fails (the shell closed our stdout) or [`Outbox::close`] is called (a watcher
//! saw the pipe's read end go, see [`super::hangup`]), the outbox is closed: queued and later
//! lines are dropped and [`Outbox::closed`] resolves.

use std::io::{self, Write};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::{Notify, watch};

/// A write buffer larger than this is not kept after a burst (a huge batch answer, say).
const KEEP_BUFFER_BYTES: usize = 256 * 1024;

/// A cloneable handle to the output. Lines are written whole and in queue order; once the
/// output is closed, lines are dropped.
#[derive(Clone)]
pub struct Outbox {
    handle: Arc<Handle>,
}

/// Dropped with the last [`Outbox`] clone: what is queued is written, then the writer stops.
struct Handle(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
    /// Bytes queued and not yet written, readable without the lock.
    unwritten: AtomicUsize,
    closed: AtomicBool,
    closed_tx: watch::Sender<bool>,
    /// Signalled when writing made progress (or the output closed), for [`Outbox::drained`].
    progress: Notify,
    /// Callers waiting on `progress`: no signal is sent while there are none.
    progress_waiters: AtomicUsize,
    sink: Sink,
}

enum Sink {
    /// A non-blocking descriptor, written by whoever queues (see the module docs).
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    Fd {
        fd: tokio::io::unix::AsyncFd<std::fs::File>,
        /// Wakes the task that writes once the descriptor is writable again.
        unblock: Notify,
    },
    /// Any writer, written by a writer thread of its own.
    Thread {
        /// Wakes the writer thread.
        work: Condvar,
        out: Mutex<Box<dyn Write + Send>>,
    },
}

#[derive(Default)]
struct State {
    queue: Vec<u8>,
    /// `queue[head..]` is not written yet (the start went out in a short write).
    head: usize,
    /// A non-blocking write would have blocked: the unblock task writes the queue until it
    /// is empty, and nobody else writes meanwhile.
    #[cfg_attr(not(any(target_os = "linux", target_os = "macos")), allow(dead_code))]
    blocked: bool,
    /// Bytes the writer thread has taken off the queue and not yet written.
    writing: usize,
    /// The writer thread has been asked to write the queue out.
    kicked: bool,
    /// The writer thread is waiting on `work` (so a kick needs a wake-up).
    writer_waiting: bool,
    /// No writer thread could be started: flushes then write themselves.
    no_writer: bool,
    /// Every [`Outbox`] is gone.
    stopped: bool,
}

/// What a round of non-blocking writes got to.
#[cfg(any(target_os = "linux", target_os = "macos"))]
enum Wrote {
    All,
    WouldBlock,
}

impl Outbox {
    /// An outbox over any writer, written by a writer thread of its own (any write may block).
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        let shared = Shared::new(Sink::Thread {
            work: Condvar::new(),
            out: Mutex::new(Box::new(writer)),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("core-sidecar-writer".into())
                .spawn(move || shared.writer_thread())
        };
        if let Err(e) = writer {
            tracing::warn!(error = %e, "cannot start the stdout writer thread; writing inline");
            shared.lock_state().no_writer = true;
        }
        Self::with(shared)
    }

    /// An outbox over a descriptor already in non-blocking mode (a pipe or a socket), written
    /// on the caller's thread and, when it would block, by a task of the current runtime.
    /// Must be called within the runtime.
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    pub fn from_nonblocking_fd(file: std::fs::File) -> io::Result<Self> {
        // SAFETY: a `File` owns its descriptor: it stays open, on the same description, for
        // as long as the `AsyncFd` owns the `File`.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(file, tokio::io::Interest::WRITABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        let shared = Shared::new(Sink::Fd {
            fd,
            unblock: Notify::new(),
        });
        tokio::spawn(shared.clone().unblock_task());
        Ok(Self::with(shared))
    }

    fn with(shared: Arc<Shared>) -> Self {
        Self {
            handle: Arc::new(Handle(shared)),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.0
    }

    /// Whether lines are written by whoever queues them (a non-blocking descriptor) rather
    /// than by a writer thread.
    pub fn is_async_fd(&self) -> bool {
        !matches!(self.shared().sink, Sink::Thread { .. })
    }

    pub fn is_closed(&self) -> bool {
        self.shared().is_closed()
    }

    /// Resolves once the output is closed (a write failed, or [`Outbox::close`]).
    pub async fn closed(&self) {
        let mut closed = self.shared().closed_tx.subscribe();
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Closes the output: nobody reads it any more. Queued and later lines are dropped.
    pub fn close(&self) {
        self.shared().close(None);
    }

    /// Bytes queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.shared().unwritten.load(Ordering::SeqCst)
    }

    /// Queues one line without writing it: the reader's inline replies, written by its
    /// [`Outbox::flush`] once its input is drained.
    pub fn queue_line(&self, line: &[u8]) {
        let shared = self.shared();
        let mut state = shared.lock_state();
        shared.push(&mut state, line);
    }

    /// Starts writing what is queued: written now as far as the output takes it without
    /// blocking (a non-blocking descriptor), or handed to the writer thread. Never blocks.
    pub fn flush(&self) {
        let shared = self.shared();
        shared.flush(shared.lock_state());
    }

    /// Queues one line and writes it (see [`Outbox::flush`]). Never blocks.
    pub fn write_line(&self, line: &[u8]) {
        let shared = self.shared();
        let mut state = shared.lock_state();
        if shared.push(&mut state, line) {
            shared.flush(state);
        }
    }

    /// [`Outbox::write_line`], dropping `held` (in-flight slots) once the line is queued but
    /// before any of it can be written: a shell that has read the line finds the slot free,
    /// and whoever finds the slot free (the shutdown's drain) finds the line queued.
    pub fn write_line_releasing<T>(&self, line: Option<&[u8]>, held: T) {
        let shared = self.shared();
        let mut state = shared.lock_state();
        let queued = line.is_some_and(|line| shared.push(&mut state, line));
        drop(held);
        if queued {
            shared.flush(state);
        }
    }

    /// Writes what is queued and resolves once all of it is written, or dropped because the
    /// output closed. Never blocks a thread: put a deadline on it (`tokio::time::timeout`).
    pub async fn drained(&self) {
        self.flush();
        self.shared().wait_until_written().await;
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
}

impl Drop for Handle {
    fn drop(&mut self) {
        let shared = &self.0;
        let mut state = shared.lock_state();
        state.stopped = true;
        match &shared.sink {
            #[cfg(any(target_os = "linux", target_os = "macos"))]
            Sink::Fd { unblock, .. } => {
                unblock.notify_one();
                shared.flush(state);
            }
            Sink::Thread { work, .. } => {
                state.kicked |= !state.queue.is_empty();
                if state.writer_waiting {
                    work.notify_one();
                }
            }
        }
    }
}

impl Shared {
    fn new(sink: Sink) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            unwritten: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            closed_tx: watch::Sender::new(false),
            progress: Notify::new(),
            progress_waiters: AtomicUsize::new(0),
            sink,
        })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding a lock cannot leave a half line that matters more than
        // losing every later response, so recover the guard.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, state: &State) {
        let unwritten = state.queue.len() - state.head + state.writing;
        self.unwritten.store(unwritten, Ordering::SeqCst);
    }

    /// Appends a line to the queue; false if the output is closed (the line is dropped).
    fn push(&self, state: &mut State, line: &[u8]) -> bool {
        if self.is_closed() {
            return false;
        }
        state.queue.reserve(line.len() + 1);
        state.queue.extend_from_slice(line);
        state.queue.push(b'\n');
        self.count(state);
        true
    }

    /// See [`Outbox::flush`].
    fn flush(&self, mut state: MutexGuard<'_, State>) {
        if state.queue.len() == state.head {
            return;
        }
        match &self.sink {
            #[cfg(any(target_os = "linux", target_os = "macos"))]
            Sink::Fd { fd, unblock } => {
                if state.blocked {
                    // The unblock task writes it once the output takes more.
                    return;
                }
                match self.write_nonblocking(fd.get_ref(), &mut state) {
                    Ok(Wrote::All) => {
                        drop(state);
                        self.progressed();
                    }
                    Ok(Wrote::WouldBlock) => {
                        state.blocked = true;
                        drop(state);
                        unblock.notify_one();
                    }
                    Err(e) => {
                        drop(state);
                        self.close(Some(e));
                    }
                }
            }
            Sink::Thread { work, out } => {
                if state.no_writer {
                    drop(state);
                    self.write_inline(out);
                    return;
                }
                state.kicked = true;
                if state.writer_waiting {
                    work.notify_one();
                }
            }
        }
    }

    /// Writes the queue to a non-blocking descriptor until it is empty or would block.
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    fn write_nonblocking(&self, mut file: &std::fs::File, state: &mut State) -> io::Result<Wrote> {
        while state.head < state.queue.len() {
            match file.write(&state.queue[state.head..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => state.head += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    state.queue.drain(..state.head);
                    state.head = 0;
                    self.count(state);
                    return Ok(Wrote::WouldBlock);
                }
                Err(e) => return Err(e),
            }
        }
        state.queue.clear();
        state.head = 0;
        if state.queue.capacity() > KEEP_BUFFER_BYTES {
            state.queue = Vec::new();
        }
        self.count(state);
        Ok(Wrote::All)
    }

    /// The task that takes over a non-blocking descriptor's writes once one would block: waits
    /// for the descriptor to be writable, writes, until the queue is empty.
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    async fn unblock_task(self: Arc<Self>) {
        let Sink::Fd { fd, unblock } = &self.sink else {
            return;
        };
        let mut closed = self.closed_tx.subscribe();
        loop {
            tokio::select! {
                biased;
                _ = closed.wait_for(|closed| *closed) => return,
                () = unblock.notified() => {}
            }
            loop {
                {
                    let state = self.lock_state();
                    if !state.blocked {
                        if state.stopped {
                            return;
                        }
                        break;
                    }
                }
                let ready = tokio::select! {
                    biased;
                    _ = closed.wait_for(|closed| *closed) => return,
                    ready = fd.writable() => ready,
                };
                let mut ready = match ready {
                    Ok(ready) => ready,
                    Err(e) => return self.close(Some(e)),
                };
                let mut state = self.lock_state();
                match self.write_nonblocking(fd.get_ref(), &mut state) {
                    Ok(Wrote::All) => {
                        state.blocked = false;
                        drop(state);
                        self.progressed();
                    }
                    Ok(Wrote::WouldBlock) => {
                        drop(state);
                        self.progressed();
                        ready.clear_ready();
                    }
                    Err(e) => {
                        drop(state);
                        return self.close(Some(e));
                    }
                }
            }
        }
    }

    /// Writes the queue on this thread, blocking (only when no writer thread could start).
    fn write_inline(&self, out: &Mutex<Box<dyn Write + Send>>) {
        let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
        let pending = {
            let mut state = self.lock_state();
            let pending = std::mem::take(&mut state.queue);
            state.writing = pending.len();
            pending
        };
        let written = out.write_all(&pending).and_then(|()| out.flush());
        self.lock_state().writing = 0;
        self.unwritten.store(0, Ordering::SeqCst);
        self.progressed();
        if let Err(e) = written {
            self.close(Some(e));
        }
    }

    fn writer_thread(self: Arc<Self>) {
        // Irrefutable where only the thread sink exists (Windows).
        #[allow(irrefutable_let_patterns)]
        let Sink::Thread { work, out } = &self.sink else {
            return;
        };
        let mut spare = Vec::new();
        loop {
            {
                let mut state = self.lock_state();
                while !state.kicked && !state.stopped && !self.is_closed() {
                    state.writer_waiting = true;
                    state = work.wait(state).unwrap_or_else(|p| p.into_inner());
                    state.writer_waiting = false;
                }
                if self.is_closed() || (state.stopped && state.queue.is_empty()) {
                    return;
                }
                state.kicked = false;
                if state.queue.is_empty() {
                    continue;
                }
                spare.clear();
                std::mem::swap(&mut state.queue, &mut spare);
                state.writing = spare.len();
            }
            let written = {
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                out.write_all(&spare).and_then(|()| out.flush())
            };
            spare.clear();
            if spare.capacity() > KEEP_BUFFER_BYTES {
                spare = Vec::new();
            }
            {
                let mut state = self.lock_state();
                state.writing = 0;
                self.count(&state);
            }
            self.progressed();
            if let Err(e) = written {
                self.close(Some(e));
            }
        }
    }

    /// Wakes [`Shared::wait_until_written`] callers, if any.
    fn progressed(&self) {
        if self.progress_waiters.load(Ordering::SeqCst) > 0 {
            self.progress.notify_waiters();
        }
    }

    async fn wait_until_written(&self) {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.progress_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.progress_waiters);
        loop {
            let mut notified = pin!(self.progress.notified());
            notified.as_mut().enable();
            if self.is_closed() || self.unwritten.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn close(&self, error: Option<io::Error>) {
        let mut state = self.lock_state();
        let first = !self.closed.swap(true, Ordering::AcqRel);
        state.queue = Vec::new();
        state.head = 0;
        state.writing = 0;
        self.unwritten.store(0, Ordering::SeqCst);
        if let Sink::Thread { work, .. } = &self.sink
            && state.writer_waiting
        {
            work.notify_one();
        }
        drop(state);
        self.progress.notify_waiters();
        if first {
            self.closed_tx.send_replace(true);
            match error {
                Some(e) => tracing::warn!(error = %e, "stdout closed; dropping further output"),
                None => tracing::warn!("stdout's reader is gone; dropping further output"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::rpc::tests::{Captured, Closed};

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Runs `future` on `runtime` for at most `limit`; `None` if it did not finish.
    fn within<T>(
        runtime: &tokio::runtime::Runtime,
        limit: Duration,
        future: impl Future<Output = T>,
    ) -> Option<T> {
        runtime.block_on(async { tokio::time::timeout(limit, future).await.ok() })
    }

    /// A writer whose writes wait until the test lets them through (a full pipe), telling
    /// the test when one has started.
    struct Gated {
        entered: mpsc::Sender<()>,
        open: mpsc::Receiver<()>,
        out: Captured,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.open.recv();
            self.out.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_from_every_thread_come_out_whole_and_in_queue_order() {
        let out = Captured::default();
        let outbox = Outbox::new(out.clone());
        outbox.queue_line(b"1");
        outbox.write_line(b"2");
        outbox.queue_line(b"3");
        outbox.flush();
        std::thread::scope(|s| {
            for t in 0..4 {
                let outbox = outbox.clone();
                s.spawn(move || {
                    for i in 0..100 {
                        outbox.write_line(format!("t{t}-{i}").as_bytes());
                    }
                });
            }
        });
        within(&runtime(), TIMEOUT, outbox.drained()).expect("written");
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[..3], ["1", "2", "3"]);
        assert_eq!(lines.len(), 403);
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("t{t}-")))
                .collect();
            let expected: Vec<String> = (0..100).map(|i| format!("t{t}-{i}")).collect();
            assert_eq!(mine, expected, "each thread's lines in its order");
        }
    }

    /// The shell stopped reading: the writer thread is stuck in a write. Queuing from any
    /// thread still returns at once, and waiting for the output is bounded by its deadline.
    #[test]
    fn a_blocked_output_holds_neither_writers_nor_the_shutdown() {
        let (open, gate) = mpsc::channel();
        let (entered_tx, entered) = mpsc::channel();
        let out = Captured::default();
        let outbox = Outbox::new(Gated {
            entered: entered_tx,
            open: gate,
            out: out.clone(),
        });
        outbox.write_line(b"stuck");
        entered
            .recv_timeout(TIMEOUT)
            .expect("the writer thread is in its write, and stays there");
        let (done_tx, done) = mpsc::channel();
        {
            let outbox = outbox.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    outbox.write_line(format!("queued-{i}").as_bytes());
                    outbox.notify("event", &i);
                }
                outbox.flush();
                let _ = done_tx.send(());
            });
        }
        done.recv_timeout(TIMEOUT)
            .expect("queuing and flushing never wait for the blocked write");
        let runtime = runtime();
        assert!(
            within(&runtime, Duration::from_millis(50), outbox.drained()).is_none(),
            "nothing can be written while the output is blocked"
        );
        assert!(outbox.backlog() > 0);
        // The shell reads again: everything comes out, in order.
        drop(open);
        within(&runtime, TIMEOUT, outbox.drained()).expect("written");
        assert_eq!(outbox.backlog(), 0);
        let text = out.text();
        assert!(text.starts_with("stuck\nqueued-0\n"), "{}", &text[..40]);
        assert_eq!(text.lines().count(), 2001);
    }

    #[test]
    fn a_failed_write_closes_the_outbox_and_drops_later_lines() {
        let outbox = Outbox::new(Closed);
        let runtime = runtime();
        outbox.queue_line(b"lost");
        outbox.flush();
        within(&runtime, TIMEOUT, outbox.closed()).expect("closed by the failed write");
        assert!(outbox.is_closed());
        outbox.write_line(b"dropped");
        assert_eq!(outbox.backlog(), 0);
        within(&runtime, TIMEOUT, outbox.drained()).expect("nothing left to write");
    }

    #[test]
    fn close_is_seen_without_any_write() {
        let outbox = Outbox::new(Captured::default());
        outbox.close();
        assert!(outbox.is_closed());
        runtime().block_on(outbox.closed());
    }

    /// A non-blocking pipe: lines are written by whoever queues them until the pipe is full;
    /// then queuing still returns at once, and the task writes the rest as the pipe drains.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_nonblocking_pipe_is_written_by_the_task_once_it_drains() {
        use std::io::Read;
        use std::os::fd::{AsRawFd, OwnedFd};

        let (mut reader, writer) = std::io::pipe().unwrap();
        let fd = writer.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on a descriptor this test owns; no pointer is passed.
        unsafe {
            let flags = nix::libc::fcntl(fd, nix::libc::F_GETFL);
            assert_eq!(
                nix::libc::fcntl(fd, nix::libc::F_SETFL, flags | nix::libc::O_NONBLOCK),
                0
            );
        }
        let runtime = runtime();
        let _enter = runtime.enter();
        let outbox =
            Outbox::from_nonblocking_fd(std::fs::File::from(OwnedFd::from(writer))).unwrap();
        assert!(outbox.is_async_fd());
        let line = vec![b'x'; 1000];
        for _ in 0..1000 {
            outbox.write_line(&line);
        }
        assert!(outbox.backlog() > 0, "a megabyte does not fit in a pipe");
        assert!(
            within(&runtime, Duration::from_millis(50), outbox.drained()).is_none(),
            "nobody reads yet"
        );
        let drain = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            all
        });
        within(&runtime, TIMEOUT, outbox.drained()).expect("written once the pipe drains");
        drop(outbox);
        drop(_enter);
        drop(runtime);
        let all = drain.join().unwrap();
        assert_eq!(all.len(), 1000 * 1001);
        assert!(
            all.chunks(1001)
                .all(|l| l[..1000] == line[..] && l[1000] == b'\n')
        );
    }

    /// The read end goes: the next write fails and closes the outbox.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_nonblocking_pipe_without_reader_closes_the_outbox() {
        use std::os::fd::{AsRawFd, OwnedFd};

        let (reader, writer) = std::io::pipe().unwrap();
        let fd = writer.as_raw_fd();
        // SAFETY: as above.
        unsafe {
            let flags = nix::libc::fcntl(fd, nix::libc::F_GETFL);
            nix::libc::fcntl(fd, nix::libc::F_SETFL, flags | nix::libc::O_NONBLOCK);
        }
        let runtime = runtime();
        let _enter = runtime.enter();
        let outbox =
            Outbox::from_nonblocking_fd(std::fs::File::from(OwnedFd::from(writer))).unwrap();
        drop(reader);
        outbox.write_line(b"nobody reads this");
        assert!(outbox.is_closed());
        runtime.block_on(outbox.closed());
    }
}
