//! DDIM with the paper's grid: deterministic inversion (data → latent at level t0) and
//! generation (latent → data), ε always evaluated at the source level of a step.
//!
//! One step from level a to level b: x̂₀ = (x_a − √(1−ᾱ_a) ε) / √ᾱ_a and
//! x_b = √ᾱ_b x̂₀ + √(1−ᾱ_b − σ²) ε + σ z, with σ = 0 except in generation with η > 0.
//! The grid has N points `seq_k = ⌊k·t0/(N−1)⌋`; inversion takes the N−1 steps up from level 0
//! (the data), generation the N−1 steps down plus a last one from level 0 to the clean image
//! (ᾱ = 1).

pub mod schedule;

use candle_core::{DType, Device, IndexOp, Tensor};
use indicatif::ProgressBar;
use ndarray::{Array4, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

pub use schedule::NoiseSchedule;

use crate::error::{Error, Result};
use crate::model::{model_err, Ddpm, Prediction};

/// What DDIM needs from a network: its raw output at a timestep.
pub trait Denoiser {
    /// Raw output (B, out_channels, H, W) for x (B, C, H, W) at timestep `t`.
    fn raw(&self, x: &Tensor, t: f64) -> Result<Tensor>;
    fn prediction(&self) -> Prediction;
    /// Channels of the data (the first `channels` outputs are the prediction).
    fn channels(&self) -> usize;
    fn device(&self) -> &Device;
}

impl Denoiser for Ddpm {
    fn raw(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        self.forward(x, t)
    }
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn channels(&self) -> usize {
        self.config.in_channels()
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

/// Grid points N of the default grid (the paper uses 80): 10 t-units a step, as the 30 points up
/// to 300 that were the default before.
pub const DEFAULT_STEPS: usize = 5;
/// Top level t0 of the default grid. The level sets how much of a map the model makes anew: at
/// t0 the latent is the map plus white noise of σ/√ᾱ = 0.18 (t0 = 50), 1.24 (300) or 61 (900,
/// the paper's) times the model-space scale, and decoding replaces every scale the noise buries
/// with the model's own texture. The shipped base model (1.1 M parameters, 32² natural-image
/// crops) makes blobs; on real third-party fields at their own size t0 = 50 keeps its work to the
/// finest scales and was the most faithful level on the development fields, confirmed on held-out
/// ones (C2ST 0.97 → 0.71–0.73 on the cosmic web; MHD dust and lensing κ unchanged or up to 0.04
/// worse), at a sixth of the UNet calls (FIDELITY.md, "A lever measured: how far the model
/// denoises"). With a model trained on the data's own kind and size, a higher t0 lets it do more.
pub const DEFAULT_T0: usize = 50;

/// The paper's grid: `seq_k = ⌊k·t0/(N−1)⌋`, k = 0…N−1. One point at t0 = 0 is the grid of no
/// diffusion: the latents are the model-space maps themselves and decoding returns them (the
/// model-free baseline of the fidelity benchmark).
pub fn paper_grid(points: usize, t0: usize, train_steps: usize) -> Result<Vec<usize>> {
    if points == 1 && t0 == 0 {
        return Ok(vec![0]);
    }
    if points < 2 {
        return Err(Error::Invalid(format!(
            "the DDIM grid needs at least 2 points (or 1 point at t0 = 0: no diffusion), got {points}"
        )));
    }
    if t0 == 0 || t0 >= train_steps {
        return Err(Error::Invalid(format!(
            "t0 must be in 1..{} (the model's training steps), got {t0}",
            train_steps - 1
        )));
    }
    if points - 1 > t0 {
        return Err(Error::Invalid(format!(
            "{points} grid points need t0 >= {} so that levels are distinct",
            points - 1
        )));
    }
    Ok((0..points).map(|k| k * t0 / (points - 1)).collect())
}

/// A DDIM sampler/inverter on one grid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ddim {
    /// Grid levels, increasing, starting at 0.
    pub seq: Vec<usize>,
    /// Fixed-point iterations per inversion step (0 = plain DDIM inversion).
    pub fixed_point: usize,
    /// Clip x̂₀ to [−c, c] (None: no clipping; maps are not 8-bit images).
    pub clip: Option<f64>,
    #[serde(skip)]
    schedule: Option<NoiseSchedule>,
}

/// Model evaluations a run will make.
pub fn unet_evaluations(ddim: &Ddim, maps: usize, invert: bool, generate: bool) -> usize {
    let n = ddim.seq.len();
    let inv = (n - 1) * (1 + ddim.fixed_point);
    let gen = if ddim.is_identity() { 0 } else { n };
    maps * (if invert { inv } else { 0 } + if generate { gen } else { 0 })
}

fn to_tensor(a: &Array4<f32>, device: &Device) -> Result<Tensor> {
    let shape = a.dim();
    let data: Vec<f32> = a.as_standard_layout().iter().copied().collect();
    Tensor::from_vec(data, (shape.0, shape.1, shape.2, shape.3), device).map_err(model_err)
}

fn to_array(t: &Tensor) -> Result<Array4<f32>> {
    let (b, c, h, w) = t.dims4().map_err(model_err)?;
    let v = t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(model_err)?;
    Ok(Array4::from_shape_vec((b, c, h, w), v).expect("shape matches"))
}

impl Ddim {
    /// The paper's grid of `points` levels up to `t0` on `schedule`.
    pub fn new(schedule: NoiseSchedule, points: usize, t0: usize) -> Result<Ddim> {
        let seq = paper_grid(points, t0, schedule.len())?;
        if schedule.alpha_bar(t0) <= 0.0 {
            return Err(Error::Invalid(format!(
                "t0 = {t0} is the zero-SNR level of this schedule (ᾱ = 0: nothing of the data is left to invert to or \
                    generate from); choose t0 < {t0}"
            )));
        }
        Ok(Ddim { seq, fixed_point: 0, clip: None, schedule: Some(schedule) })
    }

    /// The paper's grid on `model`'s noise schedule, with the inversion options.
    pub fn for_model(model: &Ddpm, points: usize, t0: usize, fixed_point: usize, clip: Option<f64>) -> Result<Ddim> {
        let mut ddim = Ddim::new(NoiseSchedule::from_config(&model.scheduler)?, points, t0)?;
        ddim.fixed_point = fixed_point;
        ddim.clip = clip;
        Ok(ddim)
    }

    /// Provenance records of outputs made with this grid and `model`: `ddim` and `model`.
    pub fn records(&self, model: &Ddpm) -> crate::Result<Vec<(&'static str, serde_json::Value)>> {
        Ok(vec![
            (
                "ddim",
                serde_json::json!({
                    "seq": self.seq, "steps": self.seq.len(), "t0": self.seq.last(), "fixed_point": self.fixed_point,
                    "clip": self.clip, "epsilon_at": "source level",
                }),
            ),
            (
                "model",
                serde_json::json!({
                    "folder": model.dir, "format": model.format.as_str(), "weights": model.weights_file,
                    "weights_sha256": model.weights_sha256()?, "dtype": format!("{:?}", model.dtype),
                    "device": crate::model::device_name(&model.device), "threads": crate::runtime::threads(),
                }),
            ),
        ])
    }

    /// The grid of no diffusion (one point, t0 = 0): inversion and generation return their input.
    pub fn is_identity(&self) -> bool {
        self.seq == [0]
    }

    fn schedule(&self) -> &NoiseSchedule {
        self.schedule.as_ref().expect("a Ddim built by Ddim::new has a schedule")
    }

    /// ε at level `t` for x (all in f32 on the model's device).
    fn epsilon(&self, model: &dyn Denoiser, x: &Tensor, t: usize) -> Result<Tensor> {
        let c = model.channels();
        let raw = model.raw(x, t as f64)?.to_dtype(DType::F32).map_err(model_err)?;
        let out = raw.i((.., 0..c, .., ..)).map_err(model_err)?.contiguous().map_err(model_err)?;
        let ab = self.schedule().alpha_bar(t);
        let (sa, sb) = (ab.sqrt(), (1.0 - ab).sqrt());
        let eps = match model.prediction() {
            Prediction::Epsilon => out,
            // v = √ᾱ ε − √(1−ᾱ) x₀  ⇒  ε = √ᾱ v + √(1−ᾱ) x
            Prediction::VPrediction => {
                ((out * sa).map_err(model_err)? + (x * sb).map_err(model_err)?).map_err(model_err)?
            }
            // ε = (x − √ᾱ x̂₀) / √(1−ᾱ)
            Prediction::Sample => ((x - (out * sa).map_err(model_err)?).map_err(model_err)? / sb).map_err(model_err)?,
        };
        Ok(eps)
    }

    /// One DDIM step from ᾱ_a to ᾱ_b with a given ε (and optional σ·z).
    fn step(&self, x: &Tensor, ab_a: f64, ab_b: f64, eps: &Tensor, noise: Option<(f64, &Tensor)>) -> Result<Tensor> {
        let f = || -> candle_core::Result<Tensor> {
            let x0 = self.predicted_clean(x, ab_a, eps)?;
            let sigma = noise.map(|(s, _)| s).unwrap_or(0.0);
            let dir = (1.0 - ab_b - sigma * sigma).max(0.0).sqrt();
            let mut out = ((x0 * ab_b.sqrt())? + (eps * dir)?)?;
            if let Some((s, z)) = noise {
                out = (out + (z * s)?)?;
            }
            Ok(out)
        };
        f().map_err(model_err)
    }

    /// The clean image x̂₀ = (x_a − √(1−ᾱ_a) ε) / √ᾱ_a that a step at level a predicts, clipped
    /// to [−clip, clip] when the grid clips.
    fn predicted_clean(&self, x: &Tensor, ab_a: f64, eps: &Tensor) -> candle_core::Result<Tensor> {
        let x0 = ((x - (eps * (1.0 - ab_a).sqrt())?)? / ab_a.sqrt())?;
        match self.clip {
            Some(c) => x0.clamp(-c, c),
            None => Ok(x0),
        }
    }

    /// Inverts a batch of model-space images (level 0) to latents at level t0.
    pub fn invert_batch(&self, model: &dyn Denoiser, x0: &Tensor, progress: &ProgressBar) -> Result<Tensor> {
        let s = self.schedule();
        let mut x = x0.to_dtype(DType::F32).map_err(model_err)?;
        for w in self.seq.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (ab_a, ab_b) = (s.alpha_bar(a), s.alpha_bar(b));
            let eps = self.epsilon(model, &x, a)?;
            let mut next = self.step(&x, ab_a, ab_b, &eps, None)?;
            for _ in 0..self.fixed_point {
                let eps_b = self.epsilon(model, &next, b)?;
                next = self.step(&x, ab_a, ab_b, &eps_b, None)?;
            }
            x = next;
            progress.inc(1);
        }
        Ok(x)
    }

    /// Generates images from latents at level t0 (η = 0: deterministic; η > 0 draws noise from
    /// `rng`).
    pub fn generate_batch(
        &self,
        model: &dyn Denoiser,
        z: &Tensor,
        eta: f64,
        rng: &mut ChaCha8Rng,
        progress: &ProgressBar,
    ) -> Result<Tensor> {
        self.generate_batch_guided(model, z, eta, rng, progress, None)
    }

    /// [`Ddim::generate_batch`] with `guide` (when given) called at every step but the last with
    /// the level t and the step's predicted clean image x̂₀ (after clipping): when it returns
    /// another x̂₀′, the step goes on from x̂₀′ with the same ε (x_t′ = √ᾱ_t x̂₀′ + √(1−ᾱ_t) ε), so
    /// that a constraint on the clean image (the refinement's moments, a mask) steers the rest of
    /// the decoding. Without a guide, x̂₀ is not computed here.
    pub fn generate_batch_guided(
        &self,
        model: &dyn Denoiser,
        z: &Tensor,
        eta: f64,
        rng: &mut ChaCha8Rng,
        progress: &ProgressBar,
        mut guide: Option<&mut TensorGuide>,
    ) -> Result<Tensor> {
        let s = self.schedule();
        let mut x = z.to_dtype(DType::F32).map_err(model_err)?;
        if self.is_identity() {
            return Ok(x);
        }
        let n = self.seq.len();
        for k in (0..n).rev() {
            let a = self.seq[k];
            let ab_a = s.alpha_bar(a);
            let ab_b = if k == 0 { 1.0 } else { s.alpha_bar(self.seq[k - 1]) };
            let eps = self.epsilon(model, &x, a)?;
            if let (true, Some(guide)) = (k > 0, guide.as_mut()) {
                let x0 = self.predicted_clean(&x, ab_a, &eps).map_err(model_err)?;
                if let Some(x0) = guide(a, &x0)? {
                    let g = || (x0 * ab_a.sqrt())? + (&eps * (1.0 - ab_a).sqrt())?;
                    x = g().map_err(model_err)?;
                }
            }
            x = if eta > 0.0 && k > 0 {
                let sigma = eta * ((1.0 - ab_a / ab_b) * (1.0 - ab_b) / (1.0 - ab_a)).max(0.0).sqrt();
                let dims = x.dims().to_vec();
                let count: usize = dims.iter().product();
                let noise: Vec<f32> = (0..count).map(|_| StandardNormal.sample(rng)).collect();
                let z = Tensor::from_vec(noise, dims, model.device()).map_err(model_err)?;
                self.step(&x, ab_a, ab_b, &eps, Some((sigma, &z)))?
            } else {
                self.step(&x, ab_a, ab_b, &eps, None)?
            };
            progress.inc(1);
        }
        Ok(x)
    }

    /// Inverts (N, C, H, W) images in batches of `batch`.
    pub fn invert(
        &self,
        model: &dyn Denoiser,
        x: &Array4<f32>,
        batch: usize,
        progress: &ProgressBar,
    ) -> Result<Array4<f32>> {
        map_batches(x, batch, model.device(), |t| self.invert_batch(model, t, progress))
    }

    /// Generates (N, C, H, W) images from latents in batches of `batch`; with η > 0 the noise
    /// comes from `seed` (one stream for the whole set, so the result does not depend on `batch`
    /// only when η = 0).
    pub fn generate(
        &self,
        model: &dyn Denoiser,
        z: &Array4<f32>,
        eta: f64,
        seed: u64,
        batch: usize,
        progress: &ProgressBar,
    ) -> Result<Array4<f32>> {
        if eta < 0.0 {
            return Err(Error::Invalid(format!("eta must be >= 0, got {eta}")));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        map_batches(z, batch, model.device(), |t| self.generate_batch(model, t, eta, &mut rng, progress))
    }

    /// Deterministic generation (η = 0) in batches of `batch` with a guide on the predicted clean
    /// images (see [`Ddim::generate_batch_guided`]): `guide(t, x̂₀)` gets one batch's x̂₀ at level t
    /// and may return the batch's x̂₀′.
    pub fn generate_guided(
        &self,
        model: &dyn Denoiser,
        z: &Array4<f32>,
        batch: usize,
        progress: &ProgressBar,
        guide: &mut ImageGuide,
    ) -> Result<Array4<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let device = model.device().clone();
        let mut on_tensors = |t: usize, x0: &Tensor| match guide(t, &to_array(x0)?)? {
            Some(g) => to_tensor(&g, &device).map(Some),
            None => Ok(None),
        };
        map_batches(z, batch, model.device(), |t| {
            self.generate_batch_guided(model, t, 0.0, &mut rng, progress, Some(&mut on_tensors))
        })
    }
}

/// A guide of [`Ddim::generate_batch_guided`]: (level t, the batch's x̂₀) → the batch's x̂₀′, if any.
pub type TensorGuide<'a> = dyn FnMut(usize, &Tensor) -> Result<Option<Tensor>> + 'a;

/// A guide of [`Ddim::generate_guided`]: (level t, one batch's x̂₀) → the batch's x̂₀′, if any.
pub type ImageGuide<'a> = dyn FnMut(usize, &Array4<f32>) -> Result<Option<Array4<f32>>> + 'a;

/// Runs `f` on (N, C, H, W) arrays in batches of `batch` on `device` and stacks the results: the
/// one place a stack meets the UNet batch by batch (inversion, generation, `unet-eval`).
pub fn map_batches(
    x: &Array4<f32>,
    batch: usize,
    device: &Device,
    mut f: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Array4<f32>> {
    if batch == 0 {
        return Err(Error::Invalid("batch size must be at least 1".into()));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::Invalid("input holds NaN or infinite values (fill blanks at ingest)".into()));
    }
    let mut parts = Vec::new();
    for chunk in x.axis_chunks_iter(Axis(0), batch) {
        let out = f(&to_tensor(&chunk.to_owned(), device)?)?;
        parts.push(to_array(&out)?);
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    Ok(ndarray::concatenate(Axis(0), &views).expect("same shapes"))
}

/// The network's raw output (every output channel, float32) for (N, C, H, W) inputs at timestep
/// `t`, in batches of `batch`; `progress` advances once per batch.
pub fn raw_outputs(
    model: &dyn Denoiser,
    x: &Array4<f32>,
    t: f64,
    batch: usize,
    progress: &ProgressBar,
) -> Result<Array4<f32>> {
    map_batches(x, batch, model.device(), |b| {
        let y = model.raw(b, t)?;
        progress.inc(1);
        Ok(y)
    })
}

/// Per-map reconstruction error in model space: MSE and PSNR for a data range of 2 ([−1, 1]).
#[derive(Debug, Clone, Serialize)]
pub struct ReconstructionError {
    pub mse: f64,
    pub psnr_db: f64,
}

/// MSE and PSNR of each map of `b` against `a`.
pub fn reconstruction_errors(a: &Array4<f32>, b: &Array4<f32>) -> Vec<ReconstructionError> {
    a.axis_iter(Axis(0))
        .zip(b.axis_iter(Axis(0)))
        .map(|(x, y)| {
            let mse = crate::numerics::mse(x.mapv(f64::from).view(), y.mapv(f64::from).view());
            ReconstructionError { mse, psnr_db: crate::numerics::psnr_of_mse(mse, 2.0) }
        })
        .collect()
}

/// UNet evaluations and seconds of each half of a round trip.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RoundTripCost<T> {
    pub inversion: T,
    pub generation: T,
}

/// A round trip of model-space maps through deterministic inversion and generation: the maps
/// it gives back, their errors against the originals, and what it cost (`expanse reconstruct`).
#[derive(Debug, Clone)]
pub struct Reconstruction {
    pub images: Array4<f32>,
    pub per_map: Vec<ReconstructionError>,
    pub mean_mse: f64,
    pub mean_psnr_db: f64,
    pub unet_evaluations: RoundTripCost<usize>,
    pub seconds: RoundTripCost<f64>,
}

impl Reconstruction {
    /// Inverts `x` on `ddim`'s grid and generates back with η = 0, in batches of `batch`;
    /// `progress(total, what)` makes the bar of each half.
    pub fn run(
        ddim: &Ddim,
        model: &dyn Denoiser,
        x: &Array4<f32>,
        batch: usize,
        progress: &dyn Fn(u64, &str) -> ProgressBar,
    ) -> Result<Reconstruction> {
        let n = x.len_of(Axis(0));
        let nb = n.div_ceil(batch.max(1)) as u64;
        let pb = progress((ddim.seq.len() - 1) as u64 * nb, "invert");
        let t = std::time::Instant::now();
        let z = ddim.invert(model, x, batch, &pb)?;
        pb.finish_and_clear();
        let t_inv = t.elapsed().as_secs_f64();
        let pb = progress(ddim.seq.len() as u64 * nb, "generate");
        let t = std::time::Instant::now();
        let images = ddim.generate(model, &z, 0.0, 0, batch, &pb)?;
        pb.finish_and_clear();
        let t_gen = t.elapsed().as_secs_f64();
        let per_map = reconstruction_errors(x, &images);
        let mean_mse = per_map.iter().map(|e| e.mse).sum::<f64>() / n as f64;
        let mean_psnr_db = per_map.iter().map(|e| e.psnr_db).sum::<f64>() / n as f64;
        Ok(Reconstruction {
            images,
            per_map,
            mean_mse,
            mean_psnr_db,
            unet_evaluations: RoundTripCost {
                inversion: unet_evaluations(ddim, n, true, false),
                generation: unet_evaluations(ddim, n, false, true),
            },
            seconds: RoundTripCost { inversion: t_inv, generation: t_gen },
        })
    }

    /// The per-map table: MSE and PSNR of each map, then the means.
    pub fn table(&self) -> String {
        let mut t = format!("{:>5} {:>12} {:>10}\n", "map", "MSE", "PSNR [dB]");
        for (i, e) in self.per_map.iter().enumerate() {
            t.push_str(&format!("{i:>5} {:>12.4e} {:>10.2}\n", e.mse, e.psnr_db));
        }
        t.push_str(&format!("mean  {:>12.4e} {:>10.2}\n", self.mean_mse, self.mean_psnr_db));
        t
    }

    /// The JSON report: what was reconstructed with which model and grid, errors per map and
    /// mean, evaluations and seconds.
    pub fn report(&self, input: &std::path::Path, model_dir: &std::path::Path, ddim: &Ddim) -> serde_json::Value {
        serde_json::json!({
            "input": input, "model": model_dir, "steps": ddim.seq.len(), "t0": ddim.seq.last(),
            "fixed_point": ddim.fixed_point, "per_map": self.per_map, "mean_mse": self.mean_mse,
            "mean_psnr_db": self.mean_psnr_db, "unet_evaluations": self.unet_evaluations, "seconds": self.seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_grid() {
        assert_eq!(paper_grid(6, 900, 1000).unwrap(), vec![0, 180, 360, 540, 720, 900]);
        let g = paper_grid(80, 900, 1000).unwrap();
        assert_eq!((g[0], g[1], g[2], g[78], g[79]), (0, 11, 22, 888, 900));
        assert!(paper_grid(1, 900, 1000).is_err());
        assert!(paper_grid(10, 1000, 1000).is_err());
    }

    /// A "model" whose ε is a fixed linear map of x: DDIM steps are then exactly computable.
    struct Linear(Device);
    impl Denoiser for Linear {
        fn raw(&self, x: &Tensor, _t: f64) -> Result<Tensor> {
            (x * 0.5).map_err(model_err)
        }
        fn prediction(&self) -> Prediction {
            Prediction::Epsilon
        }
        fn channels(&self) -> usize {
            1
        }
        fn device(&self) -> &Device {
            &self.0
        }
    }

    #[test]
    fn fixed_point_inversion_makes_generation_retrace_it() {
        let sched = NoiseSchedule::linear(1e-4, 0.02, 1000);
        let ab0 = sched.alpha_bar(0);
        let mut ddim = Ddim::new(sched, 11, 900).unwrap();
        let x = Array4::from_shape_fn((2, 1, 4, 4), |(b, _, i, j)| ((b + i * 4 + j) as f32 / 20.0) - 0.4);
        let m = Linear(Device::Cpu);
        let pb = ProgressBar::hidden();
        // Generation ends with a step from level 0 to the clean image that inversion never
        // took; for ε = x/2 that step maps x to (x − √(1−ᾱ₀) x/2) / √ᾱ₀.
        let k = ((1.0 - 0.5 * (1.0 - ab0).sqrt()) / ab0.sqrt()) as f32;
        let target = x.mapv(|v| v * k);
        let plain = ddim.invert(&m, &x, 2, &pb).unwrap();
        let rec_plain = ddim.generate(&m, &plain, 0.0, 0, 2, &pb).unwrap();
        ddim.fixed_point = 30;
        let fp = ddim.invert(&m, &x, 1, &pb).unwrap();
        let rec_fp = ddim.generate(&m, &fp, 0.0, 0, 2, &pb).unwrap();
        let e_plain = reconstruction_errors(&target, &rec_plain)[0].mse;
        let e_fp = reconstruction_errors(&target, &rec_fp)[0].mse;
        assert!(e_fp < 1e-10, "fixed-point reconstruction MSE {e_fp}");
        assert!(e_plain > 1e3 * e_fp, "plain {e_plain} vs fixed-point {e_fp}");
    }

    #[test]
    fn eta_noise_is_reproducible_by_seed() {
        let ddim = Ddim::new(NoiseSchedule::linear(1e-4, 0.02, 1000), 5, 900).unwrap();
        let z = Array4::from_elem((2, 1, 4, 4), 0.3f32);
        let m = Linear(Device::Cpu);
        let pb = ProgressBar::hidden();
        let a = ddim.generate(&m, &z, 0.5, 7, 2, &pb).unwrap();
        assert_eq!(a, ddim.generate(&m, &z, 0.5, 7, 2, &pb).unwrap());
        assert_ne!(a, ddim.generate(&m, &z, 0.5, 8, 2, &pb).unwrap());
        assert_ne!(a, ddim.generate(&m, &z, 0.0, 7, 2, &pb).unwrap());
    }
}
