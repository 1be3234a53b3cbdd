//! The run configuration: one TOML file naming the model, the domains and every choice of every
//! stage. Unknown keys and impossible values are errors naming the key, raised before any work.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::{HduSelector, Selection};
use crate::prep::{PrepOptions, PrepSpec};
use crate::prior::geometry::{CandidateKind, Debias, NormMode, SamplingSpec, TestSpec};
use crate::prior::PriorKind;
use crate::stats::battery::{parse_range, BatteryOptions, Statistic};
use crate::stats::{Apodization, PowerSpectrumOptions};

/// Output formats synthetic maps can be written in.
pub const FORMATS: [&str; 3] = ["fits", "h5", "npy"];

/// A whole run: `[run]`, `[model]`, `[inversion]`, `[prior]`, `[sampling]`, `[validation]` and
/// one `[[domain]]` table per set of maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub run: RunSection,
    pub model: ModelSection,
    #[serde(default)]
    pub inversion: InversionSection,
    #[serde(default)]
    pub prior: PriorSection,
    #[serde(default)]
    pub sampling: SamplingSection,
    #[serde(default)]
    pub refinement: RefinementSection,
    #[serde(default)]
    pub validation: ValidationSection,
    #[serde(rename = "domain", default)]
    pub domains: Vec<DomainSection>,
}

/// `[refinement]`: L-BFGS on wavelet moments after decoding ([`crate::refine`]); on by default
/// (the real-field benchmark in FIDELITY.md measured why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefinementSection {
    /// Iterations per map; 0 decodes without refinement.
    #[serde(default = "d_refine_iterations")]
    pub iterations: usize,
    /// Wavelet scales (default ⌊log2 min(side)⌋ − 2) and angles over π (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scales: Option<usize>,
    #[serde(default = "d_refine_angles")]
    pub angles: usize,
    /// Also constrain the moments of the pixel-scale increments (differences along x and y, the
    /// Laplacian): how sparse the finest structure is ([`crate::stats::wavelet_moments`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub increments: bool,
}

impl Default for RefinementSection {
    fn default() -> Self {
        RefinementSection {
            iterations: d_refine_iterations(),
            scales: None,
            angles: d_refine_angles(),
            increments: false,
        }
    }
}

impl RefinementSection {
    /// The refinement's options; a refused value is an [`Error::Setting`] naming its key.
    pub fn options(&self) -> Result<crate::refine::RefineOptions> {
        if self.angles == 0 {
            return Err(Error::setting("angles", "must be at least 1"));
        }
        if self.scales == Some(0) {
            return Err(Error::setting("scales", "must be at least 1"));
        }
        Ok(crate::refine::RefineOptions {
            iterations: self.iterations,
            scales: self.scales,
            angles: self.angles,
            increments: self.increments,
        })
    }
}

/// `[run]`: name, the one seed every random choice derives from, output formats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Run name (default: the config file's stem); the default run folder is `runs/<name>`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub seed: u64,
    /// Formats of the synthetic maps, any of `fits`, `h5`, `npy`; the first is used by validation.
    #[serde(default = "d_formats")]
    pub formats: Vec<String>,
    /// Worker threads (`--threads` on the command line wins; default RAYON_NUM_THREADS, else
    /// every core); recorded in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection { name: None, seed: 0, formats: d_formats(), threads: None }
    }
}

/// `[model]`: the frozen diffusers model folder and where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// diffusers folder (config.json + diffusion_pytorch_model.safetensors), relative to the config file.
    pub path: PathBuf,
    #[serde(default = "d_cpu")]
    pub device: String,
    #[serde(default = "d_f32")]
    pub dtype: String,
    /// Maps per UNet evaluation (also the checkpoint unit).
    #[serde(default = "d_batch")]
    pub batch: usize,
}

impl ModelSection {
    /// The device, precision and batch, checked; a refused value is an [`Error::Setting`].
    pub fn check(&self) -> Result<()> {
        let device = self.device.parse::<crate::model::DeviceSpec>().map_err(|e| e.for_key("device"))?;
        let dtype = crate::model::parse_dtype(&self.dtype).map_err(|e| e.for_key("dtype"))?;
        if dtype == candle_core::DType::BF16 && device == crate::model::DeviceSpec::Cpu {
            crate::model::cpu_bf16_check().map_err(|e| e.for_key("dtype"))?;
        }
        if self.batch == 0 {
            return Err(Error::setting("batch", "must be at least 1"));
        }
        Ok(())
    }

