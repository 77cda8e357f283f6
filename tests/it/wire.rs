//! docs/protocol.md, "Wire rules", through the real binary: framing, batches, notifications,
//! error codes, exact id echo, bad input, concurrency and shutdown.

use serde_json::{Value, json};

use crate::harness::{Sidecar, TIMEOUT, bin, clean_env, raw_members};

const HOOKS: &[(&str, &str)] = &[("CORE_SIDECAR_TEST_HOOKS", "1")];

fn ping_line(id: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"core_ping"}}"#)
}

/// Sends a ping and asserts that the very next stdout line is its response: proves that
/// nothing was written for whatever was sent before it.
async fn next_line_is_ping_response(sidecar: &mut Sidecar, id: u64) {
    sidecar.send_line(&ping_line(&id.to_string())).await;
    let response = sidecar.recv_json().await;
    assert_eq!(
        response,
        json!({"jsonrpc": "2.0", "id": id, "result": {"pong": true}}),
        "expected the ping's response as the next line"
    );
}

/// Sends one line and returns the single response line, parsed.
async fn exchange(sidecar: &mut Sidecar, line: &str) -> Value {
    sidecar.send_line(line).await;
    sidecar.recv_json().await
}

fn assert_error(response: &Value, code: i64, id: &Value) {
    assert_eq!(response["jsonrpc"], "2.0", "{response}");
    assert_eq!(response["error"]["code"], code, "{response}");
    assert!(response["error"]["message"].is_string(), "{response}");
    assert_eq!(&response["id"], id, "{response}");
    assert!(response.get("result").is_none(), "{response}");
}

#[tokio::test]
async fn single_request() {
    let mut sidecar = Sidecar::spawn(&[]);
    let response = exchange(&mut sidecar, &ping_line("1")).await;
    assert_eq!(
        response,
        json!({"jsonrpc": "2.0", "id": 1, "result": {"pong": true}})
    );
    let version = sidecar.request("core_version", Value::Null).await;
    assert_eq!(version["result"]["name"], "core-sidecar");
    assert_eq!(version["result"]["protocol"], 1);
}

