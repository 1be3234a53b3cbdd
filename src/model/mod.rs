//! The frozen DDPM: a diffusers-format `UNet2DModel` folder (`config.json`,
//! `diffusion_pytorch_model.safetensors`, optional `scheduler_config.json`) loaded into candle.
//! Nothing here knows about astronomy or about sampling.

pub mod config;
pub mod kernels;
pub mod profile;
pub mod unet;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

pub use config::{SchedulerConfig, UNet2DConfig};
pub use unet::UNet2DModel;

use crate::error::{Error, Result};

/// What the network predicts (`prediction_type` in the scheduler config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    Epsilon,
    VPrediction,
    Sample,
}

impl std::str::FromStr for Prediction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "epsilon" => Ok(Prediction::Epsilon),
            "v_prediction" => Ok(Prediction::VPrediction),
            "sample" => Ok(Prediction::Sample),
            other => Err(Error::Invalid(format!("unknown prediction_type '{other}' (epsilon, v_prediction, sample)"))),
        }
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` or `metal`; GPU devices need the matching cargo feature.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_lowercase();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(rest) = s.strip_prefix("cuda") {
        let ordinal = match rest.strip_prefix(':') {
            Some(n) => n.parse::<usize>().map_err(|_| Error::Invalid(format!("bad device '{s}' (use cuda or cuda:N)")))?,
            None if rest.is_empty() => 0,
            None => return Err(Error::Invalid(format!("bad device '{s}' (use cpu, cuda, cuda:N or metal)"))),
        };
        if !cfg!(feature = "cuda") {
            return Err(Error::Invalid("this expanse was built without CUDA support: rebuild with `cargo build --release --features cuda`".into()));
        }
        return Device::new_cuda(ordinal).map_err(|e| Error::Invalid(format!("cannot open CUDA device {ordinal}: {e}")));
    }
    if s == "metal" {
        if !cfg!(feature = "metal") {
            return Err(Error::Invalid("this expanse was built without Metal support: rebuild with `cargo build --release --features metal`".into()));
        }
        return Device::new_metal(0).map_err(|e| Error::Invalid(format!("cannot open the Metal device: {e}")));
    }
    Err(Error::Invalid(format!("unknown device '{s}' (use cpu, cuda, cuda:N or metal)")))
}

/// Parses `f32`, `f16` or `bf16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.trim().to_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(Error::Invalid(format!("unknown dtype '{other}' (use f32, f16 or bf16)"))),
    }
}

/// Checks that the backend runs the UNet's operations in `dtype` on `device`.
fn check_dtype_support(device: &Device, dtype: DType) -> Result<()> {
    let probe = || -> candle_core::Result<()> {
        let x = Tensor::ones((1, 2, 4, 4), dtype, device)?;
        let w = Tensor::ones((2, 2, 3, 3), dtype, device)?;
        let y = x.conv2d(&w, 1, 1, 1, 1)?;
        let m = y.flatten_from(1)?;
        let _ = m.matmul(&m.t()?)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        Ok(())
    };
    probe().map_err(|e| {
        Error::Invalid(format!("dtype {dtype:?} is not supported on {} by this build of candle: {e}", device_name(device)))
    })
}

/// `cpu`, `cuda:0`, `metal`.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

/// Weights keyed by name, with diffusers' legacy attention names mapped to current ones, and a
/// record of which were used (so that unused weights are reported).
struct TrackedWeights {
    tensors: HashMap<String, Tensor>,
    used: Mutex<HashSet<String>>,
}

/// Maps old diffusers attention names (`query`, `key`, `value`, `proj_attn`) to the current
/// ones (`to_q`, `to_k`, `to_v`, `to_out.0`).
pub fn modern_key(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let in_attention = parts.windows(2).any(|w| w[0] == "attentions" && w[1].parse::<usize>().is_ok());
    if !in_attention {
        return name.to_string();
    }
    parts
        .iter()
        .map(|p| match *p {
            "query" => "to_q",
            "key" => "to_k",
            "value" => "to_v",
            "proj_attn" => "to_out.0",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A loaded model folder.
pub struct Ddpm {
    pub unet: UNet2DModel,
    pub config: UNet2DConfig,
    pub scheduler: SchedulerConfig,
    pub prediction: Prediction,
    pub dir: PathBuf,
    pub weights_file: PathBuf,
    pub device: Device,
    pub dtype: DType,
    weights_sha256: std::sync::OnceLock<String>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::open(path, crate::io::io_cause(&e)))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))
}

