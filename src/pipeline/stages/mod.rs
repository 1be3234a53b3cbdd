//! The stages of a run, one file each, in the order they run: `ingest` → `invert` → `fit` →
//! `sample` → `decode` → `validate`. Each is a method of the runner returning the files it wrote
//! and the counts the manifest records.

mod decode;
mod fit;
mod ingest;
mod invert;
pub(crate) mod sample;
mod validate;
