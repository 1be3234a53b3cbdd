//! Figures with plotters: PNG and SVG, text in an embedded DejaVu Sans (no system font needed).
//! `plot` draws what other stages computed; it never computes statistics of its own beyond the
//! colour limits of an image.

use std::path::{Path, PathBuf};
use std::sync::Once;

use ndarray::Array2;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use crate::error::{Error, Result};
use crate::io::AtomicFiles;
use crate::prep::transform::percentile_sorted;

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Registers the embedded font as "sans-serif" (once per process).
pub fn register_font() {
    REGISTER.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("embedded DejaVuSans.ttf is a valid font"));
    });
}

/// A grid of maps on one colour scale, with a colour bar in physical units. Row 0 of each map
/// is drawn at the bottom (FITS / ds9 / `origin='lower'` convention).
#[derive(Debug, Clone)]
pub struct MapGrid {
    pub title: String,
    pub maps: Vec<Array2<f32>>,
    pub labels: Vec<String>,
    /// Units for the colour bar (e.g. `cm-2`).
    pub units: Option<String>,
    /// Colour by log10 of the values (chosen automatically by [`MapGrid::new`] for positive data
    /// spanning more than 1.5 decades).
    pub log: bool,
}

const CELL: u32 = 128;
const GAP: u32 = 6;
const TOP: u32 = 44;
const BAR: u32 = 130;
const MAX_COLS: usize = 8;

impl MapGrid {
    /// A grid of at most `max_maps` maps.
    pub fn new(title: &str, maps: Vec<Array2<f32>>, labels: Vec<String>, units: Option<String>) -> Self {
        let finite: Vec<f32> = maps.iter().flat_map(|m| m.iter().copied()).filter(|v| v.is_finite()).collect();
        let positive = !finite.is_empty() && finite.iter().all(|&v| v > 0.0);
        let (lo, hi) = finite.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let log = positive && (hi / lo) > 10f32.powf(1.5);
        MapGrid { title: title.to_string(), maps, labels, units, log }
    }

    fn value(&self, v: f32) -> f64 {
        if self.log { (v as f64).log10() } else { v as f64 }
    }