#[tokio::test]
async fn batch_responses_come_back_as_one_array_line() {
    let mut sidecar = Sidecar::spawn(&[]);
    sidecar
        .send_line(&format!(
            r#"[{},{},{{"jsonrpc":"2.0","id":3,"method":"nope_nope"}},{{"jsonrpc":"2.0","method":"core_ping"}}]"#,
            ping_line("1"),
            ping_line(r#""two""#)
        ))
        .await;
    let line = sidecar.recv_line(TIMEOUT).await.expect("batch response");
    let responses: Vec<Value> = serde_json::from_str(&line).expect("one JSON array line");
    assert_eq!(responses.len(), 3, "the notification gets no entry: {line}");
    let by_id = |id: Value| {
        responses
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no response for {id}: {line}"))
            .clone()
    };
    assert_eq!(by_id(json!(1))["result"], json!({"pong": true}));
    assert_eq!(by_id(json!("two"))["result"], json!({"pong": true}));
    assert_error(&by_id(json!(3)), -32601, &json!(3));
    next_line_is_ping_response(&mut sidecar, 9).await;
}

#[tokio::test]
async fn batch_with_invalid_members_answers_each() {
    let mut sidecar = Sidecar::spawn(&[]);
    let line = format!(r#"[1,{}]"#, ping_line("2"));
    let response = exchange(&mut sidecar, &line).await;
    let responses = response.as_array().expect("array");
    assert_eq!(responses.len(), 2, "{response}");
    let invalid = responses
        .iter()
        .find(|r| r.get("error").is_some())
        .expect("an error for `1`");
    assert_error(invalid, -32600, &Value::Null);
    assert!(
        responses
            .iter()
            .any(|r| r["id"] == 2 && r["result"]["pong"] == true)
    );
}

#[tokio::test]
async fn notifications_get_no_response_even_on_error() {
    let mut sidecar = Sidecar::spawn(HOOKS);
    for line in [
        r#"{"jsonrpc":"2.0","method":"core_ping"}"#,
        r#"{"jsonrpc":"2.0","method":"core_ping","params":{}}"#,
        r#"{"jsonrpc":"2.0","method":"no_such_method"}"#,
        r#"{"jsonrpc":"2.0","method":"core_test_sleep","params":{"ms":"not a number"}}"#,
        r#"{"jsonrpc":"2.0","method":"core_test_sleep"}"#,
    ] {
        sidecar.send_line(line).await;
    }
    next_line_is_ping_response(&mut sidecar, 1).await;
}

#[tokio::test]
async fn batch_of_only_notifications_writes_nothing() {
    let mut sidecar = Sidecar::spawn(&[]);
    sidecar
        .send_line(
            r#"[{"jsonrpc":"2.0","method":"core_ping"},{"jsonrpc":"2.0","method":"no_such_method"}]"#,
        )
        .await;
    next_line_is_ping_response(&mut sidecar, 1).await;
}

#[tokio::test]
async fn empty_batch_is_one_invalid_request() {
    let mut sidecar = Sidecar::spawn(&[]);
    let response = exchange(&mut sidecar, "[]").await;
    assert!(
        response.is_object(),
        "one error object, not an array: {response}"
    );
    assert_error(&response, -32600, &Value::Null);
    next_line_is_ping_response(&mut sidecar, 1).await;
}

#[tokio::test]
async fn parse_errors_have_null_id() {
    let mut sidecar = Sidecar::spawn(&[]);
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"method":"core_ping""#,
        "not json",
        r#"{"jsonrpc":"2.0","id":1,"method":"core_ping"} trailing"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"core_ping"},"#,
    ] {
        let response = exchange(&mut sidecar, line).await;
        assert_error(&response, -32700, &Value::Null);
    }
    next_line_is_ping_response(&mut sidecar, 1).await;
}

/// A pending call always ends: an invalid request whose id can be read gets it back.
#[tokio::test]
async fn invalid_requests_get_their_id_back_when_it_can_be_read() {
    let mut sidecar = Sidecar::spawn(&[]);
    for (line, id) in [
        (r#"{"jsonrpc":"2.0","id":1}"#, json!(1)),
        (r#"{"jsonrpc":"2.1","id":2,"method":"core_ping"}"#, json!(2)),
        (
            r#"{"jsonrpc":"1.0","id":"three","method":"core_ping"}"#,
            json!("three"),
        ),
        (r#"{"id":4,"method":"core_ping"}"#, json!(4)),
        (r#"{"jsonrpc":2,"id":5,"method":"core_ping"}"#, json!(5)),
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"core_ping","params":"a string"}"#,
            json!(6),
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"core_ping","params":3}"#,
            json!(7),
        ),
        (r#"{"jsonrpc":"2.0","id":8,"method":5}"#, json!(8)),
        (
            r#"{"jsonrpc":"2.0","id":-9.5,"method":["core_ping"]}"#,
            json!(-9.5),
        ),
        (r#"{"jsonrpc":"2.0","id":null}"#, Value::Null),
    ] {
        let response = exchange(&mut sidecar, line).await;
        assert!(response.is_object(), "{line} -> {response}");
        assert_error(&response, -32600, &id);
        assert!(response["error"].get("data").is_none(), "{response}");
    }
    // In a batch too, member by member.
    let response = exchange(
        &mut sidecar,
        &format!(r#"[{{"jsonrpc":"2.0","id":"m"}},{}]"#, ping_line("2")),
    )
    .await;
    assert_error(&response[0], -32600, &json!("m"));
    assert_eq!(response[1]["result"]["pong"], true, "{response}");
    next_line_is_ping_response(&mut sidecar, 1).await;
}

/// `id: null` only when no id can be read: not an object, or an id of a wrong type.
#[tokio::test]
async fn invalid_requests_without_a_readable_id_have_null_id() {
    let mut sidecar = Sidecar::spawn(&[]);
    for line in [
        r#"{"jsonrpc":"2.0","id":{},"method":"core_ping"}"#,
        r#"{"jsonrpc":"2.0","id":[1],"method":"core_ping"}"#,
        r#"{"jsonrpc":"2.0","id":true,"method":"core_ping"}"#,
        r#"{"jsonrpc":"2.0","id":true,"method":5}"#,
        r#"{"jsonrpc":"2.0","method":5}"#,
        "1",
        r#""a string""#,
        "null",
    ] {
        let response = exchange(&mut sidecar, line).await;
        assert!(response.is_object(), "{line} -> {response}");
        assert_error(&response, -32600, &Value::Null);
    }
    next_line_is_ping_response(&mut sidecar, 1).await;
}

/// The handshake (docs/protocol.md, "Handshake").
#[tokio::test]
async fn core_initialize_says_what_the_sidecar_is_and_can_do() {
    let mut sidecar = Sidecar::spawn(&[]);
    // Optional: anything works before it.
    next_line_is_ping_response(&mut sidecar, 100).await;
    let response = sidecar
        .request(
            "core_initialize",
            json!({"protocolVersion": 1, "clientInfo": {"name": "wire-test", "version": "0.0.1"}, "laterParam": true}),
        )
        .await;
    crate::schema::assert_valid_response("core_initialize", &response);
    let result = &response["result"];
    assert_eq!(result["protocolVersion"], 1, "{result}");
    assert_eq!(
        result["serverInfo"],
        json!({"name": "core-sidecar", "version": env!("CARGO_PKG_VERSION")})
    );
    let methods: Vec<&str> = result["capabilities"]["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .map(|m| m.as_str().expect("a name"))
        .collect();
    assert_eq!(methods, crate::schema::documented_methods());
    assert!(methods.contains(&"core_initialize"));
    assert_eq!(
        result["capabilities"]["notifications"],
        json!(["auth_state_changed"])
    );
    assert_eq!(result["capabilities"]["cancellation"], true);
    assert_eq!(
        result["keyring"],
        json!({"backend": "memory", "persistent": false})
    );
    assert_eq!(
        result["configured"],
        json!({"backend": false, "auth": false})
    );
    // Answered once the session is loaded: INITIAL_SESSION has come already.
    assert_eq!(
        sidecar.initial_session().await["params"]["event"],
        "INITIAL_SESSION"
    );
    let version = sidecar.request("core_version", Value::Null).await;
    assert_eq!(version["result"]["protocol"], result["protocolVersion"]);

    // A version it does not speak: -32602 with the ones it does.
    for unsupported in [json!(0), json!(2), json!(-1)] {
        let response = sidecar
            .request("core_initialize", json!({"protocolVersion": unsupported}))
            .await;
        crate::schema::assert_valid_response("core_initialize", &response);
        assert_eq!(response["error"]["code"], -32602, "{response}");
        assert_eq!(
            response["error"]["data"],
            json!({"kind": "invalid_params", "retryable": false, "field": "protocolVersion", "supported": [1]}),
            "{response}"
        );
    }
    for bad in [
        json!({}),
        json!({"protocolVersion": "1"}),
        json!({"protocolVersion": 1, "clientInfo": {"version": "1"}}),
    ] {
        let response = sidecar.request("core_initialize", bad.clone()).await;
        assert_eq!(response["error"]["code"], -32602, "{bad} -> {response}");
        assert!(
            response["error"]["data"].get("supported").is_none(),
            "{response}"
        );
    }
    next_line_is_ping_response(&mut sidecar, 101).await;
}

/// With a real keyring: its name, persistent, and the answer comes after INITIAL_SESSION.
#[tokio::test]
#[ignore = "needs a real Secret Service / keyutils: run under scripts/with-keyring.sh"]
async fn core_initialize_names_the_keyring_and_comes_after_initial_session() {
    let service = crate::harness::unique_service("initialize");
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_KEYRING", "secret-service"),
        ("CORE_SIDECAR_KEYRING_SERVICE", service.as_str()),
    ]);
    let response = sidecar
        .request("core_initialize", json!({"protocolVersion": 1}))
        .await;
    assert_eq!(
        response["result"]["keyring"],
        json!({"backend": "secret-service", "persistent": true}),
        "{response}"
    );
    let before: Vec<&Value> = sidecar
        .notifications()
        .iter()
        .map(|n| &n["params"]["event"])
        .collect();
    assert_eq!(
        before,
        [&json!("INITIAL_SESSION")],
        "read before the answer"
    );
}

#[tokio::test]
async fn core_initialize_reports_the_configured_upstreams() {
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_BACKEND_URL", "http://127.0.0.1:9"),
        ("CORE_SIDECAR_AUTH_URL", "http://127.0.0.1:9/auth/v1"),
    ]);
    let response = sidecar
        .request("core_initialize", json!({"protocolVersion": 1}))
        .await;
    assert_eq!(
        response["result"]["configured"],
        json!({"backend": true, "auth": true}),
        "{response}"
    );
}

#[tokio::test]
async fn version_flag_prints_the_protocol_version() {
    let output = tokio::process::Command::new(bin())
        .arg("--version")
        .output()
        .await
        .expect("run --version");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).expect("utf-8"),
        format!(
            "core-sidecar {} (protocol {})\n",
            env!("CARGO_PKG_VERSION"),
            core_sidecar::PROTOCOL_VERSION
        )
    );
}

