//! Library error type: every variant names the file (or item) and the cause.
//!
//! The variant tells what went wrong ([`Error::Open`]: missing or unreadable, [`Error::Format`]:
//! not a file we can read, [`Error::Model`]: a model folder whose config and weights do not make
//! a model we can build, ...); the [`Cause`] keeps the underlying error, which
//! [`std::error::Error::source`] returns (an [`std::io::Error`], a `candle_core::Error`, ...).
//! The message of an error already ends with its cause's text; [`chain_message`] prints a chain of
//! errors without repeating it. [`Cause`] derives with thiserror; [`Error`]'s `Display` and
//! `source` are written out because its source is the error inside the cause, not the cause.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;

/// Errors raised by the expanse library.
#[derive(Debug)]
pub enum Error {
    /// An input file does not exist or cannot be opened.
    Open { path: PathBuf, cause: Cause },
    /// A file exists but is not in a format we can read.
    Format { path: PathBuf, cause: Cause },
    /// A file could be read but its content is not usable (1-D data, all NaN, ...).
    Content { path: PathBuf, cause: Cause },
    /// A model folder was read but does not describe a model we can build: a config value that is
    /// unknown or refused, or weights that do not match the config (a tensor missing, unused or of
    /// the wrong shape). `path` is the config or weights file.
    Model { path: PathBuf, cause: Cause },
    /// Writing an output failed.
    Write { path: PathBuf, cause: Cause },
    /// A user option or parameter is invalid.
    Invalid(String),
    /// A setting is refused: `key` as a run config names it within its section (`beam_fwhm`,
    /// `sampling.band`, `domain[0].transform`); the command-line flag of the same name reports
    /// it as `--beam-fwhm` ([`Error::flag`]).
    Setting { key: String, cause: Cause },
    /// A run folder was refused before any work: it is busy, not empty, or holds a run of another
    /// config or inputs.
    Refused(Box<Error>),
}

/// Why a file could not be opened, read or written: the underlying error, kept as the
/// [`source`](std::error::Error::source) of the [`Error`], or a message of ours.
///
/// It displays as the text the error was reported with (the underlying error's message, or ours).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Hdf5(#[from] hdf5::Error),
    #[error(transparent)]
    Fits(#[from] fitsio::errors::Error),
    #[error(transparent)]
    ReadNpy(#[from] ndarray_npy::ReadNpyError),
    #[error(transparent)]
    WriteNpy(#[from] ndarray_npy::WriteNpyError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// An error of this library (the file it names is not the one of the outer error).
    #[error(transparent)]
    Library(Box<Error>),
    /// A message of ours, with no underlying error.
    #[error("{0}")]
    Message(String),
    /// An underlying error reported in words of ours: `text` is what is displayed (it usually
    /// quotes the underlying error), `source` what it came from.
    #[error("{text}")]
    Described { text: String, source: Box<Cause> },
}

impl Cause {
    /// `source` reported as `text`.
    pub(crate) fn described(text: impl Into<String>, source: impl Into<Cause>) -> Self {
        Cause::Described { text: text.into(), source: Box::new(source.into()) }
    }

    /// The underlying error, if any (for a [`Cause::Described`], the one it came from).
    pub fn error(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Cause::Io(e) => Some(e),
            Cause::Candle(e) => Some(e),
            Cause::Hdf5(e) => Some(e),
            Cause::Fits(e) => Some(e),
            Cause::ReadNpy(e) => Some(e),
            Cause::WriteNpy(e) => Some(e),
            Cause::Json(e) => Some(e),
            Cause::Toml(e) => Some(e),
            Cause::Library(e) => Some(&**e),
            Cause::Message(_) => None,
            Cause::Described { source, .. } => source.error(),
        }
    }
}

impl From<String> for Cause {
    fn from(s: String) -> Self {
        Cause::Message(s)
    }
}

impl From<&str> for Cause {
    fn from(s: &str) -> Self {
        Cause::Message(s.to_string())
    }
}

impl From<&String> for Cause {
    fn from(s: &String) -> Self {
        Cause::Message(s.clone())
    }
}

/// A cfitsio status, reported as its text.
impl From<fitsio::errors::FitsError> for Cause {
    fn from(e: fitsio::errors::FitsError) -> Self {
        Cause::described(e.message.clone(), fitsio::errors::Error::Fits(e))
    }
}

impl From<Error> for Cause {
    fn from(e: Error) -> Self {
        Cause::Library(Box::new(e))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open { path, cause }
            | Error::Format { path, cause }
            | Error::Content { path, cause }
            | Error::Model { path, cause } => {
                write!(f, "{}: {cause}", path.display())
            }
            Error::Write { path, cause } => write!(f, "cannot write {}: {cause}", path.display()),
            Error::Invalid(message) => f.write_str(message),
            Error::Setting { key, cause } => write!(f, "{key}: {cause}"),
            Error::Refused(e) => e.fmt(f),
        }
    }
}

