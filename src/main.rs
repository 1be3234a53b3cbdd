//! The `expanse` command line: a thin clap layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use expanse::inspect::{self, fmt_num};
use expanse::ingest::{self, IngestOptions};
use expanse::io::{HduSelector, Selection};
use expanse::prep::{PrepOptions, PrepSpec};
use expanse::diffusion::{self, Ddim};
use expanse::latents;
use expanse::pipeline::{Plan, RunConfig, RunOptions, RunPart, Shard};
use expanse::model::{self, Ddpm};
use expanse::prior::geometry::{self, CandidateKind, SamplingSpec, TestSpec};
use expanse::prior::{diagnostics, file as prior_file, PriorKind};
use expanse::simulate::{self, CloudSpec};
use expanse::synthesis;
use expanse::stats::battery::{parse_range, BatteryOptions, Statistic};
use expanse::stats::power_spectrum::EnsembleSpectrum;
use expanse::stats::{Apodization, PowerSpectrumOptions};
use candle_core::{DType, Tensor};
use indicatif::ProgressBar;

/// Grow a handful of astrophysical maps into many statistically faithful synthetic maps with a
/// frozen diffusion model (Zhu et al. 2023, arXiv 2310.09213).
#[derive(Parser)]
#[command(name = "expanse", version, about, long_about = None)]
struct Cli {
    /// Worker threads (default: RAYON_NUM_THREADS, else every core). Results do not depend on it.
    #[arg(long, global = true)]
    threads: Option<usize>,
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
    /// One forward pass of the UNet: raw model output for a (B, C, H, W) array at one timestep.
    UnetEval(UnetEvalArgs),
    /// Deterministic DDIM inversion: model-space maps → latents at level t0.
    Invert(InvertArgs),
    /// DDIM generation: latents at level t0 → model-space maps.
    Generate(GenerateArgs),
    /// Invert then generate, reporting per-map MSE and PSNR (model space, data range 2).
    Reconstruct(ReconstructArgs),
    /// Time UNet evaluations (and report peak memory) on random inputs: the numbers in BENCHMARKS.md.
    Bench(BenchArgs),
    /// Fit one Gaussian prior per domain (one latents file each) and write diagnostics.
    Fit(FitArgs),
    /// Draw latents from a prior, keep those that pass the geometric tests, decode them to maps.
    Sample(SampleArgs),
    /// Radial power spectrum with TurbuStat's conventions and its power-law fit.
    PowerSpectrum(PowerSpectrumArgs),
    /// Minkowski functionals V0, V1, V2 of standardized maps over thresholds ν (CSV, averaged over the maps).
    Minkowski(MinkowskiArgs),
    /// Densities of local maxima and minima by height in σ (CSV, averaged over the maps).
    Peaks(PeaksArgs),
    /// Bicoherence profile with TurbuStat's `Bispectrum` conventions (CSV, averaged over the maps).
    Bispectrum(BispectrumArgs),
    /// Isotropic wavelet-scattering coefficients with kymatio's transform (CSV, averaged over the maps).
    Scattering(ScatteringArgs),
    /// Compare real and synthetic maps: power spectra, PDFs, the battery of statistics (Minkowski,
    /// peaks, bispectrum, scattering) with bootstrap bands, memorization; report + figures.
    Validate(ValidateArgs),
    /// Every stage from one TOML config (ingest → invert → fit → sample → decode → validate) in
    /// one run folder, resumable.
    Run(RunArgs),
    /// Write (and with --submit, submit) the Slurm jobs of a run: ingest, an inversion job array,
    /// fit + sample, a decoding job array, validate; each after the previous one succeeded.
    Slurm(SlurmArgs),
    /// The fidelity benchmark: every variant × seed of a benchmark config as a run, and the table of per-map statistics against the targets
    Fidelity(FidelityArgs),
}

#[derive(Args)]
struct FidelityArgs {
    /// Benchmark configuration (TOML): a base run config, [benchmark] seeds and [[variant]]s (see configs/fidelity.toml).
    config: PathBuf,
    /// Benchmark folder: one run folder per variant and seed, the latent cache, fidelity.md/.json/.csv. Rerunning into it keeps finished runs.
    #[arg(long, short)]
    out: PathBuf,
    /// Run only these variants (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    variants: Option<Vec<String>>,
}

#[derive(Args)]
struct RunArgs {
    /// Run configuration (TOML): see configs/ and the config reference in README.md.
    config: PathBuf,
    /// Run folder (default: runs/<run name>). It must be new or empty, unless --resume.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Continue an interrupted run in its folder: finished stages are kept, checkpointed batches
    /// reused. The config, inputs and model must be unchanged.
    #[arg(long)]
    resume: bool,
    /// Check the config, inputs and model, print the plan and its cost, and stop.
    #[arg(long)]
    dry_run: bool,
    /// Run one part of the run, as one Slurm job does (see `expanse slurm`): ingest; invert (one
    /// shard); fit (assembles the inversion shards, fits, samples); decode (one shard); validate
    /// (assembles the decoding shards, validates, writes the summary).
    #[arg(long)]
    stage: Option<String>,
    /// The shard of --stage invert/decode, I/N (0 <= I < N). Default: SLURM_ARRAY_TASK_ID /
    /// SLURM_ARRAY_TASK_COUNT.
    #[arg(long)]
    shard: Option<String>,
    /// Number of shards that --stage fit/validate assemble.
    #[arg(long)]
    shards: Option<usize>,
}