#[tokio::test]
async fn unknown_method_is_method_not_found() {
    let mut sidecar = Sidecar::spawn(&[]);
    let response = sidecar.request("nope_nope", Value::Null).await;
    assert_error(&response, -32601, &json!(1));
    // The test hooks exist only with CORE_SIDECAR_TEST_HOOKS=1.
    let response = sidecar
        .request("core_test_panic", json!({"message": "x"}))
        .await;
    assert_error(&response, -32601, &json!(2));
    let response = sidecar.request("core_test_sleep", json!({"ms": 1})).await;
    assert_error(&response, -32601, &json!(3));
}

#[tokio::test]
async fn bad_params_are_invalid_params() {
    let mut sidecar = Sidecar::spawn(HOOKS);
    let response = sidecar
        .request("core_test_sleep", json!({"ms": "not a number"}))
        .await;
    assert_error(&response, -32602, &json!(1));
    let response = sidecar.request("core_test_sleep", Value::Null).await;
    assert_error(&response, -32602, &json!(2));
}

#[tokio::test]
async fn ids_come_back_exactly_as_sent() {
    let mut sidecar = Sidecar::spawn(&[]);
    for id in [
        "0",
        "-1",
        "1.5",
        "-0.25",
        "18446744073709551616",
        "-92233720368547758080",
        "1e3",
        "1E-2",
        "12345678901234567890123456789.5",
        r#""abc""#,
        r#""""#,
        r#""a \"quoted\" \u00e9 id""#,
        "null",
    ] {
        sidecar.send_line(&ping_line(id)).await;
        let line = sidecar.recv_line(TIMEOUT).await.expect("response");
        let members = raw_members(&line);
        let echoed = members.get("id").unwrap_or_else(|| panic!("no id: {line}"));
        if id.starts_with('"') {
            // Strings: the same string (escapes may be written differently).
            let sent: Value = serde_json::from_str(id).unwrap();
            let got: Value = serde_json::from_str(echoed).unwrap();
            assert_eq!(got, sent, "{line}");
        } else {
            // Numbers and null: the very same text.
            assert_eq!(echoed, id, "{line}");
        }
        assert_eq!(
            members.get("result").map(String::as_str),
            Some(r#"{"pong":true}"#)
        );
    }
    // Errors echo the id too.
    sidecar
        .send_line(r#"{"jsonrpc":"2.0","id":1e3,"method":"nope_nope"}"#)
        .await;
    let line = sidecar.recv_line(TIMEOUT).await.expect("response");
    assert_eq!(raw_members(&line)["id"], "1e3", "{line}");
    // And inside a batch.
    sidecar
        .send_line(&format!("[{},{}]", ping_line("1.50"), ping_line("-7")))
        .await;
    let line = sidecar.recv_line(TIMEOUT).await.expect("response");
    assert!(line.contains(r#""id":1.50"#), "{line}");
    assert!(line.contains(r#""id":-7"#), "{line}");
}

#[tokio::test]
async fn over_long_line_is_invalid_request_and_reading_goes_on() {
    let mut sidecar = Sidecar::spawn(&[("CORE_SIDECAR_MAX_LINE_BYTES", "1024")]);
    let padding = "x".repeat(4000);
    let long = format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"core_ping","params":{{"pad":"{padding}"}}}}"#
    );
    let response = exchange(&mut sidecar, &long).await;
    assert_error(&response, -32600, &Value::Null);
    // A line just under the limit still works.
    let pad = "y".repeat(900);
    let response = exchange(
        &mut sidecar,
        &format!(r#"{{"jsonrpc":"2.0","id":8,"method":"core_ping","params":{{"pad":"{pad}"}}}}"#),
    )
    .await;
    assert_eq!(response["id"], 8, "{response}");
    // Much longer than any buffer, sent in pieces.
    let huge = format!(r#"{{"pad":"{}"}}"#, "z".repeat(300_000));
    let response = exchange(&mut sidecar, &huge).await;
    assert_error(&response, -32600, &Value::Null);
    next_line_is_ping_response(&mut sidecar, 1).await;
}

#[tokio::test]
async fn invalid_utf8_is_a_parse_error_and_reading_goes_on() {
    let mut sidecar = Sidecar::spawn(&[]);
    sidecar
        .send_bytes(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"core_ping\xff\xfe\"}\n")
        .await;
    let response = sidecar.recv_json().await;
    assert_error(&response, -32700, &Value::Null);
    sidecar.send_bytes(b"\xc3\x28\n").await;
    let response = sidecar.recv_json().await;
    assert_error(&response, -32700, &Value::Null);
    next_line_is_ping_response(&mut sidecar, 2).await;
}

#[tokio::test]
async fn trailing_carriage_return_is_tolerated() {
    let mut sidecar = Sidecar::spawn(&[]);
    sidecar
        .send_bytes(format!("{}\r\n", ping_line("1")).as_bytes())
        .await;
    let response = sidecar.recv_json().await;
    assert_eq!(response["result"]["pong"], true, "{response}");
    assert_eq!(response["id"], 1);
}

#[tokio::test]
async fn blank_lines_are_ignored() {
    let mut sidecar = Sidecar::spawn(&[]);
    sidecar.send_bytes(b"\n\r\n   \n").await;
    next_line_is_ping_response(&mut sidecar, 1).await;
}

/// `printf '{"jsonrpc":"2.0","id":1,"method":"core_ping"}\n' | core-sidecar`
#[tokio::test]
async fn piped_single_request_prints_one_line_and_exits_zero() {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    clean_env(&mut cmd, &[]);
    let mut child = cmd.spawn().expect("spawn");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(format!("{}\n", ping_line("1")).as_bytes())
            .await
            .expect("write");
        // Dropped here: EOF.
    }
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("exits")
        .expect("output");
    assert!(output.status.success(), "{:?}", output.status);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert_eq!(
        crate::harness::without_initial_session(&stdout),
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"pong\":true}}\n",
        "{stdout}"
    );
}

#[tokio::test]
async fn panicking_handler_is_internal_error_and_the_process_lives_on() {
    let mut sidecar = Sidecar::spawn(HOOKS);
    let response = sidecar
        .request("core_test_panic", json!({"message": "boom"}))
        .await;
    assert_error(&response, -32603, &json!(1));
    assert_eq!(response["error"]["data"]["kind"], "internal", "{response}");
    next_line_is_ping_response(&mut sidecar, 100).await;
    // Again, and inside a batch: only the panicking member fails.
    sidecar
        .send_line(&format!(
            r#"[{{"jsonrpc":"2.0","id":"p","method":"core_test_panic","params":{{"message":"boom"}}}},{}]"#,
            ping_line("2")
        ))
        .await;
    let responses = sidecar.recv_json().await;
    let responses = responses.as_array().expect("array");
    assert_eq!(responses.len(), 2);
    let failed = responses.iter().find(|r| r["id"] == "p").expect("p");
    assert_error(failed, -32603, &json!("p"));
    assert!(
        responses
            .iter()
            .any(|r| r["id"] == 2 && r["result"]["pong"] == true)
    );
    next_line_is_ping_response(&mut sidecar, 101).await;
}

#[tokio::test]
async fn panic_message_is_scrubbed_from_stdout_and_stderr() {
    let mut sidecar = Sidecar::spawn(HOOKS);
    let secret = crate::harness::TEST_JWT;
    let response = sidecar
        .request(
            "core_test_panic",
            json!({"message": format!("token {secret} refresh_token=rt-abc")}),
        )
        .await;
    assert_error(&response, -32603, &json!(1));
    sidecar.secret("rt-abc");
    sidecar.close_stdin();
    assert!(sidecar.wait_exit(TIMEOUT).await.success());
    let stderr = sidecar.stderr();
    assert!(stderr.contains("panic"), "the panic is logged:\n{stderr}");
    // The Drop check asserts that neither token reached stdout or stderr.
}

async fn assert_signal_exits_zero(signal: fn(&Sidecar)) {
    let mut sidecar = Sidecar::spawn(&[]);
    // Answering proves the sidecar is up (signal handlers installed).
    next_line_is_ping_response(&mut sidecar, 1).await;
    signal(&sidecar);
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}; stderr:\n{}",
        sidecar.stderr()
    );
}

#[tokio::test]
async fn sigterm_exits_zero() {
    assert_signal_exits_zero(Sidecar::kill_term).await;
}

#[tokio::test]
async fn sigint_exits_zero() {
    assert_signal_exits_zero(Sidecar::kill_int).await;
}

#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    let mut sidecar = Sidecar::spawn(HOOKS);
    sidecar
        .send_line(
            r#"{"jsonrpc":"2.0","id":"slow","method":"core_test_sleep","params":{"ms":300}}"#,
        )
        .await;
    // Lines are read in order: once the ping is answered, the slow one is in flight.
    next_line_is_ping_response(&mut sidecar, 1).await;
    sidecar.kill_term();
    let response = sidecar.recv_response(&json!("slow")).await;
    assert_eq!(response["result"]["pong"], true, "{response}");
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn stdin_eof_answers_requests_in_flight_then_exits_zero() {
    let mut sidecar = Sidecar::spawn(HOOKS);
    for id in 1..=3 {
        sidecar
            .send(json!({"jsonrpc": "2.0", "id": id, "method": "core_test_sleep", "params": {"ms": 200 * id}}))
            .await;
    }
    sidecar.send_line(&ping_line("4")).await;
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
    let mut ids = Vec::new();
    while let Some(line) = sidecar.recv_line(TIMEOUT).await {
        let response: Value = serde_json::from_str(&line).expect("JSON");
        assert!(response.get("result").is_some(), "{response}");
        ids.push(response["id"].as_u64().expect("numeric id"));
    }
    ids.sort();
    assert_eq!(
        ids,
        vec![1, 2, 3, 4],
        "every request answered once before exit"
    );
}

#[tokio::test]
async fn slow_request_does_not_delay_ping() {
    let mut sidecar = Sidecar::spawn(HOOKS);
    sidecar
        .send_line(r#"{"jsonrpc":"2.0","id":1,"method":"core_test_sleep","params":{"ms":2000}}"#)
        .await;
    sidecar.send_line(&ping_line("2")).await;
    let first = sidecar.recv_json().await;
    assert_eq!(
        first["id"], 2,
        "the ping overtakes the slow request: {first}"
    );
    assert_eq!(first["result"]["pong"], true);
}

#[tokio::test]
async fn help_lists_every_variable() {
    let output = tokio::process::Command::new(bin())
        .arg("--help")
        .output()
        .await
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("utf-8");
    for var in [
        "CORE_SIDECAR_BACKEND_URL",
        "CORE_SIDECAR_AUTH_URL",
        "CORE_SIDECAR_AUTH_API_KEY",
        "CORE_SIDECAR_KEYRING",
        "CORE_SIDECAR_KEYRING_SERVICE",
        "CORE_SIDECAR_PROFILE",
        "CORE_SIDECAR_HTTP_TIMEOUT_MS",
        "SENTRY_DSN",
        "SENTRY_ENVIRONMENT",
        "SENTRY_RELEASE",
        "RUST_LOG",
    ] {
        assert!(help.contains(var), "--help does not mention {var}:\n{help}");
    }
    for value in ["secret-service", "keyutils", "memory"] {
        assert!(
            help.contains(value),
            "--help does not list keyring {value}:\n{help}"
        );
    }
}

#[tokio::test]
async fn stderr_carries_logs_and_stdout_only_protocol() {
    let mut sidecar = Sidecar::spawn(&[("RUST_LOG", "debug")]);
    next_line_is_ping_response(&mut sidecar, 1).await;
    sidecar.close_stdin();
    assert_eq!(sidecar.wait_exit(TIMEOUT).await.code(), Some(0));
    let stdout = sidecar.stdout();
    for line in stdout.lines() {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{line}"));
        assert_eq!(value["jsonrpc"], "2.0", "{line}");
    }
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

/// Pending requests count against `CORE_SIDECAR_MAX_IN_FLIGHT`; past it a new request is
/// refused at once, before it starts (-32002 `rate_limited`, no `status`), and the reader
/// goes on: what completes without an upstream is still answered at once. (Requests answered
/// inline while being read are never pending and need no slot.)
#[tokio::test]
async fn past_the_in_flight_bound_new_requests_are_refused_and_the_reader_goes_on() {
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_TEST_HOOKS", "1"),
        ("CORE_SIDECAR_MAX_IN_FLIGHT", "1"),
        ("CORE_SIDECAR_SHUTDOWN_TIMEOUT_MS", "200"),
    ]);
    // Takes the one slot for ten minutes (test hooks are not reserved methods).
    sidecar
        .send_line(
            r#"{"jsonrpc":"2.0","id":"sleeper","method":"core_test_sleep","params":{"ms":600000}}"#,
        )
        .await;
    sidecar
        .send_line(
            r#"{"jsonrpc":"2.0","id":"second","method":"core_test_sleep","params":{"ms":0}}"#,
        )
        .await;
    sidecar.send_line(&ping_line(r#""ping""#)).await;
    let refused = sidecar.recv_json().await;
    assert_error(&refused, -32002, &json!("second"));
    assert_eq!(
        refused["error"]["data"]["kind"], "rate_limited",
        "{refused}"
    );
    assert_eq!(refused["error"]["data"]["retryable"], true, "{refused}");
    assert!(
        refused["error"]["data"].get("status").is_none(),
        "no HTTP status: the sidecar refused it itself: {refused}"
    );
    let ping = sidecar.recv_json().await;
    assert_eq!(ping["id"], "ping", "the ping is not held up: {ping}");
    // Session methods run past the bound: one answered on its first poll, one that waits on
    // the keyring (from the reserve).
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["isAuthenticated"], false, "{state}");
    let cleared = sidecar.request("auth_clear_session", Value::Null).await;
    assert_eq!(cleared["result"]["removed"], false, "{cleared}");
    // The sleeper still holds the slot.
    let again = sidecar.request("core_test_sleep", json!({"ms": 0})).await;
    assert_eq!(again["error"]["code"], -32002, "{again}");
    sidecar.close_stdin();
    assert_eq!(sidecar.wait_exit(TIMEOUT).await.code(), Some(0));
    assert!(
        !sidecar.stdout().contains("sleeper"),
        "the ten-minute sleep was never answered"
    );
}

#[tokio::test]
async fn shutdown_wait_for_requests_in_flight_is_bounded() {
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_TEST_HOOKS", "1"),
        ("CORE_SIDECAR_SHUTDOWN_TIMEOUT_MS", "200"),
    ]);
    sidecar
        .send_line(r#"{"jsonrpc":"2.0","id":1,"method":"core_test_sleep","params":{"ms":600000}}"#)
        .await;
    next_line_is_ping_response(&mut sidecar, 2).await;
    sidecar.close_stdin();
    // TIMEOUT (10 s) is far below the 10 min sleep: exiting proves the bound.
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
}

#[tokio::test]
async fn many_pipelined_requests_are_all_answered_in_whole_lines() {
    // A bound above the 300 sleeps, which may all be pending at once: none is refused.
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_TEST_HOOKS", "1"),
        ("CORE_SIDECAR_MAX_IN_FLIGHT", "1000"),
    ]);
    const N: u64 = 3000;
    let mut input = String::new();
    for id in 0..N {
        if id % 10 == 0 {
            input.push_str(&format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"core_test_sleep","params":{{"ms":{}}}}}"#,
                id % 7
            ));
        } else if id % 10 == 5 {
            input.push_str(&format!(
                r#"[{},{{"jsonrpc":"2.0","method":"core_ping"}}]"#,
                ping_line(&id.to_string())
            ));
        } else {
            input.push_str(&ping_line(&id.to_string()));
        }
        input.push('\n');
    }
    sidecar.send_bytes(input.as_bytes()).await;
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0));
    let mut seen = vec![false; N as usize];
    let mut lines = 0;
    while let Some(line) = sidecar.recv_line(TIMEOUT).await {
        lines += 1;
        let value: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("torn line ({e}): {line}"));
        let responses = match value {
            Value::Array(items) => items,
            single => vec![single],
        };
        for response in responses {
            assert_eq!(response["result"]["pong"], true, "{response}");
            let id = response["id"].as_u64().expect("id") as usize;
            assert!(!seen[id], "id {id} answered twice");
            seen[id] = true;
        }
    }
    assert_eq!(lines, N as usize);
    assert!(seen.iter().all(|s| *s), "every request answered");
}

