//! `expanse._expanse`: the compiled half of the Python package. Every function calls the library
//! API the `expanse` command line calls; python/expanse/__init__.py only turns paths into strings
//! and arrays given to `validate` into files. Arrays come in as copies in the library's layout and
//! go out without a copy (the result's buffer becomes the numpy array's); records come out as
//! Python dicts.

// Python functions take their keyword arguments one by one; the library's errors are returned as
// they are and turned into an exception at once.
#![allow(clippy::too_many_arguments, clippy::result_large_err)]

use std::path::PathBuf;

use expanse::error::Error;
use expanse::model::Ddpm;
use expanse::pipeline::config::{InversionSection, ModelSection};
use ndarray::{Array4, Axis};
use numpy::{IntoPyArray, PyArray4, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

/// The library's error as the Python exception a user expects, with the library's message (which
/// names the file and the key).
fn py_err(e: Error) -> PyErr {
    let message = expanse::error::chain_message(&e);
    match &e {
        Error::Open { path, .. } if !path.exists() => PyFileNotFoundError::new_err(message),
        Error::Open { .. } | Error::Write { .. } => PyOSError::new_err(message),
        Error::Refused(_) => PyRuntimeError::new_err(message),
        _ => PyValueError::new_err(message),
    }
}

/// A float32 array of 3 (N, H, W: one channel) or 4 (N, C, H, W) dimensions, copied into the
/// library's layout; another dtype is a TypeError, another number of dimensions a ValueError.
fn maps_of(what: &str, array: &Bound<'_, PyAny>) -> PyResult<Array4<f32>> {
    let untyped = array
        .cast::<PyUntypedArray>()
        .map_err(|_| PyTypeError::new_err(format!("{what}: expected a numpy array, got {}", array.get_type())))?;
    let Ok(typed) = untyped.cast::<PyArrayDyn<f32>>() else {
        return Err(PyTypeError::new_err(format!(
            "{what}: expected float32, got {} (convert with .astype(numpy.float32))",
            untyped.dtype()
        )));
    };
    let view = typed.readonly();
    let a = view.as_array();
    match a.ndim() {
        3 => Ok(a.to_owned().into_dimensionality::<ndarray::Ix3>().expect("3-D").insert_axis(Axis(1))),
        4 => Ok(a.to_owned().into_dimensionality::<ndarray::Ix4>().expect("4-D")),
        n => Err(PyValueError::new_err(format!(
            "{what}: expected (N, H, W) or (N, C, H, W), got {n} dimension(s) of shape {:?}",
            a.shape()
        ))),
    }
}

/// A keyword argument read as the config reads its key (`kind = "empirical"`), the error naming it.
fn keyword<T: std::str::FromStr<Err = Error>>(key: &str, value: &str) -> PyResult<T> {
    value.parse::<T>().map_err(|e| py_err(e.for_key(key)))
}

/// A JSON record as Python values (dicts, lists, numbers; null → None).
fn json_object<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// Reports `done` of `total` maps to `progress`: an object with `update(n)` (a tqdm bar, given
/// the maps of this batch) or a callable taking (done, total).
fn report(progress: Option<&Bound<'_, PyAny>>, batch: usize, done: usize, total: usize) -> PyResult<()> {
    match progress {
        Some(p) if p.hasattr("update")? => p.call_method1("update", (batch,)).map(drop),
        Some(p) => p.call1((done, total)).map(drop),
        None => Ok(()),
    }
}

/// Runs `f` on `x` batch by batch with the GIL released, checking for Ctrl-C between batches
/// (KeyboardInterrupt; nothing is returned) and reporting progress; the batches are the ones the
/// library cuts (`batch` maps each), so the result is the library's, byte for byte.
fn by_batch(
    py: Python<'_>,
    x: &Array4<f32>,
    batch: usize,
    progress: Option<&Bound<'_, PyAny>>,
    f: impl Fn(&Array4<f32>) -> expanse::Result<Array4<f32>> + Sync,
) -> PyResult<Array4<f32>> {
    let n = x.dim().0;
    let mut parts = Vec::new();
    for chunk in x.axis_chunks_iter(Axis(0), batch.max(1)) {
        let chunk = chunk.to_owned();
        parts.push(py.detach(|| f(&chunk)).map_err(py_err)?);
        py.check_signals()?;
        let done: usize = parts.iter().map(|p: &Array4<f32>| p.dim().0).sum();
        report(progress, chunk.dim().0, done, n)?;
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    ndarray::concatenate(Axis(0), &views).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// A frozen diffusion model, loaded once: Model(path, device="cpu", dtype="f32", batch=8).
///
/// path: a diffusers UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors), a
/// guided-diffusion ADM folder (adm.json + *.pt) or an original-DDPM folder (ddpm.json + *.ckpt).
/// device: "cpu" (GPU backends need a build with the cuda feature); dtype: "f32", or on the CPU
/// "bf16" where it has AVX-512 BF16 (bfloat16 convolutions and attention products with f32 sums;
/// a ValueError elsewhere); batch: maps per UNet evaluation (results do not depend on it);
/// threads: worker threads of the process (as `set_threads`: once, before any computation;
/// default RAYON_NUM_THREADS, else every core).
///
/// Maps are in model space ([-1, 1], what `expanse ingest` writes), float32 (N, H, W) or
/// (N, C, H, W); latents are at level t0. `progress` is a tqdm bar (`update(n)` gets the maps of
/// each batch) or a callable (done, total). Ctrl-C stops after the current batch.
#[pyclass(name = "Model", module = "expanse")]
struct Model {
    ddpm: Ddpm,
    path: PathBuf,
    batch: usize,
}

impl Model {
    fn grid(
        &self,
        steps: usize,
        t0: usize,
        fixed_point: usize,
        clip: Option<f64>,
    ) -> PyResult<expanse::diffusion::Ddim> {
        let section = InversionSection { steps, t0, fixed_point, clip, decode_clip: None };
        section.ddim(&self.ddpm).map_err(py_err)
    }

    /// The argument `what` as maps this network takes (at least one, of its channels and a size
    /// it accepts).
    fn input(&self, what: &str, array: &Bound<'_, PyAny>) -> PyResult<Array4<f32>> {
        let x = maps_of(what, array)?;
        let (n, c, h, w) = x.dim();
        if n == 0 {
            return Err(PyValueError::new_err(format!("{what}: no maps")));
        }
        self.ddpm.check_input(c, h, w).map_err(|e| py_err(e.for_key(what)))?;
        Ok(x)
    }
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path, device = "cpu", dtype = "f32", batch = expanse::model::DEFAULT_BATCH, threads = None),
           text_signature = "(path, device='cpu', dtype='f32', batch=8, threads=None)")]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        device: &str,
        dtype: &str,
        batch: usize,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let section = ModelSection { path: path.clone(), device: device.into(), dtype: dtype.into(), batch };
        section.check().map_err(py_err)?;
        if let Some(n) = threads {
            set_threads(n)?;
        }
        let ddpm = py.detach(|| section.load()).map_err(py_err)?;
        Ok(Model { ddpm, path, batch })
    }

    /// Channels of the maps the network takes.
    #[getter]
    fn in_channels(&self) -> usize {
        self.ddpm.config.in_channels()
    }

    /// The model folder.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    fn __repr__(&self) -> String {
        format!("Model('{}', in_channels={}, batch={})", self.path.display(), self.in_channels(), self.batch)
    }

    /// Deterministic DDIM inversion of model-space maps to latents at level t0 (as `expanse
    /// invert`): a grid of `steps` points up to `t0`, `fixed_point` extra UNet calls per step,
    /// x̂₀ clipped to [−clip, clip] when given. Returns float32 (N, C, H, W).
    #[pyo3(
        signature = (maps, steps = expanse::diffusion::DEFAULT_STEPS, t0 = expanse::diffusion::DEFAULT_T0,
                     fixed_point = 0, clip = None, progress = None),
        text_signature = "(self, maps, steps=5, t0=50, fixed_point=0, clip=None, progress=None)"
    )]
    fn invert<'py>(
        &self,
        py: Python<'py>,
        maps: &Bound<'py, PyAny>,
        steps: usize,
        t0: usize,
        fixed_point: usize,
        clip: Option<f64>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray4<f32>>> {
        let x = self.input("maps", maps)?;
        let ddim = self.grid(steps, t0, fixed_point, clip)?;
        let pb = indicatif::ProgressBar::hidden();
        let z = by_batch(py, &x, self.batch, progress, |c| ddim.invert(&self.ddpm, c, self.batch, &pb))?;
        Ok(z.into_pyarray(py))
    }

    /// Deterministic DDIM generation (η = 0) from latents at level t0 to model-space maps (as
    /// `expanse generate`). Returns float32 (N, C, H, W).
    ///
    /// guide: None, or a callable guide(t, x0) called at every step but the last with the level t
    /// and the batch's predicted clean images x̂₀ (float32 (B, C, H, W)); when it returns an
    /// array of that shape, the step goes on from it with the same predicted noise (x_t ← √ᾱ_t x̂₀′
    /// + √(1−ᾱ_t) ε), so that a constraint on the clean image steers the rest of the decoding.
    /// Returning None leaves the step as it is (without a guide the result is `expanse generate`'s
    /// byte for byte).
    #[pyo3(
        signature = (latents, steps = expanse::diffusion::DEFAULT_STEPS, t0 = expanse::diffusion::DEFAULT_T0,
                     clip = None, progress = None, guide = None),
        text_signature = "(self, latents, steps=5, t0=50, clip=None, progress=None, guide=None)"
    )]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        latents: &Bound<'py, PyAny>,
        steps: usize,
        t0: usize,
        clip: Option<f64>,
        progress: Option<&Bound<'py, PyAny>>,
        guide: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray4<f32>>> {
        let z = self.input("latents", latents)?;
        let ddim = self.grid(steps, t0, 0, clip)?;
        let pb = indicatif::ProgressBar::hidden();
        let Some(guide) = guide.map(Bound::unbind) else {
            let x = by_batch(py, &z, self.batch, progress, |c| ddim.generate(&self.ddpm, c, 0.0, 0, self.batch, &pb))?;
            return Ok(x.into_pyarray(py));
        };
        // The guide's own exception, raised again once the batch is back.
        let failure: std::sync::Mutex<Option<PyErr>> = Default::default();
        let call = |t: usize, x0: &Array4<f32>| -> expanse::Result<Option<Array4<f32>>> {
            let answer = Python::attach(|py| -> PyResult<Option<Array4<f32>>> {
                let r = guide.bind(py).call1((t, x0.clone().into_pyarray(py)))?;
                if r.is_none() {
                    return Ok(None);
                }
                let x = maps_of("the guide's return", &r)?;
                if x.dim() != x0.dim() {
                    return Err(PyValueError::new_err(format!(
                        "the guide's return: shape {:?}, expected {:?}",
                        x.shape(),
                        x0.shape()
                    )));
                }
                Ok(Some(x))
            });
            answer.map_err(|e| {
                let message = e.to_string();
                *failure.lock().expect("not poisoned") = Some(e);
                Error::Invalid(format!("guide: {message}"))
            })
        };
        let result = by_batch(py, &z, self.batch, progress, |c| {
            ddim.generate_guided(&self.ddpm, c, self.batch, &pb, &mut |t, x0| call(t, x0))
        });
        let raised = failure.lock().expect("not poisoned").take();
        match (result, raised) {
            (_, Some(e)) => Err(e),
            (r, None) => Ok(r?.into_pyarray(py)),
        }
    }

    /// Inversion then generation (as `expanse reconstruct`): the maps back and each map's PSNR in
    /// dB (model space, data range 2).
    #[pyo3(
        signature = (maps, steps = expanse::diffusion::DEFAULT_STEPS, t0 = expanse::diffusion::DEFAULT_T0,
                     fixed_point = 0, clip = None, progress = None),
        text_signature = "(self, maps, steps=5, t0=50, fixed_point=0, clip=None, progress=None)"
    )]
    fn reconstruct<'py>(
        &self,
        py: Python<'py>,
        maps: &Bound<'py, PyAny>,
        steps: usize,
        t0: usize,
        fixed_point: usize,
        clip: Option<f64>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyArray4<f32>>, Vec<f64>)> {
        let x = self.input("maps", maps)?;
        let ddim = self.grid(steps, t0, fixed_point, clip)?;
        let pb = indicatif::ProgressBar::hidden();
        let back = by_batch(py, &x, self.batch, progress, |c| {
            let z = ddim.invert(&self.ddpm, c, self.batch, &pb)?;
            ddim.generate(&self.ddpm, &z, 0.0, 0, self.batch, &pb)
        })?;
        let psnr = expanse::diffusion::reconstruction_errors(&x, &back).iter().map(|e| e.psnr_db).collect();
        Ok((back.into_pyarray(py), psnr))
    }
}

