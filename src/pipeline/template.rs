//! `expanse init`: a commented run config for a user's maps. The maps are read (so that a file
//! that cannot be read fails here, not in the run), their shape and values choose the
//! normalization and geometry, and every other key is written with its default and what it
//! does. The result reads as a [`RunConfig`] that plans.

use std::path::{Path, PathBuf};

use super::RunConfig;
use crate::error::{Error, Result};
use crate::io::Selection;
use crate::model::ModelFolder;

/// What `expanse init` is given.
#[derive(Debug, Clone)]
pub struct TemplateOptions {
    /// The domain's inputs (files, folders or patterns), as the user typed them.
    pub inputs: Vec<PathBuf>,
    /// The model folder.
    pub model: PathBuf,
    /// The domain's name (default: the first input's file stem).
    pub domain: Option<String>,
    /// Where the config goes: paths in it are written relative to its folder.
    pub out: PathBuf,
}

/// What the maps told the template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateChoices {
    pub maps: usize,
    pub shape: (usize, usize),
    pub transform: &'static str,
    pub why_transform: String,
    /// `crop = "center:S"` when the maps' sides are not multiples of the model's.
    pub crop: Option<usize>,
    /// `sampling.k`, lowered for few maps.
    pub k: usize,
}

/// `p` relative to folder `base` when it lies inside it, else as given (absolute).
fn relative_to(p: &Path, base: &Path) -> String {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    abs.strip_prefix(&base).map(Path::to_path_buf).unwrap_or(abs).to_string_lossy().into_owned()
}

/// Letters, digits, `_` and `-` of `s` (others become `_`); `maps` when nothing is left.
fn file_name(s: &str) -> String {
    let t: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let t = t.trim_matches('_').to_string();
    if t.is_empty() {
        "maps".into()
    } else {
        t
    }
}

