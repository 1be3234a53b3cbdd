//! HDF5 through the `hdf5` crate (hdf5-metno): 2-D/3-D datasets of any integer or float type,
//! chunked and compressed (gzip, shuffle, lzf); attributes kept as JSON values. Stacks can also be
//! written and read a range of maps at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdf5::types::{FloatSize, IntSize, TypeDescriptor, VarLenAscii, VarLenUnicode};
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

use super::{OutputStack, Source};
use crate::error::{Error, Result};

fn open(path: &Path) -> Result<hdf5::File> {
    hdf5::File::open(path).map_err(|e| Error::format(path, format!("cannot open as HDF5: {e}")).with_source(e))
}

/// The most a compressed dataset may expand per byte of the file: deflate's limit is about
/// 1032:1, and this leaves room for the other filters and the file's own structures.
const MAX_EXPANSION: u64 = 2048;

/// Checks what a dataset claims before anything is allocated for it: its element count must fit
/// in memory, and its bytes must fit in the file (or, compressed, in what the file could expand
/// to). A corrupted header can claim 2^61 elements; reading that would abort the process.
fn check_claimed_size(path: &Path, name: &str, ds: &hdf5::Dataset) -> Result<usize> {
    let shape = ds.shape();
    let too_many = || {
        Error::content(
            path,
            format!(
                "{name} claims {} elements, more than any machine can hold: the file is damaged",
                shape_text(&shape)
            ),
        )
    };
    let elements = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(too_many)?;
    let item = ds.dtype().map(|t| t.size()).unwrap_or(8).max(1) as u64;
    let bytes = (elements as u64).checked_mul(item.max(8)).ok_or_else(too_many)?;
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX);
    let compressed = !ds.filters().is_empty();
    let limit = if compressed { file_len.saturating_mul(MAX_EXPANSION) } else { file_len };
    let stored = (elements as u64).saturating_mul(item);
    if stored > limit || usize::try_from(bytes).is_err() {
        return Err(Error::content(
            path,
            format!(
                "{name} claims {} elements ({} bytes){}; the file holds {} bytes: it is damaged or truncated",
                shape_text(&shape),
                stored,
                if compressed { ", compressed" } else { "" },
                file_len
            ),
        ));
    }
    Ok(elements)
}

fn shape_text(shape: &[usize]) -> String {
    shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" x ")
}

/// Every dataset in the file, as (absolute path, shape, dtype text), depth first.
fn all_datasets(group: &hdf5::Group, out: &mut Vec<hdf5::Dataset>) -> hdf5::Result<()> {
    for ds in group.datasets()? {
        out.push(ds);
    }
    for g in group.groups()? {
        all_datasets(&g, out)?;
    }
    Ok(())
}

/// A short type name for a numeric dtype (`float32`, `int16`, ...), or the HDF5 description.
pub fn dtype_name(td: &TypeDescriptor) -> String {
    match td {
        TypeDescriptor::Integer(s) => format!("int{}", int_bits(*s)),
        TypeDescriptor::Unsigned(s) => format!("uint{}", int_bits(*s)),
        TypeDescriptor::Float(FloatSize::U4) => "float32".into(),
        TypeDescriptor::Float(FloatSize::U8) => "float64".into(),
        other => format!("{other}"),
    }
}

fn int_bits(s: IntSize) -> usize {
    match s {
        IntSize::U1 => 8,
        IntSize::U2 => 16,
        IntSize::U4 => 32,
        IntSize::U8 => 64,
    }
}

fn is_numeric(td: &TypeDescriptor) -> bool {
    matches!(td, TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) | TypeDescriptor::Float(_))
}