/// Maps made from a (N, H, W) array, as if read from one file named `name`.
fn maps_from_array(name: &str, maps: &Array4<f32>, units: Option<String>) -> Vec<expanse::io::Map> {
    let source = std::sync::Arc::new(expanse::io::Source {
        path: PathBuf::from(name),
        format: expanse::io::Format::Npy,
        location: String::new(),
        units,
        cards: Vec::new(),
        attrs: Default::default(),
    });
    maps.outer_iter()
        .enumerate()
        .map(|(i, m)| expanse::io::Map {
            data: m.index_axis(Axis(0), 0).to_owned(),
            source: source.clone(),
            plane: Some(i),
            region: None,
        })
        .collect()
}

/// The normalization and geometry options as a run config's `[[domain]]` keys name them.
fn prep_spec(
    transform: &str,
    range: &str,
    offset: Option<f64>,
    softening: Option<f64>,
    crop: Option<&str>,
    tile: Option<&str>,
    size: Option<usize>,
    channels: usize,
    band_map: Option<&[usize]>,
    max_blank: Option<f64>,
) -> PyResult<expanse::prep::PrepSpec> {
    expanse::prep::PrepSpec::parse(&expanse::prep::PrepOptions {
        transform,
        range,
        offset,
        softening,
        crop,
        tile,
        size,
        channels,
        band_map,
        max_blank,
    })
    .map_err(py_err)
}