/// The file status flags of a descriptor (`fcntl(F_GETFL)`).
#[cfg(target_os = "linux")]
fn status_flags(fd: &impl std::os::fd::AsRawFd) -> i32 {
    // SAFETY: F_GETFL reads the flags of a descriptor this test owns; no pointer is passed.
    let flags = unsafe { nix::libc::fcntl(fd.as_raw_fd(), nix::libc::F_GETFL) };
    assert!(flags >= 0, "F_GETFL");
    flags
}

/// Reads `n` lines from a blocking reader on a thread of its own, within the test timeout.
#[cfg(target_os = "linux")]
async fn read_lines(reader: impl std::io::Read + Send + 'static, n: usize) -> Vec<String> {
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(reader)
            .lines()
            .take(n)
            .map(|line| line.expect("read"))
            .collect::<Vec<_>>()
    });
    tokio::time::timeout(TIMEOUT, lines)
        .await
        .expect("lines within the timeout")
        .expect("reader thread")
}

/// The way Node and Electron spawn a child (and socat, inetd): stdin and stdout are one
/// socket. It is read and written non-blocking on the runtime's thread while the sidecar
/// runs, and its flags are put back when it exits.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn one_socket_as_stdin_and_stdout_is_served_non_blocking_and_left_as_found() {
    use std::io::Write;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::process::Stdio;

    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    // A copy of the sidecar's end, kept here: it shares the open file description, so its
    // flags are the sidecar's.
    let watch = theirs.try_clone().expect("dup");
    assert_eq!(status_flags(&watch) & nix::libc::O_NONBLOCK, 0);
    let mut cmd = tokio::process::Command::new(bin());
    cmd.stdin(Stdio::from(OwnedFd::from(theirs.try_clone().expect("dup"))))
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    clean_env(&mut cmd, &[("RUST_LOG", "debug")]);
    let mut child = cmd.spawn().expect("spawn");

    // A big answer (rpc.discover) between pings: more than a socket buffer holds at once.
    let mut input = String::new();
    for id in 0..20 {
        if id % 5 == 0 {
            input.push_str(&format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"rpc.discover"}}"#
            ));
        } else {
            input.push_str(&ping_line(&id.to_string()));
        }
        input.push('\n');
    }
    ours.write_all(input.as_bytes()).expect("write");
    let reader = ours.try_clone().expect("dup");
    let lines = read_lines(reader, 21).await;
    let mut ids: Vec<u64> = lines
        .iter()
        .filter(|line| !crate::harness::is_initial_session(line))
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("whole JSON lines");
            assert!(value.get("result").is_some(), "{value}");
            value["id"].as_u64().expect("id")
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
    assert_ne!(
        status_flags(&watch) & nix::libc::O_NONBLOCK,
        0,
        "served non-blocking"
    );

    ours.shutdown(std::net::Shutdown::Write).expect("EOF");
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("exits on EOF")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        status_flags(&watch) & nix::libc::O_NONBLOCK,
        0,
        "the flags are put back at exit"
    );
}