/// Reads an attribute as JSON: numbers, strings and arrays of these; other types are skipped.
fn attr_value(attr: &hdf5::Attribute) -> Option<Value> {
    let td = attr.dtype().ok()?.to_descriptor().ok()?;
    let scalar = attr.ndim() == 0;
    let many = |v: Vec<Value>| if scalar && v.len() == 1 { v.into_iter().next() } else { Some(Value::Array(v)) };
    match td {
        TypeDescriptor::Integer(_) => many(attr.read_raw::<i64>().ok()?.into_iter().map(Value::from).collect()),
        TypeDescriptor::Unsigned(_) => many(attr.read_raw::<u64>().ok()?.into_iter().map(Value::from).collect()),
        TypeDescriptor::Float(_) => many(
            attr.read_raw::<f64>()
                .ok()?
                .into_iter()
                .map(|x| serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null))
                .collect(),
        ),
        TypeDescriptor::Boolean => many(attr.read_raw::<bool>().ok()?.into_iter().map(Value::from).collect()),
        TypeDescriptor::VarLenUnicode => {
            many(attr.read_raw::<VarLenUnicode>().ok()?.into_iter().map(|s| Value::from(s.as_str())).collect())
        }
        TypeDescriptor::VarLenAscii => {
            many(attr.read_raw::<VarLenAscii>().ok()?.into_iter().map(|s| Value::from(s.as_str())).collect())
        }
        TypeDescriptor::FixedAscii(_) => many(
            attr.read_raw::<hdf5::types::FixedAscii<4096>>()
                .ok()?
                .into_iter()
                .map(|s| Value::from(s.as_str()))
                .collect(),
        ),
        TypeDescriptor::FixedUnicode(_) => many(
            attr.read_raw::<hdf5::types::FixedUnicode<4096>>()
                .ok()?
                .into_iter()
                .map(|s| Value::from(s.as_str()))
                .collect(),
        ),
        _ => None,
    }
}

/// All readable attributes of an object.
pub fn attributes(loc: &hdf5::Location) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for name in loc.attr_names().unwrap_or_default() {
        if let Some(v) = loc.attr(&name).ok().as_ref().and_then(attr_value) {
            out.insert(name, v);
        }
    }
    out
}

/// The physical units named by a dataset's attributes (`units`, `unit`, `UNITS`, `BUNIT`).
pub fn units_of(attrs: &BTreeMap<String, Value>) -> Option<String> {
    ["units", "unit", "UNITS", "Units", "BUNIT"]
        .iter()
        .find_map(|k| attrs.get(*k).and_then(|v| v.as_str()).map(str::to_string))
        .filter(|s| !s.is_empty())
}

fn list_for_error(file: &hdf5::File) -> String {
    let mut ds = Vec::new();
    let _ = all_datasets(file, &mut ds);
    let mut names: Vec<String> = ds.iter().take(20).map(|d| format!("{} {:?}", d.name(), d.shape())).collect();
    if ds.len() > 20 {
        names.push(format!("and {} more", ds.len() - 20));
    }
    if names.is_empty() {
        "the file holds no datasets".into()
    } else {
        format!("datasets in the file: {}", names.join(", "))
    }
}

/// Reads one dataset (the named one; else `maps`; else the only 2-D/3-D numeric dataset).
pub fn read(path: &Path, dataset: Option<&str>) -> Result<(Source, ArrayD<f32>)> {
    let file = open(path)?;
    let name = match dataset {
        Some(d) => {
            let d = if d.starts_with('/') { d.to_string() } else { format!("/{d}") };
            let is_dataset = file.link_exists(&d)
                && file.loc_type_by_name(&d).map(|t| t == hdf5::LocationType::Dataset).unwrap_or(false);
            if !is_dataset {
                let what = if file.link_exists(&d) { "it is a group" } else { "no such path" };
                return Err(Error::content(path, format!("no dataset '{d}': {what} ({})", list_for_error(&file))));
            }
            d
        }
        None => {
            if file.link_exists("maps") {
                "/maps".to_string()
            } else {
                let mut all = Vec::new();
                all_datasets(&file, &mut all).map_err(|e| Error::format(path, e))?;
                let candidates: Vec<_> = all
                    .iter()
                    .filter(|d| {
                        (2..=3).contains(&d.ndim())
                            && d.dtype().and_then(|t| t.to_descriptor()).map(|t| is_numeric(&t)).unwrap_or(false)
                    })
                    .collect();
                match candidates.as_slice() {
                    [one] => one.name(),
                    [] => {
                        return Err(Error::content(
                            path,
                            format!("no 2-D or 3-D numeric dataset ({})", list_for_error(&file)),
                        ))
                    }
                    _ => {
                        return Err(Error::content(
                            path,
                            format!(
                                "several datasets could be maps; choose one with --dataset (`dataset` in a run \
                                config) ({})",
                                list_for_error(&file)
                            ),
                        ))
                    }
                }
            }
        }
    };
    let ds = file.dataset(&name).map_err(|e| Error::content(path, format!("{name}: {e}")).with_source(e))?;
    let td = ds
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| Error::format(path, format!("{name}: unreadable datatype: {e}")).with_source(e))?;
    if !is_numeric(&td) {
        return Err(Error::content(path, format!("{name}: datatype {td} is not an integer or float type")));
    }
    let shape = ds.shape();
    check_claimed_size(path, &name, &ds)?;
    let values: Vec<f64> = ds
        .read_raw::<f64>()
        .map_err(|e| Error::format(path, format!("{name}: cannot read data: {e}")).with_source(e))?;
    let data = ArrayD::from_shape_vec(IxDyn(&shape), values.into_iter().map(|v| v as f32).collect())
        .map_err(|e| Error::format(path, format!("{name}: {e}")))?;
    let attrs = attributes(&ds);
    let units = units_of(&attrs);
    let source = Source {
        path: path.to_path_buf(),
        format: super::Format::Hdf5,
        location: name,
        units,
        cards: Vec::new(),
        attrs,
    };
    Ok((source, data))
}

