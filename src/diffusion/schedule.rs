//! Noise schedules: ᾱ_t = ∏_{s≤t} (1 − β_s) for the beta schedules diffusers names.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::SchedulerConfig;

/// ᾱ for every training timestep (index t = level t; level 0 is the first noise level).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    fn from_betas(betas: impl Iterator<Item = f64>) -> Self {
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        NoiseSchedule { alphas_cumprod }
    }

    fn linspace(a: f64, b: f64, n: usize) -> impl Iterator<Item = f64> {
        (0..n).map(move |i| if n == 1 { a } else { a + (b - a) * i as f64 / (n - 1) as f64 })
    }

    /// β linear from `start` to `end` (the original DDPM: 1e-4 … 0.02 over 1000 steps).
    pub fn linear(start: f64, end: f64, steps: usize) -> Self {
        Self::from_betas(Self::linspace(start, end, steps))
    }

    /// β = (linear in √β)², as Stable Diffusion's `scaled_linear`.
    pub fn scaled_linear(start: f64, end: f64, steps: usize) -> Self {
        Self::from_betas(Self::linspace(start.sqrt(), end.sqrt(), steps).map(|b| b * b))
    }

    /// Nichol & Dhariwal's cosine schedule (`squaredcos_cap_v2`), β capped at 0.999.
    pub fn squaredcos_cap_v2(steps: usize) -> Self {
        let abar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
        Self::from_betas((0..steps).map(|i| {
            let (t1, t2) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
            (1.0 - abar(t2) / abar(t1)).min(0.999)
        }))
    }

    /// The schedule a diffusers `scheduler_config.json` describes (with
    /// `rescale_betas_zero_snr`, rescaled as diffusers does).
    pub fn from_config(c: &SchedulerConfig) -> Result<Self> {
        let schedule = if let Some(b) = &c.trained_betas {
            Self::from_betas(b.iter().copied())
        } else {
            if c.num_train_timesteps < 2 {
                return Err(Error::Invalid("num_train_timesteps must be at least 2".into()));
            }
            match c.beta_schedule.as_str() {
                "linear" => Self::linear(c.beta_start, c.beta_end, c.num_train_timesteps),
                "scaled_linear" => Self::scaled_linear(c.beta_start, c.beta_end, c.num_train_timesteps),
                "squaredcos_cap_v2" => Self::squaredcos_cap_v2(c.num_train_timesteps),
                other => {
                    return Err(Error::Invalid(format!(
                        "unsupported beta_schedule '{other}' (linear, scaled_linear, squaredcos_cap_v2)"
                    )))
                }
            }
        };
        Ok(if c.rescale_betas_zero_snr { schedule.zero_terminal_snr() } else { schedule })
    }

    /// Rescaled so that √ᾱ keeps its first value and reaches 0 at the last level (Lin et al. 2023,
    /// diffusers' `rescale_zero_terminal_snr`): √ᾱ' = (√ᾱ − √ᾱ_T) · √ᾱ_0 / (√ᾱ_0 − √ᾱ_T).
    pub fn zero_terminal_snr(&self) -> Self {
        let s: Vec<f64> = self.alphas_cumprod.iter().map(|a| a.sqrt()).collect();
        let (first, last) = (s[0], s[s.len() - 1]);
        let alphas_cumprod = s.iter().map(|v| ((v - last) * first / (first - last)).powi(2)).collect();
        NoiseSchedule { alphas_cumprod }
    }

    /// Number of training timesteps.
    pub fn len(&self) -> usize {
        self.alphas_cumprod.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alphas_cumprod.is_empty()
    }

    /// ᾱ at level `t`.
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alphas_cumprod[t]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_matches_the_values_in_the_method_notes() {
        let s = NoiseSchedule::linear(1e-4, 0.02, 1000);
        assert!((s.alpha_bar(0) - 0.9999).abs() < 1e-12);
        assert!((s.alpha_bar(500) - 0.078).abs() < 0.001, "{}", s.alpha_bar(500));
        assert!((s.alpha_bar(900) - 2.7e-4).abs() < 0.2e-4, "{}", s.alpha_bar(900));
    }

    #[test]
    fn cosine_schedule_is_monotone_and_bounded() {
        let s = NoiseSchedule::squaredcos_cap_v2(1000);
        assert!(s.alpha_bar(0) < 1.0 && s.alpha_bar(0) > 0.999);
        assert!((1..1000).all(|t| s.alpha_bar(t) < s.alpha_bar(t - 1)));
    }
}