/// Finds the weights file of a model folder.
fn weights_path(dir: &Path) -> Result<PathBuf> {
    for name in ["diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::open(dir, "no diffusion_pytorch_model.safetensors (or .bin) in the model folder"))
}

/// What a diffusers model folder holds, read without loading the weights.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub config: UNet2DConfig,
    pub scheduler: SchedulerConfig,
    pub prediction: Prediction,
    /// `config.json`, `scheduler_config.json` (when present) and the weights file.
    pub files: Vec<PathBuf>,
    pub weights_file: PathBuf,
}

impl ModelFolder {
    /// Reads `config.json` and `scheduler_config.json` (defaults when absent) of a diffusers
    /// model folder (or its `unet/` subfolder, as in pipeline repositories) and finds the
    /// weights file.
    pub fn read(dir: &Path) -> Result<ModelFolder> {
        if !dir.exists() {
            return Err(Error::open(dir, "no such model folder"));
        }
        let (unet_dir, sched_path) = if dir.join("config.json").is_file() {
            (dir.to_path_buf(), dir.join("scheduler_config.json"))
        } else if dir.join("unet").join("config.json").is_file() {
            (dir.join("unet"), dir.join("scheduler").join("scheduler_config.json"))
        } else {
            return Err(Error::open(dir, "not a diffusers model folder (no config.json)"));
        };
        let config_path = unet_dir.join("config.json");
        let config: UNet2DConfig = read_json(&config_path)?;
        config.validate().map_err(|e| Error::content(&config_path, e))?;
        let mut files = vec![config_path];
        let scheduler: SchedulerConfig = if sched_path.is_file() {
            files.push(sched_path.clone());
            read_json(&sched_path)?
        } else {
            SchedulerConfig::default()
        };
        let prediction: Prediction = scheduler.prediction_type.parse().map_err(|e: Error| Error::content(&sched_path, e))?;
        let weights_file = weights_path(&unet_dir)?;
        files.push(weights_file.clone());
        Ok(ModelFolder { config, scheduler, prediction, files, weights_file })
    }
}

impl Ddpm {
    /// SHA-256 (hex) of the weights file, computed on first use.
    pub fn weights_sha256(&self) -> Result<String> {
        if let Some(h) = self.weights_sha256.get() {
            return Ok(h.clone());
        }
        let (_, h) = crate::io::sha256_file(&self.weights_file)?;
        Ok(self.weights_sha256.get_or_init(|| h).clone())
    }

