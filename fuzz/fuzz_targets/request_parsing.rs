//! Arbitrary bytes as one input line to `rpc::Dispatcher` over the real method table
//! (`router::methods` over `app::build_app`: memory keyring, no backend or auth server, no
//! test hooks); the session is cleared after every input so none leaks into the next.
//!
//! Invariants:
//! - no panic (libFuzzer aborts on any panic, even one the dispatcher would catch);
//! - a reply is one line: valid JSON, no `\n`, and either an object with `"jsonrpc": "2.0"`
//!   and an `id`, or a non-empty array of such objects;
//! - a well-formed request (an object with no envelope member repeated, `"jsonrpc": "2.0"`,
//!   a string `method`, params absent or structured, an `id` that is a string, number or
//!   null) gets one object whose id text is byte for byte the id sent; without an `id`, it
//!   gets nothing;
//! - a batch (a JSON array) gets, in order, one reply per item that is not a well-formed
//!   notification: the item's id for a well-formed request, `null` for anything else; no
//!   reply at all when nothing is owed; an empty batch gets one `-32600` object.

#![no_main]

use std::fmt;
use std::sync::OnceLock;

use clap::Parser;
use core_sidecar::config::{Config, KeyringKind};
use core_sidecar::router;
use core_sidecar::rpc::{Dispatcher, Outbox, Reply};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    dispatcher: Dispatcher,
}

/// The method table as `app::run` builds it (memory keyring, no backend or auth server, no
/// test hooks), built once: the HTTP client is too costly to build per input.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut config = Config::try_parse_from(["core-sidecar"]).expect("default config");
        config.keyring = KeyringKind::Memory;
        config.backend_url = None;
        config.auth_url = None;
        config.test_hooks = false;
        let app = core_sidecar::app::build_app(&config, &Outbox::new(std::io::sink()), core_sidecar::telemetry::Telemetry::new())
            .expect("the app builds without a backend URL");
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            dispatcher: Dispatcher::new(router::methods(app)),
        }
    })
}

fn run(fixture: &Fixture, line: &[u8]) -> Option<String> {
    match fixture.dispatcher.handle_line(line) {
        Reply::Now(reply) => reply,
        Reply::Later(future) => fixture.runtime.block_on(future),
    }
}

/// No session leaks from one input to the next.
const RESET: &[u8] = br#"{"jsonrpc":"2.0","id":0,"method":"auth_clear_session"}"#;

/// An object's members in order, values as raw text; duplicates kept.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Members {
    fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// A member of the envelope given twice (other members are ignored, duplicates too).
    fn has_duplicate_envelope_member(&self) -> bool {
        ["jsonrpc", "id", "method", "params"]
            .iter()
            .any(|key| self.0.iter().filter(|(k, _)| k == key).count() > 1)
    }
}

fn first_byte(raw: &RawValue) -> u8 {
    raw.get().as_bytes()[0]
}

/// What one request (a line, or a batch item) is owed.
#[derive(Debug, PartialEq, Eq)]
enum Owed {
    /// A reply carrying this id text.
    Reply(String),
    /// Nothing: a well-formed notification.
    Nothing,
    /// Cases the wire contract leaves open (`"params": null`): not checked.
    Either,
}

fn owed(text: &str) -> Owed {
    let null = || Owed::Reply("null".into());
    if !text.trim_start().starts_with('{') {
        return null();
    }
    let Some(members) = Members::parse(text) else {
        return null();
    };
    if members.has_duplicate_envelope_member() {
        return null();
    }
    let is_string = |key: &str, want: Option<&str>| {
        members
            .get(key)
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .is_some_and(|s| want.is_none_or(|want| s == want))
    };
    if !is_string("jsonrpc", Some("2.0")) || !is_string("method", None) {
        return null();
    }
    match members.get("params").map(first_byte) {
        None | Some(b'{' | b'[') => {}
        Some(b'n') => return Owed::Either,
        Some(_) => return null(),
    }
    match members.get("id") {
        None => Owed::Nothing,
        Some(id) if matches!(first_byte(id), b'"' | b'-' | b'0'..=b'9' | b'n') => {
            Owed::Reply(id.get().to_owned())
        }
        Some(_) => null(),
    }
}

/// Checks one response object; returns its id text.
fn response_id(text: &str) -> String {
    let members = Members::parse(text).unwrap_or_else(|| panic!("not an object: {text}"));
    let jsonrpc = members.get("jsonrpc").map(RawValue::get);
    assert_eq!(jsonrpc, Some(r#""2.0""#), "jsonrpc in {text}");
    let id = members
        .get("id")
        .unwrap_or_else(|| panic!("no id in {text}"));
    assert!(
        members.get("result").is_some() != members.get("error").is_some(),
        "exactly one of result and error in {text}"
    );
    id.get().to_owned()
}

fn check(input: &[u8], reply: Option<&str>) {
    if let Some(reply) = reply {
        assert!(!reply.contains('\n'), "reply spans lines: {reply}");
        serde_json::from_str::<IgnoredAny>(reply)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {reply}"));
    }
    let Ok(text) = std::str::from_utf8(input) else {
        let reply = reply.expect("invalid UTF-8 gets a parse error");
        assert_eq!(response_id(reply), "null");
        return;
    };
    let is_batch = text.trim_start().starts_with('[');
    let items = if is_batch {
        serde_json::from_str::<Vec<Box<RawValue>>>(text).ok()
    } else {
        None
    };
    match items {
        Some(items) if items.is_empty() => {
            assert_eq!(response_id(reply.expect("empty batch")), "null");
        }
        Some(items) => {
            let owed: Vec<Owed> = items.iter().map(|item| owed(item.get())).collect();
            let replies: Vec<Box<RawValue>> = match reply {
                None => Vec::new(),
                Some(reply) => serde_json::from_str(reply)
                    .unwrap_or_else(|e| panic!("batch reply is not an array ({e}): {reply}")),
            };
            if reply.is_some() {
                assert!(!replies.is_empty(), "empty array reply");
            }
            let ids: Vec<String> = replies.iter().map(|r| response_id(r.get())).collect();
            if owed.iter().all(|o| *o != Owed::Either) {
                let want: Vec<String> = owed
                    .into_iter()
                    .filter_map(|o| match o {
                        Owed::Reply(id) => Some(id),
                        _ => None,
                    })
                    .collect();
                assert_eq!(ids, want, "batch reply ids for {text:?}");
            }
        }
        None if is_batch || text.trim().is_empty() => {
            // Malformed batch: a parse error. Blank line: nothing.
            if let Some(reply) = reply {
                assert_eq!(response_id(reply), "null");
            } else {
                assert!(text.trim().is_empty(), "no reply to {text:?}");
            }
        }
        None => match owed(text) {
            Owed::Reply(id) => {
                let reply = reply.unwrap_or_else(|| panic!("no reply to {text:?}"));
                assert_eq!(response_id(reply), id, "id echo for {text:?}");
            }
            Owed::Nothing => assert_eq!(reply, None, "reply to a notification {text:?}"),
            Owed::Either => {
                if let Some(reply) = reply {
                    response_id(reply);
                }
            }
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let reply = run(fixture, data);
    check(data, reply.as_deref());
    let reset = run(fixture, RESET).expect("a reply");
    assert!(reset.contains(r#""result""#), "reset failed: {reset}");
});