/// A domain's fitted normalization: model space ([-1, 1]) ↔ physical units. Made by `prepare`
/// (with the geometry and channels of the stack) or `Normalizer.fit` (maps as they are).
#[pyclass(name = "Normalizer", module = "expanse")]
struct Normalizer {
    normalization: expanse::prep::Normalization,
}

#[pymethods]
impl Normalizer {
    /// Fits the transform ("linear", "log10" or "asinh"; range "minmax" or
    /// "percentile:LOW,HIGH"; the log10 offset and asinh softening as in a run config) to float32
    /// maps (N, H, W) in physical units, NaN where blank, as `expanse ingest` does.
    #[staticmethod]
    #[pyo3(signature = (maps, transform = "linear", range = "minmax", offset = None, softening = None, units = None))]
    fn fit(
        maps: &Bound<'_, PyAny>,
        transform: &str,
        range: &str,
        offset: Option<f64>,
        softening: Option<f64>,
        units: Option<String>,
    ) -> PyResult<Normalizer> {
        let x = maps_of("maps", maps)?;
        if x.dim().1 != 1 {
            return Err(PyValueError::new_err("maps: expected (N, H, W) maps in physical units"));
        }
        let spec = prep_spec(transform, range, offset, softening, None, None, None, 1, None, None)?;
        let (stack, _) = expanse::prep::normalize(maps_from_array("<array>", &x, units), &spec).map_err(py_err)?;
        Ok(Normalizer { normalization: stack.normalization })
    }

