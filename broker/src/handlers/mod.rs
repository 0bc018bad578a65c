//! The handlers, one module per API family. They take decoded requests
//! and the broker's state and return responses; they never import each
//! other (what two families share lives in `state` or `codes`).

pub(crate) mod admin;
pub(crate) mod cluster;
pub(crate) mod data;
pub(crate) mod groups;
