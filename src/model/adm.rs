//! guided-diffusion's (and improved-diffusion's) `UNetModel`, "ADM" (Dhariwal & Nichol 2021), in
//! candle: the network of the paper's own checkpoints (ImageNet, AFHQ-dog P2, ...). Weight names
//! are those of the released `state_dict`s; the configuration mirrors the command-line flags of
//! `guided_diffusion.script_util.model_and_diffusion_defaults()` (checked against
//! guided-diffusion by tests/adm_parity.rs).

use candle_core::{DType, Result, Tensor};
use candle_nn::{linear, Linear, Module, VarBuilder};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::config::SchedulerConfig;
use super::unet::{concat, upsample_nearest_2x, AttentionConfig, Conv, Norm, SpatialAttention, Timesteps};
use super::{profile, Prediction};

/// GroupNorm32: 32 groups, eps 1e-5, as guided-diffusion's `normalization()`.
const GROUPS: usize = 32;
const NORM_EPS: f64 = 1e-5;

fn d_image_size() -> usize {
    64
}
fn d_num_channels() -> usize {
    128
}
fn d_two() -> usize {
    2
}
fn d_four() -> usize {
    4
}
fn d_minus_one() -> i64 {
    -1
}
fn d_attention() -> String {
    "16,8".into()
}
fn d_true() -> bool {
    true
}
fn d_steps() -> usize {
    1000
}
fn d_linear() -> String {
    "linear".into()
}
fn d_p2_k() -> f64 {
    1.0
}

/// A flag written as JSON (`true`, `16`) or as the command line writes it (`"True"`, `"16"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    List(Vec<serde_json::Value>),
}

fn flex_bool<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    match Flag::deserialize(d)? {
        Flag::Bool(b) => Ok(b),
        Flag::Int(0) => Ok(false),
        Flag::Int(1) => Ok(true),
        Flag::Text(s) if ["true", "1", "yes"].contains(&s.to_lowercase().as_str()) => Ok(true),
        Flag::Text(s) if ["false", "0", "no"].contains(&s.to_lowercase().as_str()) => Ok(false),
        _ => Err(D::Error::custom("expected true or false")),
    }
}

fn flex_int<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    match Flag::deserialize(d)? {
        Flag::Int(i) => Ok(i),
        Flag::Text(s) => s.trim().parse().map_err(|_| D::Error::custom(format!("expected an integer, found '{s}'"))),
        _ => Err(D::Error::custom("expected an integer")),
    }
}

fn flex_usize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    let i = flex_int(d)?;
    usize::try_from(i).map_err(|_| D::Error::custom(format!("expected a non-negative integer, found {i}")))
}

fn flex_float<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    match Flag::deserialize(d)? {
        Flag::Int(i) => Ok(i as f64),
        Flag::Float(f) => Ok(f),
        Flag::Text(s) => s.trim().parse().map_err(|_| D::Error::custom(format!("expected a number, found '{s}'"))),
        _ => Err(D::Error::custom("expected a number")),
    }
}

/// `"16,8"`, `16` or `[16, 8]`, kept as the command line writes it.
fn flex_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    match Flag::deserialize(d)? {
        Flag::Text(s) => Ok(s),
        Flag::Int(i) => Ok(i.to_string()),
        Flag::List(v) => {
            let parts: Option<Vec<String>> = v.iter().map(|x| x.as_i64().map(|i| i.to_string())).collect();
            parts.map(|p| p.join(",")).ok_or_else(|| D::Error::custom("expected a list of integers"))
        }
        _ => Err(D::Error::custom("expected a comma-separated list such as \"16,8\"")),
    }
}

fn flex_text<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    match Flag::deserialize(d)? {
        Flag::Text(s) => Ok(s),
        Flag::Int(i) => Ok(i.to_string()),
        _ => Err(D::Error::custom("expected a string")),
    }
}

