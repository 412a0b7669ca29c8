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
        StateError::Storage(format!("key {}: {cause}", KeyDisplay(key)))
    }

    /// Stored bytes for `key` could not be decoded as `type_name`.
    pub fn decode_for(key: &str, type_name: &str, cause: impl std::fmt::Display) -> Self {
        StateError::Serialization(format!(
            "key {}: stored state could not be decoded as {type_name} ({cause}); the stored \
             bytes were left untouched. If the state type changed, migrate or delete the old \
             state explicitly",
            KeyDisplay(key)
        ))
    }

    /// A value for `key` could not be encoded.
    pub fn encode_for(key: &str, type_name: &str, cause: impl std::fmt::Display) -> Self {
        StateError::Serialization(format!(
            "key {}: value of type {type_name} could not be encoded ({cause})",
            KeyDisplay(key)
        ))
    }

    /// The same error, naming `key` if its message does not already (backends often report
    /// "connection refused" without saying which key was being read).
    pub fn with_key(self, key: &str) -> Self {
        let shown = KeyDisplay(key).to_string();
        let name = |msg: String| {
            if msg.contains(&shown) || (key.len() <= KeyDisplay::MAX && msg.contains(key)) {
                msg
            } else {
                format!("key {shown}: {msg}")
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

/// A key as error messages show it: quoted, control characters escaped (`\n`, `\u{1b}`), and
/// cut after [`KeyDisplay::MAX`] bytes with its full length noted, so a hostile or huge key
/// can neither forge log lines nor blow up a message.
///
/// ```
/// use rs2_state_core::KeyDisplay;
/// assert_eq!(KeyDisplay("user-7").to_string(), "'user-7'");
/// assert_eq!(KeyDisplay("a\nb").to_string(), r"'a\nb'");
/// let long = "x".repeat(1000);
/// assert!(KeyDisplay(&long).to_string().ends_with("…' (1000 bytes)"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct KeyDisplay<'a>(pub &'a str);

impl KeyDisplay<'_> {
    /// Bytes of a key shown before it is cut.
    pub const MAX: usize = 128;
}

impl std::fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.0;
        let mut end = key.len().min(Self::MAX);
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        f.write_str("'")?;
        for c in key[..end].chars() {
            if c.is_control() || c == '\'' || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if end < key.len() {
            write!(f, "…' ({} bytes)", key.len())
        } else {
            f.write_str("'")
        }
    }
}
