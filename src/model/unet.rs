//! diffusers' `UNet2DModel` in candle: the same layers, the same weight names, the same
//! arithmetic (checked against diffusers by tests/unet_parity.rs).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{linear, Conv2dConfig, GroupNorm, Linear, VarBuilder};

use super::config::UNet2DConfig;
use super::kernels::{self, CpuAttention, CpuConv2d, CpuGroupNorm};
use super::profile;

fn on_cpu_f32(vb: &VarBuilder) -> bool {
    vb.device().is_cpu() && vb.dtype() == DType::F32
}

fn fast(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && kernels::enabled()
}

/// A 2-D convolution: [`CpuConv2d`] for f32 on the CPU (in bfloat16 at stride 1 when made inside
/// [`kernels::with_bf16_kernels`]), candle's `Conv2d` elsewhere. `pad_end` pads the bottom and
/// right once more before it (the original DDPM's downsampling).
#[derive(Debug, Clone)]
pub struct Conv {
    conv: candle_nn::Conv2d,
    cpu: Option<CpuConv2d>,
    pad_end: usize,
    label: &'static str,
}

impl Conv {
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        pad_end: usize,
    ) -> Result<Self> {
        let conv = candle_nn::conv2d(cin, cout, k, Conv2dConfig { padding, stride, ..Default::default() }, vb.clone())?;
        let cpu = if on_cpu_f32(&vb) {
            let bias = conv.bias().map(|b| b.to_vec1::<f32>()).transpose()?;
            let cpu = CpuConv2d::new(conv.weight(), bias, stride, padding, pad_end)?;
            Some(if kernels::bf16_kernels() { cpu.to_bf16()? } else { cpu })
        } else {
            None
        };
        let label = match (k, stride) {
            (1, _) => "conv 1×1",
            (_, 1) => "conv 3×3",
            _ => "conv 3×3 stride 2",
        };
        Ok(Self { conv, cpu, pad_end, label })
    }

    fn flops(&self, x: &Tensor) -> Result<f64> {
        let (b, _, h, w) = x.dims4()?;
        let wd = self.conv.weight().dims4()?;
        let c = self.conv.config();
        let (ho, wo) = kernels::conv_output_size((h, w), (wd.2, wd.3), c.stride, c.padding, self.pad_end);
        Ok(2.0 * (b * wd.0 * wd.1 * wd.2 * wd.3 * ho * wo) as f64)
    }

    fn reference(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_end > 0 {
            self.conv.forward(&x.pad_with_zeros(3, 0, self.pad_end)?.pad_with_zeros(2, 0, self.pad_end)?)
        } else {
            self.conv.forward(x)
        }
    }

    /// (conv(x) + extra) · scale, with `extra` (B, Cout) added per image and channel or (B, Cout,
    /// Ho, Wo) element by element — one pass on the CPU.
    pub fn forward_add(&self, x: &Tensor, extra: &Tensor, scale: f64) -> Result<Tensor> {
        let flops = self.flops(x)?;
        match &self.cpu {
            Some(k) if fast(x) => profile::record(self.label, flops, || {
                x.contiguous()?
                    .apply_op2_no_bwd(&extra.contiguous()?, &kernels::ConvAdd { conv: k, scale: scale as f32 })
            }),
            _ => {
                let y = profile::record(self.label, flops, || self.reference(x))?;
                profile::record("adds and scales", 0.0, || {
                    let y = if extra.rank() == 2 {
                        y.broadcast_add(&extra.unsqueeze(2)?.unsqueeze(3)?)?
                    } else {
                        (y + extra)?
                    };
                    if scale == 1.0 {
                        Ok(y)
                    } else {
                        y * scale
                    }
                })
            }
        }
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let flops = self.flops(x)?;
        match &self.cpu {
            Some(k) if fast(x) => profile::record(self.label, flops, || x.contiguous()?.apply_op1_no_bwd(k)),
            _ => profile::record(self.label, flops, || self.reference(x)),
        }
    }
}

/// Channel concatenation of two (B, C, H, W) tensors.
pub(crate) fn concat(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    profile::record("upsampling, concatenation", 0.0, || {
        if fast(a) && fast(b) {
            a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &kernels::ChannelConcat)
        } else {
            Tensor::cat(&[a, b], 1)
        }
    })
}

fn conv3(cin: usize, cout: usize, stride: usize, padding: usize, vb: VarBuilder) -> Result<Conv> {
    Conv::new(vb, cin, cout, 3, stride, padding, 0)
}

/// GroupNorm, optionally followed by SiLU: one fused [`CpuGroupNorm`] pass for f32 on the CPU,
/// candle's operations elsewhere. [`Module::forward`] is the plain GroupNorm.
#[derive(Debug, Clone)]
pub struct Norm {
    norm: GroupNorm,
    cpu: Option<CpuGroupNorm>,
}