/// A summary of one dataset for `expanse inspect`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatasetSummary {
    pub path: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub chunks: Option<Vec<usize>>,
    pub filters: Vec<String>,
    pub attrs: BTreeMap<String, Value>,
}

/// Lists every dataset of an HDF5 file with its shape, dtype, chunking, filters and attributes.
pub fn list_datasets(path: &Path) -> Result<(BTreeMap<String, Value>, Vec<DatasetSummary>)> {
    let file = open(path)?;
    let mut all = Vec::new();
    all_datasets(&file, &mut all).map_err(|e| Error::format(path, e))?;
    let summaries = all
        .iter()
        .map(|d| DatasetSummary {
            path: d.name(),
            shape: d.shape(),
            dtype: d.dtype().and_then(|t| t.to_descriptor()).map(|t| dtype_name(&t)).unwrap_or_else(|_| "?".into()),
            chunks: d.chunk(),
            filters: d.filters().iter().map(|f| format!("{f:?}")).collect(),
            attrs: attributes(d),
        })
        .collect();
    Ok((attributes(&file), summaries))
}

/// Numeric values of a dataset as f32 (for inspect statistics), if numeric.
pub fn read_numeric(path: &Path, name: &str) -> Result<Option<Vec<f32>>> {
    let file = open(path)?;
    let ds = file.dataset(name).map_err(|e| Error::content(path, format!("{name}: {e}")).with_source(e))?;
    let td = ds.dtype().and_then(|t| t.to_descriptor()).map_err(|e| Error::format(path, e))?;
    if !is_numeric(&td) {
        return Ok(None);
    }
    check_claimed_size(path, name, &ds)?;
    let v = ds.read_raw::<f64>().map_err(|e| Error::format(path, format!("{name}: {e}")).with_source(e))?;
    Ok(Some(v.into_iter().map(|x| x as f32).collect()))
}

/// Writes a UTF-8 string attribute (what h5py reads as `str`).
pub(crate) fn put_str(loc: &hdf5::Location, name: &str, value: &str) -> hdf5::Result<()> {
    let v: VarLenUnicode = value.parse().map_err(|e| hdf5::Error::from(format!("{e}")))?;
    loc.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&v)
}

/// Writes dataset `maps` (float32, chunked per map, gzip) with `units` (empty when unknown), and file attributes
/// `expanse_version`, `command`, `sources`, `provenance` (JSON); with a mask, dataset `mask`
/// (uint8, 1 = blank).
pub fn write(path: &Path, out: &OutputStack) -> Result<()> {
    let werr = |e: hdf5::Error| Error::write(path, e);
    let data = out.data.as_standard_layout();
    let writer = RowWriter::create(path, data.shape())?;
    writer.ds.write(&data).map_err(werr)?;
    if let Some(mask) = &out.mask {
        let mask = mask.as_standard_layout();
        let mut chunk = mask.shape().to_vec();
        chunk[0] = 1;
        let m =
            writer.file.new_dataset_builder().chunk(chunk).deflate(4).with_data(&mask).create("mask").map_err(werr)?;
        put_str(&m, "meaning", "1 = blank (NaN) pixel in the source map").map_err(werr)?;
    }
    writer.finish(out.units.as_deref(), out.provenance)
}

