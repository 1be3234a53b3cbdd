//! NPY through `ndarray-npy`: 2-D or 3-D arrays of any integer or float type; a JSON sidecar
//! holds the provenance that the format itself cannot.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, ArrayView3};
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};

use super::{OutputStack, Source};
use crate::error::{Error, Result};

fn try_read<T>(path: &Path) -> std::result::Result<ArrayD<f32>, ReadNpyError>
where
    T: ndarray_npy::ReadableElement + Copy + Into<f64>,
{
    let file = std::fs::File::open(path)?;
    let a = ArrayD::<T>::read_npy(file)?;
    Ok(a.mapv(|v| v.into() as f32))
}

/// What an NPY header claims: (data offset, element count, bytes per element), when the header
/// can be parsed (otherwise the reader below reports the problem).
fn header_claim(bytes: &[u8]) -> Option<(usize, Option<u128>, u128)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return None;
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return None,
    };
    let header = std::str::from_utf8(bytes.get(start..start.checked_add(len)?)?).ok()?;
    let after = |key: &str| header.find(key).map(|i| &header[i + key.len()..]);
    let descr = after("'descr':")?.trim_start().strip_prefix('\'')?;
    let item: u128 = descr.chars().skip(2).take_while(|c| c.is_ascii_digit()).collect::<String>().parse().ok()?;
    let shape = after("'shape':")?.trim_start().strip_prefix('(')?;
    let shape = &shape[..shape.find(')')?];
    let mut elements: Option<u128> = Some(1);
    for d in shape.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let d: u128 = d.parse().ok()?;
        elements = elements.and_then(|e| e.checked_mul(d));
    }
    Some((start + len, elements, item))
}

/// Refuses a file whose header claims more data than the file holds, before anything is
/// allocated for it (a damaged header can claim terabytes).
pub(crate) fn check_claimed_size(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut head = Vec::new();
    let file = std::fs::File::open(path).map_err(|e| Error::open(path, super::io_cause(e)))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX) as u128;
    file.take(1 << 16).read_to_end(&mut head).map_err(|e| Error::open(path, super::io_cause(e)))?;
    let Some((offset, elements, item)) = header_claim(&head) else { return Ok(()) };
    let available = file_len.saturating_sub(offset as u128);
    match elements.and_then(|e| e.checked_mul(item)) {
        Some(bytes) if bytes <= available => Ok(()),
        Some(bytes) => Err(Error::format(
            path,
            format!(
                "the NPY header claims {} elements ({bytes} bytes) but the file holds {available} bytes of data: it is \
                    damaged or truncated",
                elements.unwrap_or(0)
            ),
        )),
        None => {
            Err(Error::format(path, "the NPY header claims more elements than any machine can hold: it is damaged"))
        }
    }
}

/// Reads an NPY array of any integer or float dtype as f32, with its dtype name.
pub fn read_any(path: &Path) -> Result<(ArrayD<f32>, &'static str)> {
    check_claimed_size(path)?;
    type Reader = fn(&Path) -> std::result::Result<ArrayD<f32>, ReadNpyError>;
    let readers: [(&str, Reader); 10] = [
        ("float32", try_read::<f32>),
        ("float64", try_read::<f64>),
        ("int8", try_read::<i8>),
        ("int16", try_read::<i16>),
        ("int32", try_read::<i32>),
        ("uint8", try_read::<u8>),
        ("uint16", try_read::<u16>),
        ("uint32", try_read::<u32>),
        ("int64", |p| try_read_wide::<i64>(p)),
        ("uint64", |p| try_read_wide::<u64>(p)),
    ];
    let mut last = None;
    for (name, reader) in readers {
        match reader(path) {
            Ok(a) => return Ok((a, name)),
            Err(ReadNpyError::WrongDescriptor(d)) => last = Some(d),
            Err(e) => return Err(Error::format(path, format!("cannot read NPY: {e}")).with_source(e)),
        }
    }
    Err(Error::format(
        path,
        format!("NPY dtype {} is not an integer or float type", last.map(|d| d.to_string()).unwrap_or_default()),
    ))
}

