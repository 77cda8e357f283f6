//! The product backend client: the only user of reqwest. Maps every response to an error kind.
