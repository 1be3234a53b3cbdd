//! Physical maps ⇄ model space: geometry, a domain-wide invertible transform, a blank-pixel
//! mask with a documented fill, and the channel mapping. Nothing else in expanse rescales data.
//!
//! Forward: geometry (crop → tile → resize, in physical units, NaN-aware) → transform fitted
//! over all maps together → blank pixels filled with the transformed domain median and
//! remembered in the mask → channels. Inverse: channels → inverse transform → mask re-applied
//! (NaN).

pub mod channels;
pub mod geometry;
pub mod transform;

use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis, Zip};
use serde::{Deserialize, Serialize};

pub use channels::ChannelMap;
pub use geometry::{Crop, Geometry, Tile};
pub use transform::{RangeSpec, Transform, TransformSpec};

use crate::error::{Error, Result};
use crate::io::Map;

/// What to do to a domain's maps (the user's choices, before fitting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepSpec {
    pub transform: TransformSpec,
    pub geometry: Geometry,
    pub channels: ChannelMap,
    /// Maps (after geometry: tiles, crops) with a larger fraction of blank pixels are dropped.
    #[serde(default = "default_max_blank")]
    pub max_blank: f64,
}

/// The default `max_blank`: a map more than half blank is dropped.
pub const DEFAULT_MAX_BLANK: f64 = 0.5;

fn default_max_blank() -> f64 {
    DEFAULT_MAX_BLANK
}

impl Default for PrepSpec {
    fn default() -> Self {
        PrepSpec {
            transform: TransformSpec::Linear { range: RangeSpec::MinMax },
            geometry: Geometry::default(),
            channels: ChannelMap::default(),
            max_blank: DEFAULT_MAX_BLANK,
        }
    }
}

/// The user's normalization and geometry choices as written on the command line or in a run
/// config, before parsing.
#[derive(Debug, Clone, Default)]
pub struct PrepOptions<'a> {
    /// `linear`, `log10` or `asinh`.
    pub transform: &'a str,
    /// `minmax` or `percentile:LOW,HIGH`.
    pub range: &'a str,
    pub offset: Option<f64>,
    pub softening: Option<f64>,
    /// `X0,Y0,WIDTH,HEIGHT` or `center:SIZE`.
    pub crop: Option<&'a str>,
    /// `SIZE` or `SIZE:STRIDE`.
    pub tile: Option<&'a str>,
    pub size: Option<usize>,
    /// Channels each map is copied into (ignored with `band_map`).
    pub channels: usize,
    pub band_map: Option<&'a [usize]>,
    /// Largest blank fraction of a map kept (default [`DEFAULT_MAX_BLANK`]).
    pub max_blank: Option<f64>,
}

impl PrepSpec {
    /// Parses and checks the choices.
    pub fn parse(o: &PrepOptions) -> Result<PrepSpec> {
        let range: RangeSpec = o.range.parse().map_err(|e: Error| e.for_key("range"))?;
        let transform = TransformSpec::parse(o.transform, range, o.offset, o.softening)?;
        if o.offset.is_some() && !matches!(transform, TransformSpec::Log10 { .. }) {
            return Err(Error::setting("offset", "applies to the log10 transform only"));
        }
        if o.softening.is_some() && !matches!(transform, TransformSpec::Asinh { .. }) {
            return Err(Error::setting("softening", "applies to the asinh transform only"));
        }
        let geometry = Geometry {
            crop: o.crop.map(str::parse::<Crop>).transpose().map_err(|e| e.for_key("crop"))?,
            tile: o.tile.map(str::parse::<Tile>).transpose().map_err(|e| e.for_key("tile"))?,
            size: o.size,
        };
        let (channels, key) = match o.band_map {
            Some(b) => (ChannelMap::Bands { band_of_channel: b.to_vec() }, "band_map"),
            None => (ChannelMap::Replicate { channels: o.channels }, "channels"),
        };
        channels.validate().map_err(|e| e.for_key(key))?;
        let max_blank = o.max_blank.unwrap_or(DEFAULT_MAX_BLANK);
        if !(0.0..=1.0).contains(&max_blank) {
            return Err(Error::setting("max_blank", format!("a fraction of pixels from 0 to 1, got {max_blank}")));
        }
        Ok(PrepSpec { transform, geometry, channels, max_blank })
    }
}

