//! Model-space stacks on disk: inputs for the model (an `expanse ingest` stack or a plain
//! (B, C, H, W) array) and what DDIM writes (latents, generated images), with the grid, the
//! model and the domain's normalization carried along in the provenance.

use std::path::{Path, PathBuf};

use ndarray::{Array4, Axis, Ix4};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::io::{self, fits, Format, OutputStack, Provenance};
use crate::prep::{self, Normalization};

/// A model-space stack and what is known about it.
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub data: Array4<f32>,
    pub provenance: Option<Provenance>,
    pub normalization: Option<Normalization>,
}

/// Reads a (B, C, H, W) model-space stack: a normalized `expanse ingest` output, an earlier
/// DDIM output, or a plain float array (a 3-D (B, H, W) array counts as one channel).
pub fn read_model_input(path: &Path) -> Result<ModelInput> {
    let provenance = io::read_provenance(path)?;
    let normalization = provenance
        .as_ref()
        .and_then(|p| p.records.get("normalization"))
        .map(|v| serde_json::from_value::<Normalization>(v.clone()))
        .transpose()
        .map_err(|e| Error::format(path, format!("bad normalization record: {e}")).with_source(e))?;
    let data = if provenance.as_ref().is_some_and(|p| p.command.starts_with("ingest")) && normalization.is_some() {
        read_model_stack(path)?.data
    } else {
        let raw = match Format::detect(path)? {
            Format::Npy => io::npy::read_any(path)?.0,
            Format::Fits => io::fits::read(path, None)?.1,
            Format::Hdf5 => io::hdf5::read(path, None)?.1,
        };
        match raw.ndim() {
            4 => raw.into_dimensionality::<Ix4>().expect("4-D"),
            3 => {
                let s = raw.shape().to_vec();
                raw.into_shape_with_order((s[0], 1, s[1], s[2]))
                    .expect("reshape")
                    .into_dimensionality::<Ix4>()
                    .expect("4-D")
            }
            _ => {
                return Err(Error::content(
                    path,
                    format!("expected a (B, C, H, W) model-space array, found shape {:?}", raw.shape()),
                ))
            }
        }
    };
    if data.is_empty() {
        return Err(Error::content(path, "the stack is empty"));
    }
    if let Some(bad) = data.iter().find(|v| !v.is_finite()) {
        return Err(Error::content(
            path,
            format!("the stack holds a non-finite value ({bad}); blanks must be filled (ingest does)"),
        ));
    }
    Ok(ModelInput { data, provenance, normalization })
}

/// Writes a model-space stack with provenance: `command`, the inputs' sources, the records
/// given (grid, model, seeds) and the normalization carried from the input.
pub fn write_model_output(
    path: &Path,
    data: &Array4<f32>,
    command: &str,
    input: &ModelInput,
    records: Vec<(&str, Value)>,
) -> Result<Vec<PathBuf>> {
    let mut provenance = Provenance {
        tool: io::TOOL.to_string(),
        command: command.to_string(),
        sources: input.provenance.as_ref().map(|p| p.sources.clone()).unwrap_or_default(),
        units: input.provenance.as_ref().and_then(|p| p.units.clone()),
        records: Default::default(),
    };
    if let Some(n) = &input.normalization {
        provenance.records.insert("normalization".into(), serde_json::to_value(n).expect("serializes"));
    }
    for (k, v) in records {
        provenance.records.insert(k.to_string(), v);
    }
    let out = OutputStack {
        data: data.view().into_dyn(),
        mask: None,
        units: None,
        provenance: &provenance,
        fits_cards: Vec::new(),
    };
    io::write_stack(path, &out)
}

/// Maps drawn in the picture beside decoded maps.
const PICTURE_MAPS: usize = 16;

