//! The session as one JSON secret in the OS keyring.
