//! The arguments of every subcommand (clap derive).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use expanse::error::Error;
use expanse::io::{HduSelector, Selection};
use expanse::model;
use expanse::pipeline::config::{
    InversionSection, ModelSection, RefinementSection, SamplingSection, ValidationSection,
};
use expanse::prior::geometry;

#[derive(Args)]
pub struct FidelityArgs {
    /// Benchmark configuration (TOML): a base run config, [benchmark] seeds and [[variant]]s (see
    /// configs/fidelity.toml).
    pub config: PathBuf,
    /// Benchmark folder: one run folder per variant and seed, the latent cache, fidelity.md/.json/.csv. Rerunning into
    /// it keeps finished runs.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Run only these variants (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub variants: Option<Vec<String>>,
    /// Run only these of the benchmark's seeds (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
}

#[derive(Args)]
pub struct InitArgs {
    /// The maps of one domain: FITS/HDF5/NPY files, folders or glob patterns (quoted).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The config file to write.
    #[arg(long, short, default_value = "expanse.toml")]
    pub out: PathBuf,
    /// Model folder (default: the shipped base model, when this binary was built from a checkout
    /// that still holds it).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The domain's name (default: the first input's file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Replace an existing config file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct RunArgs {
    /// Run configuration (TOML): `expanse init MAPS...` writes one with every key commented.
    pub config: PathBuf,
    /// Run folder (default: runs/<run name>). It must be new or empty, unless --resume.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Continue a run in its folder: finished stages are kept and checkpointed batches reused;
    /// after a change of config, inputs or model, the stages that read what changed are redone.
    #[arg(long)]
    pub resume: bool,
    /// Synthetic maps per domain (overrides sampling.count).
    #[arg(long)]
    pub count: Option<usize>,
    /// The run's seed (overrides run.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Check the config, inputs and model, print the plan and its cost, and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Run one part of the run, as one Slurm job does (see `expanse slurm`): ingest; invert (one
    /// shard); fit (assembles the inversion shards, fits, samples); decode (one shard); validate
    /// (assembles the decoding shards, validates, writes the summary).
    #[arg(long)]
    pub stage: Option<String>,
    /// The shard of --stage invert/decode, I/N (0 <= I < N). Default: SLURM_ARRAY_TASK_ID /
    /// SLURM_ARRAY_TASK_COUNT.
    #[arg(long)]
    pub shard: Option<String>,
    /// Number of shards that --stage fit/validate assemble.
    #[arg(long)]
    pub shards: Option<usize>,
    /// A folder of inverted latents shared between runs (default: $EXPANSE_LATENT_CACHE): a
    /// domain whose model-space maps were inverted before on the same grid with the same model,
    /// by any run, is read from it instead of inverted again.
    #[arg(long)]
    pub latent_cache: Option<PathBuf>,
}

#[derive(Args)]
pub struct SlurmArgs {
    /// Run configuration (TOML).
    pub config: PathBuf,
    /// Run folder (default: runs/<run name>); the scripts go to DIR/slurm/, their logs to DIR/slurm/logs/.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Tasks of each job array (inversion and decoding).
    #[arg(long)]
    pub shards: usize,
    /// Submit the jobs with sbatch (in order, with --dependency=afterok) and print their ids.
    #[arg(long)]
    pub submit: bool,
    /// Wall-time limit of every job (sbatch --time).
    #[arg(long)]
    pub time: Option<String>,
    /// Memory of every job (sbatch --mem), e.g. 8G.
    #[arg(long)]
    pub mem: Option<String>,
    /// Partition of every job.
    #[arg(long)]
    pub partition: Option<String>,
    /// Account charged for every job.
    #[arg(long)]
    pub account: Option<String>,
    /// GPUs of every job (sbatch --gres=gpu:G); set model.device = "cuda" in the config.
    #[arg(long)]
    pub gpus: Option<usize>,
    /// Cores of every job (sbatch --cpus-per-task), also the worker threads of each run.
    #[arg(long)]
    pub cpus_per_task: Option<usize>,
    /// Another #SBATCH argument for every job, e.g. --sbatch-arg=--qos=long (repeatable).
    #[arg(long = "sbatch-arg", allow_hyphen_values = true)]
    pub sbatch_arg: Vec<String>,
}

