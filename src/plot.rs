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

/// `stem` + `suffix` (the stem may itself contain dots, e.g. `prior.diagnostics`).
fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
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
    /// When set, the colour scale spans the full range of the first this many maps (the real
    /// ones) and pixels of any map outside that range are marked, magenta above and cyan below,
    /// rather than clipped to the ends of the scale.
    pub reference: Option<usize>,
}

/// Colour of pixels above / below a reference range.
const ABOVE: RGBColor = RGBColor(255, 0, 255);
const BELOW: RGBColor = RGBColor(0, 255, 255);

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
        MapGrid { title: title.to_string(), maps, labels, units, log, reference: None }
    }

    /// A grid whose colour scale is the full range of its first `reference` maps, with pixels
    /// outside it marked (see [`MapGrid::reference`]); each other map's label gives the
    /// percentage of its pixels outside.
    pub fn with_reference(title: &str, maps: Vec<Array2<f32>>, labels: Vec<String>, units: Option<String>, reference: usize) -> Self {
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
        if self.log { (v as f64).log10() } else { v as f64 }
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
        if hi > lo { (lo, hi) } else { (lo - 0.5, lo + 0.5) }
    }

    fn layout(&self) -> (usize, usize, u32, u32) {
        let n = self.maps.len().max(1);
        let cols = ((n as f64).sqrt().ceil() as usize).clamp(1, MAX_COLS);
        let rows = n.div_ceil(cols);
        let w = cols as u32 * (CELL + GAP) + GAP + BAR;
        let h = TOP + rows as u32 * (CELL + GAP + 16) + GAP;
        // Room below the colour bar for its label and, with a reference range, the legend.
        let h = h.max(TOP + 2 * CELL + GAP + if self.reference.is_some() { 72 } else { 28 });
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
                    let t = (self.value(v) - lim.0) / (lim.1 - lim.0);
                    match self.reference {
                        Some(_) if t > 1.0 => ABOVE,
                        Some(_) if t < 0.0 => BELOW,
                        _ => ViridisRGB.get_color(t.clamp(0.0, 1.0) as f32),
                    }
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
        if self.reference.is_some() {
            for (k, (colour, text)) in [(ABOVE, "above the real range"), (BELOW, "below the real range")].into_iter().enumerate() {
                let yy = by + bh + 28 + 16 * k as i32;
                root.draw(&Rectangle::new([(bx - 4, yy), (bx + 6, yy + 10)], colour.filled())).map_err(e)?;
                root.draw(&Text::new(text, (bx + 10, yy - 1), ("sans-serif", 10).into_font())).map_err(e)?;
            }
        }
        root.present().map_err(e)
    }

    /// Writes `<stem>.png` and `<stem>.svg` atomically.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        register_font();
        if self.maps.is_empty() {
            return Err(Error::Invalid("no maps to plot".into()));
        }
        let (png, svg) = (with_suffix(stem, ".png"), with_suffix(stem, ".svg"));
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
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() >= 1e5 || v.abs() < 1e-3 || !(span > 0.0) {
        return format!("{v:.2e}");
    }
    let decimals = (1.0 - (span / 5.0).log10().floor()).clamp(0.0, 4.0) as usize;
    format!("{v:.decimals$}")
}

fn draw_histogram<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, p: &HistogramPanel) -> DrawResult {
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
    let ymax = densities.iter().flatten().cloned().fold(0.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(lo..hi, 0.0..ymax.max(f64::MIN_POSITIVE))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(p.x_label.as_str())
        .y_desc("density")
        .label_style(("sans-serif", 11))
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
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()
        .map_err(e)
}

fn draw_qq<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, p: &QqPanel) -> DrawResult {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    let all: Vec<f64> = p.series.iter().flat_map(|(_, v)| v.iter().flat_map(|&(a, b)| [a, b])).collect();
    let lim = all.iter().fold(1.0f64, |m, v| m.max(v.abs())) * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(-lim..lim, -lim..lim)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("N(0, 1) quantile")
        .y_desc("standardized latent quantile")
        .label_style(("sans-serif", 11))
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
        .label_font(("sans-serif", 11))
        .draw()
        .map_err(e)
}

impl PanelFigure {
    fn size(&self) -> (u32, u32) {
        let cols = self.columns.max(1);
        let rows = self.panels.len().div_ceil(cols);
        ((cols as u32 * 420).max(640), rows as u32 * 320 + 40)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, plotters::coord::Shift>) -> DrawResult {
        let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
        root.fill(&WHITE).map_err(e)?;
        let body = root.titled(&self.title, ("sans-serif", 20)).map_err(e)?;
        let cols = self.columns.max(1);
        let rows = self.panels.len().div_ceil(cols);
        let areas = body.split_evenly((rows, cols));
        for (panel, area) in self.panels.iter().zip(areas.iter()) {
            match panel {
                Panel::Histogram(h) => draw_histogram(area, h)?,
                Panel::Qq(q) => draw_qq(area, q)?,
            }
        }
        root.present().map_err(e)
    }

