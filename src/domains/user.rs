//! The user's profile as the product backend knows it.