impl Norm {
    pub fn new(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
        let cpu = if on_cpu_f32(&vb) {
            Some(CpuGroupNorm::new(weight.to_vec1::<f32>()?, bias.to_vec1::<f32>()?, groups, eps))
        } else {
            None
        };
        Ok(Self { norm: GroupNorm::new(weight, bias, channels, groups, eps)?, cpu })
    }

    /// SiLU(GroupNorm(x) · (1 + scale) + shift), with `modulation` (B, 2C) = [scale | shift]
    /// per image and channel (ADM's scale-shift norm).
    pub fn forward_scale_shift_silu(&self, x: &Tensor, modulation: &Tensor) -> Result<Tensor> {
        match &self.cpu {
            Some(k) if fast(x) => profile::record("group norm + scale-shift + SiLU", 0.0, || {
                x.contiguous()?.apply_op2_no_bwd(&modulation.contiguous()?, &k.scale_shift_op(true))
            }),
            _ => {
                let c = x.dim(1)?;
                let scale = modulation.narrow(1, 0, c)?.unsqueeze(2)?.unsqueeze(3)?;
                let shift = modulation.narrow(1, c, c)?.unsqueeze(2)?.unsqueeze(3)?;
                let n = profile::record("group norm", 0.0, || self.norm.forward(x))?;
                let n = profile::record("scale and shift", 0.0, || {
                    n.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(&shift)
                })?;
                profile::record("SiLU", 0.0, || candle_nn::ops::silu(&n))
            }
        }
    }

    /// SiLU(GroupNorm(x)).
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        match &self.cpu {
            Some(k) if fast(x) => {
                profile::record("group norm + SiLU", 0.0, || x.contiguous()?.apply_op1_no_bwd(&k.op(true)))
            }
            _ => {
                let n = profile::record("group norm", 0.0, || self.norm.forward(x))?;
                profile::record("SiLU", 0.0, || candle_nn::ops::silu(&n))
            }
        }
    }
}

impl Module for Norm {
    /// GroupNorm.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.cpu {
            Some(k) if fast(x) => profile::record("group norm", 0.0, || x.contiguous()?.apply_op1_no_bwd(&k.op(false))),
            _ => profile::record("group norm", 0.0, || self.norm.forward(x)),
        }
    }
}

/// Sinusoidal embedding of (possibly fractional) timesteps, as diffusers' `Timesteps` (no
/// weights, so no `VarBuilder`).
#[derive(Debug, Clone)]
pub struct Timesteps {
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
}

impl Timesteps {
    pub fn new(dim: usize, flip_sin_to_cos: bool, freq_shift: f64) -> Self {
        Timesteps { dim, flip_sin_to_cos, freq_shift }
    }
}

impl Module for Timesteps {
    /// (B,) timesteps → (B, dim) embedding, computed in f32 in diffusers' order of operations.
    fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let half = self.dim / 2;
        let max_log = (10000f64).ln() as f32;
        let denom = (half as f64 - self.freq_shift) as f32;
        let freqs: Vec<f32> = (0..half).map(|i| ((-max_log * i as f32) / denom).exp()).collect();
        let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
        let args = t.to_dtype(DType::F32)?.unsqueeze(1)?.broadcast_mul(&freqs)?;
        let (sin, cos) = (args.sin()?, args.cos()?);
        let emb = if self.flip_sin_to_cos { Tensor::cat(&[&cos, &sin], 1)? } else { Tensor::cat(&[&sin, &cos], 1)? };
        if self.dim % 2 == 1 {
            emb.pad_with_zeros(1, 0, 1)
        } else {
            Ok(emb)
        }
    }
}

/// `TimestepEmbedding`: linear → SiLU → linear.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(vb: VarBuilder, in_channels: usize, time_embed_dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: linear(in_channels, time_embed_dim, vb.pp("linear_1"))?,
            linear_2: linear(time_embed_dim, time_embed_dim, vb.pp("linear_2"))?,
        })
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&candle_nn::ops::silu(&self.linear_1.forward(x)?)?)
    }
}

/// A [`ResnetBlock2D`]'s settings besides its input channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResnetBlock2DConfig {
    pub out_channels: usize,
    /// Width of the time embedding (`time_emb_proj` maps it to `out_channels`).
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    /// The output is divided by it (the mid block's `mid_block_scale_factor`, else 1).
    pub output_scale_factor: f64,
}

