//! The method table the transport dispatches to: each name to a handler that answers with
//! the result's JSON text or a JSON-RPC error object.
//!
//! The app fills it (`router`); the transport only looks methods up and writes answers. A
//! handler gets its params as they are in the input line and reads them **before** it
//! returns, so an async handler's future owns typed params and never a copy of the raw
//! text (the line is zeroed once dispatched; see the module docs of `rpc`).
//!
//! Why not jsonrpsee's `RpcModule`: its responses are serialized into a bounded writer and
//! then parsed again to check them (`MethodResponse`), which cost a gated call more than its
//! own result's serialization (scripts/bench.sh). Here the result is serialized once, by the
//! handler, and the transport puts it after the client's id as it was sent.

use std::collections::HashMap;

use futures::future::BoxFuture;
use jsonrpsee_types::ErrorObjectOwned;

/// What a handler answers: the result as JSON text, or an error object.
pub type Answer = Result<String, ErrorObjectOwned>;

/// A handler answered inline, on the reader's thread: `params` is the `params` member as
/// sent (`None` when absent).
pub type SyncHandler = dyn Fn(Option<&str>) -> Answer + Send + Sync;

/// A handler that may wait: it reads `params` at once and returns the work as a future that
/// owns what it needs.
pub type AsyncHandler = dyn Fn(Option<&str>) -> BoxFuture<'static, Answer> + Send + Sync;

pub enum Handler {
    Sync(Box<SyncHandler>),
    Async(Box<AsyncHandler>),
}

/// Method names to handlers.
#[derive(Default)]
pub struct Methods {
    table: HashMap<&'static str, Handler>,
}

impl Methods {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a method answered inline. Panics if `name` is taken: names are declared once.
    pub fn add_sync(
        &mut self,
        name: &'static str,
        handler: impl Fn(Option<&str>) -> Answer + Send + Sync + 'static,
    ) {
        self.add(name, Handler::Sync(Box::new(handler)));
    }

    /// Adds a method that may wait. Panics if `name` is taken.
    pub fn add_async(
        &mut self,
        name: &'static str,
        handler: impl Fn(Option<&str>) -> BoxFuture<'static, Answer> + Send + Sync + 'static,
    ) {
        self.add(name, Handler::Async(Box::new(handler)));
    }

    fn add(&mut self, name: &'static str, handler: Handler) {
        let taken = self.table.insert(name, handler).is_some();
        assert!(!taken, "method {name} is declared twice");
    }

    pub fn get(&self, name: &str) -> Option<&Handler> {
        self.table.get(name)
    }

    /// Every method name, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.table.keys().copied()
    }
}