/// Which image of a FITS file or dataset of an HDF5 file holds the maps.
#[derive(Args)]
pub struct SelectionArgs {
    /// FITS HDU to read: an index (0 = primary) or an EXTNAME. Default: the first HDU holding an image.
    #[arg(long)]
    pub hdu: Option<String>,
    /// HDF5 dataset path, e.g. /sim/snap_010/density (leading slash optional). Default: `maps`,
    /// or the only 2-D/3-D numeric dataset.
    #[arg(long)]
    pub dataset: Option<String>,
}

impl SelectionArgs {
    pub fn selection(&self) -> Result<Selection> {
        Ok(Selection {
            hdu: self.hdu.as_deref().map(str::parse::<HduSelector>).transpose()?,
            dataset: self.dataset.clone(),
        })
    }
}

#[derive(Args)]
pub struct SpectrumArgs {
    /// Apodize before the FFT: tukey:ALPHA or hanning.
    #[arg(long)]
    pub apodize: Option<String>,
    /// Fit range in pixel⁻¹, LOW:HIGH (fit over LOW < k <= HIGH). Default: 2/max(shape) to the last bin.
    #[arg(long, value_name = "LOW:HIGH", value_parser = pair::<':'>, allow_hyphen_values = true)]
    pub fit_range: Option<[f64; 2]>,
    /// Divide by the power spectrum of a Gaussian beam of this FWHM (pixels).
    #[arg(long, allow_hyphen_values = true)]
    pub beam_fwhm: Option<f64>,
}

/// Two numbers written `LOW<SEP>HIGH` (`0.05:0.4`, `5,95`).
fn pair<const SEP: char>(s: &str) -> std::result::Result<[f64; 2], String> {
    let (lo, hi) = s.split_once(SEP).ok_or_else(|| format!("expected LOW{SEP}HIGH (two numbers)"))?;
    let number = |v: &str| v.trim().parse::<f64>().map_err(|_| format!("'{v}' is not a number"));
    Ok([number(lo)?, number(hi)?])
}

/// A keyword flag's value (`--candidates slerp`) read as the config reads its key, the error
/// naming the flag.
pub fn keyword<T: std::str::FromStr<Err = Error>>(key: &str, value: &str) -> Result<T> {
    value.parse::<T>().map_err(|e| e.for_key(key).flag().into())
}

impl SpectrumArgs {
    /// The flags as the `[validation]` section of a run config (its power-spectrum keys).
    pub fn section(&self) -> Result<ValidationSection> {
        Ok(ValidationSection {
            apodize: self.apodize.as_deref().map(|a| keyword("apodize", a)).transpose()?,
            fit_range: self.fit_range,
            beam_fwhm: self.beam_fwhm,
            ..Default::default()
        })
    }
}

impl BatteryArgs {
    /// These flags and the spectrum's as the `[validation]` section of a run config
    /// (`--statistics none` is the config's empty list).
    pub fn section(&self, spectrum: &SpectrumArgs) -> Result<ValidationSection> {
        let statistics = match &self.statistics {
            Some(v) if v.len() == 1 && v[0] == "none" => Some(Vec::new()),
            Some(v) => Some(v.iter().map(|s| keyword("statistics", s)).collect::<Result<_>>()?),
            None => None,
        };
        Ok(ValidationSection {
            statistics,
            thresholds: self.thresholds.clone(),
            peak_edges: self.peak_edges.clone(),
            scattering_j: self.scattering_j,
            scattering_l: self.scattering_l,
            bispectrum_samples: self.bispectrum_samples,
            resamples: self.resamples,
            bootstrap_seed: self.bootstrap_seed,
            c2st_folds: self.c2st_folds,
            c2st_repeats: self.c2st_repeats,
            ..spectrum.section()?
        })
    }
}