#[derive(Args)]
struct SlurmArgs {
    /// Run configuration (TOML).
    config: PathBuf,
    /// Run folder (default: runs/<run name>); the scripts go to DIR/slurm/, their logs to DIR/slurm/logs/.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Tasks of each job array (inversion and decoding).
    #[arg(long)]
    shards: usize,
    /// Submit the jobs with sbatch (in order, with --dependency=afterok) and print their ids.
    #[arg(long)]
    submit: bool,
    /// Wall-time limit of every job (sbatch --time).
    #[arg(long)]
    time: Option<String>,
    /// Memory of every job (sbatch --mem), e.g. 8G.
    #[arg(long)]
    mem: Option<String>,
    /// Partition of every job.
    #[arg(long)]
    partition: Option<String>,
    /// Account charged for every job.
    #[arg(long)]
    account: Option<String>,
    /// GPUs of every job (sbatch --gres=gpu:G); set model.device = "cuda" in the config.
    #[arg(long)]
    gpus: Option<usize>,
    /// Another #SBATCH argument for every job, e.g. --sbatch-arg=--qos=long (repeatable).
    #[arg(long = "sbatch-arg", allow_hyphen_values = true)]
    sbatch_arg: Vec<String>,
}

/// Which image of a FITS file or dataset of an HDF5 file holds the maps.
#[derive(Args)]
struct SelectionArgs {
    /// FITS HDU to read: an index (0 = primary) or an EXTNAME. Default: the first HDU holding an image.
    #[arg(long)]
    hdu: Option<String>,
    /// HDF5 dataset path, e.g. /sim/snap_010/density (leading slash optional). Default: `maps`,
    /// or the only 2-D/3-D numeric dataset.
    #[arg(long)]
    dataset: Option<String>,
}

impl SelectionArgs {
    fn selection(&self) -> Result<Selection> {
        Ok(Selection { hdu: self.hdu.as_deref().map(str::parse::<HduSelector>).transpose()?, dataset: self.dataset.clone() })
    }
}

#[derive(Args)]
struct SpectrumArgs {
    /// Apodize before the FFT: tukey:ALPHA or hanning.
    #[arg(long)]
    apodize: Option<String>,
    /// Fit range in pixel⁻¹, LOW:HIGH (fit over LOW < k <= HIGH). Default: 2/max(shape) to the last bin.
    #[arg(long)]
    fit_range: Option<String>,
    /// Divide by the power spectrum of a Gaussian beam of this FWHM (pixels).
    #[arg(long)]
    beam_fwhm: Option<f64>,
}

#[derive(Args)]
struct PowerSpectrumArgs {
    /// Maps (FITS/HDF5/NPY map or stack, all of one size).
    #[arg(required = true)]
    maps: Vec<PathBuf>,
    /// CSV with columns k,power,power_std,count (k in pixel⁻¹); for several maps the ensemble
    /// (mean power per bin, standard deviation across maps, total pixel count).
    #[arg(long, short)]
    out: PathBuf,
    /// JSON with slope, slope_err, low_cut, high_cut, nbins (and per-map slopes).
    #[arg(long)]
    summary: Option<PathBuf>,
    #[command(flatten)]
    selection: SelectionArgs,
    #[command(flatten)]
    spectrum: SpectrumArgs,
}

#[derive(Args)]
struct ValidateArgs {
    /// Real maps (FITS/HDF5/NPY stack).
    #[arg(long)]
    real: PathBuf,
    /// Synthetic maps (e.g. written by `expanse sample`).
    #[arg(long)]
    synthetic: PathBuf,
    /// Output folder: report.json, report.md, power_spectra/pdfs/maps/battery .png and .svg.
    #[arg(long, short)]
    out: PathBuf,
    /// Which HDU / dataset of both files (the real and the synthetic) holds the maps.
    #[command(flatten)]
    selection: SelectionArgs,
    #[command(flatten)]
    spectrum: SpectrumArgs,
    #[command(flatten)]
    battery: BatteryArgs,
}

/// The battery's options (the `[validation]` keys of a run config).
#[derive(Args)]
struct BatteryArgs {
    /// Statistics of the battery, comma-separated: power_spectrum, pdf, minkowski, peaks, bispectrum,
    /// scattering (default: all but bispectrum, the costly one), or none.
    #[arg(long, value_delimiter = ',')]
    statistics: Option<Vec<String>>,
    /// Minkowski thresholds in σ, LO:HI:N (default -3:3:25).
    #[arg(long, allow_hyphen_values = true)]
    thresholds: Option<String>,
    /// Peak-height bin edges in σ, LO:HI:N (default -5:5:41).
    #[arg(long, allow_hyphen_values = true)]
    peak_edges: Option<String>,
    /// Scattering scales J (default: from the map size) and angles L (default 8).
    #[arg(long)]
    scattering_j: Option<usize>,
    #[arg(long)]
    scattering_l: Option<usize>,
    /// Random triangle orientations per (k1, k2) of the bispectrum (TurbuStat's nsamples, default 100).
    #[arg(long)]
    bispectrum_samples: Option<usize>,
    /// Bootstrap resamples of whole maps (default 200) and their seed (default 0).
    #[arg(long)]
    resamples: Option<usize>,
    #[arg(long)]
    bootstrap_seed: Option<u64>,
}

/// Maps in and the CSV out, for the one-statistic commands.
#[derive(Args)]
struct StatisticArgs {
    /// Maps (FITS/HDF5/NPY map or stack); every map of every file counts once.
    #[arg(required = true)]
    maps: Vec<PathBuf>,
    /// CSV: the x column, the statistic averaged over the maps, then `_std` columns (standard deviation across maps).
    #[arg(long, short)]
    out: PathBuf,
    #[command(flatten)]
    selection: SelectionArgs,
}

#[derive(Args)]
struct MinkowskiArgs {
    #[command(flatten)]
    common: StatisticArgs,
    /// Thresholds ν in σ of each map about its own mean, LO:HI:N.
    #[arg(long, default_value = "-3:3:25", allow_hyphen_values = true)]
    thresholds: String,
}

#[derive(Args)]
struct PeaksArgs {
    #[command(flatten)]
    common: StatisticArgs,
    /// Bin edges of peak heights in σ, LO:HI:N (default -5:5:41).
    #[arg(long, allow_hyphen_values = true)]
    edges: Option<String>,
}

