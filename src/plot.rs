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
use crate::numerics::percentile_sorted;

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// `stem` + `suffix` (the stem may itself contain dots, e.g. `prior.diagnostics`).
fn appended(stem: &Path, suffix: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Registers the embedded font as "sans-serif" (once per process).
pub fn register_font() {
    REGISTER.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("embedded DejaVuSans.ttf is a valid font"));
    });
}

/// PNG pixels per SVG pixel: 2 makes every figure 1120–1760 px wide, above 300 dpi at a journal's
/// single-column width (3.5 in = 1050 px).
const PNG_ZOOM: f32 = 2.0;

/// Writes `<stem>.svg` drawn by `draw` on a `size` canvas and `<stem>.png` rendered from that SVG
/// (by resvg, with the embedded font: the PNG looks exactly like the SVG), atomically.
fn save_figure(
    stem: &Path,
    size: (u32, u32),
    draw: impl Fn(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> DrawResult,
) -> Result<Vec<PathBuf>> {
    register_font();
    let (png, svg) = (appended(stem, ".png"), appended(stem, ".svg"));
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        draw(&root).map_err(|e| Error::write(&svg, e))?;
    }
    let image = rasterize(&text, PNG_ZOOM).map_err(|e| Error::write(&png, e))?;
    let files = AtomicFiles::new(&[png.clone(), svg.clone()])?;
    std::fs::write(files.temp(0), image).map_err(|e| Error::write(&png, e))?;
    std::fs::write(files.temp(1), text).map_err(|e| Error::write(&svg, e))?;
    files.commit()
}

/// PNG bytes of an SVG document rendered at `zoom`, its text in the embedded DejaVu Sans.
fn rasterize(svg: &str, zoom: f32) -> std::result::Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    options.fontdb_mut().load_font_data(FONT.to_vec());
    options.fontdb_mut().set_sans_serif_family("DejaVu Sans");
    options.font_family = "DejaVu Sans".into();
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| format!("SVG: {e}"))?;
    let size = tree.size().to_int_size().scale_by(zoom).ok_or("empty figure")?;
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).ok_or("empty figure")?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::from_scale(zoom, zoom), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| format!("PNG: {e}"))
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
    /// Colour by the domain's normalization instead (log10, asinh or linear, as the maps were
    /// normalized for the model); the colour bar says so and its ticks are physical values.
    pub transform: Option<crate::prep::Transform>,
    /// When set, the colour scale spans the full range of the first this many maps (the real
    /// ones), and pixels of the other maps outside it are marked, magenta above and cyan below;
    /// else the scale spans the 1st to 99th percentiles of all maps and colours saturate beyond.
    pub reference: Option<usize>,
}

/// Colour of pixels above / below a reference range.
const ABOVE: RGBColor = RGBColor(255, 0, 255);
const BELOW: RGBColor = RGBColor(0, 255, 255);
/// Colour of blank (NaN) pixels.
const BLANK: RGBColor = RGBColor(200, 200, 200);

const CELL: u32 = 160;
const GAP: u32 = 6;
const TOP: u32 = 48;
const BAR: u32 = 200;
const MAX_COLS: usize = 8;

impl MapGrid {
    /// A grid of at most `max_maps` maps.
    pub fn new(title: &str, maps: Vec<Array2<f32>>, labels: Vec<String>, units: Option<String>) -> Self {
        let finite: Vec<f32> = maps.iter().flat_map(|m| m.iter().copied()).filter(|v| v.is_finite()).collect();
        let positive = !finite.is_empty() && finite.iter().all(|&v| v > 0.0);
        let (lo, hi) = finite.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let log = positive && (hi / lo) > 10f32.powf(1.5);
        MapGrid { title: title.to_string(), maps, labels, units, log, transform: None, reference: None }
    }

    /// Colours in the domain's normalization `transform` (see [`MapGrid::transform`]).
    pub fn in_transform(mut self, transform: crate::prep::Transform) -> Self {
        self.log = false;
        self.transform = Some(transform);
        self
    }

    /// A grid whose colour scale is the full range of its first `reference` maps, with pixels
    /// outside it marked (see [`MapGrid::reference`]); each other map's label gives the
    /// percentage of its pixels outside.
    pub fn with_reference(
        title: &str,
        maps: Vec<Array2<f32>>,
        labels: Vec<String>,
        units: Option<String>,
        reference: usize,
    ) -> Self {
        let mut grid = MapGrid::new(title, maps, labels, units);
        grid.reference = Some(reference.clamp(1, grid.maps.len().max(1)));
        let lim = grid.limits();
        for (i, m) in grid.maps.iter().enumerate().skip(reference) {
            let finite: Vec<f64> = m.iter().filter(|v| v.is_finite()).map(|&v| grid.value(v)).collect();
            let out = finite.iter().filter(|&&v| !(v >= lim.0 && v <= lim.1)).count();
            if out > 0 {
                if let Some(l) = grid.labels.get_mut(i) {
                    l.push_str(&format!(" ({:.1} % out)", 100.0 * out as f64 / finite.len().max(1) as f64));
                }
            }
        }
        grid
    }