    /// The model, checked and loaded on its device in its dtype: every tensor its config names
    /// must be in the checkpoint with its shape.
    pub fn load(&self) -> Result<crate::model::Ddpm> {
        self.check()?;
        let device = crate::model::parse_device(&self.device)?;
        crate::model::Ddpm::load(&self.path, &device, crate::model::parse_dtype(&self.dtype)?)
    }
}

/// `[inversion]`: the DDIM grid (paper grid of `steps` points up to `t0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InversionSection {
    #[serde(default = "d_steps")]
    pub steps: usize,
    #[serde(default = "d_t0")]
    pub t0: usize,
    #[serde(default)]
    pub fixed_point: usize,
    /// Clip x̂₀ to [−C, C] at every step of inversion and decoding.
    #[serde(default)]
    pub clip: Option<f64>,
    /// Clip x̂₀ to [−C, C] only when decoding synthetic latents (overrides `clip` there).
    #[serde(default)]
    pub decode_clip: Option<f64>,
}

impl InversionSection {
    /// The grid and clipping, checked; a refused value is an [`Error::Setting`] naming its key.
    pub fn check(&self) -> Result<()> {
        if self.t0 == 0 {
            if self.steps != 1 {
                return Err(Error::setting(
                    "t0",
                    format!(
                        "t0 = 0 (no diffusion: the prior is fitted to the maps themselves) needs steps = 1, got {}",
                        self.steps
                    ),
                ));
            }
        } else if self.steps < 2 {
            return Err(Error::setting(
                "steps",
                format!("the grid needs at least 2 points (or 1 point with t0 = 0: no diffusion), got {}", self.steps),
            ));
        }
        if self.steps - 1 > self.t0 {
            return Err(Error::setting("steps", format!("{} grid points need t0 >= {}", self.steps, self.steps - 1)));
        }
        for (key, clip) in [("clip", self.clip), ("decode_clip", self.decode_clip)] {
            if let Some(c) = clip {
                if !(c > 0.0 && c.is_finite()) {
                    return Err(Error::setting(key, format!("must be a positive number, got {c}")));
                }
            }
        }
        Ok(())
    }

    /// The inversion's DDIM grid on `model`'s schedule, checked (`decode_clip` is the decoding
    /// stage's business).
    pub fn ddim(&self, model: &crate::model::Ddpm) -> Result<crate::diffusion::Ddim> {
        self.check()?;
        crate::diffusion::Ddim::for_model(model, self.steps, self.t0, self.fixed_point, self.clip)
    }
}

impl Default for InversionSection {
    fn default() -> Self {
        InversionSection { steps: d_steps(), t0: d_t0(), fixed_point: 0, clip: None, decode_clip: None }
    }
}

/// `[prior]`: the covariance model (`scalar`, `diagonal` or `lowrank:K`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorSection {
    #[serde(default = "d_kind", with = "crate::numerics::keyword")]
    pub kind: PriorKind,
}

impl Default for PriorSection {
    fn default() -> Self {
        PriorSection { kind: d_kind() }
    }
}

/// `[sampling]`: how many synthetic maps per domain and the geometric tests they must pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSection {
    #[serde(default = "d_count")]
    pub count: usize,
    /// `draw` (from the prior) or `slerp` (between a real latent and a draw).
    #[serde(default = "d_candidates", with = "crate::numerics::keyword")]
    pub candidates: CandidateKind,
    /// Real latents per test.
    #[serde(default = "d_k")]
    pub k: usize,
    /// Accepted central band of the leave-one-out statistics, percent.
    #[serde(default = "d_band")]
    pub band: [f64; 2],
    /// Any of `distance`, `origin`, `pair`, `norm`; empty keeps every candidate (no filter).
    #[serde(default = "d_tests")]
    pub tests: Vec<String>,
    /// Most candidates examined per domain.
    #[serde(default = "d_budget")]
    pub budget: usize,
    /// The few-shot correction of the draws: `rings`, `global` or `none` (`true` and `false`,
    /// from older configs, mean `global` and `none`).
    #[serde(default = "d_debias", with = "debias_key")]
    pub debias: Debias,
    /// `match` (each candidate's norm drawn from the real latents' norm distribution) or `free`.
    #[serde(default = "d_norm", with = "crate::numerics::keyword")]
    pub norm: NormMode,
}

