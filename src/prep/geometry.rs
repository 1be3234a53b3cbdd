//! Crops, tiles and resizing (area-averaging when shrinking, bilinear when enlarging), all
//! NaN-aware: a blank pixel never contaminates its neighbours, and an output pixel whose inputs
//! are all blank stays blank.

use ndarray::{s, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::Map;

/// A rectangular crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Crop {
    /// Columns `x0..x0+width`, rows `y0..y0+height` (0-based, numpy order).
    Box { x0: usize, y0: usize, width: usize, height: usize },
    /// The central `size` × `size` square.
    Center { size: usize },
}

impl std::str::FromStr for Crop {
    type Err = Error;
    /// `X0,Y0,WIDTH,HEIGHT` or `center:SIZE`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Invalid(format!("crop '{s}': expected X0,Y0,WIDTH,HEIGHT or center:SIZE"));
        if let Some(n) = s.strip_prefix("center:") {
            let size = n.trim().parse::<usize>().map_err(|_| bad())?;
            if size == 0 {
                return Err(bad());
            }
            return Ok(Crop::Center { size });
        }
        let v: Vec<usize> =
            s.split(',').map(|p| p.trim().parse()).collect::<std::result::Result<_, _>>().map_err(|_| bad())?;
        match v[..] {
            [x0, y0, width, height] if width > 0 && height > 0 => Ok(Crop::Box { x0, y0, width, height }),
            _ => Err(bad()),
        }
    }
}

/// Square tiles of `size` pixels every `stride` pixels (stride = size: no overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tile {
    pub size: usize,
    pub stride: usize,
}

impl std::str::FromStr for Tile {
    type Err = Error;
    /// `SIZE` or `SIZE:STRIDE`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Invalid(format!("tile '{s}': expected SIZE or SIZE:STRIDE (positive integers)"));
        let mut it = s.split(':');
        let size: usize = it.next().ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
        let stride: usize = match it.next() {
            Some(v) => v.trim().parse().map_err(|_| bad())?,
            None => size,
        };
        if size == 0 || stride == 0 || it.next().is_some() {
            return Err(bad());
        }
        Ok(Tile { size, stride })
    }
}

/// Crop, then tile, then resize to `size` × `size`; each step optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub crop: Option<Crop>,
    pub tile: Option<Tile>,
    pub size: Option<usize>,
}

impl Geometry {
    /// True when no step changes the pixel grid.
    pub fn is_identity(&self) -> bool {
        self.crop.is_none() && self.tile.is_none() && self.size.is_none()
    }

    /// Applies the geometry to every map; the result keeps each map's origin and region.
    pub fn apply(&self, maps: Vec<Map>) -> Result<Vec<Map>> {
        let mut out = Vec::with_capacity(maps.len());
        for map in maps {
            let cropped = match self.crop {
                Some(c) => crop(map, c)?,
                None => map,
            };
            let tiles = match self.tile {
                Some(t) => tile(cropped, t)?,
                None => vec![cropped],
            };
            for t in tiles {
                out.push(match self.size {
                    Some(s) => resize_map(t, s)?,
                    None => t,
                });
            }
        }
        Ok(out)
    }
}

fn region_of(map: &Map) -> [usize; 4] {
    map.region.unwrap_or([0, 0, map.data.nrows(), map.data.ncols()])
}

fn sub_map(map: &Map, r0: usize, c0: usize, h: usize, w: usize) -> Map {
    let [pr, pc, _, _] = region_of(map);
    Map {
        data: map.data.slice(s![r0..r0 + h, c0..c0 + w]).to_owned(),
        source: map.source.clone(),
        plane: map.plane,
        region: Some([pr + r0, pc + c0, h, w]),
    }
}

fn crop(map: Map, c: Crop) -> Result<Map> {
    let (h, w) = map.data.dim();
    let (r0, c0, ch, cw) = match c {
        Crop::Box { x0, y0, width, height } => (y0, x0, height, width),
        Crop::Center { size } => {
            if size > h || size > w {
                return Err(Error::content(
                    &map.source.path,
                    format!("{}: center crop {size} is larger than the {h}x{w} map", map.label()),
                ));
            }
            ((h - size) / 2, (w - size) / 2, size, size)
        }
    };
    if r0 + ch > h || c0 + cw > w {
        return Err(Error::content(
            &map.source.path,
            format!(
                "{}: crop rows {r0}..{} cols {c0}..{} falls outside the {h}x{w} map",
                map.label(),
                r0 + ch,
                c0 + cw
            ),
        ));
    }
    let out = sub_map(&map, r0, c0, ch, cw);
    if out.finite_count() == 0 {
        return Err(Error::content(&map.source.path, format!("{}: the crop is entirely NaN", out.label())));
    }
    Ok(out)
}

