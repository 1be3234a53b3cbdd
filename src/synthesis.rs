//! From a fitted prior to synthetic maps, the way `expanse run` (stages `sample` and `decode`)
//! and `expanse sample` both do it: draw latents that sit like real members of the domain, keep
//! them with the grid they belong to, and decode them with the frozen model on that grid.

use std::path::{Path, PathBuf};

use ndarray::{Array4, Axis};
use serde_json::Value;

use crate::diffusion::Ddim;
use crate::error::{Error, Result};
use crate::latents::{self, ModelInput};
use crate::model::Ddpm;
use crate::prior::geometry::{self, SamplingOutcome, SamplingSpec};
use crate::prior::GaussianPrior;

/// Draws latents from `prior` that pass `spec`'s tests against the domain's `real` latents and
/// writes the accepted ones to `out` (NPY) with the sampling record (`prior_file` as it should be
/// shown) and the DDIM grid the real latents were inverted on. `command` names the writer.
pub fn sample(
    prior: &GaussianPrior,
    prior_file: &Path,
    real: &ModelInput,
    spec: &SamplingSpec,
    out: &Path,
    command: &str,
) -> Result<(SamplingOutcome, Vec<PathBuf>)> {
    let z = geometry::flatten(&real.data);
    let outcome = geometry::sample_latents(prior, &z, spec)?;
    let accepted = outcome.accepted_array(prior.shape);
    let mut records = vec![("sampling", outcome.record(prior, prior_file, spec))];
    if let Some(g) = real.provenance.as_ref().and_then(|p| p.records.get("ddim")) {
        records.push(("ddim", g.clone()));
    }
    let written = latents::write_model_output(out, &accepted, command, real, records)?;
    Ok((outcome, written))
}

/// The DDIM grid `latents` were inverted on (their `ddim` record: points, t0 and fixed-point
/// iterations), rebuilt on `model`'s schedule with `clip` for decoding. Fails naming `path` when
/// the latents carry no grid or one this model does not give.
pub fn grid_of(model: &Ddpm, latents: &ModelInput, path: &Path, clip: Option<f64>) -> Result<Ddim> {
    let record = latents.provenance.as_ref().and_then(|p| p.records.get("ddim")).ok_or_else(|| {
        Error::content(path, "the latents record no DDIM grid (were they written by `expanse invert`?)")
    })?;
    let seq: Vec<usize> = serde_json::from_value(record["seq"].clone())
        .map_err(|e| Error::content(path, format!("bad DDIM grid record: {e}")))?;
    let t0 = *seq.last().ok_or_else(|| Error::content(path, "bad DDIM grid record: empty grid"))?;
    let fixed_point = record["fixed_point"].as_u64().unwrap_or(0) as usize;
    let ddim = Ddim::for_model(model, seq.len(), t0, fixed_point, clip)?;
    if ddim.seq != seq {
        return Err(Error::content(path, format!("the latents' grid {seq:?} is not the paper grid this model gives")));
    }
    Ok(ddim)
}

/// Writes decoded `images` of accepted `latents` as maps to every path in `paths`: physical units
/// when the latents carry the domain's normalization, with the grid, the model, the latents'
/// sampling record (whose domain names the maps) and `extra` records. Also says whether the maps
/// are in physical units.
pub fn write_synthetic(
    paths: &[PathBuf],
    images: &Array4<f32>,
    command: &str,
    latents: &ModelInput,
    ddim: &Ddim,
    model: &Ddpm,
    extra: Vec<(&'static str, Value)>,
) -> Result<(Vec<PathBuf>, bool)> {
    let sampling = latents.provenance.as_ref().and_then(|p| p.records.get("sampling")).cloned().unwrap_or(Value::Null);
    let domain = sampling["domain"].as_str().unwrap_or("the domain").to_string();
    let mut records = ddim.records(model)?;
    records.push(("sampling", sampling));
    records.extend(extra);
    let title = format!("{} synthetic maps of '{domain}'", images.len_of(Axis(0)));
    latents::write_maps(paths, images, command, latents, records, &title)
}
