//! diffusers' `UNet2DModel` in candle: the same layers, the same weight names, the same
//! arithmetic (checked against diffusers by tests/unet_parity.rs).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{conv2d, group_norm, linear, Conv2d, Conv2dConfig, GroupNorm, Linear, VarBuilder};

use super::config::UNet2DConfig;

fn conv3(cin: usize, cout: usize, stride: usize, padding: usize, vb: VarBuilder) -> Result<Conv2d> {
    conv2d(cin, cout, 3, Conv2dConfig { padding, stride, ..Default::default() }, vb)
}

/// Sinusoidal embedding of (possibly fractional) timesteps, as diffusers' `Timesteps`.
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

    /// (B,) timesteps → (B, dim) embedding, computed in f32 in diffusers' order of operations.
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
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
struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    fn new(vb: VarBuilder, cin: usize, dim: usize) -> Result<Self> {
        Ok(Self { linear_1: linear(cin, dim, vb.pp("linear_1"))?, linear_2: linear(dim, dim, vb.pp("linear_2"))? })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&candle_nn::ops::silu(&self.linear_1.forward(x)?)?)
    }
}

/// `ResnetBlock2D` (pre-norm, time embedding added after conv1, default time-scale shift).
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn new(vb: VarBuilder, cin: usize, cout: usize, temb: usize, groups: usize, eps: f64, scale: f64) -> Result<Self> {
        let conv_shortcut = if cin != cout {
            Some(conv2d(cin, cout, 1, Conv2dConfig::default(), vb.pp("conv_shortcut"))?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(groups, cin, eps, vb.pp("norm1"))?,
            conv1: conv3(cin, cout, 1, 1, vb.pp("conv1"))?,
            time_emb_proj: linear(temb, cout, vb.pp("time_emb_proj"))?,
            norm2: group_norm(groups, cout, eps, vb.pp("norm2"))?,
            conv2: conv3(cout, cout, 1, 1, vb.pp("conv2"))?,
            conv_shortcut,
            output_scale_factor: scale,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let silu = candle_nn::ops::silu;
        let h = self.conv1.forward(&silu(&self.norm1.forward(x)?)?)?;
        let t = self.time_emb_proj.forward(&silu(temb)?)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = h.broadcast_add(&t)?;
        let h = self.conv2.forward(&silu(&self.norm2.forward(&h)?)?)?;
        let x = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let out = (x + h)?;
        if self.output_scale_factor == 1.0 { Ok(out) } else { out / self.output_scale_factor }
    }
}

/// Spatial self-attention (`Attention` with a group norm, residual connection and
/// `rescale_output_factor`, as built by the UNet2D attention blocks).
#[derive(Debug, Clone)]
pub struct SpatialAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    rescale_output_factor: f64,
}

impl SpatialAttention {
    /// `head_dim = None`: one head as wide as the block (diffusers passes the channel count).
    pub fn new(vb: VarBuilder, channels: usize, head_dim: Option<usize>, groups: usize, eps: f64, rescale: f64) -> Result<Self> {
        let dim_head = head_dim.unwrap_or(channels);
        let heads = (channels / dim_head).max(1);
        let inner = heads * dim_head;
        Ok(Self {
            group_norm: group_norm(groups, channels, eps, vb.pp("group_norm"))?,
            to_q: linear(channels, inner, vb.pp("to_q"))?,
            to_k: linear(channels, inner, vb.pp("to_k"))?,
            to_v: linear(channels, inner, vb.pp("to_v"))?,
            to_out: linear(inner, channels, vb.pp("to_out").pp("0"))?,
            heads,
            rescale_output_factor: rescale,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let residual = x;
        let hs = self.group_norm.forward(x)?.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let q = self.to_q.forward(&hs)?;
        let k = self.to_k.forward(&hs)?;
        let v = self.to_v.forward(&hs)?;
        let inner = q.dim(D::Minus1)?;
        let hd = inner / self.heads;
        let split = |t: Tensor| -> Result<Tensor> { t.reshape((b, h * w, self.heads, hd))?.transpose(1, 2)?.contiguous() };
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
        let dtype = q.dtype();
        // Softmax in f32 (diffusers' upcast_softmax).
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.to_dtype(DType::F32)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, h * w, inner))?;
        let out = self.to_out.forward(&out)?.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))?;
        let out = (out + residual)?;
        if self.rescale_output_factor == 1.0 { Ok(out) } else { out / self.rescale_output_factor }
    }
}

/// Stride-2 3×3 convolution; `padding = 0` pads one pixel right and bottom first (original DDPM).
#[derive(Debug, Clone)]
struct Downsample2D {
    conv: Conv2d,
    padding: usize,
}

impl Downsample2D {
    fn new(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self { conv: conv3(channels, channels, 2, padding, vb.pp("conv"))?, padding })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.padding == 0 {
            let x = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// Nearest-neighbour ×2, then a 3×3 convolution.
#[derive(Debug, Clone)]
struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self { conv: conv3(channels, channels, 1, 1, vb.pp("conv"))? })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        self.conv.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)
    }
}

