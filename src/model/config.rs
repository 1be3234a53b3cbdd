//! `config.json` of a diffusers UNet2DModel, mirrored field by field with diffusers' defaults
//! (a key missing from the file takes the default of `UNet2DModel.__init__`), and
//! `scheduler_config.json`.

use serde::{Deserialize, Serialize};

/// `sample_size` is an integer or an `[height, width]` pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    Rect([usize; 2]),
}

fn d_in() -> usize {
    3
}
fn d_out() -> usize {
    3
}
fn d_positional() -> String {
    "positional".into()
}
fn d_true() -> bool {
    true
}
fn d_down() -> Vec<String> {
    ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"].map(String::from).to_vec()
}
fn d_up() -> Vec<String> {
    ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"].map(String::from).to_vec()
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2D".into())
}
fn d_channels() -> Vec<usize> {
    vec![224, 448, 672, 896]
}
fn d_layers() -> usize {
    2
}
fn d_one() -> f64 {
    1.0
}
fn d_pad() -> usize {
    1
}
fn d_conv() -> String {
    "conv".into()
}
fn d_silu() -> String {
    "silu".into()
}
fn d_head_dim() -> Option<usize> {
    Some(8)
}
fn d_groups() -> Option<usize> {
    Some(32)
}
fn d_eps() -> f64 {
    1e-5
}
fn d_default() -> String {
    "default".into()
}

/// The diffusers `UNet2DModel` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNet2DConfig {
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    #[serde(default = "d_in")]
    pub in_channels: usize,
    #[serde(default = "d_out")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers")]
    pub layers_per_block: usize,
    #[serde(default = "d_one")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "d_pad")]
    pub downsample_padding: usize,
    #[serde(default = "d_conv")]
    pub downsample_type: String,
    #[serde(default = "d_conv")]
    pub upsample_type: String,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// `null` = one head as wide as the block; a number = the width of each head.
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: Option<usize>,
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default)]
    pub attn_norm_num_groups: Option<usize>,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_true")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub num_train_timesteps: Option<usize>,
}

impl UNet2DConfig {
    /// Checks what this implementation supports; the error names the first unsupported field.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err("block_out_channels is empty".into());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "down_block_types ({}) and up_block_types ({}) must have one entry per block_out_channels ({n})",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        for t in &self.down_block_types {
            if !matches!(t.as_str(), "DownBlock2D" | "AttnDownBlock2D") {
                return Err(format!("unsupported down block type '{t}' (supported: DownBlock2D, AttnDownBlock2D)"));
            }
        }
        for t in &self.up_block_types {
            if !matches!(t.as_str(), "UpBlock2D" | "AttnUpBlock2D") {
                return Err(format!("unsupported up block type '{t}' (supported: UpBlock2D, AttnUpBlock2D)"));
            }
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2D") => {}
            Some(t) => return Err(format!("unsupported mid block type '{t}' (supported: UNetMidBlock2D)")),
        }
        if self.time_embedding_type != "positional" {
            return Err(format!(
                "unsupported time_embedding_type '{}' (supported: positional)",
                self.time_embedding_type
            ));
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(format!("unsupported act_fn '{}' (supported: silu)", self.act_fn));
        }
        if self.resnet_time_scale_shift != "default" {
            return Err(format!(
                "unsupported resnet_time_scale_shift '{}' (supported: default)",
                self.resnet_time_scale_shift
            ));
        }
        if self.downsample_type != "conv" || self.upsample_type != "conv" {
            return Err("unsupported downsample_type/upsample_type (supported: conv)".into());
        }
        if self.class_embed_type.is_some() || self.num_class_embeds.is_some() {
            return Err("class-conditional UNets (class_embed_type, num_class_embeds) are not supported".into());
        }
        if self.norm_num_groups.is_none() {
            return Err("norm_num_groups = null is not supported".into());
        }
        Ok(())
    }

    /// Number of groups in every GroupNorm.
    pub fn groups(&self) -> usize {
        self.norm_num_groups.unwrap_or(32)
    }

    /// Width of the time embedding (4 × the first block's channels unless given).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim.unwrap_or(self.block_out_channels[0] * 4)
    }

    /// Maps must be multiples of this many pixels on each side.
    pub fn size_multiple(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// The native (height, width), when the config says.
    pub fn native_size(&self) -> Option<[usize; 2]> {
        self.sample_size.as_ref().map(|s| match s {
            SampleSize::Square(n) => [*n, *n],
            SampleSize::Rect(r) => *r,
        })
    }
}