    fn value(&self, v: f32) -> f64 {
        if let Some(t) = &self.transform {
            return t.forward(v as f64);
        }
        if self.log {
            (v as f64).log10()
        } else {
            v as f64
        }
    }

    /// Colour limits: the full range of the reference maps, or else the 1st and 99th
    /// percentiles of the (log) values of all maps.
    fn limits(&self) -> (f64, f64) {
        let shown = self.reference.unwrap_or(self.maps.len());
        let mut v: Vec<f64> = self
            .maps
            .iter()
            .take(shown)
            .flat_map(|m| m.iter().copied())
            .filter(|x| x.is_finite())
            .map(|x| self.value(x))
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return (0.0, 1.0);
        }
        v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        let (lo, hi) = match self.reference {
            Some(_) => (v[0], v[v.len() - 1]),
            None => (percentile_sorted(&v, 1.0), percentile_sorted(&v, 99.0)),
        };
        if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.5, lo + 0.5)
        }
    }

    fn layout(&self) -> (usize, usize, u32, u32) {
        let n = self.maps.len().max(1);
        let cols = ((n as f64).sqrt().ceil() as usize).clamp(1, MAX_COLS);
        let rows = n.div_ceil(cols);
        let w = cols as u32 * (CELL + GAP) + GAP + BAR;
        let h = TOP + rows as u32 * (CELL + GAP + 20) + GAP;
        // Room below the colour bar for its label and the legend of out-of-range pixels.
        let h = h.max(TOP + 2 * CELL + GAP + 130);
        (cols, rows, w, h)
    }

    /// RGB pixels of one map scaled into a CELL×CELL tile (nearest neighbour); `mark`: colour
    /// pixels outside `lim` magenta or cyan instead of the scale's ends.
    fn tile(&self, map: &Array2<f32>, lim: (f64, f64), mark: bool) -> Vec<u8> {
        let (h, w) = map.dim();
        let mut buf = Vec::with_capacity((CELL * CELL * 3) as usize);
        for y in 0..CELL {
            // Row 0 at the bottom.
            let r = h - 1 - ((y as usize * h) / CELL as usize).min(h - 1);
            for x in 0..CELL {
                let c = ((x as usize * w) / CELL as usize).min(w - 1);
                let v = map[[r, c]];
                let rgb = if v.is_finite() && self.value(v).is_finite() {
                    let t = (self.value(v) - lim.0) / (lim.1 - lim.0);
                    if mark && t > 1.0 {
                        ABOVE
                    } else if mark && t < 0.0 {
                        BELOW
                    } else {
                        ViridisRGB.get_color(t.clamp(0.0, 1.0) as f32)
                    }
                } else {
                    BLANK
                };
                buf.extend_from_slice(&[rgb.0, rgb.1, rgb.2]);
            }
        }
        buf
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> std::result::Result<(), String> {
        let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
        root.fill(&WHITE).map_err(e)?;
        let (cols, _rows, w, _h) = self.layout();
        let lim = self.limits();
        root.draw(&Text::new(self.title.clone(), (GAP as i32, 12), ("sans-serif", 22).into_font())).map_err(e)?;
        for (i, map) in self.maps.iter().enumerate() {
            let (col, row) = ((i % cols) as u32, (i / cols) as u32);
            let x = (GAP + col * (CELL + GAP)) as i32;
            let y = (TOP + row * (CELL + GAP + 20)) as i32;
            let mark = self.reference.is_some_and(|r| i >= r);
            let img = BitMapElement::with_owned_buffer((x, y), (CELL, CELL), self.tile(map, lim, mark))
                .ok_or("bitmap size mismatch")?;
            root.draw(&img).map_err(e)?;
            if let Some(label) = self.labels.get(i) {
                root.draw(&Text::new(label.clone(), (x, y + CELL as i32 + 2), ("sans-serif", 14).into_font()))
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
        // Round ticks: decades (or 1-2-5 multiples) on a log scale, 1-2-5 steps on a linear one.
        let ticks: Vec<(f64, String)> = if let Some(t) = &self.transform {
            // Round physical values (decades or 1-2-5 steps), placed where the transform puts them.
            let (a, b) = (t.inverse(lim.0), t.inverse(lim.1));
            let (values, step) = if a > 0.0 && b / a > 3.0 { (log_ticks(a, b), 0.0) } else { linear_ticks(a, b, 5) };
            values.into_iter().map(|v| (t.forward(v), tick_label(v, if step > 0.0 { step } else { v }))).collect()
        } else if self.log {
            log_ticks(10f64.powf(lim.0), 10f64.powf(lim.1)).into_iter().map(|v| (v.log10(), tick_label(v, v))).collect()
        } else {
            let (values, step) = linear_ticks(lim.0, lim.1, 5);
            values.into_iter().map(|v| (v, tick_label(v, step))).collect()
        };
        for (v, text) in ticks {
            let f = (v - lim.0) / (lim.1 - lim.0);
            let yy = by + bh - (f * bh as f64).round() as i32;
            root.draw(&PathElement::new(vec![(bx + 18, yy), (bx + 23, yy)], BLACK)).map_err(e)?;
            root.draw(&Text::new(text, (bx + 26, yy - 7), ("sans-serif", 14).into_font())).map_err(e)?;
        }
        let units = self.units.clone().unwrap_or_else(|| "value".into());
        let scale = match &self.transform {
            Some(crate::prep::Transform::Log10 { .. }) => "log10 scale",
            Some(crate::prep::Transform::Asinh { .. }) => "asinh scale",
            Some(crate::prep::Transform::Linear { .. }) => "linear scale",
            None if self.log => "log scale",
            None => "linear scale",
        };
        let scale = if self.transform.is_some() { format!("({scale}, as normalized)") } else { format!("({scale})") };
        root.draw(&Text::new(units, (bx - 4, by + bh + 8), ("sans-serif", 14).into_font())).map_err(e)?;
        root.draw(&Text::new(scale, (bx - 4, by + bh + 26), ("sans-serif", 13).into_font())).map_err(e)?;
        let mut legend: Vec<(RGBColor, &str)> = match self.reference {
            Some(_) => vec![(ABOVE, "above the real range"), (BELOW, "below the real range")],
            None => vec![],
        };
        if self.maps.iter().any(|m| m.iter().any(|v| !v.is_finite())) {
            legend.push((BLANK, "blank (NaN)"));
        }
        for (k, (colour, text)) in legend.into_iter().enumerate() {
            let yy = by + bh + 52 + 20 * k as i32;
            root.draw(&Rectangle::new([(bx - 4, yy), (bx + 6, yy + 10)], colour.filled())).map_err(e)?;
            root.draw(&Text::new(text, (bx + 10, yy - 2), ("sans-serif", 13).into_font())).map_err(e)?;
        }
        root.present().map_err(e)
    }

    /// Writes `<stem>.png` and `<stem>.svg` atomically.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        if self.maps.is_empty() {
            return Err(Error::Invalid("no maps to plot".into()));
        }
        let (_, _, w, h) = self.layout();
        save_figure(stem, (w, h), |root| self.draw(root))
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
        // ≥ 300 dpi at a journal's single-column width (3.5 in).
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        assert!(width >= 1050, "PNG {width} px wide");
        // Round colour-bar ticks: the maps span 1e19 … 10^22.4, so decades.
        for t in ["10²⁰", "10²¹", "10²²"] {
            assert!(svg.contains(&format!("\n{t}\n")), "tick {t} missing");
        }
    }

    #[test]
    fn only_synthetic_pixels_outside_the_real_range_are_marked_and_blanks_are_in_the_legend() {
        let dir = tempfile::tempdir().unwrap();
        let real = Array2::from_shape_fn((8, 8), |(i, j)| (i * 8 + j) as f32);
        let mut synthetic = real.mapv(|v| v * 2.0 - 20.0);
        synthetic[[0, 0]] = f32::NAN;
        let colours = |tile: &[u8]| -> Vec<RGBColor> { tile.chunks(3).map(|c| RGBColor(c[0], c[1], c[2])).collect() };
        // A preview (no reference): the scale saturates, nothing is marked.
        let preview = MapGrid::new("preview", vec![real.clone(), synthetic.clone()], vec![], None);
        let lim = preview.limits();
        let tile = colours(&preview.tile(&synthetic, lim, false));
        assert!(!tile.contains(&ABOVE) && !tile.contains(&BELOW) && tile.contains(&BLANK));
        // A validation grid: the synthetic map's pixels beyond the real range are marked.
        let grid = MapGrid::with_reference("v", vec![real, synthetic.clone()], vec!["r".into(), "s".into()], None, 1);
        let tile = colours(&grid.tile(&synthetic, grid.limits(), true));
        assert!(tile.contains(&ABOVE) && tile.contains(&BELOW));
        assert!(grid.labels[1].contains("% out"), "{:?}", grid.labels);
        let svg = std::fs::read_to_string(&grid.save(&dir.path().join("v")).unwrap()[1]).unwrap();
        assert!(svg.contains("blank (NaN)") && svg.contains("above the real range"), "legend");
        let svg = std::fs::read_to_string(&preview.save(&dir.path().join("p")).unwrap()[1]).unwrap();
        assert!(svg.contains("blank (NaN)") && !svg.contains("above the real range"), "legend");
    }

    #[test]
    fn maps_in_a_domain_transform_say_so_on_the_colour_bar() {
        let dir = tempfile::tempdir().unwrap();
        let map = Array2::from_shape_fn((8, 8), |(i, j)| (i * 8 + j) as f32 - 10.0);
        let t = crate::prep::Transform::Asinh { softening: 2.0, lo: (-10f64 / 2.0).asinh(), hi: (53f64 / 2.0).asinh() };
        let grid = MapGrid::new("asinh", vec![map], vec![], Some("DN".into())).in_transform(t);
        let svg = std::fs::read_to_string(&grid.save(&dir.path().join("a")).unwrap()[1]).unwrap();
        assert!(svg.contains("asinh scale, as normalized") && svg.contains("\nDN\n"), "colour bar label");
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(linear_ticks(0.13, 0.97, 5), (vec![0.2, 0.4, 0.6000000000000001, 0.8], 0.2));
        let (t, step) = linear_ticks(-3.0, 3.0, 6);
        assert_eq!((t.first().copied(), t.last().copied(), step), (Some(-3.0), Some(3.0), 1.0));
        assert_eq!(log_ticks(0.03, 0.55), vec![0.05, 0.1, 0.2, 0.5]);
        assert_eq!(log_ticks(2.9e19, 1.18e22), vec![1e20, 1e21, 1e22]);
        assert_eq!(log_ticks(1e-20, 1e20), [-20, -14, -8, -2, 4, 10, 16].map(|d| 10f64.powi(d)));
        let labels: Vec<String> = [0.05, 0.1, 0.2, 0.5, 2e21, 1e43, 1.5e-5].iter().map(|&v| tick_label(v, v)).collect();
        assert_eq!(labels, ["0.05", "0.1", "0.2", "0.5", "2×10²¹", "10⁴³", "2×10⁻⁵"]);
        assert_eq!(tick_label(0.6000000000000001, 0.2), "0.6");
        assert_eq!(tick_label(1.5e-5, 1e-6), "1.5×10⁻⁵");
        assert_eq!(tick_label(2.5e21, 5e20), "2.5×10²¹");
        assert_eq!(tick_label(-1e21, 1e21), "-10²¹");
    }

    #[test]
    fn squared_units_read_as_units() {
        assert_eq!(squared_units("cm-2"), "cm⁻⁴");
        assert_eq!(squared_units("K"), "K²");
        assert_eq!(squared_units("m2"), "m⁴");
        assert_eq!(squared_units("MJy/sr"), "(MJy/sr)²");
    }
}

