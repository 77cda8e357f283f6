use super::*;
use keyring_core::api::CredentialStoreApi;
use keyring_core::mock;

const SECRET: &str = r#"{"access_token":"header.payload.sig","refresh_token":"r-123","user":{"id":"u1","name":"Zoë \"q\""}}"#;

fn mock_entry(store: &Arc<mock::Store>) -> Entry {
    store.build("svc", "profile", None).unwrap()
}

/// An entry builder for `open_with`: the listed backends answer from a fresh mock store,
/// the others fail as a missing keyring would.
fn working(
    ok: &'static [Keyring],
) -> impl Fn(Keyring, &str, &str) -> keyring_core::Result<Entry> + Clone + Send + 'static {
    move |keyring, service, profile| {
        if ok.contains(&keyring) {
            mock::Store::new()?.build(service, profile, None)
        } else {
            Err(keyring_core::Error::NoStorageAccess(
                format!("{} not running", keyring.name()).into(),
            ))
        }
    }
}

const T: Duration = Duration::from_secs(5);

fn options(kind: KeyringKind, service: &str, profile: &str, timeout: Duration) -> StoreOptions {
    StoreOptions {
        kind,
        service: service.into(),
        profile: profile.into(),
        timeout,
        fault: None,
    }
}

#[tokio::test]
async fn memory_round_trip() {
    let store = SessionStore::open(&options(KeyringKind::Memory, "svc", "profile", T)).await;
    assert_eq!(store.backend_name(), "memory");
    assert!(!store.is_persistent());
    assert_eq!(store.load().await.unwrap(), None);
    assert!(!store.delete().await.unwrap());
    store.save(SECRET).await.unwrap();
    assert_eq!(store.load().await.unwrap().as_deref(), Some(SECRET));
    store.save("second").await.unwrap();
    // Clones share the entry.
    assert_eq!(
        store.clone().load().await.unwrap().as_deref(),
        Some("second")
    );
    assert!(store.delete().await.unwrap());
    assert_eq!(store.load().await.unwrap(), None);
    assert!(!store.delete().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn memory_works_under_a_paused_clock() {
    let store = SessionStore::open_with(None, false, "s", "p", T, None, working(&[])).await;
    store.save("x").await.unwrap();
    assert_eq!(store.load().await.unwrap().as_deref(), Some("x"));
}

#[test]
fn store_is_send_sync_clone() {
    fn check<S: Send + Sync + Clone + 'static>() {}
    check::<SessionStore>();
}

#[tokio::test]
async fn auto_takes_the_first_working_backend() {
    let all = vec![Keyring::SecretService, Keyring::Keyutils];
    let store = SessionStore::open_with(
        Some(all.clone()),
        false,
        "s",
        "p",
        T,
        None,
        working(&[Keyring::SecretService, Keyring::Keyutils]),
    )
    .await;
    assert_eq!(store.backend_name(), "secret-service");
    assert!(store.is_persistent());

    let store = SessionStore::open_with(
        Some(all),
        false,
        "s",
        "p",
        T,
        None,
        working(&[Keyring::Keyutils]),
    )
    .await;
    assert_eq!(store.backend_name(), "keyutils");
    assert!(store.is_persistent());
    store.save(SECRET).await.unwrap();
    assert_eq!(store.load().await.unwrap().as_deref(), Some(SECRET));
    assert!(store.delete().await.unwrap());
    assert!(!store.delete().await.unwrap());
}

#[tokio::test]
async fn keyutils_that_cannot_write_is_skipped() {
    let build = |_: Keyring, s: &str, p: &str| {
        let entry = mock::Store::new()?.build(s, p, None)?;
        if p.ends_with(".probe") {
            let cred: &mock::Cred = entry.as_any().downcast_ref().unwrap();
            cred.set_error(keyring_core::Error::NoStorageAccess("EACCES".into()));
        }
        Ok(entry)
    };
    let store = SessionStore::open_with(
        Some(vec![Keyring::Keyutils]),
        false,
        "s",
        "p",
        T,
        None,
        build,
    )
    .await;
    assert_eq!(store.backend_name(), "memory");
}

#[tokio::test]
async fn no_working_backend_of_auto_falls_back_to_memory() {
    let all = Some(vec![Keyring::SecretService, Keyring::Keyutils]);
    let store = SessionStore::open_with(all, false, "s", "p", T, None, working(&[])).await;
    assert_eq!(store.backend_name(), "memory");
    assert!(!store.is_persistent());
    assert!(store.needs_retry(), "auto keeps trying the keyrings");
    store.save(SECRET).await.unwrap();
    assert_eq!(store.load().await.unwrap().as_deref(), Some(SECRET));

    // So does a platform without any keyring.
    let store = SessionStore::open_with(Some(vec![]), false, "s", "p", T, None, working(&[])).await;
    assert_eq!(store.backend_name(), "memory");

    // Memory as asked: nothing to retry.
    let store = SessionStore::open_with(None, false, "s", "p", T, None, working(&[])).await;
    assert!(!store.needs_retry());
}

#[tokio::test]
async fn a_named_backend_that_does_not_work_is_unavailable_never_memory() {
    let one = Some(vec![Keyring::Keyutils]);
    let store = SessionStore::open_with(
        one,
        true,
        "s",
        "p",
        T,
        None,
        working(&[Keyring::SecretService]),
    )
    .await;
    assert_eq!(store.backend_name(), "keyutils");
    assert!(store.is_unavailable());
    assert!(!store.is_persistent());
    assert!(store.needs_retry());
    let reason = store.unusable_keyring().unwrap().to_string();
    assert!(
        reason.contains("keyutils keyring is unavailable"),
        "{reason}"
    );
    for err in [
        store.save(SECRET).await.unwrap_err(),
        store.load().await.unwrap_err(),
        store.delete().await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), crate::error::ErrorKind::Storage, "{err}");
        assert!(err.to_string().contains("unavailable"), "{err}");
    }
    // Nothing was kept anywhere.
    assert!(store.load().await.is_err());

    // Once it works, reopening gives a persistent store on it.
    let options = options(KeyringKind::One(Keyring::Keyutils), "s", "p", T);
    let still = SessionStore::reopen_with(
        Keyring::candidates(options.kind).unwrap(),
        "s",
        "p",
        T,
        None,
        working(&[]),
    )
    .await;
    assert!(still.is_none());
    let reopened = SessionStore::reopen_with(
        Keyring::candidates(options.kind).unwrap(),
        "s",
        "p",
        T,
        None,
        working(&[Keyring::Keyutils]),
    )
    .await
    .expect("keyutils answers now");
    assert_eq!(reopened.backend_name(), "keyutils");
    assert!(reopened.is_persistent() && !reopened.needs_retry());
}

