//! The frozen DDPM, loaded into candle from a model folder of one of three families: a diffusers
//! `UNet2DModel` (`config.json`, `diffusion_pytorch_model.safetensors`, optional
//! `scheduler_config.json`), a guided-diffusion / improved-diffusion ADM checkpoint (`adm.json` +
//! the released `*.pt`), or an original DDPM checkpoint of ermongroup/ddim (`ddpm.json` +
//! `*.ckpt`). Nothing here knows about astronomy or about sampling.

pub mod adm;
pub mod config;
pub mod kernels;
pub mod original;
pub mod profile;
pub mod unet;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

pub use adm::{AdmConfig, AdmUNet};
pub use config::{SchedulerConfig, UNet2DConfig};
pub use original::OriginalDdpmConfig;
pub use unet::UNet2DModel;

use crate::error::{Error, Result};

/// Maps per UNet evaluation by default (`--batch`, `model.batch`).
pub const DEFAULT_BATCH: usize = 8;

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

/// A device as written in a config or on the command line: `cpu`, `cuda`, `cuda:N` or `metal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Metal,
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    /// The syntax only: whether this build and machine can open the device is [`parse_device`]'s
    /// business.
    fn from_str(s: &str) -> Result<DeviceSpec> {
        let s = s.trim().to_lowercase();
        match s.as_str() {
            "cpu" => return Ok(DeviceSpec::Cpu),
            "cuda" => return Ok(DeviceSpec::Cuda(0)),
            "metal" => return Ok(DeviceSpec::Metal),
            _ => {}
        }
        match s.strip_prefix("cuda:") {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n
                .parse::<usize>()
                .map(DeviceSpec::Cuda)
                .map_err(|_| Error::Invalid(format!("bad device '{s}' (use cuda or cuda:N)"))),
            Some(_) => Err(Error::Invalid(format!("bad device '{s}' (use cuda or cuda:N)"))),
            None => Err(Error::Invalid(format!("unknown device '{s}' (use cpu, cuda, cuda:N or metal)"))),
        }
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` or `metal` and opens the device; GPU devices need the matching
/// cargo feature.
pub fn parse_device(s: &str) -> Result<Device> {
    match s.parse::<DeviceSpec>()? {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(ordinal) => {
            if !cfg!(feature = "cuda") {
                return Err(Error::Invalid(
                    "this expanse was built without CUDA support: rebuild with `cargo build --release --features cuda`"
                        .into(),
                ));
            }
            Device::new_cuda(ordinal).map_err(|e| Error::Invalid(format!("cannot open CUDA device {ordinal}: {e}")))
        }
        DeviceSpec::Metal => {
            if !cfg!(feature = "metal") {
                return Err(Error::Invalid(
                    "this expanse was built without Metal support: rebuild with `cargo build \
                    --release --features metal`"
                        .into(),
                ));
            }
            Device::new_metal(0).map_err(|e| Error::Invalid(format!("cannot open the Metal device: {e}")))
        }
    }
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

/// Whether bf16 on the CPU can run here: expanse's kernels on, and a CPU with AVX-512 BF16. There
/// bf16 means the stride-1 convolutions and the attention's two products per head (most of a
/// UNet's arithmetic) take bfloat16 operands with f32 sums; normalizations, the attention's
/// projections and softmax, element-wise operations and the strided convolutions stay f32.
pub fn cpu_bf16_check() -> Result<()> {
    if !kernels::enabled() {
        return Err(Error::Invalid("bf16 on the CPU runs on expanse's own kernels, which are switched off".into()));
    }
    if !kernels::bf16_available() {
        return Err(Error::Invalid(
            "bf16 on the CPU needs AVX-512 BF16 (avx512_bf16 in /proc/cpuinfo), which this CPU lacks: use dtype f32"
                .into(),
        ));
    }
    Ok(())
}

/// Checks that the backend runs the UNet's operations in `dtype` on `device`.
fn check_dtype_support(device: &Device, dtype: DType) -> Result<()> {
    if device.is_cpu() && dtype == DType::BF16 {
        return cpu_bf16_check();
    }
    let probe = || -> candle_core::Result<()> {
        let x = Tensor::ones((1, 2, 4, 4), dtype, device)?;
        let w = Tensor::ones((2, 2, 3, 3), dtype, device)?;
        let y = x.conv2d(&w, 1, 1, 1, 1)?;
        let m = y.flatten_from(1)?;
        let _ = m.matmul(&m.t()?)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        Ok(())
    };
    probe().map_err(|e| {
        Error::Invalid(format!(
            "dtype {dtype:?} is not supported on {} by this build of candle: {e}",
            device_name(device)
        ))
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

/// Which family of checkpoint a model folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    /// A diffusers `UNet2DModel` folder.
    Diffusers,
    /// guided-diffusion / improved-diffusion `UNetModel` (ADM): `adm.json` + `*.pt`.
    Adm,
    /// ermongroup/ddim's original DDPM `Model`: `ddpm.json` + `*.ckpt`, mapped onto diffusers'
    /// `UNet2DModel`.
    OriginalDdpm,
}

impl ModelFormat {
    /// `diffusers`, `adm`, `original_ddpm`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ModelFormat::Diffusers => "diffusers",
            ModelFormat::Adm => "adm",
            ModelFormat::OriginalDdpm => "original_ddpm",
        }
    }
}

/// The network's architecture.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per loaded model: size does not matter
pub enum Architecture {
    UNet2D(UNet2DConfig),
    Adm(AdmConfig),
}

impl Architecture {
    /// Channels of the data the network takes.
    pub fn in_channels(&self) -> usize {
        match self {
            Architecture::UNet2D(c) => c.in_channels,
            Architecture::Adm(c) => c.in_channels(),
        }
    }

    /// Channels of the raw output (the first `in_channels` are the prediction).
    pub fn out_channels(&self) -> usize {
        match self {
            Architecture::UNet2D(c) => c.out_channels,
            Architecture::Adm(c) => c.out_channels(),
        }
    }

    /// Maps must be multiples of this many pixels on each side.
    pub fn size_multiple(&self) -> usize {
        match self {
            Architecture::UNet2D(c) => c.size_multiple(),
            Architecture::Adm(c) => c.size_multiple(),
        }
    }

    /// Per resolution level (full resolution first): channels, res blocks, and attention heads
    /// where the level has attention.
    pub fn levels(&self) -> Vec<Level> {
        match self {
            Architecture::UNet2D(c) => c
                .block_out_channels
                .iter()
                .zip(&c.down_block_types)
                .map(|(&channels, kind)| Level {
                    channels,
                    blocks: c.layers_per_block,
                    heads: kind
                        .contains("Attn")
                        .then(|| c.attention_head_dim.map(|hd| (channels / hd.max(1)).max(1)).unwrap_or(1)),
                })
                .collect(),
            Architecture::Adm(c) => {
                let rates = c.attention_rates().unwrap_or_default();
                c.level_channels()
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                    .map(|(l, channels)| Level {
                        channels,
                        blocks: c.num_res_blocks,
                        heads: rates.contains(&(1 << l)).then(|| c.heads(channels, false).unwrap_or(1)),
                    })
                    .collect()
            }
        }
    }

    /// The size the network was trained on, when known.
    pub fn native_size(&self) -> Option<[usize; 2]> {
        match self {
            Architecture::UNet2D(c) => c.native_size(),
            Architecture::Adm(c) => Some([c.image_size, c.image_size]),
        }
    }
}

/// One resolution level of a UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub channels: usize,
    /// Res blocks on the way down.
    pub blocks: usize,
    /// Attention heads, where the level has attention.
    pub heads: Option<usize>,
}

/// The network of a loaded model (boxed: the two differ much in size).
#[derive(Debug, Clone)]
pub enum Network {
    UNet2D(Box<UNet2DModel>),
    Adm(Box<AdmUNet>),
}

impl Network {
    /// Raw output (B, out_channels, H, W) for x (B, C, H, W) at timesteps `t` (B,).
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Network::UNet2D(m) => m.forward(x, t),
            Network::Adm(m) => m.forward(x, t),
        }
    }
}

/// A loaded model folder.
pub struct Ddpm {
    pub unet: Network,
    pub format: ModelFormat,
    pub config: Architecture,
    pub scheduler: SchedulerConfig,
    pub prediction: Prediction,
    pub dir: PathBuf,
    pub weights_file: PathBuf,
    pub device: Device,
    /// The precision asked for (and recorded in outputs).
    pub dtype: DType,
    /// The dtype of the network's tensors: `dtype`, except bf16 on the CPU, which keeps f32
    /// tensors and runs the stride-1 convolutions and attention products in bfloat16 (see
    /// [`cpu_bf16_check`]).
    compute_dtype: DType,
    /// Number of weights the network uses.
    pub parameters: usize,
    weights_sha256: std::sync::OnceLock<String>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::open(path, crate::io::io_cause(e)))?;
    serde_json::from_str(&text).map_err(|e| match e.classify() {
        // JSON, but not a config we take: an unknown key, a value of the wrong type.
        serde_json::error::Category::Data => Error::model(path, format!("invalid JSON: {e}")).with_source(e),
        _ => Error::format(path, format!("invalid JSON: {e}")).with_source(e),
    })
}

/// Finds the weights file of a diffusers model folder.
fn weights_path(dir: &Path) -> Result<PathBuf> {
    for name in ["diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::open(dir, "no diffusion_pytorch_model.safetensors (or .bin) in the model folder"))
}

/// The one checkpoint (`*.pt`, `*.pth`, `*.ckpt`, `*.bin` or `*.safetensors`) of an ADM or
/// original DDPM folder.
fn checkpoint_path(dir: &Path, flags: &str) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::open(dir, crate::io::io_cause(e)))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| ["pt", "pth", "ckpt", "bin", "safetensors"].contains(&e))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::open(
            dir,
            format!("{flags} but no checkpoint (*.pt, *.pth, *.ckpt or *.safetensors) in the model folder"),
        )),
        _ => Err(Error::open(
            dir,
            format!(
                "more than one checkpoint in the model folder ({}): keep one",
                found
                    .iter()
                    .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// What a model folder holds, read without loading the weights.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub format: ModelFormat,
    pub config: Architecture,
    pub scheduler: SchedulerConfig,
    pub prediction: Prediction,
    /// The config file(s) and the weights file.
    pub files: Vec<PathBuf>,
    pub weights_file: PathBuf,
}

impl ModelFolder {
    /// Reads the folder's config: a diffusers folder (`config.json` and `scheduler_config.json`,
    /// defaults when absent; or their `unet/` and `scheduler/` subfolders, as in pipeline
    /// repositories), an ADM folder (`adm.json`) or an original DDPM folder (`ddpm.json`); and
    /// finds the weights file.
    pub fn read(dir: &Path) -> Result<ModelFolder> {
        if !dir.exists() {
            return Err(Error::open(dir, "no such model folder"));
        }
        let kinds: Vec<&str> =
            ["config.json", "adm.json", "ddpm.json"].into_iter().filter(|f| dir.join(f).is_file()).collect();
        match kinds.as_slice() {
            ["adm.json"] => return Self::read_adm(dir),
            ["ddpm.json"] => return Self::read_original(dir),
            [] | ["config.json"] => {}
            _ => {
                return Err(Error::open(
                    dir,
                    format!("the model folder holds {}: keep the one of its model", kinds.join(" and ")),
                ))
            }
        }
        let (unet_dir, sched_path) = if dir.join("config.json").is_file() {
            (dir.to_path_buf(), dir.join("scheduler_config.json"))
        } else if dir.join("unet").join("config.json").is_file() {
            (dir.join("unet"), dir.join("scheduler").join("scheduler_config.json"))
        } else {
            return Err(Error::open(
                dir,
                "not a model folder: expected config.json (diffusers), adm.json + *.pt (guided-diffusion ADM) or \
                    ddpm.json + *.ckpt (original DDPM)",
            ));
        };
        let config_path = unet_dir.join("config.json");
        let config: UNet2DConfig = read_json(&config_path)?;
        config.validate().map_err(|e| Error::model(&config_path, e))?;
        let mut files = vec![config_path];
        let scheduler: SchedulerConfig = if sched_path.is_file() {
            files.push(sched_path.clone());
            read_json(&sched_path)?
        } else {
            SchedulerConfig::default()
        };
        let prediction: Prediction =
            scheduler.prediction_type.parse().map_err(|e: Error| Error::model(&sched_path, e))?;
        scheduler.validate().map_err(|e| Error::model(&sched_path, e))?;
        let weights_file = weights_path(&unet_dir)?;
        files.push(weights_file.clone());
        Ok(ModelFolder {
            format: ModelFormat::Diffusers,
            config: Architecture::UNet2D(config),
            scheduler,
            prediction,
            files,
            weights_file,
        })
    }

    fn read_adm(dir: &Path) -> Result<ModelFolder> {
        let path = dir.join("adm.json");
        let config: AdmConfig = read_json(&path)?;
        config.validate().map_err(|e| Error::model(&path, e))?;
        let weights_file = checkpoint_path(dir, "adm.json")?;
        Ok(ModelFolder {
            format: ModelFormat::Adm,
            scheduler: config.scheduler(),
            prediction: config.prediction(),
            config: Architecture::Adm(config),
            files: vec![path, weights_file.clone()],
            weights_file,
        })
    }

    fn read_original(dir: &Path) -> Result<ModelFolder> {
        let path = dir.join("ddpm.json");
        let config: OriginalDdpmConfig = read_json(&path)?;
        config.validate().map_err(|e| Error::model(&path, e))?;
        let unet = config.unet_config();
        unet.validate().map_err(|e| Error::model(&path, e))?;
        let weights_file = checkpoint_path(dir, "ddpm.json")?;
        Ok(ModelFolder {
            format: ModelFormat::OriginalDdpm,
            scheduler: config.scheduler(),
            prediction: Prediction::Epsilon,
            config: Architecture::UNet2D(unet),
            files: vec![path, weights_file.clone()],
            weights_file,
        })
    }

    /// The config file that describes the network (named in weight errors).
    fn config_file(&self) -> &Path {
        &self.files[0]
    }
}

/// Reads every tensor of a safetensors file or a PyTorch `state_dict` (`torch.save` zip format).
fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let raw: Vec<(String, Tensor)> = if path.extension().is_some_and(|e| e == "safetensors") {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::format(path, format!("cannot read safetensors: {e}")).with_source(e))?
            .into_iter()
            .collect()
    } else {
        candle_core::pickle::read_all(path).map_err(|e| {
            Error::format(
                path,
                format!("cannot read PyTorch weights (a torch.save zip file of a state_dict is expected): {e}"),
            )
            .with_source(e)
        })?
    };
    if raw.is_empty() {
        return Err(Error::format(
            path,
            "holds no tensors: not a state_dict (save model.state_dict(), not the model or a training state)",
        ));
    }
    Ok(raw)
}

/// The weights of a checkpoint named as the network of `format` names them.
fn named_weights(raw: Vec<(String, Tensor)>, folder: &ModelFolder) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(raw.len());
    for (name, t) in raw {
        match folder.format {
            ModelFormat::Diffusers => {
                out.insert(modern_key(&name), t);
            }
            ModelFormat::Adm => {
                out.insert(name.strip_prefix("module.").unwrap_or(&name).to_string(), t);
            }
            ModelFormat::OriginalDdpm => {
                let Architecture::UNet2D(c) = &folder.config else { unreachable!("original DDPM maps onto UNet2D") };
                let Some(key) = original::diffusers_key(&name, c.block_out_channels.len()) else { continue };
                let t = if original::is_attention_projection(&key) && t.rank() == 4 {
                    let (o, i, _, _) = t.dims4().map_err(model_err)?;
                    t.reshape((o, i)).map_err(|e| {
                        Error::model(&folder.weights_file, format!("weight '{name}': {e}")).with_source(e)
                    })?
                } else {
                    t
                };
                out.insert(key, t);
            }
        }
    }
    Ok(out)
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

    /// Loads a model folder (see [`ModelFolder::read`]) onto `device` in `dtype` (weights stored
    /// in another precision are converted).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Ddpm> {
        let folder = ModelFolder::read(dir)?;
        check_dtype_support(device, dtype)?;
        let tensors = named_weights(read_tensors(&folder.weights_file)?, &folder)?;
        let keys: Vec<String> = tensors.keys().cloned().collect();
        let weights = std::sync::Arc::new(TrackedWeights { tensors, used: Mutex::new(HashSet::new()) });
        let cpu_bf16 = device.is_cpu() && dtype == DType::BF16;
        let compute_dtype = if cpu_bf16 { DType::F32 } else { dtype };
        let vb = VarBuilder::from_backend(Box::new(ArcBackend(weights.clone())), compute_dtype, device.clone());
        let config_name = folder.config_file().file_name().unwrap_or_default().to_string_lossy().into_owned();
        let build = || match &folder.config {
            Architecture::UNet2D(c) => UNet2DModel::new(vb, c).map(|m| Network::UNet2D(Box::new(m))),
            Architecture::Adm(c) => AdmUNet::new(vb, c).map(|m| Network::Adm(Box::new(m))),
        };
        let unet = if cpu_bf16 { kernels::with_bf16_kernels(build) } else { build() }.map_err(|e| {
            Error::model(&folder.weights_file, format!("{e} (the model described in {config_name})")).with_source(e)
        })?;
        let used = weights.used.lock().expect("lock").clone();
        let mut extra: Vec<&String> = keys.iter().filter(|k| !used.contains(*k)).collect();
        if !extra.is_empty() {
            extra.sort();
            let shown: Vec<&str> = extra.iter().take(8).map(|s| s.as_str()).collect();
            return Err(Error::model(
                &folder.weights_file,
                format!(
                    "{} weight(s) not used by the model described in {config_name}: {}{}",
                    extra.len(),
                    shown.join(", "),
                    if extra.len() > 8 { ", ..." } else { "" }
                ),
            ));
        }
        let parameters = used.iter().filter_map(|k| weights.tensors.get(k)).map(|t| t.elem_count()).sum();
        let ModelFolder { format, config, scheduler, prediction, weights_file, .. } = folder;
        Ok(Ddpm {
            unet,
            format,
            config,
            scheduler,
            prediction,
            dir: dir.to_path_buf(),
            weights_file,
            device: device.clone(),
            dtype,
            compute_dtype,
            parameters,
            weights_sha256: Default::default(),
        })
    }

    /// Checks that maps of `h`×`w` pixels with `c` channels fit this model.
    pub fn check_input(&self, c: usize, h: usize, w: usize) -> Result<()> {
        let want = self.config.in_channels();
        if c != want {
            return Err(Error::Invalid(format!(
                "the model takes {want} channel(s), the input has {c} (use --channels {want} at ingest)"
            )));
        }
        let m = self.config.size_multiple();
        if !h.is_multiple_of(m) || !w.is_multiple_of(m) || h == 0 || w == 0 {
            return Err(Error::Invalid(format!(
                "the model cannot take {h}x{w} maps: sides must be multiples of {m} (it downsamples {} times)",
                m.trailing_zeros()
            )));
        }
        Ok(())
    }

    /// Raw network output for a batch at one timestep (all `out_channels`).
    pub fn forward(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let b = x.dim(0).map_err(model_err)?;
        let ts = Tensor::full(t as f32, b, &self.device).map_err(model_err)?;
        self.unet.forward(&x.to_dtype(self.compute_dtype).map_err(model_err)?, &ts).map_err(model_err)
    }
}

/// The VarBuilder backend: looks weights up in a shared [`TrackedWeights`] and records each use.
struct ArcBackend(std::sync::Arc<TrackedWeights>);

impl SimpleBackend for ArcBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.0.tensors.get(name).ok_or_else(|| {
            candle_core::Error::Msg(format!("missing weight '{name}' (expected shape {:?})", s.dims()))
        })?;
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