/// Series colours (colour-blind-safe Okabe–Ito).
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
];

/// One panel of overlaid histograms (counts normalized to densities) on common bins.
#[derive(Debug, Clone)]
pub struct HistogramPanel {
    pub title: String,
    pub x_label: String,
    pub series: Vec<(String, Vec<f64>)>,
}

/// One QQ panel: (theoretical, sample) quantile pairs per series, with the identity line.
#[derive(Debug, Clone)]
pub struct QqPanel {
    pub title: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// A figure of panels laid out in a grid.
#[derive(Debug, Clone)]
pub enum Panel {
    Histogram(HistogramPanel),
    Qq(QqPanel),
}

/// A figure of several panels (e.g. the latent diagnostics of `expanse fit`).
#[derive(Debug, Clone)]
pub struct PanelFigure {
    pub title: String,
    pub panels: Vec<Panel>,
    pub columns: usize,
}

type DrawResult = std::result::Result<(), String>;

/// A tick label with as many decimals as an axis spanning `span` needs.
fn tick(v: f64, span: f64) -> String {
    let step = if span > 0.0 { linear_ticks(0.0, span, 5).1 } else { v.abs() };
    tick_label(v, step)
}

/// About `n` round tick values in [lo, hi]: the multiples of the 1-2-5 step that gives closest to
/// `n`; returns them and the step.
fn linear_ticks(lo: f64, hi: f64, n: usize) -> (Vec<f64>, f64) {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return (vec![lo], 1.0);
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let count = |step: f64| ((hi - lo) / step - n as f64).abs();
    let step =
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).min_by(|a, b| count(*a).total_cmp(&count(*b))).unwrap_or(mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    ((first..=last).map(|k| k as f64 * step).collect(), step)
}

/// Round tick values on a log axis over [lo, hi] (lo > 0): the decades when three or more fit
/// (every n-th when more than eight would), else 1, 2 and 5 times each decade, else (a range narrower
/// than that) linear 1-2-5 ticks.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo) {
        return vec![];
    }
    let (d0, d1) = (lo.log10().ceil() as i32, hi.log10().floor() as i32);
    let decades: Vec<i32> = (d0..=d1).collect();
    if decades.len() >= 3 {
        let every = decades.len().div_ceil(8) as i32;
        return decades.iter().filter(|d| (*d - d0) % every == 0).map(|&d| 10f64.powi(d)).collect();
    }
    let multiples: Vec<f64> = (d0 - 1..=d1)
        .flat_map(|d| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(d)))
        .filter(|v| *v >= lo * 0.999_999 && *v <= hi * 1.000_001)
        .collect();
    if multiples.len() >= 3 {
        return multiples;
    }
    linear_ticks(lo, hi, 4).0
}