    /// Physical maps (N, H, W) → model space, pixel by pixel (NaN stays NaN).
    fn forward<'py>(&self, py: Python<'py>, maps: &Bound<'py, PyAny>) -> PyResult<Bound<'py, numpy::PyArray3<f32>>> {
        let x = maps_of("maps", maps)?.index_axis_move(Axis(1), 0);
        let t = &self.normalization.transform;
        Ok(x.mapv(|v| t.forward(v as f64) as f32).into_pyarray(py))
    }

    /// Model-space images (N, C, H, W) or (N, H, W) → physical maps (N, H, W) (channels averaged or
    /// split into bands as the stack was built), as synthetic maps are written.
    fn inverse<'py>(&self, py: Python<'py>, images: &Bound<'py, PyAny>) -> PyResult<Bound<'py, numpy::PyArray3<f32>>> {
        let x = maps_of("images", images)?;
        let maps = self.normalization.to_physical(x.view(), None).map_err(py_err)?;
        Ok(maps.into_pyarray(py))
    }

    /// The transform in words, e.g. "log10(x) scaled from [20.1, 22.3] to [-1, 1]".
    #[getter]
    fn transform(&self) -> String {
        self.normalization.transform.describe()
    }

    /// Physical units of the maps it was fitted on.
    #[getter]
    fn units(&self) -> Option<String> {
        self.normalization.units.clone()
    }

