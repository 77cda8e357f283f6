//! Process hardening, done first thing at start (before any token exists): another process
//! of the same user must not be able to read the session out of this one's memory.
//!
//! - **Linux**: `prctl(PR_SET_DUMPABLE, 0)`. No core dump is written if the process crashes,
//!   and same-user processes can no longer `ptrace` it (gdb, `gcore`) or open its
//!   `/proc/<pid>/mem`, `environ`, `maps` or `fd/` (those entries become owned by root).
//!   Root (or `CAP_SYS_PTRACE`) still can.
//! - **macOS**: `ptrace(PT_DENY_ATTACH)`, so no debugger can attach (one already attached
//!   makes the process exit), and a core size limit of 0, so a crash writes no core file.
//!   Root can still read the process's memory through the task port.
//! - **Windows**: nothing is used. There is no per-process switch that stops another process
//!   of the same user from opening this one with `PROCESS_VM_READ` (the owner may always
//!   rewrite the process's DACL, so the closest measure, a restrictive DACL, would not hold).
//!
//! A step that fails is a warning, never a reason not to start: the sidecar is as safe as
//! before, not less. [`Hardening::log`] reports what was done once tracing is up.
//!
//! A leaf: it imports nothing of the crate.

/// What [`harden`] did, to be logged once tracing is up (it runs before the config is read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    steps: Vec<Step>,
}

/// One hardening measure and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The call, as a reader of the log would look it up (`prctl(PR_SET_DUMPABLE, 0)`).
    pub what: &'static str,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; what it protects against.
    Done(&'static str),
    /// The call failed (the OS error).
    Failed(String),
    /// Not available on this platform; why.
    Unavailable(&'static str),
}

/// Hardens the process (see the module docs). Call it first, before anything holds a token.
pub fn harden() -> Hardening {
    Hardening {
        steps: platform_steps(),
    }
}

impl Hardening {
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Whether every step that applies to this platform succeeded.
    pub fn succeeded(&self) -> bool {
        !self
            .steps
            .iter()
            .any(|step| matches!(step.outcome, Outcome::Failed(_)))
    }

    /// Logs each step: done or unavailable at debug, a failure as a warning.
    pub fn log(&self) {
        for Step { what, outcome } in &self.steps {
            match outcome {
                Outcome::Done(effect) => tracing::debug!("process hardening: {what}: {effect}"),
                Outcome::Unavailable(why) => {
                    tracing::debug!("process hardening: {what}: not used ({why})")
                }
                Outcome::Failed(error) => tracing::warn!(
                    "process hardening: {what} failed ({error}); going on without it"
                ),
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn platform_steps() -> Vec<Step> {
    let what = "prctl(PR_SET_DUMPABLE, 0)";
    let outcome = match nix::sys::prctl::set_dumpable(false) {
        Ok(()) => Outcome::Done(
            "no core dump; same-user processes cannot ptrace this one or read its /proc/<pid>/mem",
        ),
        Err(errno) => Outcome::Failed(errno.to_string()),
    };
    vec![Step { what, outcome }]
}

#[cfg(target_os = "macos")]
fn platform_steps() -> Vec<Step> {
    let last_error = || std::io::Error::last_os_error().to_string();
    // SAFETY: PT_DENY_ATTACH reads neither `addr` nor `data` and only flags this process.
    let denied = unsafe { libc::ptrace(libc::PT_DENY_ATTACH, 0, std::ptr::null_mut(), 0) };
    let deny_attach = Step {
        what: "ptrace(PT_DENY_ATTACH)",
        outcome: if denied == 0 {
            Outcome::Done("no debugger can attach")
        } else {
            Outcome::Failed(last_error())
        },
    };
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to an initialized rlimit, read during the call only.
    let limited = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let core_limit = Step {
        what: "setrlimit(RLIMIT_CORE, 0)",
        outcome: if limited == 0 {
            Outcome::Done("a crash writes no core file")
        } else {
            Outcome::Failed(last_error())
        },
    };
    vec![deny_attach, core_limit]
}

#[cfg(windows)]
fn platform_steps() -> Vec<Step> {
    vec![Step {
        what: "memory-read protection",
        outcome: Outcome::Unavailable(
            "Windows has no switch that keeps a same-user process from reading this one's memory",
        ),
    }]
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn platform_steps() -> Vec<Step> {
    vec![Step {
        what: "memory-read protection",
        outcome: Outcome::Unavailable("not implemented on this platform"),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_is_reported_not_fatal() {
        let hardening = Hardening {
            steps: vec![
                Step {
                    what: "a",
                    outcome: Outcome::Done("x"),
                },
                Step {
                    what: "b",
                    outcome: Outcome::Unavailable("y"),
                },
            ],
        };
        assert!(hardening.succeeded());
        hardening.log();
        let failed = Hardening {
            steps: vec![Step {
                what: "c",
                outcome: Outcome::Failed("EPERM".into()),
            }],
        };
        assert!(!failed.succeeded());
        failed.log();
    }
}