/// `DownBlock2D` / `AttnDownBlock2D`.
#[derive(Debug, Clone)]
struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialAttention>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    fn forward(&self, x: &Tensor, temb: &Tensor, states: &mut Vec<Tensor>) -> Result<Tensor> {
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
        Ok(h)
    }
}

/// `UpBlock2D` / `AttnUpBlock2D`.
#[derive(Debug, Clone)]
struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialAttention>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    fn forward(&self, x: &Tensor, temb: &Tensor, states: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, r) in self.resnets.iter().enumerate() {
            let skip = states.pop().ok_or_else(|| candle_core::Error::Msg("UNet skip connections exhausted".into()))?;
            h = r.forward(&Tensor::cat(&[&h, &skip], 1)?, temb)?;
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

/// `UNetMidBlock2D`: resnet, (attention, resnet) once.
#[derive(Debug, Clone)]
struct MidBlock {
    resnet_0: ResnetBlock2D,
    attention: Option<SpatialAttention>,
    resnet_1: ResnetBlock2D,
}

/// The unconditional diffusers `UNet2DModel`.
#[derive(Debug, Clone)]
pub struct UNet2DModel {
    config: UNet2DConfig,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DModel {
    /// Builds the model from weights named as diffusers names them.
    pub fn new(vb: VarBuilder, config: &UNet2DConfig) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let ch = &config.block_out_channels;
        let (groups, eps) = (config.groups(), config.norm_eps);
        let temb = config.time_embed_dim();
        let time_proj = Timesteps::new(ch[0], config.flip_sin_to_cos, config.freq_shift);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), ch[0], temb)?;
        let conv_in = conv3(config.in_channels, ch[0], 1, 1, vb.pp("conv_in"))?;
        let n = ch.len();
        let mut down_blocks = Vec::with_capacity(n);
        let mut cout = ch[0];
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let vbb = vb.pp("down_blocks").pp(i);
            let cin = cout;
            cout = ch[i];
            let attn = kind == "AttnDownBlock2D";
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..config.layers_per_block {
                let c = if j == 0 { cin } else { cout };
                resnets.push(ResnetBlock2D::new(vbb.pp("resnets").pp(j), c, cout, temb, groups, eps, 1.0)?);
                if attn {
                    attentions.push(SpatialAttention::new(vbb.pp("attentions").pp(j), cout, config.attention_head_dim, groups, eps, 1.0)?);
                }
            }
            let downsampler = if i + 1 < n {
                Some(Downsample2D::new(vbb.pp("downsamplers").pp(0), cout, config.downsample_padding)?)
            } else {
                None
            };
            down_blocks.push(DownBlock { resnets, attentions, downsampler });
        }
        let mid_block = match config.mid_block_type {
            Some(_) => {
                let vbm = vb.pp("mid_block");
                let c = ch[n - 1];
                let s = config.mid_block_scale_factor;
                let attn_groups = config.attn_norm_num_groups.unwrap_or(groups);
                Some(MidBlock {
                    resnet_0: ResnetBlock2D::new(vbm.pp("resnets").pp(0), c, c, temb, groups, eps, s)?,
                    attention: if config.add_attention {
                        Some(SpatialAttention::new(vbm.pp("attentions").pp(0), c, config.attention_head_dim, attn_groups, eps, s)?)
                    } else {
                        None
                    },
                    resnet_1: ResnetBlock2D::new(vbm.pp("resnets").pp(1), c, c, temb, groups, eps, s)?,
                })
            }
            None => None,
        };
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_c = rev[0];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let vbu = vb.pp("up_blocks").pp(i);
            let prev = out_c;
            out_c = rev[i];
            let in_c = rev[(i + 1).min(n - 1)];
            let attn = kind == "AttnUpBlock2D";
            let layers = config.layers_per_block + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { in_c } else { out_c };
                let rin = if j == 0 { prev } else { out_c };
                resnets.push(ResnetBlock2D::new(vbu.pp("resnets").pp(j), rin + skip, out_c, temb, groups, eps, 1.0)?);
                if attn {
                    attentions.push(SpatialAttention::new(vbu.pp("attentions").pp(j), out_c, config.attention_head_dim, groups, eps, 1.0)?);
                }
            }
            let upsampler = if i + 1 < n { Some(Upsample2D::new(vbu.pp("upsamplers").pp(0), out_c)?) } else { None };
            up_blocks.push(UpBlock { resnets, attentions, upsampler });
        }
        Ok(Self {
            config: config.clone(),
            time_proj,
            time_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(groups, ch[0], eps, vb.pp("conv_norm_out"))?,
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
            h = d.forward(&h, &emb, &mut states)?;
        }
        if let Some(m) = &self.mid_block {
            h = m.resnet_0.forward(&h, &emb)?;
            if let Some(a) = &m.attention {
                h = a.forward(&h)?;
            }
            h = m.resnet_1.forward(&h, &emb)?;
        }
        for u in &self.up_blocks {
            h = u.forward(&h, &emb, &mut states)?;
        }
        let h = candle_nn::ops::silu(&self.conv_norm_out.forward(&h)?)?;
        self.conv_out.forward(&h)
    }
}
