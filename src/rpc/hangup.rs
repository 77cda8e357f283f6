//! Notices that the shell let go of a pipe, without reading or writing it (Linux): a thread
//! polls copies of the stdin and stdout file descriptors for hang-up only.
//!
//! - **Output**: the read end of our stdout is gone (`POLLERR` on a pipe, `POLLHUP` on a socket
//!   or a terminal). Without this a sidecar with nothing to write would learn it only at its
//!   next write, which may never come.
//! - **Input**: the write end of our stdin is gone (`POLLHUP` on a pipe or a terminal,
//!   `POLLRDHUP` on a socket). The reader thread normally sees this as EOF after the last line;
//!   this tells the shutdown even when the reader cannot get there because it is blocked on a
//!   full stdout, so closing stdin ends the process within its bound in every case.
//!
//! The poll asks for no readiness event (no `POLLIN`, no `POLLOUT`), only for the hang-up
//! conditions, so it wakes only when one happens. Regular files and `/dev/null` never report
//! one: for those the thread just waits, and the process exits without it.

/// Which pipe the shell let go of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// Nobody writes our stdin any more: EOF follows the lines still in the pipe.
    Input,
    /// Nobody reads our stdout any more.
    Output,
}

/// Starts the watcher thread. `report` is called once per pipe that hangs up. `input` and
/// `output` should be duplicates of the descriptors the transport uses (the watcher owns them).
#[cfg(target_os = "linux")]
pub fn watch(
    input: Option<std::os::fd::OwnedFd>,
    output: Option<std::os::fd::OwnedFd>,
    report: impl Fn(Hangup) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("core-sidecar-hangup".into())
        .spawn(move || watch_blocking(input, output, report))
        .map(drop)
}

#[cfg(target_os = "linux")]
fn watch_blocking(
    mut input: Option<std::os::fd::OwnedFd>,
    mut output: Option<std::os::fd::OwnedFd>,
    report: impl Fn(Hangup),
) {
    use std::os::fd::AsFd;

    use nix::errno::Errno;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    let rdhup = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);
    let gone = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL | rdhup;
    loop {
        let (input_gone, output_gone) = {
            let mut fds = Vec::with_capacity(2);
            if let Some(fd) = &input {
                fds.push(PollFd::new(fd.as_fd(), rdhup));
            }
            if let Some(fd) = &output {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::empty()));
            }
            if fds.is_empty() {
                return;
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch stdin and stdout for hang-up");
                    return;
                }
            }
            let hung_up = |i: usize| fds[i].revents().is_some_and(|r| r.intersects(gone));
            let input_gone = input.is_some() && hung_up(0);
            let output_gone = output.is_some() && hung_up(usize::from(input.is_some()));
            (input_gone, output_gone)
        };
        if input_gone {
            input = None;
            tracing::debug!("stdin hung up");
            report(Hangup::Input);
        }
        if output_gone {
            output = None;
            tracing::debug!("stdout hung up");
            report(Hangup::Output);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::OwnedFd;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn watcher(input: Option<OwnedFd>, output: Option<OwnedFd>) -> mpsc::Receiver<Hangup> {
        let (tx, rx) = mpsc::channel();
        watch(input, output, move |hangup| {
            let _ = tx.send(hangup);
        })
        .expect("watcher thread");
        rx
    }

    #[test]
    fn a_closed_read_end_of_stdout_is_reported_without_a_write() {
        let (reader, writer) = std::io::pipe().unwrap();
        let seen = watcher(None, Some(writer.into()));
        drop(reader);
        assert_eq!(seen.recv_timeout(TIMEOUT), Ok(Hangup::Output));
    }

    #[test]
    fn a_closed_write_end_of_stdin_is_reported_even_with_lines_unread() {
        use std::io::Write;
        let (reader, mut writer) = std::io::pipe().unwrap();
        let (_out_reader, out_writer) = std::io::pipe().unwrap();
        let seen = watcher(Some(reader.into()), Some(out_writer.into()));
        // Data alone wakes nothing (no POLLIN asked): the first event is the hang-up.
        writer.write_all(b"{\"unread\":true}\n").unwrap();
        drop(writer);
        assert_eq!(seen.recv_timeout(TIMEOUT), Ok(Hangup::Input));
    }
}
