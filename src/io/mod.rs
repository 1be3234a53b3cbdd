//! Reading and writing maps: FITS (cfitsio through `fitsio`), HDF5 (`hdf5`) and NPY (`ndarray-npy`).
//!
//! Every reader returns a list of [`Map`]s (2-D, `f32`, NaN where blank) that remember where they
//! came from; every writer is atomic (temporary file in the target folder, then rename).

mod atomic;
pub mod fits;
pub mod hdf5;
pub mod npy;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{Array2, Array3, ArrayView3, ArrayViewD, Axis};
use serde::{Deserialize, Serialize};

pub use atomic::{check_output_folder, AtomicFiles};

use crate::error::{Error, Result};

/// Version string written into every output.
pub const TOOL: &str = concat!("expanse ", env!("CARGO_PKG_VERSION"));

/// The git commit this build was made from (`-dirty` when its sources differed from it;
/// `unknown` outside a git checkout), recorded by build.rs.
pub const COMMIT: &str = env!("EXPANSE_GIT_COMMIT");

/// File formats expanse reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Fits,
    Hdf5,
    Npy,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Fits => "FITS",
            Format::Hdf5 => "HDF5",
            Format::Npy => "NPY",
        })
    }
}

impl Format {
    /// Detects the format of an existing file from its first bytes (never from its name).
    pub fn detect(path: &Path) -> Result<Format> {
        let meta = std::fs::metadata(path).map_err(|e| Error::open(path, io_cause(e)))?;
        if meta.is_dir() {
            return Err(Error::open(path, "is a directory, not a file"));
        }
        let mut head = vec![0u8; 2056];
        let mut file = std::fs::File::open(path).map_err(|e| Error::open(path, io_cause(e)))?;
        let mut n = 0;
        while n < head.len() {
            match file.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(Error::open(path, io_cause(e))),
            }
        }
        let head = &head[..n];
        const HDF5_MAGIC: &[u8] = b"\x89HDF\r\n\x1a\n";
        if head.starts_with(b"SIMPLE  =") {
            return Ok(Format::Fits);
        }
        if head.starts_with(&[0x1f, 0x8b]) && path.to_string_lossy().to_lowercase().contains(".fit") {
            // gzip-compressed FITS (file.fits.gz): cfitsio decompresses it transparently.
            return Ok(Format::Fits);
        }
        if head.starts_with(b"\x93NUMPY") {
            return Ok(Format::Npy);
        }
        // HDF5 files may carry a user block of 512, 1024 or 2048 bytes before the signature.
        if [0usize, 512, 1024, 2048].iter().any(|&o| head.len() >= o + 8 && &head[o..o + 8] == HDF5_MAGIC) {
            return Ok(Format::Hdf5);
        }
        if n == 0 {
            return Err(Error::format(path, "file is empty"));
        }
        Err(Error::format(path, "not a FITS, HDF5 or NPY file (its first bytes match none of these formats)"))
    }

    /// Picks the output format from a file name's extension.
    pub fn from_extension(path: &Path) -> Result<Format> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_lowercase();
        match ext.as_str() {
            "fits" | "fit" | "fts" => Ok(Format::Fits),
            "h5" | "hdf5" | "he5" | "hdf" => Ok(Format::Hdf5),
            "npy" => Ok(Format::Npy),
            _ => Err(Error::Invalid(format!(
                "{}: unknown output extension '.{ext}' (use .fits, .h5 or .npy)",
                path.display()
            ))),
        }
    }
}

/// The cause of an input error: "no such file" or "permission denied", else the error's message;
/// the error itself is kept as the source.
pub(crate) fn io_cause(e: std::io::Error) -> crate::error::Cause {
    match e.kind() {
        std::io::ErrorKind::NotFound => crate::error::Cause::described("no such file", e),
        std::io::ErrorKind::PermissionDenied => crate::error::Cause::described("permission denied", e),
        _ => e.into(),
    }
}

/// Which FITS HDU to read: an index (0 = primary, as in astropy and cfitsio) or an EXTNAME.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HduSelector {
    Index(usize),
    Name(String),
}

impl std::str::FromStr for HduSelector {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::Invalid("empty HDU selector".into()));
        }
        Ok(match s.parse::<usize>() {
            Ok(i) => HduSelector::Index(i),
            Err(_) => HduSelector::Name(s.to_string()),
        })
    }
}

impl fmt::Display for HduSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HduSelector::Index(i) => write!(f, "{i}"),
            HduSelector::Name(n) => f.write_str(n),
        }
    }
}