#[derive(Args)]
struct BispectrumArgs {
    #[command(flatten)]
    common: StatisticArgs,
    /// Random triangle orientations per (k1, k2) (TurbuStat's nsamples).
    #[arg(long)]
    samples: Option<usize>,
    /// Seed of those orientations.
    #[arg(long)]
    seed: Option<u64>,
    /// Subtract each map's mean first (TurbuStat's mean_subtract).
    #[arg(long)]
    mean_subtract: bool,
}

#[derive(Args)]
struct ScatteringArgs {
    #[command(flatten)]
    common: StatisticArgs,
    /// Scales J (default: from the map size).
    #[arg(long)]
    j: Option<usize>,
    /// Angles L.
    #[arg(long, default_value_t = 8)]
    l: usize,
}

#[derive(Args)]
struct FitArgs {
    /// Latents of each domain (written by `expanse invert`); one file = one domain.
    #[arg(long, required = true, num_args = 1..)]
    latents: Vec<PathBuf>,
    /// Prior file to write (HDF5, .h5). Diagnostics go beside it: <stem>.diagnostics.json and
    /// <stem>.diagnostics.png/.svg.
    #[arg(long, short)]
    out: PathBuf,
    /// Covariance model: scalar (the paper's σ² I), diagonal, lowrank:K (probabilistic PCA),
    /// stationary (per-mode channel cross-spectra) or empirical (the sample covariance).
    #[arg(long, default_value_t = expanse::prior::PriorKind::DEFAULT.to_string())]
    kind: String,
    /// Domain names, one per latents file (default: the file stems).
    #[arg(long, value_delimiter = ',')]
    names: Option<Vec<String>>,
}

#[derive(Args)]
struct SampleArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prior file written by `expanse fit`.
    #[arg(long)]
    prior: PathBuf,
    /// Domain in the prior file (needed when it holds several).
    #[arg(long)]
    domain: Option<String>,
    /// The domain's real latents (the file the prior was fitted on): targets and tests use them.
    #[arg(long)]
    latents: PathBuf,
    /// Number of synthetic maps to make.
    #[arg(long, default_value_t = geometry::DEFAULT_COUNT)]
    count: usize,
    /// Synthetic maps in physical units (.fits, .h5 or .npy); the accepted latents go to
    /// <stem>.latents.npy and a picture to <stem>.png/.svg.
    #[arg(long, short)]
    out: PathBuf,
    /// Candidates: draw (from the prior) or slerp (between a real latent and a draw).
    #[arg(long, default_value = "draw")]
    candidates: String,
    /// Real latents per test.
    #[arg(long, default_value_t = geometry::DEFAULT_K)]
    k: usize,
    /// Accepted central band of the leave-one-out statistics, in percent: LOW,HIGH.
    #[arg(long, default_value_t = format!("{},{}", geometry::DEFAULT_BAND[0], geometry::DEFAULT_BAND[1]))]
    band: String,
    /// Tests to apply: any of distance, origin, pair, norm.
    #[arg(long, value_delimiter = ',', default_values_t = geometry::TEST_NAMES.map(String::from))]
    tests: Vec<String>,
    /// Most candidates to examine before giving up.
    #[arg(long, default_value_t = geometry::DEFAULT_BUDGET)]
    budget: usize,
    /// Seed of every random choice (targets, candidates).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Few-shot correction of the draws: rings (James–Stein per ring of equal |k|), global
    /// (one factor for the whole mean) or none (the fitted N(μ̂, Σ) as is).
    #[arg(long, default_value_t = geometry::Debias::DEFAULT.to_string())]
    debias: String,
    /// Candidate norms: match (drawn from the real latents' norm distribution) or free.
    #[arg(long, default_value_t = geometry::NormMode::DEFAULT.to_string())]
    norm: String,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Map side in pixels (default: the model's sample_size).
    #[arg(long)]
    size: Option<usize>,
    /// Timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// CPU operations: fast (expanse's convolution and group-norm kernels) or candle (candle's own).
    #[arg(long, default_value = "fast")]
    kernels: String,
    /// Also time each kind of operation over the repetitions and print the table.
    #[arg(long)]
    profile: bool,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model folder: diffusers (config.json + diffusion_pytorch_model.safetensors [+ scheduler_config.json]),
    /// guided-diffusion ADM (adm.json + *.pt) or original DDPM (ddpm.json + *.ckpt).
    #[arg(long)]
    model: PathBuf,
    /// cpu, cuda, cuda:N or metal (GPU backends need the `cuda` / `metal` cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute precision: f32, f16 or bf16 (where the backend supports it).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Maps per UNet evaluation.
    #[arg(long, default_value_t = model::DEFAULT_BATCH)]
    batch: usize,
}

#[derive(Args, Clone)]
struct GridArgs {
    /// Grid points N: levels floor(k·t0/(N−1)), k = 0…N−1 (inversion takes N−1 steps, generation N).
    #[arg(long, default_value_t = expanse::diffusion::DEFAULT_STEPS)]
    steps: usize,
    /// Top level of the grid (the latents' noise level; the paper uses 900).
    #[arg(long, default_value_t = expanse::diffusion::DEFAULT_T0)]
    t0: usize,
    /// Clip the predicted clean image to [−C, C] at every step (default: no clipping).
    #[arg(long)]
    clip: Option<f64>,
}

#[derive(Args)]
struct UnetEvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Input .npy, float32 (B, C, H, W).
    #[arg(long)]
    input: PathBuf,
    /// Timestep given to the network.
    #[arg(long)]
    timestep: f64,
    /// Output .npy: the raw model output (B, out_channels, H, W).
    #[arg(long, short)]
    out: PathBuf,
}