fn d_timesteps() -> usize {
    1000
}
fn d_beta_start() -> f64 {
    1e-4
}
fn d_beta_end() -> f64 {
    0.02
}
fn d_linear() -> String {
    "linear".into()
}
fn d_epsilon() -> String {
    "epsilon".into()
}

/// The fields of a diffusers `scheduler_config.json` that define the noise schedule, and those
/// that would change what a step computes (checked by [`SchedulerConfig::validate`]). The
/// sampler's own options (`timestep_spacing`, `steps_offset`, `set_alpha_to_one`, `clip_sample`,
/// `clip_sample_range`, `sample_max_value`) do not apply: expanse's DDIM uses the paper's grid on
/// the full schedule and clips x̂₀ only with `--clip`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "d_timesteps")]
    pub num_train_timesteps: usize,
    #[serde(default = "d_beta_start")]
    pub beta_start: f64,
    #[serde(default = "d_beta_end")]
    pub beta_end: f64,
    #[serde(default = "d_linear")]
    pub beta_schedule: String,
    #[serde(default = "d_epsilon")]
    pub prediction_type: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    /// Rescale the betas to zero terminal SNR (Lin et al. 2023), as diffusers does.
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// Dynamic thresholding of x̂₀ (refused: it changes every step).
    #[serde(default)]
    pub thresholding: bool,
    /// The variance of DDPM's ancestral steps; DDIM does not use it (learned variances are the
    /// second half of the output, which DDIM ignores).
    #[serde(default)]
    pub variance_type: Option<String>,
    /// The scheduler class; it must be one of the variance-preserving DDPM family.
    #[serde(default, rename = "_class_name")]
    pub class_name: Option<String>,
}

/// diffusers schedulers that share DDPM's variance-preserving ᾱ schedule (their differences are
/// in how they sample, which expanse's DDIM replaces).
const VP_SCHEDULERS: [&str; 14] = [
    "DDPMScheduler",
    "DDIMScheduler",
    "DDIMInverseScheduler",
    "DDPMParallelScheduler",
    "DDIMParallelScheduler",
    "PNDMScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "DEISMultistepScheduler",
    "UniPCMultistepScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "LMSDiscreteScheduler",
];

impl SchedulerConfig {
    /// Refuses what would change the computation and is not implemented; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(c) = self.class_name.as_deref().filter(|c| !VP_SCHEDULERS.contains(c)) {
            return Err(format!(
                "_class_name '{c}' is not a scheduler of DDPM's variance-preserving family ({})",
                VP_SCHEDULERS.join(", ")
            ));
        }
        if self.thresholding {
            return Err("thresholding = true (dynamic thresholding of x̂₀ at every step) is not supported: set it to \
                false to run DDIM without it"
                .into());
        }
        if let Some(v) = self.variance_type.as_deref() {
            if !["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]
                .contains(&v)
            {
                return Err(format!("unknown variance_type '{v}'"));
            }
        }
        Ok(())
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_take_diffusers_defaults_and_null_head_dim_stays_null() {
        let c: UNet2DConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.attention_head_dim, Some(8));
        assert_eq!(c.block_out_channels, vec![224, 448, 672, 896]);
        assert_eq!(c.norm_eps, 1e-5);
        let c: UNet2DConfig = serde_json::from_str(r#"{"attention_head_dim": null, "sample_size": 32}"#).unwrap();
        assert_eq!(c.attention_head_dim, None);
        assert_eq!(c.native_size(), Some([32, 32]));
    }

    #[test]
    fn unsupported_features_are_named() {
        let c: UNet2DConfig = serde_json::from_str(
            r#"{"down_block_types": ["SkipDownBlock2D","DownBlock2D","DownBlock2D","DownBlock2D"]}"#,
        )
        .unwrap();
        assert!(c.validate().unwrap_err().contains("SkipDownBlock2D"));
        let c: UNet2DConfig = serde_json::from_str(r#"{"time_embedding_type": "fourier"}"#).unwrap();
        assert!(c.validate().unwrap_err().contains("fourier"));
    }
}
