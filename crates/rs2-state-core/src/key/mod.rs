//! Key extractors: how an event names the key its state lives under.

mod field;

pub use field::FieldKeyExtractor;

use crate::error::StateResult;

/// Extracts the state key from an event.
///
/// Implemented by [`CustomKeyExtractor`], by [`FieldKeyExtractor`], and by any plain function or
/// closure `Fn(&T) -> String`. Operators call [`try_extract_key`](Self::try_extract_key), so an
/// extractor that can fail (a missing field, say) reports an error item instead of inventing a
/// shared key.
///
/// ```
/// use rs2_state_core::KeyExtractor;
/// struct Click { user: String }
/// fn by_user(c: &Click) -> String { c.user.clone() }
/// assert_eq!(by_user.extract_key(&Click { user: "ann".into() }), "ann");
/// ```
pub trait KeyExtractor<T> {
    /// The key for `event`.
    fn extract_key(&self, event: &T) -> String;

    /// The key for `event`, or an error saying why there is none. Defaults to
    /// `Ok(self.extract_key(event))`.
    fn try_extract_key(&self, event: &T) -> StateResult<String> {
        Ok(self.extract_key(event))
    }
}

impl<T, F> KeyExtractor<T> for F
where
    F: Fn(&T) -> String,
{
    #[inline]
    fn extract_key(&self, event: &T) -> String {
        self(event)
    }
}

/// A key extractor made from any function or closure.
///
/// Rust cannot infer a closure's argument type from this constructor alone, so write it out:
///
/// ```
/// use rs2_state_core::{CustomKeyExtractor, KeyExtractor};
/// struct UserEvent { user_id: String, category: String }
/// let by_user_and_category = CustomKeyExtractor::new(|event: &UserEvent| {
///     format!("{}:{}", event.user_id, event.category)
/// });
/// let e = UserEvent { user_id: "u1".into(), category: "books".into() };
/// assert_eq!(by_user_and_category.extract_key(&e), "u1:books");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CustomKeyExtractor<F> {
    extractor: F,
}

impl<F> CustomKeyExtractor<F> {
    /// Wraps `extractor`.
    pub fn new(extractor: F) -> Self {
        Self { extractor }
    }
}

impl<T, F> KeyExtractor<T> for CustomKeyExtractor<F>
where
    F: Fn(&T) -> String,
{
    #[inline]
    fn extract_key(&self, event: &T) -> String {
        (self.extractor)(event)
    }
}