/// What inversion reads and how hard it works.
#[derive(Args)]
struct InversionArgs {
    /// Model-space maps: a stack written by `expanse ingest`, or a (B, C, H, W) float array.
    #[arg(long)]
    input: PathBuf,
    /// Fixed-point iterations per inversion step (0 = plain DDIM inversion; each costs one more UNet call per step).
    #[arg(long, default_value_t = 0)]
    fixed_point: usize,
}

#[derive(Args)]
struct InvertArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    grid: GridArgs,
    #[command(flatten)]
    inversion: InversionArgs,
    /// Output latents (.npy, .h5 or .fits), (B, C, H, W).
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    grid: GridArgs,
    /// Latents at level t0 (B, C, H, W), e.g. written by `expanse invert`.
    #[arg(long)]
    latents: PathBuf,
    /// DDIM η: 0 = deterministic; > 0 adds noise drawn from --seed.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    eta: f64,
    /// Seed of the noise when η > 0.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output maps in model space (.npy, .h5 or .fits), (B, C, H, W).
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
struct ReconstructArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    grid: GridArgs,
    #[command(flatten)]
    inversion: InversionArgs,
    /// Also write the reconstructions (model space).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Also write the per-map errors as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
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
    #[command(flatten)]
    selection: SelectionArgs,
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
    /// Use only the first N maps read (in input order, before tiling).
    #[arg(long)]
    max_maps: Option<usize>,
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
    #[arg(long, default_value = "1e21")]
    mean: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    expanse::runtime::keep_freed_memory();
    let cli = Cli::parse();
    let threads = match cli.threads.map(expanse::runtime::set_threads).transpose() {
        Ok(_) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("--threads")),
    };
    let result = threads.and_then(|_| match cli.command {
        Command::Inspect(a) => run_inspect(a),
        Command::Ingest(a) => run_ingest(a),
        Command::Simulate(a) => run_simulate(a),
        Command::UnetEval(a) => run_unet_eval(a),
        Command::Invert(a) => run_invert(a),
        Command::Generate(a) => run_generate(a),
        Command::Reconstruct(a) => run_reconstruct(a),
        Command::Bench(a) => run_bench(a),
        Command::Fit(a) => run_fit(a),
        Command::Sample(a) => run_sample(a),
        Command::PowerSpectrum(a) => run_power_spectrum(a),
        Command::Minkowski(a) => {
            let thresholds = parse_range(&a.thresholds).context("--thresholds")?;
            run_statistic(Statistic::Minkowski, BatteryOptions { thresholds, ..BatteryOptions::default() }, &a.common)
        }
        Command::Peaks(a) => {
            let mut o = BatteryOptions::default();
            if let Some(e) = &a.edges {
                o.peak_edges = parse_range(e).context("--edges")?;
            }
            run_statistic(Statistic::Peaks, o, &a.common)
        }
        Command::Bispectrum(a) => {
            let mut o = BatteryOptions::default();
            o.bispectrum.nsamples = a.samples.unwrap_or(o.bispectrum.nsamples);
            o.bispectrum.seed = a.seed.unwrap_or(o.bispectrum.seed);
            o.bispectrum.mean_subtract = a.mean_subtract;
            run_statistic(Statistic::Bispectrum, o, &a.common)
        }
        Command::Scattering(a) => run_statistic(Statistic::Scattering, BatteryOptions { scattering_j: a.j, scattering_l: a.l, ..BatteryOptions::default() }, &a.common),
        Command::Validate(a) => run_validate(a),
        Command::Run(a) => run_run(a, cli.threads.is_some()),
        Command::Slurm(a) => run_slurm(a),
        Command::Fidelity(a) => run_fidelity(a),
    });
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
    Ok(PrepSpec::parse(&PrepOptions {
        transform: &a.transform,
        range: &a.range,
        offset: a.offset,
        softening: a.softening,
        crop: a.crop.as_deref(),
        tile: a.tile.as_deref(),
        size: a.size,
        channels: a.channels,
        band_map: a.band_map.as_deref(),
    })?)
}