/// `ResnetBlock2D` (pre-norm, time embedding added after conv1, default time-scale shift).
///
/// It takes the time embedding besides the input, so it has an inherent
/// [`forward(x, temb)`](Self::forward) instead of [`Module`] (as candle-transformers'
/// stable-diffusion `ResnetBlock2D` does).
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: Norm,
    conv1: Conv,
    time_emb_proj: Linear,
    norm2: Norm,
    conv2: Conv,
    conv_shortcut: Option<Conv>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn new(vb: VarBuilder, in_channels: usize, cfg: &ResnetBlock2DConfig) -> Result<Self> {
        let (cin, cout) = (in_channels, cfg.out_channels);
        let conv_shortcut =
            if cin != cout { Some(Conv::new(vb.pp("conv_shortcut"), cin, cout, 1, 1, 0, 0)?) } else { None };
        Ok(Self {
            norm1: Norm::new(vb.pp("norm1"), cfg.groups, cin, cfg.eps)?,
            conv1: conv3(cin, cout, 1, 1, vb.pp("conv1"))?,
            time_emb_proj: linear(cfg.temb_channels, cout, vb.pp("time_emb_proj"))?,
            norm2: Norm::new(vb.pp("norm2"), cfg.groups, cout, cfg.eps)?,
            conv2: conv3(cout, cout, 1, 1, vb.pp("conv2"))?,
            conv_shortcut,
            output_scale_factor: cfg.output_scale_factor,
        })
    }

    /// `x` (B, Cin, H, W) and the time embedding `temb` (B, temb_channels) → (B, Cout, H, W).
    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let t = self.time_emb_proj.forward(&candle_nn::ops::silu(temb)?)?;
        let h = self.conv1.forward_add(&self.norm1.forward_silu(x)?, &t, 1.0)?;
        let x = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        self.conv2.forward_add(&self.norm2.forward_silu(&h)?, &x, 1.0 / self.output_scale_factor)
    }
}

/// A [`SpatialAttention`]'s settings besides its channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionConfig {
    /// Width of each head; `None`: one head as wide as the block (diffusers passes the channel
    /// count).
    pub head_dim: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    /// The output (residual included) is divided by it.
    pub rescale_output_factor: f64,
}

/// Spatial self-attention (`Attention` with a group norm, residual connection and
/// `rescale_output_factor`, as built by the UNet2D attention blocks).
///
/// The attention weights are computed in f32 whatever the model's dtype: in f16/bf16, q and k
/// are cast to f32 before q·kᵀ and the softmax runs in f32 (diffusers' `upcast_attention` and
/// `upcast_softmax`), then the probabilities are cast back for the product with v.
#[derive(Debug, Clone)]
pub struct SpatialAttention {
    group_norm: Norm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    rescale_output_factor: f64,
    cpu: Option<CpuAttention>,
}

impl SpatialAttention {
    pub fn new(vb: VarBuilder, channels: usize, cfg: &AttentionConfig) -> Result<Self> {
        let dim_head = cfg.head_dim.unwrap_or(channels);
        let heads = (channels / dim_head).max(1);
        let inner = heads * dim_head;
        let rescale = cfg.rescale_output_factor;
        let (to_q, to_k, to_v) = (
            linear(channels, inner, vb.pp("to_q"))?,
            linear(channels, inner, vb.pp("to_k"))?,
            linear(channels, inner, vb.pp("to_v"))?,
        );
        let to_out = linear(inner, channels, vb.pp("to_out").pp("0"))?;
        let cpu = if on_cpu_f32(&vb) {
            let parts = |l: &Linear| -> Result<(Vec<f32>, Vec<f32>)> {
                let bias = match l.bias() {
                    Some(b) => b.to_vec1::<f32>()?,
                    None => vec![0.0; l.weight().dim(0)?],
                };
                Ok((l.weight().flatten_all()?.to_vec1::<f32>()?, bias))
            };
            let cpu = CpuAttention::new(
                parts(&to_q)?,
                parts(&to_k)?,
                parts(&to_v)?,
                parts(&to_out)?,
                channels,
                heads,
                rescale,
            );
            Some(if kernels::bf16_kernels() { cpu.to_bf16()? } else { cpu })
        } else {
            None
        };
        Ok(Self {
            group_norm: Norm::new(vb.pp("group_norm"), cfg.groups, channels, cfg.eps)?,
            to_q,
            to_k,
            to_v,
            to_out,
            heads,
            rescale_output_factor: rescale,
            cpu,
        })
    }

    /// The attention with candle's operations, on `x` and its group-normalized copy `normed`.
    fn attend(&self, x: &Tensor, normed: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let residual = x;
        let hs = normed.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let q = self.to_q.forward(&hs)?;
        let k = self.to_k.forward(&hs)?;
        let v = self.to_v.forward(&hs)?;
        let inner = q.dim(D::Minus1)?;
        let hd = inner / self.heads;
        let split =
            |t: Tensor| -> Result<Tensor> { t.reshape((b, h * w, self.heads, hd))?.transpose(1, 2)?.contiguous() };
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
        let dtype = q.dtype();
        // Scores and softmax in f32 (diffusers' upcast_attention + upcast_softmax): in half
        // precision q·kᵀ alone can pass f16's 65504. No-ops in f32.
        let (q, k) = (q.to_dtype(DType::F32)?, k.to_dtype(DType::F32)?);
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, h * w, inner))?;
        let out = self.to_out.forward(&out)?.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))?;
        let out = (out + residual)?;
        if self.rescale_output_factor == 1.0 {
            Ok(out)
        } else {
            out / self.rescale_output_factor
        }
    }
}