    /// Loads `config.json`, the weights and `scheduler_config.json` (defaults when absent) from a
    /// diffusers model folder (or its `unet/` subfolder, as in pipeline repositories).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Ddpm> {
        let ModelFolder { config, scheduler, prediction, weights_file, .. } = ModelFolder::read(dir)?;
        check_dtype_support(device, dtype)?;
        let raw: Vec<(String, Tensor)> = if weights_file.extension().is_some_and(|e| e == "bin") {
            candle_core::pickle::read_all(&weights_file)
                .map_err(|e| Error::format(&weights_file, format!("cannot read PyTorch weights: {e}")))?
        } else {
            candle_core::safetensors::load(&weights_file, &Device::Cpu)
                .map_err(|e| Error::format(&weights_file, format!("cannot read safetensors: {e}")))?
                .into_iter()
                .collect()
        };
        let tensors: HashMap<String, Tensor> = raw.into_iter().map(|(k, v)| (modern_key(&k), v)).collect();
        let keys: Vec<String> = tensors.keys().cloned().collect();
        let weights = std::sync::Arc::new(TrackedWeights { tensors, used: Mutex::new(HashSet::new()) });
        let vb = VarBuilder::from_backend(Box::new(ArcBackend(weights.clone())), dtype, device.clone());
        let unet = UNet2DModel::new(vb, &config).map_err(|e| Error::content(&weights_file, e))?;
        let used = weights.used.lock().expect("lock").clone();
        let mut extra: Vec<&String> = keys.iter().filter(|k| !used.contains(*k)).collect();
        if !extra.is_empty() {
            extra.sort();
            let shown: Vec<&str> = extra.iter().take(8).map(|s| s.as_str()).collect();
            return Err(Error::content(
                &weights_file,
                format!(
                    "{} weight(s) not used by the model described in config.json: {}{}",
                    extra.len(),
                    shown.join(", "),
                    if extra.len() > 8 { ", ..." } else { "" }
                ),
            ));
        }
        Ok(Ddpm { unet, config, scheduler, prediction, dir: dir.to_path_buf(), weights_file, device: device.clone(), dtype, weights_sha256: Default::default() })
    }

    /// Checks that maps of `h`×`w` pixels with `c` channels fit this model.
    pub fn check_input(&self, c: usize, h: usize, w: usize) -> Result<()> {
        if c != self.config.in_channels {
            return Err(Error::Invalid(format!(
                "the model takes {} channel(s), the input has {c} (use --channels {} at ingest)",
                self.config.in_channels, self.config.in_channels
            )));
        }
        let m = self.config.size_multiple();
        if h % m != 0 || w % m != 0 || h == 0 || w == 0 {
            return Err(Error::Invalid(format!(
                "the model cannot take {h}x{w} maps: sides must be multiples of {m} (it downsamples {} times)",
                self.config.block_out_channels.len() - 1
            )));
        }
        Ok(())
    }

    /// Raw network output for a batch at one timestep (all `out_channels`).
    pub fn forward(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let b = x.dim(0).map_err(model_err)?;
        let ts = Tensor::full(t as f32, b, &self.device).map_err(model_err)?;
        self.unet.forward(&x.to_dtype(self.dtype).map_err(model_err)?, &ts).map_err(model_err)
    }
}

/// The VarBuilder backend: looks weights up in a shared [`TrackedWeights`] and records each use.
struct ArcBackend(std::sync::Arc<TrackedWeights>);

impl SimpleBackend for ArcBackend {
    fn get(&self, s: Shape, name: &str, _h: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self
            .0
            .tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("missing weight '{name}' (expected shape {:?})", s.dims())))?;
        if t.shape() != &s {
            return Err(candle_core::Error::Msg(format!(
                "weight '{name}' has the wrong shape: expected {:?}, found {:?}",
                s.dims(),
                t.dims()
            )));
        }
        self.0.used.lock().expect("lock").insert(name.to_string());
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.0.tensors.get(name).ok_or_else(|| candle_core::Error::Msg(format!("missing weight '{name}'")))?;
        self.0.used.lock().expect("lock").insert(name.to_string());
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.tensors.contains_key(name)
    }
}

/// Wraps a candle error.
pub fn model_err(e: candle_core::Error) -> Error {
    Error::Invalid(format!("model evaluation failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_attention_names_map_to_current_ones() {
        assert_eq!(modern_key("mid_block.attentions.0.query.weight"), "mid_block.attentions.0.to_q.weight");
        assert_eq!(modern_key("down_blocks.1.attentions.0.proj_attn.bias"), "down_blocks.1.attentions.0.to_out.0.bias");
        assert_eq!(modern_key("down_blocks.1.resnets.0.conv1.weight"), "down_blocks.1.resnets.0.conv1.weight");
        assert_eq!(modern_key("mid_block.attentions.0.group_norm.weight"), "mid_block.attentions.0.group_norm.weight");
    }

    #[test]
    fn devices_and_dtypes_parse_with_clear_errors() {
        assert!(matches!(parse_device("cpu").unwrap(), Device::Cpu));
        if !cfg!(feature = "cuda") {
            assert!(parse_device("cuda:1").unwrap_err().to_string().contains("--features cuda"));
        }
        assert!(parse_device("tpu").is_err());
        assert_eq!(parse_dtype("bf16").unwrap(), DType::BF16);
        assert!(parse_dtype("f8").is_err());
    }
}