/// `v` (a multiple of `step`) with the digits the step shows: 0.25, 300, 2e21, 1.5e-5.
fn tick_label(v: f64, step: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let step = if step > 0.0 { step } else { v.abs() };
    let (e_v, e_s) = (v.abs().log10().floor(), step.log10().floor());
    if (1e-3..1e5).contains(&v.abs()) {
        let decimals = (-e_s).clamp(0.0, 6.0) as usize;
        return format!("{v:.decimals$}");
    }
    let digits = (e_v - e_s).clamp(0.0, 4.0) as usize;
    let mantissa = v / 10f64.powf(e_v);
    let text = format!("{mantissa:.digits$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
    let power = format!("10{}", superscript(e_v as i64));
    match text.as_str() {
        "1" => power,
        "-1" => format!("-{power}"),
        _ => format!("{text}×{power}"),
    }
}

/// `n` in superscript digits: ⁻¹², ²¹.
fn superscript(n: i64) -> String {
    let digits = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let mut s: String = n.unsigned_abs().to_string().chars().map(|c| digits[c as usize - '0' as usize]).collect();
    if n < 0 {
        s.insert(0, '⁻');
    }
    s
}

/// The square of units as written in FITS (`cm-2` → `cm⁻⁴`, `K` → `K²`); `(u)²` for anything
/// else (`MJy/sr` → `(MJy/sr)²`).
pub fn squared_units(u: &str) -> String {
    let u = u.trim();
    let split = u.find(|c: char| c == '-' || c == '+' || c.is_ascii_digit()).unwrap_or(u.len());
    let (base, power) = u.split_at(split);
    let exponent = if power.is_empty() { Some(1) } else { power.parse::<i64>().ok() };
    match exponent {
        Some(p) if !base.is_empty() && base.chars().all(|c| c.is_ascii_alphabetic()) => {
            format!("{base}{}", superscript(2 * p))
        }
        _ => format!("({u})²"),
    }
}

fn draw_histogram<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    p: &HistogramPanel,
    caption: bool,
) -> DrawResult {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    let all: Vec<f64> = p.series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite()).collect();
    if all.is_empty() {
        return Ok(());
    }
    let (mut lo, mut hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if hi <= lo {
        lo -= 0.5;
        hi += 0.5;
    }
    let bins = 30usize;
    let width = (hi - lo) / bins as f64;
    let densities: Vec<Vec<f64>> = p
        .series
        .iter()
        .map(|(_, v)| {
            let mut c = vec![0f64; bins];
            for &x in v.iter().filter(|x| x.is_finite()) {
                c[(((x - lo) / width) as usize).min(bins - 1)] += 1.0;
            }
            let n = v.len().max(1) as f64;
            c.into_iter().map(|k| k / (n * width)).collect()
        })
        .collect();
    // Headroom above the tallest bin for the legend, so that it covers no data.
    let ymax = densities.iter().flatten().cloned().fold(0.0, f64::max) * 1.45;
    // The legend goes in the upper corner over the lower side of the histograms.
    let side_max = |range: std::ops::Range<usize>| {
        densities.iter().flat_map(|d| d[range.clone()].iter()).cloned().fold(0.0, f64::max)
    };
    let legend_at = if side_max(0..bins * 2 / 5) < side_max(bins * 3 / 5..bins) {
        SeriesLabelPosition::UpperLeft
    } else {
        SeriesLabelPosition::UpperRight
    };
    let mut builder = ChartBuilder::on(area);
    if caption {
        builder.caption(&p.title, ("sans-serif", 18));
    }
    let mut chart = builder
        .margin(8)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(lo..hi, 0.0..ymax.max(f64::MIN_POSITIVE))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(p.x_label.as_str())
        .y_desc("density")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(BLACK.mix(0.05))
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|v| tick(*v, hi - lo))
        .y_label_formatter(&|v| tick(*v, ymax))
        .draw()
        .map_err(e)?;
    for (k, ((name, _), dens)) in p.series.iter().zip(&densities).enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let mut pts = Vec::with_capacity(2 * bins + 2);
        pts.push((lo, 0.0));
        for (b, &d) in dens.iter().enumerate() {
            pts.push((lo + b as f64 * width, d));
            pts.push((lo + (b + 1) as f64 * width, d));
        }
        pts.push((hi, 0.0));
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(e)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(e)
}