/// The fitted, serializable normalization of one domain: everything needed to go back from
/// model space to physical units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub transform: Transform,
    /// Physical value used for blank pixels: the median of the domain's finite pixels.
    pub fill: f64,
    /// `fill` in model space (what blank pixels hold in the model input).
    pub fill_model: f32,
    pub geometry: Geometry,
    pub channels: ChannelMap,
    /// Physical units of the domain's maps.
    pub units: Option<String>,
    /// Number of maps the transform was fitted on.
    pub n_maps: usize,
    /// Map size (rows, columns) in model space.
    pub shape: [usize; 2],
}

/// Model-ready images (N, C, H, W), the mask of blank pixels (N, H, W; 1 = blank) and the
/// fitted normalization.
#[derive(Debug, Clone)]
pub struct ModelStack {
    pub data: Array4<f32>,
    pub mask: Array3<u8>,
    pub normalization: Normalization,
    /// Maps dropped for being more than `max_blank` blank.
    pub dropped_blank: usize,
    /// What the user should know about the data (dropped maps, pixels that moved a fitted log10
    /// offset), in plain words.
    pub warnings: Vec<String>,
}

/// Applies geometry to the maps, fits the transform over all of them, fills blanks and maps
/// channels. Returns the model stack and the maps after geometry (in physical units).
///
/// Errors: mixed shapes (with no geometry that fixes them), a constant map, a domain the
/// transform cannot take (e.g. log10 of negative values without an offset).
pub fn normalize(maps: Vec<Map>, spec: &PrepSpec) -> Result<(ModelStack, Vec<Map>)> {
    spec.channels.validate()?;
    let maps = spec.geometry.apply(maps)?;
    let mut warnings = Vec::new();
    let (maps, dropped_blank) = drop_blank(maps, spec)?;
    if dropped_blank > 0 {
        warnings.push(format!(
            "{dropped_blank} map(s) of {} dropped: more than {:.0} % of their pixels are blank (max_blank)",
            domain_name(&maps),
            100.0 * spec.max_blank
        ));
    }
    crate::io::check_one_shape(&maps)?;
    // Every pixel of every map in stacking order, without a stacked copy of them.
    let pixels = || maps.iter().flat_map(|m| m.data.iter().copied());
    for m in &maps {
        let (lo, hi) = min_max(m.data.iter().copied());
        if lo == hi {
            return Err(Error::content(
                &m.source.path,
                format!(
                    "{}: constant map (every pixel is {}); it cannot be normalized",
                    m.label(),
                    crate::io::number(lo)
                ),
            ));
        }
    }
    let transform = Transform::fit(&spec.transform, pixels())
        .map_err(|e| Error::Invalid(format!("fitting the {} maps of {}: {e}", maps.len(), domain_name(&maps))))?;
    if let (Transform::Log10 { offset, .. }, TransformSpec::Log10 { offset: None, .. }) = (&transform, &spec.transform)
    {
        if *offset > 0.0 {
            let counts: Vec<(usize, &Map)> = maps
                .iter()
                .map(|m| (m.data.iter().filter(|v| v.is_finite() && **v <= 0.0).count(), m))
                .filter(|(n, _)| *n > 0)
                .collect();
            let total: usize = counts.iter().map(|c| c.0).sum();
            if let Some((n, worst)) = counts.iter().max_by_key(|c| c.0) {
                warnings.push(format!(
                    "log10: {total} pixel(s) <= 0 in {} map(s) (most in {}: {n}) set the fitted offset to {} for every \
                        map of the domain; blank them (NaN), set offset, or use asinh",
                    counts.len(),
                    worst.describe(),
                    crate::io::number(*offset as f32)
                ));
            }
        }
    }
    let fill = transform::median(pixels()).expect("maps have finite pixels");
    let fill_model = transform.forward(fill) as f32;
    let (h, w) = maps[0].data.dim();
    let mut model = Array3::<f32>::zeros((maps.len(), h, w));
    let mut map_mask = Array3::<u8>::zeros((maps.len(), h, w));
    let mut bad = None;
    for ((mut slot, mut blank), m) in model.outer_iter_mut().zip(map_mask.outer_iter_mut()).zip(&maps) {
        Zip::from(&mut slot).and(&mut blank).and(&m.data).for_each(|y, b, &x| {
            *b = u8::from(!x.is_finite());
            if x.is_finite() {
                let v = transform.forward(x as f64);
                if !v.is_finite() && bad.is_none() {
                    bad = Some(x);
                }
                *y = v as f32;
            } else {
                *y = fill_model;
            }
        });
    }
    if let Some(x) = bad {
        return Err(Error::Invalid(format!(
            "{}: the fitted {} transform cannot take the value {x}",
            domain_name(&maps),
            transform_kind(&transform)
        )));
    }
    let data = spec.channels.to_channels(model.view())?;
    drop(model);
    let mask = image_mask(map_mask.view(), spec.channels.maps_per_image());
    let normalization = Normalization {
        transform,
        fill,
        fill_model,
        geometry: spec.geometry,
        channels: spec.channels.clone(),
        units: crate::io::common_units(&maps),
        n_maps: maps.len(),
        shape: [h, w],
    };
    Ok((ModelStack { data, mask, normalization, dropped_blank, warnings }, maps))
}