/// `adm.json`: the flags of guided-diffusion's `model_and_diffusion_defaults()` (a key missing
/// from the file takes guided-diffusion's default), so that a model's `MODEL_FLAGS` line can be
/// copied over. Keys that only matter for training (`dropout`, `use_checkpoint`, `use_kl`,
/// `rescale_learned_sigmas`, P2's `p2_gamma`/`p2_k`) and sampling (`timestep_respacing`: expanse
/// uses its own DDIM grid on the full schedule) are accepted and have no effect; unknown keys are
/// refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmConfig {
    #[serde(default = "d_image_size", deserialize_with = "flex_usize")]
    pub image_size: usize,
    #[serde(default = "d_num_channels", deserialize_with = "flex_usize")]
    pub num_channels: usize,
    #[serde(default = "d_two", deserialize_with = "flex_usize")]
    pub num_res_blocks: usize,
    #[serde(default = "d_four", deserialize_with = "flex_usize")]
    pub num_heads: usize,
    #[serde(default = "d_minus_one", deserialize_with = "flex_int")]
    pub num_heads_upsample: i64,
    #[serde(default = "d_minus_one", deserialize_with = "flex_int")]
    pub num_head_channels: i64,
    /// Image sizes (not downsampling rates) at which attention runs, e.g. `"32,16,8"`.
    #[serde(default = "d_attention", deserialize_with = "flex_list")]
    pub attention_resolutions: String,
    /// Empty: derived from `image_size` as guided-diffusion does.
    #[serde(default, deserialize_with = "flex_list")]
    pub channel_mult: String,
    #[serde(default, deserialize_with = "flex_float")]
    pub dropout: f64,
    #[serde(default, deserialize_with = "flex_bool")]
    pub class_cond: bool,
    #[serde(default, deserialize_with = "flex_bool")]
    pub use_checkpoint: bool,
    #[serde(default = "d_true", deserialize_with = "flex_bool")]
    pub use_scale_shift_norm: bool,
    #[serde(default, deserialize_with = "flex_bool")]
    pub resblock_updown: bool,
    /// The reference runs the torso in float16; expanse runs in the dtype it is asked for.
    #[serde(default, deserialize_with = "flex_bool")]
    pub use_fp16: bool,
    #[serde(default, deserialize_with = "flex_bool")]
    pub use_new_attention_order: bool,
    /// 6 output channels (ε, then the variance interpolation); ε is the first 3.
    #[serde(default, deserialize_with = "flex_bool")]
    pub learn_sigma: bool,
    #[serde(default = "d_steps", deserialize_with = "flex_usize")]
    pub diffusion_steps: usize,
    #[serde(default = "d_linear", deserialize_with = "flex_text")]
    pub noise_schedule: String,
    #[serde(default, deserialize_with = "flex_text")]
    pub timestep_respacing: String,
    #[serde(default, deserialize_with = "flex_bool")]
    pub use_kl: bool,
    /// The network predicts x₀ instead of ε.
    #[serde(default, deserialize_with = "flex_bool")]
    pub predict_xstart: bool,
    /// The network takes t·1000/diffusion_steps instead of t.
    #[serde(default, deserialize_with = "flex_bool")]
    pub rescale_timesteps: bool,
    #[serde(default, deserialize_with = "flex_bool")]
    pub rescale_learned_sigmas: bool,
    #[serde(default, deserialize_with = "flex_float")]
    pub p2_gamma: f64,
    #[serde(default = "d_p2_k", deserialize_with = "flex_float")]
    pub p2_k: f64,
}

impl Default for AdmConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

impl AdmConfig {
    /// Input channels: guided-diffusion's `create_model` builds RGB models.
    pub fn in_channels(&self) -> usize {
        3
    }

