//! expanse: grow a handful of astrophysical maps into many statistically faithful synthetic
//! maps with a frozen DDPM (Zhu et al. 2023, arXiv 2310.09213).
//!
//! Data flows one way: [`io`] reads maps → [`prep`] normalizes them into the model's range →
//! [`diffusion`] inverts them with the frozen [`model`] → [`prior`] fits per-domain Gaussians
//! and samples new latents → [`diffusion`] decodes them → [`validate`] compares them with the
//! real maps using [`stats`] and draws [`plot`] figures. [`pipeline`] chains every stage from
//! one config into a resumable run folder; [`fidelity`] runs the fidelity benchmark over
//! variants of a run; [`simulate`] makes sample maps.

// `!(x > 0.0)` and `!(lo >= 0.0 && …)` are how this crate rejects NaN along with out-of-range
// values; the forms clippy suggests would let NaN through or hide that intent.
// Loops over flattened planes use the index for (y, x) and several arrays at once.
#![allow(clippy::neg_cmp_op_on_partial_ord, clippy::nonminimal_bool, clippy::needless_range_loop)]

pub mod diffusion;
pub mod error;
pub mod fidelity;
pub mod ingest;
pub mod inspect;
pub mod io;
pub mod latents;
pub mod model;
pub mod numerics;
pub mod pipeline;
pub mod plot;
pub mod prep;
pub mod prior;
pub mod refine;
pub mod runtime;
pub mod simulate;
pub mod stats;
pub mod synthesis;
pub mod validate;

pub use error::{Error, Result};
