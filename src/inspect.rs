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
    /// FITS: the world coordinate system in one line (projection, reference, pixel scale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wcs: Option<String>,
    /// FITS: key header cards that are present (object, telescope, instrument, dates, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<(String, String)>,
}

/// Header cards `inspect` shows when present.
const KEY_CARDS: [&str; 9] =
    ["OBJECT", "TELESCOP", "INSTRUME", "FILTER", "DATE-OBS", "EXPTIME", "ORIGIN", "BUNIT", "EXPCMD"];

/// The WCS of a FITS header in one line: `RA---TAN / DEC--TAN at (53.1625, -27.7914) deg, pixel
/// 0.054 x 0.054 arcsec` (CDELT, else the CD matrix's column lengths); None without CTYPE1.
pub fn describe_wcs(cards: &[String]) -> Option<String> {
    let get = |k: &str| fits::card_value(cards, k).map(|v| v.trim().to_string());
    let num = |k: &str| get(k).and_then(|v| v.parse::<f64>().ok());
    let (t1, t2) = (get("CTYPE1")?, get("CTYPE2").unwrap_or_default());
    let mut s = if t2.is_empty() { t1.clone() } else { format!("{t1} / {t2}") };
    if let (Some(v1), Some(v2)) = (num("CRVAL1"), num("CRVAL2")) {
        s.push_str(&format!(" at ({}, {})", crate::io::number(v1), crate::io::number(v2)));
    }
    if let (Some(p1), Some(p2)) = (num("CRPIX1"), num("CRPIX2")) {
        s.push_str(&format!(" (pixel {}, {})", crate::io::number(p1), crate::io::number(p2)));
    }
    let scale = |i: usize| {
        num(&format!("CDELT{i}")).or_else(|| {
            let (a, b) = (num(&format!("CD1_{i}")).unwrap_or(0.0), num(&format!("CD2_{i}")).unwrap_or(0.0));
            (a != 0.0 || b != 0.0).then(|| a.hypot(b))
        })
    };
    if let (Some(d1), Some(d2)) = (scale(1), scale(2)) {
        let celestial = t1.starts_with("RA") || t1.starts_with("GLON") || t1.starts_with("ELON");
        let unit = get("CUNIT1").filter(|u| !u.is_empty()).unwrap_or_else(|| {
            if celestial {
                "deg".into()
            } else {
                String::new()
            }
        });
        if celestial && unit == "deg" {
            s.push_str(&format!(", pixel {:.4} x {:.4} arcsec", d1.abs() * 3600.0, d2.abs() * 3600.0));
        } else {
            s.push_str(&format!(", pixel {} x {} {unit}", crate::io::number(d1.abs()), crate::io::number(d2.abs())));
        }
    }
    Some(s)
}

fn key_cards(cards: &[String]) -> Vec<(String, String)> {
    KEY_CARDS
        .iter()
        .filter_map(|k| {
            fits::card_value(cards, k).filter(|v| !v.trim().is_empty()).map(|v| (k.to_string(), v.trim().to_string()))
        })
        .collect()
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
                    wcs: describe_wcs(&h.cards),
                    header: key_cards(&h.cards),
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
                    wcs: None,
                    header: Vec::new(),
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
                wcs: None,
                header: Vec::new(),
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
            if let Some(w) = &it.wcs {
                s.push_str(&format!("    WCS {w}\n"));
            }
            if !it.header.is_empty() {
                let cards: Vec<String> = it.header.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                s.push_str(&format!("    {}\n", cards.join(", ")));
            }
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