    /// 3, or 6 with `learn_sigma`.
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma {
            6
        } else {
            3
        }
    }

    /// Channel multipliers per level: explicit, or guided-diffusion's table for the image size.
    pub fn channel_mult(&self) -> std::result::Result<Vec<f64>, String> {
        if self.channel_mult.trim().is_empty() {
            return match self.image_size {
                512 => Ok(vec![0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]),
                256 => Ok(vec![1.0, 1.0, 2.0, 2.0, 4.0, 4.0]),
                128 => Ok(vec![1.0, 1.0, 2.0, 3.0, 4.0]),
                64 => Ok(vec![1.0, 2.0, 3.0, 4.0]),
                s => Err(format!(
                    "channel_mult is empty and image_size {s} has no default (guided-diffusion knows 64, \
                    128, 256, 512): give channel_mult"
                )),
            };
        }
        self.channel_mult
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<usize>()
                    .map(|m| m as f64)
                    .map_err(|_| format!("channel_mult: '{p}' is not an integer"))
            })
            .collect()
    }

    /// Downsampling rates with attention: `image_size / resolution` for each listed resolution.
    pub fn attention_rates(&self) -> std::result::Result<Vec<usize>, String> {
        self.attention_resolutions
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| match p.trim().parse::<usize>() {
                Ok(r) if r > 0 => Ok(self.image_size / r),
                _ => Err(format!("attention_resolutions: '{p}' is not a positive integer")),
            })
            .collect()
    }

    /// Channels of each level.
    pub fn level_channels(&self) -> std::result::Result<Vec<usize>, String> {
        Ok(self.channel_mult()?.iter().map(|m| (m * self.num_channels as f64) as usize).collect())
    }

    /// Heads of an attention block of `channels` channels (`upsample`: in the output blocks).
    pub fn heads(&self, channels: usize, upsample: bool) -> std::result::Result<usize, String> {
        if self.num_head_channels == -1 {
            let n =
                if upsample && self.num_heads_upsample != -1 { self.num_heads_upsample } else { self.num_heads as i64 };
            if n <= 0 || !channels.is_multiple_of(n as usize) {
                return Err(format!(
                    "{channels} attention channels cannot be split into {n} heads (num_heads{})",
                    if upsample { "_upsample" } else { "" }
                ));
            }
            Ok(n as usize)
        } else if self.num_head_channels > 0 && channels.is_multiple_of(self.num_head_channels as usize) {
            Ok(channels / self.num_head_channels as usize)
        } else {
            Err(format!(
                "{channels} attention channels are not divisible by num_head_channels {}",
                self.num_head_channels
            ))
        }
    }

    /// Checks what this implementation supports; the error names the flag.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.class_cond {
            return Err(
                "class_cond = true: class-conditional models are out of scope (use an unconditional checkpoint)".into(),
            );
        }
        if !matches!(self.noise_schedule.as_str(), "linear" | "cosine") {
            return Err(format!("noise_schedule '{}' is not supported (linear, cosine)", self.noise_schedule));
        }
        if self.diffusion_steps < 2 {
            return Err("diffusion_steps must be at least 2".into());
        }
        if self.num_channels == 0 || self.num_res_blocks == 0 {
            return Err("num_channels and num_res_blocks must be positive".into());
        }
        let levels = self.level_channels()?;
        for &c in &levels {
            if c == 0 || c % GROUPS != 0 {
                return Err(format!(
                    "a level with {c} channels cannot use GroupNorm with {GROUPS} groups (num_channels \
                    × channel_mult must be a multiple of {GROUPS})"
                ));
            }
        }
        let rates = self.attention_rates()?;
        let mut ds = 1;
        for (level, &c) in levels.iter().enumerate() {
            if rates.contains(&ds) {
                self.heads(c, false)?;
                self.heads(c, true)?;
            }
            if level + 1 < levels.len() {
                ds *= 2;
            }
        }
        self.heads(*levels.last().expect("levels"), false)?;
        Ok(())
    }

    /// The noise schedule and prediction as a diffusers scheduler config: guided-diffusion's
    /// linear β from 1e-4·s to 0.02·s with s = 1000/diffusion_steps, or the cosine schedule
    /// (diffusers' `squaredcos_cap_v2`, the same formula and cap).
    pub fn scheduler(&self) -> SchedulerConfig {
        let scale = 1000.0 / self.diffusion_steps as f64;
        SchedulerConfig {
            num_train_timesteps: self.diffusion_steps,
            beta_start: 1e-4 * scale,
            beta_end: 0.02 * scale,
            beta_schedule: if self.noise_schedule == "cosine" { "squaredcos_cap_v2".into() } else { "linear".into() },
            prediction_type: if self.predict_xstart { "sample".into() } else { "epsilon".into() },
            ..SchedulerConfig::default()
        }
    }

    /// What the network predicts.
    pub fn prediction(&self) -> Prediction {
        if self.predict_xstart {
            Prediction::Sample
        } else {
            Prediction::Epsilon
        }
    }

    /// Maps must be multiples of this many pixels on each side.
    pub fn size_multiple(&self) -> usize {
        1 << self.channel_mult().map(|m| m.len().saturating_sub(1)).unwrap_or(0)
    }
}

/// What the blocks of an [`AdmUNet`] share (from the [`AdmConfig`] flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmBlockConfig {
    /// Width of the time embedding (4 × `num_channels`).
    pub emb_channels: usize,
    pub use_scale_shift_norm: bool,
    /// Downsampling and upsampling by ResBlocks instead of convolutions.
    pub resblock_updown: bool,
    pub use_new_attention_order: bool,
}