fn tile(map: Map, t: Tile) -> Result<Vec<Map>> {
    let (h, w) = map.data.dim();
    if t.size > h || t.size > w {
        return Err(Error::content(
            &map.source.path,
            format!("{}: tile size {} is larger than the {h}x{w} map", map.label(), t.size),
        ));
    }
    let mut out = Vec::new();
    for r0 in (0..=h - t.size).step_by(t.stride) {
        for c0 in (0..=w - t.size).step_by(t.stride) {
            let tile = sub_map(&map, r0, c0, t.size, t.size);
            // Tiles that hold no data at all (e.g. outside a survey footprint) are skipped.
            if tile.finite_count() > 0 {
                out.push(tile);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::content(&map.source.path, format!("{}: every tile is entirely NaN", map.label())));
    }
    Ok(out)
}

fn resize_map(map: Map, size: usize) -> Result<Map> {
    let (h, w) = map.data.dim();
    if h != w {
        return Err(Error::content(
            &map.source.path,
            format!("{}: is {h}x{w}; resizing to {size}x{size} needs a square map (crop or tile first)", map.label()),
        ));
    }
    if size == 0 {
        return Err(Error::Invalid("resize size must be positive".into()));
    }
    let data = resize(map.data.view(), size, size);
    Ok(Map { data, ..map })
}

/// Interpolation weights (out × in) along one axis: exact area overlap when shrinking (or
/// equal), bilinear with half-pixel centres (as PyTorch `align_corners=False`) when enlarging.
pub fn axis_weights(n_in: usize, n_out: usize) -> Array2<f64> {
    let mut w = Array2::<f64>::zeros((n_out, n_in));
    if n_out <= n_in {
        let scale = n_in as f64 / n_out as f64;
        for o in 0..n_out {
            let (a, b) = (o as f64 * scale, (o + 1) as f64 * scale);
            let (i0, i1) = (a.floor() as usize, (b.ceil() as usize).min(n_in));
            for i in i0..i1 {
                let overlap = (b.min((i + 1) as f64) - a.max(i as f64)).max(0.0);
                w[[o, i]] = overlap / scale;
            }
        }
    } else {
        let scale = n_in as f64 / n_out as f64;
        for o in 0..n_out {
            let x = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (x.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            let f = x - i0 as f64;
            w[[o, i0]] += 1.0 - f;
            w[[o, i1]] += f;
        }
    }
    w
}

/// Resizes a map with [`axis_weights`] along rows and columns, ignoring NaN inputs (weights are
/// renormalized over the finite ones).
pub fn resize(data: ArrayView2<f32>, out_h: usize, out_w: usize) -> Array2<f32> {
    let (h, w) = data.dim();
    let wy = axis_weights(h, out_h);
    let wx = axis_weights(w, out_w);
    let valid = data.mapv(|v| if v.is_finite() { 1.0f64 } else { 0.0 });
    let filled = data.mapv(|v| if v.is_finite() { v as f64 } else { 0.0 });
    let num = wy.dot(&filled).dot(&wx.t());
    let den = wy.dot(&valid).dot(&wx.t());
    let mut out = Array2::<f32>::zeros((out_h, out_w));
    for ((o, n), d) in out.iter_mut().zip(num.iter()).zip(den.iter()) {
        *o = if *d > 1e-12 { (n / d) as f32 } else { f32::NAN };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn area_average_halving_is_the_2x2_block_mean() {
        let a =
            array![[1.0f32, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0], [13.0, 14.0, 15.0, 16.0]];
        let r = resize(a.view(), 2, 2);
        assert_eq!(r, array![[3.5f32, 5.5], [11.5, 13.5]]);
    }

    #[test]
    fn area_average_conserves_the_mean_for_non_integer_ratios() {
        let a = Array2::from_shape_fn((7, 7), |(i, j)| (i * 7 + j) as f32);
        let r = resize(a.view(), 3, 3);
        let mean_in = a.mean().unwrap() as f64;
        let mean_out = r.mean().unwrap() as f64;
        assert!((mean_in - mean_out).abs() < 1e-4, "{mean_in} vs {mean_out}");
    }

    #[test]
    fn nan_pixels_are_ignored_and_all_nan_blocks_stay_nan() {
        let n = f32::NAN;
        let a = array![[n, 2.0, n, n], [4.0, 6.0, n, n], [1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]];
        let r = resize(a.view(), 2, 2);
        assert_eq!(r[[0, 0]], 4.0);
        assert!(r[[0, 1]].is_nan());
        assert_eq!(r[[1, 0]], 1.0);
        assert_eq!(r[[1, 1]], 2.0);
    }

    #[test]
    fn enlarging_is_bilinear_and_keeps_constants() {
        let a = Array2::from_elem((3, 3), 5.0f32);
        let r = resize(a.view(), 8, 8);
        assert!(r.iter().all(|&v| (v - 5.0).abs() < 1e-6));
        // torch.nn.functional.interpolate([[0, 1]], size=4, mode='linear') = [0, .25, .75, 1]
        let w = axis_weights(2, 4);
        let x = [0.0, 1.0];
        let y: Vec<f64> = (0..4).map(|o| w[[o, 0]] * x[0] + w[[o, 1]] * x[1]).collect();
        assert_eq!(y, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn parse_crop_and_tile() {
        assert_eq!("1,2,30,40".parse::<Crop>().unwrap(), Crop::Box { x0: 1, y0: 2, width: 30, height: 40 });
        assert_eq!("center:64".parse::<Crop>().unwrap(), Crop::Center { size: 64 });
        assert!("1,2,3".parse::<Crop>().is_err());
        assert_eq!("64".parse::<Tile>().unwrap(), Tile { size: 64, stride: 64 });
        assert_eq!("64:32".parse::<Tile>().unwrap(), Tile { size: 64, stride: 32 });
        assert!("0".parse::<Tile>().is_err());
    }
}
