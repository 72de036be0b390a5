//! The model crate's error type. Every variant names what was wrong (a key, a tensor, a file)
//! so the binary can print one clear line.

use std::path::PathBuf;

/// Errors from loading, configuring and running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config key is missing or has the wrong type / value.
    #[error("config: key `{key}`: {msg}")]
    Config { key: String, msg: String },
    /// config.json is not valid JSON.
    #[error("config: {path}: invalid JSON: {cause}")]
    ConfigJson {
        path: PathBuf,
        /// In the message, not a `#[source]` (see `Io`).
        cause: serde_json::Error,
    },
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("checkpoint: missing tensor `{0}`")]
    MissingTensor(String),
    /// A tensor has a shape other than the config implies.
    #[error("checkpoint: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    BadShape {
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A tensor has a dtype the loader cannot use for its role.
    #[error("checkpoint: tensor `{name}` has dtype {got}, expected {expected}")]
    BadDtype {
        name: String,
        got: String,
        expected: String,
    },
    /// A packed ternary tensor holds the unused code 3.
    #[error("checkpoint: tensor `{0}` holds an invalid ternary code (3)")]
    BadTernaryCode(String),
    /// The safetensors file could not be parsed (truncated, corrupt header...).
    #[error("checkpoint: {path}: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        /// The cause, in the message (not a `#[source]`: that would print it twice in the
        /// binary's one-line error chain).
        cause: std::io::Error,
    },
    /// A token id is outside the vocabulary.
    #[error("token id {id} is out of range for vocabulary size {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
    /// The requested sequence does not fit.
    #[error("sequence of {len} tokens exceeds the limit of {limit}")]
    TooLong { len: usize, limit: usize },
    /// Bad argument to an API.
    #[error("{0}")]
    Invalid(String),
    /// Tokenizer failure.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Kernel-level failure (packing, shapes).
    #[error("kernel: {0}")]
    Kernel(String),
    /// A device name that cannot be used (`cpu`, `cuda`, `cuda:N`).
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    /// Tensor library failure.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn config(key: &str, msg: impl Into<String>) -> Self {
        Error::Config {
            key: key.to_string(),
            msg: msg.into(),
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
}

/// Result alias of the model crate.
pub type Result<T> = std::result::Result<T, Error>;