impl AdmBlockConfig {
    pub fn new(config: &AdmConfig) -> Self {
        Self {
            emb_channels: 4 * config.num_channels,
            use_scale_shift_norm: config.use_scale_shift_norm,
            resblock_updown: config.resblock_updown,
            use_new_attention_order: config.use_new_attention_order,
        }
    }

    fn res_block(&self, out_channels: usize, resample: Option<Resample>) -> ResBlockConfig {
        ResBlockConfig {
            out_channels,
            emb_channels: self.emb_channels,
            use_scale_shift_norm: self.use_scale_shift_norm,
            resample,
        }
    }

    fn attention(&self, num_heads: usize) -> AttentionBlockConfig {
        AttentionBlockConfig { num_heads, use_new_attention_order: self.use_new_attention_order }
    }
}

/// ResBlock's optional resampling of both paths (`resblock_updown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    Up,
    Down,
}

impl Resample {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Resample::Up => upsample_nearest_2x(x),
            Resample::Down => profile::record("average pooling", 0.0, || x.avg_pool2d(2)),
        }
    }
}

/// A [`ResBlock`]'s settings besides its input channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResBlockConfig {
    pub out_channels: usize,
    pub emb_channels: usize,
    pub use_scale_shift_norm: bool,
    pub resample: Option<Resample>,
}

/// guided-diffusion's `ResBlock`: GroupNorm, SiLU, conv; the time embedding added (or, with
/// `use_scale_shift_norm`, applied as scale and shift after the second norm); GroupNorm, SiLU,
/// conv; plus the skip path (identity or 1×1 conv). With up/down, both paths are resampled
/// between the first norm and conv.
///
/// It takes the time embedding besides the input, so it has an inherent
/// [`forward(x, emb_silu)`](Self::forward) instead of [`Module`].
#[derive(Debug, Clone)]
pub struct ResBlock {
    in_norm: Norm,
    in_conv: Conv,
    emb: Linear,
    out_norm: Norm,
    out_conv: Conv,
    skip: Option<Conv>,
    scale_shift: bool,
    resample: Option<Resample>,
}

impl ResBlock {
    pub fn new(vb: VarBuilder, in_channels: usize, cfg: &ResBlockConfig) -> Result<Self> {
        let (cin, cout) = (in_channels, cfg.out_channels);
        let scale_shift = cfg.use_scale_shift_norm;
        Ok(Self {
            in_norm: Norm::new(vb.pp("in_layers.0"), GROUPS, cin, NORM_EPS)?,
            in_conv: Conv::new(vb.pp("in_layers.2"), cin, cout, 3, 1, 1, 0)?,
            emb: linear(cfg.emb_channels, if scale_shift { 2 * cout } else { cout }, vb.pp("emb_layers.1"))?,
            out_norm: Norm::new(vb.pp("out_layers.0"), GROUPS, cout, NORM_EPS)?,
            out_conv: Conv::new(vb.pp("out_layers.3"), cout, cout, 3, 1, 1, 0)?,
            skip: if cin != cout { Some(Conv::new(vb.pp("skip_connection"), cin, cout, 1, 1, 0, 0)?) } else { None },
            scale_shift,
            resample: cfg.resample,
        })
    }

    /// `emb_silu` is SiLU(time embedding), shared by every block (the SiLU of `emb_layers`,
    /// computed once per forward).
    pub fn forward(&self, x: &Tensor, emb_silu: &Tensor) -> Result<Tensor> {
        let e = self.emb.forward(emb_silu)?.to_dtype(x.dtype())?;
        let h = self.in_norm.forward_silu(x)?;
        let (h, x) = match self.resample {
            Some(r) => (r.apply(&h)?, r.apply(x)?),
            None => (h, x.clone()),
        };
        let h = if self.scale_shift {
            self.out_norm.forward_scale_shift_silu(&self.in_conv.forward(&h)?, &e)?
        } else {
            self.out_norm.forward_silu(&self.in_conv.forward_add(&h, &e, 1.0)?)?
        };
        let skip = match &self.skip {
            Some(c) => c.forward(&x)?,
            None => x,
        };
        self.out_conv.forward_add(&h, &skip, 1.0)
    }
}

