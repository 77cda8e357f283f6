//! The transport benchmark's second floor: the same line echo as `echo_floor.rs`, but built
//! the way the sidecar is: one current-thread tokio runtime, stdin non-blocking and read when
//! the reactor says it is readable (epoll), stdout written directly, and one timer pending
//! (the sidecar always has its 30 s refresh tick, and a pending timer puts a timeout on every
//! `epoll_wait`).
//!
//! It parses nothing and dispatches nothing, so no sidecar on one tokio thread answers a line
//! faster: the gap between this floor and `echo_floor` (a blocking `read(2)`) is what waiting
//! in the reactor for stdin and for the backend at once costs, the design that spares a gated
//! call any thread hop. `scripts/bench-transport.sh` reports it next to the other two.

use std::io;

#[cfg(unix)]
fn main() -> io::Result<()> {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    use tokio::io::unix::AsyncFd;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::spawn(async {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tick.tick().await;
            }
        });
        let stdin = std::fs::File::from(io::stdin().as_fd().try_clone_to_owned()?);
        set_nonblocking(&stdin)?;
        // SAFETY: the `File` owns its descriptor for as long as the `AsyncFd` owns the `File`.
        let stdin =
            unsafe { AsyncFd::register_with_interest(stdin, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        let mut stdout = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned()?);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut ready = stdin.readable().await?;
            match ready.try_io(|fd| {
                let mut file: &std::fs::File = fd.get_ref();
                file.read(&mut buf)
            }) {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => {
                    // A short read emptied the pipe (epoll is edge triggered), as in the sidecar.
                    if n < buf.len() {
                        ready.clear_ready();
                    }
                    stdout.write_all(&buf[..n])?;
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    })
}

#[cfg(unix)]
fn set_nonblocking(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor this program owns; no pointer is passed.
    let flags = unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFL) };
    if flags < 0
        || unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFL, flags | nix::libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(unix))]
fn main() -> io::Result<()> {
    Err(io::Error::other(
        "this floor needs a Unix reactor (epoll or kqueue)",
    ))
}
