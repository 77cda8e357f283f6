//! The demo (`scripts/demo.sh` = dev backend + `examples/demo.rs` driving the sidecar) as a
//! smoke test: the built `demo` and `dev_backend` examples are run against the binary under
//! test, so the walkthrough a newcomer sees (a real sign-in by emailed code, then by OAuth
//! with PKCE, against the dev backend's auth server) keeps working, never prints a token, an
//! auth code or a verifier, and fails loudly when a step misbehaves. The dev auth server is
//! also checked on its own against GoTrue's answers.
//!
//! The examples are found next to the binary (`target/<profile>/examples/`): `cargo test`
//! builds them before running tests. `cargo test --test it` alone does not, so a missing or
//! stale example fails with a message saying what to build (building from inside a test
//! would wait forever on cargo's lock).

use std::path::Path;
use std::process::{Output, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{TIMEOUT, bin, clean_env, example};

/// The dev backend on 127.0.0.1, any port: the child (killed on drop) and its base URL.
async fn dev_backend() -> (Child, String) {
    let mut child = Command::new(example("dev_backend"))
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dev_backend");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    tokio::time::timeout(TIMEOUT, stdout.read_line(&mut line))
        .await
        .expect("dev_backend printed nothing")
        .expect("read dev_backend stdout");
    let port: u16 = line
        .trim()
        .strip_prefix("LISTENING ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected `LISTENING <port>`, got {line:?}"));
    (child, format!("http://127.0.0.1:{port}"))
}

