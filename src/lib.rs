//! expanse: grow a handful of astrophysical maps into many statistically faithful synthetic
//! maps with a frozen DDPM (Zhu et al. 2023, arXiv 2310.09213).
//!
//! Data flows one way: [`io`] reads maps → [`prep`] normalizes them into the model's range →
//! later stages invert, fit priors, sample and validate. [`simulate`] makes sample maps.

pub mod diffusion;
pub mod error;
pub mod ingest;
pub mod model;
pub mod pipeline;
pub mod inspect;
pub mod io;
pub mod latents;
pub mod plot;
pub mod prior;
pub mod prep;
pub mod simulate;
pub mod stats;
pub mod validate;

pub use error::{Error, Result};