/// What to read from an input file. Options that do not apply to a format are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// FITS HDU; `None` = the first HDU that holds an image.
    pub hdu: Option<HduSelector>,
    /// HDF5 dataset path (leading slash optional); `None` = `maps`, or the only 2-D/3-D dataset.
    pub dataset: Option<String>,
}

/// Where a group of maps came from: one FITS HDU, one HDF5 dataset or one NPY file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub path: PathBuf,
    pub format: Format,
    /// `HDU 1 (SCI)`, `/sim/density`, or empty for NPY.
    pub location: String,
    /// Physical units (FITS BUNIT, HDF5 `units` attribute), when the file says.
    pub units: Option<String>,
    /// FITS header cards (80-character records) of the HDU, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cards: Vec<String>,
    /// HDF5 attributes of the dataset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, serde_json::Value>,
}

impl Source {
    /// A FITS header value by keyword, as text (strings unquoted).
    pub fn card(&self, key: &str) -> Option<String> {
        fits::card_value(&self.cards, key)
    }

    /// A short human-readable name: `file.fits[HDU 1 (SCI)]`.
    pub fn describe(&self) -> String {
        if self.location.is_empty() {
            self.path.display().to_string()
        } else {
            format!("{}[{}]", self.path.display(), self.location)
        }
    }
}

/// One 2-D map (rows × columns, f32, NaN where blank) and its origin.
#[derive(Debug, Clone)]
pub struct Map {
    pub data: Array2<f32>,
    pub source: Arc<Source>,
    /// Plane index when the map is one plane of a cube.
    pub plane: Option<usize>,
    /// `[row0, col0, rows, cols]` of the region cut from the original plane, when cropped or tiled.
    pub region: Option<[usize; 4]>,
}

impl Map {
    /// `file[HDU 1 (SCI)] plane 3` — used in error messages and provenance.
    pub fn describe(&self) -> String {
        let mut s = self.source.describe();
        if let Some(p) = self.plane {
            s.push_str(&format!(" plane {p}"));
        }
        if let Some([r, c, h, w]) = self.region {
            s.push_str(&format!(" region rows {r}..{} cols {c}..{}", r + h, c + w));
        }
        s
    }

    /// Number of finite pixels.
    pub fn finite_count(&self) -> usize {
        self.data.iter().filter(|v| v.is_finite()).count()
    }
}

/// `v` written exactly (shortest round-trip digits) and readably: plain between 1e-3 and 1e6,
/// scientific notation outside (1e21, not 22 digits), as numpy and astropy read it back.
/// f32 values keep their own shortest digits.
pub fn number<T: Copy + Into<f64> + fmt::Display + fmt::LowerExp>(v: T) -> String {
    let x: f64 = v.into();
    if x != 0.0 && x.is_finite() && (x.abs() >= 1e6 || x.abs() < 1e-3) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// `path` as recorded in provenance: relative to `base` (a run folder) when it lies inside it, so
/// that the same run into two folders writes the same bytes; otherwise as given.
pub fn shown_path(path: &Path, base: Option<&Path>) -> PathBuf {
    base.and_then(|b| path.strip_prefix(b).ok()).map_or_else(|| path.to_path_buf(), Path::to_path_buf)
}

/// Size in bytes and SHA-256 (hex) of a file's content.
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(|e| Error::open(path, io_cause(e)))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::open(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, h.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

/// Reads every map of one file (a 2-D image gives one map, a 3-D cube one map per plane).
///
/// Rejects 1-D data, data of more than three non-degenerate axes, and maps that are entirely
/// NaN or blank.
pub fn read_maps(path: &Path, sel: &Selection) -> Result<Vec<Map>> {
    let (source, data) = match Format::detect(path)? {
        Format::Fits => fits::read(path, sel.hdu.as_ref())?,
        Format::Hdf5 => hdf5::read(path, sel.dataset.as_deref())?,
        Format::Npy => npy::read(path)?,
    };
    let (cube, is_cube) = to_cube(path, &source.location, data)?;
    let source = Arc::new(source);
    let planes = cube.len_of(Axis(0));
    let mut maps = Vec::with_capacity(planes);
    for (i, plane) in cube.axis_iter(Axis(0)).enumerate() {
        let map = Map {
            data: plane.to_owned(),
            source: source.clone(),
            plane: if is_cube { Some(i) } else { None },
            region: None,
        };
        if map.finite_count() == 0 {
            return Err(Error::content(path, format!("{}: map is entirely NaN or blank", map.label())));
        }
        maps.push(map);
    }
    Ok(maps)
}

impl Map {
    /// Where the map sits inside its file (`HDU 1 (SCI) plane 3 region ...`), for messages that
    /// already name the file.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if !self.source.location.is_empty() {
            parts.push(self.source.location.clone());
        }
        if let Some(p) = self.plane {
            parts.push(format!("plane {p}"));
        }
        if let Some([r, c, h, w]) = self.region {
            parts.push(format!("region rows {r}..{} cols {c}..{}", r + h, c + w));
        }
        if parts.is_empty() {
            "data".to_string()
        } else {
            parts.join(" ")
        }
    }
}

