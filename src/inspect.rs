//! `expanse inspect`: what a file holds — HDUs or datasets, shapes, types, units, NaN fraction,
//! minimum and maximum.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::io::{fits, hdf5, npy, Format, HduSelector};

/// Summary statistics of the values of one image or dataset.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValueStats {
    pub count: usize,
    pub nan_fraction: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

impl ValueStats {
    /// Counts NaN/inf values and the range of the finite ones.
    pub fn of(values: impl Iterator<Item = f32>) -> ValueStats {
        let (mut n, mut bad, mut lo, mut hi, mut sum) = (0usize, 0usize, f64::INFINITY, f64::NEG_INFINITY, 0f64);
        for v in values {
            n += 1;
            if v.is_finite() {
                let v = v as f64;
                lo = lo.min(v);
                hi = hi.max(v);
                sum += v;
            } else {
                bad += 1;
            }
        }
        let good = n - bad;
        ValueStats {
            count: n,
            nan_fraction: if n == 0 { 0.0 } else { bad as f64 / n as f64 },
            min: (good > 0).then_some(lo),
            max: (good > 0).then_some(hi),
            mean: (good > 0).then(|| sum / good as f64),
        }
    }
}

/// One HDU, dataset or array of a file.
#[derive(Debug, Clone, Serialize)]
pub struct ItemReport {
    /// `HDU 1 (SCI)`, `/sim/density`, or `array`.
    pub location: String,
    /// `image`, `bintable`, `dataset`, `array`, ...
    pub kind: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub units: Option<String>,
    pub compressed: bool,
    pub stats: Option<ValueStats>,
}

/// Everything `inspect` says about one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub format: Format,
    pub items: Vec<ItemReport>,
}

fn fits_dtype(bitpix: i32, cards: &[String]) -> String {
    let bzero = fits::card_value(cards, "BZERO").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let bscale = fits::card_value(cards, "BSCALE").and_then(|v| v.parse::<f64>().ok()).unwrap_or(1.0);
    let base = match bitpix {
        8 => "uint8",
        16 => "int16",
        32 => "int32",
        64 => "int64",
        -32 => "float32",
        -64 => "float64",
        _ => "unknown",
    };
    if bscale == 1.0 && ((bitpix == 16 && bzero == 32768.0) || (bitpix == 32 && bzero == 2147483648.0)) {
        return format!("uint{bitpix}");
    }
    if bitpix == 8 && bscale == 1.0 && bzero == -128.0 {
        return "int8".into();
    }
    if bscale != 1.0 || bzero != 0.0 {
        return format!("{base} scaled (BSCALE={bscale}, BZERO={bzero})");
    }
    base.into()
}

/// Inspects one file of any supported format.
pub fn inspect(path: &Path) -> Result<FileReport> {
    let format = Format::detect(path)?;
    let items = match format {
        Format::Fits => {
            let mut items = Vec::new();
            for h in fits::list_hdus(path)? {
                let location = match &h.name {
                    Some(n) => format!("HDU {} ({n})", h.index),
                    None => format!("HDU {}", h.index),
                };
                let stats = if h.kind == "image" && !h.shape.is_empty() {
                    let (_, data) = fits::read(path, Some(&HduSelector::Index(h.index)))?;
                    Some(ValueStats::of(data.iter().copied()))
                } else {
                    None
                };
                items.push(ItemReport {
                    location,
                    dtype: h.bitpix.map(|b| fits_dtype(b, &h.cards)).unwrap_or_default(),
                    kind: h.kind,
                    shape: h.shape,
                    units: fits::card_value(&h.cards, "BUNIT").filter(|u| !u.is_empty()),
                    compressed: h.compressed,
                    stats,
                });
            }
            items
        }
        Format::Hdf5 => {
            let (_root, datasets) = hdf5::list_datasets(path)?;
            let mut items = Vec::new();
            for d in datasets {
                let stats = hdf5::read_numeric(path, &d.path)?.map(|v| ValueStats::of(v.into_iter()));
                items.push(ItemReport {
                    location: d.path,
                    kind: "dataset".into(),
                    dtype: d.dtype,
                    shape: d.shape,
                    units: hdf5::units_of(&d.attrs),
                    compressed: !d.filters.is_empty(),
                    stats,
                });
            }
            items
        }
        Format::Npy => {
            let (data, dtype) = npy::read_any(path)?;
            vec![ItemReport {
                location: "array".into(),
                kind: "array".into(),
                dtype: dtype.into(),
                shape: data.shape().to_vec(),
                units: npy::read_sidecar(path)?.and_then(|s| s.units),
                compressed: false,
                stats: Some(ValueStats::of(data.iter().copied())),
            }]
        }
    };
    Ok(FileReport { path: path.to_path_buf(), format, items })
}

/// A plain-text table of reports, for people.
pub fn render(reports: &[FileReport]) -> String {
    let mut s = String::new();
    for r in reports {
        s.push_str(&format!("{} ({})\n", r.path.display(), r.format));
        for it in &r.items {
            let shape = it.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
            let shape = if shape.is_empty() { "-".into() } else { shape };
            let stats = match &it.stats {
                Some(st) => format!(
                    "NaN {:.2}%  min {}  max {}",
                    100.0 * st.nan_fraction,
                    st.min.map(fmt_num).unwrap_or_else(|| "-".into()),
                    st.max.map(fmt_num).unwrap_or_else(|| "-".into())
                ),
                None => String::new(),
            };
            s.push_str(&format!(
                "  {:<24} {:<9} {:<10} {:<14} units {:<10} {}{}\n",
                it.location,
                it.kind,
                it.dtype,
                shape,
                it.units.as_deref().unwrap_or("-"),
                if it.compressed { "compressed  " } else { "" },
                stats
            ));
        }
    }
    s
}

/// Compact number formatting for tables.
pub fn fmt_num(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

/// Inspects several files; the first unreadable one is an error.
pub fn inspect_all(paths: &[PathBuf]) -> Result<Vec<FileReport>> {
    paths.iter().map(|p| inspect(p)).collect()
}