/// An [`AttentionBlock`]'s settings besides its channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionBlockConfig {
    pub num_heads: usize,
    /// `QKVAttention` (all q, all k, all v) instead of `QKVAttentionLegacy` (per head q, k, v).
    pub use_new_attention_order: bool,
}

/// guided-diffusion's `AttentionBlock`: GroupNorm, a 1×1 `qkv` projection split into heads
/// (legacy order: per head q, k, v; new order: all q, all k, all v), softmax(q·k/√d), `proj_out`,
/// residual. Built as the equivalent [`SpatialAttention`] with the rows of `qkv` regrouped, so it
/// shares its arithmetic: the attention weights in f32 in every dtype.
#[derive(Debug, Clone)]
pub struct AttentionBlock {
    inner: SpatialAttention,
}

impl AttentionBlock {
    pub fn new(vb: VarBuilder, channels: usize, cfg: &AttentionBlockConfig) -> Result<Self> {
        let (c, heads, new_order) = (channels, cfg.num_heads, cfg.use_new_attention_order);
        let qkv_w = vb.get((3 * c, c, 1), "qkv.weight")?.squeeze(2)?.contiguous()?;
        let qkv_b = vb.get(3 * c, "qkv.bias")?.contiguous()?;
        let proj_w = vb.get((c, c, 1), "proj_out.weight")?.squeeze(2)?;
        let proj_b = vb.get(c, "proj_out.bias")?;
        let hd = c / heads;
        // Row of qkv holding part p (0 q, 1 k, 2 v) of channel i of head h.
        let row = |p: usize, h: usize, i: usize| -> u32 {
            (if new_order { p * c + h * hd + i } else { h * 3 * hd + p * hd + i }) as u32
        };
        let mut tensors = std::collections::HashMap::new();
        for (p, name) in ["to_q", "to_k", "to_v"].iter().enumerate() {
            let rows: Vec<u32> = (0..heads).flat_map(|h| (0..hd).map(move |i| row(p, h, i))).collect();
            let idx = Tensor::from_vec(rows, c, qkv_w.device())?;
            tensors.insert(format!("{name}.weight"), qkv_w.index_select(&idx, 0)?);
            tensors.insert(format!("{name}.bias"), qkv_b.index_select(&idx, 0)?);
        }
        tensors.insert("to_out.0.weight".into(), proj_w);
        tensors.insert("to_out.0.bias".into(), proj_b);
        tensors.insert("group_norm.weight".into(), vb.get(c, "norm.weight")?);
        tensors.insert("group_norm.bias".into(), vb.get(c, "norm.bias")?);
        let regrouped = VarBuilder::from_tensors(tensors, vb.dtype(), vb.device());
        let attention =
            AttentionConfig { head_dim: Some(hd), groups: GROUPS, eps: NORM_EPS, rescale_output_factor: 1.0 };
        Ok(Self { inner: SpatialAttention::new(regrouped, c, &attention)? })
    }
}

impl Module for AttentionBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.forward(x)
    }
}

/// guided-diffusion's `Downsample` with `use_conv`: a stride-2 3×3 convolution (`op`).
#[derive(Debug, Clone)]
pub struct Downsample {
    op: Conv,
}

impl Downsample {
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self { op: Conv::new(vb.pp("op"), channels, channels, 3, 2, 1, 0)? })
    }
}

impl Module for Downsample {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.op.forward(x)
    }
}

/// guided-diffusion's `Upsample` with `use_conv`: nearest ×2, then a 3×3 convolution.
#[derive(Debug, Clone)]
pub struct Upsample {
    conv: Conv,
}

impl Upsample {
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self { conv: Conv::new(vb.pp("conv"), channels, channels, 3, 1, 1, 0)? })
    }
}

impl Module for Upsample {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(&upsample_nearest_2x(x)?)
    }
}

/// `time_embed`: linear → SiLU → linear.
#[derive(Debug, Clone)]
pub struct TimeEmbed {
    linear_0: Linear,
    linear_2: Linear,
}

impl TimeEmbed {
    pub fn new(vb: VarBuilder, model_channels: usize, emb_channels: usize) -> Result<Self> {
        Ok(Self {
            linear_0: linear(model_channels, emb_channels, vb.pp("0"))?,
            linear_2: linear(emb_channels, emb_channels, vb.pp("2"))?,
        })
    }
}

impl Module for TimeEmbed {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&candle_nn::ops::silu(&self.linear_0.forward(x)?)?)
    }
}

