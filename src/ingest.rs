//! `expanse ingest`: read a domain's files and write one stack, raw (as read) or normalized
//! into model space with its fitted normalization recorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::inspect::ValueStats;
use crate::io::{self, fits, Format, Map, OutputStack, Provenance, Selection};
use crate::prep::{self, ModelStack, Normalization, PrepSpec};

/// What `ingest` does.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    pub selection: Selection,
    /// Write the maps exactly as read (float32, NaN where blank, no normalization, no geometry).
    pub raw: bool,
    /// Normalization and geometry (ignored with `raw`).
    pub prep: PrepSpec,
    /// Also draw the first maps (physical units, after geometry) to `<preview>.png` and `.svg`.
    pub preview: Option<PathBuf>,
    /// Use only the first this many maps read (in input order, before tiling).
    pub max_maps: Option<usize>,
    /// Also write the maps after geometry, in physical units (NaN where blank), to this file:
    /// the real maps that synthetic ones are compared with.
    pub real: Option<PathBuf>,
}

/// Most maps drawn in a preview.
const PREVIEW_MAPS: usize = 16;

fn draw_preview(
    stem: &Path,
    maps: &[Map],
    units: Option<String>,
    transform: Option<crate::prep::Transform>,
) -> Result<Vec<PathBuf>> {
    let shown: Vec<&Map> = maps.iter().take(PREVIEW_MAPS).collect();
    let title = format!(
        "{} of {} map(s) from {}",
        shown.len(),
        maps.len(),
        shown[0].source.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    );
    let labels = shown.iter().map(|m| m.label()).collect();
    let mut grid = crate::plot::MapGrid::new(&title, shown.iter().map(|m| m.data.clone()).collect(), labels, units);
    if let Some(t) = transform {
        grid = grid.in_transform(t);
    }
    grid.save(stem)
}

/// What was read from one input.
#[derive(Debug, Clone, Serialize)]
pub struct InputSummary {
    pub source: String,
    pub maps: usize,
    pub shape: [usize; 2],
    pub units: Option<String>,
    pub stats: ValueStats,
}

/// What `ingest` read and wrote.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub inputs: Vec<InputSummary>,
    pub written: Vec<PathBuf>,
    /// Shape of the array written: (N, H, W) raw, (N, C, H, W) normalized.
    pub shape: Vec<usize>,
    pub normalization: Option<Normalization>,
    pub blank_pixels: usize,
    /// Maps dropped for being mostly blank, and what the user should know, in plain words.
    pub dropped_blank: usize,
    pub warnings: Vec<String>,
}

/// Reads every input (in order) into one list of maps.
pub fn read_inputs(inputs: &[PathBuf], selection: &Selection) -> Result<(Vec<Map>, Vec<InputSummary>)> {
    if inputs.is_empty() {
        return Err(Error::Invalid("no input files given".into()));
    }
    let mut maps = Vec::new();
    let mut summaries = Vec::new();
    for path in inputs {
        let got = io::read_maps(path, selection)?;
        let first = &got[0];
        summaries.push(InputSummary {
            source: first.source.describe(),
            maps: got.len(),
            shape: [first.data.nrows(), first.data.ncols()],
            units: first.source.units.clone(),
            stats: ValueStats::of(got.iter().flat_map(|m| m.data.iter().copied())),
        });
        maps.extend(got);
    }
    Ok((maps, summaries))
}

/// Header cards worth carrying over: the WCS when every map comes from one HDU and the same
/// region of it (rescaled to the output grid after a crop or resize; none after tiling, whose
/// maps lie at different places), and OBJECT when the sources agree.
fn carried_cards(maps: &[Map], grid_unchanged: bool) -> Vec<String> {
    let first = &maps[0].source;
    let single = maps.iter().all(|m| Arc::ptr_eq(&m.source, first));
    let mut cards = Vec::new();
    if single && grid_unchanged {
        cards.extend(fits::wcs_cards(&first.cards));
    } else if single && maps.iter().all(|m| m.region == maps[0].region) {
        // A map without a region is the whole image (NAXIS2 rows of NAXIS1 columns).
        let axis = |k: &str| first.card(k).and_then(|v| v.trim().parse::<usize>().ok());
        let region = maps[0].region.or_else(|| Some([0, 0, axis("NAXIS2")?, axis("NAXIS1")?]));
        if let Some(region) = region {
            let (oh, ow) = maps[0].data.dim();
            cards.extend(fits::resampled_wcs_cards(&first.cards, region, oh, ow));
        }
    }
    if let Some(obj) = first.card("OBJECT") {
        if maps.iter().all(|m| m.source.card("OBJECT").as_deref() == Some(obj.as_str())) {
            cards.push(fits::format_card("OBJECT", fits::CardValue::Str(obj), ""));
        }
    }
    cards
}