fn run_ingest(a: IngestArgs) -> Result<()> {
    let selection = a.selection.selection()?;
    if a.raw {
        let shaped = a.crop.is_some() || a.tile.is_some() || a.size.is_some() || a.band_map.is_some() || a.channels != 1;
        let scaled = a.transform != "linear" || a.range != "minmax" || a.offset.is_some() || a.softening.is_some();
        if shaped || scaled {
            bail!("--raw writes the maps exactly as read: drop the transform, geometry and channel options");
        }
    }
    let opts = IngestOptions { selection, raw: a.raw, prep: prep_spec(&a)?, preview: a.preview.clone(), max_maps: a.max_maps, real: None };
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

fn load_model(a: &ModelArgs) -> Result<Ddpm> {
    let device = model::parse_device(&a.device)?;
    let dtype = model::parse_dtype(&a.dtype)?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    Ok(Ddpm::load(&a.model, &device, dtype)?)
}

fn progress(total: u64, what: &str) -> ProgressBar {
    expanse::runtime::progress_bar(total, what)
}

fn ddim_for(model: &Ddpm, g: &GridArgs, fixed_point: usize) -> Result<Ddim> {
    Ok(Ddim::for_model(model, g.steps, g.t0, fixed_point, g.clip)?)
}

fn batches(n: usize, batch: usize) -> u64 {
    n.div_ceil(batch) as u64
}

fn run_unet_eval(a: UnetEvalArgs) -> Result<()> {
    let ddpm = load_model(&a.model)?;
    let input = invert_input(&ddpm, &a.input)?;
    let pb = progress(batches(input.data.dim().0, a.model.batch), "unet-eval");
    let out = diffusion::raw_outputs(&ddpm, &input.data, a.timestep, a.model.batch, &pb)?;
    pb.finish_and_clear();
    let rec = vec![("timestep", serde_json::json!(a.timestep)), ("model", serde_json::json!({"folder": ddpm.dir, "format": ddpm.format.as_str()}))];
    let written = latents::write_model_output(&a.out, &out, "unet-eval", &input, rec)?;
    println!("wrote {} (shape {:?})", written[0].display(), out.shape());
    Ok(())
}

fn invert_input(ddpm: &Ddpm, path: &std::path::Path) -> Result<latents::ModelInput> {
    let input = latents::read_model_input(path)?;
    let (_, c, h, w) = input.data.dim();
    ddpm.check_input(c, h, w).with_context(|| format!("{}", path.display()))?;
    Ok(input)
}

fn run_invert(a: InvertArgs) -> Result<()> {
    let ddpm = load_model(&a.model)?;
    let ddim = ddim_for(&ddpm, &a.grid, a.inversion.fixed_point)?;
    let input = invert_input(&ddpm, &a.inversion.input)?;
    let n = input.data.dim().0;
    let steps = (ddim.seq.len() - 1) as u64;
    let pb = progress(steps * batches(n, a.model.batch), "invert");
    let start = std::time::Instant::now();
    let z = ddim.invert(&ddpm, &input.data, a.model.batch, &pb)?;
    pb.finish_and_clear();
    let evals = diffusion::unet_evaluations(&ddim, n, true, false);
    let written = latents::write_model_output(&a.out, &z, "invert", &input, ddim.records(&ddpm)?)?;
    println!(
        "inverted {n} map(s) to level {} in {} steps ({} UNet evaluations per map, {:.1} s); wrote {}",
        a.grid.t0,
        steps,
        evals / n,
        start.elapsed().as_secs_f64(),
        written[0].display()
    );
    Ok(())
}

fn run_generate(a: GenerateArgs) -> Result<()> {
    if !(a.eta >= 0.0 && a.eta.is_finite()) {
        bail!("--eta must be >= 0, got {}", a.eta);
    }
    let ddpm = load_model(&a.model)?;
    let ddim = ddim_for(&ddpm, &a.grid, 0)?;
    let input = invert_input(&ddpm, &a.latents)?;
    let n = input.data.dim().0;
    let pb = progress(ddim.seq.len() as u64 * batches(n, a.model.batch), "generate");
    let x = ddim.generate(&ddpm, &input.data, a.eta, a.seed, a.model.batch, &pb)?;
    pb.finish_and_clear();
    let mut rec = ddim.records(&ddpm)?;
    rec.push(("generation", serde_json::json!({"eta": a.eta, "seed": a.seed})));
    let written = latents::write_model_output(&a.out, &x, "generate", &input, rec)?;
    println!("generated {n} map(s) in {} steps; wrote {}", ddim.seq.len(), written[0].display());
    Ok(())
}

fn run_reconstruct(a: ReconstructArgs) -> Result<()> {
    let ddpm = load_model(&a.model)?;
    let ddim = ddim_for(&ddpm, &a.grid, a.inversion.fixed_point)?;
    let input = invert_input(&ddpm, &a.inversion.input)?;
    let r = diffusion::Reconstruction::run(&ddim, &ddpm, &input.data, a.model.batch, &progress)?;
    print!("{}", r.table());
    println!(
        "cost: inversion {} UNet evaluations ({} per step with {} fixed-point iteration(s)) in {:.1} s; generation {} in {:.1} s",
        r.unet_evaluations.inversion,
        1 + ddim.fixed_point,
        ddim.fixed_point,
        r.seconds.inversion,
        r.unet_evaluations.generation,
        r.seconds.generation
    );
    if let Some(out) = &a.out {
        let mut rec = ddim.records(&ddpm)?;
        rec.push(("reconstruction_mse", serde_json::json!(r.per_map.iter().map(|e| e.mse).collect::<Vec<_>>())));
        let written = latents::write_model_output(out, &r.images, "reconstruct", &input, rec)?;
        println!("wrote {}", written[0].display());
    }
    if let Some(path) = &a.report {
        let report = r.report(&a.inversion.input, &ddpm.dir, &ddim);
        expanse::io::write_text(path, &serde_json::to_string_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn run_bench(a: BenchArgs) -> Result<()> {
    match a.kernels.as_str() {
        "fast" => expanse::model::kernels::set_enabled(true),
        "candle" => expanse::model::kernels::set_enabled(false),
        o => bail!("--kernels: '{o}' is not fast or candle"),
    }
    let ddpm = load_model(&a.model)?;
    let size = a.size.or_else(|| ddpm.config.native_size().map(|s| s[0])).unwrap_or(32);
    let c = ddpm.config.in_channels();
    ddpm.check_input(c, size, size)?;
    let b = a.model.batch;
    let x = Tensor::randn(0f32, 1f32, (b, c, size, size), &ddpm.device)?;
    let sync = |t: &Tensor| -> Result<()> {
        let _ = t.flatten_all()?.max(0)?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        Ok(())
    };
    sync(&ddpm.forward(&x, 500.0)?)?;
    let mut times = Vec::with_capacity(a.repeats);
    for i in 0..a.repeats.max(1) {
        let t = std::time::Instant::now();
        sync(&ddpm.forward(&x, (i * 97 % 1000) as f64)?)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|p, q| p.partial_cmp(q).expect("finite"));
    let median = times[times.len() / 2];
    println!(
        "model {} ({}, {:.2} M parameters), {} {:?}, batch {b}, {size}x{size}, threads {}, kernels {}",
        ddpm.dir.display(),
        ddpm.format.as_str(),
        ddpm.parameters as f64 / 1e6,
        model::device_name(&ddpm.device),
        ddpm.dtype,
        expanse::runtime::threads(),
        a.kernels
    );
    println!(
        "UNet forward: median {:.1} ms per batch ({:.2} ms per map, {:.1} maps/s) over {} runs; min {:.1} ms, max {:.1} ms",
        1e3 * median,
        1e3 * median / b as f64,
        b as f64 / median,
        times.len(),
        1e3 * times[0],
        1e3 * times[times.len() - 1]
    );
    if a.profile {
        use expanse::model::profile;
        profile::enable(true);
        let t = std::time::Instant::now();
        for i in 0..a.repeats.max(1) {
            sync(&ddpm.forward(&x, (i * 97 % 1000) as f64)?)?;
        }
        let total = t.elapsed().as_secs_f64();
        profile::enable(false);
        let n = a.repeats.max(1) as f64;
        let table = profile::table();
        println!("{:<34} {:>8} {:>12} {:>8} {:>10}", "operation (per forward)", "calls", "ms", "share", "GFLOP/s");
        let mut accounted = 0.0;
        let mut rows: Vec<_> = table.iter().collect();
        rows.sort_by(|p, q| q.1.seconds.total_cmp(&p.1.seconds));
        for (op, v) in rows {
            accounted += v.seconds;
            let gflops = if v.flops > 0.0 { format!("{:.1}", v.flops / v.seconds / 1e9) } else { "-".into() };
            println!("{op:<34} {:>8.0} {:>12.2} {:>7.1} % {gflops:>10}", v.calls as f64 / n, 1e3 * v.seconds / n, 100.0 * v.seconds / total);
        }
        println!("{:<34} {:>8} {:>12.2} {:>7.1} %", "other (embedding, linear, copies)", "", 1e3 * (total - accounted) / n, 100.0 * (total - accounted) / total);
        println!("{:<34} {:>8} {:>12.2}", "forward", "", 1e3 * total / n);
    }
    if let Some(m) = expanse::runtime::peak_memory_mib() {
        println!("peak resident memory: {m:.0} MiB");
    }
    Ok(())
}

fn run_fit(a: FitArgs) -> Result<()> {
    let kind: PriorKind = a.kind.parse()?;
    if let Some(n) = &a.names {
        if n.len() != a.latents.len() {
            bail!("--names has {} name(s) for {} latents file(s)", n.len(), a.latents.len());
        }
    }
    let domains: Vec<(String, PathBuf)> = a
        .latents
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let name = match &a.names {
                Some(n) => n[i].clone(),
                None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| format!("domain{i}")),
            };
            (name, path.clone())
        })
        .collect();
    let fitted = expanse::prior::fit::fit_files(&domains, kind, &a.out, None)?;
    print!("{}", diagnostics::table(&fitted.diagnostics, fitted.separability.as_ref()));
    for w in fitted.written {
        println!("wrote {}", w.display());
    }
    Ok(())
}

fn run_sample(a: SampleArgs) -> Result<()> {
    let candidates: CandidateKind = a.candidates.parse()?;
    let band: Vec<f64> = a.band.split(',').map(|v| v.trim().parse::<f64>()).collect::<std::result::Result<_, _>>().context("--band: expected LOW,HIGH")?;
    let [lo, hi] = band[..] else { bail!("--band: expected LOW,HIGH") };
    let tests = TestSpec::parse(a.k, (lo, hi), &a.tests)?;
    if a.domain.is_none() {
        let names: Vec<String> = prior_file::read(&a.prior)?.into_iter().map(|p| p.name).collect();
        if names.len() > 1 {
            bail!("{} holds {} domains ({}): choose one with --domain", a.prior.display(), names.len(), names.join(", "));
        }
    }
    let prior = prior_file::read_domain(&a.prior, a.domain.as_deref())?;
    let input = latents::read_model_input(&a.latents)?;
    let spec = SamplingSpec {
        count: a.count,
        candidates,
        tests,
        budget: a.budget,
        seed: a.seed,
        debias: a.debias.parse().context("--debias")?,
        norm: a.norm.parse().context("--norm")?,
    };
    // The model and grid are checked before sampling, so that nothing is written when they do
    // not fit the latents.
    geometry::check_dimension(&prior, input.data.len() / input.data.dim().0.max(1)).with_context(|| format!("sampling domain '{}'", prior.name))?;
    let ddpm = load_model(&a.model)?;
    let [c, h, w] = prior.shape;
    ddpm.check_input(c, h, w)?;
    synthesis::grid_of(&ddpm, &input, &a.latents, None)?;
    let t = std::time::Instant::now();
    let latents_out = expanse::io::with_suffix(&a.out, ".latents.npy");
    let (outcome, mut written) = synthesis::sample(&prior, &a.prior, &input, &spec, &latents_out, "sample")
        .with_context(|| format!("sampling domain '{}'", prior.name))?;
    let (_, all) = outcome.rates();
    println!(
        "accepted {} of {} candidates ({:.1} %; {}) in {:.1} s",
        outcome.accepted.len(), outcome.tried, 100.0 * all, outcome.rates_text(), t.elapsed().as_secs_f64()
    );
    let accepted = latents::read_model_input(&latents_out)?;
    let ddim = synthesis::grid_of(&ddpm, &accepted, &latents_out, None)?;
    let pb = progress(ddim.seq.len() as u64 * batches(a.count, a.model.batch), "decode");
    let images = ddim.generate(&ddpm, &accepted.data, 0.0, 0, a.model.batch, &pb)?;
    pb.finish_and_clear();
    let (files, physical) =
        synthesis::write_synthetic(std::slice::from_ref(&a.out), &images, "sample", &accepted, &ddim, &ddpm, &prior.name, vec![])?;
    written.extend(files);
    let label = if physical { "physical units" } else { "model space (the latents carry no normalization)" };
    println!("decoded {} map(s) into {label}", a.count);
    for w in written {
        println!("wrote {}", w.display());
    }
    Ok(())
}

fn spectrum_options(a: &SpectrumArgs) -> Result<PowerSpectrumOptions> {
    let fit_range = match &a.fit_range {
        Some(r) => {
            let (lo, hi) = r.split_once(':').context("--fit-range: expected LOW:HIGH")?;
            let (lo, hi): (f64, f64) = (lo.trim().parse()?, hi.trim().parse()?);
            if !(lo < hi && lo >= 0.0) {
                bail!("--fit-range: need 0 <= LOW < HIGH");
            }
            Some((lo, hi))
        }
        None => None,
    };
    Ok(PowerSpectrumOptions {
        apodize: a.apodize.as_deref().map(str::parse::<Apodization>).transpose()?,
        beam_fwhm: a.beam_fwhm,
        fit_range,
        log_bins: false,
        binsize: None,
    })
}

fn run_power_spectrum(a: PowerSpectrumArgs) -> Result<()> {
    let opts = spectrum_options(&a.spectrum)?;
    let (maps, _) = ingest::read_inputs(&a.maps, &a.selection.selection()?)?;
    let stack = expanse::io::stack(&maps)?;
    let arrays: Vec<ndarray::Array2<f64>> = stack.outer_iter().map(|m| m.mapv(|v| v as f64)).collect();
    let ens = EnsembleSpectrum::compute(&arrays, &opts)?;
    let ps = &ens.mean;
    let mut targets = vec![a.out.clone()];
    targets.extend(a.summary.clone());
    let files = expanse::io::AtomicFiles::new(&targets)?;
    std::fs::write(files.temp(0), ens.csv())?;
    if a.summary.is_some() {
        std::fs::write(files.temp(1), serde_json::to_string_pretty(&ens.summary())?)?;
    }
    for w in files.commit()? {
        println!("wrote {}", w.display());
    }
    println!("slope {:.4} ± {:.4} over {:.4} < k <= {:.4} ({} map(s), {} bins)", ps.slope, ps.slope_err, ps.low_cut, ps.high_cut, arrays.len(), ps.nbins());
    Ok(())
}

fn run_statistic(statistic: Statistic, options: BatteryOptions, a: &StatisticArgs) -> Result<()> {
    let values = expanse::validate::statistic_of_files(statistic, &options, &a.maps, &a.selection.selection()?)?;
    let files = expanse::io::AtomicFiles::new(std::slice::from_ref(&a.out))?;
    std::fs::write(files.temp(0), values.csv()).with_context(|| format!("writing {}", a.out.display()))?;
    for w in files.commit()? {
        println!("wrote {}", w.display());
    }
    println!("{} of {} map(s)", statistic.title(), values.values.len());
    Ok(())
}

fn battery_options(a: &ValidateArgs) -> Result<BatteryOptions> {
    let spectrum = spectrum_options(&a.spectrum)?;
    let b = &a.battery;
    let statistics = match &b.statistics {
        Some(v) if v.len() == 1 && v[0] == "none" => Some(Vec::new()),
        v => v.clone(),
    };
    let section = expanse::pipeline::config::ValidationSection {
        statistics,
        thresholds: b.thresholds.clone(),
        peak_edges: b.peak_edges.clone(),
        scattering_j: b.scattering_j,
        scattering_l: b.scattering_l,
        bispectrum_samples: b.bispectrum_samples,
        resamples: b.resamples,
        bootstrap_seed: b.bootstrap_seed,
        ..Default::default()
    };
    let mut o = section.battery_options().map_err(|e| {
        let msg = e.to_string();
        let keys = ["thresholds", "peak_edges", "scattering_j", "scattering_l", "bispectrum_samples", "resamples"];
        match keys.iter().find(|k| msg.starts_with(*k)) {
            Some(k) => anyhow::anyhow!("--{}{}", k.replace('_', "-"), &msg[k.len()..]),
            None => anyhow::anyhow!("--statistics: {msg}"),
        }
    })?;
    o.spectrum = spectrum;
    Ok(o)
}

fn run_validate(a: ValidateArgs) -> Result<()> {
    let opts = battery_options(&a)?;
    let r = expanse::validate::validate(&a.real, &a.synthetic, &a.selection.selection()?, &a.out, &opts, None)?;
    println!(
        "per-map power-spectrum slopes: real {:.3} ± {:.3}, synthetic {:.3} ± {:.3} (Welch t = {:.2})",
        r.slopes.real.mean, r.slopes.real.std, r.slopes.synthetic.mean, r.slopes.synthetic.std, r.slopes.welch_t
    );
    println!(
        "ensemble slope (physical units): real {:.3} ± {:.3}, synthetic {:.3} ± {:.3} (distance t = {:.2})",
        r.spectrum_real.slope, r.spectrum_real.slope_err, r.spectrum_synthetic.slope, r.spectrum_synthetic.slope_err, r.spectrum_distance
    );
    println!(
        "{}: level spread ratio {:.2} (68 %: {:.2}–{:.2}); PDF Hellinger {:.4} ± {:.4} (real halves {:.4}), {:.2} % of synthetic pixels outside the real range",
        r.scale,
        r.level.ratio,
        r.level.ratio_interval.0,
        r.level.ratio_interval.1,
        r.pdf.hellinger,
        r.pdf.hellinger_std,
        r.pdf.hellinger_real_halves,
        100.0 * r.pdf.synthetic_outside
    );
    if let Some(b) = &r.battery {
        for st in &b.statistics {
            println!(
                "{}: χ²/dof {:.2} ± {:.2} (real halves {:.2}), D {:.3} ± {:.3} real-map σ ({:.2} s)",
                st.statistic.title(),
                st.chi2.value,
                st.chi2.std,
                st.chi2_real_halves,
                st.distance.value,
                st.distance.std,
                st.seconds
            );
        }
        println!("battery overall: χ²/dof {:.2} ± {:.2}, D {:.3} ± {:.3}", b.chi2.value, b.chi2.std, b.distance.value, b.distance.std);
    }
    println!(
        "memorization: ratio {:.3} (closest synthetic–real / closest real–real); {} of {} synthetic map(s) flagged as near-copies",
        r.memorization.ratio,
        r.memorization.flagged.len(),
        r.n_synthetic
    );
    for w in &r.written {
        println!("wrote {}", w.display());
    }
    Ok(())
}

fn run_fidelity(a: FidelityArgs) -> Result<()> {
    let config = expanse::fidelity::FidelityConfig::read(&a.config)?;
    let t = std::time::Instant::now();
    let report = expanse::fidelity::run(&config, &a.out, a.variants.as_deref(), |r| match &r.error {
        Some(e) => println!("{} seed {} {}: failed: {e}", r.variant, r.seed, r.domain),
        None => println!(
            "{} seed {} {}: accepted {}/{}, slopes {:.2} vs {:.2} (Welch t {:.2}), level ratio {:.2}, Hellinger {:.3}, memorization {:.2}, reconstruction {:.1} dB",
            r.variant, r.seed, r.domain, r.accepted, r.tried, r.slope_synthetic.0, r.slope_real.0, r.welch_t, r.level_ratio, r.hellinger, r.memorization_ratio, r.reconstruction_db.0
        ),
    })?;
    print!("\n{}", expanse::fidelity::markdown(&report));
    println!("{} run(s) in {:.0} s", report.rows.len() / report.domains.len().max(1), t.elapsed().as_secs_f64());
    for w in &report.written {
        println!("wrote {}", w.display());
    }
    Ok(())
}

/// `threads_given`: `--threads` was passed (it wins over `run.threads`).
fn run_slurm(a: SlurmArgs) -> Result<()> {
    use expanse::pipeline::slurm;
    let config = RunConfig::read(&a.config)?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(config.name()));
    let plan = Plan::new(config, &a.config)?;
    let opts = slurm::SlurmOptions {
        shards: a.shards,
        time: a.time,
        mem: a.mem,
        partition: a.partition,
        account: a.account,
        gpus: a.gpus,
        sbatch_args: a.sbatch_arg,
    };
    let exe = std::env::current_exe().context("cannot find the expanse binary's path")?;
    let jobs = slurm::write_scripts(&plan, &a.config, &out, &exe, &opts)?;
    println!("wrote {} job scripts into {}", jobs.len(), out.join("slurm").display());
    if !a.submit {
        println!("submit them in order (or pass --submit):\n");
        print!("{}", slurm::submit_commands(&jobs));
        return Ok(());
    }
    let ids = slurm::submit(&jobs, &out)?;
    for (stage, id) in &ids {
        println!("{stage}: job {id}");
    }
    println!("job ids in {}; logs in {}", out.join("slurm/jobs.json").display(), out.join("slurm/logs").display());
    Ok(())
}