impl Module for SpatialAttention {
    /// (B, C, H, W) → (B, C, H, W): [`CpuAttention`] for f32 on the CPU (all in f32), candle's
    /// operations elsewhere.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.group_norm.forward(x)?;
        let (b, c, h, w) = x.dims4()?;
        let inner = self.to_q.weight().dim(0)?;
        let flops = 2.0 * (b * h * w) as f64 * (4.0 * (c * inner) as f64 + 2.0 * (h * w * inner) as f64);
        match &self.cpu {
            Some(k) if fast(x) => profile::record("attention", flops, || x.contiguous()?.apply_op2_no_bwd(&n, k)),
            _ => profile::record("attention", flops, || self.attend(x, &n)),
        }
    }
}

/// Stride-2 3×3 convolution; `padding = 0` pads one pixel right and bottom first (original DDPM).
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv,
}

impl Downsample2D {
    pub fn new(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        let pad_end = usize::from(padding == 0);
        Ok(Self { conv: Conv::new(vb.pp("conv"), channels, channels, 3, 2, padding, pad_end)? })
    }
}

impl Module for Downsample2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(x)
    }
}

/// Nearest-neighbour ×2, then a 3×3 convolution.
#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Conv,
}

impl Upsample2D {
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self { conv: conv3(channels, channels, 1, 1, vb.pp("conv"))? })
    }
}

impl Module for Upsample2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(&upsample_nearest_2x(x)?)
    }
}

/// Nearest-neighbour ×2 of (B, C, H, W): [`kernels::Upsample2x`] for f32 on the CPU, candle's
/// operation elsewhere.
pub(crate) fn upsample_nearest_2x(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    profile::record("upsampling, concatenation", 0.0, || {
        if fast(x) {
            x.contiguous()?.apply_op1_no_bwd(&kernels::Upsample2x)
        } else {
            x.upsample_nearest2d(2 * h, 2 * w)
        }
    })
}

/// A [`DownBlock2D`]'s settings besides its channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DownBlock2DConfig {
    pub num_layers: usize,
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    /// `Some`: `AttnDownBlock2D`, an attention after every resnet.
    pub attention: Option<AttentionConfig>,
    pub add_downsample: bool,
    /// The downsampler's padding (0: the original DDPM's one pixel right and bottom).
    pub downsample_padding: usize,
}

/// `DownBlock2D` / `AttnDownBlock2D`: resnets (each followed by an attention in the latter),
/// then an optional downsampler. Takes the time embedding: inherent `forward(x, temb)`.
#[derive(Debug, Clone)]
pub struct DownBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialAttention>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock2D {
    pub fn new(vb: VarBuilder, in_channels: usize, out_channels: usize, cfg: &DownBlock2DConfig) -> Result<Self> {
        let resnet = ResnetBlock2DConfig {
            out_channels,
            temb_channels: cfg.temb_channels,
            groups: cfg.groups,
            eps: cfg.eps,
            output_scale_factor: 1.0,
        };
        let mut resnets = Vec::with_capacity(cfg.num_layers);
        let mut attentions = Vec::new();
        for j in 0..cfg.num_layers {
            let c = if j == 0 { in_channels } else { out_channels };
            resnets.push(ResnetBlock2D::new(vb.pp("resnets").pp(j), c, &resnet)?);
            if let Some(a) = &cfg.attention {
                attentions.push(SpatialAttention::new(vb.pp("attentions").pp(j), out_channels, a)?);
            }
        }
        let downsampler = if cfg.add_downsample {
            Some(Downsample2D::new(vb.pp("downsamplers").pp(0), out_channels, cfg.downsample_padding)?)
        } else {
            None
        };
        Ok(Self { resnets, attentions, downsampler })
    }

    /// The output, and the states the up blocks take as skip connections (one per resnet, one
    /// more after the downsampler), in order.
    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        let mut h = x.clone();
        for (i, r) in self.resnets.iter().enumerate() {
            h = r.forward(&h, temb)?;
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h)?;
            }
            states.push(h.clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h)?;
            states.push(h.clone());
        }
        Ok((h, states))
    }
}

/// An [`UpBlock2D`]'s settings besides its channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpBlock2DConfig {
    pub num_layers: usize,
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    /// `Some`: `AttnUpBlock2D`, an attention after every resnet.
    pub attention: Option<AttentionConfig>,
    pub add_upsample: bool,
}