    /// Colour limits: the 1st and 99th percentiles of the (log) values.
    fn limits(&self) -> (f64, f64) {
        let mut v: Vec<f64> = self
            .maps
            .iter()
            .flat_map(|m| m.iter().copied())
            .filter(|x| x.is_finite())
            .map(|x| self.value(x))
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return (0.0, 1.0);
        }
        v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        let (lo, hi) = (percentile_sorted(&v, 1.0), percentile_sorted(&v, 99.0));
        if hi > lo { (lo, hi) } else { (lo - 0.5, lo + 0.5) }
    }

    fn layout(&self) -> (usize, usize, u32, u32) {
        let n = self.maps.len().max(1);
        let cols = ((n as f64).sqrt().ceil() as usize).clamp(1, MAX_COLS);
        let rows = n.div_ceil(cols);
        let w = cols as u32 * (CELL + GAP) + GAP + BAR;
        let h = TOP + rows as u32 * (CELL + GAP + 16) + GAP;
        (cols, rows, w, h)
    }

    /// RGB pixels of one map scaled into a CELL×CELL tile (nearest neighbour).
    fn tile(&self, map: &Array2<f32>, lim: (f64, f64)) -> Vec<u8> {
        let (h, w) = map.dim();
        let mut buf = Vec::with_capacity((CELL * CELL * 3) as usize);
        for y in 0..CELL {
            // Row 0 at the bottom.
            let r = h - 1 - ((y as usize * h) / CELL as usize).min(h - 1);
            for x in 0..CELL {
                let c = ((x as usize * w) / CELL as usize).min(w - 1);
                let v = map[[r, c]];
                let rgb = if v.is_finite() && self.value(v).is_finite() {
                    let t = ((self.value(v) - lim.0) / (lim.1 - lim.0)).clamp(0.0, 1.0);
                    ViridisRGB.get_color(t as f32)
                } else {
                    RGBColor(200, 200, 200)
                };
                buf.extend_from_slice(&[rgb.0, rgb.1, rgb.2]);
            }
        }
        buf
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, plotters::coord::Shift>) -> std::result::Result<(), String> {
        let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
        root.fill(&WHITE).map_err(e)?;
        let (cols, _rows, w, _h) = self.layout();
        let lim = self.limits();
        root.draw(&Text::new(self.title.clone(), (GAP as i32, 12), ("sans-serif", 20).into_font())).map_err(e)?;
        for (i, map) in self.maps.iter().enumerate() {
            let (col, row) = ((i % cols) as u32, (i / cols) as u32);
            let x = (GAP + col * (CELL + GAP)) as i32;
            let y = (TOP + row * (CELL + GAP + 16)) as i32;
            let img = BitMapElement::with_owned_buffer((x, y), (CELL, CELL), self.tile(map, lim))
                .ok_or("bitmap size mismatch")?;
            root.draw(&img).map_err(e)?;
            if let Some(label) = self.labels.get(i) {
                root.draw(&Text::new(label.clone(), (x, y + CELL as i32 + 2), ("sans-serif", 11).into_font()))
                    .map_err(e)?;
            }
        }
        // Colour bar.
        let bx = (w - BAR + 16) as i32;
        let by = TOP as i32;
        let bh = (2 * CELL + GAP) as i32;
        for k in 0..bh {
            let t = 1.0 - k as f32 / (bh - 1) as f32;
            root.draw(&Rectangle::new([(bx, by + k), (bx + 18, by + k + 1)], ViridisRGB.get_color(t).filled()))
                .map_err(e)?;
        }
        root.draw(&Rectangle::new([(bx, by), (bx + 18, by + bh)], BLACK.stroke_width(1))).map_err(e)?;
        for j in 0..=4 {
            let f = j as f64 / 4.0;
            let v = lim.0 + f * (lim.1 - lim.0);
            let yy = by + bh - (f * bh as f64) as i32;
            let text = if self.log { format!("{:.2e}", 10f64.powf(v)) } else { crate::inspect::fmt_num(v) };
            root.draw(&PathElement::new(vec![(bx + 18, yy), (bx + 23, yy)], BLACK)).map_err(e)?;
            root.draw(&Text::new(text, (bx + 26, yy - 6), ("sans-serif", 11).into_font())).map_err(e)?;
        }
        let units = self.units.clone().unwrap_or_else(|| "value".into());
        let label = if self.log { format!("{units} (log scale)") } else { units };
        root.draw(&Text::new(label, (bx - 4, by + bh + 8), ("sans-serif", 12).into_font())).map_err(e)?;
        root.present().map_err(e)
    }

    /// Writes `<stem>.png` and `<stem>.svg` atomically.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        register_font();
        if self.maps.is_empty() {
            return Err(Error::Invalid("no maps to plot".into()));
        }
        let png = stem.with_extension("png");
        let svg = stem.with_extension("svg");
        let files = AtomicFiles::new(&[png.clone(), svg.clone()])?;
        let (_, _, w, h) = self.layout();
        {
            let tmp = files.temp(0);
            let root = BitMapBackend::new(&tmp, (w, h)).into_drawing_area();
            self.draw(&root).map_err(|e| Error::write(&png, e))?;
        }
        {
            let tmp = files.temp(1);
            let root = SVGBackend::new(&tmp, (w, h)).into_drawing_area();
            self.draw(&root).map_err(|e| Error::write(&svg, e))?;
        }
        files.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_grid_writes_a_png_and_an_svg_that_show_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let maps: Vec<Array2<f32>> = (0..5)
            .map(|k| Array2::from_shape_fn((16, 16), |(i, j)| 10f32.powf(19.0 + (i + j + k) as f32 / 10.0)))
            .collect();
        let labels = (0..5).map(|k| format!("map {k}")).collect();
        let grid = MapGrid::new("test grid", maps, labels, Some("cm-2".into()));
        assert!(grid.log);
        let written = grid.save(&dir.path().join("grid")).unwrap();
        assert_eq!(written.len(), 2);
        let png = std::fs::read(&written[0]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(png.len() > 10_000, "PNG suspiciously small: {} bytes", png.len());
        let svg = std::fs::read_to_string(&written[1]).unwrap();
        assert!(svg.contains("<svg") && svg.contains("test grid") && svg.contains("cm-2"));
        assert!(svg.matches("<image").count() >= 5, "maps are embedded as images");
    }
}
