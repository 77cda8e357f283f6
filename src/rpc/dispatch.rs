//! Turns one input line into a reply: envelope validation, batches, exact id echo, and the
//! call into the method table ([`Methods`]).
//!
//! The id is never parsed into a number or a string: its text, exactly as the client sent
//! it, is put in front of the handler's answer (`{"jsonrpc":"2.0","id":<as sent>,...}`).
//!
//! [`Dispatcher::handle_line_admitted`] is what the reader uses: each request (each batch
//! member) whose handler is async is first put to an [`Admit`] decision, then polled once
//! right there; only the ones still pending keep their [`Ticket`].
//!
//! **Params.** Every handler reads its params straight from the input line; an async one
//! turns them into typed values before it returns its future, so the raw text is never
//! copied.
//!
//! **Cancellation.** Each request still pending after its first poll that has an id (a
//! string or a number) is kept in a table by id with an abort handle ([`Pending`]), and
//! leaves it however it ends. [`CANCEL_METHOD`] `{"id": ...}` aborts the ones with that id:
//! the handler's future is dropped and -32800 `cancelled` is answered in its place (in a
//! batch, in that member's place). Unknown ids are ignored.
//!
//! **Invalid requests** get -32600 with their id whenever it can be read (a string, a number
//! or `null` under `id`), so a shell's pending call always ends; `id: null` otherwise.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::FutureExt;
use futures::future::{AbortHandle, Abortable, Aborted, BoxFuture};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use tokio::sync::OwnedSemaphorePermit;

use super::methods::{Answer, Handler, Methods};

/// What a line produced: a reply ready now (or nothing, for notifications), or one that
/// needs the runtime.
pub enum Reply {
    Now(Option<String>),
    Later(BoxFuture<'static, Option<String>>),
}

/// One in-flight slot, held by a pending request until its reply is queued.
pub type Ticket = OwnedSemaphorePermit;

/// Whether a request whose handler is async may start. Decided before its handler runs, so
/// a refused request has started nothing.
pub enum Admit {
    /// Run it; a ticket, when given, is kept while it is pending.
    Run(Option<Ticket>),
    /// Refuse it (`-32002` `rate_limited`); the number is the bound, for the message.
    Refuse(usize),
}

/// The notification that cancels a pending request, as in LSP: `{"id": <the request's id>}`.
pub const CANCEL_METHOD: &str = "$/cancelRequest";

const PARSE_ERROR: &str =
    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;
const INVALID_REQUEST: &str =
    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid request"}}"#;
const LINE_TOO_LONG: &str = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid request: line exceeds the length limit"}}"#;
const RESPONSE_HEAD: &str = r#"{"jsonrpc":"2.0","id":"#;

pub fn line_too_long() -> String {
    LINE_TOO_LONG.to_string()
}

/// The request envelope, borrowed from the input line.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// Distinguishes `"id": null` (a request) from no `id` at all (a notification).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

pub struct Dispatcher {
    methods: Methods,
    /// The pending requests a `$/cancelRequest` can end.
    pending: Pending,
}

impl Dispatcher {
    pub fn new(methods: Methods) -> Self {
        Self {
            methods,
            pending: Pending::default(),
        }
    }

    /// Requests pending now that a cancel could end (those with an id).
    pub fn cancellable(&self) -> usize {
        self.pending.len()
    }

    /// Handles one line: a single request or a batch. Every request is admitted and nothing
    /// is polled: a pending reply comes back as [`Reply::Later`], to be awaited anywhere.
    pub fn handle_line(&self, line: &[u8]) -> Reply {
        let mut tickets = Vec::new();
        let mut admit_all = |_: &str| Admit::Run(None);
        self.handle(
            line,
            &mut Gate {
                admit: &mut admit_all,
                poll: false,
                tickets: &mut tickets,
            },
        )
    }

    /// Handles one line the way the reader does: each request with an async handler (each
    /// batch member, one by one, in order) is put to `admit` first. A refused one is answered
    /// at once; an admitted one is polled once, here, so it must run inside the runtime. A
    /// request that completes on that poll is answered at once and its ticket dropped; the
    /// tickets of the pending ones are returned with the [`Reply::Later`], to be dropped once
    /// its reply is queued.
    pub fn handle_line_admitted(
        &self,
        line: &[u8],
        admit: &mut dyn FnMut(&str) -> Admit,
    ) -> (Reply, Vec<Ticket>) {
        let mut tickets = Vec::new();
        let reply = self.handle(
            line,
            &mut Gate {
                admit,
                poll: true,
                tickets: &mut tickets,
            },
        );
        if matches!(reply, Reply::Now(_)) {
            tickets.clear();
        }
        (reply, tickets)
    }