#[derive(Args)]
pub struct PowerSpectrumArgs {
    /// Maps (FITS/HDF5/NPY map or stack, all of one size).
    #[arg(required = true)]
    pub maps: Vec<PathBuf>,
    /// CSV with columns k,power,power_std,count (k in pixel⁻¹); for several maps the ensemble
    /// (mean power per bin, standard deviation across maps, total pixel count).
    #[arg(long, short)]
    pub out: PathBuf,
    /// JSON with slope, slope_err, low_cut, high_cut, nbins (and per-map slopes).
    #[arg(long)]
    pub summary: Option<PathBuf>,
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[command(flatten)]
    pub spectrum: SpectrumArgs,
}

#[derive(Args)]
pub struct RefineArgs {
    /// Real maps (FITS/HDF5/NPY stack) whose wavelet moments the synthetic maps are brought to.
    #[arg(long)]
    pub real: PathBuf,
    /// Synthetic maps of the same size (e.g. `samples/<domain>.fits` of a run).
    #[arg(long)]
    pub synthetic: PathBuf,
    /// Output file; the format follows the extension (.fits, .h5, .npy).
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// L-BFGS iterations per map.
    #[arg(long, default_value_t = expanse::refine::DEFAULT_ITERATIONS)]
    pub iterations: usize,
    /// Wavelet scales (default ⌊log2 min(side)⌋ − 2) and angles over π.
    #[arg(long)]
    pub scales: Option<usize>,
    #[arg(long, default_value_t = 8)]
    pub angles: usize,
    /// Also constrain the moments of the pixel-scale increments (differences, Laplacian).
    #[arg(long)]
    pub increments: bool,
}

impl RefineArgs {
    /// The flags as the `[refinement]` section of a run config.
    pub fn section(&self) -> RefinementSection {
        RefinementSection {
            iterations: self.iterations,
            scales: self.scales,
            angles: self.angles,
            increments: self.increments,
        }
    }
}

#[derive(Args)]
pub struct ValidateArgs {
    /// Real maps (FITS/HDF5/NPY stack).
    #[arg(long)]
    pub real: PathBuf,
    /// Synthetic maps (e.g. written by `expanse sample`).
    #[arg(long)]
    pub synthetic: PathBuf,
    /// Output folder: report.json, report.md, power_spectra/pdfs/maps/battery .png and .svg.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Which HDU / dataset of both files (the real and the synthetic) holds the maps.
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[command(flatten)]
    pub spectrum: SpectrumArgs,
    #[command(flatten)]
    pub battery: BatteryArgs,
}

/// The battery's options (the `[validation]` keys of a run config).
#[derive(Args)]
pub struct BatteryArgs {
    /// Statistics of the battery, comma-separated: power_spectrum, pdf, minkowski, peaks, bispectrum,
    /// scattering (default: all but bispectrum, the costly one), or none.
    #[arg(long, value_delimiter = ',')]
    pub statistics: Option<Vec<String>>,
    /// Minkowski thresholds in σ, LO:HI:N (default -3:3:25).
    #[arg(long, allow_hyphen_values = true)]
    pub thresholds: Option<String>,
    /// Peak-height bin edges in σ, LO:HI:N (default -5:5:41).
    #[arg(long, allow_hyphen_values = true)]
    pub peak_edges: Option<String>,
    /// Scattering scales J (default: from the map size).
    #[arg(long)]
    pub scattering_j: Option<usize>,
    /// Scattering angles L (default 8).
    #[arg(long)]
    pub scattering_l: Option<usize>,
    /// Random triangle orientations per (k1, k2) of the bispectrum (TurbuStat's nsamples, default 100).
    #[arg(long)]
    pub bispectrum_samples: Option<usize>,
    /// Bootstrap resamples of whole maps (default 200).
    #[arg(long)]
    pub resamples: Option<usize>,
    /// Seed of the bootstrap resamples and of the classifier test's folds (default 0).
    #[arg(long)]
    pub bootstrap_seed: Option<u64>,
    /// Folds of the classifier two-sample test (default 5).
    #[arg(long)]
    pub c2st_folds: Option<usize>,
    /// Repeats of the classifier two-sample test, each with new folds (default 10).
    #[arg(long)]
    pub c2st_repeats: Option<usize>,
}