/// `2>&1`: stdout is also stderr, where logs are written with blocking writes. stdout then
/// keeps blocking writes (a writer thread), and protocol lines still come out whole.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn stdout_shared_with_stderr_stays_blocking_and_lines_stay_whole() {
    use std::os::fd::OwnedFd;
    use std::process::Stdio;

    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut cmd = tokio::process::Command::new(bin());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::from(OwnedFd::from(writer.try_clone().expect("dup"))))
        .stderr(Stdio::from(OwnedFd::from(writer)))
        .kill_on_drop(true);
    clean_env(&mut cmd, &[("RUST_LOG", "debug")]);
    let mut child = cmd.spawn().expect("spawn");
    drop(cmd);
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        let mut input = String::new();
        for id in 0..50 {
            input.push_str(&ping_line(&id.to_string()));
            input.push('\n');
        }
        stdin.write_all(input.as_bytes()).await.expect("write");
        // Dropped: EOF.
    }
    let output = tokio::task::spawn_blocking(move || {
        let mut all = String::new();
        std::io::Read::read_to_string(&mut { reader }, &mut all).expect("read");
        all
    });
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("exits on EOF")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    let output = tokio::time::timeout(TIMEOUT, output)
        .await
        .expect("pipe closed")
        .expect("reader");
    let responses: Vec<Value> = output
        .lines()
        .filter(|line| line.starts_with('{') && !crate::harness::is_initial_session(line))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("torn ({e}): {line}")))
        .collect();
    assert_eq!(responses.len(), 50, "{output}");
    assert!(output.contains("writer thread"), "{output}");
}