/// Turns raw array data (2-D or 3-D, extra leading axes of length 1 dropped) into an (N, H, W)
/// cube; the flag tells whether the data was a cube.
pub(crate) fn to_cube(path: &Path, location: &str, data: ndarray::ArrayD<f32>) -> Result<(Array3<f32>, bool)> {
    let shape = data.shape().to_vec();
    let where_ = if location.is_empty() { String::new() } else { format!("{location}: ") };
    // Drop leading axes of length 1 beyond the third (radio cubes are often (1, 1, H, W)).
    let mut data = data;
    while data.ndim() > 3 && data.shape()[0] == 1 {
        data = data.index_axis_move(Axis(0), 0);
    }
    match data.ndim() {
        0 => Err(Error::content(path, format!("{where_}holds no image data"))),
        1 => Err(Error::content(path, format!("{where_}1-D data (shape {shape:?}); expected a 2-D map or a 3-D cube"))),
        2 => {
            let (h, w) = (data.shape()[0], data.shape()[1]);
            if h == 0 || w == 0 {
                return Err(Error::content(path, format!("{where_}empty image (shape {shape:?})")));
            }
            Ok((data.into_shape_with_order((1, h, w)).expect("2-D to 3-D reshape"), false))
        }
        3 => {
            let d = data.into_dimensionality::<ndarray::Ix3>().expect("3-D");
            if d.is_empty() {
                return Err(Error::content(path, format!("{where_}empty cube (shape {shape:?})")));
            }
            Ok((d, true))
        }
        n => {
            Err(Error::content(path, format!("{where_}{n}-D data (shape {shape:?}); expected a 2-D map or a 3-D cube")))
        }
    }
}

/// Stacks maps of one shape into an (N, H, W) array; mixed shapes are an error naming the maps.
pub fn stack(maps: &[Map]) -> Result<Array3<f32>> {
    check_one_shape(maps)?;
    let views: Vec<_> = maps.iter().map(|m| m.data.view()).collect();
    Ok(ndarray::stack(Axis(0), &views).expect("same shapes"))
}

/// Fails unless there are maps and all have one shape (the error [`stack`] gives).
pub fn check_one_shape(maps: &[Map]) -> Result<()> {
    let first = maps.first().ok_or_else(|| Error::Invalid("no maps to stack".into()))?;
    let shape = first.data.dim();
    if let Some(other) = maps.iter().find(|m| m.data.dim() != shape) {
        return Err(Error::content(
            &other.source.path,
            format!(
                "mixed map shapes in one stack: {} is {}x{} but {} is {}x{}; \
                 choose a geometry (--crop, --tile or --size) to bring them to one shape",
                other.describe(),
                other.data.nrows(),
                other.data.ncols(),
                first.describe(),
                shape.0,
                shape.1
            ),
        ));
    }
    Ok(())
}

/// Provenance recorded with every output file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    /// `expanse 0.1.0`.
    pub tool: String,
    /// The command that produced the file (e.g. `ingest`).
    pub command: String,
    /// One line per input map: `file[HDU] plane k`.
    pub sources: Vec<String>,
    /// Physical units of the maps (before normalization).
    pub units: Option<String>,
    /// Extra records (normalization, geometry, simulation parameters, seeds, ...), as JSON.
    #[serde(default)]
    pub records: BTreeMap<String, serde_json::Value>,
}

impl Provenance {
    /// A provenance record for `command`, listing the maps it was made from.
    pub fn new(command: &str, maps: &[Map]) -> Self {
        Provenance {
            tool: TOOL.to_string(),
            command: command.to_string(),
            sources: maps.iter().map(|m| m.describe()).collect(),
            units: common_units(maps),
            records: BTreeMap::new(),
        }
    }
}

/// The units shared by all maps, if they agree.
pub fn common_units(maps: &[Map]) -> Option<String> {
    let first = maps.first()?.source.units.clone()?;
    maps.iter().all(|m| m.source.units.as_deref() == Some(first.as_str())).then_some(first)
}

/// `path` with its extension replaced by `suffix`: `out/p.h5` + `.diagnostics.json` →
/// `out/p.diagnostics.json`.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{stem}{suffix}"))
}

/// Writes `text` to `path` atomically.
pub fn write_text(path: &Path, text: &str) -> Result<PathBuf> {
    let files = AtomicFiles::new(&[path.to_path_buf()])?;
    std::fs::write(files.temp(0), text).map_err(|e| Error::write(path, e))?;
    Ok(files.commit()?.remove(0))
}