/// One module of a [`TimestepEmbedSequential`].
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a few dozen per network, built once
enum Layer {
    Conv(Conv),
    Res(ResBlock),
    Attention(AttentionBlock),
    Downsample(Downsample),
    Upsample(Upsample),
}

impl Layer {
    fn forward(&self, x: &Tensor, emb_silu: &Tensor) -> Result<Tensor> {
        match self {
            Layer::Conv(c) => c.forward(x),
            Layer::Res(r) => r.forward(x, emb_silu),
            Layer::Attention(a) => a.forward(x),
            Layer::Downsample(d) => d.forward(x),
            Layer::Upsample(u) => u.forward(x),
        }
    }
}

/// guided-diffusion's `TimestepEmbedSequential`, each of `input_blocks`, `middle_block` and
/// `output_blocks`: its modules in turn, the ResBlocks given the time embedding. Built by one
/// constructor per kind of block; takes the time embedding: inherent `forward(x, emb_silu)`.
#[derive(Debug, Clone)]
pub struct TimestepEmbedSequential {
    layers: Vec<Layer>,
}

impl TimestepEmbedSequential {
    /// `input_blocks.0`: the 3×3 input convolution.
    pub fn conv_in(vb: VarBuilder, in_channels: usize, out_channels: usize) -> Result<Self> {
        Ok(Self { layers: vec![Layer::Conv(Conv::new(vb.pp("0"), in_channels, out_channels, 3, 1, 1, 0)?)] })
    }

    /// An input block: a ResBlock, then an attention of `heads` heads where given.
    pub fn input_block(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        heads: Option<usize>,
        cfg: &AdmBlockConfig,
    ) -> Result<Self> {
        Self::output_block(vb, in_channels, out_channels, heads, false, cfg)
    }

    /// The input block that halves the map: a down ResBlock with `resblock_updown`, else a
    /// [`Downsample`].
    pub fn downsample_block(vb: VarBuilder, channels: usize, cfg: &AdmBlockConfig) -> Result<Self> {
        let vb = vb.pp("0");
        let layer = if cfg.resblock_updown {
            Layer::Res(ResBlock::new(vb, channels, &cfg.res_block(channels, Some(Resample::Down)))?)
        } else {
            Layer::Downsample(Downsample::new(vb, channels)?)
        };
        Ok(Self { layers: vec![layer] })
    }

    /// `middle_block`: ResBlock, attention of `heads` heads, ResBlock.
    pub fn middle_block(vb: VarBuilder, channels: usize, heads: usize, cfg: &AdmBlockConfig) -> Result<Self> {
        let res = cfg.res_block(channels, None);
        Ok(Self {
            layers: vec![
                Layer::Res(ResBlock::new(vb.pp("0"), channels, &res)?),
                Layer::Attention(AttentionBlock::new(vb.pp("1"), channels, &cfg.attention(heads))?),
                Layer::Res(ResBlock::new(vb.pp("2"), channels, &res)?),
            ],
        })
    }

    /// An output block (its input is the previous output concatenated with a skip connection):
    /// a ResBlock, an attention of `heads` heads where given, then with `upsample` an up
    /// ResBlock (`resblock_updown`) or an [`Upsample`].
    pub fn output_block(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        heads: Option<usize>,
        upsample: bool,
        cfg: &AdmBlockConfig,
    ) -> Result<Self> {
        let mut layers = vec![Layer::Res(ResBlock::new(vb.pp("0"), in_channels, &cfg.res_block(out_channels, None))?)];
        if let Some(heads) = heads {
            layers.push(Layer::Attention(AttentionBlock::new(vb.pp("1"), out_channels, &cfg.attention(heads))?));
        }
        if upsample {
            let vbu = vb.pp(layers.len());
            layers.push(if cfg.resblock_updown {
                Layer::Res(ResBlock::new(vbu, out_channels, &cfg.res_block(out_channels, Some(Resample::Up)))?)
            } else {
                Layer::Upsample(Upsample::new(vbu, out_channels)?)
            });
        }
        Ok(Self { layers })
    }

    /// `emb_silu`: SiLU(time embedding), as [`ResBlock::forward`] takes it.
    pub fn forward(&self, x: &Tensor, emb_silu: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h, emb_silu)?;
        }
        Ok(h)
    }
}