/// A stack written as [`write()`] writes it (without a mask), a range of maps at a time.
pub struct RowWriter {
    file: hdf5::File,
    ds: hdf5::Dataset,
    path: PathBuf,
}

impl RowWriter {
    /// Creates `path` with dataset `maps` of `shape` (maps first).
    pub fn create(path: &Path, shape: &[usize]) -> Result<RowWriter> {
        let werr = |e: hdf5::Error| Error::write(path, e);
        let file = hdf5::File::create(path).map_err(werr)?;
        let mut chunk = shape.to_vec();
        chunk[0] = 1;
        let ds = file.new_dataset::<f32>().chunk(chunk).deflate(4).shape(shape).create("maps").map_err(werr)?;
        Ok(RowWriter { file, ds, path: path.to_path_buf() })
    }

    /// Writes `rows` (maps first, standard layout) as maps `start..start + rows.len_of(0)`.
    pub fn write(&self, start: usize, rows: &ndarray::ArrayView4<f32>) -> Result<()> {
        let n = rows.len_of(ndarray::Axis(0));
        self.ds.write_slice(rows, ndarray::s![start..start + n, .., .., ..]).map_err(|e| Error::write(&self.path, e))
    }

    /// Writes the attributes and closes the file.
    pub fn finish(self, units: Option<&str>, provenance: &super::Provenance) -> Result<()> {
        let werr = |e: hdf5::Error| Error::write(&self.path, e);
        // Always there, so that `f["maps"].attrs["units"]` works; empty when the inputs named none.
        put_str(&self.ds, "units", units.unwrap_or("")).map_err(werr)?;
        let axes = if self.ds.ndim() == 4 { "map,channel,row,column" } else { "map,row,column" };
        put_str(&self.ds, "axes", axes).map_err(werr)?;
        put_str(&self.file, "expanse_version", &provenance.tool).map_err(werr)?;
        put_str(&self.file, "command", &provenance.command).map_err(werr)?;
        put_str(&self.file, "sources", &provenance.sources.join("\n")).map_err(werr)?;
        let json = serde_json::to_string(provenance).expect("provenance serializes");
        put_str(&self.file, "provenance", &json).map_err(werr)?;
        drop(self.ds);
        self.file.close().map_err(werr)
    }
}

/// A 4-D float dataset `maps` read a range of maps at a time.
pub(crate) struct RowReader {
    ds: hdf5::Dataset,
    path: PathBuf,
}

impl RowReader {
    /// Opens dataset `maps` of `path` when it is 4-D and of a float type; None otherwise.
    pub(crate) fn open(path: &Path) -> Result<Option<RowReader>> {
        let file = open(path)?;
        let Ok(ds) = file.dataset("maps") else { return Ok(None) };
        let float = matches!(ds.dtype().and_then(|t| t.to_descriptor()), Ok(TypeDescriptor::Float(_)));
        if ds.ndim() != 4 || !float {
            return Ok(None);
        }
        check_claimed_size(path, "maps", &ds)?;
        Ok(Some(RowReader { ds, path: path.to_path_buf() }))
    }

    /// (N, C, H, W).
    pub(crate) fn dim(&self) -> (usize, usize, usize, usize) {
        let s = self.ds.shape();
        (s[0], s[1], s[2], s[3])
    }

    /// Maps `range`, as float32.
    pub(crate) fn rows(&self, range: std::ops::Range<usize>) -> Result<ndarray::Array4<f32>> {
        self.ds
            .read_slice::<f32, _, ndarray::Ix4>(ndarray::s![range, .., .., ..])
            .map_err(|e| Error::format(&self.path, format!("dataset 'maps': {e}")).with_source(e))
    }
}

/// Reads the provenance JSON written by [`write()`], if present.
pub fn read_provenance(path: &Path) -> Result<Option<super::Provenance>> {
    let file = open(path)?;
    let attrs = attributes(&file);
    match attrs.get("provenance").and_then(|v| v.as_str()) {
        None => Ok(None),
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| Error::format(path, format!("attribute 'provenance' is not valid JSON: {e}")).with_source(e)),
    }
}