/// The provenance expanse wrote into a file (FITS `EXPPROV`, HDF5 attribute, NPY sidecar),
/// if any.
pub fn read_provenance(path: &Path) -> Result<Option<Provenance>> {
    match Format::detect(path)? {
        Format::Fits => fits::read_provenance(path),
        Format::Hdf5 => hdf5::read_provenance(path),
        Format::Npy => Ok(npy::read_sidecar(path)?.map(|s| s.provenance)),
    }
}

/// A stack ready to be written: data (N, H, W) or (N, C, H, W), optional mask (N, H, W; 1 =
/// blank), units and provenance.
pub struct OutputStack<'a> {
    pub data: ArrayViewD<'a, f32>,
    pub mask: Option<ArrayView3<'a, u8>>,
    /// BUNIT / `units` of the values written.
    pub units: Option<String>,
    pub provenance: &'a Provenance,
    /// FITS cards to copy verbatim (WCS of the source when the geometry is unchanged).
    pub fits_cards: Vec<String>,
}

/// Writes a stack to `path` in the format its extension names, atomically. NPY outputs get a
/// `<file>.json` provenance sidecar and, with a mask, a `<stem>.mask.npy` beside them.
pub fn write_stack(path: &Path, out: &OutputStack) -> Result<Vec<PathBuf>> {
    let format = Format::from_extension(path)?;
    if !(3..=4).contains(&out.data.ndim()) {
        return Err(Error::Invalid(format!("internal: cannot write a {}-D stack", out.data.ndim())));
    }
    match format {
        Format::Fits => {
            let files = AtomicFiles::new(&[path.to_path_buf()])?;
            fits::write(&files.temp(0), out).map_err(|e| retarget(e, path))?;
            files.commit()
        }
        Format::Hdf5 => {
            let files = AtomicFiles::new(&[path.to_path_buf()])?;
            hdf5::write(&files.temp(0), out).map_err(|e| retarget(e, path))?;
            files.commit()
        }
        Format::Npy => {
            let mut targets = vec![path.to_path_buf(), npy::sidecar_path(path)];
            if out.mask.is_some() {
                targets.push(npy::mask_path(path));
            }
            let files = AtomicFiles::new(&targets)?;
            npy::write(&files.temp(0), &files.temp(1), out.mask.is_some().then(|| files.temp(2)).as_deref(), out)
                .map_err(|e| retarget(e, path))?;
            files.commit()
        }
    }
}

/// Errors about a temporary file are reported against the file the user asked for.
pub(crate) fn retarget(e: Error, path: &Path) -> Error {
    match e {
        Error::Write { cause, .. } => Error::write(path, cause),
        other => other,
    }
}

/// File extensions a folder given as an input contributes.
const MAP_EXTENSIONS: [&str; 7] = ["fits", "fit", "fts", "h5", "hdf5", "he5", "npy"];

/// One `inputs` entry as files, in sorted order: a folder gives its map files (by extension, not
/// recursive), a pattern with `*`, `?` or `[` the files it matches, anything else itself. A folder
/// or pattern that gives no file is an error.
pub fn expand_input(p: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    let text = p.to_string_lossy();
    let mut files: Vec<PathBuf> = if p.is_dir() {
        let entries = std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))?;
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|f| {
                f.is_file()
                    && f.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| MAP_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            })
            .collect()
    } else if text.contains(['*', '?', '[']) {
        let paths = glob::glob(&text).map_err(|e| format!("'{text}' is not a valid pattern: {e}"))?;
        paths.flatten().filter(|f| f.is_file()).collect()
    } else {
        return Ok(vec![p.to_path_buf()]);
    };
    if files.is_empty() {
        let what = if p.is_dir() {
            format!("folder {} holds no map file ({})", p.display(), MAP_EXTENSIONS.join(", "))
        } else {
            format!("'{text}' matches no file")
        };
        return Err(what);
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod number_tests {
    use super::number;

    #[test]
    fn numbers_are_exact_and_never_long_integers() {
        assert_eq!(number(1e21), "1e21");
        assert_eq!(number(1.6e29), "1.6e29");
        assert_eq!(number(-2.5e-5), "-2.5e-5");
        assert_eq!(number(0.03125), "0.03125");
        assert_eq!(number(123456.5), "123456.5");
        assert_eq!(number(0.0), "0");
        let v = 1.2345678901234567e48;
        assert_eq!(number(v).parse::<f64>().unwrap(), v);
        assert_eq!(number(1e21f32), "1e21");
    }
}
