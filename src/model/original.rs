//! Original DDPM checkpoints (Ho et al. 2020 as ported to PyTorch by ermongroup/ddim: CIFAR-10,
//! CelebA-HQ, LSUN church/bedroom/cat): the `Model` state dict mapped onto diffusers'
//! `UNet2DModel` with the key map of diffusers' `convert_ddpm_original_checkpoint_to_diffusers.py`
//! (checked by tests/adm_parity.rs against fixtures made by ermongroup's code).

use serde::{Deserialize, Serialize};

use super::config::{SampleSize, SchedulerConfig, UNet2DConfig};

fn d_simple() -> String {
    "simple".into()
}
fn d_true() -> bool {
    true
}
fn d_three() -> usize {
    3
}

/// The `model` section of a ddim config (`configs/church.yml` …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalModelSection {
    #[serde(default = "d_simple", rename = "type")]
    pub kind: String,
    #[serde(default = "d_three")]
    pub in_channels: usize,
    #[serde(default = "d_three")]
    pub out_ch: usize,
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub attn_resolutions: Vec<usize>,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub var_type: Option<String>,
    #[serde(default)]
    pub ema_rate: Option<f64>,
    #[serde(default)]
    pub ema: Option<bool>,
    #[serde(default = "d_true")]
    pub resamp_with_conv: bool,
}

/// The `diffusion` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalDiffusionSection {
    pub beta_schedule: String,
    pub beta_start: f64,
    pub beta_end: f64,
    pub num_diffusion_timesteps: usize,
}

/// The `data` section: only the image size is used (the other keys are accepted as they are).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginalDataSection {
    pub image_size: usize,
    #[serde(default = "d_three")]
    pub channels: usize,
}

/// `ddpm.json`: a ddim `configs/*.yml` written as JSON (sections `data`, `model`, `diffusion`;
/// `training`, `sampling`, `optim` may be present and are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginalDdpmConfig {
    pub data: OriginalDataSection,
    pub model: OriginalModelSection,
    pub diffusion: OriginalDiffusionSection,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl OriginalDdpmConfig {
    /// Checks what the diffusers mapping supports; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        for section in self.other.keys() {
            if !matches!(section.as_str(), "training" | "sampling" | "optim") {
                return Err(format!(
                    "unknown section '{section}' (data, model, diffusion; training, sampling, optim are ignored)"
                ));
            }
        }
        let m = &self.model;
        if !matches!(m.kind.as_str(), "simple" | "bayesian") {
            return Err(format!("model.type '{}' is not supported (simple, bayesian)", m.kind));
        }
        if !m.resamp_with_conv {
            return Err(
                "model.resamp_with_conv = false (resampling without convolutions) has no diffusers equivalent".into()
            );
        }
        if m.ch_mult.is_empty() || m.ch == 0 || m.num_res_blocks == 0 {
            return Err("model.ch, model.ch_mult and model.num_res_blocks must be positive".into());
        }
        if !matches!(self.diffusion.beta_schedule.as_str(), "linear" | "quad") {
            return Err(format!(
                "diffusion.beta_schedule '{}' is not supported (linear, quad)",
                self.diffusion.beta_schedule
            ));
        }
        Ok(())
    }

    /// The diffusers `UNet2DModel` config that the conversion script writes for this model.
    pub fn unet_config(&self) -> UNet2DConfig {
        let m = &self.model;
        let mut res = self.data.image_size;
        let n = m.ch_mult.len();
        let mut down = Vec::with_capacity(n);
        for i in 0..n {
            down.push(if m.attn_resolutions.contains(&res) { "AttnDownBlock2D" } else { "DownBlock2D" }.to_string());
            if i + 1 < n {
                res /= 2;
            }
        }
        let up: Vec<String> = down.iter().rev().map(|d| d.replace("Down", "Up")).collect();
        let mut c: UNet2DConfig = serde_json::from_str("{}").expect("defaults");
        c.sample_size = Some(SampleSize::Square(self.data.image_size));
        c.in_channels = m.in_channels;
        c.out_channels = m.out_ch;
        c.down_block_types = down;
        c.up_block_types = up;
        c.block_out_channels = m.ch_mult.iter().map(|k| k * m.ch).collect();
        c.layers_per_block = m.num_res_blocks;
        c.downsample_padding = 0;
        c.flip_sin_to_cos = false;
        c.freq_shift = 1.0;
        c.norm_eps = 1e-6;
        c.norm_num_groups = Some(32);
        c.attention_head_dim = None;
        c.num_train_timesteps = Some(self.diffusion.num_diffusion_timesteps);
        c
    }

    /// The noise schedule (`quad` is diffusers' `scaled_linear`: linear in √β).
    pub fn scheduler(&self) -> SchedulerConfig {
        let d = &self.diffusion;
        SchedulerConfig {
            num_train_timesteps: d.num_diffusion_timesteps,
            beta_start: d.beta_start,
            beta_end: d.beta_end,
            beta_schedule: if d.beta_schedule == "quad" { "scaled_linear".into() } else { "linear".into() },
            prediction_type: "epsilon".into(),
            ..SchedulerConfig::default()
        }
    }
}