    /// The record a stack's provenance holds (JSON).
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.normalization).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    fn __repr__(&self) -> String {
        format!("Normalizer({})", self.transform())
    }
}

/// `expanse ingest` in memory: the model-space stack of map files (N, C, H, W), its mask of blank
/// pixels (N, H, W; 1 = blank) and its Normalizer. The options are a run config's `[[domain]]`
/// keys.
#[pyfunction]
#[pyo3(signature = (inputs, hdu = None, dataset = None, max_maps = None, transform = "linear", range = "minmax",
                    offset = None, softening = None, crop = None, tile = None, size = None, channels = 1,
                    band_map = None, max_blank = None))]
#[allow(clippy::type_complexity)]
fn prepare<'py>(
    py: Python<'py>,
    inputs: Vec<PathBuf>,
    hdu: Option<String>,
    dataset: Option<String>,
    max_maps: Option<usize>,
    transform: &str,
    range: &str,
    offset: Option<f64>,
    softening: Option<f64>,
    crop: Option<String>,
    tile: Option<String>,
    size: Option<usize>,
    channels: usize,
    band_map: Option<Vec<usize>>,
    max_blank: Option<f64>,
) -> PyResult<(Bound<'py, PyArray4<f32>>, Bound<'py, numpy::PyArray3<u8>>, Normalizer)> {
    let spec = prep_spec(
        transform,
        range,
        offset,
        softening,
        crop.as_deref(),
        tile.as_deref(),
        size,
        channels,
        band_map.as_deref(),
        max_blank,
    )?;
    let inputs: Vec<PathBuf> = inputs
        .iter()
        .map(|p| expanse::io::expand_input(p).map_err(|cause| format!("{}: {cause}", p.display())))
        .collect::<Result<Vec<_>, String>>()
        .map_err(PyFileNotFoundError::new_err)?
        .into_iter()
        .flatten()
        .collect();
    let hdu = hdu.map(|h| h.parse::<expanse::io::HduSelector>()).transpose().map_err(|e| py_err(e.for_key("hdu")))?;
    let selection = expanse::io::Selection { hdu, dataset };
    let (stack, _) = py.detach(|| expanse::ingest::prepare(&inputs, &selection, max_maps, &spec)).map_err(py_err)?;
    Ok((stack.data.into_pyarray(py), stack.mask.into_pyarray(py), Normalizer { normalization: stack.normalization }))
}

