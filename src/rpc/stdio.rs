//! The process's own stdin and stdout, set up for the transport: read and written on the
//! loop's thread when they can be, by helper threads when not.
//!
//! On Linux and macOS, stdin and stdout that are **pipes or sockets** (what every shell
//! gives a sidecar: Rust's `Command` and Tauri make pipes, Node and Electron socket pairs) are
//! put in non-blocking mode (`O_NONBLOCK`) and registered with the runtime's reactor
//! ([`Input::from_nonblocking_fd`], [`Outbox::from_nonblocking_fd`]). Everything else keeps
//! blocking I/O on a thread of its own: a terminal or a file, a descriptor that is also our
//! stderr (`2>&1`: logs are written with blocking writes, which a non-blocking descriptor
//! would make fail), any platform without `AsyncFd`, and any step that fails.
//!
//! `O_NONBLOCK` belongs to the open file description, which the shell's copy of the same end
//! (if it kept one) shares; the flags as found are put back when [`Stdio`] is dropped.

use std::io;

use super::input::Input;
use super::outbox::Outbox;

/// stdin and stdout, ready for [`super::serve`].
pub struct Stdio {
    pub input: Input,
    pub outbox: Outbox,
    /// Puts the descriptors' flags back when dropped.
    pub restore: Restore,
}

/// The file status flags of descriptors made non-blocking, as they were.
#[derive(Default)]
pub struct Restore {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    flags: Vec<(std::os::fd::RawFd, std::ffi::c_int)>,
}

/// Opens this process's stdin and stdout for the transport. Must be called within the
/// runtime. Fails only when a reader or writer thread is needed and cannot start.
pub fn open() -> io::Result<Stdio> {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    {
        unix::open()
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        Ok(Stdio {
            input: Input::from_reader(io::stdin())?,
            outbox: Outbox::new(io::stdout()),
            restore: Restore::default(),
        })
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
mod unix {
    use std::ffi::c_int;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, RawFd};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    #[cfg(target_os = "linux")]
    use nix::libc;

    use super::{Input, Outbox, Restore, Stdio};

    pub(super) fn open() -> io::Result<Stdio> {
        let stdin = duplicate(&io::stdin());
        let stdout = duplicate(&io::stdout());
        let stderr = duplicate(&io::stderr()).as_ref().and_then(identity);
        let mut restore = Restore::default();

        let input = match stdin {
            Some(file) if pollable(&file, stderr) => {
                match registered(&file, 0, &mut restore, Input::from_nonblocking_fd) {
                    Ok(input) => input,
                    Err(e) => {
                        tracing::debug!(error = %e, "stdin: non-blocking reads not available");
                        Input::from_reader(file)?
                    }
                }
            }
            Some(file) => Input::from_reader(file)?,
            None => Input::from_reader(io::stdin())?,
        };
        let outbox = match stdout {
            Some(file) if pollable(&file, stderr) => {
                match registered(&file, 1, &mut restore, Outbox::from_nonblocking_fd) {
                    Ok(outbox) => outbox,
                    Err(e) => {
                        tracing::debug!(error = %e, "stdout: non-blocking writes not available");
                        Outbox::new(file)
                    }
                }
            }
            Some(file) => Outbox::new(file),
            None => Outbox::new(io::stdout()),
        };
        tracing::debug!(
            stdin = if input.is_async_fd() {
                "non-blocking"
            } else {
                "reader thread"
            },
            stdout = if outbox.is_async_fd() {
                "non-blocking"
            } else {
                "writer thread"
            },
            "stdio"
        );
        Ok(Stdio {
            input,
            outbox,
            restore,
        })
    }

    /// A duplicate of a standard stream's descriptor (so dropping it never closes the stream
    /// itself, and reads and writes bypass std's buffers).
    fn duplicate(stream: &impl AsFd) -> Option<File> {
        stream.as_fd().try_clone_to_owned().ok().map(File::from)
    }

    /// What the descriptor is open on: (device, inode).
    fn identity(file: &File) -> Option<(u64, u64)> {
        file.metadata().ok().map(|m| (m.dev(), m.ino()))
    }

    /// A pipe or a socket that is not also stderr.
    fn pollable(file: &File, stderr: Option<(u64, u64)>) -> bool {
        let Ok(meta) = file.metadata() else {
            return false;
        };
        let kind = meta.file_type();
        (kind.is_fifo() || kind.is_socket()) && stderr != Some((meta.dev(), meta.ino()))
    }

    /// The descriptor made non-blocking and handed to `make`; on failure its flags are back
    /// as they were, for blocking use.
    fn registered<T>(
        file: &File,
        standard: RawFd,
        restore: &mut Restore,
        make: impl FnOnce(File) -> io::Result<T>,
    ) -> io::Result<T> {
        nonblocking(file, standard, restore)?;
        match file.try_clone().and_then(make) {
            Ok(made) => Ok(made),
            Err(e) => {
                if let Some((_, flags)) = restore.flags.pop() {
                    let _ = set_flags(file.as_raw_fd(), flags);
                }
                Err(e)
            }
        }
    }

    /// Sets `O_NONBLOCK` on the descriptor's open file description, remembering the flags as
    /// they were, to be put back through `standard` (0 or 1), which outlives the duplicate.
    fn nonblocking(file: &File, standard: RawFd, restore: &mut Restore) -> io::Result<()> {
        let fd = file.as_raw_fd();
        let flags = get_flags(fd)?;
        if flags & libc::O_NONBLOCK == 0 {
            set_flags(fd, flags | libc::O_NONBLOCK)?;
        }
        // Put back in reverse order: when stdin and stdout share one description, the flags
        // found first (before any change) are the ones that end up set.
        restore.flags.push((standard, flags));
        Ok(())
    }

    fn get_flags(fd: RawFd) -> io::Result<c_int> {
        // SAFETY: F_GETFL reads the flags of a descriptor we own; no pointer is passed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(flags)
        }
    }

    fn set_flags(fd: RawFd, flags: c_int) -> io::Result<()> {
        // SAFETY: F_SETFL sets the status flags of an open descriptor; no pointer is passed.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    impl Drop for Restore {
        fn drop(&mut self) {
            for &(fd, flags) in self.flags.iter().rev() {
                let _ = set_flags(fd, flags);
            }
        }
    }
}