/// The diffusers name of an original DDPM weight (`levels` = `len(ch_mult)`), or `None` for a
/// weight diffusers has no use for (the `bayesian` model's `logvar`). A `module.` prefix (from
/// `DataParallel`) is dropped.
pub fn diffusers_key(name: &str, levels: usize) -> Option<String> {
    let name = name.strip_prefix("module.").unwrap_or(name);
    if name == "logvar" {
        return None;
    }
    let parts: Vec<&str> = name.split('.').collect();
    let leaf = |p: &[&str]| p.join(".");
    fn resnet(p: &str) -> &str {
        match p {
            "temb_proj" => "time_emb_proj",
            "nin_shortcut" => "conv_shortcut",
            other => other,
        }
    }
    fn attention(p: &str) -> &str {
        match p {
            "norm" => "group_norm",
            "q" => "to_q",
            "k" => "to_k",
            "v" => "to_v",
            "proj_out" => "to_out.0",
            other => other,
        }
    }
    let mapped = match parts.as_slice() {
        ["temb", "dense", "0", rest @ ..] => format!("time_embedding.linear_1.{}", leaf(rest)),
        ["temb", "dense", "1", rest @ ..] => format!("time_embedding.linear_2.{}", leaf(rest)),
        ["norm_out", rest @ ..] => format!("conv_norm_out.{}", leaf(rest)),
        [dir @ ("down" | "up"), i, kind, rest @ ..] => {
            let i: usize = i.parse().ok()?;
            let (prefix, block) =
                if *dir == "down" { ("down_blocks", i) } else { ("up_blocks", levels.checked_sub(i + 1)?) };
            match (*kind, rest) {
                ("block", [j, layer, tail @ ..]) => {
                    format!("{prefix}.{block}.resnets.{j}.{}.{}", resnet(layer), leaf(tail))
                }
                ("attn", [j, layer, tail @ ..]) => {
                    format!("{prefix}.{block}.attentions.{j}.{}.{}", attention(layer), leaf(tail))
                }
                ("downsample", ["conv", tail @ ..]) => format!("{prefix}.{block}.downsamplers.0.conv.{}", leaf(tail)),
                ("upsample", ["conv", tail @ ..]) => format!("{prefix}.{block}.upsamplers.0.conv.{}", leaf(tail)),
                _ => return Some(name.to_string()),
            }
        }
        ["mid", "block_1", layer, rest @ ..] => format!("mid_block.resnets.0.{}.{}", resnet(layer), leaf(rest)),
        ["mid", "block_2", layer, rest @ ..] => format!("mid_block.resnets.1.{}.{}", resnet(layer), leaf(rest)),
        ["mid", "attn_1", layer, rest @ ..] => format!("mid_block.attentions.0.{}.{}", attention(layer), leaf(rest)),
        _ => name.to_string(),
    };
    Some(mapped)
}

