//! Cross-process ownership of one keyring entry (docs/protocol.md, "Keyring").
//!
//! Two sidecars (an app started twice, a helper process) may sit on the same keyring
//! service and profile. Refresh tokens are single-use, so only one of them may refresh at a
//! time, and each must see what the other stored or cleared. Two things live on disk for
//! that, named after the service and profile:
//!
//! - [`EntryLock`]: an OS advisory lock (`flock` on Unix, `LockFileEx` on Windows, through
//!   `fs4`) on `<name>.lock` in the user's runtime directory (`$XDG_RUNTIME_DIR`, else the
//!   cache directory). Held around every refresh-and-commit and every sign-in or sign-out
//!   write. The lock call blocks, so it runs on a thread of its own and the async side
//!   waits for it under a timeout; one waiting thread at most (a wait that timed out leaves
//!   its thread waiting, and the next wait takes it over; the lock a thread gets when
//!   nobody waits any more is let go at once).
//! - [`Markers`]: `<name>.signout` in the user's cache directory (it outlives a reboot), one
//!   line per sign-out that has not reached the keyring yet: the [fingerprint] of the session
//!   signed out. Any process completes them (removes that session from the keyring if it is
//!   still there) before it loads, refreshes or writes the entry.
//!
//! Files are created `0600` in directories created `0700`.
//!
//! [fingerprint]: crate::session::Session::fingerprint

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedMutexGuard};

/// Where the lock file and the markers of one entry live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// Directory of the lock file (`$XDG_RUNTIME_DIR/core-sidecar`, or the cache's).
    pub lock_dir: PathBuf,
    /// Directory of the pending sign-out markers (the cache's, or the runtime one).
    pub marker_dir: PathBuf,
}