/// The maps (whole images, for multi-band images) whose blank fraction is at most
/// `spec.max_blank`, and how many maps were dropped; an error when none is left.
fn drop_blank(maps: Vec<Map>, spec: &PrepSpec) -> Result<(Vec<Map>, usize)> {
    let per_image = spec.channels.maps_per_image().max(1);
    let blank = |m: &Map| m.data.iter().filter(|v| !v.is_finite()).count() as f64 / m.data.len().max(1) as f64;
    let n = maps.len();
    let first = maps.first().map(|m| m.source.path.clone());
    let mut kept = Vec::with_capacity(n);
    let mut image = Vec::with_capacity(per_image);
    for m in maps {
        image.push(m);
        if image.len() == per_image {
            if image.iter().all(|m| blank(m) <= spec.max_blank) {
                kept.append(&mut image);
            }
            image.clear();
        }
    }
    kept.append(&mut image);
    if kept.is_empty() {
        if let Some(path) = first {
            return Err(Error::content(
                &path,
                format!(
                    "each of the {n} map(s) is more than {:.0} % blank: nothing left to use (raise max_blank, or crop \
                        to the data)",
                    100.0 * spec.max_blank
                ),
            ));
        }
    }
    let dropped = n - kept.len();
    Ok((kept, dropped))
}

/// A pixel of a multi-band image is blank when any of its bands is.
fn image_mask(map_mask: ArrayView3<u8>, per_image: usize) -> Array3<u8> {
    let (n, h, w) = map_mask.dim();
    let mut out = Array3::<u8>::zeros((n / per_image, h, w));
    for (i, m) in map_mask.axis_iter(Axis(0)).enumerate() {
        let mut o = out.index_axis_mut(Axis(0), i / per_image);
        Zip::from(&mut o).and(&m).for_each(|a, &b| *a |= b);
    }
    out
}

fn min_max(values: impl Iterator<Item = f32>) -> (f32, f32) {
    values.filter(|v| v.is_finite()).fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
}

fn domain_name(maps: &[Map]) -> String {
    let mut files: Vec<String> = maps.iter().map(|m| m.source.path.display().to_string()).collect();
    files.dedup();
    files.join(", ")
}

fn transform_kind(t: &Transform) -> &'static str {
    match t {
        Transform::Linear { .. } => "linear",
        Transform::Log10 { .. } => "log10",
        Transform::Asinh { .. } => "asinh",
    }
}

