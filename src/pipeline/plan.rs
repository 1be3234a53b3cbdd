//! The plan of a run: a config checked against its model and inputs, the UNet evaluations of
//! each stage, the memory estimate and the `--dry-run` text.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{stage_names, RunConfig};
use crate::diffusion::NoiseSchedule;
use crate::error::{Error, Result};
use crate::ingest;
use crate::model::{self, ModelFolder};

/// One domain as planned: what is read and the model-space stack it becomes.
#[derive(Debug, Clone)]
pub struct DomainPlan {
    pub name: String,
    /// Maps read from the inputs (before `max_maps`).
    pub maps_read: usize,
    /// Images in the model-space stack.
    pub images: usize,
    /// (C, H, W) of each image.
    pub shape: [usize; 3],
    pub units: Option<String>,
    pub transform: String,
    /// What ingesting the maps will warn about (dropped blank maps, a log10 offset moved by a
    /// few pixels).
    pub warnings: Vec<String>,
}

/// A checked run: the resolved config, the model folder, the grid and the domains.
#[derive(Debug, Clone)]
pub struct Plan {
    pub config: RunConfig,
    pub model: ModelFolder,
    pub grid: Vec<usize>,
    pub domains: Vec<DomainPlan>,
}

/// A run's time, extrapolated from measurements on this machine ([`Plan::time_estimate`]).
#[derive(Debug, Clone)]
pub struct TimeEstimate {
    pub threads: usize,
    pub domains: Vec<DomainTime>,
}

/// One domain's share of a [`TimeEstimate`].
#[derive(Debug, Clone)]
pub struct DomainTime {
    pub name: String,
    /// Seconds per map per UNet evaluation (one batch measured).
    pub unet_seconds_per_map: f64,
    /// Wall seconds of refinement per synthetic map (0 without refinement).
    pub refinement_seconds_per_map: f64,
    /// The domain's inversion, decoding and refinement.
    pub seconds: f64,
}

impl TimeEstimate {
    /// Every domain's time.
    pub fn total(&self) -> f64 {
        self.domains.iter().map(|d| d.seconds).sum()
    }

    /// The estimate in lines: the total, then how each domain's was measured.
    pub fn describe(&self) -> String {
        let mut t = format!(
            "time estimate ~{} on {} thread(s) (measured here, extrapolated; stages without the UNet add little)\n",
            crate::runtime::duration(self.total()),
            self.threads
        );
        for d in &self.domains {
            t.push_str(&format!(
                "  {}: ~{}: {:.3} s per map per UNet evaluation (one batch measured)",
                d.name,
                crate::runtime::duration(d.seconds),
                d.unet_seconds_per_map
            ));
            if d.refinement_seconds_per_map > 0.0 {
                t.push_str(&format!(
                    ", refinement ~{:.2} s per map (timed on noise maps; decoded maps often converge sooner)",
                    d.refinement_seconds_per_map
                ));
            }
            t.push('\n');
        }
        t
    }
}

/// Rough memory need of a run, MiB.
#[derive(Debug, Clone, Copy)]
pub struct MemoryEstimate {
    /// The program itself (libraries, fonts, buffers, rendering a figure), measured.
    pub runtime: f64,
    pub weights: f64,
    pub activations: f64,
    pub stacks: f64,
}

impl MemoryEstimate {
    pub fn total(&self) -> f64 {
        self.runtime + self.weights + self.activations + self.stacks
    }
}

const MIB: f64 = 1024.0 * 1024.0;
/// Peak resident memory of `expanse inspect` on a small file: the program's own footprint.
const PROCESS_MIB: f64 = 15.0;
/// Rendering a figure's PNG from its SVG at twice the size (pixmap, font database, encoder),
/// measured: the quickstart's peak went from 51 to 66 MiB when figures were rendered this way.
const FIGURE_MIB: f64 = 15.0;