/// `sampling.debias`: a name, or a boolean as older configs wrote it (`true` is `global`, `false`
/// is `none`); written back as the name.
mod debias_key {
    use serde::{Deserializer, Serializer};

    use crate::prior::geometry::Debias;

    pub fn serialize<S: Serializer>(value: &Debias, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Debias, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Debias;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("rings, global or none (true and false, from older configs, mean global and none)")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Debias, E> {
                Ok(if v { Debias::Global } else { Debias::None })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Debias, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl SamplingSection {
    /// The section as the sampler takes it, with the stage's `seed`, checked; a refused value is
    /// an [`Error::Setting`] naming its key.
    pub fn spec(&self, seed: u64) -> Result<SamplingSpec> {
        if self.count == 0 {
            return Err(Error::setting("count", "must be at least 1"));
        }
        if self.k < 2 {
            return Err(Error::setting("k", format!("needs at least 2 real latents per test, got {}", self.k)));
        }
        let [lo, hi] = self.band;
        crate::prior::geometry::check_band(lo, hi).map_err(|e| e.for_key("band"))?;
        if self.budget < self.count {
            return Err(Error::setting(
                "budget",
                format!("{} candidates cannot give {} maps", self.budget, self.count),
            ));
        }
        Ok(SamplingSpec {
            count: self.count,
            candidates: self.candidates,
            tests: TestSpec::parse(self.k, (lo, hi), &self.tests).map_err(|e| e.for_key("tests"))?,
            budget: self.budget,
            seed,
            debias: self.debias,
            norm: self.norm,
        })
    }
}

impl Default for SamplingSection {
    fn default() -> Self {
        SamplingSection {
            count: d_count(),
            candidates: d_candidates(),
            k: d_k(),
            band: d_band(),
            tests: d_tests(),
            budget: d_budget(),
            debias: d_debias(),
            norm: d_norm(),
        }
    }
}

/// `[validation]`: power-spectrum options (TurbuStat conventions) and the battery of statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSection {
    /// `tukey:ALPHA` or `hanning`.
    #[serde(default, with = "crate::numerics::optional_keyword")]
    pub apodize: Option<Apodization>,
    /// [LOW, HIGH] in pixel⁻¹.
    #[serde(default)]
    pub fit_range: Option<[f64; 2]>,
    /// Gaussian beam FWHM in pixels to divide out.
    #[serde(default)]
    pub beam_fwhm: Option<f64>,
    /// Statistics of the battery (default: all but `bispectrum`, which is opt-in; `[]` for none).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::numerics::keyword_list")]
    pub statistics: Option<Vec<Statistic>>,
    /// Minkowski thresholds `LO:HI:N` in σ (default -3:3:25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<String>,
    /// Peak-height bin edges `LO:HI:N` in σ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_edges: Option<String>,
    /// Scattering scales J (default from the map size) and angles L (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scattering_j: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scattering_l: Option<usize>,
    /// Random triangle orientations per (k1, k2) of the bispectrum (TurbuStat's nsamples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bispectrum_samples: Option<usize>,
    /// Bootstrap resamples of whole maps (default 200) and their seed (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resamples: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_seed: Option<u64>,
    /// Folds (default 5) and repeats (default 10) of the classifier two-sample test, seeded by
    /// `bootstrap_seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c2st_folds: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c2st_repeats: Option<usize>,
}

impl ValidationSection {
    /// The power-spectrum options; a refused value is an [`Error::Setting`] naming its key.
    pub fn spectrum_options(&self) -> Result<PowerSpectrumOptions> {
        let v = self;
        if let Some([lo, hi]) = v.fit_range {
            crate::stats::power_spectrum::check_fit_range(lo, hi).map_err(|e| e.for_key("fit_range"))?;
        }
        if let Some(b) = v.beam_fwhm {
            if !(b > 0.0 && b.is_finite()) {
                return Err(Error::setting("beam_fwhm", format!("must be a positive number of pixels, got {b}")));
            }
        }
        Ok(PowerSpectrumOptions {
            apodize: v.apodize,
            beam_fwhm: v.beam_fwhm,
            fit_range: v.fit_range.map(|[a, b]| (a, b)),
            log_bins: false,
            binsize: None,
        })
    }

    /// The validation options: power spectrum, battery and bootstrap; a refused value is an
    /// [`Error::Setting`] naming its key.
    pub fn battery_options(&self) -> Result<BatteryOptions> {
        let v = self;
        let at_least = |key: &str, value: Option<usize>, least: usize| match value {
            Some(n) if n < least => Err(Error::setting(key, format!("must be at least {least}, got {n}"))),
            n => Ok(n),
        };
        let mut o = BatteryOptions { spectrum: self.spectrum_options()?, ..BatteryOptions::default() };
        if let Some(list) = &v.statistics {
            o.statistics = list.clone();
        }
        if let Some(t) = &v.thresholds {
            o.thresholds = parse_range(t).map_err(|e| e.for_key("thresholds"))?;
        }
        if let Some(t) = &v.peak_edges {
            o.peak_edges = parse_range(t).map_err(|e| e.for_key("peak_edges"))?;
        }
        o.scattering_j = at_least("scattering_j", v.scattering_j, 1)?;
        if let Some(l) = at_least("scattering_l", v.scattering_l, 1)? {
            o.scattering_l = l;
        }
        if let Some(n) = at_least("bispectrum_samples", v.bispectrum_samples, 1)? {
            o.bispectrum.nsamples = n;
        }
        if let Some(n) = at_least("resamples", v.resamples, 10)? {
            o.resamples = n;
        }
        if let Some(seed) = v.bootstrap_seed {
            o.seed = seed;
        }
        o.c2st.seed = o.seed;
        o.c2st.folds = v.c2st_folds.unwrap_or(o.c2st.folds);
        o.c2st.repeats = v.c2st_repeats.unwrap_or(o.c2st.repeats);
        o.c2st.check()?;
        Ok(o)
    }
}

/// An HDU given as an index or an EXTNAME.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HduKey {
    Index(usize),
    Name(String),
}

/// `[[domain]]`: one set of maps, read, normalized and expanded together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSection {
    /// Letters, digits, `_` and `-`: it names the domain's files.
    pub name: String,
    /// FITS/HDF5/NPY files, folders (their map files) or glob patterns, relative to the config
    /// file; after reading, the files in sorted order.
    pub inputs: Vec<PathBuf>,
    #[serde(default)]
    pub hdu: Option<HduKey>,
    #[serde(default)]
    pub dataset: Option<String>,
    /// Use only the first this many maps (input order, before tiling).
    #[serde(default)]
    pub max_maps: Option<usize>,
    /// `linear`, `log10` or `asinh`.
    #[serde(default = "d_linear")]
    pub transform: String,
    /// `minmax` or `percentile:LOW,HIGH`.
    #[serde(default = "d_minmax")]
    pub range: String,
    #[serde(default)]
    pub offset: Option<f64>,
    #[serde(default)]
    pub softening: Option<f64>,
    /// `X0,Y0,WIDTH,HEIGHT` or `center:SIZE`.
    #[serde(default)]
    pub crop: Option<String>,
    /// `SIZE` or `SIZE:STRIDE` (an integer `SIZE` is taken too).
    #[serde(default, deserialize_with = "tile_key")]
    pub tile: Option<String>,
    /// Side in pixels to resample to (a string of digits is taken too).
    #[serde(default, deserialize_with = "size_key")]
    pub size: Option<usize>,
    /// Model channels each map is copied into (default: the model's `in_channels`).
    #[serde(default)]
    pub channels: Option<usize>,
    /// Consecutive maps are bands of one image; channel c takes band `band_map[c]`.
    #[serde(default)]
    pub band_map: Option<Vec<usize>>,
    /// Maps (tiles, crops) with a larger fraction of blank pixels are dropped (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blank: Option<f64>,
}

