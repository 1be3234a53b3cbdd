//! The `expanse` command line: a thin clap layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use expanse::inspect::{self, fmt_num};
use expanse::ingest::{self, IngestOptions};
use expanse::io::{HduSelector, Selection};
use expanse::prep::{ChannelMap, Crop, Geometry, PrepSpec, RangeSpec, Tile, TransformSpec};
use expanse::simulate::{self, CloudSpec};

/// Grow a handful of astrophysical maps into many statistically faithful synthetic maps with a
/// frozen diffusion model (Zhu et al. 2023, arXiv 2310.09213).
#[derive(Parser)]
#[command(name = "expanse", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the HDUs or datasets of files: shapes, types, units, NaN fraction, min and max.
    Inspect(InspectArgs),
    /// Read maps from FITS/HDF5/NPY files and write one stack, raw or normalized for the model.
    Ingest(IngestArgs),
    /// Simulate lognormal column-density maps of turbulent clouds (the sample data).
    Simulate(SimulateArgs),
}

#[derive(Args)]
struct InspectArgs {
    /// Files to inspect (FITS, HDF5 or NPY; the format is detected from the content).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct IngestArgs {
    /// Input files (FITS, HDF5 or NPY). A 2-D image is one map; each plane of a 3-D cube is one map.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output file; its extension picks the format: .npy, .h5 or .fits.
    #[arg(long, short)]
    out: PathBuf,
    /// FITS HDU to read: an index (0 = primary) or an EXTNAME. Default: the first HDU holding an image.
    #[arg(long)]
    hdu: Option<String>,
    /// HDF5 dataset path, e.g. /sim/snap_010/density (leading slash optional). Default: `maps`,
    /// or the only 2-D/3-D numeric dataset.
    #[arg(long)]
    dataset: Option<String>,
    /// Write the maps exactly as read: float32 (N, H, W), NaN where blank, no normalization, no geometry.
    #[arg(long)]
    raw: bool,
    /// Intensity transform into [-1, 1], fitted over all inputs together: linear, log10 or asinh.
    #[arg(long, default_value = "linear")]
    transform: String,
    /// Range sent to [-1, 1]: `minmax` or `percentile:LOW,HIGH` (e.g. percentile:0.5,99.5).
    #[arg(long, default_value = "minmax")]
    range: String,
    /// log10 offset added before the logarithm. Default: 0 for positive data, else lifts the
    /// minimum to 0.1 % of the range.
    #[arg(long, allow_hyphen_values = true)]
    offset: Option<f64>,
    /// asinh softening scale (physical units). Default: 1.4826 × the median absolute deviation.
    #[arg(long)]
    softening: Option<f64>,
    /// Crop before anything else: X0,Y0,WIDTH,HEIGHT (0-based column, row) or center:SIZE.
    #[arg(long)]
    crop: Option<String>,
    /// Cut each map into SIZE×SIZE tiles every STRIDE pixels: SIZE or SIZE:STRIDE.
    #[arg(long)]
    tile: Option<String>,
    /// Resize square maps to SIZE×SIZE (area-averaging when shrinking, bilinear when enlarging).
    #[arg(long)]
    size: Option<usize>,
    /// Model channels: each single-band map is copied into every channel (3 for RGB models).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Treat runs of consecutive maps as bands of one image and map them onto channels:
    /// channel c takes band BAND_MAP[c], e.g. `2,1,0` for a 3-band cube stored in reverse.
    #[arg(long, value_delimiter = ',', conflicts_with = "channels")]
    band_map: Option<Vec<usize>>,
    /// Also draw up to 16 of the maps (physical units, after geometry) to PREVIEW.png and PREVIEW.svg.
    #[arg(long)]
    preview: Option<PathBuf>,
    /// Also print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SimulateArgs {
    /// Output file (.fits, .h5 or .npy).
    #[arg(long, short)]
    out: PathBuf,
    /// Number of maps.
    #[arg(long, default_value_t = 32)]
    count: usize,
    /// Map side in pixels.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Power-spectrum index β of the Gaussian field behind ln N (P ∝ k^-β).
    #[arg(long, default_value_t = 3.0)]
    beta: f64,
    /// Standard deviation of ln N (the log-width of the lognormal).
    #[arg(long, default_value_t = 1.0)]
    sigma_ln: f64,
    /// Mean column density in cm⁻².
    #[arg(long, default_value_t = 1e21)]
    mean: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => run_inspect(a),
        Command::Ingest(a) => run_ingest(a),
        Command::Simulate(a) => run_simulate(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_inspect(a: InspectArgs) -> Result<()> {
    let reports = inspect::inspect_all(&a.files)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", inspect::render(&reports));
    }
    Ok(())
}

fn prep_spec(a: &IngestArgs) -> Result<PrepSpec> {
    let range: RangeSpec = a.range.parse()?;
    let transform = TransformSpec::parse(&a.transform, range, a.offset, a.softening)?;
    if a.offset.is_some() && !matches!(transform, TransformSpec::Log10 { .. }) {
        bail!("--offset applies to --transform log10 only");
    }
    if a.softening.is_some() && !matches!(transform, TransformSpec::Asinh { .. }) {
        bail!("--softening applies to --transform asinh only");
    }
    let geometry = Geometry {
        crop: a.crop.as_deref().map(str::parse::<Crop>).transpose()?,
        tile: a.tile.as_deref().map(str::parse::<Tile>).transpose()?,
        size: a.size,
    };
    let channels = match &a.band_map {
        Some(b) => ChannelMap::Bands { band_of_channel: b.clone() },
        None => ChannelMap::Replicate { channels: a.channels },
    };
    channels.validate()?;
    Ok(PrepSpec { transform, geometry, channels })
}

fn run_ingest(a: IngestArgs) -> Result<()> {
    let selection = Selection {
        hdu: a.hdu.as_deref().map(str::parse::<HduSelector>).transpose()?,
        dataset: a.dataset.clone(),
    };
    if a.raw {
        let shaped = a.crop.is_some() || a.tile.is_some() || a.size.is_some() || a.band_map.is_some() || a.channels != 1;
        let scaled = a.transform != "linear" || a.range != "minmax" || a.offset.is_some() || a.softening.is_some();
        if shaped || scaled {
            bail!("--raw writes the maps exactly as read: drop the transform, geometry and channel options");
        }
    }
    let opts = IngestOptions { selection, raw: a.raw, prep: prep_spec(&a)?, preview: a.preview.clone() };
    let report = ingest::ingest(&a.inputs, &opts, &a.out)
        .with_context(|| format!("ingest into {} failed; nothing was written", a.out.display()))?;
    for s in &report.inputs {
        println!(
            "read {:<48} {:>3} map(s) {}x{}  units {:<8} NaN {:.2}%  min {}  max {}",
            s.source,
            s.maps,
            s.shape[0],
            s.shape[1],
            s.units.as_deref().unwrap_or("-"),
            100.0 * s.stats.nan_fraction,
            s.stats.min.map(fmt_num).unwrap_or_else(|| "-".into()),
            s.stats.max.map(fmt_num).unwrap_or_else(|| "-".into()),
        );
    }
    if let Some(n) = &report.normalization {
        println!("normalization: {}", n.transform.describe());
        if report.blank_pixels > 0 {
            println!(
                "blank pixels: {} (filled with the domain median {} = {:.4} in model space; mask written)",
                report.blank_pixels,
                fmt_num(n.fill),
                n.fill_model
            );
        }
    }
    let shape = report.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
    for w in &report.written {
        println!("wrote {}", w.display());
    }
    println!("stack shape ({shape}){}", if a.raw { ", raw float32" } else { ", model space float32" });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn run_simulate(a: SimulateArgs) -> Result<()> {
    let spec = CloudSpec { count: a.count, size: a.size, beta: a.beta, sigma_ln: a.sigma_ln, mean: a.mean, seed: a.seed };
    let written = simulate::write_clouds(&spec, &a.out).context("simulate failed; nothing was written")?;
    for w in written {
        println!("wrote {} ({} lognormal maps of {}x{}, beta {}, sigma_ln {}, seed {})", w.display(), a.count, a.size, a.size, a.beta, a.sigma_ln, a.seed);
    }
    Ok(())
}