impl StdError for Error {
    /// The underlying error of the cause (none for a message of ours); for [`Error::Refused`], the
    /// one of the refusal.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Refused(e) => e.source(),
            _ => self.cause().and_then(Cause::error),
        }
    }
}

impl Error {
    pub(crate) fn open(path: impl Into<PathBuf>, cause: impl Into<Cause>) -> Self {
        Error::Open { path: path.into(), cause: cause.into() }
    }
    pub(crate) fn format(path: impl Into<PathBuf>, cause: impl Into<Cause>) -> Self {
        Error::Format { path: path.into(), cause: cause.into() }
    }
    pub(crate) fn content(path: impl Into<PathBuf>, cause: impl Into<Cause>) -> Self {
        Error::Content { path: path.into(), cause: cause.into() }
    }
    pub(crate) fn model(path: impl Into<PathBuf>, cause: impl Into<Cause>) -> Self {
        Error::Model { path: path.into(), cause: cause.into() }
    }
    pub(crate) fn write(path: impl Into<PathBuf>, cause: impl Into<Cause>) -> Self {
        Error::Write { path: path.into(), cause: cause.into() }
    }

    /// Keeps `source` as the underlying error of a cause given as text of ours (which usually
    /// quotes it); the message stays the same.
    pub(crate) fn with_source(self, source: impl Into<Cause>) -> Self {
        let described = |cause: Cause| match cause {
            Cause::Message(text) => Cause::described(text, source),
            cause => Cause::described(cause.to_string(), source),
        };
        match self {
            Error::Open { path, cause } => Error::Open { path, cause: described(cause) },
            Error::Format { path, cause } => Error::Format { path, cause: described(cause) },
            Error::Content { path, cause } => Error::Content { path, cause: described(cause) },
            Error::Model { path, cause } => Error::Model { path, cause: described(cause) },
            Error::Write { path, cause } => Error::Write { path, cause: described(cause) },
            other => other,
        }
    }

    /// A refused value of the setting `key`.
    pub fn setting(key: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Error::Setting { key: key.into(), cause: cause.into() }
    }

    /// This error as one about the setting `key`: a message becomes its cause; an error about a
    /// key within `key` (a section or a domain) gets the dotted key `key.inner`.
    pub fn for_key(self, key: &str) -> Self {
        match self {
            Error::Invalid(m) => Error::setting(key, m),
            Error::Setting { key: inner, cause } => Error::setting(format!("{key}.{inner}"), cause),
            other => Error::setting(key, other),
        }
    }

    /// The message of a setting as its command-line flag names it (`beam_fwhm: …` →
    /// `--beam-fwhm: …`); other errors are unchanged.
    pub fn flag(self) -> Self {
        match self {
            Error::Setting { key, cause } => Error::Setting { key: format!("--{}", key.replace('_', "-")), cause },
            other => other,
        }
    }

    /// The file the error is about, if it names one (for [`Error::Refused`], the refusal's).
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::Open { path, .. }
            | Error::Format { path, .. }
            | Error::Content { path, .. }
            | Error::Model { path, .. }
            | Error::Write { path, .. } => Some(path),
            Error::Invalid(_) | Error::Setting { .. } => None,
            Error::Refused(e) => e.path(),
        }
    }

    /// Why the file could not be used, if the error names a file (for [`Error::Refused`], the
    /// refusal's).
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            Error::Open { cause, .. }
            | Error::Format { cause, .. }
            | Error::Content { cause, .. }
            | Error::Model { cause, .. }
            | Error::Write { cause, .. }
            | Error::Setting { cause, .. } => Some(cause),
            Error::Invalid(_) => None,
            Error::Refused(e) => (**e).cause(),
        }
    }
}

/// The message of `e` followed by those of its sources, each after ": " (as anyhow's `{:#}`),
/// except that it stops at an [`Error`] of this library: its message already ends with its cause,
/// which would otherwise be printed twice.
pub fn chain_message(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut current = e;
    while !current.is::<Error>() {
        let Some(next) = current.source() else { break };
        out.push_str(": ");
        out.push_str(&next.to_string());
        current = next;
    }
    out
}

