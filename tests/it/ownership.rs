//! One keyring entry, two sidecars, and a Secret Service that misbehaves (docs/protocol.md,
//! "Keyring" and "Notifications"), through the real binary.
//!
//! Each test runs its own Secret Service: a private D-Bus daemon and a gnome-keyring on it
//! (as `scripts/with-keyring.sh` starts one), so it can freeze it (SIGSTOP), lock and unlock
//! its collection without touching the tests that share the keyring of
//! `scripts/with-keyring.sh`. The sidecars get its bus address, a lock directory of the
//! test's own, a 300 ms ticker and a 1 s keyring timeout. The auth server is
//! `gotrue::FakeGoTrue`, which rotates refresh tokens and revokes the whole session when a
//! spent one is used again: a single reuse would show in `revoked()`.
//!
//! Tests wait on notifications (with the harness timeout), never on sleeps; the two checks
//! of "within one ticker period" wait for a state with a deadline.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::gotrue::{FakeGoTrue, unix_now};
use crate::harness::{Sidecar, TIMEOUT, unique_service};

/// The ticker period of the sidecars here (`CORE_SIDECAR_REFRESH_TICK_MS`).
const TICK: Duration = Duration::from_millis(300);
/// Their keyring timeout (`CORE_SIDECAR_KEYRING_TIMEOUT_MS`).
const KEYRING_TIMEOUT: Duration = Duration::from_millis(1000);
const SECRETS: &str = "org.freedesktop.secrets";
const LOGIN: &str = "/org/freedesktop/secrets/collection/login";
const PASSWORD: &str = "core-sidecar-ownership-test";

/// A Secret Service of the test's own: a D-Bus daemon on a private socket and a
/// gnome-keyring (secrets only, its login collection unlocked with [`PASSWORD`]) on it,
/// with its data in a temporary directory. Both are killed when it is dropped.
struct PrivateKeyring {
    dir: PathBuf,
    address: String,
    bus: Child,
    daemon: Child,
    /// The daemon's pid, as the bus knows the owner of `org.freedesktop.secrets`.
    pid: u32,
    connection: zbus::Connection,
}