fn try_read_wide<T>(path: &Path) -> std::result::Result<ArrayD<f32>, ReadNpyError>
where
    T: ndarray_npy::ReadableElement + Copy + num_cast::AsF64,
{
    let file = std::fs::File::open(path)?;
    let a = ArrayD::<T>::read_npy(file)?;
    Ok(a.mapv(|v| v.to_f64_lossy() as f32))
}

mod num_cast {
    /// Lossy conversion for 64-bit integers (which have no `Into<f64>`).
    pub trait AsF64 {
        fn to_f64_lossy(self) -> f64;
    }
    impl AsF64 for i64 {
        fn to_f64_lossy(self) -> f64 {
            self as f64
        }
    }
    impl AsF64 for u64 {
        fn to_f64_lossy(self) -> f64 {
            self as f64
        }
    }
}

/// Reads an NPY map or stack.
pub fn read(path: &Path) -> Result<(Source, ArrayD<f32>)> {
    let (data, _) = read_any(path)?;
    let source = Source {
        path: path.to_path_buf(),
        format: super::Format::Npy,
        location: String::new(),
        units: None,
        cards: Vec::new(),
        attrs: Default::default(),
    };
    Ok((source, data))
}

/// `maps.npy` → `maps.npy.json`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// `maps.npy` → `maps.mask.npy`.
pub fn mask_path(path: &Path) -> PathBuf {
    path.with_extension("mask.npy")
}

/// The JSON sidecar written beside NPY outputs.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Sidecar {
    pub shape: Vec<usize>,
    pub units: Option<String>,
    pub mask: Option<String>,
    pub provenance: super::Provenance,
}

/// Writes data, sidecar and optional mask to the given (temporary) paths.
pub fn write(data_path: &Path, sidecar: &Path, mask_file: Option<&Path>, out: &OutputStack) -> Result<()> {
    let werr = |p: &Path, e: crate::error::Cause| Error::write(p, e);
    let data = out.data.as_standard_layout().into_owned();
    let f = std::fs::File::create(data_path).map_err(|e| werr(data_path, e.into()))?;
    data.write_npy(std::io::BufWriter::new(f)).map_err(|e| werr(data_path, e.into()))?;
    if let (Some(mp), Some(mask)) = (mask_file, &out.mask) {
        write_mask(mp, mask)?;
    }
    Sidecar {
        shape: data.shape().to_vec(),
        units: out.units.clone(),
        mask: out.mask.as_ref().map(|_| "<stem>.mask.npy: uint8, 1 = blank (NaN) pixel".to_string()),
        provenance: out.provenance.clone(),
    }
    .write(sidecar)
}

impl Sidecar {
    /// Writes the sidecar (JSON) to `path`.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("sidecar serializes");
        std::fs::write(path, text).map_err(|e| Error::write(path, e))
    }
}

fn write_mask(path: &Path, mask: &ArrayView3<u8>) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| Error::write(path, e))?;
    mask.as_standard_layout().write_npy(std::io::BufWriter::new(f)).map_err(|e| Error::write(path, e))
}

/// Reads the sidecar of an NPY output, if present.
pub fn read_sidecar(path: &Path) -> Result<Option<Sidecar>> {
    let p = sidecar_path(path);
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::format(&p, format!("not a valid expanse sidecar: {e}")).with_source(e)),
        Err(_) => Ok(None),
    }
}

/// A float32 4-D array the run wrote itself (a checkpoint or a cached inversion), or None when the
/// file is missing, damaged or of another shape, so that the work is redone.
pub(crate) fn read_own_array4(path: &Path, dim: (usize, usize, usize, usize)) -> Option<ndarray::Array4<f32>> {
    check_claimed_size(path).ok()?;
    ndarray_npy::read_npy(path).ok().filter(|a: &ndarray::Array4<f32>| a.dim() == dim)
}