/// Whether a (mapped) weight is an attention projection stored as a 1×1 convolution, which
/// diffusers keeps as a linear layer.
pub fn is_attention_projection(diffusers_name: &str) -> bool {
    diffusers_name.contains(".attentions.")
        && [".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight"]
            .iter()
            .any(|s| diffusers_name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_as_diffusers_conversion_script_maps_them() {
        let k = |s| diffusers_key(s, 6).unwrap();
        assert_eq!(k("temb.dense.0.weight"), "time_embedding.linear_1.weight");
        assert_eq!(k("down.2.block.1.nin_shortcut.bias"), "down_blocks.2.resnets.1.conv_shortcut.bias");
        assert_eq!(k("down.4.attn.0.q.weight"), "down_blocks.4.attentions.0.to_q.weight");
        assert_eq!(k("down.0.downsample.conv.weight"), "down_blocks.0.downsamplers.0.conv.weight");
        assert_eq!(k("up.5.block.2.temb_proj.weight"), "up_blocks.0.resnets.2.time_emb_proj.weight");
        assert_eq!(k("up.1.upsample.conv.bias"), "up_blocks.4.upsamplers.0.conv.bias");
        assert_eq!(k("up.4.attn.2.proj_out.weight"), "up_blocks.1.attentions.2.to_out.0.weight");
        assert_eq!(k("mid.attn_1.norm.weight"), "mid_block.attentions.0.group_norm.weight");
        assert_eq!(k("mid.block_2.conv1.weight"), "mid_block.resnets.1.conv1.weight");
        assert_eq!(k("mid.block_1.temb_proj.bias"), "mid_block.resnets.0.time_emb_proj.bias");
        assert_eq!(k("module.norm_out.bias"), "conv_norm_out.bias");
        assert_eq!(k("conv_in.weight"), "conv_in.weight");
        assert_eq!(diffusers_key("logvar", 6), None);
        assert!(is_attention_projection("up_blocks.1.attentions.2.to_out.0.weight"));
        assert!(!is_attention_projection("up_blocks.1.attentions.2.group_norm.weight"));
    }

    #[test]
    fn church_config_becomes_googles_ddpm_church_config() {
        let c: OriginalDdpmConfig = serde_json::from_str(
            r#"{"data": {"dataset": "LSUN", "category": "church_outdoor", "image_size": 256, "channels": 3},
                "model": {"type": "simple", "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 1, 2, 2, 4, 4],
                          "num_res_blocks": 2, "attn_resolutions": [16], "dropout": 0.0, "var_type": "fixedsmall",
                          "ema_rate": 0.999, "ema": true, "resamp_with_conv": true},
                "diffusion": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                              "num_diffusion_timesteps": 1000},
                "training": {"batch_size": 64}}"#,
        )
        .unwrap();
        c.validate().unwrap();
        let u = c.unet_config();
        assert_eq!(u.block_out_channels, vec![128, 128, 256, 256, 512, 512]);
        assert_eq!(u.down_block_types[4], "AttnDownBlock2D");
        assert_eq!(u.down_block_types.iter().filter(|t| t.starts_with("Attn")).count(), 1);
        assert_eq!(u.up_block_types[1], "AttnUpBlock2D");
        assert_eq!((u.flip_sin_to_cos, u.freq_shift, u.downsample_padding, u.norm_eps), (false, 1.0, 0, 1e-6));
        u.validate().unwrap();
    }

    #[test]
    fn unsupported_keys_are_named() {
        let base = r#""data": {"image_size": 32},
            "diffusion": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                          "num_diffusion_timesteps": 1000}"#;
        let model = r#""ch": 32, "ch_mult": [1], "num_res_blocks": 1, "attn_resolutions": []"#;
        let e =
            serde_json::from_str::<OriginalDdpmConfig>(&format!(r#"{{{base}, "model": {{{model}, "chanels": 3}}}}"#))
                .unwrap_err();
        assert!(e.to_string().contains("chanels"), "{e}");
        let c: OriginalDdpmConfig =
            serde_json::from_str(&format!(r#"{{{base}, "model": {{{model}, "resamp_with_conv": false}}}}"#)).unwrap();
        assert!(c.validate().unwrap_err().contains("resamp_with_conv"));
        let c: OriginalDdpmConfig =
            serde_json::from_str(&format!(r#"{{{base}, "model": {{{model}}}, "extra": 1}}"#)).unwrap();
        assert!(c.validate().unwrap_err().contains("extra"));
    }
}