/// The model folder of `config` and its inversion grid on the model's schedule.
fn model_and_grid(config: &RunConfig, config_path: &Path) -> Result<(ModelFolder, Vec<usize>)> {
    let folder = ModelFolder::read(&config.model.path)?;
    let train = NoiseSchedule::from_config(&folder.scheduler)?.len();
    let grid = crate::diffusion::paper_grid(config.inversion.steps, config.inversion.t0, train)
        .map_err(|e| Error::content(config_path, format!("inversion: {e}")).with_source(e))?;
    Ok((folder, grid))
}

/// The checks of a domain of `n` maps of `c` × `h` × `w` against the model and the config.
fn check_domain(
    config: &RunConfig,
    folder: &ModelFolder,
    config_path: &Path,
    name: &str,
    (n, c, h, w): (usize, usize, usize, usize),
) -> Result<()> {
    let who = format!("domain '{name}'");
    if c != folder.config.in_channels() {
        return Err(Error::content(
            config_path,
            format!("{}: {c} channel(s) but the model takes {}", who, folder.config.in_channels()),
        ));
    }
    let m = folder.config.size_multiple();
    if h % m != 0 || w % m != 0 {
        return Err(Error::content(
            config_path,
            format!("{}: maps of {h}x{w} pixels; the model needs sides divisible by {m} (set size or tile)", who),
        ));
    }
    if config.sampling.k + 1 > n {
        return Err(Error::content(
            config_path,
            format!(
                "sampling.k = {} needs at least {} maps per domain; {} has {n}",
                config.sampling.k,
                config.sampling.k + 1,
                who
            ),
        ));
    }
    if config.refinement.iterations > 0 {
        if let Some(j) = config.refinement.scales {
            if 1usize << j.min(63) > h.min(w) {
                return Err(Error::content(
                    config_path,
                    format!("refinement.scales = {j} needs maps of at least 2^{j} pixels a side; {who} has {h}x{w}"),
                ));
            }
        }
    }
    Ok(())
}

impl Plan {
    /// Loads the model's weights on the configured device and dtype: every tensor the config
    /// names must be in the checkpoint with its shape (what `--dry-run` and a run check before
    /// any stage writes).
    pub fn load_model(&self) -> Result<model::Ddpm> {
        self.config.model.load()
    }

    /// Checks a config against its model and inputs (reading them) before any work: the model
    /// folder, the grid against the schedule, every input, the normalization, the stack shapes
    /// against the model and the sampling K against the number of maps.
    pub fn new(config: RunConfig, config_path: &Path) -> Result<Plan> {
        let (folder, grid) = model_and_grid(&config, config_path)?;
        let mut domains = Vec::new();
        for d in &config.domains {
            let spec = config.prep_spec(d, folder.config.in_channels())?;
            let (mut maps, _) = ingest::read_inputs(&d.inputs, &RunConfig::selection(d)?)?;
            let maps_read = maps.len();
            if let Some(m) = d.max_maps {
                maps.truncate(m);
            }
            let (stack, _) = crate::prep::normalize(maps, &spec).map_err(|e| match e {
                Error::Invalid(m) => Error::content(config_path, format!("domain '{}': {m}", d.name)),
                other => other,
            })?;
            let (n, c, h, w) = stack.data.dim();
            check_domain(&config, &folder, config_path, &d.name, (n, c, h, w))?;
            domains.push(DomainPlan {
                name: d.name.clone(),
                maps_read,
                images: n,
                shape: [c, h, w],
                units: stack.normalization.units.clone(),
                transform: stack.normalization.transform.describe(),
                warnings: stack.warnings.clone(),
            });
        }
        Ok(Plan { config, model: folder, grid, domains })
    }