    fn handle(&self, line: &[u8], gate: &mut Gate<'_>) -> Reply {
        match line.iter().find(|b| !b.is_ascii_whitespace()) {
            None => Reply::Now(None),
            // serde_json skips the members it ignores without checking their UTF-8.
            Some(_) if std::str::from_utf8(line).is_err() => Reply::Now(Some(PARSE_ERROR.into())),
            Some(b'[') => self.handle_batch(line, gate),
            Some(_) => self.handle_single(line, gate),
        }
    }

    fn handle_batch(&self, line: &[u8], gate: &mut Gate<'_>) -> Reply {
        let items: Vec<&RawValue> = match serde_json::from_slice(line) {
            Ok(items) => items,
            Err(_) => return Reply::Now(Some(PARSE_ERROR.into())),
        };
        if items.is_empty() {
            return Reply::Now(Some(INVALID_REQUEST.into()));
        }
        let replies: Vec<Reply> = items
            .iter()
            .map(|item| self.handle_single(item.get().as_bytes(), gate))
            .collect();
        if replies.iter().all(|r| matches!(r, Reply::Now(_))) {
            let lines = replies.into_iter().filter_map(|r| match r {
                Reply::Now(line) => line,
                Reply::Later(_) => None,
            });
            return Reply::Now(join_batch(lines));
        }
        // The members run concurrently; their responses keep the batch's order.
        let members = replies.into_iter().map(|reply| match reply {
            Reply::Now(line) => futures::future::ready(line).boxed(),
            Reply::Later(future) => future,
        });
        Reply::Later(
            futures::future::join_all(members)
                .map(|lines| join_batch(lines.into_iter().flatten()))
                .boxed(),
        )
    }

    fn handle_single(&self, text: &[u8], gate: &mut Gate<'_>) -> Reply {
        // A request is an object; serde would also take a batch member `["2.0", 1, "m"]`.
        if text.first() == Some(&b'[') {
            return Reply::Now(Some(INVALID_REQUEST.into()));
        }
        let envelope: Envelope<'_> = match serde_json::from_slice(text) {
            Ok(envelope) => envelope,
            Err(e) => return Reply::Now(Some(envelope_error(&e, text))),
        };
        let id = envelope.id;
        let Some(request) = Request::validate(envelope) else {
            return Reply::Now(Some(invalid_request(id)));
        };
        self.call(request, gate)
    }

    fn call(&self, request: Request<'_>, gate: &mut Gate<'_>) -> Reply {
        let id = request.id.map(|raw| raw.get().to_owned());
        if request.method == CANCEL_METHOD {
            if let Some(params) = request.params {
                self.pending.cancel(params);
            }
            // A notification; sent with an id, it is answered `null` once it has cancelled.
            return Reply::Now(id.map(|id| format!(r#"{RESPONSE_HEAD}{id},"result":null}}"#)));
        }
        let Some(handler) = self.methods.get(&request.method) else {
            return Reply::Now(id.map(|id| method_not_found(&id)));
        };
        let params = request.params.map(RawValue::get);
        match handler {
            Handler::Sync(method) => {
                let answer = std::panic::catch_unwind(AssertUnwindSafe(|| method(params)));
                Reply::Now(id.map(|id| answer_line(&id, answer.ok())))
            }
            Handler::Async(method) => {
                let ticket = match (gate.admit)(&request.method) {
                    Admit::Run(ticket) => ticket,
                    Admit::Refuse(bound) => return Reply::Now(id.map(|id| refused(&id, bound))),
                };
                // Reading the params happens here, inside the catch: a panic there is a
                // -32603 like any other.
                let future = std::panic::catch_unwind(AssertUnwindSafe(|| method(params)));
                let Ok(future) = future else {
                    return Reply::Now(id.map(|id| internal_error(&id)));
                };
                // The id as sent, for a cancelled answer, and as a cancel names it.
                let tracked = request
                    .id
                    .and_then(|raw| IdKey::of(raw).map(|key| (key, raw.get().to_owned())));
                let mut future = AssertUnwindSafe(future)
                    .catch_unwind()
                    .map(move |answer| id.map(|id| answer_line(&id, answer.ok())))
                    .boxed();
                if gate.poll
                    && let Poll::Ready(reply) = poll_once(&mut future)
                {
                    return Reply::Now(reply);
                }
                gate.tickets.extend(ticket);
                match tracked {
                    Some((key, id)) => Reply::Later(self.pending.track(key, id, future)),
                    None => Reply::Later(future),
                }
            }
        }
    }
}

/// How [`Dispatcher::call`] admits and starts async handlers, and where the tickets of the
/// pending ones go.
struct Gate<'a> {
    admit: &'a mut dyn FnMut(&str) -> Admit,
    /// Poll each admitted handler once, at once.
    poll: bool,
    tickets: &'a mut Vec<Ticket>,
}

fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(future).poll(&mut cx)
}

/// A pending request's id as a cancel names it: a string by its value (however it was
/// escaped), a number by its text as sent (`1.50` is not `1.5`). `null` names no request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum IdKey {
    Text(String),
    Number(String),
}

