//! Statistics astronomers use to judge synthetic maps. Plain arrays in, numbers out; nothing
//! here knows about models.

pub mod maps;
pub mod onepoint;
pub mod power_spectrum;

pub use power_spectrum::{Apodization, PowerSpectrum, PowerSpectrumOptions};