/// A Gaussian prior fitted to one domain's latents, with the latents it was fitted on (the
/// geometric tests' references).
#[pyclass(name = "Prior", module = "expanse")]
struct Prior {
    prior: expanse::prior::GaussianPrior,
    latents: std::sync::Arc<ndarray::Array2<f32>>,
}

/// `expanse fit` for one domain: a Gaussian prior of `kind` ("scalar", "diagonal", "lowrank:K",
/// "stationary" or "empirical") fitted to latents (N, C, H, W).
#[pyfunction]
#[pyo3(signature = (latents, kind = "empirical", name = "domain"))]
fn fit_prior(py: Python<'_>, latents: &Bound<'_, PyAny>, kind: &str, name: &str) -> PyResult<Prior> {
    let z = maps_of("latents", latents)?;
    let (_, c, h, w) = z.dim();
    let kind = keyword("kind", kind)?;
    let flat = std::sync::Arc::new(expanse::prior::geometry::flatten(&z));
    let prior = py.detach(|| expanse::prior::GaussianPrior::fit(name, &flat, [c, h, w], kind)).map_err(py_err)?;
    Ok(Prior { prior, latents: flat })
}

#[pymethods]
impl Prior {
    /// `expanse sample` without decoding: draws candidates until `count` pass the geometric tests
    /// (the `[sampling]` keys of a run config; `seed` seeds every choice) and returns the accepted
    /// latents (count, C, H, W) and the sampling record (JSON: accepted, tried, acceptance rates,
    /// seed).
    #[pyo3(signature = (count = 16, seed = 0, k = 10, band = [5.0, 95.0], tests = None, candidates = "draw",
                        budget = 10000, debias = "rings", norm = "match"))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        count: usize,
        seed: u64,
        k: usize,
        band: [f64; 2],
        tests: Option<Vec<String>>,
        candidates: &str,
        budget: usize,
        debias: &str,
        norm: &str,
    ) -> PyResult<(Bound<'py, PyArray4<f32>>, Bound<'py, PyAny>)> {
        let section = expanse::pipeline::config::SamplingSection {
            count,
            candidates: keyword("candidates", candidates)?,
            k,
            band,
            tests: tests.unwrap_or_else(|| expanse::prior::geometry::TEST_NAMES.map(String::from).to_vec()),
            budget,
            debias: keyword("debias", debias)?,
            norm: keyword("norm", norm)?,
        };
        let spec = section.spec(seed).map_err(py_err)?;
        let outcome = py
            .detach(|| expanse::prior::geometry::sample_latents(&self.prior, &self.latents, &spec))
            .map_err(py_err)?;
        let record = json_object(py, &expanse::pipeline::SampleRecord::of(&outcome, seed))?;
        Ok((outcome.accepted_array(self.prior.shape).into_pyarray(py), record))
    }

    /// The covariance model, e.g. "empirical".
    #[getter]
    fn kind(&self) -> String {
        self.prior.kind.to_string()
    }

    /// The latent shape (C, H, W).
    #[getter]
    fn shape(&self) -> (usize, usize, usize) {
        let [c, h, w] = self.prior.shape;
        (c, h, w)
    }

    fn __repr__(&self) -> String {
        format!("Prior(kind='{}', shape={:?}, fitted on {} latents)", self.kind(), self.shape(), self.latents.nrows())
    }
}