/// `UpBlock2D` / `AttnUpBlock2D`: resnets on the input concatenated with a skip connection (each
/// followed by an attention in the latter), then an optional upsampler. Takes the time embedding
/// and the skips: inherent `forward(x, res_xs, temb)`.
#[derive(Debug, Clone)]
pub struct UpBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialAttention>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock2D {
    /// `in_channels`: the channels of the last skip connection (the next level's output);
    /// `prev_output_channels`: those of the block's input.
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        prev_output_channels: usize,
        out_channels: usize,
        cfg: &UpBlock2DConfig,
    ) -> Result<Self> {
        let resnet = ResnetBlock2DConfig {
            out_channels,
            temb_channels: cfg.temb_channels,
            groups: cfg.groups,
            eps: cfg.eps,
            output_scale_factor: 1.0,
        };
        let mut resnets = Vec::with_capacity(cfg.num_layers);
        let mut attentions = Vec::new();
        for j in 0..cfg.num_layers {
            let skip = if j + 1 == cfg.num_layers { in_channels } else { out_channels };
            let rin = if j == 0 { prev_output_channels } else { out_channels };
            resnets.push(ResnetBlock2D::new(vb.pp("resnets").pp(j), rin + skip, &resnet)?);
            if let Some(a) = &cfg.attention {
                attentions.push(SpatialAttention::new(vb.pp("attentions").pp(j), out_channels, a)?);
            }
        }
        let upsampler =
            if cfg.add_upsample { Some(Upsample2D::new(vb.pp("upsamplers").pp(0), out_channels)?) } else { None };
        Ok(Self { resnets, attentions, upsampler })
    }

    /// Skip connections the block takes (one per resnet).
    pub fn num_skips(&self) -> usize {
        self.resnets.len()
    }

    /// `res_xs`: this block's skip connections in the order the down blocks made them (the
    /// last is used first).
    pub fn forward(&self, x: &Tensor, res_xs: &[Tensor], temb: &Tensor) -> Result<Tensor> {
        if res_xs.len() != self.resnets.len() {
            return Err(candle_core::Error::Msg(format!(
                "up block: {} skip connections for {} resnets",
                res_xs.len(),
                self.resnets.len()
            )));
        }
        let mut h = x.clone();
        for (i, (r, skip)) in self.resnets.iter().zip(res_xs.iter().rev()).enumerate() {
            h = r.forward(&concat(&h, skip)?, temb)?;
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h)?;
            }
        }
        if let Some(u) = &self.upsampler {
            h = u.forward(&h)?;
        }
        Ok(h)
    }
}

/// A [`UNetMidBlock2D`]'s settings besides its channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UNetMidBlock2DConfig {
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    /// Divides the output of both resnets (`mid_block_scale_factor`).
    pub output_scale_factor: f64,
    /// `Some`: the attention between the resnets (`add_attention`).
    pub attention: Option<AttentionConfig>,
}

/// `UNetMidBlock2D`: resnet, (attention, resnet) once. Takes the time embedding: inherent
/// `forward(x, temb)`.
#[derive(Debug, Clone)]
pub struct UNetMidBlock2D {
    resnet_0: ResnetBlock2D,
    attention: Option<SpatialAttention>,
    resnet_1: ResnetBlock2D,
}

