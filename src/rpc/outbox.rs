//! The one writer of stdout: every protocol line goes through here, whole, in the order it
//! was queued.
//!
//! Writing is split in two so that no thread that matters can be held by a full pipe:
//!
//! - **Queuing** appends the line to an in-memory queue under a short lock that is never held
//!   across a write. It never blocks on the pipe.
//! - **Writing** takes the whole queue and writes it under a second lock (the sink's), and may
//!   block on a full pipe. Two threads write: the reader thread, for its own inline replies
//!   ([`Outbox::try_flush`], the hot path: no thread hop), and the outbox's own writer thread,
//!   for everything queued elsewhere ([`Outbox::write_line`]: responses finished on the
//!   runtime, notifications). A tokio worker therefore never blocks on stdout, and the runtime
//!   (timers, signals, the shutdown) keeps running whatever the shell does with the pipe.
//!
//! When the shell stops reading, the writer blocks and the queue grows; the reader thread
//! then blocks in [`Outbox::flush`] once [`Outbox::backlog`] passes its high-water mark, so it
//! stops reading input: memory stays bounded. Shutdown waits for the queue at most a deadline
//! ([`Outbox::flush_within`]); nothing ever waits for a blocked write.
//!
//! Once a write fails (the shell closed our stdout) or [`Outbox::close`] is called (a watcher
//! saw the pipe's read end go, see [`super::hangup`]), the outbox is closed: queued and later
//! lines are dropped and [`Outbox::closed`] resolves.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

/// A write buffer larger than this is not kept after a burst (a huge batch answer, say).
const KEEP_BUFFER_BYTES: usize = 256 * 1024;

/// A cloneable handle to the output. Lines are written whole and in queue order; once the
/// output is closed, lines are dropped.
#[derive(Clone)]
pub struct Outbox {
    handle: Arc<Handle>,
}

/// Dropped with the last [`Outbox`] clone: the writer thread writes what is left and exits.
struct Handle(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread.
    work: Condvar,
    /// Wakes [`Outbox::flush_within`] callers once the queue is written (or dropped).
    idle: Condvar,
    /// The output; its lock is held across each write.
    sink: Mutex<Sink>,
    /// The queue's length, readable without the lock (the reader checks it every line).
    queued: AtomicUsize,
    closed: AtomicBool,
    closed_tx: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    queue: Vec<u8>,
    /// A writer took lines off the queue and has not written them all yet.
    writing: bool,
    /// The writer thread has been asked to write the queue out.
    kicked: bool,
    /// The writer thread is waiting on `work` (so a kick needs a wake-up).
    writer_waiting: bool,
    /// Callers waiting on `idle`.
    idle_waiters: usize,
    /// No writer thread could be started: `write_line` then writes itself.
    no_writer: bool,
    /// Every [`Outbox`] is gone.
    stopped: bool,
}

struct Sink {
    out: Box<dyn Write + Send>,
    /// The buffer swapped with the queue, so steady traffic allocates nothing.
    spare: Vec<u8>,
}

impl Outbox {
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            idle: Condvar::new(),
            sink: Mutex::new(Sink {
                out: Box::new(writer),
                spare: Vec::new(),
            }),
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            closed_tx: watch::Sender::new(false),
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
        Self {
            handle: Arc::new(Handle(shared)),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.0
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

    /// Bytes queued and not yet taken by a writer.
    pub fn backlog(&self) -> usize {
        self.shared().queued.load(Ordering::Relaxed)
    }

    /// Queues one line without writing it: the reader thread's replies, written by its own
    /// [`Outbox::try_flush`] once its input is drained (a pipelined burst costs one write).
    pub fn write_line_buffered(&self, line: &[u8]) {
        let shared = self.shared();
        let mut state = shared.lock_state();
        shared.push(&mut state, line);
    }

    /// Queues one line and has the writer thread write it: for responses and notifications
    /// produced off the reader thread. Never blocks on the output.
    pub fn write_line(&self, line: &[u8]) {
        let shared = self.shared();
        let mut state = shared.lock_state();
        if shared.push(&mut state, line) {
            drop(shared.kick(state));
        }
    }

    /// [`Outbox::write_line`], dropping `held` (in-flight slots) once the line is queued but
    /// before any writer can take it: a shell that has read the line finds the slot free, and
    /// whoever finds the slot free (the shutdown's drain) finds the line queued.
    pub fn write_line_releasing<T>(&self, line: Option<&[u8]>, held: T) {
        let shared = self.shared();
        let mut state = shared.lock_state();
        let queued = line.is_some_and(|line| shared.push(&mut state, line));
        drop(held);
        if queued {
            drop(shared.kick(state));
        }
    }

    /// Writes what is queued unless another thread is writing, in which case that writer is
    /// asked to take it too. Never waits for another writer; may block on a full pipe.
    pub fn try_flush(&self) {
        let shared = self.shared();
        match shared.sink.try_lock() {
            Ok(mut sink) => shared.write_out(&mut sink),
            Err(std::sync::TryLockError::Poisoned(p)) => shared.write_out(&mut p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                let state = shared.lock_state();
                drop(shared.kick(state));
            }
        }
    }

    /// Writes everything queued so far before returning, waiting for another writer if need
    /// be. Blocks while the output is full.
    pub fn flush(&self) {
        let shared = self.shared();
        shared.write_out(&mut shared.lock_sink());
    }

    /// Has the writer thread write everything queued, waiting at most `timeout`. Returns
    /// whether nothing is left to write (written, or dropped because the output closed).
    pub fn flush_within(&self, timeout: Duration) -> bool {
        let shared = self.shared();
        let deadline = Instant::now() + timeout;
        let mut state = shared.lock_state();
        if state.no_writer {
            drop(state);
            self.flush();
            return true;
        }
        if !state.queue.is_empty() {
            state = shared.kick(state);
        }
        loop {
            if shared.is_closed() || (state.queue.is_empty() && !state.writing) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state.idle_waiters += 1;
            state = shared
                .idle
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            state.idle_waiters -= 1;
        }
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
        let mut state = self.0.lock_state();
        state.stopped = true;
        if state.writer_waiting {
            self.0.work.notify_one();
        }
    }
}

impl Shared {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding a lock cannot leave a half line that matters more than
        // losing every later response, so recover the guard.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_sink(&self) -> MutexGuard<'_, Sink> {
        self.sink.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a line to the queue; false if the output is closed (the line is dropped).
    fn push(&self, state: &mut State, line: &[u8]) -> bool {
        if self.is_closed() {
            return false;
        }
        state.queue.reserve(line.len() + 1);
        state.queue.extend_from_slice(line);
        state.queue.push(b'\n');
        self.queued.store(state.queue.len(), Ordering::Relaxed);
        true
    }