/// The run's statistics-constrained refinement (`[refinement]`, `expanse refine`): decoded
/// model-space images (N, C, H, W) brought toward the wavelet moments of the real model-space
/// images. Returns the refined images and the refinement's record (JSON).
#[pyfunction]
#[pyo3(signature = (
    images, real, iterations = expanse::refine::DEFAULT_ITERATIONS, scales = None, angles = 8, increments = false
))]
fn refine<'py>(
    py: Python<'py>,
    images: &Bound<'py, PyAny>,
    real: &Bound<'py, PyAny>,
    iterations: usize,
    scales: Option<usize>,
    angles: usize,
    increments: bool,
) -> PyResult<(Bound<'py, PyArray4<f32>>, Bound<'py, PyAny>)> {
    let (x, r) = (maps_of("images", images)?, maps_of("real", real)?);
    let section = expanse::pipeline::config::RefinementSection { iterations, scales, angles, increments };
    let options = section.options().map_err(py_err)?;
    let (refined, record) = py.detach(|| expanse::synthesis::refine_images(&x, &r, &options)).map_err(py_err)?;
    Ok((refined.into_pyarray(py), json_object(py, &record)?))
}

/// The seed a run's stage `name` (e.g. "sample/clouds") draws from, given the run's seed.
#[pyfunction]
fn derive_seed(seed: u64, name: &str) -> u64 {
    expanse::pipeline::manifest::derive_seed(seed, name)
}

/// Maps of one file as (N, H, W) float32 and the JSON of where each came from.
#[pyfunction]
#[pyo3(signature = (path, hdu = None, dataset = None))]
fn read_maps<'py>(
    py: Python<'py>,
    path: PathBuf,
    hdu: Option<String>,
    dataset: Option<String>,
) -> PyResult<(Bound<'py, numpy::PyArray3<f32>>, Bound<'py, PyAny>)> {
    let hdu = hdu.map(|h| h.parse::<expanse::io::HduSelector>()).transpose().map_err(|e| py_err(e.for_key("hdu")))?;
    let selection = expanse::io::Selection { hdu, dataset };
    let maps = py.detach(|| expanse::io::read_maps(&path, &selection)).map_err(py_err)?;
    let stack = expanse::io::stack(&maps).map_err(py_err)?;
    let records: Vec<serde_json::Value> = maps
        .iter()
        .map(|m| {
            serde_json::json!({
                "file": m.source.path,
                "location": m.source.location,
                "plane": m.plane,
                "units": m.source.units,
                "describe": m.describe(),
            })
        })
        .collect();
    let units = maps.first().and_then(|m| m.source.units.clone());
    let info = serde_json::json!({ "units": units, "maps": records });
    Ok((stack.into_pyarray(py), json_object(py, &info)?))
}

/// `expanse run CONFIG --out OUT [--resume]`: the same library calls; returns the summary as JSON.
#[pyfunction]
#[pyo3(signature = (config, out = None, resume = false, latent_cache = None))]
fn run(
    py: Python<'_>,
    config: PathBuf,
    out: Option<PathBuf>,
    resume: bool,
    latent_cache: Option<PathBuf>,
) -> PyResult<Bound<'_, PyAny>> {
    let run_config = expanse::pipeline::RunConfig::read(&config).map_err(py_err)?;
    let out = out.unwrap_or_else(|| PathBuf::from("runs").join(run_config.name()));
    let summary = py
        .detach(|| {
            expanse::pipeline::check_run_folder(&out, resume)?;
            let plan = expanse::pipeline::Plan::new(run_config, &config)?;
            let opts = expanse::pipeline::RunOptions { resume, echo: false, latent_cache };
            plan.execute(&config, &out, &opts)
        })
        .map_err(py_err)?;
    json_object(py, &summary)
}