#[tokio::test]
async fn unavailable_platform_backend_is_unavailable() {
    // The real builder: `windows` on Linux/macOS (or `macos` elsewhere) is not available.
    let kind = if cfg!(target_os = "windows") {
        KeyringKind::One(Keyring::Macos)
    } else {
        KeyringKind::One(Keyring::Windows)
    };
    let store = SessionStore::open(&options(kind, "core-sidecar-test", "p", T)).await;
    assert!(store.is_unavailable());
    assert!(!store.is_persistent());
}

/// A write whose caller gave up after the timeout is still under way: it says so
/// (`timed_out`), what it was given to keep stays alive until the call returns, and
/// `settled` resolves only then, so the owner can reconcile after it.
#[tokio::test]
async fn a_timed_out_write_keeps_its_keep_alive_until_it_returns() {
    let mocks = mock::Store::new().unwrap();
    let release = Arc::new((StdMutex::new(false), std::sync::Condvar::new()));
    let store = SessionStore::open_with(
        Some(vec![Keyring::Keyutils]),
        true,
        "svc",
        "profile",
        Duration::from_millis(200),
        None,
        {
            let mocks = mocks.clone();
            move |_: Keyring, s: &str, p: &str| mocks.build(s, p, None)
        },
    )
    .await;
    assert!(store.is_persistent());
    // A save that blocks in the "keyring" until released.
    let gate = release.clone();
    let keep: KeepAlive = Arc::new(());
    let weak = Arc::downgrade(&keep);
    let failed = store
        .call(Op::Save, Some(keep), move |slot| {
            let (released, wake) = &*gate;
            let mut released = released.lock().unwrap();
            while !*released {
                released = wake.wait(released).unwrap();
            }
            match slot {
                Slot::Keyring(entry) => entry.set_password(SECRET).map_err(|e| describe(&e)),
                _ => unreachable!("a keyring store"),
            }
        })
        .await
        .unwrap_err();
    assert!(failed.timed_out, "{:?}", failed.error);
    assert!(weak.upgrade().is_some(), "kept while the call is under way");
    let settled = tokio::spawn({
        let store = store.clone();
        async move { store.settled().await }
    });
    tokio::task::yield_now().await;
    assert!(!settled.is_finished());
    *release.0.lock().unwrap() = true;
    release.1.notify_all();
    settled.await.unwrap();
    assert!(weak.upgrade().is_none(), "let go once the call returned");
    // The write landed after its caller was told it timed out: the owner reconciles.
    assert_eq!(store.load().await.unwrap().as_deref(), Some(SECRET));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_backend_is_given_up_after_the_timeout() {
    // Every backend blocks until the test releases it; the paused clock makes the timeout
    // fire as soon as the runtime is idle, so this takes no real time.
    let release = Arc::new((StdMutex::new(false), std::sync::Condvar::new()));
    let gate = release.clone();
    let hang = move |_: Keyring, _: &str, _: &str| -> keyring_core::Result<Entry> {
        let (released, wake) = &*gate;
        let mut released = released.lock().unwrap();
        while !*released {
            released = wake.wait(released).unwrap();
        }
        Err(keyring_core::Error::NoEntry)
    };
    let started = tokio::time::Instant::now();
    let all = Some(vec![Keyring::SecretService, Keyring::Keyutils]);
    let store = SessionStore::open_with(all, false, "s", "p", T, None, hang).await;
    assert_eq!(store.backend_name(), "memory");
    assert!(!store.is_persistent());
    // Both probes waited for the timeout, one after the other.
    assert_eq!(started.elapsed(), T * 2);
    *release.0.lock().unwrap() = true;
    release.1.notify_all();
}

#[tokio::test]
async fn keyring_errors_are_storage_errors_without_the_secret() {
    // Mock stores hand out one credential per name, so the test reaches the very
    // credential the store uses and can make its next call fail.
    let mocks = mock::Store::new().unwrap();
    let shared = mocks.clone();
    let build = move |_: Keyring, s: &str, p: &str| shared.build(s, p, None);
    let store = SessionStore::open_with(
        Some(vec![Keyring::Keyutils]),
        false,
        "svc",
        "profile",
        T,
        None,
        build,
    )
    .await;
    assert_eq!(store.backend_name(), "keyutils");
    let entry = mock_entry(&mocks);
    let cred: &mock::Cred = entry.as_any().downcast_ref().unwrap();

    cred.set_error(keyring_core::Error::PlatformFailure(
        "dbus went away".into(),
    ));
    let err = store.save(SECRET).await.unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("keyutils: save failed"), "{text}");
    assert!(text.contains("dbus went away"), "{text}");
    assert!(!text.contains("header.payload.sig"), "{text}");

    store.save(SECRET).await.unwrap();
    cred.set_error(keyring_core::Error::BadEncoding(SECRET.as_bytes().to_vec()));
    let err = store.load().await.unwrap_err();
    assert!(!err.to_string().contains("payload"), "{err}");
    assert_eq!(err.kind(), crate::error::ErrorKind::Storage);
    assert_eq!(store.load().await.unwrap().as_deref(), Some(SECRET));

    cred.set_error(keyring_core::Error::NoStorageAccess("locked".into()));
    assert!(store.delete().await.is_err());
    assert!(store.delete().await.unwrap());
}

