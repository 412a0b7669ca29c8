//! How typed state becomes bytes. postcard is the default; plug another by implementing [`Codec`].

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Turns typed state into bytes and back.
///
/// A codec is chosen by type, so the hot path pays no dynamic dispatch. The default,
/// [`Postcard`], is compact and fast; a user who wants readable values in an external store can
/// plug another (for example serde_json) and read state through
/// [`StateAccess::with_codec`](crate::StateAccess::with_codec).
///
/// ```
/// use rs2_state_core::{Codec, Postcard};
/// let mut buf = Vec::new();
/// Postcard::encode(&(7u64, "x".to_string()), &mut buf).unwrap();
/// let back: (u64, String) = Postcard::decode(&buf).unwrap();
/// assert_eq!(back, (7, "x".to_string()));
/// ```
pub trait Codec: Send + Sync + 'static {
    /// A short name used in error messages.
    const NAME: &'static str;

    /// Appends the encoding of `value` to `buf`. On error `buf` may hold a partial encoding; the
    /// caller discards it.
    fn encode<S: Serialize + ?Sized>(value: &S, buf: &mut Vec<u8>) -> Result<(), String>;

    /// Decodes a value from `bytes`.
    fn decode<S: DeserializeOwned>(bytes: &[u8]) -> Result<S, String>;
}

/// The default codec: [postcard](https://docs.rs/postcard), a stable, documented, compact wire
/// format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

/// A postcard output that appends to a borrowed buffer, so encoding reuses its capacity.
struct AppendFlavor<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendFlavor<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

impl Codec for Postcard {
    const NAME: &'static str = "postcard";

    #[inline]
    fn encode<S: Serialize + ?Sized>(value: &S, buf: &mut Vec<u8>) -> Result<(), String> {
        postcard::serialize_with_flavor(value, AppendFlavor(buf)).map_err(|e| e.to_string())
    }

    #[inline]
    fn decode<S: DeserializeOwned>(bytes: &[u8]) -> Result<S, String> {
        // Trailing bytes mean the stored value is not of this type (a changed struct, say):
        // report it instead of silently reading a prefix.
        let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
        if rest.is_empty() {
            Ok(value)
        } else {
            Err(format!(
                "{} trailing byte(s) after the value; the stored state has a different type",
                rest.len()
            ))
        }
    }
}
