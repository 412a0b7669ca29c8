//! The one error type every state operation reports.

/// Result of a state operation.
pub type StateResult<T> = Result<T, StateError>;

/// What went wrong with keyed state, in words a person can act on.
///
/// Every variant carries a message that names the key involved (where there is one) and what to
/// do about it. The type is `Clone` so an operator can report one failure to several places.
///
/// ```
/// use rs2_state_core::StateError;
/// let err = StateError::storage_for("user-7", "connection refused");
/// assert!(err.to_string().contains("user-7"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The storage backend failed (I/O, network, timeout, a closed store).
    #[error("state storage error: {0}")]
    Storage(String),
    /// A value could not be encoded, or stored bytes could not be decoded into the requested type.
    #[error("state serialization error: {0}")]
    Serialization(String),
    /// A configuration or argument is invalid; the message says which and what a valid one is.
    #[error("invalid state configuration: {0}")]
    Validation(String),
    /// A key extractor could not produce a key for an event.
    #[error("key extraction failed: {0}")]
    KeyExtraction(String),
}

impl StateError {
    /// A backend failure for `key`.
    pub fn storage_for(key: &str, cause: impl std::fmt::Display) -> Self {
        StateError::Storage(format!("key '{key}': {cause}"))
    }

    /// Stored bytes for `key` could not be decoded as `type_name`.
    pub fn decode_for(key: &str, type_name: &str, cause: impl std::fmt::Display) -> Self {
        StateError::Serialization(format!(
            "key '{key}': stored state could not be decoded as {type_name} ({cause}); the stored \
             bytes were left untouched. If the state type changed, migrate or delete the old \
             state explicitly"
        ))
    }

    /// A value for `key` could not be encoded.
    pub fn encode_for(key: &str, type_name: &str, cause: impl std::fmt::Display) -> Self {
        StateError::Serialization(format!(
            "key '{key}': value of type {type_name} could not be encoded ({cause})"
        ))
    }

    /// The same error, naming `key` if its message does not already (backends often report
    /// "connection refused" without saying which key was being read).
    pub fn with_key(self, key: &str) -> Self {
        let name = |msg: String| {
            if msg.contains(key) {
                msg
            } else {
                format!("key '{key}': {msg}")
            }
        };
        match self {
            StateError::Storage(msg) => StateError::Storage(name(msg)),
            StateError::Serialization(msg) => StateError::Serialization(name(msg)),
            StateError::Validation(msg) => StateError::Validation(name(msg)),
            StateError::KeyExtraction(msg) => StateError::KeyExtraction(msg),
        }
    }

    /// Whether this error is a [`StateError::Validation`].
    pub fn is_validation(&self) -> bool {
        matches!(self, StateError::Validation(_))
    }
}