/// The unconditional guided-diffusion `UNetModel`.
#[derive(Debug, Clone)]
pub struct AdmUNet {
    config: AdmConfig,
    time_proj: Timesteps,
    time_embed: TimeEmbed,
    input_blocks: Vec<TimestepEmbedSequential>,
    middle_block: TimestepEmbedSequential,
    output_blocks: Vec<TimestepEmbedSequential>,
    out_norm: Norm,
    out_conv: Conv,
}

impl AdmUNet {
    /// Builds the network from weights named as in guided-diffusion's `state_dict`.
    pub fn new(vb: VarBuilder, config: &AdmConfig) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let err = |e: String| candle_core::Error::Msg(e);
        let mc = config.num_channels;
        let cfg = AdmBlockConfig::new(config);
        let levels = config.level_channels().map_err(err)?;
        let rates = config.attention_rates().map_err(err)?;
        let heads = |ds: usize, c: usize, up: bool| -> Result<Option<usize>> {
            if rates.contains(&ds) {
                config.heads(c, up).map(Some).map_err(err)
            } else {
                Ok(None)
            }
        };

        let input_ch = levels[0];
        let vbi = vb.pp("input_blocks");
        let mut input_blocks = vec![TimestepEmbedSequential::conv_in(vbi.pp("0"), config.in_channels(), input_ch)?];
        let mut chans = vec![input_ch];
        let (mut ch, mut ds) = (input_ch, 1usize);
        for (level, &out) in levels.iter().enumerate() {
            for _ in 0..config.num_res_blocks {
                input_blocks.push(TimestepEmbedSequential::input_block(
                    vbi.pp(input_blocks.len()),
                    ch,
                    out,
                    heads(ds, out, false)?,
                    &cfg,
                )?);
                ch = out;
                chans.push(ch);
            }
            if level + 1 < levels.len() {
                input_blocks.push(TimestepEmbedSequential::downsample_block(vbi.pp(input_blocks.len()), ch, &cfg)?);
                chans.push(ch);
                ds *= 2;
            }
        }

        let middle_block = TimestepEmbedSequential::middle_block(
            vb.pp("middle_block"),
            ch,
            config.heads(ch, false).map_err(err)?,
            &cfg,
        )?;

        let vbo = vb.pp("output_blocks");
        let mut output_blocks = Vec::new();
        for (level, &out) in levels.iter().enumerate().rev() {
            for i in 0..=config.num_res_blocks {
                let skip = chans.pop().ok_or_else(|| err("skip channels exhausted".into()))?;
                let upsample = level > 0 && i == config.num_res_blocks;
                output_blocks.push(TimestepEmbedSequential::output_block(
                    vbo.pp(output_blocks.len()),
                    ch + skip,
                    out,
                    heads(ds, out, true)?,
                    upsample,
                    &cfg,
                )?);
                ch = out;
                if upsample {
                    ds /= 2;
                }
            }
        }