/// Maps in and the CSV out, for the one-statistic commands.
#[derive(Args)]
pub struct StatisticArgs {
    /// Maps (FITS/HDF5/NPY map or stack); every map of every file counts once.
    #[arg(required = true)]
    pub maps: Vec<PathBuf>,
    /// CSV: the x column, the statistic averaged over the maps, then `_std` columns (standard deviation across maps).
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub selection: SelectionArgs,
}

#[derive(Args)]
pub struct MinkowskiArgs {
    #[command(flatten)]
    pub common: StatisticArgs,
    /// Thresholds ν in σ of each map about its own mean, LO:HI:N.
    #[arg(long, default_value = "-3:3:25", allow_hyphen_values = true)]
    pub thresholds: String,
}

#[derive(Args)]
pub struct PeaksArgs {
    #[command(flatten)]
    pub common: StatisticArgs,
    /// Bin edges of peak heights in σ, LO:HI:N (default -5:5:41).
    #[arg(long, visible_alias = "edges", allow_hyphen_values = true)]
    pub peak_edges: Option<String>,
}

#[derive(Args)]
pub struct BispectrumArgs {
    #[command(flatten)]
    pub common: StatisticArgs,
    /// Random triangle orientations per (k1, k2) (TurbuStat's nsamples).
    #[arg(long, visible_alias = "samples")]
    pub bispectrum_samples: Option<usize>,
    /// Seed of those orientations.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Subtract each map's mean first (TurbuStat's mean_subtract).
    #[arg(long)]
    pub mean_subtract: bool,
}

#[derive(Args)]
pub struct ScatteringArgs {
    #[command(flatten)]
    pub common: StatisticArgs,
    /// Scales J (default: from the map size).
    #[arg(long, visible_alias = "j")]
    pub scattering_j: Option<usize>,
    /// Angles L (default 8).
    #[arg(long, visible_alias = "l")]
    pub scattering_l: Option<usize>,
}

#[derive(Args)]
pub struct FitArgs {
    /// Latents of each domain (written by `expanse invert`); one file = one domain.
    #[arg(long, required = true, num_args = 1..)]
    pub latents: Vec<PathBuf>,
    /// Prior file to write (HDF5, .h5). Diagnostics go beside it: <stem>.diagnostics.json and
    /// <stem>.diagnostics.png/.svg.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Covariance model: scalar (the paper's σ² I), diagonal, lowrank:K (probabilistic PCA),
    /// stationary (per-mode channel cross-spectra) or empirical (the sample covariance).
    #[arg(long, default_value_t = expanse::prior::PriorKind::DEFAULT.to_string())]
    pub kind: String,
    /// Domain names, one per latents file (default: the file stems).
    #[arg(long, value_delimiter = ',')]
    pub names: Option<Vec<String>>,
}

#[derive(Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prior file written by `expanse fit`.
    #[arg(long)]
    pub prior: PathBuf,
    /// Domain in the prior file (needed when it holds several).
    #[arg(long)]
    pub domain: Option<String>,
    /// The domain's real latents (the file the prior was fitted on): targets and tests use them.
    #[arg(long)]
    pub latents: PathBuf,
    /// Number of synthetic maps to make.
    #[arg(long, default_value_t = geometry::DEFAULT_COUNT)]
    pub count: usize,
    /// Synthetic maps in physical units (.fits, .h5 or .npy); the accepted latents go to
    /// <stem>.latents.npy and a picture to <stem>.png/.svg.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Candidates: draw (from the prior) or slerp (between a real latent and a draw).
    #[arg(long, default_value = "draw")]
    pub candidates: String,
    /// Real latents per test.
    #[arg(long, default_value_t = geometry::DEFAULT_K)]
    pub k: usize,
    /// Accepted central band of the leave-one-out statistics, in percent: LOW,HIGH (default 5,95, as
    /// in a run config).
    #[arg(long, value_name = "LOW,HIGH", value_parser = pair::<','>, allow_hyphen_values = true)]
    pub band: Option<[f64; 2]>,
    /// Tests to apply: any of distance, origin, pair, norm.
    #[arg(long, value_delimiter = ',', default_values_t = geometry::TEST_NAMES.map(String::from))]
    pub tests: Vec<String>,
    /// Most candidates to examine before giving up.
    #[arg(long, default_value_t = geometry::DEFAULT_BUDGET)]
    pub budget: usize,
    /// Seed of every random choice (targets, candidates).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Few-shot correction of the draws: rings (James–Stein per ring of equal |k|), global
    /// (one factor for the whole mean) or none (the fitted N(μ̂, Σ) as is).
    #[arg(long, default_value_t = geometry::Debias::DEFAULT.to_string())]
    pub debias: String,
    /// Candidate norms: match (drawn from the real latents' norm distribution) or free.
    #[arg(long, default_value_t = geometry::NormMode::DEFAULT.to_string())]
    pub norm: String,
}