fn draw_qq<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    p: &QqPanel,
    caption: bool,
) -> DrawResult {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    let all: Vec<f64> = p.series.iter().flat_map(|(_, v)| v.iter().flat_map(|&(a, b)| [a, b])).collect();
    let lim = all.iter().fold(1.0f64, |m, v| m.max(v.abs())) * 1.05;
    let mut builder = ChartBuilder::on(area);
    if caption {
        builder.caption(&p.title, ("sans-serif", 18));
    }
    let mut chart = builder
        .margin(8)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(-lim..lim, -lim..lim)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("N(0, 1) quantile")
        .y_desc("standardized latent quantile")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(e)?;
    chart.draw_series(LineSeries::new(vec![(-lim, -lim), (lim, lim)], BLACK.mix(0.5))).map_err(e)?;
    for (k, (name, pts)) in p.series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        chart
            .draw_series(pts.iter().map(|&(a, b)| Circle::new((a, b), 2, color.filled())))
            .map_err(e)?
            .label(name.as_str())
            .legend(move |(x, y)| Circle::new((x + 8, y), 3, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(e)
}

impl PanelFigure {
    fn size(&self) -> (u32, u32) {
        let cols = self.columns.max(1);
        let rows = self.panels.len().div_ceil(cols);
        ((cols as u32 * 360).max(560), rows as u32 * 290 + 40)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, plotters::coord::Shift>) -> DrawResult {
        let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
        root.fill(&WHITE).map_err(e)?;
        let body = root.titled(&self.title, ("sans-serif", 19)).map_err(e)?;
        let cols = self.columns.max(1);
        let rows = self.panels.len().div_ceil(cols);
        let areas = body.split_evenly((rows, cols));
        // One panel: the figure's title is its only title.
        let caption = self.panels.len() > 1;
        for (panel, area) in self.panels.iter().zip(areas.iter()) {
            match panel {
                Panel::Histogram(h) => draw_histogram(area, h, caption)?,
                Panel::Qq(q) => draw_qq(area, q, caption)?,
            }
        }
        root.present().map_err(e)
    }

    /// Writes `<stem>.png` and `<stem>.svg` atomically.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        save_figure(stem, self.size(), |root| self.draw(root))
    }
}

/// A power-spectrum curve: (label, frequencies, mean log10 P, std of log10 P, slope, slope error).
pub type SpectrumSeries = (String, Vec<f64>, Vec<f64>, Vec<f64>, f64, f64);

/// Real vs synthetic ensemble power spectra: mean ± 1σ of log10 P, fitted slopes in the legend,
/// and the synthetic/real ratio below.
#[derive(Debug, Clone)]
pub struct SpectrumComparison {
    pub title: String,
    /// One per ensemble.
    pub series: Vec<SpectrumSeries>,
    pub units: Option<String>,
}

impl SpectrumComparison {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, plotters::coord::Shift>) -> DrawResult {
        let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
        root.fill(&WHITE).map_err(e)?;
        let (top, bottom) = root.split_vertically(300);
        let finite = |v: &f64| v.is_finite();
        let fs: Vec<f64> = self.series.iter().flat_map(|s| s.1.iter().copied()).filter(|f| *f > 0.0).collect();
        let (f0, f1) = fs.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &f| (a.min(f), b.max(f)));
        let ys: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.2.iter().zip(&s.3).flat_map(|(m, d)| [m - d, m + d]))
            .filter(finite)
            .collect();
        let (y0, y1) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| (a.min(y), b.max(y)));
        let unit = self.units.as_deref().map(|u| format!(" [{} pix²]", squared_units(u))).unwrap_or_default();
        let mut chart = ChartBuilder::on(&top)
            .caption(&self.title, ("sans-serif", 22))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (f0 * 0.9..f1 * 1.1).log_scale().with_key_points(log_ticks(f0 * 0.9, f1 * 1.1)),
                (10f64.powf(y0 - 0.1)..10f64.powf(y1 + 0.1))
                    .log_scale()
                    .with_key_points(log_ticks(10f64.powf(y0 - 0.1), 10f64.powf(y1 + 0.1))),
            )
            .map_err(e)?;
        chart
            .configure_mesh()
            .y_desc(format!("P(k){unit}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(BLACK.mix(0.05))
            .x_label_formatter(&|v| tick_label(*v, *v))
            .y_label_formatter(&|v| tick_label(*v, *v))
            .draw()
            .map_err(e)?;
        for (k, (label, f, m, d, slope, err)) in self.series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let upper: Vec<(f64, f64)> = f
                .iter()
                .zip(m.iter().zip(d))
                .filter(|(_, (m, _))| m.is_finite())
                .map(|(f, (m, d))| (*f, 10f64.powf(m + d)))
                .collect();
            let lower: Vec<(f64, f64)> = f
                .iter()
                .zip(m.iter().zip(d))
                .filter(|(_, (m, _))| m.is_finite())
                .map(|(f, (m, d))| (*f, 10f64.powf(m - d)))
                .collect();
            let mut poly = upper.clone();
            poly.extend(lower.iter().rev());
            chart.draw_series(std::iter::once(Polygon::new(poly, color.mix(0.2)))).map_err(e)?;
            let line: Vec<(f64, f64)> =
                f.iter().zip(m).filter(|(_, m)| m.is_finite()).map(|(f, m)| (*f, 10f64.powf(*m))).collect();
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(e)?
                .label(format!("{label}: slope {slope:.2} ± {err:.2}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            // Spectra fall with k: the lower left is empty.
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(e)?;
        if self.series.len() >= 2 {
            let (a, b) = (&self.series[0], &self.series[1]);
            let ratio: Vec<(f64, f64)> =
                a.1.iter()
                    .zip(a.2.iter().zip(&b.2))
                    .filter(|(_, (x, y))| x.is_finite() && y.is_finite())
                    .map(|(f, (x, y))| (*f, 10f64.powf(y - x)))
                    .collect();
            let (r0, r1) = ratio.iter().fold((1.0f64, 1.0f64), |(lo, hi), &(_, r)| (lo.min(r), hi.max(r)));
            let mut rc = ChartBuilder::on(&bottom)
                .margin(10)
                .x_label_area_size(44)
                .y_label_area_size(70)
                .build_cartesian_2d(
                    (f0 * 0.9..f1 * 1.1).log_scale().with_key_points(log_ticks(f0 * 0.9, f1 * 1.1)),
                    (r0 - 0.1 * (r1 - r0) - 0.01)..(r1 + 0.1 * (r1 - r0) + 0.01),
                )
                .map_err(e)?;
            let ratio_step = linear_ticks(r0, r1, 4).1;
            rc.configure_mesh()
                .x_desc("k [pixel⁻¹]")
                .y_desc(format!("{} / {}", b.0, a.0))
                .label_style(("sans-serif", 15))
                .axis_desc_style(("sans-serif", 15))
                .light_line_style(BLACK.mix(0.05))
                .x_label_formatter(&|v| tick_label(*v, *v))
                .y_label_formatter(&|v| tick_label(*v, ratio_step))
                .draw()
                .map_err(e)?;
            rc.draw_series(LineSeries::new(vec![(f0 * 0.9, 1.0), (f1 * 1.1, 1.0)], BLACK.mix(0.5))).map_err(e)?;
            rc.draw_series(LineSeries::new(ratio, PALETTE[1].stroke_width(2))).map_err(e)?;
        }
        root.present().map_err(e)
    }

    /// Writes `<stem>.png` and `<stem>.svg` atomically.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        save_figure(stem, (600, 470), |root| self.draw(root))
    }
}

/// Curves of the validation battery: per curve, both sets' means with their bootstrap bands and,
/// below, the residual (synthetic − real) in units of the real maps' per-map scatter with its band
/// and lines at 0 and ±1.
#[derive(Debug, Clone)]
pub struct BatteryFigure {
    pub title: String,
    /// (panel title, curve).
    pub panels: Vec<(String, crate::stats::battery::CurveComparison)>,
    pub columns: usize,
}

/// Finite (x, y) points of a band's edge.
fn band_points(x: &[f64], y: &[f64]) -> Vec<(f64, f64)> {
    x.iter().zip(y).filter(|(a, b)| a.is_finite() && b.is_finite()).map(|(a, b)| (*a, *b)).collect()
}

fn band_polygon(x: &[f64], b: &crate::stats::battery::Band) -> Vec<(f64, f64)> {
    let mut poly = band_points(x, &b.hi);
    poly.extend(band_points(x, &b.lo).into_iter().rev());
    poly
}

fn padded_range(values: impl Iterator<Item = f64>, at_least: Option<(f64, f64)>) -> (f64, f64) {
    let (mut lo, mut hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if let Some((a, b)) = at_least {
        lo = lo.min(a);
        hi = hi.max(b);
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return (-1.0, 1.0);
    }
    if hi <= lo {
        let d = lo.abs().max(1e-12) * 0.1;
        return (lo - d, hi + d);
    }
    let pad = 0.06 * (hi - lo);
    (lo - pad, hi + pad)
}

/// A chart builder for one half of a battery panel.
fn battery_chart<'a, 'b, DB: DrawingBackend>(
    a: &'a DrawingArea<DB, plotters::coord::Shift>,
    caption: Option<&'b str>,
    x_area: u32,
) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(a);
    if let Some(t) = caption {
        b.caption(t, ("sans-serif", 15));
    }
    b.margin(6).x_label_area_size(x_area).y_label_area_size(62);
    b
}

fn draw_battery_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    c: &crate::stats::battery::CurveComparison,
) -> DrawResult {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    let (top, bottom) = area.split_vertically((area.dim_in_pixel().1 as f64 * 0.68) as u32);
    let x = &c.axes.x;
    let (x0, x1) = if c.axes.x_log {
        let pos: Vec<f64> = x.iter().copied().filter(|v| *v > 0.0).collect();
        let (a, b) = pos.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
        (a / 1.15, b * 1.15)
    } else {
        let (a, b) = padded_range(x.iter().copied(), None);
        (a, b)
    };
    let (y0, y1) = padded_range(
        c.real
            .lo
            .iter()
            .chain(&c.real.hi)
            .chain(&c.synthetic.lo)
            .chain(&c.synthetic.hi)
            .chain(&c.real.mean)
            .chain(&c.synthetic.mean)
            .copied(),
        None,
    );
    let (r0, r1) = padded_range(c.residual.lo.iter().chain(&c.residual.hi).copied(), Some((-2.0, 2.0)));
    let names = c.axes.x_names.clone();
    let x_log = c.axes.x_log;
    // Named entries (scattering coefficients): every k-th name, so that at most about one name
    // per 70 pixels of the panel's width is written and none run together.
    let room = ((area.dim_in_pixel().0 as usize).saturating_sub(80) / 70).max(2);
    let every = names.as_ref().map_or(1, |n| n.len().div_ceil(room).max(1));
    let x_fmt = move |v: &f64| -> String {
        match &names {
            Some(n) => {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n.len() && (i as usize).is_multiple_of(every) {
                    n[i as usize].clone()
                } else {
                    String::new()
                }
            }
            None if x_log => tick_label(*v, *v),
            None => tick_label(*v, linear_ticks(x0, x1, 5).1),
        }
    };
    let n_ticks = c.axes.x_names.as_ref().map_or(6, |n| n.len());
    let y_step = linear_ticks(y0, y1, 5).1;
    let r_step = linear_ticks(r0, r1, 4).1;
    macro_rules! body {
        ($chart:expr, $rc:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .y_desc(c.axes.y_label.as_str())
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 14))
                .light_line_style(BLACK.mix(0.05))
                .x_labels(n_ticks)
                .y_labels(5)
                .x_label_formatter(&|_| String::new())
                .y_label_formatter(&|v| tick_label(*v, y_step))
                .draw()
                .map_err(e)?;
            for (k, b) in [&c.real, &c.synthetic].into_iter().enumerate() {
                let color = PALETTE[k];
                chart.draw_series(std::iter::once(Polygon::new(band_polygon(x, b), color.mix(0.25)))).map_err(e)?;
                chart.draw_series(LineSeries::new(band_points(x, &b.mean), color.stroke_width(2))).map_err(e)?;
            }
            let mut rc = $rc;
            rc.configure_mesh()
                .x_desc(c.axes.x_label.as_str())
                .y_desc("Δ / σ_real")
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 14))
                .light_line_style(BLACK.mix(0.05))
                .x_labels(n_ticks)
                .y_labels(4)
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&|v| tick_label(*v, r_step))
                .draw()
                .map_err(e)?;
            for level in [-1.0, 0.0, 1.0] {
                let style = if level == 0.0 { BLACK.mix(0.6).stroke_width(1) } else { BLACK.mix(0.3).stroke_width(1) };
                rc.draw_series(LineSeries::new(vec![(x0, level), (x1, level)], style)).map_err(e)?;
            }
            rc.draw_series(std::iter::once(Polygon::new(band_polygon(x, &c.residual), PALETTE[1].mix(0.25))))
                .map_err(e)?;
            rc.draw_series(LineSeries::new(band_points(x, &c.residual.mean), PALETTE[1].stroke_width(2))).map_err(e)?;
        }};
    }
    if c.axes.x_log {
        let kp = log_ticks(x0, x1);
        let chart = battery_chart(&top, Some(title), 6)
            .build_cartesian_2d((x0..x1).log_scale().with_key_points(kp.clone()), y0..y1)
            .map_err(e)?;
        let rc = battery_chart(&bottom, None, 40)
            .build_cartesian_2d((x0..x1).log_scale().with_key_points(kp), r0..r1)
            .map_err(e)?;
        body!(chart, rc);
    } else {
        let chart = battery_chart(&top, Some(title), 6).build_cartesian_2d(x0..x1, y0..y1).map_err(e)?;
        let rc = battery_chart(&bottom, None, 40).build_cartesian_2d(x0..x1, r0..r1).map_err(e)?;
        body!(chart, rc);
    }
    Ok(())
}

