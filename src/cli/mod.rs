//! The subcommands of the `expanse` binary, grouped by what they work on; each is a thin layer
//! over the library.

pub mod args;
pub mod maps;
pub mod models;
pub mod runs;
pub mod sampling;