impl SampleArgs {
    /// The flags as the `[sampling]` section of a run config.
    pub fn section(&self) -> Result<SamplingSection> {
        Ok(SamplingSection {
            count: self.count,
            candidates: keyword("candidates", &self.candidates)?,
            k: self.k,
            band: self.band.unwrap_or(geometry::DEFAULT_BAND),
            tests: self.tests.clone(),
            budget: self.budget,
            debias: keyword("debias", &self.debias)?,
            norm: keyword("norm", &self.norm)?,
        })
    }
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Map side in pixels (default: the model's sample_size).
    #[arg(long)]
    pub size: Option<usize>,
    /// Timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// CPU operations: fast (expanse's convolution and group-norm kernels) or candle (candle's own).
    #[arg(long, default_value = "fast")]
    pub kernels: String,
    /// Also time each kind of operation over the repetitions and print the table.
    #[arg(long)]
    pub profile: bool,
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model folder: diffusers (config.json + diffusion_pytorch_model.safetensors [+ scheduler_config.json]),
    /// guided-diffusion ADM (adm.json + *.pt) or original DDPM (ddpm.json + *.ckpt).
    #[arg(long)]
    pub model: PathBuf,
    /// cpu, cuda, cuda:N or metal (GPU backends need the `cuda` / `metal` cargo feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute precision: f32, f16 or bf16 (where the backend supports it).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Maps per UNet evaluation.
    #[arg(long, default_value_t = model::DEFAULT_BATCH)]
    pub batch: usize,
}

impl ModelArgs {
    /// The flags as the `[model]` section of a run config.
    pub fn section(&self) -> ModelSection {
        ModelSection {
            path: self.model.clone(),
            device: self.device.clone(),
            dtype: self.dtype.clone(),
            batch: self.batch,
        }
    }
}

#[derive(Args, Clone)]
pub struct GridArgs {
    /// Grid points N: levels floor(k·t0/(N−1)), k = 0…N−1 (inversion takes N−1 steps, generation N).
    #[arg(long, default_value_t = expanse::diffusion::DEFAULT_STEPS)]
    pub steps: usize,
    /// Top level of the grid (the latents' noise level; the paper uses 900).
    #[arg(long, default_value_t = expanse::diffusion::DEFAULT_T0)]
    pub t0: usize,
    /// Clip the predicted clean image to [−C, C] at every step (default: no clipping).
    #[arg(long, allow_hyphen_values = true)]
    pub clip: Option<f64>,
}

impl GridArgs {
    /// The flags as the `[inversion]` section of a run config.
    pub fn section(&self, fixed_point: usize) -> InversionSection {
        InversionSection { steps: self.steps, t0: self.t0, fixed_point, clip: self.clip, decode_clip: None }
    }
}

#[derive(Args)]
pub struct UnetEvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Input .npy, float32 (B, C, H, W).
    #[arg(long)]
    pub input: PathBuf,
    /// Timestep given to the network.
    #[arg(long)]
    pub timestep: f64,
    /// Output .npy: the raw model output (B, out_channels, H, W).
    #[arg(long, short)]
    pub out: PathBuf,
}

/// What inversion reads and how hard it works.
#[derive(Args)]
pub struct InversionArgs {
    /// Model-space maps: a stack written by `expanse ingest`, or a (B, C, H, W) float array.
    #[arg(long)]
    pub input: PathBuf,
    /// Fixed-point iterations per inversion step (0 = plain DDIM inversion; each costs one more UNet call per step).
    #[arg(long, default_value_t = 0)]
    pub fixed_point: usize,
}