/// `expanse validate`: real and synthetic map files, the report folder, the battery's statistics;
/// returns report.json's record as JSON.
#[pyfunction]
#[pyo3(signature = (real, synthetic, out, statistics = None))]
fn validate(
    py: Python<'_>,
    real: PathBuf,
    synthetic: PathBuf,
    out: PathBuf,
    statistics: Option<Vec<String>>,
) -> PyResult<Bound<'_, PyAny>> {
    let statistics = statistics.map(|l| l.iter().map(|s| keyword("statistics", s)).collect()).transpose()?;
    let section = expanse::pipeline::config::ValidationSection { statistics, ..Default::default() };
    let options = section.battery_options().map_err(py_err)?;
    let report = py
        .detach(|| expanse::validate::validate(&real, &synthetic, &Default::default(), &out, &options, None))
        .map_err(py_err)?;
    json_object(py, &report)
}

/// One statistic of the battery on each map: ("power_spectrum", "pdf", "minkowski", "peaks",
/// "bispectrum" or "scattering"; the options are the `[validation]` keys of a run config) of
/// float32 maps (N, H, W). Returns the per-map values, float64 (N, K), and the curves they are
/// made of: a list of dicts with name, x, x_label, y_label (the values are the curves one after
/// another).
#[pyfunction]
#[pyo3(signature = (maps, statistic, thresholds = None, peak_edges = None, scattering_j = None, scattering_l = None,
                    bispectrum_samples = None))]
fn statistic_curves<'py>(
    py: Python<'py>,
    maps: &Bound<'py, PyAny>,
    statistic: &str,
    thresholds: Option<String>,
    peak_edges: Option<String>,
    scattering_j: Option<usize>,
    scattering_l: Option<usize>,
    bispectrum_samples: Option<usize>,
) -> PyResult<(Bound<'py, numpy::PyArray2<f64>>, Bound<'py, PyAny>)> {
    let x = maps_of("maps", maps)?;
    if x.dim().1 != 1 {
        return Err(PyValueError::new_err("maps: expected (N, H, W) maps"));
    }
    let section = expanse::pipeline::config::ValidationSection {
        statistics: Some(vec![keyword("statistic", statistic)?]),
        thresholds,
        peak_edges,
        scattering_j,
        scattering_l,
        bispectrum_samples,
        ..Default::default()
    };
    let options = section.battery_options().map_err(py_err)?;
    let statistic = options.statistics[0];
    let maps: Vec<ndarray::Array2<f64>> = x.outer_iter().map(|m| m.index_axis(Axis(0), 0).mapv(f64::from)).collect();
    let values = py
        .detach(|| expanse::stats::battery::per_map_of_file(statistic, &options, &maps, std::path::Path::new("maps")))
        .map_err(py_err)?;
    let k = values.values.first().map_or(0, Vec::len);
    let flat: Vec<f64> = values.values.iter().flatten().copied().collect();
    let array = ndarray::Array2::from_shape_vec((values.values.len(), k), flat)
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let axes: Vec<serde_json::Value> = values
        .curves
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "x": c.x, "x_label": c.x_label, "y_label": c.y_label}))
        .collect();
    Ok((array.into_pyarray(py), json_object(py, &axes)?))
}

/// Worker threads of this process (once, before any computation).
#[pyfunction]
fn set_threads(n: usize) -> PyResult<()> {
    expanse::runtime::set_threads(n).map_err(py_err)
}

#[pymodule]
fn _expanse(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The allocator settings the command line starts with (a UNet forward then reuses its pages
    // instead of faulting them in again; MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ win).
    expanse::runtime::keep_freed_memory();
    // Ctrl-C stays Python's KeyboardInterrupt, during a run and after it.
    expanse::runtime::leave_signals_to_the_host();
    m.add_class::<Model>()?;
    m.add_class::<Normalizer>()?;
    m.add_class::<Prior>()?;
    m.add_function(wrap_pyfunction!(prepare, m)?)?;
    m.add_function(wrap_pyfunction!(fit_prior, m)?)?;
    m.add_function(wrap_pyfunction!(refine, m)?)?;
    m.add_function(wrap_pyfunction!(derive_seed, m)?)?;
    m.add_function(wrap_pyfunction!(statistic_curves, m)?)?;
    m.add_function(wrap_pyfunction!(read_maps, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(set_threads, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