/// `tile`: `64`, `"64"` or `"64:32"`.
fn tile_key<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(
                "a tile size as an integer (tile = 64) or a string \"SIZE\" / \"SIZE:STRIDE\" (tile = \"64:32\")",
            )
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
    }
    d.deserialize_any(V)
}

/// `size`: `64` or `"64"`.
fn size_key<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<usize>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a side in pixels as a positive integer (size = 64; \"64\" is taken too)")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
            usize::try_from(v).map(Some).map_err(|_| E::custom("size is too large"))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
            usize::try_from(v).map(Some).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
            v.trim().parse::<usize>().map(Some).map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(V)
}

fn d_formats() -> Vec<String> {
    vec!["fits".into()]
}
fn d_cpu() -> String {
    "cpu".into()
}
fn d_f32() -> String {
    "f32".into()
}
fn d_batch() -> usize {
    crate::model::DEFAULT_BATCH
}
fn d_steps() -> usize {
    crate::diffusion::DEFAULT_STEPS
}
fn d_t0() -> usize {
    crate::diffusion::DEFAULT_T0
}
fn d_kind() -> PriorKind {
    PriorKind::DEFAULT
}
fn d_refine_iterations() -> usize {
    crate::refine::DEFAULT_ITERATIONS
}

fn d_refine_angles() -> usize {
    8
}