#[derive(Args)]
pub struct InvertArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub grid: GridArgs,
    #[command(flatten)]
    pub inversion: InversionArgs,
    /// Output latents (.npy, .h5 or .fits), (B, C, H, W).
    #[arg(long, short)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub grid: GridArgs,
    /// Latents at level t0 (B, C, H, W), e.g. written by `expanse invert`.
    #[arg(long)]
    pub latents: PathBuf,
    /// DDIM η: 0 = deterministic; > 0 adds noise drawn from --seed.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub eta: f64,
    /// Seed of the noise when η > 0.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output maps in model space (.npy, .h5 or .fits), (B, C, H, W).
    #[arg(long, short)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub grid: GridArgs,
    #[command(flatten)]
    pub inversion: InversionArgs,
    /// Also write the reconstructions (model space).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Also write the per-map errors as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Files to inspect (FITS, HDF5 or NPY; the format is detected from the content).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct IngestArgs {
    /// Input files (FITS, HDF5 or NPY). A 2-D image is one map; each plane of a 3-D cube is one map.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output file; its extension picks the format: .npy, .h5 or .fits.
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Write the maps exactly as read: float32 (N, H, W), NaN where blank, no normalization, no geometry.
    #[arg(long)]
    pub raw: bool,
    /// Intensity transform into [-1, 1], fitted over all inputs together: linear, log10 or asinh.
    #[arg(long, default_value = "linear")]
    pub transform: String,
    /// Range sent to [-1, 1]: `minmax` or `percentile:LOW,HIGH` (e.g. percentile:0.5,99.5).
    #[arg(long, default_value = "minmax")]
    pub range: String,
    /// log10 offset added before the logarithm. Default: 0 for positive data, else lifts the
    /// minimum to 0.1 % of the range.
    #[arg(long, allow_hyphen_values = true)]
    pub offset: Option<f64>,
    /// asinh softening scale (physical units). Default: 1.4826 × the median absolute deviation.
    #[arg(long, allow_hyphen_values = true)]
    pub softening: Option<f64>,
    /// Crop before anything else: X0,Y0,WIDTH,HEIGHT (0-based column, row) or center:SIZE.
    #[arg(long)]
    pub crop: Option<String>,
    /// Cut each map into SIZE×SIZE tiles every STRIDE pixels: SIZE or SIZE:STRIDE.
    #[arg(long)]
    pub tile: Option<String>,
    /// Resize square maps to SIZE×SIZE (area-averaging when shrinking, bilinear when enlarging).
    #[arg(long)]
    pub size: Option<usize>,
    /// Model channels: each single-band map is copied into every channel (3 for RGB models).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Treat runs of consecutive maps as bands of one image and map them onto channels:
    /// channel c takes band BAND_MAP[c], e.g. `2,1,0` for a 3-band cube stored in reverse.
    #[arg(long, value_delimiter = ',', conflicts_with = "channels")]
    pub band_map: Option<Vec<usize>>,
    /// Drop maps (after crop and tiling) with more than this fraction of blank pixels (default 0.5).
    #[arg(long, allow_hyphen_values = true)]
    pub max_blank: Option<f64>,
    /// Also draw up to 16 of the maps (physical units, after geometry) to PREVIEW.png and PREVIEW.svg.
    #[arg(long)]
    pub preview: Option<PathBuf>,
    /// Use only the first N maps read (in input order, before tiling).
    #[arg(long)]
    pub max_maps: Option<usize>,
    /// Also print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SimulateArgs {
    /// Output file (.fits, .h5 or .npy).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Number of maps.
    #[arg(long, default_value_t = 32)]
    pub count: usize,
    /// Map side in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Power-spectrum index β of the Gaussian field behind ln N (P ∝ k^-β).
    #[arg(long, default_value_t = 3.0)]
    pub beta: f64,
    /// Standard deviation of ln N (the log-width of the lognormal).
    #[arg(long, default_value_t = 1.0)]
    pub sigma_ln: f64,
    /// Mean column density in cm⁻².
    #[arg(long, default_value = "1e21")]
    pub mean: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}