/// The normalization for values `v` (finite pixels of every map): log10 for positive values
/// spanning more than a factor 30 between the 0.5th and 99.5th percentiles (column densities,
/// intensities), else linear.
fn choose_transform(v: &mut [f32]) -> (&'static str, String) {
    if v.is_empty() {
        return ("linear", "no finite pixel".into());
    }
    v.sort_by(f32::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64;
    let (min, lo, hi) = (v[0] as f64, q(0.005), q(0.995));
    if min > 0.0 && hi / lo > 30.0 {
        ("log10", format!("every pixel is positive and the 0.5–99.5 % range spans a factor {:.0}", hi / lo))
    } else if min > 0.0 {
        ("linear", format!("positive values spanning only a factor {:.1} (0.5–99.5 %)", hi / lo))
    } else {
        ("linear", format!("values go down to {min:.3e}: log10 would need an offset; asinh is the other choice"))
    }
}

/// Reads the inputs and the model and chooses what depends on them.
pub fn choose(opts: &TemplateOptions) -> Result<TemplateChoices> {
    let folder = ModelFolder::read(&opts.model)?;
    let mut inputs = Vec::new();
    for p in &opts.inputs {
        inputs.extend(crate::io::expand_input(p).map_err(Error::Invalid)?);
    }
    let (maps, _) = crate::ingest::read_inputs(&inputs, &Selection::default())?;
    let (h, w) = maps[0].data.dim();
    if let Some(m) = maps.iter().find(|m| m.data.dim() != (h, w)) {
        return Err(Error::content(
            &m.source.path,
            format!(
                "maps of {}x{} pixels beside maps of {h}x{w}: give one size per domain (or set crop/size in the \
                    config)",
                m.data.dim().0,
                m.data.dim().1
            ),
        ));
    }
    if maps.len() < 3 {
        return Err(Error::Invalid(format!(
            "{} map(s) read: the prior and the geometric tests need at least 3 maps per domain",
            maps.len()
        )));
    }
    let mut values: Vec<f32> = maps.iter().flat_map(|m| m.data.iter().copied()).filter(|v| v.is_finite()).collect();
    let (transform, why_transform) = choose_transform(&mut values);
    let m = folder.config.size_multiple();
    let crop = if h % m != 0 || w % m != 0 || h != w {
        let side = h.min(w) / m * m;
        if side == 0 {
            return Err(Error::Invalid(format!("maps of {h}x{w} pixels are smaller than the model's unit of {m}")));
        }
        Some(side)
    } else {
        None
    };
    let k = crate::prior::geometry::DEFAULT_K.min(maps.len() - 1);
    Ok(TemplateChoices { maps: maps.len(), shape: (h, w), transform, why_transform, crop, k })
}

/// The commented config text for `opts` with `choices`.
pub fn render(opts: &TemplateOptions, c: &TemplateChoices) -> String {
    let base = opts.out.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    let name = file_name(opts.out.file_stem().map(|s| s.to_string_lossy()).as_deref().unwrap_or("run"));
    let domain = file_name(&opts.domain.clone().unwrap_or_else(|| {
        opts.inputs[0].file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "maps".into())
    }));
    let inputs: Vec<String> = opts.inputs.iter().map(|p| format!("{:?}", relative_to(p, &base))).collect();
    let geometry = match c.crop {
        Some(s) => format!(
            "# The model takes sides that are multiples of its unit; the maps are {}x{}: the central {s}x{s}.\n\
             crop = \"center:{s}\"\n",
            c.shape.0, c.shape.1
        ),
        None => format!(
            "# The maps run at their own size ({}x{}). Alternatives: size = 64 (resample), tile = \"64\" or\n\
             # tile = \"64:32\" (tiles of 64, stride 32), crop = \"center:128\" or crop = \"X0,Y0,WIDTH,HEIGHT\".\n",
            c.shape.0, c.shape.1
        ),
    };
    let k_note = if c.k < crate::prior::geometry::DEFAULT_K {
        format!(" (default {}; lowered: {} maps)", crate::prior::geometry::DEFAULT_K, c.maps)
    } else {
        String::new()
    };
    let tests: Vec<String> = crate::prior::geometry::TEST_NAMES.iter().map(|t| format!("{t:?}")).collect();
    format!(
        r#"# expanse run config written by `expanse init` for {maps} map(s) of {h}x{w} pixels.
# Check it with `expanse run {config} --dry-run` (reads everything, prints the plan and its cost),
# then `expanse run {config}`. Paths are relative to this file. Every key below is at its
# default unless a comment says why not; `expanse run --help` lists the commands.

[run]
name = "{name}"
# The one seed: every random choice derives from it (recorded in the outputs).
seed = 0
# Synthetic map formats, any of "fits", "h5", "npy"; the first is validated.
formats = ["fits"]
# threads = 4          # worker threads (default: every core); results do not depend on it

[model]
# A diffusers UNet2DModel folder, a guided-diffusion (ADM) or original DDPM checkpoint folder.
path = {model:?}
device = "cpu"         # "cuda", "cuda:N" or "metal" with a GPU build
dtype = "f32"          # "f16", "bf16" (on the CPU: AVX-512 BF16 only, 1.4-1.8x faster, within 0.75 % of f32)
batch = {batch}              # maps per UNet evaluation; also the checkpoint unit

[inversion]
steps = {steps}             # DDIM grid points (the paper: 80)
t0 = {t0}               # top of the grid: the model redraws what noise of this level hides; 50 keeps it
                      # to the finest scales (FIDELITY.md), the paper uses 900
# clip = 1.0           # clip the predicted x0 to [-C, C] while inverting and decoding
# decode_clip = 1.0    # ... only while decoding synthetic latents

[prior]
# "empirical", "stationary", "scalar" (the paper's), "diagonal" or "lowrank:K".
kind = "{prior}"

[sampling]
count = {count}             # synthetic maps per domain
candidates = "draw"    # or "slerp" (between a real latent and a draw: closer copies)
k = {k}                 # real latents per geometric test{k_note}
band = [{band_lo:.1}, {band_hi:.1}]    # accepted central band (percent) of the leave-one-out statistics
tests = [{tests}]
budget = {budget}         # most candidates examined per domain
debias = "{debias}"       # few-shot correction of the mean: "rings", "global", "none"
norm = "{norm}"         # each candidate's norm drawn from the real latents' ("free": not)

[refinement]
iterations = {iterations}      # L-BFGS iterations per map toward the real maps' wavelet moments; 0: none
angles = 8
# scales = 4           # default: floor(log2(side)) - 2

[validation]
# apodize = "tukey:0.3"          # before the power spectrum
# fit_range = [0.02, 0.3]        # pixel^-1, for the slope fit
# beam_fwhm = 2.0                # pixels, divided out of the spectra
# statistics = ["power_spectrum", "pdf", "minkowski", "peaks", "scattering"]   # add "bispectrum"
# resamples = 200                # bootstrap resamples; bootstrap_seed = 0
# c2st_folds = 5                 # classifier two-sample test; c2st_repeats = 10

[[domain]]
name = "{domain}"
inputs = [{inputs}]
# hdu = 1 / dataset = "maps"     # which image or dataset of the files holds the maps
# max_maps = 100                 # use only the first N maps
# Normalization into the model's [-1, 1], inverted on output: {why}.
transform = "{transform}"            # "linear", "log10" or "asinh"
range = "minmax"               # or "percentile:0.5,99.5"
# offset = 0.0 / softening = 1.0 # log10 offset / asinh softening (default: fitted)
{geometry}"#,
        maps = c.maps,
        h = c.shape.0,
        w = c.shape.1,
        config = opts.out.display(),
        model = relative_to(&opts.model, &base),
        batch = crate::model::DEFAULT_BATCH,
        steps = crate::diffusion::DEFAULT_STEPS,
        t0 = crate::diffusion::DEFAULT_T0,
        prior = crate::prior::PriorKind::DEFAULT,
        count = crate::prior::geometry::DEFAULT_COUNT,
        k = c.k,
        band_lo = crate::prior::geometry::DEFAULT_BAND[0],
        band_hi = crate::prior::geometry::DEFAULT_BAND[1],
        tests = tests.join(", "),
        budget = crate::prior::geometry::DEFAULT_BUDGET,
        debias = crate::prior::geometry::Debias::DEFAULT,
        norm = crate::prior::geometry::NormMode::DEFAULT,
        iterations = crate::refine::DEFAULT_ITERATIONS,
        inputs = inputs.join(", "),
        why = c.why_transform,
        transform = c.transform,
    )
}

/// Reads the maps and the model, and writes the commented config to `opts.out` (refusing an
/// existing file unless `overwrite`); the written file is read back as a run config before it
/// is kept. Returns what the maps chose.
pub fn write(opts: &TemplateOptions, overwrite: bool) -> Result<TemplateChoices> {
    if opts.out.exists() && !overwrite {
        return Err(Error::write(&opts.out, "already exists (pass --force to replace it)"));
    }
    let choices = choose(opts)?;
    let text = render(opts, &choices);
    let files = crate::io::AtomicFiles::new(std::slice::from_ref(&opts.out))?;
    std::fs::write(files.temp(0), &text).map_err(|e| Error::write(&opts.out, e))?;
    // Read back from the temporary, which lies beside the target (relative paths resolve as they
    // will; the run's name is written out, not taken from the file name).
    RunConfig::read(&files.temp(0))
        .map_err(|e| Error::Invalid(format!("the written config does not read back (a bug): {e}")))?;
    files.commit()?;
    Ok(choices)
}