fn d_count() -> usize {
    crate::prior::geometry::DEFAULT_COUNT
}
fn d_candidates() -> CandidateKind {
    CandidateKind::Draw
}
fn d_k() -> usize {
    crate::prior::geometry::DEFAULT_K
}
fn d_band() -> [f64; 2] {
    crate::prior::geometry::DEFAULT_BAND
}
fn d_tests() -> Vec<String> {
    crate::prior::geometry::TEST_NAMES.iter().map(|t| t.to_string()).collect()
}
fn d_budget() -> usize {
    crate::prior::geometry::DEFAULT_BUDGET
}
fn d_debias() -> Debias {
    Debias::DEFAULT
}
fn d_norm() -> NormMode {
    NormMode::DEFAULT
}
fn d_linear() -> String {
    "linear".into()
}
fn d_minmax() -> String {
    "minmax".into()
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn lexical_normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// An error about `key` of the config file `path`.
fn bad(path: &Path, key: &str, cause: impl std::fmt::Display) -> Error {
    Error::content(path, format!("{key}: {cause}"))
}

/// A setting's error as one of the config file `path` (`path: section.key: cause`).
fn in_file(path: &Path, e: Error) -> Error {
    Error::content(path, e)
}

impl RunConfig {
    /// Reads and checks a config file; relative paths become absolute (relative to the file),
    /// defaults are filled in, so that the result, written back, describes the run completely.
    pub fn read(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::open(path, crate::io::io_cause(e)))?;
        let mut config: RunConfig =
            toml::from_str(&text).map_err(|e| Error::format(path, toml_error(&text, &e)).with_source(e))?;
        let base = std::path::absolute(path)
            .map_err(|e| Error::open(path, e))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        config.resolve(path, &base)?;
        config.check(path)?;
        Ok(config)
    }

    pub(crate) fn resolve(&mut self, path: &Path, base: &Path) -> Result<()> {
        let abs = |p: &Path| lexical_normalize(&base.join(p));
        if self.run.name.is_none() {
            self.run.name =
                Some(path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into()));
        }
        self.model.path = abs(&self.model.path);
        for (i, d) in self.domains.iter_mut().enumerate() {
            let mut inputs = Vec::new();
            for p in &d.inputs {
                inputs.extend(
                    crate::io::expand_input(&abs(p))
                        .map_err(|cause| bad(path, &format!("domain[{i}].inputs"), cause))?,
                );
            }
            d.inputs = inputs;
        }
        Ok(())
    }

    /// Every check that needs no file but the config itself.
    pub(crate) fn check(&self, path: &Path) -> Result<()> {
        let name = self.name();
        if !is_file_name(name) {
            return Err(bad(path, "run.name", format!("'{name}' must be letters, digits, '_' or '-'")));
        }
        if self.run.threads == Some(0) {
            return Err(bad(path, "run.threads", "must be at least 1"));
        }
        if self.run.formats.is_empty() {
            return Err(bad(path, "run.formats", "name at least one of fits, h5, npy"));
        }
        for (i, f) in self.run.formats.iter().enumerate() {
            if !FORMATS.contains(&f.as_str()) {
                return Err(bad(path, "run.formats", format!("unknown format '{f}' (fits, h5, npy)")));
            }
            if self.run.formats[..i].contains(f) {
                return Err(bad(path, "run.formats", format!("'{f}' is listed twice")));
            }
        }
        let section = |key: &str, check: Result<()>| check.map_err(|e| in_file(path, e.for_key(key)));
        section("model", self.model.check())?;
        section("inversion", self.inversion.check())?;
        section("sampling", self.sampling.spec(0).map(drop))?;
        section("refinement", self.refinement.options().map(drop))?;
        section("validation", self.battery_options().map(drop))?;
        if self.domains.is_empty() {
            return Err(bad(path, "domain", "no [[domain]] table: name at least one set of maps"));
        }
        for (i, d) in self.domains.iter().enumerate() {
            let key = |k: &str| format!("domain[{i}].{k}");
            if !is_file_name(&d.name) {
                return Err(bad(path, &key("name"), format!("'{}' must be letters, digits, '_' or '-'", d.name)));
            }
            if self.domains[..i].iter().any(|o| o.name == d.name) {
                return Err(bad(path, &key("name"), format!("two domains are named '{}'", d.name)));
            }
            if d.inputs.is_empty() {
                return Err(bad(path, &key("inputs"), "name at least one file"));
            }
            if d.max_maps == Some(0) {
                return Err(bad(path, &key("max_maps"), "must be at least 1"));
            }
            if d.channels.is_some() && d.band_map.is_some() {
                return Err(bad(path, &key("band_map"), "give channels or band_map, not both"));
            }
            if d.channels == Some(0) {
                return Err(bad(path, &key("channels"), "must be at least 1"));
            }
            if let Some(HduKey::Name(h)) = &d.hdu {
                h.parse::<HduSelector>().map_err(|e| bad(path, &key("hdu"), e))?;
            }
            self.prep_spec(d, 1).map_err(|e| in_file(path, e.for_key(&format!("domain[{i}]"))))?;
        }
        Ok(())
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        self.run.name.as_deref().unwrap_or("run")
    }

    /// The validation options: power spectrum, battery and bootstrap.
    pub fn battery_options(&self) -> Result<BatteryOptions> {
        self.validation.battery_options()
    }

    /// Which HDU or dataset of the domain's files to read.
    pub fn selection(d: &DomainSection) -> Result<Selection> {
        let hdu = match &d.hdu {
            Some(HduKey::Index(i)) => Some(HduSelector::Index(*i)),
            Some(HduKey::Name(n)) => Some(n.parse::<HduSelector>()?),
            None => None,
        };
        Ok(Selection { hdu, dataset: d.dataset.clone() })
    }

    /// The domain's normalization and geometry; `model_channels` is used when the domain names
    /// neither `channels` nor `band_map`.
    pub fn prep_spec(&self, d: &DomainSection, model_channels: usize) -> Result<PrepSpec> {
        PrepSpec::parse(&PrepOptions {
            transform: &d.transform,
            range: &d.range,
            offset: d.offset,
            softening: d.softening,
            crop: d.crop.as_deref(),
            tile: d.tile.as_deref(),
            size: d.size,
            channels: d.channels.unwrap_or(model_channels),
            band_map: d.band_map.as_deref(),
            max_blank: d.max_blank,
        })
    }

    /// The config as TOML (what `config.toml` of a run holds).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the config serializes")
    }
}