impl IdKey {
    fn of(raw: &RawValue) -> Option<Self> {
        let text = raw.get();
        match text.as_bytes().first()? {
            b'"' => serde_json::from_str(text).ok().map(Self::Text),
            b'-' | b'0'..=b'9' => Some(Self::Number(text.to_owned())),
            _ => None,
        }
    }
}

/// The pending requests that have an id, each with the handle that aborts it. A request
/// leaves the table when it ends, however it ends (answered, cancelled, or dropped).
#[derive(Clone, Default)]
struct Pending {
    table: Arc<Mutex<PendingTable>>,
}

#[derive(Default)]
struct PendingTable {
    next: u64,
    /// Ids are the shell's: two pending requests may share one, and a cancel ends both.
    by_id: HashMap<IdKey, Vec<(u64, AbortHandle)>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().by_id.values().map(Vec::len).sum()
    }

    /// `reply`, made cancellable under `key`: a cancel drops it (its handler future, and with
    /// it whatever the handler was waiting on) and answers -32800 in its place.
    fn track(
        &self,
        key: IdKey,
        id: String,
        reply: BoxFuture<'static, Option<String>>,
    ) -> BoxFuture<'static, Option<String>> {
        let (handle, registration) = AbortHandle::new_pair();
        let serial = {
            let mut table = self.lock();
            table.next += 1;
            let serial = table.next;
            table
                .by_id
                .entry(key.clone())
                .or_default()
                .push((serial, handle));
            serial
        };
        let entry = Entry {
            pending: self.clone(),
            key,
            serial,
        };
        Abortable::new(reply, registration)
            .map(move |reply| {
                drop(entry);
                reply.unwrap_or_else(|Aborted| Some(cancelled(&id)))
            })
            .boxed()
    }

    /// `$/cancelRequest` params: aborts every pending request with that id. Anything else
    /// (no id, an id no pending request has, params of another shape) is ignored.
    fn cancel(&self, params: &RawValue) {
        #[derive(Deserialize)]
        struct CancelParams<'a> {
            #[serde(borrow)]
            id: &'a RawValue,
        }
        let Ok(CancelParams { id }) = serde_json::from_str(params.get()) else {
            return;
        };
        let Some(key) = IdKey::of(id) else {
            return;
        };
        if let Some(requests) = self.lock().by_id.get(&key) {
            for (_, handle) in requests {
                handle.abort();
            }
        }
    }
}

/// A pending request's place in the table, given up when it ends.
struct Entry {
    pending: Pending,
    key: IdKey,
    serial: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut table = self.pending.lock();
        if let Some(requests) = table.by_id.get_mut(&self.key) {
            requests.retain(|(serial, _)| *serial != self.serial);
            if requests.is_empty() {
                table.by_id.remove(&self.key);
            }
        }
    }
}

/// A request whose envelope passed validation.
struct Request<'a> {
    /// `None` for a notification.
    id: Option<&'a RawValue>,
    method: Cow<'a, str>,
    params: Option<&'a RawValue>,
}