impl UNetMidBlock2D {
    pub fn new(vb: VarBuilder, channels: usize, cfg: &UNetMidBlock2DConfig) -> Result<Self> {
        let resnet = ResnetBlock2DConfig {
            out_channels: channels,
            temb_channels: cfg.temb_channels,
            groups: cfg.groups,
            eps: cfg.eps,
            output_scale_factor: cfg.output_scale_factor,
        };
        Ok(Self {
            resnet_0: ResnetBlock2D::new(vb.pp("resnets").pp(0), channels, &resnet)?,
            attention: cfg
                .attention
                .as_ref()
                .map(|a| SpatialAttention::new(vb.pp("attentions").pp(0), channels, a))
                .transpose()?,
            resnet_1: ResnetBlock2D::new(vb.pp("resnets").pp(1), channels, &resnet)?,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let mut h = self.resnet_0.forward(x, temb)?;
        if let Some(a) = &self.attention {
            h = a.forward(&h)?;
        }
        self.resnet_1.forward(&h, temb)
    }
}

/// The unconditional diffusers `UNet2DModel`.
#[derive(Debug, Clone)]
pub struct UNet2DModel {
    config: UNet2DConfig,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    conv_in: Conv,
    down_blocks: Vec<DownBlock2D>,
    mid_block: Option<UNetMidBlock2D>,
    up_blocks: Vec<UpBlock2D>,
    conv_norm_out: Norm,
    conv_out: Conv,
}

impl UNet2DModel {
    /// Builds the model from weights named as diffusers names them.
    pub fn new(vb: VarBuilder, config: &UNet2DConfig) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let (groups, eps) = (config.groups(), config.norm_eps);
        let temb = config.time_embed_dim();
        let attention = |groups: usize, rescale: f64| AttentionConfig {
            head_dim: config.attention_head_dim,
            groups,
            eps,
            rescale_output_factor: rescale,
        };
        let time_proj = Timesteps::new(ch[0], config.flip_sin_to_cos, config.freq_shift);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), ch[0], temb)?;
        let conv_in = conv3(config.in_channels, ch[0], 1, 1, vb.pp("conv_in"))?;
        let mut down_blocks = Vec::with_capacity(n);
        let mut cout = ch[0];
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let cin = cout;
            cout = ch[i];
            let cfg = DownBlock2DConfig {
                num_layers: config.layers_per_block,
                temb_channels: temb,
                groups,
                eps,
                attention: (kind == "AttnDownBlock2D").then(|| attention(groups, 1.0)),
                add_downsample: i + 1 < n,
                downsample_padding: config.downsample_padding,
            };
            down_blocks.push(DownBlock2D::new(vb.pp("down_blocks").pp(i), cin, cout, &cfg)?);
        }
        let mid_block = match config.mid_block_type {
            Some(_) => {
                let s = config.mid_block_scale_factor;
                let cfg = UNetMidBlock2DConfig {
                    temb_channels: temb,
                    groups,
                    eps,
                    output_scale_factor: s,
                    attention: config
                        .add_attention
                        .then(|| attention(config.attn_norm_num_groups.unwrap_or(groups), s)),
                };
                Some(UNetMidBlock2D::new(vb.pp("mid_block"), ch[n - 1], &cfg)?)
            }
            None => None,
        };
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_c = rev[0];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let prev = out_c;
            out_c = rev[i];
            let in_c = rev[(i + 1).min(n - 1)];
            let cfg = UpBlock2DConfig {
                num_layers: config.layers_per_block + 1,
                temb_channels: temb,
                groups,
                eps,
                attention: (kind == "AttnUpBlock2D").then(|| attention(groups, 1.0)),
                add_upsample: i + 1 < n,
            };
            up_blocks.push(UpBlock2D::new(vb.pp("up_blocks").pp(i), in_c, prev, out_c, &cfg)?);
        }
        Ok(Self {
            config: config.clone(),
            time_proj,
            time_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: Norm::new(vb.pp("conv_norm_out"), groups, ch[0], eps)?,
            conv_out: conv3(ch[0], config.out_channels, 1, 1, vb.pp("conv_out"))?,
        })
    }

    pub fn config(&self) -> &UNet2DConfig {
        &self.config
    }

    /// The raw model output (B, out_channels, H, W) for inputs (B, in_channels, H, W) at
    /// timesteps `t` (B,) — exactly `UNet2DModel(x, t).sample`.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = if self.config.center_input_sample { ((x * 2.0)? - 1.0)? } else { x.clone() };
        let emb = self.time_proj.forward(t)?.to_dtype(dtype)?;
        let emb = self.time_embedding.forward(&emb)?;
        let mut h = self.conv_in.forward(&x)?;
        let mut states = vec![h.clone()];
        for d in &self.down_blocks {
            let (out, res) = d.forward(&h, &emb)?;
            h = out;
            states.extend(res);
        }
        if let Some(m) = &self.mid_block {
            h = m.forward(&h, &emb)?;
        }
        for u in &self.up_blocks {
            let at = states
                .len()
                .checked_sub(u.num_skips())
                .ok_or_else(|| candle_core::Error::Msg("UNet skip connections exhausted".into()))?;
            let skips = states.split_off(at);
            h = u.forward(&h, &skips, &emb)?;
        }
        let h = self.conv_norm_out.forward_silu(&h)?;
        self.conv_out.forward(&h)
    }
}