    /// Writes `<stem>.png` and `<stem>.svg` atomically.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        register_font();
        let (png, svg) = (with_suffix(stem, ".png"), with_suffix(stem, ".svg"));
        let files = AtomicFiles::new(&[png.clone(), svg.clone()])?;
        let size = self.size();
        {
            let tmp = files.temp(0);
            let root = BitMapBackend::new(&tmp, size).into_drawing_area();
            self.draw(&root).map_err(|e| Error::write(&png, e))?;
        }
        {
            let tmp = files.temp(1);
            let root = SVGBackend::new(&tmp, size).into_drawing_area();
            self.draw(&root).map_err(|e| Error::write(&svg, e))?;
        }
        files.commit()
    }
}

/// Real vs synthetic ensemble power spectra: mean ± 1σ of log10 P, fitted slopes in the legend,
/// and the synthetic/real ratio below.
#[derive(Debug, Clone)]
pub struct SpectrumComparison {
    pub title: String,
    /// (label, frequencies, mean log10 P, std of log10 P, slope, slope error) per ensemble.
    pub series: Vec<(String, Vec<f64>, Vec<f64>, Vec<f64>, f64, f64)>,
    pub units: Option<String>,
}

impl SpectrumComparison {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, plotters::coord::Shift>) -> DrawResult {
        let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
        root.fill(&WHITE).map_err(e)?;
        let (top, bottom) = root.split_vertically(360);
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
        let unit = self.units.clone().map(|u| format!(" [({u})² pix²]")).unwrap_or_default();
        let mut chart = ChartBuilder::on(&top)
            .caption(&self.title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d((f0 * 0.9..f1 * 1.1).log_scale(), (10f64.powf(y0 - 0.1)..10f64.powf(y1 + 0.1)).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .y_desc(format!("P(k){unit}"))
            .label_style(("sans-serif", 11))
            .x_label_formatter(&|v| format!("{v:.2}"))
            .y_label_formatter(&|v| format!("{v:.1e}"))
            .draw()
            .map_err(e)?;
        for (k, (label, f, m, d, slope, err)) in self.series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let upper: Vec<(f64, f64)> = f.iter().zip(m.iter().zip(d)).filter(|(_, (m, _))| m.is_finite()).map(|(f, (m, d))| (*f, 10f64.powf(m + d))).collect();
            let lower: Vec<(f64, f64)> = f.iter().zip(m.iter().zip(d)).filter(|(_, (m, _))| m.is_finite()).map(|(f, (m, d))| (*f, 10f64.powf(m - d))).collect();
            let mut poly = upper.clone();
            poly.extend(lower.iter().rev());
            chart.draw_series(std::iter::once(Polygon::new(poly, color.mix(0.2)))).map_err(e)?;
            let line: Vec<(f64, f64)> = f.iter().zip(m).filter(|(_, m)| m.is_finite()).map(|(f, m)| (*f, 10f64.powf(*m))).collect();
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(e)?
                .label(format!("{label}: slope {slope:.2} ± {err:.2}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).label_font(("sans-serif", 12)).draw().map_err(e)?;
        if self.series.len() >= 2 {
            let (a, b) = (&self.series[0], &self.series[1]);
            let ratio: Vec<(f64, f64)> = a.1.iter().zip(a.2.iter().zip(&b.2)).filter(|(_, (x, y))| x.is_finite() && y.is_finite()).map(|(f, (x, y))| (*f, 10f64.powf(y - x))).collect();
            let (r0, r1) = ratio.iter().fold((1.0f64, 1.0f64), |(lo, hi), &(_, r)| (lo.min(r), hi.max(r)));
            let mut rc = ChartBuilder::on(&bottom)
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(60)
                .build_cartesian_2d((f0 * 0.9..f1 * 1.1).log_scale(), (r0 - 0.1 * (r1 - r0) - 0.01)..(r1 + 0.1 * (r1 - r0) + 0.01))
                .map_err(e)?;
            rc.configure_mesh()
                .x_desc("k [pixel⁻¹]")
                .y_desc(format!("{} / {}", b.0, a.0))
                .label_style(("sans-serif", 11))
                .x_label_formatter(&|v| format!("{v:.2}"))
                .y_label_formatter(&|v| format!("{v:.2}"))
                .draw()
                .map_err(e)?;
            rc.draw_series(LineSeries::new(vec![(f0 * 0.9, 1.0), (f1 * 1.1, 1.0)], BLACK.mix(0.5))).map_err(e)?;
            rc.draw_series(LineSeries::new(ratio, PALETTE[1].stroke_width(2))).map_err(e)?;
        }
        root.present().map_err(e)
    }

    /// Writes `<stem>.png` and `<stem>.svg` atomically.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        register_font();
        let (png, svg) = (with_suffix(stem, ".png"), with_suffix(stem, ".svg"));
        let files = AtomicFiles::new(&[png.clone(), svg.clone()])?;
        {
            let tmp = files.temp(0);
            let root = BitMapBackend::new(&tmp, (760, 560)).into_drawing_area();
            self.draw(&root).map_err(|e| Error::write(&png, e))?;
        }
        {
            let tmp = files.temp(1);
            let root = SVGBackend::new(&tmp, (760, 560)).into_drawing_area();
            self.draw(&root).map_err(|e| Error::write(&svg, e))?;
        }
        files.commit()
    }
}
