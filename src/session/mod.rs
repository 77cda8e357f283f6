//! The signed-in user's session: in-memory cache, keyring store, gate and refresh.

pub mod store;