impl<'a> Request<'a> {
    fn validate(envelope: Envelope<'a>) -> Option<Self> {
        if envelope.jsonrpc.as_deref() != Some("2.0") {
            return None;
        }
        let method = envelope.method?;
        if let Some(id) = envelope.id
            && !valid_id(id)
        {
            return None;
        }
        if let Some(params) = envelope.params
            && !matches!(params.get().as_bytes()[0], b'{' | b'[')
        {
            return None;
        }
        Some(Self {
            id: envelope.id,
            method,
            params: envelope.params,
        })
    }
}

/// A line that did not deserialize as an envelope: malformed JSON is a parse error; valid
/// JSON of the wrong shape (a number, a `method` that is not a string) is an invalid request,
/// answered with its id when one can be read.
fn envelope_error(error: &serde_json::Error, text: &[u8]) -> String {
    if !error.is_data() || serde_json::from_slice::<serde::de::IgnoredAny>(text).is_err() {
        return PARSE_ERROR.into();
    }
    /// Only the id, from an object whose other members did not fit the envelope.
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow, default, deserialize_with = "present")]
        id: Option<&'a RawValue>,
    }
    let id = serde_json::from_slice::<IdOnly<'_>>(text)
        .ok()
        .and_then(|only| only.id);
    invalid_request(id)
}

/// -32600 for a request that is not valid, with its id when it has one of a valid type (a
/// string, a number or `null`), so the shell's pending call ends; `null` otherwise.
fn invalid_request(id: Option<&RawValue>) -> String {
    match id.filter(|id| valid_id(id)) {
        Some(id) => format!(
            r#"{RESPONSE_HEAD}{},"error":{{"code":-32600,"message":"Invalid request"}}}}"#,
            id.get()
        ),
        None => INVALID_REQUEST.into(),
    }
}

fn valid_id(id: &RawValue) -> bool {
    matches!(
        id.get().as_bytes().first(),
        Some(b'"' | b'-' | b'0'..=b'9' | b'n')
    )
}

/// The answer to a request the shell cancelled (`$/cancelRequest`): -32800 `cancelled`, the
/// `data` of the library's `Error::Cancelled` (docs/protocol.md, "Cancellation").
fn cancelled(id: &str) -> String {
    format!(
        r#"{RESPONSE_HEAD}{id},"error":{{"code":-32800,"message":"cancelled by the client","data":{{"kind":"cancelled","retryable":false}}}}}}"#
    )
}