    /// The plan of a run whose domains `run_dir` has ingested: each domain's count and shape from
    /// its model-space stack (`stacks/<domain>.h5`, of which only the header is read), with the
    /// same checks, so that a job computing a share of the maps does not read them all. While a
    /// domain's stack is missing, [`Plan::new`].
    pub fn of_ingested(config: RunConfig, config_path: &Path, run_dir: &Path) -> Result<Plan> {
        let stacks: Vec<PathBuf> =
            config.domains.iter().map(|d| run_dir.join("stacks").join(format!("{}.h5", d.name))).collect();
        if !stacks.iter().all(|p| p.is_file()) {
            return Plan::new(config, config_path);
        }
        let (folder, grid) = model_and_grid(&config, config_path)?;
        let mut domains = Vec::new();
        for (d, path) in config.domains.iter().zip(&stacks) {
            let stack = crate::latents::StackFile::open(path)?;
            let normalization = stack
                .normalization
                .as_ref()
                .ok_or_else(|| Error::content(path, "not a normalized stack written by `expanse ingest`"))?;
            check_domain(&config, &folder, config_path, &d.name, stack.dim)?;
            let (n, c, h, w) = stack.dim;
            domains.push(DomainPlan {
                name: d.name.clone(),
                maps_read: n,
                images: n,
                shape: [c, h, w],
                units: normalization.units.clone(),
                transform: normalization.transform.describe(),
                warnings: Vec::new(),
            });
        }
        Ok(Plan { config, model: folder, grid, domains })
    }

    /// Measures the run's cost on this machine and extrapolates: one UNet evaluation of a batch
    /// of each domain's shape (after one to warm up) and, when the run refines, a few L-BFGS
    /// iterations on as many noise maps as there are worker threads.
    pub fn time_estimate(&self, model: &model::Ddpm) -> Result<TimeEstimate> {
        let mut domains = Vec::new();
        for d in &self.domains {
            let [c, h, w] = d.shape;
            let b = self.config.model.batch.min(d.images.max(1));
            let x = candle_core::Tensor::zeros((b, c, h, w), candle_core::DType::F32, &model.device)
                .map_err(model::model_err)?;
            let t = self.grid.last().copied().unwrap_or(0) as f64;
            model.forward(&x, t)?;
            let start = std::time::Instant::now();
            model.forward(&x, t)?.to_device(&candle_core::Device::Cpu).map_err(model::model_err)?;
            let per_map = start.elapsed().as_secs_f64() / b as f64;
            let evaluations = self.unet_evaluations(&format!("invert/{}", d.name))
                + self.unet_evaluations(&format!("decode/{}", d.name));
            let refinement = self.refinement_seconds_per_map(h, w)?;
            let seconds = per_map * evaluations as f64 + refinement * self.config.sampling.count as f64;
            domains.push(DomainTime {
                name: d.name.clone(),
                unet_seconds_per_map: per_map,
                refinement_seconds_per_map: refinement,
                seconds,
            });
        }
        Ok(TimeEstimate { threads: crate::runtime::threads(), domains })
    }

    /// Wall seconds per synthetic map of the refinement at `h × w` (0 without refinement), from
    /// 5 iterations on one noise map per worker thread.
    fn refinement_seconds_per_map(&self, h: usize, w: usize) -> Result<f64> {
        let r = &self.config.refinement;
        if r.iterations == 0 {
            return Ok(0.0);
        }
        const TRIAL: usize = 5;
        let threads = crate::runtime::threads().max(1);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut noise = || ndarray::Array2::from_shape_fn((h, w), |_| rng.random::<f64>());
        let real: Vec<_> = (0..threads.max(2)).map(|_| noise()).collect();
        let synthetic: Vec<_> = (0..threads).map(|_| noise()).collect();
        let options = crate::refine::RefineOptions { iterations: TRIAL, ..r.options()? };
        let start = std::time::Instant::now();
        crate::refine::refine(&synthetic, &real, &options)?;
        Ok(start.elapsed().as_secs_f64() / threads as f64 * r.iterations as f64 / TRIAL as f64)
    }

    /// UNet evaluations of a stage.
    pub fn unet_evaluations(&self, stage: &str) -> usize {
        let n = self.grid.len();
        let (kind, domain) = stage.split_once('/').unwrap_or((stage, ""));
        let Some(d) = self.domains.iter().find(|d| d.name == domain) else { return 0 };
        match kind {
            "invert" => d.images * (n - 1) * (1 + self.config.inversion.fixed_point),
            // One grid point at t0 = 0 is no diffusion: decoding returns the latents.
            "decode" if self.grid == [0] => 0,
            "decode" => self.config.sampling.count * n,
            _ => 0,
        }
    }