#[tokio::test]
async fn fault_fail_fails_every_operation() {
    let store =
        SessionStore::open_with(None, false, "s", "p", T, Some(Fault::Fail), working(&[])).await;
    for err in [
        store.load().await.unwrap_err(),
        store.save(SECRET).await.unwrap_err(),
        store.delete().await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::Storage(_)), "{err:?}");
        assert!(err.to_string().contains("injected"), "{err}");
        assert!(!err.to_string().contains("payload"), "{err}");
    }
}

#[tokio::test]
async fn fault_fail_writes_fails_saves_and_deletes_only() {
    let store = SessionStore::open_with(
        None,
        false,
        "s",
        "p",
        T,
        Some(Fault::FailWrites),
        working(&[]),
    )
    .await;
    assert_eq!(store.load().await.unwrap(), None);
    for err in [
        store.save(SECRET).await.unwrap_err(),
        store.delete().await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::Storage(_)), "{err:?}");
        assert!(err.to_string().contains("=fail-writes"), "{err}");
    }
}

#[tokio::test]
async fn fault_hang_times_out_every_operation() {
    let timeout = Duration::from_millis(1500);
    let store = SessionStore::open_with(
        Some(vec![Keyring::Keyutils]),
        false,
        "s",
        "p",
        timeout,
        Some(Fault::Hang),
        working(&[Keyring::Keyutils]),
    )
    .await;
    assert_eq!(store.backend_name(), "keyutils");
    // Opened on the real clock (the probe runs on a thread); the hang needs no real time.
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let err = store.save(SECRET).await.unwrap_err();
    // Paused mid-millisecond: the timer wheel rounds up to the next one.
    let waited = started.elapsed();
    assert!(
        waited >= timeout && waited <= timeout + Duration::from_millis(1),
        "{waited:?}"
    );
    assert_eq!(
        err.to_string(),
        "keyring: keyutils: save timed out after 1500 ms"
    );
    assert!(store.load().await.is_err());
    assert!(store.delete().await.is_err());
}

/// Tests against the machine's real keyrings: ignored by a plain `cargo test`, run (and
/// failing when a keyring is unreachable) by `scripts/test.sh`, which passes
/// `--include-ignored` inside `scripts/with-keyring.sh`.
#[cfg(target_os = "linux")]
mod real {
    use super::*;