fn method_not_found(id: &str) -> String {
    format!(r#"{RESPONSE_HEAD}{id},"error":{{"code":-32601,"message":"Method not found"}}}}"#)
}

/// The answer to a request refused at the in-flight bound (docs/protocol.md, "Concurrency and
/// backpressure"): the `rate_limited` error without an HTTP `status`, since the sidecar itself
/// refused it, before its handler started.
fn refused(id: &str, bound: usize) -> String {
    format!(
        r#"{RESPONSE_HEAD}{id},"error":{{"code":-32002,"message":"Too many requests in flight (the bound is {bound}): not started; retry once an answer comes back","data":{{"kind":"rate_limited","retryable":true}}}}}}"#
    )
}

fn internal_error(id: &str) -> String {
    format!(
        r#"{RESPONSE_HEAD}{id},"error":{{"code":-32603,"message":"Internal error","data":{{"kind":"internal","retryable":false}}}}}}"#
    )
}

/// The response line for a handler's answer, with the client's id as it was sent; a handler
/// that panicked (`None`) becomes -32603 for that request only.
fn answer_line(id: &str, answer: Option<Answer>) -> String {
    let (member, body) = match answer {
        Some(Ok(result)) => (r#","result":"#, result),
        Some(Err(error)) => match serde_json::to_string(&error) {
            Ok(text) => (r#","error":"#, text),
            Err(_) => return internal_error(id),
        },
        None => return internal_error(id),
    };
    let mut line =
        String::with_capacity(RESPONSE_HEAD.len() + id.len() + member.len() + body.len() + 1);
    line.push_str(RESPONSE_HEAD);
    line.push_str(id);
    line.push_str(member);
    line.push_str(&body);
    line.push('}');
    line
}

/// A batch's responses as one array; a batch of only notifications writes nothing.
fn join_batch(lines: impl Iterator<Item = String>) -> Option<String> {
    let mut out = String::from("[");
    for line in lines {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&line);
    }
    if out.len() == 1 {
        return None;
    }
    out.push(']');
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn dispatcher() -> Dispatcher {
        let mut module = Methods::new();
        module.add_sync("ping", |_| Ok(r#""pong""#.into()));
        module.add_async("nap", |_| {
            async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(r#""rested""#.into())
            }
            .boxed()
        });
        Dispatcher::new(module)
    }

    #[tokio::test(start_paused = true)]
    async fn batch_members_run_concurrently_and_keep_their_order() {
        let line = br#"[{"jsonrpc":"2.0","id":1,"method":"nap"},{"jsonrpc":"2.0","id":2,"method":"nap"},{"jsonrpc":"2.0","id":3,"method":"ping"}]"#;
        let Reply::Later(future) = dispatcher().handle_line(line) else {
            panic!("a batch with pending members completes later");
        };
        let start = tokio::time::Instant::now();
        let reply = future.await.expect("a response");
        assert_eq!(start.elapsed(), Duration::from_secs(1), "one nap, not two");
        assert_eq!(
            reply,
            r#"[{"jsonrpc":"2.0","id":1,"result":"rested"},{"jsonrpc":"2.0","id":2,"result":"rested"},{"jsonrpc":"2.0","id":3,"result":"pong"}]"#
        );
    }

    #[test]
    fn ids_come_back_as_sent() {
        for id in [
            "-1",
            "1.50",
            "18446744073709551616",
            "1e3",
            r#""x\"y""#,
            "null",
        ] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            let Reply::Now(Some(reply)) = dispatcher().handle_line(line.as_bytes()) else {
                panic!("ping answers at once");
            };
            assert_eq!(
                reply,
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"pong"}}"#)
            );
        }
    }

    /// A method that never ends, and tells when its future is dropped.
    fn hanging() -> (Dispatcher, Arc<std::sync::atomic::AtomicUsize>) {
        struct Dropped(Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut module = Methods::new();
        let counter = dropped.clone();
        module.add_async("hang", move |_| {
            let guard = Dropped(counter.clone());
            async move {
                let _guard = guard;
                std::future::pending().await
            }
            .boxed()
        });
        module.add_sync("ping", |_| Ok(r#""pong""#.into()));
        (Dispatcher::new(module), dropped)
    }

    fn later(reply: Reply) -> BoxFuture<'static, Option<String>> {
        match reply {
            Reply::Later(future) => future,
            Reply::Now(reply) => panic!("pending, not {reply:?}"),
        }
    }

    fn cancel(dispatcher: &Dispatcher, id: &str) {
        let line =
            format!(r#"{{"jsonrpc":"2.0","method":"$/cancelRequest","params":{{"id":{id}}}}}"#);
        assert!(matches!(
            dispatcher.handle_line(line.as_bytes()),
            Reply::Now(None)
        ));
    }

    #[tokio::test]
    async fn a_cancel_ends_the_pending_request_and_drops_its_future() {
        let (dispatcher, dropped) = hanging();
        let first =
            later(dispatcher.handle_line(br#"{"jsonrpc":"2.0","id":"ab","method":"hang"}"#));
        let second =
            later(dispatcher.handle_line(br#"{"jsonrpc":"2.0","id":1.50,"method":"hang"}"#));
        let first = tokio::spawn(first);
        let second = tokio::spawn(second);
        tokio::task::yield_now().await;
        assert_eq!(dispatcher.cancellable(), 2);
        // Unknown ids, an id of another spelling of the number, and bad params: ignored.
        for id in ["2", "1.5", r#""x""#, "null", "{}"] {
            cancel(&dispatcher, id);
        }
        assert!(matches!(
            dispatcher.handle_line(br#"{"jsonrpc":"2.0","method":"$/cancelRequest","params":[1]}"#),
            Reply::Now(None)
        ));
        tokio::task::yield_now().await;
        assert!(!first.is_finished() && !second.is_finished());
        assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 0);

        // A string id is matched by its value; the answer echoes it as it was sent.
        cancel(&dispatcher, r#""ab""#);
        let reply = first.await.unwrap().expect("an answer");
        assert_eq!(
            reply,
            r#"{"jsonrpc":"2.0","id":"ab","error":{"code":-32800,"message":"cancelled by the client","data":{"kind":"cancelled","retryable":false}}}"#
        );
        assert_eq!(
            dropped.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the handler's future is dropped"
        );
        assert_eq!(dispatcher.cancellable(), 1);
        assert!(!second.is_finished());

        // Sent as a request, the cancel is answered `null`.
        let Reply::Now(Some(answer)) = dispatcher.handle_line(
            br#"{"jsonrpc":"2.0","id":9,"method":"$/cancelRequest","params":{"id":1.50}}"#,
        ) else {
            panic!("answered at once");
        };
        assert_eq!(answer, r#"{"jsonrpc":"2.0","id":9,"result":null}"#);
        let reply = second.await.unwrap().expect("an answer");
        assert!(
            reply.starts_with(r#"{"jsonrpc":"2.0","id":1.50,"error":{"code":-32800"#),
            "{reply}"
        );
        assert_eq!(
            dispatcher.cancellable(),
            0,
            "ended requests leave the table"
        );
        // A cancel after the end changes nothing.
        cancel(&dispatcher, "1.50");
    }

    #[tokio::test]
    async fn a_cancel_ends_one_member_of_a_batch() {
        let (dispatcher, dropped) = hanging();
        let batch = later(dispatcher.handle_line(
            br#"[{"jsonrpc":"2.0","id":1,"method":"hang"},{"jsonrpc":"2.0","id":2,"method":"ping"},{"jsonrpc":"2.0","id":3,"method":"hang"}]"#,
        ));
        let batch = tokio::spawn(batch);
        tokio::task::yield_now().await;
        cancel(&dispatcher, "1");
        tokio::task::yield_now().await;
        assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(!batch.is_finished(), "member 3 still hangs");
        cancel(&dispatcher, "3");
        let answer: Vec<serde_json::Value> =
            serde_json::from_str(&batch.await.unwrap().expect("an answer")).unwrap();
        let codes: Vec<serde_json::Value> =
            answer.iter().map(|a| a["error"]["code"].clone()).collect();
        assert_eq!(
            codes,
            [
                serde_json::json!(-32800),
                serde_json::Value::Null,
                serde_json::json!(-32800)
            ]
        );
        assert_eq!(answer[1]["result"], "pong");
        assert_eq!(dispatcher.cancellable(), 0);

        // A cancel later in the same batch ends the member it names.
        let batch = later(dispatcher.handle_line(
            br#"[{"jsonrpc":"2.0","id":5,"method":"hang"},{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":5}}]"#,
        ));
        let answer = batch.await.expect("an answer");
        assert!(
            answer.starts_with(r#"[{"jsonrpc":"2.0","id":5,"error":{"code":-32800"#),
            "{answer}"
        );
    }

    #[test]
    fn invalid_requests_get_their_id_back_when_it_can_be_read() {
        for (line, id) in [
            (r#"{"jsonrpc":"2.0","id":1}"#, "1"),
            (r#"{"jsonrpc":"2.1","id":1,"method":"ping"}"#, "1"),
            (r#"{"id":"x","method":"ping"}"#, r#""x""#),
            (r#"{"jsonrpc":2,"id":1e3,"method":"ping"}"#, "1e3"),
            (r#"{"jsonrpc":"2.0","id":-1,"method":5}"#, "-1"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"a"}"#,
                "1",
            ),
            (r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, "null"),
            (r#"{"jsonrpc":"2.0","id":true,"method":5}"#, "null"),
            (r#"{"jsonrpc":"2.0","method":5}"#, "null"),
            ("1", "null"),
        ] {
            let Reply::Now(Some(reply)) = dispatcher().handle_line(line.as_bytes()) else {
                panic!("{line}: answered at once");
            };
            assert_eq!(
                reply,
                format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32600,"message":"Invalid request"}}}}"#
                ),
                "{line}"
            );
        }
    }

    #[test]
    fn notifications_get_nothing_even_on_error() {
        for line in [
            r#"{"jsonrpc":"2.0","method":"ping"}"#,
            r#"{"jsonrpc":"2.0","method":"missing"}"#,
            r#"[{"jsonrpc":"2.0","method":"ping"}]"#,
        ] {
            assert!(
                matches!(dispatcher().handle_line(line.as_bytes()), Reply::Now(None)),
                "{line}"
            );
        }
    }
}