impl Normalization {
    /// Model-space images (N, C, H, W) → physical maps (N·B, H, W), with the mask (per image,
    /// N × H × W, 1 = blank) re-applied as NaN when given.
    pub fn to_physical(&self, images: ArrayView4<f32>, mask: Option<ArrayView3<u8>>) -> Result<Array3<f32>> {
        let model = self.channels.to_maps(images)?;
        let mut out = model.mapv(|y| self.transform.inverse(y as f64) as f32);
        if let Some(mask) = mask {
            let per = self.channels.maps_per_image();
            if mask.len_of(Axis(0)) * per != out.len_of(Axis(0)) || mask.shape()[1..] != out.shape()[1..] {
                return Err(Error::Invalid(format!(
                    "mask shape {:?} does not fit {} maps of {:?}",
                    mask.shape(),
                    out.len_of(Axis(0)),
                    &out.shape()[1..]
                )));
            }
            for (i, mut m) in out.axis_iter_mut(Axis(0)).enumerate() {
                let mk = mask.index_axis(Axis(0), i / per);
                Zip::from(&mut m).and(&mk).for_each(|v, &b| {
                    if b != 0 {
                        *v = f32::NAN;
                    }
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Format, Source};
    use ndarray::Array2;
    use std::sync::Arc;

    fn map(data: Array2<f32>, plane: usize) -> Map {
        let source = Arc::new(Source {
            path: "test.fits".into(),
            format: Format::Fits,
            location: "HDU 0".into(),
            units: Some("cm-2".into()),
            cards: vec![],
            attrs: Default::default(),
        });
        Map { data, source, plane: Some(plane), region: None }
    }

    #[test]
    fn normalize_then_to_physical_returns_the_maps_with_blanks_restored() {
        let mut a = Array2::from_shape_fn((8, 8), |(i, j)| 1e20 * (1.0 + (i * 8 + j) as f32));
        a[[2, 3]] = f32::NAN;
        let b = Array2::from_shape_fn((8, 8), |(i, j)| 5e20 * (1.0 + (i + j) as f32));
        let spec = PrepSpec {
            transform: TransformSpec::Log10 { range: RangeSpec::MinMax, offset: None },
            geometry: Geometry::default(),
            channels: ChannelMap::Replicate { channels: 3 },
            ..PrepSpec::default()
        };
        let (ms, after) = normalize(vec![map(a.clone(), 0), map(b.clone(), 1)], &spec).unwrap();
        assert_eq!(ms.data.dim(), (2, 3, 8, 8));
        assert_eq!(ms.mask[[0, 2, 3]], 1);
        assert_eq!(ms.mask.iter().map(|&v| v as usize).sum::<usize>(), 1);
        assert_eq!(ms.data[[0, 1, 2, 3]], ms.normalization.fill_model);
        let lo = ms.data.iter().cloned().fold(f32::INFINITY, f32::min);
        let hi = ms.data.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert!((lo + 1.0).abs() < 1e-6 && (hi - 1.0).abs() < 1e-6);
        let back = ms.normalization.to_physical(ms.data.view(), Some(ms.mask.view())).unwrap();
        assert!(back[[0, 2, 3]].is_nan());
        for (orig, got) in [(a.view(), back.index_axis(Axis(0), 0)), (b.view(), back.index_axis(Axis(0), 1))] {
            for (x, y) in orig.iter().zip(got.iter()) {
                if x.is_finite() {
                    assert!(((x - y) / x).abs() < 2e-6, "{x} vs {y}");
                }
            }
        }
        assert_eq!(after.len(), 2);
        assert_eq!(ms.normalization.units.as_deref(), Some("cm-2"));
    }

    #[test]
    fn constant_maps_and_mixed_shapes_are_errors() {
        let spec = PrepSpec::default();
        let ok = Array2::from_shape_fn((4, 4), |(i, j)| (i + j) as f32);
        let e = normalize(vec![map(ok.clone(), 0), map(Array2::from_elem((4, 4), 2.0), 1)], &spec).unwrap_err();
        assert!(e.to_string().contains("constant map"), "{e}");
        let e = normalize(vec![map(ok, 0), map(Array2::zeros((5, 4)), 1)], &spec).unwrap_err();
        assert!(e.to_string().contains("mixed map shapes"), "{e}");
    }

    #[test]
    fn geometry_resolves_mixed_shapes() {
        let spec = PrepSpec {
            geometry: Geometry { crop: Some(Crop::Center { size: 4 }), tile: None, size: Some(2) },
            ..PrepSpec::default()
        };
        let a = Array2::from_shape_fn((6, 6), |(i, j)| (i * 6 + j) as f32);
        let b = Array2::from_shape_fn((4, 8), |(i, j)| (i * 8 + j) as f32);
        let (ms, after) = normalize(vec![map(a, 0), map(b, 1)], &spec).unwrap();
        assert_eq!(ms.data.dim(), (2, 1, 2, 2));
        assert_eq!(after[1].region, Some([0, 2, 4, 4]));
    }
}
