//! From a fitted prior to synthetic maps, the way `expanse run` (stages `sample` and `decode`)
//! and `expanse sample` both do it: draw latents that sit like real members of the domain, keep
//! them with the grid they belong to, decode them with the frozen model on that grid, and refine
//! the decoded maps toward the real maps' wavelet moments.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{Array2, Array4, Axis};
use serde_json::Value;

use crate::diffusion::Ddim;
use crate::error::{Error, Result};
use crate::latents::{self, ModelInput};
use crate::model::Ddpm;
use crate::prior::geometry::{self, SamplingOutcome, SamplingSpec};
use crate::prior::GaussianPrior;
use crate::refine::{RefineOptions, RefinementRecord};

/// Draws latents from `prior` that pass `spec`'s tests against the domain's `real` latents and
/// writes the accepted ones to `out` (NPY) with the sampling record (`prior_file` as it should be
/// shown) and the DDIM grid the real latents were inverted on. `command` names the writer.
pub fn sample(
    prior: &GaussianPrior,
    prior_file: &Path,
    real: &latents::StackFile,
    spec: &SamplingSpec,
    out: &Path,
    command: &str,
) -> Result<(SamplingOutcome, Vec<PathBuf>)> {
    let batch = crate::prior::fit::READ_BATCH;
    // An empirical prior fitted on these latents holds them already: not read a second time.
    let z = match prior.kept_latents() {
        Some(kept) if real.holds_rows_of(kept, batch)? => Arc::clone(kept),
        _ => Arc::new(real.to_matrix(batch)?),
    };
    let mut outcome = geometry::sample_latents(prior, &z, spec)?;
    drop(z);
    let mut records = vec![("sampling", outcome.record(prior, prior_file, spec))];
    if let Some(g) = real.provenance.as_ref().and_then(|p| p.records.get("ddim")) {
        records.push(("ddim", g.clone()));
    }
    // The accepted latents are moved into the stack written and back, not copied.
    let [c, h, w] = prior.shape;
    let (n, d) = outcome.accepted.dim();
    let rows = std::mem::take(&mut outcome.accepted);
    let accepted = real.with_data(rows.into_shape_with_order((n, c, h, w)).expect("latents match the prior's shape"));
    let written = latents::write_model_output(out, &accepted.data, command, &accepted, records)?;
    outcome.accepted = accepted.data.into_shape_with_order((n, d)).expect("the same latents");
    Ok((outcome, written))
}