    /// The stage names of this run, in order.
    pub fn stages(&self) -> Vec<String> {
        stage_names(&self.domains.iter().map(|d| d.name.clone()).collect::<Vec<_>>())
    }

    /// Memory estimate: the process itself, the weights, the activations one batch needs in
    /// the UNet, and the stacks held in memory. Activations per map: the skip tensors kept for
    /// the up path, the attention score matrices, and six times the widest convolution input
    /// (candle's im2col buffers); the factor six was calibrated on the base model, whose
    /// measured peak resident memory is 46 MiB at batch 8 and 116 MiB at batch 32, and it gives
    /// 970 MiB for the google/ddpm-*-256 architecture at batch 1 against 964 MiB measured.
    pub fn memory_estimate(&self) -> MemoryEstimate {
        let weights = self.model.weights_file.metadata().map(|m| m.len() as f64).unwrap_or(0.0);
        // bf16 on the CPU keeps f32 activations (only the products' operands are bfloat16).
        let bytes = match (self.config.model.dtype.as_str(), self.config.model.device.as_str()) {
            ("bf16", "cpu") => 4.0,
            ("f16" | "bf16", _) => 2.0,
            _ => 4.0,
        };
        let levels = self.model.config.levels();
        let batch = self.config.model.batch as f64;
        let mut activations: f64 = 0.0;
        // What the largest part of the run holds besides the model (inversion and decoding read
        // and write their stacks a batch at a time). Ingesting holds the maps (float32) with a
        // sorted float64 copy of their pixels, then the model-space stack and its masks; fitting
        // every domain's latents (float32, 4 bytes a value); sampling one domain's, shared with
        // its empirical prior, and the accepted latents; the decoding's assembly the decoded
        // images (float32), then the refinement's float64 maps of one channel: the real and
        // synthetic maps, then the synthetic ones twice (before and after the descent; sorted
        // copies when the quantiles are matched), then the images rebuilt beside them; validation
        // both sets of maps in float64, at most 4 M pixels of each set twice over for the PDF
        // figure, and the memorization check's blocks of maps.
        let (mut ingest, mut fit, mut sample, mut decode, mut validate) = (0.0f64, 0.0, 0.0f64, 0.0f64, 0.0f64);
        let count = self.config.sampling.count as f64;
        let drawn = |maps: f64, hw: f64| 2.0 * 8.0 * (maps * hw).min(crate::validate::FIGURE_PIXELS as f64);
        for d in &self.domains {
            let [c, h, w] = d.shape;
            let (mut skips, mut widest, mut attention) = (0.0, 0.0f64, 0.0f64);
            for (l, level) in levels.iter().enumerate() {
                let hw = ((h >> l) * (w >> l)) as f64;
                skips += level.channels as f64 * hw * (level.blocks + 1) as f64;
                let below = levels[(l + 1).min(levels.len() - 1)].channels;
                widest = widest.max((level.channels + below) as f64 * hw);
                if let Some(heads) = level.heads {
                    attention = attention.max(heads as f64 * hw * hw);
                }
            }
            activations = activations.max(batch * (skips + attention + 6.0 * widest) * bytes);
            let (values, n) = ((c * h * w) as f64, d.images as f64);
            let hw = (h * w) as f64;
            ingest = ingest.max(12.0 * hw * n + 4.0 * values * n);
            fit += 4.0 * values * n;
            sample = sample.max(4.0 * values * (n + count));
            let refined = (8.0 * hw * (n + count)).max(16.0 * hw * count).max(8.0 * hw * count + 4.0 * values * count);
            decode = decode.max((4.0 * values * count).max(refined));
            let nearest = crate::stats::nearest::held_bytes(d.images, self.config.sampling.count, h * w);
            validate = validate.max(8.0 * hw * (n + count) + drawn(n, hw) + drawn(count, hw) + nearest);
        }
        let stacks = ingest.max(fit).max(sample).max(decode).max(validate);
        MemoryEstimate {
            runtime: PROCESS_MIB + FIGURE_MIB,
            weights: weights / MIB,
            activations: activations / MIB,
            stacks: stacks / MIB,
        }
    }