/// A TOML error on one line: where, then what.
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            match key_at(text, span.start) {
                Some(key) => format!("invalid config at line {line}, column {column}: {key}: {msg}"),
                None => format!("invalid config at line {line}, column {column}: {msg}"),
            }
        }
        None => format!("invalid config: {msg}"),
    }
}

/// The dotted key of the `key = value` line holding byte `at` of a TOML text, with the table
/// header above it: `sampling.norm`, `domain[1].transform` (None for a value on a line of its own,
/// inside a multi-line array).
fn key_at(text: &str, at: usize) -> Option<String> {
    let start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let (key, _) = text[start..].lines().next()?.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with(['#', '[']) {
        return None;
    }
    let mut header: Option<String> = None;
    let mut arrays: std::collections::BTreeMap<String, usize> = Default::default();
    for line in text[..start].lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            let n = arrays.entry(name.trim().to_string()).or_insert(0);
            header = Some(format!("{}[{}]", name.trim(), *n));
            *n += 1;
        } else if let Some(name) = line.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            header = Some(name.trim().to_string());
        }
    }
    Some(match header {
        Some(h) => format!("{h}.{key}"),
        None => key.to_string(),
    })
}

fn is_file_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Dotted keys whose values differ between two configs (for resume errors).
pub fn differing_keys(a: &RunConfig, b: &RunConfig) -> Vec<String> {
    let va = toml::Value::try_from(a).expect("serializes");
    let vb = toml::Value::try_from(b).expect("serializes");
    let mut out = Vec::new();
    diff(&va, &vb, "", &mut out);
    out
}

