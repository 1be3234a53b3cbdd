//! Model-space stacks on disk: inputs for the model (an `expanse ingest` stack or a plain
//! (B, C, H, W) array) and what DDIM writes (latents, generated images), with the grid, the
//! model and the domain's normalization carried along in the provenance.

use std::path::{Path, PathBuf};

use ndarray::{Array4, Ix4};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ingest::read_model_stack;
use crate::io::{self, Format, OutputStack, Provenance};
use crate::prep::Normalization;

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
        .map_err(|e| Error::format(path, format!("bad normalization record: {e}")))?;
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
                raw.into_shape_with_order((s[0], 1, s[1], s[2])).expect("reshape").into_dimensionality::<Ix4>().expect("4-D")
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
        return Err(Error::content(path, format!("the stack holds a non-finite value ({bad}); blanks must be filled (ingest does)")));
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
    let out = OutputStack { data: data.view().into_dyn(), mask: None, units: None, provenance: &provenance, fits_cards: Vec::new() };
    io::write_stack(path, &out)
}