/// The file name both files share: the service and profile, made safe for a file name, and
/// a digest of the pair (two pairs that read the same once made safe stay apart).
pub fn entry_name(service: &str, profile: &str) -> String {
    use sha2::Digest;
    let safe = |text: &str| -> String {
        text.chars()
            .take(40)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let digest = sha2::Sha256::new()
        .chain_update((service.len() as u64).to_be_bytes())
        .chain_update(service.as_bytes())
        .chain_update(profile.as_bytes())
        .finalize();
    let digest: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}.{}.{digest}", safe(service), safe(profile))
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another holder kept it past the wait.
    #[error("another core-sidecar process (or call) holds the session lock {path}")]
    Busy { path: PathBuf },
    /// The lock file cannot be created or locked (a read-only or missing directory).
    #[error("cannot use the session lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The OS advisory lock of one keyring entry. Cheap to share (`Arc`).
pub struct EntryLock {
    path: PathBuf,
    /// This process's holders queue here (fairly) rather than on threads.
    local: Arc<tokio::sync::Mutex<()>>,
    handoff: Arc<Handoff>,
}

/// Between the thread blocked in the lock call and the task waiting for it.
#[derive(Default)]
struct Handoff {
    state: Mutex<HandoffState>,
    ready: Notify,
}

#[derive(Default)]
struct HandoffState {
    /// A task waits for the lock now.
    waiting: bool,
    /// A thread is blocked in the lock call.
    thread: bool,
    /// The lock, taken by the thread, not yet picked up.
    acquired: Option<File>,
    /// Why the thread could not lock, not yet picked up.
    failed: Option<io::Error>,
}

/// The lock, held until dropped (with every clone: see [`Held`]).
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    _local: OwnedMutexGuard<()>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Closing the file releases it too; unlocking first says so explicitly.
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

/// A held lock that may outlive its first holder: a keyring call that timed out keeps a
/// clone until it really returns, so no other process writes before it lands.
pub type Held = Arc<LockGuard>;

impl EntryLock {
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            path: dir.join(format!("{name}.lock")),
            local: Arc::new(tokio::sync::Mutex::new(())),
            handoff: Arc::new(Handoff::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the lock, waiting at most `wait` (this process's other holders included).
    pub async fn acquire(&self, wait: Duration) -> Result<LockGuard, LockError> {
        let deadline = tokio::time::Instant::now() + wait;
        let busy = || LockError::Busy {
            path: self.path.clone(),
        };
        let local = tokio::time::timeout_at(deadline, self.local.clone().lock_owned())
            .await
            .map_err(|_| busy())?;
        loop {
            let notified = self.handoff.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = lock(&self.handoff.state);
                if let Some(file) = state.acquired.take() {
                    state.waiting = false;
                    return Ok(LockGuard {
                        file,
                        _local: local,
                    });
                }
                if let Some(source) = state.failed.take() {
                    state.waiting = false;
                    return Err(LockError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
                state.waiting = true;
                if !state.thread {
                    let path = self.path.clone();
                    let handoff = self.handoff.clone();
                    let spawned = std::thread::Builder::new()
                        .name("session-lock".into())
                        .spawn(move || wait_for_lock(&path, &handoff));
                    if let Err(source) = spawned {
                        state.waiting = false;
                        return Err(LockError::Io {
                            path: self.path.clone(),
                            source,
                        });
                    }
                    state.thread = true;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let mut state = lock(&self.handoff.state);
                state.waiting = false;
                // Taken just now: as good as in time.
                if let Some(file) = state.acquired.take() {
                    return Ok(LockGuard {
                        file,
                        _local: local,
                    });
                }
                return Err(busy());
            }
        }
    }
}

/// The thread's side: blocks in the lock call, then hands the lock to the waiting task, or
/// lets it go when nobody waits any more.
fn wait_for_lock(path: &Path, handoff: &Handoff) {
    let locked = open_private(path, false).and_then(|file| {
        fs4::FileExt::lock(&file)?;
        Ok(file)
    });
    let mut state = lock(&handoff.state);
    state.thread = false;
    match locked {
        Ok(file) if state.waiting => state.acquired = Some(file),
        Ok(file) => {
            let _ = fs4::FileExt::unlock(&file);
            return;
        }
        Err(error) => state.failed = Some(error),
    }
    drop(state);
    handoff.ready.notify_one();
}

/// The pending sign-out markers of one entry: fingerprints of sessions signed out here (or
/// by another process on the entry) whose removal from the keyring is not confirmed yet.
pub struct Markers {
    path: PathBuf,
}

impl Markers {
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            path: dir.join(format!("{name}.signout")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds one (appended and synced: it survives a crash right after).
    pub fn add(&self, fingerprint: &str) -> io::Result<()> {
        let mut file = open_private(&self.path, true)?;
        file.write_all(format!("{fingerprint}\n").as_bytes())?;
        file.sync_all()
    }

    /// Every pending one; none when there is no file.
    pub fn pending(&self) -> io::Result<Vec<String>> {
        let mut text = String::new();
        match File::open(&self.path) {
            Ok(mut file) => file.read_to_string(&mut text)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut pending: Vec<String> = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !pending.iter().any(|p| p == line) {
                pending.push(line.to_owned());
            }
        }
        Ok(pending)
    }

    /// Removes these (done, or found moot). Called under the [`EntryLock`].
    pub fn remove(&self, done: &[String]) -> io::Result<()> {
        let left: Vec<String> = self
            .pending()?
            .into_iter()
            .filter(|p| !done.contains(p))
            .collect();
        if left.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let temporary = self
            .path
            .with_extension(format!("signout.{}", std::process::id()));
        {
            let mut file = open_private(&temporary, false)?;
            file.set_len(0)?;
            for fingerprint in &left {
                file.write_all(format!("{fingerprint}\n").as_bytes())?;
            }
            file.sync_all()?;
        }
        std::fs::rename(&temporary, &self.path)
    }
}

/// Opens (creating) a file only its owner may read, in a directory only its owner may list.
fn open_private(path: &Path, append: bool) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut options = OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.read(true).write(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary one.
    fn scratch(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::env::temp_dir().join(format!(
            "core-sidecar-lock-{tag}-{}-{nanos}",
            std::process::id()
        ))
    }

    #[test]
    fn names_are_safe_and_apart() {
        let name = entry_name("core-sidecar", "default");
        assert!(name.starts_with("core-sidecar.default."), "{name}");
        let odd = entry_name("../a b", "x/y");
        assert!(!odd.contains('/') && !odd.contains(' '), "{odd}");
        assert_ne!(entry_name("a_b", "c"), entry_name("a b", "c"));
        assert_ne!(entry_name("ab", "c"), entry_name("a", "bc"));
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_wait_that_times_out_is_busy() {
        let dir = scratch("one");
        // Two locks on one file: as two processes would (flock excludes open files).
        let first = EntryLock::new(&dir, "entry");
        let second = EntryLock::new(&dir, "entry");
        let held = first.acquire(Duration::from_secs(5)).await.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(first.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let busy = second.acquire(Duration::from_millis(100)).await;
        assert!(matches!(busy, Err(LockError::Busy { .. })), "{busy:?}");
        // The timed-out wait left its thread waiting; the next wait takes it over and gets
        // the lock once it is let go.
        let waiter = tokio::spawn(async move {
            let guard = second.acquire(Duration::from_secs(5)).await.map(|_| ());
            (second, guard)
        });
        drop(held);
        let (second, got) = waiter.await.unwrap();
        got.unwrap();
        // Let go again: the first can take it.
        drop(second);
        first.acquire(Duration::from_secs(5)).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn holders_in_one_process_queue() {
        let dir = scratch("queue");
        let lock = Arc::new(EntryLock::new(&dir, "entry"));
        let held = lock.acquire(Duration::from_secs(5)).await.unwrap();
        let busy = lock.acquire(Duration::from_millis(50)).await;
        assert!(matches!(busy, Err(LockError::Busy { .. })));
        drop(held);
        let _again = lock.acquire(Duration::from_secs(5)).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_unusable_directory_is_an_io_error() {
        let dir = scratch("io");
        std::fs::create_dir_all(&dir).unwrap();
        // A file where the lock's directory should be.
        let blocker = dir.join("blocked");
        std::fs::write(&blocker, "x").unwrap();
        let lock = EntryLock::new(&blocker, "entry");
        let error = lock.acquire(Duration::from_secs(5)).await;
        assert!(matches!(error, Err(LockError::Io { .. })), "{error:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn markers_add_list_and_remove() {
        let dir = scratch("markers");
        let markers = Markers::new(&dir, "entry");
        assert!(markers.pending().unwrap().is_empty());
        markers.add("aa").unwrap();
        markers.add("bb").unwrap();
        markers.add("aa").unwrap();
        assert_eq!(markers.pending().unwrap(), ["aa", "bb"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(markers.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        markers.remove(&["aa".to_string()]).unwrap();
        assert_eq!(markers.pending().unwrap(), ["bb"]);
        markers.remove(&["bb".to_string()]).unwrap();
        assert!(!markers.path().exists());
        markers.remove(&[]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