/// Result alias for the library.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};
    use std::path::Path;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn read_maps(path: &Path) -> Error {
        crate::io::read_maps(path, &crate::io::Selection::default()).expect_err("the file must not read")
    }

    fn load(dir: &Path) -> Error {
        crate::model::Ddpm::load(dir, &Device::Cpu, DType::F32).err().expect("the model folder must not load")
    }

    /// A copy of the diffusers fixture model with its weights edited by `edit`.
    fn edited_model(edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>)) -> tempfile::TempDir {
        let src = fixtures().join("unet/attn_multihead");
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "scheduler_config.json"] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        let mut w =
            candle_core::safetensors::load(src.join("diffusion_pytorch_model.safetensors"), &Device::Cpu).unwrap();
        edit(&mut w);
        candle_core::safetensors::save(&w, dir.path().join("diffusion_pytorch_model.safetensors")).unwrap();
        dir
    }

    #[test]
    fn a_missing_file_is_open_with_the_io_error_as_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.fits");
        let e = read_maps(&path);
        assert!(matches!(&e, Error::Open { path: p, .. } if *p == path), "{e:?}");
        assert_eq!(e.to_string(), format!("{}: no such file", path.display()));
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("an io::Error source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert!(matches!(e.cause(), Some(Cause::Described { text, .. }) if text == "no such file"));
    }

    #[test]
    fn a_corrupt_file_is_format_with_the_reader_error_as_source() {
        let path = fixtures().join("io/bad_truncated_header.fits");
        let e = read_maps(&path);
        assert!(matches!(e, Error::Format { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!("{}: truncated or corrupt FITS file: ", path.display())), "{e}");
        let fits = e.source().and_then(|s| s.downcast_ref::<fitsio::errors::Error>()).expect("a cfitsio source");
        assert!(
            matches!(fits, fitsio::errors::Error::Fits(f) if f.status != 0 && e.to_string().ends_with(&f.message)),
            "{fits:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let npy = dir.path().join("corrupt.npy");
        std::fs::write(&npy, b"\x93NUMPY\x01\x00garbage").unwrap();
        let e = read_maps(&npy);
        assert!(matches!(e, Error::Format { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!("{}: cannot read NPY: ", npy.display())), "{e}");
        assert!(e.source().is_some_and(|s| s.is::<ndarray_npy::ReadNpyError>()), "{e:?}");

        // A file of no format we know: our own words, no underlying error.
        let e = read_maps(&fixtures().join("io/bad_not_hdf5.h5"));
        assert!(matches!(e, Error::Format { .. }) && e.source().is_none(), "{e:?}");
    }

    #[test]
    fn weights_that_do_not_match_the_config_are_a_model_error() {
        let d = edited_model(|w| {
            w.remove("mid_block.attentions.0.to_k.weight");
        });
        let e = load(d.path());
        let weights = d.path().join("diffusion_pytorch_model.safetensors");
        assert!(matches!(&e, Error::Model { path, .. } if *path == weights), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("{}: missing weight 'mid_block.attentions.0.to_k.weight'", weights.display())),
            "{e}"
        );
        assert!(e.to_string().ends_with("(the model described in config.json)"), "{e}");
        assert!(e.source().is_some_and(|s| s.is::<candle_core::Error>()), "{e:?}");

        let d = edited_model(|w| {
            w.insert("extra.layer.weight".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
        });
        let e = load(d.path());
        assert!(matches!(e, Error::Model { .. }) && e.to_string().contains("not used"), "{e:?}");

        // A config refused or with an unknown key is a model error too; broken JSON is a format error.
        let d = edited_model(|_| {});
        let config = d.path().join("config.json");
        let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        c["down_block_types"][0] = "SkipDownBlock2D".into();
        std::fs::write(&config, c.to_string()).unwrap();
        let e = load(d.path());
        assert!(
            matches!(e, Error::Model { .. }) && e.to_string().contains("unsupported down block type 'SkipDownBlock2D'"),
            "{e:?}"
        );
        let adm = tempfile::tempdir().unwrap();
        std::fs::write(adm.path().join("adm.json"), r#"{"bogus_key": 1}"#).unwrap();
        let e = load(adm.path());
        assert!(
            matches!(e, Error::Model { .. }) && e.to_string().contains("invalid JSON: unknown field `bogus_key`"),
            "{e}"
        );
        assert!(e.source().is_some_and(|s| s.is::<serde_json::Error>()), "{e:?}");
        std::fs::write(adm.path().join("adm.json"), "{").unwrap();
        let e = load(adm.path());
        assert!(matches!(e, Error::Format { .. }) && e.source().is_some_and(|s| s.is::<serde_json::Error>()), "{e:?}");

        // A missing model folder is not a model error.
        assert!(matches!(load(Path::new("/no/such/model")), Error::Open { .. }));
    }

    #[test]
    fn the_chain_is_printed_without_repeating_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.npy");
        let e = read_maps(&path);
        let message = format!("{}: no such file", path.display());
        assert_eq!(chain_message(&e), message);
        let wrapped = anyhow::Error::new(e).context("the run did not start");
        assert_eq!(chain_message(&*wrapped), format!("the run did not start: {message}"));
        // anyhow's own `{:#}` would add the io::Error's text after ours.
        assert!(format!("{wrapped:#}").len() > chain_message(&*wrapped).len());
        let refused = Error::Refused(Box::new(read_maps(&path)));
        assert_eq!(refused.to_string(), message);
        assert!(refused.source().is_some_and(|s| s.is::<std::io::Error>()));
    }
}