impl PrivateKeyring {
    async fn start() -> PrivateKeyring {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "core-sidecar-ownership-{}-{nanos}",
            std::process::id()
        ));
        for sub in ["run", "data", "locks"] {
            std::fs::create_dir_all(dir.join(sub)).expect("a temporary directory");
        }
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", dir.join("bus").display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("dbus-daemon runs (package dbus; run under scripts/with-keyring.sh)");
        // It prints its address once it listens.
        let mut address = String::new();
        let stdout = bus.stdout.take().expect("stdout");
        tokio::time::timeout(TIMEOUT, BufReader::new(stdout).read_line(&mut address))
            .await
            .expect("dbus-daemon prints its address")
            .expect("read");
        let address = address.trim().to_string();
        let connection = zbus::connection::Builder::address(address.as_str())
            .expect("a bus address")
            .build()
            .await
            .expect("connect to the private bus");
        let dbus = zbus::fdo::DBusProxy::new(&connection).await.expect("proxy");
        let mut owners = dbus
            .receive_name_owner_changed()
            .await
            .expect("watch names");
        let mut daemon = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("XDG_RUNTIME_DIR", dir.join("run"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("gnome-keyring-daemon runs (run under scripts/with-keyring.sh)");
        let mut stdin = daemon.stdin.take().expect("stdin");
        stdin
            .write_all(PASSWORD.as_bytes())
            .await
            .expect("password");
        drop(stdin);
        let name = zbus::names::BusName::try_from(SECRETS).expect("a bus name");
        if !dbus
            .name_has_owner(name.clone())
            .await
            .expect("ask the bus")
        {
            tokio::time::timeout(TIMEOUT, async {
                use futures::StreamExt;
                while let Some(change) = owners.next().await {
                    let args = change.args().expect("signal args");
                    if args.name().as_str() == SECRETS && args.new_owner().is_some() {
                        return;
                    }
                }
            })
            .await
            .expect("gnome-keyring takes org.freedesktop.secrets");
        }
        let pid = dbus
            .get_connection_unix_process_id(name)
            .await
            .expect("the owner's pid");
        assert_eq!(Some(pid), daemon.id(), "the Secret Service is our daemon");
        PrivateKeyring {
            dir,
            address,
            bus,
            daemon,
            pid,
            connection,
        }
    }

    /// The environment of a sidecar on entry `service` of this keyring.
    fn env(&self, service: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CORE_SIDECAR_KEYRING", "secret-service".into()),
            ("CORE_SIDECAR_KEYRING_SERVICE", service.into()),
            ("DBUS_SESSION_BUS_ADDRESS", self.address.clone()),
            (
                "CORE_SIDECAR_LOCK_DIR",
                self.dir.join("locks").display().to_string(),
            ),
            ("CORE_SIDECAR_REFRESH_TICK_MS", TICK.as_millis().to_string()),
            (
                "CORE_SIDECAR_KEYRING_TIMEOUT_MS",
                KEYRING_TIMEOUT.as_millis().to_string(),
            ),
        ]
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), signal)
            .expect("signal the keyring daemon");
    }

    /// SIGSTOP: every Secret Service call waits from now on.
    fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT: the calls that waited are answered, in order.
    fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// Locks the login (default) collection, as a screen lock would.
    async fn lock(&self) {
        let login = zbus::zvariant::ObjectPath::try_from(LOGIN).expect("a path");
        self.connection
            .call_method(
                Some(SECRETS),
                "/org/freedesktop/secrets",
                Some("org.freedesktop.Secret.Service"),
                "Lock",
                &(vec![login],),
            )
            .await
            .expect("lock the collection");
    }

    /// Unlocks it with its password, as the user would (gnome-keyring's own interface:
    /// no prompt).
    async fn unlock(&self) {
        use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};
        let reply = self
            .connection
            .call_method(
                Some(SECRETS),
                "/org/freedesktop/secrets",
                Some("org.freedesktop.Secret.Service"),
                "OpenSession",
                &("plain", Value::from("")),
            )
            .await
            .expect("a plain session");
        let (_, session): (OwnedValue, OwnedObjectPath) =
            reply.body().deserialize().expect("OpenSession's answer");
        let secret = (
            session,
            Vec::<u8>::new(),
            PASSWORD.as_bytes().to_vec(),
            "text/plain",
        );
        self.connection
            .call_method(
                Some(SECRETS),
                "/org/freedesktop/secrets",
                Some("org.gnome.keyring.InternalUnsupportedGuiltRiddenInterface"),
                "UnlockWithMasterPassword",
                &(ObjectPath::try_from(LOGIN).expect("a path"), secret),
            )
            .await
            .expect("unlock the collection");
    }

    /// The session secret of entry `service`, parsed (`secret-tool`, as a user would).
    fn stored(&self, service: &str) -> Option<Value> {
        let output = std::process::Command::new("secret-tool")
            .args(["lookup", "service", service, "username", "default"])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .output()
            .expect("secret-tool (package libsecret-tools) runs");
        let text = String::from_utf8(output.stdout).expect("utf-8");
        (output.status.success() && !text.is_empty())
            .then(|| serde_json::from_str(&text).expect("one JSON secret"))
    }

    /// Writes a session secret for entry `service` directly (as a sidecar would have).
    fn put(&self, service: &str, secret: &Value) {
        let mut child = std::process::Command::new("secret-tool")
            .args(["store", "--label=test session", "service", service])
            .args(["username", "default"])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::piped())
            .spawn()
            .expect("secret-tool runs");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(secret.to_string().as_bytes())
                .expect("write the secret");
        }
        assert!(child.wait().expect("secret-tool").success());
    }
}