        Ok(Self {
            config: config.clone(),
            time_proj: Timesteps::new(mc, true, 0.0),
            time_embed: TimeEmbed::new(vb.pp("time_embed"), mc, cfg.emb_channels)?,
            input_blocks,
            middle_block,
            output_blocks,
            out_norm: Norm::new(vb.pp("out.0"), GROUPS, ch, NORM_EPS)?,
            out_conv: Conv::new(vb.pp("out.2"), input_ch, config.out_channels(), 3, 1, 1, 0)?,
        })
    }

    pub fn config(&self) -> &AdmConfig {
        &self.config
    }

    /// The raw output (B, 3 or 6, H, W) at timesteps `t` (B,) — exactly `UNetModel(x, t)`
    /// (`t` is rescaled first when `rescale_timesteps` is set, as guided-diffusion's wrapper does).
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let t = if self.config.rescale_timesteps {
            (t.to_dtype(DType::F32)? * (1000.0 / self.config.diffusion_steps as f64))?
        } else {
            t.clone()
        };
        let emb = self.time_proj.forward(&t)?.to_dtype(dtype)?;
        let emb_silu = candle_nn::ops::silu(&self.time_embed.forward(&emb)?)?;
        let mut h = x.clone();
        let mut states = Vec::with_capacity(self.input_blocks.len());
        for block in &self.input_blocks {
            h = block.forward(&h, &emb_silu)?;
            states.push(h.clone());
        }
        h = self.middle_block.forward(&h, &emb_silu)?;
        for block in &self.output_blocks {
            let skip = states.pop().ok_or_else(|| candle_core::Error::Msg("UNet skip connections exhausted".into()))?;
            h = block.forward(&concat(&h, &skip)?, &emb_silu)?;
        }
        self.out_conv.forward(&self.out_norm.forward_silu(&h)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_guided_diffusions() {
        let c = AdmConfig::default();
        assert_eq!((c.image_size, c.num_channels, c.num_res_blocks, c.num_heads), (64, 128, 2, 4));
        assert_eq!((c.num_heads_upsample, c.num_head_channels), (-1, -1));
        assert_eq!(c.attention_rates().unwrap(), vec![4, 8]);
        assert_eq!(c.channel_mult().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert!(c.use_scale_shift_norm && !c.resblock_updown && !c.learn_sigma && !c.use_new_attention_order);
        assert_eq!((c.diffusion_steps, c.noise_schedule.as_str()), (1000, "linear"));
        assert_eq!(c.out_channels(), 3);
        c.validate().unwrap();
    }

    #[test]
    fn flags_copied_from_a_command_line_parse() {
        // The ImageNet 256×256 unconditional MODEL_FLAGS, values as the shell writes them.
        let c: AdmConfig = serde_json::from_str(
            r#"{"attention_resolutions": "32,16,8", "class_cond": "False", "diffusion_steps": "1000", "image_size": 256,
                "learn_sigma": "True", "noise_schedule": "linear", "num_channels": 256, "num_head_channels": 64,
                "num_res_blocks": 2, "resblock_updown": true, "use_fp16": true, "use_scale_shift_norm": true}"#,
        )
        .unwrap();
        assert_eq!(c.attention_rates().unwrap(), vec![8, 16, 32]);
        assert_eq!(c.level_channels().unwrap(), vec![256, 256, 512, 512, 1024, 1024]);
        assert_eq!(c.out_channels(), 6);
        assert_eq!(c.size_multiple(), 32);
        c.validate().unwrap();
        let c: AdmConfig =
            serde_json::from_str(r#"{"image_size": 512, "num_channels": 256, "attention_resolutions": [32, 16]}"#)
                .unwrap();
        assert_eq!(c.level_channels().unwrap(), vec![128, 256, 256, 512, 512, 1024, 1024]);
        assert_eq!(c.attention_rates().unwrap(), vec![16, 32]);
    }

    #[test]
    fn unsupported_and_unknown_flags_are_named() {
        let e = serde_json::from_str::<AdmConfig>(r#"{"num_chanels": 64}"#).unwrap_err().to_string();
        assert!(e.contains("num_chanels"), "{e}");
        let e = serde_json::from_str::<AdmConfig>(r#"{"learn_sigma": "maybe"}"#).unwrap_err().to_string();
        assert!(e.contains("true or false"), "{e}");
        let c: AdmConfig = serde_json::from_str(r#"{"class_cond": true}"#).unwrap();
        assert!(c.validate().unwrap_err().contains("class_cond"));
        let c: AdmConfig = serde_json::from_str(r#"{"image_size": 32}"#).unwrap();
        assert!(c.validate().unwrap_err().contains("channel_mult"));
        let c: AdmConfig = serde_json::from_str(r#"{"noise_schedule": "sqrt"}"#).unwrap();
        assert!(c.validate().unwrap_err().contains("sqrt"));
        let c: AdmConfig = serde_json::from_str(r#"{"num_head_channels": 48}"#).unwrap();
        assert!(c.validate().unwrap_err().contains("num_head_channels 48"));
        let c: AdmConfig = serde_json::from_str(r#"{"num_channels": 40}"#).unwrap();
        assert!(c.validate().unwrap_err().contains("GroupNorm"));
    }

    #[test]
    fn schedules_and_predictions_follow_the_flags() {
        let c: AdmConfig =
            serde_json::from_str(r#"{"diffusion_steps": 4000, "noise_schedule": "linear", "predict_xstart": true}"#)
                .unwrap();
        let s = c.scheduler();
        assert_eq!(s.num_train_timesteps, 4000);
        assert!((s.beta_start - 2.5e-5).abs() < 1e-18 && (s.beta_end - 0.005).abs() < 1e-15);
        assert_eq!(c.prediction(), Prediction::Sample);
        let c: AdmConfig = serde_json::from_str(r#"{"noise_schedule": "cosine"}"#).unwrap();
        assert_eq!(c.scheduler().beta_schedule, "squaredcos_cap_v2");
    }
}
