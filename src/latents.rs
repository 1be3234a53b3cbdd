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
    let (provenance, normalization) = read_records(path)?;
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
    check_finite(path, &data)?;
    Ok(ModelInput { data, provenance, normalization })
}

/// The provenance of a stack and the normalization it records.
fn read_records(path: &Path) -> Result<(Option<Provenance>, Option<Normalization>)> {
    let provenance = io::read_provenance(path)?;
    let normalization = provenance
        .as_ref()
        .and_then(|p| p.records.get("normalization"))
        .map(|v| serde_json::from_value::<Normalization>(v.clone()))
        .transpose()
        .map_err(|e| Error::format(path, format!("bad normalization record: {e}")).with_source(e))?;
    Ok((provenance, normalization))
}

fn check_finite(path: &Path, data: &Array4<f32>) -> Result<()> {
    match data.iter().find(|v| !v.is_finite()) {
        Some(bad) => Err(Error::content(
            path,
            format!("the stack holds a non-finite value ({bad}); blanks must be filled (ingest does)"),
        )),
        None => Ok(()),
    }
}

/// A model-space stack on disk, read a range of maps at a time: the `maps` dataset of an HDF5
/// file or a float32 `.npy` file, so that a run holds only the maps it works on; any
/// other stack [`read_model_input`] reads is read whole once.
pub struct StackFile {
    pub path: PathBuf,
    /// (N, C, H, W).
    pub dim: (usize, usize, usize, usize),
    pub provenance: Option<Provenance>,
    pub normalization: Option<Normalization>,
    rows: Rows,
}

enum Rows {
    Hdf5(io::hdf5::RowReader),
    Npy(io::npy::NpyRows),
    Memory(Array4<f32>),
}

impl StackFile {
    /// Opens `path`, reading its shape and records but none of its maps (unless it is neither an
    /// expanse HDF5 stack nor a float32 4-D `.npy` array).
    pub fn open(path: &Path) -> Result<StackFile> {
        let rows = match Format::detect(path)? {
            Format::Hdf5 => io::hdf5::RowReader::open(path)?.map(Rows::Hdf5),
            Format::Npy => io::npy::NpyRows::open(path)?.map(Rows::Npy),
            Format::Fits => None,
        };
        let (rows, provenance, normalization) = match rows {
            Some(rows) => {
                let (provenance, normalization) = read_records(path)?;
                (rows, provenance, normalization)
            }
            None => {
                let input = read_model_input(path)?;
                (Rows::Memory(input.data), input.provenance, input.normalization)
            }
        };
        let dim = match &rows {
            Rows::Hdf5(r) => r.dim(),
            Rows::Npy(r) => r.dim(),
            Rows::Memory(a) => a.dim(),
        };
        if dim.0 == 0 || dim.1 * dim.2 * dim.3 == 0 {
            return Err(Error::content(path, "the stack is empty"));
        }
        Ok(StackFile { path: path.to_path_buf(), dim, provenance, normalization, rows })
    }

    /// The maps of `range` (checked finite).
    pub fn rows(&self, range: std::ops::Range<usize>) -> Result<Array4<f32>> {
        let data = match &self.rows {
            Rows::Hdf5(r) => r.rows(range)?,
            Rows::Npy(r) => r.rows(range)?,
            Rows::Memory(a) => a.slice(ndarray::s![range, .., .., ..]).to_owned(),
        };
        check_finite(&self.path, &data)?;
        Ok(data)
    }