/// The DDIM grid the latents of `path` were inverted on (the `ddim` record of their `provenance`:
/// points, t0 and fixed-point iterations), rebuilt on `model`'s schedule with `clip` for decoding.
/// Fails naming `path` when the latents carry no grid or one this model does not give.
pub fn grid_of(
    model: &Ddpm,
    provenance: Option<&crate::io::Provenance>,
    path: &Path,
    clip: Option<f64>,
) -> Result<Ddim> {
    let record = provenance.and_then(|p| p.records.get("ddim")).ok_or_else(|| {
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

/// What goes into the files of synthetic maps beside the maps: the decoding (grid and model),
/// further records, and FITS cards (the real maps' pixel scale).
pub struct SyntheticRecords<'a> {
    pub ddim: &'a Ddim,
    pub model: &'a Ddpm,
    pub extra: Vec<(&'static str, Value)>,
    pub fits_cards: Vec<String>,
}

/// Writes decoded `images` of accepted `latents` as maps to every path in `paths`: physical units
/// when the latents carry the domain's normalization, with the grid, the model, the latents'
/// sampling record (whose domain names the maps) and the `extra` records. Also says whether the
/// maps are in physical units.
pub fn write_synthetic(
    paths: &[PathBuf],
    images: &Array4<f32>,
    command: &str,
    latents: &ModelInput,
    with: SyntheticRecords,
) -> Result<(Vec<PathBuf>, bool)> {
    let sampling = latents.provenance.as_ref().and_then(|p| p.records.get("sampling")).cloned().unwrap_or(Value::Null);
    let domain = sampling["domain"].as_str().unwrap_or("the domain").to_string();
    let mut records = with.ddim.records(with.model)?;
    records.push(("sampling", sampling));
    records.extend(with.extra);
    let title = format!("{} synthetic maps of '{domain}'", images.len_of(Axis(0)));
    latents::write_maps(paths, images, command, latents, records, &title, &with.fits_cards)
}

/// The channel mean of each (C, H, W) image, as one map per image.
fn channel_means(images: &Array4<f32>) -> Vec<Array2<f64>> {
    images.outer_iter().map(|img| img.mean_axis(Axis(0)).expect("at least one channel").mapv(|v| v as f64)).collect()
}

/// [`channel_means`] of the images of a model-space stack, read a batch at a time: what
/// [`refine_images_owned`] refines toward, without holding the stack.
pub fn channel_means_of(stack: &latents::StackFile) -> Result<Vec<Array2<f64>>> {
    let mut out = Vec::with_capacity(stack.dim.0);
    for rows in stack.batches(crate::prior::fit::READ_BATCH) {
        out.extend(channel_means(&rows?.1));
    }
    Ok(out)
}

/// Refines decoded model-space images ([`crate::refine`]) toward the real model-space images of
/// their domain: each image's channel mean is refined and written back into every channel.
pub fn refine_images(
    images: &Array4<f32>,
    real: &Array4<f32>,
    options: &RefineOptions,
) -> Result<(Array4<f32>, RefinementRecord)> {
    refine_images_owned(images.clone(), channel_means(real), options)
}

/// [`refine_images`] taking the images (dropped while they are refined: every channel is written
/// anew from the refined maps) and the real images' channel means ([`channel_means_of`]).
pub fn refine_images_owned(
    images: Array4<f32>,
    real: Vec<Array2<f64>>,
    options: &RefineOptions,
) -> Result<(Array4<f32>, RefinementRecord)> {
    let dim = images.dim();
    let synthetic = channel_means(&images);
    drop(images);
    crate::runtime::return_freed_memory();
    let (maps, record) = crate::refine::refine_owned(synthetic, real, options)?;
    let mut out = Array4::<f32>::zeros(dim);
    for (mut img, map) in out.outer_iter_mut().zip(maps) {
        let map = map.mapv(|v| v as f32);
        for mut channel in img.outer_iter_mut() {
            channel.assign(&map);
        }
    }
    Ok((out, record))
}

/// `expanse refine`: refines the synthetic maps of one file toward the real maps of another (both
/// in physical units, maps of one shape, `selection` picking the HDU or dataset in both) and writes
/// them to `out` (any format) with the synthetic file's provenance plus the refinement's record.
/// The work happens in the domain's model space, from the synthetic (else the real) file's
/// normalization record; without one, in log10 of positive maps, else in the values themselves (as
/// `validate` compares them).
pub fn refine_files(
    real: &Path,
    synthetic: &Path,
    selection: &crate::io::Selection,
    out: &Path,
    options: &RefineOptions,
) -> Result<RefinementRecord> {
    use crate::io;
    let read = |path: &Path| -> Result<(Array4<f32>, Option<io::Provenance>, Option<String>)> {
        let maps = io::read_maps(path, selection)?;
        let units = io::common_units(&maps);
        let stack = io::stack(&maps)?;
        if stack.iter().any(|v| !v.is_finite()) {
            return Err(Error::content(path, "holds blank (NaN) pixels: refinement needs complete maps"));
        }
        let (n, h, w) = stack.dim();
        Ok((stack.into_shape_with_order((n, 1, h, w)).expect("same size"), io::read_provenance(path)?, units))
    };
    let (r, real_provenance, _) = read(real)?;
    let (s, provenance, units) = read(synthetic)?;
    if r.dim().2 != s.dim().2 || r.dim().3 != s.dim().3 {
        return Err(Error::Invalid(format!(
            "{} holds {}x{} maps but {} holds {}x{}: refine maps of one size",
            real.display(),
            r.dim().2,
            r.dim().3,
            synthetic.display(),
            s.dim().2,
            s.dim().3
        )));
    }
    let normalization: Option<crate::prep::Normalization> = [&provenance, &real_provenance]
        .iter()
        .find_map(|p| serde_json::from_value(p.as_ref()?.records.get("normalization")?.clone()).ok());
    // The scale validation uses: the domain's model space, else log10 of positive maps, else the
    // values themselves.
    let positive = r.iter().chain(s.iter()).all(|&v| v > 0.0);
    let transform = normalization.map(|n| n.transform);
    let to_model = |x: f32| match transform {
        Some(t) => t.forward(x as f64) as f32,
        None if positive => x.log10(),
        None => x,
    };
    let to_physical = |y: f32| match transform {
        Some(t) => t.inverse(y as f64) as f32,
        None if positive => 10f32.powf(y),
        None => y,
    };
    let (rm, sm) = (r.mapv(&to_model), s.mapv(&to_model));
    if let Some((path, _)) = [(real, &rm), (synthetic, &sm)].into_iter().find(|(_, m)| m.iter().any(|v| !v.is_finite()))
    {
        return Err(Error::content(path, "holds values outside the domain's transform (e.g. ≤ 0 under log10)"));
    }
    let (refined, record) = refine_images(&sm, &rm, options).map_err(|e| Error::content(synthetic, e))?;
    let maps = refined.index_axis(Axis(1), 0).mapv(&to_physical);
    let mut provenance = provenance.unwrap_or_else(|| io::Provenance {
        tool: io::TOOL.to_string(),
        command: String::new(),
        sources: Vec::new(),
        units: units.clone(),
        records: Default::default(),
    });
    provenance.tool = io::TOOL.to_string();
    provenance.command = "refine".into();
    provenance.records.insert("refinement".into(), serde_json::to_value(&record).expect("record serializes"));
    provenance.records.insert("refined_from".into(), serde_json::json!({"synthetic": synthetic, "real": real}));
    let stack = io::OutputStack {
        data: maps.view().into_dyn(),
        mask: None,
        units,
        provenance: &provenance,
        fits_cards: Vec::new(),
    };
    io::write_stack(out, &stack)?;
    Ok(record)
}