/// Runs the demo driver against `backend` with the sidecar under test (memory keyring).
async fn demo(backend: &str) -> Output {
    let mut cmd = Command::new(example("demo"));
    cmd.args(["--backend", backend, "--sidecar", bin()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    clean_env(&mut cmd, &[]);
    cmd.env_remove("NO_COLOR");
    let child = cmd.spawn().expect("spawn demo");
    tokio::time::timeout(TIMEOUT * 3, child.wait_with_output())
        .await
        .expect("the demo did not finish")
        .expect("demo output")
}

/// Fails if anything JWT-shaped (`eyJ`: base64 of `{"`) was printed, or any token, auth
/// code or PKCE verifier the dev auth server issued or received (its `GET /dev/secrets`).
async fn assert_no_secret(backend: &str, stdout: &str, stderr: &str) -> usize {
    let listed: serde_json::Value = reqwest::get(format!("{backend}/dev/secrets"))
        .await
        .expect("GET /dev/secrets")
        .json()
        .await
        .expect("GET /dev/secrets JSON");
    let secrets = listed["data"]["secrets"].as_array().expect("a list");
    for (name, text) in [("stdout", stdout), ("stderr", stderr)] {
        assert!(
            !text.contains("eyJ"),
            "a JWT appeared on the demo's {name}:\n{text}"
        );
        for secret in secrets {
            let secret = secret.as_str().expect("a string");
            assert!(
                !text.contains(secret),
                "a secret of the auth server appeared on the demo's {name}:\n{text}"
            );
        }
    }
    secrets.len()
}

#[tokio::test]
async fn the_demo_walks_through_the_whole_flow() {
    let (_backend, url) = dev_backend().await;
    let output = demo(&url).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the demo failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let secrets = assert_no_secret(&url, &stdout, &stderr).await;
    // Two sign-ins and one refresh: 3 access and 3 refresh tokens, an auth code, a verifier.
    assert!(secrets >= 8, "only {secrets} secrets were checked");

    let expected = [
        " 1. → core_version",
        r#""name": "core-sidecar""#,
        r#""isAuthenticated": false"#,
        " 3. → composio_list_toolkits",
        "error -32001 auth_expired (reason: no_session)",
        r#" 4. → auth_sign_in_with_otp {"email": "demo@example.com"}"#,
        r#"← {"sent": true}"#,
        "GET /dev/otp",
        " 5. → auth_verify_otp",
        "error -32006 auth_failed (reason: otp_expired)",
        r#"auth_verify_otp {"email": "demo@example.com", "token": "<the code>", "type": "email"}"#,
        "◆ notification auth_state_changed: SIGNED_IN",
        r#""email": "demo@example.com", …}"#,
        " 6. → composio_list_toolkits",
        r#""toolkits": ["github""#,
        " 7. → user_get_profile",
        r#""email": "demo@example.com""#,
        " 8. → auth_sign_out",
        "◆ notification auth_state_changed: SIGNED_OUT (reason: signed_out)",
        r#"← {"removed": true}"#,
        r#" 9. → auth_sign_in_with_oauth {"provider": "github", "redirect_to": "coresidecar-demo://auth/callback"}"#,
        r#"← {"url": "http://127.0.0.1:"#,
        "/auth/v1/authorize?provider=github&redirect_to=coresidecar-demo%3A%2F%2Fauth%2Fcallback&code_challenge=",
        "&code_challenge_method=s256\"}",
        r#"10. → auth_exchange_code {"auth_code": "<code from the redirect>"}"#,
        "◆ notification auth_state_changed: SIGNED_IN",
        r#"11. → composio_authorize {"toolkit": "github"}"#,
        r#""connectUrl": "http://127.0.0.1:"#,
        r#""connectionId": "ca_"#,
        r#""status": "ACTIVE""#,
        "13. → composio_list_tools",
        "14. → composio_execute",
        r#""successful": true"#,
        "15. → composio_list_github_repos",
        r#""fullName": "dev-user/desktop-app""#,
        "16. → composio_list_available_triggers",
        "17. → composio_enable_trigger",
        r#""triggerId": "ti_"#,
        "18. → composio_list_active_triggers",
        "19. → composio_disable_trigger",
        r#""deleted": true"#,
        "20. → composio_delete_connection",
        r#""deleted": true"#,
        r#"POST /dev/revoke {"authSessions": false}"#,
        "◆ notification auth_state_changed: TOKEN_REFRESHED",
        r#"← {"connections": []}"#,
        "POST /dev/revoke",
        "◆ notification auth_state_changed: SIGNED_OUT (reason: refresh_failed)",
        "error -32001 auth_expired (reason: refresh_rejected)",
        "23. → auth_get_state",
        "exited with status 0",
        "✓ all 23 steps behaved as expected",
    ];
    let mut from = 0;
    for needle in expected {
        let at = stdout[from..]
            .find(needle)
            .unwrap_or_else(|| panic!("missing (in order) {needle:?} in:\n{stdout}"));
        from += at + needle.len();
    }
    assert_eq!(
        stdout.matches("error -32001 auth_expired").count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("notification auth_state_changed: SIGNED_IN")
            .count(),
        2,
        "one sign-in by code, one by OAuth:\n{stdout}"
    );
    // The demo's own leak check ran against everything the auth server issued.
    assert!(
        stdout.contains("none of the") && stdout.contains("tokens, codes and verifiers"),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("notification auth_state_changed: INITIAL_SESSION")
            .count(),
        1,
        "the start is announced once:\n{stdout}"
    );
    assert!(!stdout.contains('\x1b'), "colors on a pipe:\n{stdout}");
    let lines = stdout.lines().count();
    assert!(
        // 23 steps, their answers and notifications, and the sidecar's warn lines (one per
        // failed upstream call: the wrong code, the two 401s, the rejected refresh).
        lines <= 80,
        "{lines} lines is too long for a newcomer:\n{stdout}"
    );
    assert!(
        stderr.trim().is_empty(),
        "the demo wrote to stderr:\n{stderr}"
    );
}

#[tokio::test]
async fn the_demo_fails_when_a_step_misbehaves() {
    let (_backend, url) = dev_backend().await;
    // The first backend call (step 6, after the sign-in) answers 503.
    let response = reqwest::Client::new()
        .post(format!("{url}/dev/fail"))
        .json(&serde_json::json!({"status": 503}))
        .send()
        .await
        .expect("POST /dev/fail");
    assert!(response.status().is_success());

    let output = demo(&url).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("demo failed") && stderr.contains("composio_list_toolkits failed"),
        "{stderr}"
    );
    assert!(
        stdout.contains("SIGNED_IN"),
        "the sign-in came first:\n{stdout}"
    );
    assert!(!stdout.contains("✓ all 23 steps"), "{stdout}");
    assert_no_secret(&url, &stdout, &stderr).await;
}

#[test]
fn demo_sh_is_valid_bash() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh");
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("run bash -n");
    assert!(status.success(), "bash -n {} failed", script.display());
}