/// Writes decoded model-space images (N, C, H, W) as maps to each of `paths` (one per format):
/// in physical units when `input` carries its domain's normalization (else channel 0 in model
/// space), with the sources, units and `records` in the provenance, and a picture of the
/// first 16 at `<stem>.png/.svg` of the first path. Returns the files written and whether the
/// maps are in physical units.
pub fn write_maps(
    paths: &[PathBuf],
    images: &Array4<f32>,
    command: &str,
    input: &ModelInput,
    records: Vec<(&str, Value)>,
    title: &str,
    fits_cards: &[String],
) -> Result<(Vec<PathBuf>, bool)> {
    let mut provenance = Provenance {
        tool: io::TOOL.to_string(),
        command: command.to_string(),
        sources: input.provenance.as_ref().map(|p| p.sources.clone()).unwrap_or_default(),
        units: None,
        records: Default::default(),
    };
    for (k, v) in records {
        provenance.records.insert(k.to_string(), v);
    }
    let (maps, physical) = match &input.normalization {
        Some(n) => {
            provenance.records.insert("normalization".into(), serde_json::to_value(n).expect("serializes"));
            provenance.units = n.units.clone();
            (n.to_physical(images.view(), None)?, true)
        }
        None => (images.index_axis(ndarray::Axis(1), 0).to_owned(), false),
    };
    let out = OutputStack {
        data: maps.view().into_dyn(),
        mask: None,
        units: provenance.units.clone(),
        provenance: &provenance,
        fits_cards: fits_cards.to_vec(),
    };
    let mut written = Vec::new();
    for path in paths {
        written.extend(io::write_stack(path, &out)?);
    }
    let shown: Vec<_> = maps.outer_iter().take(PICTURE_MAPS).map(|m| m.to_owned()).collect();
    let labels = (0..shown.len()).map(|i| format!("synthetic {i}")).collect();
    let title = if shown.len() < maps.len_of(Axis(0)) {
        format!("{title} (the first {} shown)", shown.len())
    } else {
        title.to_string()
    };
    let mut grid = crate::plot::MapGrid::new(&title, shown, labels, provenance.units.clone());
    if let (Some(n), true) = (&input.normalization, physical) {
        grid = grid.in_transform(n.transform);
    }
    written.extend(grid.save(&io::with_suffix(&paths[0], ""))?);
    Ok((written, physical))
}

/// Reads a normalized stack written by `ingest` back: images (N, C, H, W), mask (N, H, W) and
/// the normalization.
pub fn read_model_stack(path: &Path) -> Result<prep::ModelStack> {
    let provenance = io::read_provenance(path)?;
    let normalization: Normalization = provenance
        .and_then(|p| p.records.get("normalization").cloned())
        .ok_or_else(|| {
            Error::content(path, "not a normalized stack written by `expanse ingest` (no normalization record)")
        })
        .and_then(|v| {
            serde_json::from_value(v)
                .map_err(|e| Error::format(path, format!("bad normalization record: {e}")).with_source(e))
        })?;
    let data = read_array(path, Format::detect(path)?, "maps")?;
    let data = data
        .into_dimensionality::<ndarray::Ix4>()
        .map_err(|_| Error::content(path, "expected a (N, C, H, W) stack"))?;
    let n = data.len_of(Axis(0));
    let (h, w) = (data.shape()[2], data.shape()[3]);
    let mask = match read_mask(path)? {
        Some(m) => m,
        None => ndarray::Array3::zeros((n, h, w)),
    };
    Ok(prep::ModelStack { data, mask, normalization, dropped_blank: 0, warnings: Vec::new() })
}

fn read_array(path: &Path, format: Format, dataset: &str) -> Result<ndarray::ArrayD<f32>> {
    match format {
        Format::Fits => fits::read(path, Some(&io::HduSelector::Index(0))).map(|(_, d)| d),
        Format::Hdf5 => io::hdf5::read(path, Some(dataset)).map(|(_, d)| d),
        Format::Npy => io::npy::read_any(path).map(|(d, _)| d),
    }
}

fn read_mask(path: &Path) -> Result<Option<ndarray::Array3<u8>>> {
    let arr = match Format::detect(path)? {
        Format::Fits => match fits::read(path, Some(&io::HduSelector::Name("MASK".into()))) {
            Ok((_, d)) => Some(d),
            Err(Error::Content { .. }) => None,
            Err(e) => return Err(e),
        },
        Format::Hdf5 => match io::hdf5::read(path, Some("mask")) {
            Ok((_, d)) => Some(d),
            Err(Error::Content { .. }) => None,
            Err(e) => return Err(e),
        },
        Format::Npy => {
            let mp = io::npy::mask_path(path);
            if mp.exists() {
                Some(io::npy::read_any(&mp)?.0)
            } else {
                None
            }
        }
    };
    arr.map(|a| {
        a.mapv(|v| u8::from(v != 0.0))
            .into_dimensionality::<ndarray::Ix3>()
            .map_err(|_| Error::content(path, "mask is not (N, H, W)"))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_picture_of_many_maps_says_how_many_it_shows() {
        let dir = tempfile::tempdir().unwrap();
        let images = Array4::from_shape_fn((20, 1, 8, 8), |(n, _, i, j)| (n + i * j) as f32 / 100.0 - 0.5);
        let input = ModelInput { data: images.clone(), provenance: None, normalization: None };
        let path = dir.path().join("maps.npy");
        let (written, physical) =
            write_maps(&[path], &images, "test", &input, vec![], "20 synthetic maps of x", &[]).unwrap();
        assert!(!physical);
        let svg = written.iter().find(|p| p.extension().is_some_and(|e| e == "svg")).unwrap();
        let text = std::fs::read_to_string(svg).unwrap();
        assert!(text.contains(&format!("20 synthetic maps of x (the first {PICTURE_MAPS} shown)")), "title");
    }
}