    /// What `--dry-run` prints: the domains, the grid, the stages with their UNet evaluations,
    /// and the memory estimate.
    pub fn describe(&self, run_dir: &Path) -> String {
        let c = &self.config;
        let mut t = String::new();
        t.push_str(&format!("run '{}' into {}\n", c.name(), run_dir.display()));
        let size =
            self.model.config.native_size().map(|[h, w]| format!("{h}x{w}")).unwrap_or_else(|| "any size".into());
        t.push_str(&format!(
            "model {} ({}, {} channel(s), trained at {size}, {} prediction), {} {}, batch {}\n",
            c.model.path.display(),
            self.model.format.as_str(),
            self.model.config.in_channels(),
            self.model.scheduler.prediction_type,
            c.model.device,
            c.model.dtype,
            c.model.batch
        ));
        if let Err(e) = model::parse_device(&c.model.device) {
            t.push_str(&format!("note: {e}\n"));
        }
        t.push_str(&format!(
            "grid {} points up to t0 = {} ({} inversion steps with {} fixed-point iteration(s), {} generation steps)\n",
            self.grid.len(),
            c.inversion.t0,
            self.grid.len() - 1,
            c.inversion.fixed_point,
            self.grid.len()
        ));
        t.push_str(&format!(
            "prior {}; {} synthetic map(s) per domain, candidates {} (norm {}, few-shot correction {}), tests {} (K \
                {}, band {}-{} %), seed {}\n",
            c.prior.kind,
            c.sampling.count,
            c.sampling.candidates,
            c.sampling.norm,
            c.sampling.debias,
            c.sampling.tests.join(","),
            c.sampling.k,
            c.sampling.band[0],
            c.sampling.band[1],
            c.run.seed
        ));
        let r = &c.refinement;
        if r.iterations > 0 {
            let scales = r.scales.map_or("default".to_string(), |j| j.to_string());
            t.push_str(&format!(
                "refinement: {} L-BFGS iteration(s) per synthetic map on the real maps' wavelet moments ({scales} \
                    scales, {} angles)\n",
                r.iterations, r.angles
            ));
        } else {
            t.push_str("refinement: none (decoded maps are written as they are)\n");
        }
        for (d, cd) in self.domains.iter().zip(&c.domains) {
            let files: Vec<String> = cd.inputs.iter().map(|p| p.display().to_string()).collect();
            t.push_str(&format!(
                "domain {}: {} map(s) read, {} image(s) of {}x{}x{} ({}, units {}) from {}\n",
                d.name,
                d.maps_read,
                d.images,
                d.shape[0],
                d.shape[1],
                d.shape[2],
                d.transform,
                d.units.as_deref().unwrap_or("-"),
                files.join(", ")
            ));
            for w in &d.warnings {
                t.push_str(&format!("warning: domain {}: {w}\n", d.name));
            }
            if let Some([h, w]) = self.model.config.native_size().filter(|&[h, w]| [h, w] != [d.shape[1], d.shape[2]]) {
                t.push_str(&format!(
                    "warning: domain {}: the model was trained on {h}x{w} images, these are {}x{}; it runs, but a \
                        UNet is only known to reconstruct and generate well at its training size (set `size = {h}` to \
            resize, or `crop`/`tile`)\n",
                    d.name, d.shape[1], d.shape[2]
                ));
            }
        }
        t.push_str(&format!("{:<24} {:>16}\n", "stage", "UNet evaluations"));
        let mut total = 0;
        for s in self.stages() {
            let e = self.unet_evaluations(&s);
            total += e;
            t.push_str(&format!("{s:<24} {e:>16}\n"));
        }
        t.push_str(&format!("{:<24} {total:>16}\n", "total"));
        let m = self.memory_estimate();
        t.push_str(&format!(
            "memory estimate ~{:.0} MiB: program {:.0} MiB, weights {:.1} MiB, activations of one batch {:.1} MiB, \
                stacks {:.1} MiB\n",
            m.total(),
            m.runtime,
            m.weights,
            m.activations,
            m.stacks
        ));
        t
    }
}