/// Where the float32 values of shape `dim` start in an `.npy` file: they are its last bytes.
fn data_offset(file: &std::fs::File, dim: (usize, usize, usize, usize)) -> std::io::Result<u64> {
    Ok(file.metadata()?.len() - (dim.0 * dim.1 * dim.2 * dim.3 * 4) as u64)
}

/// A float32 (N, C, H, W) `.npy` array read a range of maps at a time (positional reads: nothing
/// of the file stays in memory).
pub(crate) struct NpyRows {
    file: std::fs::File,
    path: PathBuf,
    offset: u64,
    dim: (usize, usize, usize, usize),
}

impl NpyRows {
    /// Opens `path` when it holds a little-endian float32 4-D array in C order; None otherwise (the
    /// caller reads it another way).
    pub(crate) fn open(path: &Path) -> Result<Option<NpyRows>> {
        use ndarray_npy::ViewNpyExt;
        let file = std::fs::File::open(path).map_err(|e| Error::open(path, super::io_cause(e)))?;
        let dim = {
            // SAFETY: mapped only to parse the header and check the length, then unmapped. A
            // damaged header fails here and the caller's whole-file reader reports it.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::open(path, super::io_cause(e)))?;
            match ndarray::ArrayView4::<f32>::view_npy(&map) {
                Ok(v) if v.is_standard_layout() => v.dim(),
                _ => return Ok(None),
            }
        };
        let offset = data_offset(&file, dim).map_err(|e| Error::open(path, super::io_cause(e)))?;
        Ok(Some(NpyRows { file, path: path.to_path_buf(), offset, dim }))
    }

    /// (N, C, H, W).
    pub(crate) fn dim(&self) -> (usize, usize, usize, usize) {
        self.dim
    }

    /// Maps `range`.
    pub(crate) fn rows(&self, range: std::ops::Range<usize>) -> Result<ndarray::Array4<f32>> {
        use std::os::unix::fs::FileExt;
        let (_, c, h, w) = self.dim;
        let map = c * h * w;
        let mut bytes = vec![0u8; range.len() * map * 4];
        self.file
            .read_exact_at(&mut bytes, self.offset + (range.start * map * 4) as u64)
            .map_err(|e| Error::open(&self.path, super::io_cause(e)))?;
        let values = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok(ndarray::Array4::from_shape_vec((range.len(), c, h, w), values).expect("sized"))
    }
}

/// A float32 (N, C, H, W) `.npy` file written a range of maps at a time (positional writes).
pub(crate) struct NpyRowWriter {
    file: std::fs::File,
    path: PathBuf,
    offset: u64,
    dim: (usize, usize, usize, usize),
}

impl NpyRowWriter {
    /// Creates `path` (a temporary file) holding zeros of shape `dim`.
    pub(crate) fn create(path: &Path, dim: (usize, usize, usize, usize)) -> Result<NpyRowWriter> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::write(path, e))?;
        ndarray_npy::write_zeroed_npy::<f32, _>(&file, ndarray::Dim([dim.0, dim.1, dim.2, dim.3]))
            .map_err(|e| Error::write(path, e))?;
        let offset = data_offset(&file, dim).map_err(|e| Error::write(path, e))?;
        Ok(NpyRowWriter { file, path: path.to_path_buf(), offset, dim })
    }

    /// Writes `rows` (of this file's map shape) as maps `start..start + rows.len_of(0)`.
    pub(crate) fn write(&mut self, start: usize, rows: &ndarray::ArrayView4<f32>) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let (_, c, h, w) = self.dim;
        let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.file
            .write_all_at(&bytes, self.offset + (start * c * h * w * 4) as u64)
            .map_err(|e| Error::write(&self.path, e))
    }

    /// Flushes the file to disk.
    pub(crate) fn finish(self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::write(&self.path, e))
    }
}
