//! Statistics astronomers use to judge synthetic maps. Plain arrays in, numbers out; nothing
//! here knows about models.

pub mod battery;
pub mod bispectrum;
pub mod c2st;
mod fft;
pub mod maps;
pub mod minkowski;
pub(crate) mod nearest;
pub mod onepoint;
pub mod peaks;
pub mod power_spectrum;
pub mod scattering;
pub mod wavelet_moments;

pub use power_spectrum::{Apodization, PowerSpectrum, PowerSpectrumOptions};