/// stdin from a file (epoll refuses regular files): a reader thread reads it, every line is
/// answered, and EOF ends the process.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn stdin_from_a_file_is_read_by_a_reader_thread() {
    use std::io::{Seek, Write};
    use std::process::Stdio;

    let path = std::env::temp_dir().join(format!("core-sidecar-stdin-{}", std::process::id()));
    let mut file = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("temp file");
    std::fs::remove_file(&path).expect("unlink");
    for id in 0..10 {
        writeln!(file, "{}", ping_line(&id.to_string())).expect("write");
    }
    file.rewind().expect("rewind");
    let mut cmd = tokio::process::Command::new(bin());
    cmd.stdin(Stdio::from(file))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    clean_env(&mut cmd, &[("RUST_LOG", "debug")]);
    let output = tokio::time::timeout(TIMEOUT, cmd.spawn().expect("spawn").wait_with_output())
        .await
        .expect("exits at the end of the file")
        .expect("output");
    assert_eq!(output.status.code(), Some(0));
    let stdout =
        crate::harness::without_initial_session(&String::from_utf8(output.stdout).expect("UTF-8"));
    assert_eq!(stdout.lines().count(), 10, "{stdout}");
    assert!(
        stdout.lines().all(|l| l.contains(r#""pong":true"#)),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("reader thread"), "{stderr}");
}