/// The dev backend's auth server answers as GoTrue does, for every flow the sign-in methods
/// use: what the demo (and a developer trying the sidecar by hand) relies on.
#[tokio::test]
async fn the_dev_auth_server_signs_in_like_gotrue() {
    use base64::Engine;
    use serde_json::{Value, json};
    use sha2::Digest;

    let (_backend, url) = dev_backend().await;
    let auth = format!("{url}/auth/v1");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |path: &str, body: Value| http.post(format!("{auth}{path}")).json(&body).send();
    // GoTrue's error: status, `x-sb-error-code` and `{code, error_code, msg}`.
    async fn refused(response: reqwest::Response, status: u16, code: &str) {
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.headers()["x-sb-error-code"], code);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], status);
        assert_eq!(body["error_code"], code);
        assert!(body["msg"].is_string(), "{body}");
    }
    async fn session(response: reqwest::Response) -> Value {
        assert_eq!(response.status(), 200);
        let s: Value = response.json().await.unwrap();
        assert!(
            s["access_token"].as_str().unwrap().starts_with("eyJ"),
            "{s}"
        );
        assert!(s["refresh_token"].as_str().unwrap().len() >= 20, "{s}");
        assert_eq!(s["token_type"], "bearer");
        assert_eq!(s["expires_in"], 3600);
        assert!(s["expires_at"].as_u64().is_some());
        assert_eq!(s["user"]["email"], "demo@example.com", "{s}");
        s
    }

    // Password.
    refused(
        post(
            "/token?grant_type=password",
            json!({"email": "demo@example.com", "password": "wrong-password"}),
        )
        .await
        .unwrap(),
        400,
        "invalid_credentials",
    )
    .await;
    let first = session(
        post(
            "/token?grant_type=password",
            json!({"email": "demo@example.com", "password": "demo-password", "gotrue_meta_security": {}}),
        )
        .await
        .unwrap(),
    )
    .await;

    // The product backend reads the user from the access token.
    let bearer = |s: &Value| format!("Bearer {}", s["access_token"].as_str().unwrap());
    let me: Value = http
        .get(format!("{url}/auth/me"))
        .header("authorization", bearer(&first))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["id"], first["user"]["id"]);
    assert_eq!(me["data"]["email"], "demo@example.com");

    // OTP: a wrong code, the right one (read where scripts read it), then it is spent.
    let otp_body = json!({"email": "demo@example.com", "data": {}, "create_user": true,
        "gotrue_meta_security": {}, "code_challenge": null, "code_challenge_method": null});
    let sent = post("/otp", otp_body).await.unwrap();
    assert_eq!(sent.status(), 200);
    let dev: Value = http
        .get(format!("{url}/dev/otp?email=demo%40example.com"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = dev["data"]["code"].as_str().unwrap().to_string();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{dev}"
    );
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let verify =
        |token: &str| json!({"email": "demo@example.com", "token": token, "type": "email"});
    refused(
        post("/verify", verify(wrong)).await.unwrap(),
        403,
        "otp_expired",
    )
    .await;
    let by_otp = session(post("/verify", verify(&code)).await.unwrap()).await;
    refused(
        post("/verify", verify(&code)).await.unwrap(),
        403,
        "otp_expired",
    )
    .await;

    // OAuth PKCE: the redirect carries a code; a wrong verifier leaves it usable; once only.
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let verifier = b64(&[7u8; 64]);
    let challenge = b64(&sha2::Sha256::digest(verifier.as_bytes()));
    let redirect = http
        .get(format!(
            "{auth}/authorize?provider=github&redirect_to=coresidecar-demo%3A%2F%2Fauth%2Fcallback\
             &code_challenge={challenge}&code_challenge_method=s256"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 302);
    let location = redirect.headers()["location"].to_str().unwrap().to_string();
    let auth_code = location
        .strip_prefix("coresidecar-demo://auth/callback?code=")
        .unwrap_or_else(|| panic!("unexpected Location {location}"))
        .to_string();
    let exchange = |verifier: &str| json!({"auth_code": auth_code, "code_verifier": verifier});
    refused(
        post("/token?grant_type=pkce", exchange(&format!("{verifier}x")))
            .await
            .unwrap(),
        400,
        "bad_code_verifier",
    )
    .await;
    let by_oauth = session(
        post("/token?grant_type=pkce", exchange(&verifier))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        by_oauth["user"]["app_metadata"]["providers"],
        json!(["email", "github"])
    );
    refused(
        post("/token?grant_type=pkce", exchange(&verifier))
            .await
            .unwrap(),
        404,
        "flow_state_not_found",
    )
    .await;
    refused(
        http.get(format!("{auth}/authorize?provider=nope"))
            .send()
            .await
            .unwrap(),
        400,
        "validation_failed",
    )
    .await;

    // Refresh tokens rotate; a spent one is refused and ends its session.
    let refresh = |s: &Value| json!({"refresh_token": s["refresh_token"]});
    let rotated = session(
        post("/token?grant_type=refresh_token", refresh(&first))
            .await
            .unwrap(),
    )
    .await;
    assert_ne!(rotated["refresh_token"], first["refresh_token"]);
    assert_ne!(rotated["access_token"], first["access_token"]);
    refused(
        post("/token?grant_type=refresh_token", refresh(&first))
            .await
            .unwrap(),
        400,
        "refresh_token_already_used",
    )
    .await;
    let user = |s: &Value| {
        http.get(format!("{auth}/user"))
            .header("authorization", bearer(s))
            .send()
    };
    refused(user(&rotated).await.unwrap(), 403, "session_not_found").await;

    // /user, PUT /user, /logout.
    let me: Value = user(&by_otp).await.unwrap().json().await.unwrap();
    assert_eq!(me["id"], first["user"]["id"]);
    let updated: Value = http
        .put(format!("{auth}/user"))
        .header("authorization", bearer(&by_otp))
        .json(&json!({"data": {"theme": "dark"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(updated["user_metadata"]["theme"], "dark");
    refused(
        http.get(format!("{auth}/user")).send().await.unwrap(),
        401,
        "no_authorization",
    )
    .await;
    let out = http
        .post(format!("{auth}/logout?scope=local"))
        .header("authorization", bearer(&by_otp))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    refused(user(&by_otp).await.unwrap(), 403, "session_not_found").await;
    refused(
        post("/token?grant_type=refresh_token", refresh(&by_otp))
            .await
            .unwrap(),
        400,
        "refresh_token_not_found",
    )
    .await;

    // /dev/revoke ends the auth server's sessions too.
    user(&by_oauth).await.unwrap().error_for_status().unwrap();
    http.post(format!("{url}/dev/revoke")).send().await.unwrap();
    refused(user(&by_oauth).await.unwrap(), 403, "session_not_found").await;

    // /dev/secrets lists every token, code and verifier, for leak checks.
    let secrets: Value = http
        .get(format!("{url}/dev/secrets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secrets = secrets["data"]["secrets"].as_array().unwrap();
    for s in [&first, &by_otp, &by_oauth, &rotated] {
        assert!(secrets.contains(&s["access_token"]) && secrets.contains(&s["refresh_token"]));
    }
    assert!(secrets.contains(&json!(verifier)) && secrets.contains(&json!(auth_code)));
}