impl BatteryFigure {
    fn size(&self) -> (u32, u32) {
        let cols = self.columns.max(1).min(self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(cols);
        ((cols as u32 * 380).max(560), rows as u32 * 330 + 58)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, plotters::coord::Shift>) -> DrawResult {
        let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
        root.fill(&WHITE).map_err(e)?;
        let body = root.titled(&self.title, ("sans-serif", 17)).map_err(e)?;
        let (legend, body) = body.split_vertically(22);
        // One legend for every panel, above them, where it covers no data.
        let (w, _) = legend.dim_in_pixel();
        let mut x = w as i32 / 2 - 200;
        for (k, text) in ["real: mean and 68 % band", "synthetic: mean and 68 % band"].into_iter().enumerate() {
            let color = PALETTE[k];
            legend.draw(&PathElement::new(vec![(x, 9), (x + 22, 9)], color.stroke_width(3))).map_err(e)?;
            legend.draw(&Text::new(text, (x + 28, 1), ("sans-serif", 14).into_font())).map_err(e)?;
            x += 220;
        }
        let cols = self.columns.max(1).min(self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(cols);
        let areas = body.split_evenly((rows, cols));
        for ((title, curve), area) in self.panels.iter().zip(areas.iter()) {
            draw_battery_panel(area, title, curve)?;
        }
        root.present().map_err(e)
    }

    /// Writes `<stem>.png` and `<stem>.svg` atomically.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        save_figure(stem, self.size(), |root| self.draw(root))
    }
}