impl Drop for PrivateKeyring {
    fn drop(&mut self) {
        // A frozen daemon does not die of SIGKILL until it is resumed on some systems.
        self.signal(nix::sys::signal::Signal::SIGCONT);
        let _ = self.daemon.start_kill();
        let _ = self.bus.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(keyring: &PrivateKeyring, service: &str, fake: Option<&FakeGoTrue>) -> Sidecar {
    let mut env = keyring.env(service);
    if let Some(fake) = fake {
        env.push(("CORE_SIDECAR_BACKEND_URL", fake.base_url()));
        env.push(("CORE_SIDECAR_AUTH_URL", fake.auth_url()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Sidecar::spawn(&env)
}

/// Registers every token the fake made, for the harness's check that none reached stdout
/// or stderr, then closes stdin and waits for a clean exit.
async fn stop(mut sidecar: Sidecar, fake: Option<&FakeGoTrue>) {
    for token in fake.map(FakeGoTrue::tokens).unwrap_or_default() {
        sidecar.secret(&token);
    }
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
}

fn session(access: &str, refresh: &str, expires_at: i64, user_id: &str) -> Value {
    json!({"access_token": access, "refresh_token": refresh, "expires_at": expires_at,
           "token_type": "bearer", "user": {"id": user_id}})
}

/// `auth_store_session`; returns the state.
async fn store(sidecar: &mut Sidecar, session: Value) -> Value {
    let user_id = session["user"]["id"].clone();
    let stored = sidecar.request("auth_store_session", session).await;
    assert_eq!(stored["result"]["userId"], user_id, "{stored}");
    stored["result"].clone()
}

/// The params of the next `auth_state_changed` for which `wanted` holds (earlier ones are
/// passed over).
async fn wait_event(sidecar: &mut Sidecar, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let change = sidecar.recv_notification("auth_state_changed").await;
        crate::schema::assert_valid_notification(&change);
        if wanted(&change["params"]) {
            return change["params"].clone();
        }
    }
}

fn is(event: &'static str) -> impl Fn(&Value) -> bool {
    move |params| params["event"] == event
}

async fn state(sidecar: &mut Sidecar) -> Value {
    let state = sidecar.request("auth_get_state", Value::Null).await;
    crate::schema::assert_valid_result("auth_get_state", &state["result"]);
    state["result"].clone()
}

/// Waits, at most `within`, for the state to satisfy `wanted` (a deadline, not a sleep:
/// "within one ticker period" is a time bound).
async fn state_within(
    sidecar: &mut Sidecar,
    within: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let now = state(sidecar).await;
        if wanted(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {now}");
        tokio::time::sleep(TICK / 10).await;
    }
}

fn fresh(state: &Value, user_id: &str) -> bool {
    state["userId"] == user_id && state["expiresAt"].as_i64().unwrap_or(0) > unix_now() + 600
}

/// The keyring holds a session of `user_id` whose refresh token the auth server takes.
fn assert_working_session(
    keyring: &PrivateKeyring,
    service: &str,
    fake: &FakeGoTrue,
    user_id: &str,
) {
    let stored = keyring.stored(service).expect("a session in the keyring");
    assert_eq!(stored["user"]["id"], user_id);
    let refresh = stored["refresh_token"].as_str().expect("a refresh token");
    assert!(
        fake.refresh_token_works(refresh),
        "the stored refresh token is {}, spent or revoked",
        fake.label(refresh)
    );
}

/// No refresh token was ever sent twice, and no session was revoked.
fn assert_no_reuse(fake: &FakeGoTrue) {
    let presented = fake.presented();
    let mut unique = presented.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        presented.len(),
        "a refresh token was reused: {:?}",
        fake.journal()
    );
    assert!(fake.revoked().is_empty(), "revoked: {:?}", fake.revoked());
}

#[tokio::test]
#[ignore = "needs a real Secret Service: run under scripts/with-keyring.sh"]
async fn explicit_refreshes_in_two_processes_never_spend_a_token_twice() {
    let keyring = PrivateKeyring::start().await;
    let fake = FakeGoTrue::start().await;
    let service = unique_service("own-explicit");
    let (access, refresh) = fake.seed_session_for("u-own", true);
    let mut a = spawn(&keyring, &service, Some(&fake));
    let initial = wait_event(&mut a, is("INITIAL_SESSION")).await;
    assert_eq!(initial["state"]["isAuthenticated"], false, "{initial}");
    assert_eq!(initial["state"]["persistent"], true, "{initial}");
    store(
        &mut a,
        session(&access, &refresh, unix_now() + 3600, "u-own"),
    )
    .await;
    let mut b = spawn(&keyring, &service, Some(&fake));
    let initial = wait_event(&mut b, is("INITIAL_SESSION")).await;
    assert_eq!(initial["state"]["userId"], "u-own", "{initial}");

    // In turn: each refreshes after the other's rotation was adopted (on a tick).
    async fn turn(refresher: &mut Sidecar, other: &mut Sidecar) {
        let refreshed = refresher.request("auth_refresh_session", Value::Null).await;
        assert_eq!(refreshed["result"]["userId"], "u-own", "{refreshed}");
        let own = wait_event(refresher, is("TOKEN_REFRESHED")).await;
        assert_eq!(own["state"], refreshed["result"], "{own}");
        let state = refreshed["result"].clone();
        wait_event(other, |p| {
            p["event"] == "TOKEN_REFRESHED" && p["state"] == state
        })
        .await;
    }
    for _ in 1..=3 {
        turn(&mut a, &mut b).await;
        turn(&mut b, &mut a).await;
    }
    assert_eq!(fake.token_calls(), 6);

    // At once: one refreshes, the other waits for the lock and adopts its result.
    a.send(json!({"jsonrpc": "2.0", "id": "a", "method": "auth_refresh_session"}))
        .await;
    b.send(json!({"jsonrpc": "2.0", "id": "b", "method": "auth_refresh_session"}))
        .await;
    let (ra, rb) = (
        a.recv_response(&json!("a")).await,
        b.recv_response(&json!("b")).await,
    );
    assert_eq!(ra["result"]["isAuthenticated"], true, "{ra}");
    assert_eq!(rb["result"], ra["result"], "both hold the one new session");
    assert_eq!(fake.token_calls(), 7, "{:?}", fake.journal());

    assert_no_reuse(&fake);
    assert_working_session(&keyring, &service, &fake, "u-own");
    assert_eq!(state(&mut a).await, state(&mut b).await);
    stop(a, Some(&fake)).await;
    stop(b, Some(&fake)).await;
}

#[tokio::test]
#[ignore = "needs a real Secret Service: run under scripts/with-keyring.sh"]
async fn ticker_refreshes_in_two_processes_never_spend_a_token_twice() {
    let keyring = PrivateKeyring::start().await;
    let fake = FakeGoTrue::start().await;
    let service = unique_service("own-ticker");

    // A session with 80 s left in the keyring: both first ticks at start want to refresh.
    let (access, refresh) = fake.seed_session_for("u-tick-0", true);
    keyring.put(
        &service,
        &json!({"access_token": access, "refresh_token": refresh,
                "expires_at": unix_now() + 80, "user": {"id": "u-tick-0"}}),
    );
    let mut a = spawn(&keyring, &service, Some(&fake));
    let mut b = spawn(&keyring, &service, Some(&fake));
    for sidecar in [&mut a, &mut b] {
        wait_event(sidecar, |p| fresh(&p["state"], "u-tick-0")).await;
    }
    assert_eq!(fake.token_calls(), 1, "{:?}", fake.journal());

    // Then sessions with 80 s left stored by one or the other: each is refreshed once, by
    // whichever tick takes the lock first; the other adopts it.
    for round in 1..=4 {
        let user = format!("u-tick-{round}");
        let (access, refresh) = fake.seed_session_for(&user, true);
        let storer = if round % 2 == 0 { &mut a } else { &mut b };
        store(storer, session(&access, &refresh, unix_now() + 80, &user)).await;
        for sidecar in [&mut a, &mut b] {
            wait_event(sidecar, |p| fresh(&p["state"], &user)).await;
        }
        assert_eq!(fake.token_calls(), round + 1, "{:?}", fake.journal());
        assert_working_session(&keyring, &service, &fake, &user);
    }
    assert_no_reuse(&fake);
    assert_eq!(state(&mut a).await, state(&mut b).await);
    stop(a, Some(&fake)).await;
    stop(b, Some(&fake)).await;
}

/// A signs out while B's refresh (started before) is at the auth server: A cannot take the
/// lock, so its sign-out is pending; B's refresh ends, finds the sign-out, removes the
/// entry instead of writing the new tokens, and says SIGNED_OUT `external`. Nothing brings
/// the session back, a restart included.
#[tokio::test]
#[ignore = "needs a real Secret Service: run under scripts/with-keyring.sh"]
async fn a_sign_out_in_one_is_seen_by_the_other_and_never_undone() {
    let keyring = PrivateKeyring::start().await;
    let fake = FakeGoTrue::start().await;
    let service = unique_service("own-signout");
    let (access, refresh) = fake.seed_session_for("u-out", true);
    let mut a = spawn(&keyring, &service, Some(&fake));
    store(
        &mut a,
        session(&access, &refresh, unix_now() + 3600, "u-out"),
    )
    .await;
    let mut b = spawn(&keyring, &service, Some(&fake));
    wait_event(&mut b, is("INITIAL_SESSION")).await;

    fake.hold_token();
    b.send(json!({"jsonrpc": "2.0", "id": "held", "method": "auth_refresh_session"}))
        .await;
    fake.wait_token_request().await;
    let cleared = a.request("auth_clear_session", Value::Null).await;
    assert_eq!(cleared["result"]["removed"], true, "{cleared}");
    let signed_out = wait_event(&mut a, is("SIGNED_OUT")).await;
    assert_eq!(signed_out["reason"], "signed_out");
    assert_eq!(
        signed_out["state"]["pendingSignOut"], true,
        "B holds the entry: {signed_out}"
    );
    fake.release_token();

    let external = wait_event(&mut b, is("SIGNED_OUT")).await;
    assert_eq!(external["reason"], "external", "{external}");
    let held = b.recv_response(&json!("held")).await;
    assert_eq!(held["error"]["data"]["kind"], "auth_expired", "{held}");
    assert_eq!(
        keyring.stored(&service),
        None,
        "the new tokens were not written"
    );
    assert_eq!(fake.token_calls(), 1);
    // A's sign-out is no longer pending once a tick has seen the entry gone.
    state_within(&mut a, TICK * 2 + KEYRING_TIMEOUT, |s| {
        s.get("pendingSignOut").is_none()
    })
    .await;
    assert_eq!(state(&mut b).await["isAuthenticated"], false);
    stop(a, Some(&fake)).await;
    stop(b, Some(&fake)).await;

    let mut c = spawn(&keyring, &service, Some(&fake));
    let initial = wait_event(&mut c, is("INITIAL_SESSION")).await;
    assert_eq!(initial["state"]["isAuthenticated"], false, "{initial}");
    stop(c, Some(&fake)).await;
    assert_eq!(keyring.stored(&service), None);
}

/// A stores another user while B's refresh of the old one holds the entry: A waits for the
/// lock, adopts B's rotation, then writes its user; B adopts that (SIGNED_IN) and refreshes
/// it, never the old one.
#[tokio::test]
#[ignore = "needs a real Secret Service: run under scripts/with-keyring.sh"]
async fn a_sign_in_of_another_user_is_adopted_by_the_other_never_overwritten() {
    let keyring = PrivateKeyring::start().await;
    let fake = FakeGoTrue::start().await;
    let service = unique_service("own-signin");
    let (access, refresh) = fake.seed_session_for("u-first", true);
    let mut a = spawn(&keyring, &service, Some(&fake));
    store(
        &mut a,
        session(&access, &refresh, unix_now() + 3600, "u-first"),
    )
    .await;
    let mut b = spawn(&keyring, &service, Some(&fake));
    wait_event(&mut b, is("INITIAL_SESSION")).await;

    fake.hold_token();
    b.send(json!({"jsonrpc": "2.0", "id": "held", "method": "auth_refresh_session"}))
        .await;
    fake.wait_token_request().await;
    let (access, refresh) = fake.seed_session_for("u-second", true);
    a.send(
        json!({"jsonrpc": "2.0", "id": "store", "method": "auth_store_session",
                  "params": session(&access, &refresh, unix_now() + 3600, "u-second")}),
    )
    .await;
    // A's sign-in waits for the entry (its answer comes after B's refresh).
    a.request("core_ping", Value::Null).await;
    fake.release_token();

    let held = b.recv_response(&json!("held")).await;
    assert_eq!(held["result"]["userId"], "u-first", "{held}");
    let stored = a.recv_response(&json!("store")).await;
    assert_eq!(stored["result"]["userId"], "u-second", "{stored}");
    let adopted = wait_event(&mut b, |p| p["event"] == "SIGNED_IN").await;
    assert_eq!(adopted["state"]["userId"], "u-second", "{adopted}");

    let refreshed = b.request("auth_refresh_session", Value::Null).await;
    assert_eq!(refreshed["result"]["userId"], "u-second", "{refreshed}");
    wait_event(&mut a, |p| {
        p["event"] == "TOKEN_REFRESHED" && p["state"] == refreshed["result"]
    })
    .await;
    assert_eq!(fake.token_calls(), 2, "{:?}", fake.journal());
    assert_no_reuse(&fake);
    assert_working_session(&keyring, &service, &fake, "u-second");
    stop(a, Some(&fake)).await;
    stop(b, Some(&fake)).await;
}

/// `auth_get_user` in A stores the user the auth server has: USER_UPDATED in A, and in B
/// (same tokens, another user object) at its next tick. The same user again: no event.
#[tokio::test]
#[ignore = "needs a real Secret Service: run under scripts/with-keyring.sh"]
async fn a_user_update_in_one_is_user_updated_in_both() {
    let keyring = PrivateKeyring::start().await;
    let fake = FakeGoTrue::start().await;
    let service = unique_service("own-user");
    let (access, refresh) = fake.seed_session_for("u-upd", true);
    let mut a = spawn(&keyring, &service, Some(&fake));
    store(
        &mut a,
        session(&access, &refresh, unix_now() + 3600, "u-upd"),
    )
    .await;
    let mut b = spawn(&keyring, &service, Some(&fake));
    wait_event(&mut b, is("INITIAL_SESSION")).await;

    let user = a.request("auth_get_user", Value::Null).await;
    assert_eq!(user["result"]["email"], "u-upd@example.com", "{user}");
    let updated = wait_event(&mut a, is("USER_UPDATED")).await;
    assert_eq!(updated["state"]["user"]["email"], "u-upd@example.com");
    let seen = wait_event(&mut b, is("USER_UPDATED")).await;
    assert_eq!(seen["state"]["user"], updated["state"]["user"]);

    a.request("auth_get_user", Value::Null).await;
    a.request("core_ping", Value::Null).await;
    let again = a
        .notifications()
        .iter()
        .filter(|n| n["params"]["event"] == "USER_UPDATED")
        .count();
    assert_eq!(again, 0, "the same user: no event");
    assert_eq!(
        keyring.stored(&service).expect("stored")["user"]["email"],
        "u-upd@example.com"
    );
    stop(a, Some(&fake)).await;
    stop(b, Some(&fake)).await;
}

/// The Secret Service frozen during `auth_sign_out`: the answer says the sign-out is
/// pending; once it is resumed the entry is gone within a ticker period, the other process
/// sees SIGNED_OUT `external`, and a restart starts signed out.
#[tokio::test]
#[ignore = "needs a real Secret Service: run under scripts/with-keyring.sh"]
async fn a_sign_out_while_the_keyring_is_frozen_lands_when_it_resumes() {
    let keyring = PrivateKeyring::start().await;
    let service = unique_service("own-frozen-out");
    let mut a = spawn(&keyring, &service, None);
    store(
        &mut a,
        session(
            "access-frozen-out",
            "refresh-frozen-out",
            unix_now() + 3600,
            "u-frozen",
        ),
    )
    .await;
    let mut b = spawn(&keyring, &service, None);
    let initial = wait_event(&mut b, is("INITIAL_SESSION")).await;
    assert_eq!(initial["state"]["userId"], "u-frozen");
    for sidecar in [&mut a, &mut b] {
        sidecar
            .secret("access-frozen-out")
            .secret("refresh-frozen-out");
    }

    keyring.freeze();
    let out = a.request("auth_sign_out", json!({"scope": "local"})).await;
    assert_eq!(out["result"]["removed"], true, "{out}");
    assert_eq!(out["result"]["pending"], true, "the caller is told: {out}");
    let signed_out = wait_event(&mut a, is("SIGNED_OUT")).await;
    assert_eq!(signed_out["reason"], "signed_out");
    assert_eq!(signed_out["state"]["isAuthenticated"], false);
    assert_eq!(signed_out["state"]["pendingSignOut"], true, "{signed_out}");
    assert_eq!(state(&mut a).await["pendingSignOut"], true);
    let resumed = Instant::now();
    keyring.thaw();

    let external = wait_event(&mut b, is("SIGNED_OUT")).await;
    assert_eq!(external["reason"], "external", "{external}");
    assert_eq!(keyring.stored(&service), None);
    let took = resumed.elapsed();
    assert!(
        took <= TICK + KEYRING_TIMEOUT * 2,
        "the entry was removed {took:?} after the keyring resumed"
    );
    state_within(&mut a, TICK * 2 + KEYRING_TIMEOUT, |s| {
        s.get("pendingSignOut").is_none()
    })
    .await;
    stop(a, None).await;
    stop(b, None).await;

    let mut c = spawn(&keyring, &service, None);
    let initial = wait_event(&mut c, is("INITIAL_SESSION")).await;
    assert_eq!(initial["state"]["isAuthenticated"], false, "{initial}");
    stop(c, None).await;
}

/// A sign-out the keyring never confirmed (frozen, then the process stopped) is completed
/// by the next start before the session is loaded: the marker beside the lock file.
#[tokio::test]
#[ignore = "needs a real Secret Service: run under scripts/with-keyring.sh"]
async fn a_pending_sign_out_survives_a_restart_and_is_completed_first() {
    let keyring = PrivateKeyring::start().await;
    let service = unique_service("own-pending");
    let mut a = spawn(&keyring, &service, None);
    store(
        &mut a,
        session(
            "access-pending",
            "refresh-pending",
            unix_now() + 3600,
            "u-pending",
        ),
    )
    .await;
    a.secret("access-pending").secret("refresh-pending");
    keyring.freeze();
    let out = a.request("auth_clear_session", Value::Null).await;
    assert_eq!(out["result"]["removed"], true, "{out}");
    assert_eq!(state(&mut a).await["pendingSignOut"], true);
    stop(a, None).await;
    keyring.thaw();
    assert!(keyring.stored(&service).is_some(), "still in the keyring");

    let mut b = spawn(&keyring, &service, None);
    let initial = wait_event(&mut b, is("INITIAL_SESSION")).await;
    assert_eq!(initial["state"]["isAuthenticated"], false, "{initial}");
    assert!(
        initial["state"].get("pendingSignOut").is_none(),
        "{initial}"
    );
    assert_eq!(keyring.stored(&service), None, "completed before loading");
    stop(b, None).await;
}

/// The Secret Service frozen during `auth_store_session`: the caller is told `storage`, and
/// that is the outcome after it resumes and after a restart; stored once it answers again,
/// and that outcome holds after a restart too.
#[tokio::test]
#[ignore = "needs a real Secret Service: run under scripts/with-keyring.sh"]
async fn a_store_while_the_keyring_is_frozen_is_what_the_caller_was_told() {
    let keyring = PrivateKeyring::start().await;
    let service = unique_service("own-frozen-in");
    let mut a = spawn(&keyring, &service, None);
    wait_event(&mut a, is("INITIAL_SESSION")).await;
    a.secret("access-frozen-in").secret("refresh-frozen-in");

    keyring.freeze();
    let params = session(
        "access-frozen-in",
        "refresh-frozen-in",
        unix_now() + 3600,
        "u-in",
    );
    let refused = a.request("auth_store_session", params.clone()).await;
    assert_eq!(refused["error"]["data"]["kind"], "storage", "{refused}");
    keyring.thaw();
    assert_eq!(state(&mut a).await["isAuthenticated"], false);
    stop(a, None).await;
    assert_eq!(keyring.stored(&service), None, "not stored, as told");
    let mut b = spawn(&keyring, &service, None);
    b.secret("access-frozen-in").secret("refresh-frozen-in");
    let initial = wait_event(&mut b, is("INITIAL_SESSION")).await;
    assert_eq!(initial["state"]["isAuthenticated"], false, "{initial}");

    store(&mut b, params).await;
    stop(b, None).await;
    let mut c = spawn(&keyring, &service, None);
    c.secret("access-frozen-in").secret("refresh-frozen-in");
    let initial = wait_event(&mut c, is("INITIAL_SESSION")).await;
    assert_eq!(
        initial["state"]["userId"], "u-in",
        "stored, as told: {initial}"
    );
    stop(c, None).await;
}

/// A keyring locked at start: the named keyring is not replaced by memory; it is retried
/// each tick, and once unlocked the stored session is loaded, `persistent` turns true and
/// KEYRING_AVAILABLE says so, without a restart.
#[tokio::test]
#[ignore = "needs a real Secret Service: run under scripts/with-keyring.sh"]
async fn a_keyring_locked_at_start_is_loaded_once_unlocked() {
    let keyring = PrivateKeyring::start().await;
    let service = unique_service("own-locked");
    let mut a = spawn(&keyring, &service, None);
    store(
        &mut a,
        session(
            "access-locked",
            "refresh-locked",
            unix_now() + 3600,
            "u-locked",
        ),
    )
    .await;
    a.secret("access-locked").secret("refresh-locked");
    stop(a, None).await;

    keyring.lock().await;
    let mut b = spawn(&keyring, &service, None);
    b.secret("access-locked").secret("refresh-locked");
    let initial = wait_event(&mut b, is("INITIAL_SESSION")).await;
    assert_eq!(initial["state"]["isAuthenticated"], false, "{initial}");
    assert_eq!(initial["state"]["persistent"], false, "{initial}");
    // Named, so never memory: nothing can be stored until it answers.
    let refused = b
        .request(
            "auth_store_session",
            session(
                "access-other",
                "refresh-other",
                unix_now() + 3600,
                "u-other",
            ),
        )
        .await;
    assert_eq!(refused["error"]["data"]["kind"], "storage", "{refused}");

    keyring.unlock().await;
    let available = wait_event(&mut b, is("KEYRING_AVAILABLE")).await;
    assert_eq!(available["state"]["isAuthenticated"], true, "{available}");
    assert_eq!(available["state"]["userId"], "u-locked", "{available}");
    assert_eq!(available["state"]["persistent"], true, "{available}");
    let now = state(&mut b).await;
    assert_eq!(now["persistent"], true);
    assert_eq!(now["userId"], "u-locked");
    b.request("auth_clear_session", Value::Null).await;
    stop(b, None).await;
    assert_eq!(keyring.stored(&service), None);
}

/// Waits, with a deadline, until the keyring entry satisfies `wanted` (a keyring write
/// that lands late announces nothing: the entry itself is the observable).
async fn stored_within(
    keyring: &PrivateKeyring,
    service: &str,
    within: Duration,
    wanted: impl Fn(Option<&Value>) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let stored = keyring.stored(service);
        if wanted(stored.as_ref()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not within {within:?}: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keyring writes that land after their caller was told they timed out
/// (`CORE_SIDECAR_KEYRING_FAULT=late-writes`, as a frozen keyring that resumes): a store
/// answered `storage` is undone once it lands (the previous session is written back); a
/// refresh is made true (the new session is this process's, and the keyring's once the
/// write lands). Each outcome holds after a restart.
#[tokio::test]
#[ignore = "needs a real Secret Service: run under scripts/with-keyring.sh"]
async fn writes_that_land_after_their_timeout_end_as_the_caller_was_told() {
    let keyring = PrivateKeyring::start().await;
    let fake = FakeGoTrue::start().await;
    let service = unique_service("own-late");
    let (access, refresh) = fake.seed_session_for("u-before", true);
    let mut a = spawn(&keyring, &service, Some(&fake));
    store(
        &mut a,
        session(&access, &refresh, unix_now() + 3600, "u-before"),
    )
    .await;
    stop(a, Some(&fake)).await;

    let late = |keyring: &PrivateKeyring| {
        let mut env = keyring.env(&service);
        env.push(("CORE_SIDECAR_KEYRING_FAULT", "late-writes".into()));
        env.push(("CORE_SIDECAR_BACKEND_URL", fake.base_url()));
        env.push(("CORE_SIDECAR_AUTH_URL", fake.auth_url()));
        env
    };
    let env = late(&keyring);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut b = Sidecar::spawn(&env);
    let initial = wait_event(&mut b, is("INITIAL_SESSION")).await;
    assert_eq!(initial["state"]["userId"], "u-before");

    let (other_access, other_refresh) = fake.seed_session_for("u-after", true);
    let refused = b
        .request(
            "auth_store_session",
            session(&other_access, &other_refresh, unix_now() + 3600, "u-after"),
        )
        .await;
    assert_eq!(refused["error"]["data"]["kind"], "storage", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out")),
        "{refused}"
    );
    let budget = KEYRING_TIMEOUT * 6 + TICK * 2;
    // It lands late, then is undone.
    stored_within(&keyring, &service, budget, |s| {
        s.is_some_and(|s| s["user"]["id"] == "u-after")
    })
    .await;
    stored_within(&keyring, &service, budget, |s| {
        s.is_some_and(|s| s["user"]["id"] == "u-before")
    })
    .await;
    assert_eq!(state(&mut b).await["userId"], "u-before");

    // A refresh whose write lands late is made true.
    let refreshed = b.request("auth_refresh_session", Value::Null).await;
    assert_eq!(refreshed["result"]["userId"], "u-before", "{refreshed}");
    let event = wait_event(&mut b, is("TOKEN_REFRESHED")).await;
    assert_eq!(event["state"], refreshed["result"]);
    stored_within(&keyring, &service, budget, |s| {
        s.and_then(|s| s["refresh_token"].as_str())
            .is_some_and(|token| token != refresh && fake.refresh_token_works(token))
    })
    .await;
    stop(b, Some(&fake)).await;

    let mut c = spawn(&keyring, &service, Some(&fake));
    let initial = wait_event(&mut c, is("INITIAL_SESSION")).await;
    assert_eq!(initial["state"], refreshed["result"], "{initial}");
    assert_eq!(fake.token_calls(), 1);
    assert_no_reuse(&fake);
    stop(c, Some(&fake)).await;
}