    /// Asks the writer thread to write the queue out (or writes it here if there is none).
    fn kick<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        if state.no_writer {
            drop(state);
            self.write_out(&mut self.lock_sink());
            return self.lock_state();
        }
        state.kicked = true;
        if state.writer_waiting {
            self.work.notify_one();
        }
        state
    }

    /// Writes the queue until it is empty. The caller holds the sink.
    fn write_out(&self, sink: &mut Sink) {
        let Sink { out, spare } = sink;
        loop {
            {
                let mut state = self.lock_state();
                if state.queue.is_empty() || self.is_closed() {
                    state.writing = false;
                    if state.idle_waiters > 0 {
                        self.idle.notify_all();
                    }
                    return;
                }
                spare.clear();
                std::mem::swap(&mut state.queue, spare);
                self.queued.store(0, Ordering::Relaxed);
                state.writing = true;
            }
            let written = out.write_all(spare).and_then(|()| out.flush());
            spare.clear();
            if spare.capacity() > KEEP_BUFFER_BYTES {
                spare.shrink_to(KEEP_BUFFER_BYTES);
            }
            if let Err(e) = written {
                self.close(Some(e));
                return;
            }
        }
    }

    fn close(&self, error: Option<io::Error>) {
        let mut state = self.lock_state();
        let first = !self.closed.swap(true, Ordering::AcqRel);
        state.queue = Vec::new();
        self.queued.store(0, Ordering::Relaxed);
        state.writing = false;
        if state.idle_waiters > 0 {
            self.idle.notify_all();
        }
        drop(state);
        if first {
            self.closed_tx.send_replace(true);
            match error {
                Some(e) => tracing::warn!(error = %e, "stdout closed; dropping further output"),
                None => tracing::warn!("stdout's reader is gone; dropping further output"),
            }
        }
    }

    fn writer_thread(self: Arc<Self>) {
        loop {
            {
                let mut state = self.lock_state();
                while !state.kicked && !state.stopped {
                    state.writer_waiting = true;
                    state = self.work.wait(state).unwrap_or_else(|p| p.into_inner());
                    state.writer_waiting = false;
                }
                if !state.kicked && state.queue.is_empty() {
                    // Stopped, and nothing left to write.
                    return;
                }
                state.kicked = false;
            }
            self.write_out(&mut self.lock_sink());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::rpc::tests::{Captured, Closed};

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
        outbox.write_line_buffered(b"1");
        outbox.write_line(b"2");
        outbox.write_line_buffered(b"3");
        outbox.try_flush();
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
        assert!(outbox.flush_within(Duration::from_secs(10)));
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
    /// thread still returns at once, and the shutdown's flush gives up at its deadline.
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
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer thread is in its write, and stays there");
        let (done_tx, done) = mpsc::channel();
        {
            let outbox = outbox.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    outbox.write_line(format!("queued-{i}").as_bytes());
                    outbox.notify("event", &i);
                }
                outbox.try_flush();
                let _ = done_tx.send(());
            });
        }
        done.recv_timeout(Duration::from_secs(10))
            .expect("queuing and try_flush never wait for the blocked write");
        assert!(
            !outbox.flush_within(Duration::from_millis(50)),
            "nothing can be written while the output is blocked"
        );
        // The shell reads again: everything comes out, in order.
        drop(open);
        assert!(outbox.flush_within(Duration::from_secs(10)));
        let text = out.text();
        assert!(text.starts_with("stuck\nqueued-0\n"), "{}", &text[..40]);
        assert_eq!(text.lines().count(), 2001);
    }

    #[test]
    fn a_failed_write_closes_the_outbox_and_drops_later_lines() {
        let outbox = Outbox::new(Closed);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        outbox.write_line_buffered(b"lost");
        outbox.flush();
        assert!(outbox.is_closed());
        runtime.block_on(outbox.closed());
        outbox.write_line(b"dropped");
        assert_eq!(outbox.backlog(), 0);
        assert!(outbox.flush_within(Duration::from_secs(10)));
    }

    #[test]
    fn close_is_seen_without_any_write() {
        let outbox = Outbox::new(Captured::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        outbox.close();
        assert!(outbox.is_closed());
        runtime.block_on(outbox.closed());
    }
}