    fn unique_service(tag: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("core-sidecar-test-{tag}-{}-{nanos}", std::process::id())
    }

    /// A large session (a user object with many claims), to catch size limits.
    fn large_secret() -> String {
        let claims: Vec<String> = (0..600).map(|i| format!("\"claim{i}\":\"v{i}\"")).collect();
        format!(
            "{{\"access_token\":\"a.b.c\",\"user\":{{{}}}}}",
            claims.join(",")
        )
    }

    fn run(cmd: &str, args: &[&str]) -> String {
        let out = std::process::Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
        assert!(out.status.success(), "{cmd} {args:?}: {:?}", out);
        String::from_utf8(out.stdout).unwrap()
    }

    async fn round_trip(kind: KeyringKind, expected: &str) -> (SessionStore, String) {
        let service = unique_service(expected);
        let store = SessionStore::open(&options(kind, &service, "profile-a", T)).await;
        assert_eq!(
            store.backend_name(),
            expected,
            "the {expected} keyring is not reachable (run under scripts/with-keyring.sh)"
        );
        assert!(store.is_persistent());
        assert_eq!(store.load().await.unwrap(), None);
        assert!(!store.delete().await.unwrap());

        store.save(SECRET).await.unwrap();
        assert_eq!(store.load().await.unwrap().as_deref(), Some(SECRET));

        // Another store on the same entry (as after a restart) sees it: it is in the
        // keyring, not in this process.
        let again = SessionStore::open(&options(kind, &service, "profile-a", T)).await;
        assert_eq!(again.backend_name(), expected);
        assert_eq!(again.load().await.unwrap().as_deref(), Some(SECRET));

        // Another profile is another entry.
        let other = SessionStore::open(&options(kind, &service, "profile-b", T)).await;
        assert_eq!(other.load().await.unwrap(), None);

        let large = large_secret();
        store.save(&large).await.unwrap();
        assert_eq!(again.load().await.unwrap().as_deref(), Some(large.as_str()));
        store.save(SECRET).await.unwrap();
        (store, service)
    }

    async fn finish(store: SessionStore) {
        assert!(store.delete().await.unwrap());
        assert_eq!(store.load().await.unwrap(), None);
        assert!(!store.delete().await.unwrap());
    }

    #[tokio::test]
    #[ignore = "needs a real Secret Service / keyutils: run under scripts/with-keyring.sh"]
    async fn secret_service_round_trip() {
        let (store, service) =
            round_trip(KeyringKind::One(Keyring::SecretService), "secret-service").await;
        // The attributes a user (or secret-tool) looks the item up by.
        let found = run(
            "secret-tool",
            &["lookup", "service", &service, "username", "profile-a"],
        );
        assert_eq!(found, SECRET);
        finish(store).await;
        let out = std::process::Command::new("secret-tool")
            .args(["lookup", "service", &service, "username", "profile-a"])
            .output()
            .unwrap();
        assert!(out.stdout.is_empty(), "item still present after delete");
    }

    #[tokio::test]
    #[ignore = "needs a real Secret Service / keyutils: run under scripts/with-keyring.sh"]
    async fn keyutils_round_trip() {
        let (store, service) = round_trip(KeyringKind::One(Keyring::Keyutils), "keyutils").await;
        let description = format!("keyring:profile-a@{service}");
        let id = run("keyctl", &["search", "@s", "user", &description]);
        assert_eq!(run("keyctl", &["pipe", id.trim()]), SECRET);
        finish(store).await;
    }

    #[tokio::test]
    #[ignore = "needs a real Secret Service / keyutils: run under scripts/with-keyring.sh"]
    async fn auto_prefers_secret_service() {
        let service = unique_service("auto");
        let store = SessionStore::open(&options(KeyringKind::Auto, &service, "p", T)).await;
        assert_eq!(store.backend_name(), "secret-service");
        store.save("x").await.unwrap();
        finish(store).await;
    }

    #[tokio::test]
    #[ignore = "needs a real Secret Service / keyutils: run under scripts/with-keyring.sh"]
    async fn concurrent_saves_apply_in_call_order() {
        let service = unique_service("order");
        let store = SessionStore::open(&options(
            KeyringKind::One(Keyring::SecretService),
            &service,
            "p",
            T,
        ))
        .await;
        assert_eq!(store.backend_name(), "secret-service");
        let writes: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                async move { store.save(&format!("v{i}")).await }
            })
            .collect();
        // join_all polls in order, so the lock is queued for v0..v7 in that order.
        for result in futures::future::join_all(writes).await {
            result.unwrap();
        }
        assert_eq!(store.load().await.unwrap().as_deref(), Some("v7"));
        finish(store).await;
    }
}