/// The maps of `inputs`, the first `max_maps` of them when given (input order, before tiling).
fn read_first(
    inputs: &[PathBuf],
    selection: &Selection,
    max_maps: Option<usize>,
) -> Result<(Vec<Map>, Vec<InputSummary>)> {
    let (mut maps, inputs_read) = read_inputs(inputs, selection)?;
    if let Some(m) = max_maps {
        if m == 0 {
            return Err(Error::setting("max_maps", "the number of maps to use must be at least 1"));
        }
        maps.truncate(m);
    }
    Ok((maps, inputs_read))
}

/// What `ingest` writes, in memory: the model-space stack of `inputs` (the first `max_maps` maps,
/// `prep`'s geometry and normalization) and the maps after geometry in physical units.
pub fn prepare(
    inputs: &[PathBuf],
    selection: &Selection,
    max_maps: Option<usize>,
    prep: &PrepSpec,
) -> Result<(ModelStack, Vec<Map>)> {
    let (maps, _) = read_first(inputs, selection, max_maps)?;
    prep::normalize(maps, prep)
}

/// Reads `inputs`, optionally normalizes them, and writes one stack to `out` (format from its
/// extension). Nothing is written unless everything succeeds.
pub fn ingest(inputs: &[PathBuf], opts: &IngestOptions, out: &Path) -> Result<IngestReport> {
    Format::from_extension(out)?;
    io::check_output_folder(out)?;
    if let Some(stem) = &opts.preview {
        io::check_output_folder(stem)?;
    }
    if let Some(real) = &opts.real {
        Format::from_extension(real)?;
        io::check_output_folder(real)?;
    }
    let (maps, inputs_read) = read_first(inputs, &opts.selection, opts.max_maps)?;
    if opts.raw {
        let stack = io::stack(&maps)?;
        let mut provenance = Provenance::new("ingest --raw", &maps);
        provenance.records.insert("raw".into(), serde_json::Value::Bool(true));
        let blank = stack.iter().filter(|v| !v.is_finite()).count();
        let out_stack = OutputStack {
            data: stack.view().into_dyn(),
            mask: None,
            units: provenance.units.clone(),
            provenance: &provenance,
            fits_cards: carried_cards(&maps, true),
        };
        let mut written = io::write_stack(out, &out_stack)?;
        if let Some(stem) = &opts.preview {
            written.extend(draw_preview(stem, &maps, provenance.units.clone(), None)?);
        }
        return Ok(IngestReport {
            inputs: inputs_read,
            written,
            shape: stack.shape().to_vec(),
            normalization: None,
            blank_pixels: blank,
            dropped_blank: 0,
            warnings: Vec::new(),
        });
    }
    let grid_unchanged = opts.prep.geometry.is_identity();
    let (model, maps) = prep::normalize(maps, &opts.prep)?;
    let mut provenance = Provenance::new("ingest", &maps);
    provenance
        .records
        .insert("normalization".into(), serde_json::to_value(&model.normalization).expect("normalization serializes"));
    provenance.records.insert("transform".into(), serde_json::Value::String(model.normalization.transform.describe()));
    let blank = model.mask.iter().filter(|&&b| b != 0).count();
    let out_stack = OutputStack {
        data: model.data.view().into_dyn(),
        mask: (blank > 0).then(|| model.mask.view()),
        units: None,
        provenance: &provenance,
        fits_cards: carried_cards(&maps, grid_unchanged),
    };
    let mut written = io::write_stack(out, &out_stack)?;
    let shape = model.data.shape().to_vec();
    // Written: the model-space stack is not held while the real maps are stacked.
    let prep::ModelStack { normalization, dropped_blank, warnings, .. } = model;
    if let Some(real) = &opts.real {
        let stack = io::stack(&maps)?;
        let mut provenance = Provenance::new("ingest (real maps after geometry)", &maps);
        provenance
            .records
            .insert("geometry".into(), serde_json::to_value(opts.prep.geometry).expect("geometry serializes"));
        let real_stack = OutputStack {
            data: stack.view().into_dyn(),
            mask: None,
            units: provenance.units.clone(),
            provenance: &provenance,
            fits_cards: carried_cards(&maps, grid_unchanged),
        };
        written.extend(io::write_stack(real, &real_stack)?);
    }
    if let Some(stem) = &opts.preview {
        written.extend(draw_preview(stem, &maps, normalization.units.clone(), Some(normalization.transform))?);
    }
    Ok(IngestReport {
        inputs: inputs_read,
        written,
        shape,
        normalization: Some(normalization),
        blank_pixels: blank,
        dropped_blank,
        warnings,
    })
}
