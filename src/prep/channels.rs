//! Mapping single-band maps or multi-band images onto the model's channels, and back.

use ndarray::{s, Array3, Array4, ArrayView3, ArrayView4, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How maps become model channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChannelMap {
    /// Each map is one image; its single band is copied into every one of `channels` channels
    /// (1 → 3 for RGB models). Back: the mean over channels.
    Replicate { channels: usize },
    /// Each run of `band_of_channel.len()` consecutive maps is one multi-band image; channel `c`
    /// takes band `band_of_channel[c]` (a permutation, e.g. `[2, 1, 0]`). Back: the inverse
    /// permutation.
    Bands { band_of_channel: Vec<usize> },
}

impl Default for ChannelMap {
    fn default() -> Self {
        ChannelMap::Replicate { channels: 1 }
    }
}

impl ChannelMap {
    /// Checks the mapping: at least one channel; bands form a permutation of 0..B.
    pub fn validate(&self) -> Result<()> {
        match self {
            ChannelMap::Replicate { channels } if *channels == 0 => {
                Err(Error::Invalid("the model needs at least one channel".into()))
            }
            ChannelMap::Bands { band_of_channel } => {
                let mut seen = vec![false; band_of_channel.len()];
                for &b in band_of_channel {
                    if b >= seen.len() || seen[b] {
                        return Err(Error::Invalid(format!(
                            "band map {band_of_channel:?} must list each band 0..{} exactly once",
                            band_of_channel.len()
                        )));
                    }
                    seen[b] = true;
                }
                if band_of_channel.is_empty() {
                    return Err(Error::Invalid("band map is empty".into()));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Number of model channels.
    pub fn channels(&self) -> usize {
        match self {
            ChannelMap::Replicate { channels } => *channels,
            ChannelMap::Bands { band_of_channel } => band_of_channel.len(),
        }
    }

    /// Number of maps that make one model image.
    pub fn maps_per_image(&self) -> usize {
        match self {
            ChannelMap::Replicate { .. } => 1,
            ChannelMap::Bands { band_of_channel } => band_of_channel.len(),
        }
    }

    /// (N, H, W) maps → (N / B, C, H, W) images.
    pub fn to_channels(&self, maps: ArrayView3<f32>) -> Result<Array4<f32>> {
        self.validate()?;
        let (n, h, w) = maps.dim();
        let b = self.maps_per_image();
        if n % b != 0 {
            return Err(Error::Invalid(format!(
                "{n} maps cannot be grouped into {b}-band images ({n} is not a multiple of {b})"
            )));
        }
        let c = self.channels();
        let mut out = Array4::<f32>::zeros((n / b, c, h, w));
        for (i, mut img) in out.axis_iter_mut(Axis(0)).enumerate() {
            for ch in 0..c {
                let src = match self {
                    ChannelMap::Replicate { .. } => i,
                    ChannelMap::Bands { band_of_channel } => i * b + band_of_channel[ch],
                };
                img.slice_mut(s![ch, .., ..]).assign(&maps.slice(s![src, .., ..]));
            }
        }
        Ok(out)
    }

    /// (M, C, H, W) images → (M · B, H, W) maps.
    pub fn to_maps(&self, images: ArrayView4<f32>) -> Result<Array3<f32>> {
        let (m, c, h, w) = images.dim();
        if c != self.channels() {
            return Err(Error::Invalid(format!(
                "images have {c} channels, the channel map expects {}",
                self.channels()
            )));
        }
        Ok(match self {
            ChannelMap::Replicate { .. } => images.mean_axis(Axis(1)).expect("at least one channel"),
            ChannelMap::Bands { band_of_channel } => {
                let b = band_of_channel.len();
                let mut out = Array3::<f32>::zeros((m * b, h, w));
                for i in 0..m {
                    for (ch, &band) in band_of_channel.iter().enumerate() {
                        out.slice_mut(s![i * b + band, .., ..]).assign(&images.slice(s![i, ch, .., ..]));
                    }
                }
                out
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_one_to_three_and_mean_back() {
        let maps = Array3::from_shape_fn((2, 3, 4), |(n, i, j)| (n * 100 + i * 10 + j) as f32);
        let cm = ChannelMap::Replicate { channels: 3 };
        let img = cm.to_channels(maps.view()).unwrap();
        assert_eq!(img.dim(), (2, 3, 3, 4));
        assert_eq!(img.slice(s![1, 2, .., ..]), maps.slice(s![1, .., ..]));
        assert_eq!(cm.to_maps(img.view()).unwrap(), maps);
    }

    #[test]
    fn band_permutation_round_trips() {
        let maps = Array3::from_shape_fn((6, 2, 2), |(n, _, _)| n as f32);
        let cm = ChannelMap::Bands { band_of_channel: vec![2, 0, 1] };
        let img = cm.to_channels(maps.view()).unwrap();
        assert_eq!(img.dim(), (2, 3, 2, 2));
        assert_eq!(img[[0, 0, 0, 0]], 2.0);
        assert_eq!(img[[1, 1, 0, 0]], 3.0);
        assert_eq!(cm.to_maps(img.view()).unwrap(), maps);
    }

    #[test]
    fn bad_band_maps_are_rejected() {
        let maps = Array3::<f32>::zeros((4, 2, 2));
        assert!(ChannelMap::Bands { band_of_channel: vec![0, 0, 1] }.to_channels(maps.view()).is_err());
        assert!(ChannelMap::Bands { band_of_channel: vec![0, 1, 2] }.to_channels(maps.view()).is_err());
    }
}