    /// Every map, `batch` at a time: (first index, maps).
    pub fn batches(&self, batch: usize) -> impl Iterator<Item = Result<(usize, Array4<f32>)>> + '_ {
        let (n, batch) = (self.dim.0, batch.max(1));
        (0..n).step_by(batch).map(move |start| self.rows(start..(start + batch).min(n)).map(|rows| (start, rows)))
    }

    /// Every map as one row of an (N, C·H·W) matrix, read a batch at a time.
    pub fn to_matrix(&self, batch: usize) -> Result<ndarray::Array2<f32>> {
        let (n, c, h, w) = self.dim;
        let mut z = ndarray::Array2::<f32>::zeros((n, c * h * w));
        for rows in self.batches(batch) {
            let (start, rows) = rows?;
            for (mut row, map) in z.slice_mut(ndarray::s![start.., ..]).outer_iter_mut().zip(rows.outer_iter()) {
                row.iter_mut().zip(map.iter()).for_each(|(r, &v)| *r = v);
            }
        }
        Ok(z)
    }

    /// Whether its maps are the rows of `z`, bit for bit (read a batch at a time).
    pub fn holds_rows_of(&self, z: &ndarray::Array2<f32>, batch: usize) -> Result<bool> {
        let (n, c, h, w) = self.dim;
        if z.dim() != (n, c * h * w) {
            return Ok(false);
        }
        for rows in self.batches(batch) {
            let (start, rows) = rows?;
            for (i, map) in rows.outer_iter().enumerate() {
                if !map.iter().zip(z.row(start + i)).all(|(a, b)| a.to_bits() == b.to_bits()) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Its provenance and normalization with `data` as values.
    pub fn with_data(&self, data: Array4<f32>) -> ModelInput {
        ModelInput { data, provenance: self.provenance.clone(), normalization: self.normalization.clone() }
    }
}

/// A model-space stack written a range of maps at a time, with the provenance
/// [`write_model_output`] gives it: HDF5 (dataset `maps`) or NPY (and its sidecar), to temporary
/// files that [`StackWriter::finish`] renames into place.
pub struct StackWriter {
    files: io::AtomicFiles,
    sink: Sink,
    path: PathBuf,
    dim: (usize, usize, usize, usize),
    provenance: Provenance,
}

enum Sink {
    Hdf5(io::hdf5::RowWriter),
    Npy(io::npy::NpyRowWriter),
}

impl StackWriter {
    /// Starts `path` (HDF5 or NPY) for a stack of shape `dim`; the provenance as
    /// [`write_model_output`] makes it.
    pub fn create(
        path: &Path,
        dim: (usize, usize, usize, usize),
        command: &str,
        input: &StackFile,
        records: Vec<(&str, Value)>,
    ) -> Result<StackWriter> {
        let provenance = output_provenance(command, input.provenance.as_ref(), input.normalization.as_ref(), records);
        let (files, sink) = match Format::from_extension(path)? {
            Format::Hdf5 => {
                let files = io::AtomicFiles::new(&[path.to_path_buf()])?;
                let w = io::hdf5::RowWriter::create(&files.temp(0), &[dim.0, dim.1, dim.2, dim.3])?;
                (files, Sink::Hdf5(w))
            }
            Format::Npy => {
                let files = io::AtomicFiles::new(&[path.to_path_buf(), io::npy::sidecar_path(path)])?;
                let w = io::npy::NpyRowWriter::create(&files.temp(0), dim)?;
                (files, Sink::Npy(w))
            }
            Format::Fits => {
                return Err(Error::write(path, "a model-space stack written in parts is HDF5 or NPY, not FITS"))
            }
        };
        Ok(StackWriter { files, sink, path: path.to_path_buf(), dim, provenance })
    }

    /// Writes `rows` as maps `start..start + rows.len_of(0)`.
    pub fn write(&mut self, start: usize, rows: &Array4<f32>) -> Result<()> {
        let (n, c, h, w) = rows.dim();
        if start + n > self.dim.0 || (c, h, w) != (self.dim.1, self.dim.2, self.dim.3) {
            return Err(Error::Invalid(format!(
                "internal: maps {start}..{} of shape {:?} do not fit {} of shape {:?}",
                start + n,
                (c, h, w),
                self.path.display(),
                self.dim
            )));
        }
        let result = match &mut self.sink {
            Sink::Hdf5(w) => w.write(start, &rows.view()),
            Sink::Npy(w) => w.write(start, &rows.view()),
        };
        result.map_err(|e| io::retarget(e, &self.path))
    }

    /// Writes the provenance and renames the files into place.
    pub fn finish(self) -> Result<Vec<PathBuf>> {
        let path = self.path.clone();
        match self.sink {
            // Model-space values carry no units (the provenance keeps the inputs'), as
            // `write_model_output` writes them.
            Sink::Hdf5(w) => w.finish(None, &self.provenance),
            Sink::Npy(w) => w.finish().and_then(|()| {
                io::npy::Sidecar {
                    shape: vec![self.dim.0, self.dim.1, self.dim.2, self.dim.3],
                    units: None,
                    mask: None,
                    provenance: self.provenance.clone(),
                }
                .write(&self.files.temp(1))
            }),
        }
        .map_err(|e| io::retarget(e, &path))?;
        self.files.commit()
    }
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
    let provenance = output_provenance(command, input.provenance.as_ref(), input.normalization.as_ref(), records);
    let out = OutputStack {
        data: data.view().into_dyn(),
        mask: None,
        units: None,
        provenance: &provenance,
        fits_cards: Vec::new(),
    };
    io::write_stack(path, &out)
}

/// The provenance of a model-space output: `command`, the input's sources and units, its
/// normalization and `records`.
fn output_provenance(
    command: &str,
    input: Option<&Provenance>,
    normalization: Option<&Normalization>,
    records: Vec<(&str, Value)>,
) -> Provenance {
    let mut provenance = Provenance {
        tool: io::TOOL.to_string(),
        command: command.to_string(),
        sources: input.map(|p| p.sources.clone()).unwrap_or_default(),
        units: input.and_then(|p| p.units.clone()),
        records: Default::default(),
    };
    if let Some(n) = normalization {
        provenance.records.insert("normalization".into(), serde_json::to_value(n).expect("serializes"));
    }
    for (k, v) in records {
        provenance.records.insert(k.to_string(), v);
    }
    provenance
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

    fn stack(n: usize) -> ModelInput {
        let data = Array4::from_shape_fn((n, 3, 5, 4), |(i, c, y, x)| (i * 60 + c * 20 + y * 4 + x) as f32 / 7.0 - 9.0);
        let provenance = Provenance {
            tool: io::TOOL.into(),
            command: "ingest".into(),
            sources: vec!["a.fits".into()],
            units: Some("MJy/sr".into()),
            records: Default::default(),
        };
        ModelInput { data, provenance: Some(provenance), normalization: None }
    }

    #[test]
    fn a_stack_written_in_parts_reads_back_as_one_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let input = stack(7);
        for ext in ["h5", "npy"] {
            let whole = dir.path().join(format!("whole.{ext}"));
            let records = || vec![("ddim", serde_json::json!({"seq": [0, 10]}))];
            write_model_output(&whole, &input.data, "run: invert", &input, records()).unwrap();
            let source = StackFile::open(&whole).unwrap();
            assert_eq!(source.dim, input.data.dim());
            let parts = dir.path().join(format!("parts.{ext}"));
            let mut w = StackWriter::create(&parts, source.dim, "run: invert", &source, records()).unwrap();
            // Out of order and of unequal sizes, as checkpoints and shards may come.
            for (start, end) in [(3, 7), (0, 2), (2, 3)] {
                w.write(start, &source.rows(start..end).unwrap()).unwrap();
            }
            assert!(w.write(6, &source.rows(0..2).unwrap()).is_err(), "past the end");
            assert!(!parts.exists(), "nothing in place before finish");
            let written = w.finish().unwrap();
            assert!(written.contains(&parts));
            let (a, b) = (read_model_input(&whole).unwrap(), read_model_input(&parts).unwrap());
            assert_eq!(a.data, input.data);
            assert_eq!(b.data, input.data, "{ext}");
            assert_eq!(a.provenance, b.provenance, "{ext}");
            let units = |p: &Path| match Format::detect(p).unwrap() {
                Format::Hdf5 => io::hdf5::read(p, Some("maps")).unwrap().0.units,
                _ => io::npy::read_sidecar(p).unwrap().unwrap().units,
            };
            assert_eq!(units(&whole), units(&parts), "{ext}: model-space values carry no units");
            let back = StackFile::open(&parts).unwrap();
            let batches: Vec<_> = back.batches(3).map(|r| r.unwrap()).collect();
            assert_eq!(
                batches.iter().map(|(s, r)| (*s, r.len_of(Axis(0)))).collect::<Vec<_>>(),
                [(0, 3), (3, 3), (6, 1)]
            );
            assert_eq!(batches[1].1, input.data.slice(ndarray::s![3..6, .., .., ..]));
        }
    }

    #[test]
    fn a_stack_read_in_parts_refuses_what_the_whole_reader_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let mut input = stack(4);
        input.data[[2, 1, 0, 0]] = f32::NAN;
        let path = dir.path().join("x.npy");
        ndarray_npy::write_npy(&path, &input.data).unwrap();
        let s = StackFile::open(&path).unwrap();
        assert!(s.rows(0..2).is_ok());
        let e = s.rows(1..3).unwrap_err().to_string();
        assert!(e.contains("x.npy") && e.contains("non-finite"), "{e}");
        // A 3-D array (one channel) and a FITS file are read whole, as read_model_input reads them.
        let flat = dir.path().join("flat.npy");
        ndarray_npy::write_npy(&flat, &Array3F::from_elem((3, 4, 4), 0.5)).unwrap();
        assert_eq!(StackFile::open(&flat).unwrap().dim, (3, 1, 4, 4));
        let empty = dir.path().join("empty.npy");
        ndarray_npy::write_npy(&empty, &Array4::<f32>::zeros((0, 3, 4, 4))).unwrap();
        let e = StackFile::open(&empty).err().expect("an empty stack is refused").to_string();
        assert!(e.contains("empty.npy") && e.contains("empty"), "{e}");
    }

    type Array3F = ndarray::Array3<f32>;
}
