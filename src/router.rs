//! The method table: every method is public or gated.