#[cfg(test)]
mod tests {
    //! The CPU kernels against candle's own operations on the same random weights, at sizes
    //! that are not multiples of the SIMD width: channels 5 and 7, odd maps, batches 1 and 7.
    use super::*;
    use candle_core::Device;
    use std::collections::HashMap;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn builder(tensors: HashMap<String, Tensor>) -> VarBuilder<'static> {
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn convolutions_match_candle() {
        // (cin, cout, k, stride, padding, pad_end, batch, h, w)
        let cases = [
            (5, 7, 3, 1, 1, 0, 7, 9, 11),
            (5, 7, 1, 1, 0, 0, 1, 9, 11),
            (6, 4, 3, 2, 1, 0, 7, 13, 10),
            (6, 4, 3, 2, 0, 1, 1, 12, 12),
            (3, 9, 3, 1, 0, 0, 2, 5, 6),
            (64, 33, 3, 1, 1, 0, 3, 33, 17),
            // Tiles of two rows: im2col reads the unpadded image.
            (100, 9, 3, 1, 1, 0, 2, 7, 100),
        ];
        for (i, &(cin, cout, k, stride, padding, pad_end, b, h, w)) in cases.iter().enumerate() {
            let mut t = HashMap::new();
            t.insert("weight".to_string(), randn(&[cout, cin, k, k], 10 + i as u64));
            t.insert("bias".to_string(), randn(&[cout], 20 + i as u64));
            let conv = Conv::new(builder(t), cin, cout, k, stride, padding, pad_end).unwrap();
            let x = randn(&[b, cin, h, w], 30 + i as u64);
            let fast = x.apply_op1_no_bwd(conv.cpu.as_ref().unwrap()).unwrap();
            // The same bits whatever the number of threads.
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let again = pool.install(|| x.apply_op1_no_bwd(conv.cpu.as_ref().unwrap()).unwrap());
                assert_eq!(max_diff(&again, &fast), 0.0, "case {i}: {threads} threads");
            }
            let reference = conv.reference(&x).unwrap();
            assert_eq!(fast.dims(), reference.dims(), "case {i}");
            let err = max_diff(&fast, &reference);
            assert!(err < 2e-5 * (cin * k * k) as f32, "case {i}: {err}");
            // The fused epilogues: per-channel bias, residual and scale.
            let (ho, wo) = (reference.dim(2).unwrap(), reference.dim(3).unwrap());
            let cb = randn(&[b, cout], 40 + i as u64);
            let want = reference.broadcast_add(&cb.unsqueeze(2).unwrap().unsqueeze(3).unwrap()).unwrap();
            let got =
                x.apply_op2_no_bwd(&cb, &kernels::ConvAdd { conv: conv.cpu.as_ref().unwrap(), scale: 1.0 }).unwrap();
            assert!(max_diff(&got, &want) < 2e-5 * (cin * k * k) as f32, "case {i}: channel bias");
            let res = randn(&[b, cout, ho, wo], 50 + i as u64);
            let want = ((&reference + &res).unwrap() * 0.5).unwrap();
            let got =
                x.apply_op2_no_bwd(&res, &kernels::ConvAdd { conv: conv.cpu.as_ref().unwrap(), scale: 0.5 }).unwrap();
            assert!(max_diff(&got, &want) < 2e-5 * (cin * k * k) as f32, "case {i}: residual");
        }
    }

    #[test]
    fn norms_concatenation_and_upsampling_match_candle() {
        for (i, &(groups, c, b, h, w)) in [(1, 5, 1, 7, 3), (4, 12, 7, 9, 9), (32, 64, 2, 16, 16)].iter().enumerate() {
            let mut t = HashMap::new();
            t.insert("weight".to_string(), randn(&[c], 60 + i as u64));
            t.insert("bias".to_string(), randn(&[c], 70 + i as u64));
            let norm = Norm::new(builder(t), groups, c, 1e-6).unwrap();
            let x = (randn(&[b, c, h, w], 80 + i as u64) * 3.0).unwrap();
            let reference = norm.norm.forward(&x).unwrap();
            assert!(
                max_diff(&x.apply_op1_no_bwd(&norm.cpu.as_ref().unwrap().op(false)).unwrap(), &reference) < 2e-5,
                "norm {i}"
            );
            let silu = candle_nn::ops::silu(&reference).unwrap();
            assert!(
                max_diff(&x.apply_op1_no_bwd(&norm.cpu.as_ref().unwrap().op(true)).unwrap(), &silu) < 2e-5,
                "norm + SiLU {i}"
            );
            let m = randn(&[b, 2 * c], 75 + i as u64);
            let (scale, shift) = (
                m.narrow(1, 0, c).unwrap().unsqueeze(2).unwrap().unsqueeze(3).unwrap(),
                m.narrow(1, c, c).unwrap().unsqueeze(2).unwrap().unsqueeze(3).unwrap(),
            );
            let want = candle_nn::ops::silu(
                &reference.broadcast_mul(&(scale + 1.0).unwrap()).unwrap().broadcast_add(&shift).unwrap(),
            )
            .unwrap();
            let got = x.apply_op2_no_bwd(&m, &norm.cpu.as_ref().unwrap().scale_shift_op(true)).unwrap();
            assert!(max_diff(&got, &want) < 1e-4, "norm + scale-shift + SiLU {i}: {}", max_diff(&got, &want));
            let y = randn(&[b, 3, h, w], 90 + i as u64);
            let cat = x.apply_op2_no_bwd(&y, &kernels::ChannelConcat).unwrap();
            assert_eq!(max_diff(&cat, &Tensor::cat(&[&x, &y], 1).unwrap()), 0.0);
            let up = x.apply_op1_no_bwd(&kernels::Upsample2x).unwrap();
            assert_eq!(max_diff(&up, &x.upsample_nearest2d(2 * h, 2 * w).unwrap()), 0.0);
        }
    }

    #[test]
    fn attention_matches_candle() {
        for (i, &(c, head_dim, b, h, w, rescale)) in
            // The last case has 600 positions: three blocks of queries, the last one partial.
            [
                (8, None, 1, 5, 3, 1.0),
                (12, Some(4), 7, 4, 4, 2.0),
                (64, Some(16), 2, 8, 8, 1.0),
                (16, Some(8), 2, 24, 25, 1.0),
            ]
            .iter()
            .enumerate()
        {
            let inner = head_dim.map(|d| (c / d).max(1) * d).unwrap_or(c);
            let mut t = HashMap::new();
            let s = 100 + 10 * i as u64;
            t.insert("group_norm.weight".to_string(), randn(&[c], s));
            t.insert("group_norm.bias".to_string(), randn(&[c], s + 1));
            for (j, name) in ["to_q", "to_k", "to_v"].iter().enumerate() {
                t.insert(format!("{name}.weight"), (randn(&[inner, c], s + 2 + j as u64) * 0.3).unwrap());
                t.insert(format!("{name}.bias"), randn(&[inner], s + 5 + j as u64));
            }
            t.insert("to_out.0.weight".to_string(), (randn(&[c, inner], s + 8) * 0.3).unwrap());
            t.insert("to_out.0.bias".to_string(), randn(&[c], s + 9));
            let cfg = AttentionConfig { head_dim, groups: 4.min(c), eps: 1e-6, rescale_output_factor: rescale };
            let attn = SpatialAttention::new(builder(t), c, &cfg).unwrap();
            let x = randn(&[b, c, h, w], s + 20);
            let normed = attn.group_norm.norm.forward(&x).unwrap();
            let reference = attn.attend(&x, &normed).unwrap();
            let fast = x.apply_op2_no_bwd(&normed, attn.cpu.as_ref().unwrap()).unwrap();
            let err = max_diff(&fast, &reference);
            assert!(err < 1e-4, "attention {i}: {err}");
            if !kernels::bf16_available() {
                continue;
            }
            // bf16 products: the attention's share of the output (less the residual) within the
            // rounding of bfloat16 operands (2⁻⁹ relative each), and not the f32 bits.
            let bf16 = attn.cpu.clone().unwrap().to_bf16().unwrap();
            let got = x.apply_op2_no_bwd(&normed, &bf16).unwrap();
            let (d, r) = ((&got - &x).unwrap(), (&reference - &x).unwrap());
            let rel = |a: &Tensor| a.sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
            let rel = rel(&(&d - &r).unwrap()) / rel(&r);
            assert!(rel > 1e-5 && rel < 1e-2, "bf16 attention {i}: relative RMS {rel:e}");
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let again = pool.install(|| x.apply_op2_no_bwd(&normed, &bf16).unwrap());
                assert_eq!(max_diff(&again, &got), 0.0, "bf16 attention {i}: {threads} threads");
            }
        }
    }

    #[test]
    fn half_precision_attention_weights_are_computed_in_f32() {
        // f16 against the f32 CPU kernel on the same weights: random ones, then q and k of 128 in
        // every dimension of the two 8-wide heads, whose q·kᵀ = 131072 is past f16's largest
        // value (65504): with only the scores upcast, the softmax would see inf − inf = NaN.
        let (c, b, h, w) = (16, 2, 5, 3);
        for big in [false, true] {
            let mut t = HashMap::new();
            t.insert("group_norm.weight".to_string(), randn(&[c], 200));
            t.insert("group_norm.bias".to_string(), randn(&[c], 201));
            for (j, name) in ["to_q", "to_k", "to_v"].iter().enumerate() {
                let (weight, bias) = if big && j < 2 {
                    (
                        Tensor::zeros((c, c), DType::F32, &Device::Cpu).unwrap(),
                        Tensor::full(128f32, c, &Device::Cpu).unwrap(),
                    )
                } else {
                    ((randn(&[c, c], 202 + j as u64) * 0.3).unwrap(), randn(&[c], 205 + j as u64))
                };
                t.insert(format!("{name}.weight"), weight);
                t.insert(format!("{name}.bias"), bias);
            }
            t.insert("to_out.0.weight".to_string(), (randn(&[c, c], 208) * 0.3).unwrap());
            t.insert("to_out.0.bias".to_string(), randn(&[c], 209));
            let cfg = AttentionConfig { head_dim: Some(8), groups: 4, eps: 1e-6, rescale_output_factor: 1.0 };
            let x = randn(&[b, c, h, w], 210);
            let want = SpatialAttention::new(builder(t.clone()), c, &cfg).unwrap().forward(&x).unwrap();
            let half = SpatialAttention::new(VarBuilder::from_tensors(t, DType::F16, &Device::Cpu), c, &cfg).unwrap();
            assert!(half.cpu.is_none());
            let got = half.forward(&x.to_dtype(DType::F16).unwrap()).unwrap();
            assert_eq!(got.dtype(), DType::F16);
            let got = got.to_dtype(DType::F32).unwrap();
            let err = max_diff(&got, &want);
            assert!(err.is_finite() && err < 2e-2, "big {big}: {err}");
        }
    }
}