fn run_run(a: RunArgs, threads_given: bool) -> Result<()> {
    let config = RunConfig::read(&a.config)?;
    if let (Some(n), false) = (config.run.threads, threads_given) {
        expanse::runtime::set_threads(n).with_context(|| format!("{}: run.threads", a.config.display()))?;
    }
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(config.name()));
    let part = match &a.stage {
        Some(stage) => {
            let shard = match &a.shard {
                Some(s) => Some(s.parse::<Shard>()?),
                None => match (std::env::var("SLURM_ARRAY_TASK_ID"), std::env::var("SLURM_ARRAY_TASK_COUNT")) {
                    (Ok(i), Ok(n)) => Some(format!("{i}/{n}").parse::<Shard>().context("SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT")?),
                    _ => None,
                },
            };
            Some(RunPart::new(stage, shard, a.shards)?)
        }
        None if a.shard.is_some() || a.shards.is_some() => bail!("--shard and --shards go with --stage"),
        None => None,
    };
    let sharded = matches!(part, Some(RunPart::InvertShard(_) | RunPart::DecodeShard(_)));
    if !a.dry_run && !sharded {
        expanse::pipeline::check_run_folder(&out, a.resume)?;
    }
    let plan = Plan::new(config, &a.config)?;
    if part.is_none() || a.dry_run {
        print!("{}", plan.describe(&out));
    }
    if a.dry_run {
        return Ok(());
    }
    if let Some(part) = part {
        let opts = RunOptions { resume: a.resume, echo: true, latent_cache: None };
        let outcome = plan.execute_part(&a.config, &out, part, &opts)?;
        if let Some(r) = &outcome.shard {
            println!("{} shard {}/{}: {} batch(es) in {:.1} s", r.stage, r.index, r.count, r.batches.len(), outcome.seconds);
        } else {
            println!("{} stage(s) run, {} kept, {:.1} s", outcome.ran.len(), outcome.kept.len(), outcome.seconds);
        }
        if let Some(summary) = &outcome.summary {
            print!("\n{}", summary.text);
        }
        return Ok(());
    }
    let opts = RunOptions { resume: a.resume, echo: true, latent_cache: None };
    let earlier_run = out.join("manifest.json").is_file();
    let summary = match plan.execute(&a.config, &out, &opts) {
        Ok(s) => s,
        Err(e @ expanse::Error::Refused(_)) => return Err(e.into()),
        Err(e) if earlier_run && !a.resume => return Err(e.into()),
        Err(e) if out.join("manifest.json").is_file() => {
            return Err(anyhow::Error::new(e).context(format!(
                "the run stopped; finished stages are kept in {}: fix the cause and continue with `expanse run {} --out {} --resume`",
                out.display(),
                a.config.display(),
                out.display()
            )))
        }
        Err(e) => return Err(anyhow::Error::new(e).context("the run did not start; nothing was written")),
    };
    println!();
    print!("{}", summary.text);
    println!(
        "\n{} stage(s) run, {} kept from an earlier invocation, {:.1} s; everything is in {}",
        summary.ran.len(),
        summary.kept.len(),
        summary.seconds,
        summary.dir.display()
    );
    Ok(())
}
