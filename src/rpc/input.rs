//! Where the transport's input comes from, read asynchronously on the loop's thread.
//!
//! - **A non-blocking file descriptor** (Linux, macOS: stdin when it is a pipe or a socket,
//!   see [`super::stdio`]), registered with the runtime's reactor ([`AsyncFd`]): a read
//!   happens when the descriptor is readable, on the one thread that also runs the handlers.
//!   No thread hop.
//! - **A blocking reader thread** for anything else (a terminal, a file, any [`Read`], and
//!   every input on Windows): it reads chunks and hands them over a channel of one chunk, so
//!   when the loop stops taking input (stdout full) the thread stops reading too. Each chunk
//!   is zeroed once copied out.

use std::io::{self, Read};

use tokio::sync::mpsc;
use zeroize::Zeroize;

use super::framing::READ_BUFFER_BYTES;

/// The transport's input.
pub struct Input {
    kind: Kind,
}

enum Kind {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    Fd(tokio::io::unix::AsyncFd<std::fs::File>),
    Thread(Chunks),
}

/// Chunks read by the reader thread.
struct Chunks {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    taken: usize,
}

impl Input {
    /// Reads `reader` on a thread of its own (named `core-sidecar-reader`).
    pub fn from_reader(mut reader: impl Read + Send + 'static) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel(1);
        std::thread::Builder::new()
            .name("core-sidecar-reader".into())
            .spawn(move || {
                let mut buf = vec![0; READ_BUFFER_BYTES];
                loop {
                    let chunk = match reader.read(&mut buf) {
                        Ok(n) => {
                            let chunk = buf[..n].to_vec();
                            buf[..n].zeroize();
                            Ok(chunk)
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => Err(e),
                    };
                    let last = !matches!(&chunk, Ok(c) if !c.is_empty());
                    if tx.blocking_send(chunk).is_err() || last {
                        return;
                    }
                }
            })?;
        Ok(Self {
            kind: Kind::Thread(Chunks {
                rx,
                current: Vec::new(),
                taken: 0,
            }),
        })
    }

    /// A non-blocking descriptor, read when the reactor says it is readable. It must already
    /// be in non-blocking mode, and must be a pipe or a socket (what epoll and kqueue accept).
    /// Must be called within the runtime.
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    pub fn from_nonblocking_fd(file: std::fs::File) -> io::Result<Self> {
        // SAFETY: a `File` owns its descriptor: it stays open, on the same description, for
        // as long as the `AsyncFd` owns the `File`.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(file, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(Self { kind: Kind::Fd(fd) })
    }

    /// Whether reads are done on the loop's thread (no reader thread).
    pub fn is_async_fd(&self) -> bool {
        !matches!(self.kind, Kind::Thread(_))
    }

    /// Reads some bytes into `buf`; 0 is the end of input.
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.kind {
            #[cfg(any(target_os = "linux", target_os = "macos"))]
            Kind::Fd(fd) => read_fd(fd, buf).await,
            Kind::Thread(chunks) => chunks.read(buf).await,
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
async fn read_fd(
    fd: &tokio::io::unix::AsyncFd<std::fs::File>,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        let mut ready = fd.readable().await?;
        match ready.try_io(|fd| {
            let mut file: &std::fs::File = fd.get_ref();
            file.read(buf)
        }) {
            Ok(Ok(n)) => {
                // A short read emptied the pipe or socket (epoll and kqueue are edge
                // triggered): the next read would fail with `WouldBlock`, so wait for the
                // reactor instead of trying (tokio's own streams do the same).
                if n > 0 && n < buf.len() {
                    ready.clear_ready();
                }
                return Ok(n);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            // Not readable after all: the readiness is cleared, wait for the next.
            Err(_would_block) => {}
        }
    }
}

impl Chunks {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.taken == self.current.len() {
            self.current.zeroize();
            self.taken = 0;
            self.current = match self.rx.recv().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Err(e),
                // The thread is gone (it stopped at the end of input).
                None => return Ok(0),
            };
        }
        let rest = &mut self.current[self.taken..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        rest[..n].zeroize();
        self.taken += n;
        Ok(n)
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        self.current.zeroize();
    }
}