fn diff(a: &toml::Value, b: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match (a, b) {
        (toml::Value::Table(ta), toml::Value::Table(tb)) => {
            let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                match (ta.get(k), tb.get(k)) {
                    (Some(x), Some(y)) => diff(x, y, &key(k), out),
                    _ => out.push(key(k)),
                }
            }
        }
        (toml::Value::Array(xa), toml::Value::Array(xb)) if xa.len() == xb.len() && xa.iter().all(|v| v.is_table()) => {
            for (i, (x, y)) in xa.iter().zip(xb).enumerate() {
                diff(x, y, &format!("{prefix}[{i}]"), out);
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("c.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const MINIMAL: &str = "[model]\npath = \"m\"\n[[domain]]\nname = \"a\"\ninputs = [\"x.fits\"]\n";

    #[test]
    fn defaults_are_filled_and_paths_resolved_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = RunConfig::read(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(c.name(), "c");
        assert_eq!((c.inversion.steps, c.inversion.t0), (5, 50));
        assert_eq!(c.sampling.band, [5.0, 95.0]);
        assert_eq!(c.prior.kind, PriorKind::Empirical);
        assert_eq!((c.sampling.debias, c.sampling.norm), (Debias::Rings, NormMode::Match));
        assert_eq!(c.sampling.tests, ["distance", "origin", "pair", "norm"]);
        // Older configs wrote the few-shot correction as a boolean.
        let old = RunConfig::read(&write(dir.path(), &format!("{MINIMAL}[sampling]\ndebias = false\n"))).unwrap();
        assert_eq!(old.sampling.debias, Debias::None);
        assert!(c.model.path.is_absolute() && c.model.path.ends_with("m"));
        assert_eq!(c.domains[0].inputs[0], std::path::absolute(dir.path()).unwrap().join("x.fits"));
        let again: RunConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn inputs_take_folders_and_patterns_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        let maps = dir.path().join("maps");
        std::fs::create_dir(&maps).unwrap();
        for f in ["b.fits", "a.fits", "c.h5", "notes.txt"] {
            std::fs::write(maps.join(f), "").unwrap();
        }
        let with = |inputs: &str| RunConfig::read(&write(dir.path(), &MINIMAL.replace("[\"x.fits\"]", inputs)));
        let names = |c: &RunConfig| {
            c.domains[0]
                .inputs
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&with("[\"maps/*.fits\"]").unwrap()), ["a.fits", "b.fits"]);
        assert_eq!(names(&with("[\"maps\"]").unwrap()), ["a.fits", "b.fits", "c.h5"]);
        assert_eq!(names(&with("[\"x.fits\", \"maps/?.h5\"]").unwrap()), ["x.fits", "c.h5"]);
        let e = with("[\"maps/*.npy\"]").unwrap_err().to_string();
        assert!(e.contains("domain[0].inputs") && e.contains("matches no file"), "{e}");
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let e = with("[\"empty\"]").unwrap_err().to_string();
        assert!(e.contains("holds no map file"), "{e}");
    }

    #[test]
    fn unknown_keys_and_impossible_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (format!("{MINIMAL}[sampling]\ncuont = 3\n"), "cuont"),
            (format!("{MINIMAL}[inversion]\nsteps = 1\n"), "inversion.steps"),
            (format!("{MINIMAL}[inversion]\nsteps = 20\nt0 = 10\n"), "inversion.steps"),
            (format!("{MINIMAL}[sampling]\nband = [50, 20]\n"), "sampling.band"),
            (format!("{MINIMAL}[sampling]\ntests = [\"angle\"]\n"), "sampling.tests"),
            (format!("{MINIMAL}[sampling]\ndebias = \"always\"\n"), "sampling.debias"),
            (format!("{MINIMAL}[sampling]\nnorm = \"fixed\"\n"), "sampling.norm"),
            (format!("{MINIMAL}[inversion]\ndecode_clip = -1.0\n"), "inversion.decode_clip"),
            (format!("{MINIMAL}[prior]\nkind = \"full\"\n"), "prior.kind"),
            (format!("{MINIMAL}[run]\nformats = [\"png\"]\n"), "run.formats"),
            (MINIMAL.replace("path = \"m\"", "path = \"m\"\nbatch = 0"), "model.batch"),
            (MINIMAL.replace("\"a\"", "\"a b\""), "domain[0].name"),
            (format!("{MINIMAL}transform = \"sqrt\"\n"), "domain[0].transform"),
            (format!("{MINIMAL}[[domain]]\nname = \"a\"\ninputs = [\"y.fits\"]\n"), "two domains"),
            ("[[domain]]\nname = \"a\"\ninputs = [\"x.fits\"]\n".to_string(), "model"),
        ];
        for (text, key) in cases {
            let err = RunConfig::read(&write(dir.path(), &text)).unwrap_err().to_string();
            assert!(err.contains(key), "{text}\n→ {err}");
            assert!(err.contains("c.toml"), "{err}");
        }
    }

    #[test]
    fn tile_and_size_take_integers_and_strings() {
        let dir = tempfile::tempdir().unwrap();
        for (line, tile, size) in [
            ("tile = 32", Some("32"), None),
            ("tile = \"32:16\"", Some("32:16"), None),
            ("size = 32", None, Some(32)),
            ("size = \"32\"", None, Some(32)),
        ] {
            let c = RunConfig::read(&write(dir.path(), &format!("{MINIMAL}{line}\n"))).unwrap();
            assert_eq!((c.domains[0].tile.as_deref(), c.domains[0].size), (tile, size), "{line}");
        }
        for (line, says) in [
            ("tile = 1.5", "\"SIZE:STRIDE\""),
            ("size = \"big\"", "positive integer"),
            ("size = -3", "positive integer"),
        ] {
            let e = RunConfig::read(&write(dir.path(), &format!("{MINIMAL}{line}\n"))).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("line 6"), "{line}: {e}");
        }
    }

    #[test]
    fn differing_keys_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunConfig::read(&write(dir.path(), MINIMAL)).unwrap();
        let mut b = a.clone();
        b.sampling.count = 3;
        b.domains[0].transform = "log10".into();
        assert_eq!(differing_keys(&a, &b), vec!["domain[0].transform", "sampling.count"]);
        assert!(differing_keys(&a, &a).is_empty());
    }

    #[test]
    fn a_value_of_the_wrong_kind_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let two = format!("{MINIMAL}[[domain]]\nname = \"b\"\ninputs = [\"y.fits\"]\ntransform = 3\n");
        for (text, says) in [
            (
                format!("{MINIMAL}[sampling]\nnorm = \"fixed\"\n"),
                "sampling.norm: unknown norm mode 'fixed' (free or match)",
            ),
            (format!("{MINIMAL}[sampling]\ndebias = 2\n"), "sampling.debias: invalid type: integer `2`"),
            (format!("{MINIMAL}[validation]\napodize = \"cosine\"\n"), "validation.apodize: apodization 'cosine'"),
            (two, "domain[1].transform: invalid type: integer `3`"),
        ] {
            let e = RunConfig::read(&write(dir.path(), &text)).unwrap_err().to_string();
            assert!(e.contains(says), "{text}\n→ {e}");
        }
    }

    #[test]
    fn lexical_normalization_drops_dot_dot() {
        assert_eq!(lexical_normalize(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
    }
}
