//! `FieldKeyExtractor`: reads a named (possibly nested) field of any `Serialize` event.
//!
//! The event is walked with a purpose-built [`serde::Serializer`] instead of being converted into
//! a generic value tree: fields whose name is not the next path segment are skipped without being
//! serialized, and once the key is found every later field is ignored. The only allocation on the
//! happy path is the returned key `String`.

use std::fmt::{self, Display, Write as _};

use serde::ser::{self, Impossible, Serialize};

use super::KeyExtractor;
use crate::error::{StateError, StateResult};

/// Reads the key from a named field of a `Serialize` event.
///
/// The field is found through the event's `Serialize` implementation, so it is named as serde
/// names it (after any `#[serde(rename)]`). A dotted path like `"user.id"` selects a nested
/// field; each segment before the last must be a struct, a struct-like enum variant, or a map
/// (whose key is matched against the segment's text). Newtype wrappers, `Some(..)` and newtype
/// enum variants are looked through.
///
/// The selected value becomes the key as text: strings and chars as they are, integers, floats
/// and bools through `Display`, unit enum variants as the variant's (serde) name. Anything else —
/// a struct, a sequence, a map, `None`, `()` or bytes — is an error, as is a path that names no
/// field. Operators call [`try_extract_key`](KeyExtractor::try_extract_key), so such an event
/// yields an error item that names the path and the event type instead of a made-up key.
///
/// ```
/// use rs2_state_core::{FieldKeyExtractor, KeyExtractor};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct User { id: u64, name: String }
/// #[derive(Serialize)]
/// struct Click { user: User, page: String }
///
/// let click = Click { user: User { id: 7, name: "ann".into() }, page: "/home".into() };
///
/// let by_page = FieldKeyExtractor::new("page");
/// assert_eq!(by_page.try_extract_key(&click).unwrap(), "/home");
///
/// let by_user = FieldKeyExtractor::new("user.id");
/// assert_eq!(by_user.try_extract_key(&click).unwrap(), "7");
///
/// // A path that names no field is an error that says what to fix.
/// let err = FieldKeyExtractor::new("user.email").try_extract_key(&click).unwrap_err();
/// assert!(err.to_string().contains("'user.email' not found"));
/// ```
#[derive(Debug, Clone)]
pub struct FieldKeyExtractor {
    path: Vec<String>,
    field_name: String,
}

impl FieldKeyExtractor {
    /// Reads `field_name`; a dotted path (`"user.id"`) reads a nested field.
    ///
    /// The path is split once here. An empty name, or a path with an empty segment (`"user..id"`),
    /// is accepted but makes every extraction fail with an error saying so.
    pub fn new(field_name: &str) -> Self {
        Self {
            path: field_name.split('.').map(str::to_string).collect(),
            field_name: field_name.to_string(),
        }
    }

    /// The field path this extractor reads, as given to [`new`](Self::new).
    pub fn field_name(&self) -> &str {
        &self.field_name
    }

    /// The first `depth` segments of the path, joined with dots (for error messages).
    fn prefix(&self, depth: usize) -> String {
        self.path[..depth].join(".")
    }

    /// Turns a walk failure into a [`StateError::KeyExtraction`] that names the path, the event
    /// type and what to do.
    fn to_state_error(&self, err: WalkError, type_name: &str) -> StateError {
        let path = &self.field_name;
        let message = match err.0 {
            Kind::Missing { depth: 0, .. } => format!(
                "field '{path}' not found in event of type {type_name}; check the field name \
                 (dotted paths select nested fields) or use CustomKeyExtractor"
            ),
            Kind::Missing { depth, in_map } => {
                let parent = self.prefix(depth);
                let segment = &self.path[depth];
                let what = if in_map {
                    format!("'{parent}' is a map without the key '{segment}' in this event")
                } else {
                    format!("'{parent}' has no field '{segment}'")
                };
                format!(
                    "field '{path}' not found in event of type {type_name}: {what}; check the \
                     field name (dotted paths select nested fields) or use CustomKeyExtractor"
                )
            }
            Kind::NotNested { depth, found } => {
                let segment = &self.path[depth];
                let parent = if depth == 0 {
                    "the event itself".to_string()
                } else {
                    format!("'{}'", self.prefix(depth))
                };
                if found == NONE {
                    format!(
                        "field '{path}' of event type {type_name} cannot be read: {parent} is \
                         None in this event, so there is no '{segment}' to read; filter such \
                         events out before the keyed operator, or use CustomKeyExtractor to pick \
                         a fallback key"
                    )
                } else {
                    format!(
                        "field '{path}' of event type {type_name} cannot be read: {parent} is \
                         {found}, not a struct or map, so it has no field '{segment}'; check the \
                         field path or use CustomKeyExtractor"
                    )
                }
            }
            Kind::NotAKey { found, hint } => match hint {
                Hint::Field(first) => format!(
                    "field '{path}' of event type {type_name} is {found}, not a key; name a \
                     nested field like '{path}.{first}'"
                ),
                Hint::Nested => format!(
                    "field '{path}' of event type {type_name} is {found}, not a key; name a \
                     nested field like '{path}.<field>', or use CustomKeyExtractor"
                ),
                Hint::MapKey => format!(
                    "field '{path}' of event type {type_name} is {found}, not a key; name one of \
                     its keys like '{path}.<key>', or use CustomKeyExtractor"
                ),
                Hint::None if found == NONE => format!(
                    "field '{path}' of event type {type_name} is None, so this event has no key; \
                     filter such events out before the keyed operator, or use \
                     CustomKeyExtractor to pick a fallback key"
                ),
                Hint::None => format!(
                    "field '{path}' of event type {type_name} is {found}, not a key; point the \
                     path at a string, char, integer, float, bool or unit enum variant, or use \
                     CustomKeyExtractor"
                ),
            },
            Kind::UnsupportedMapKey { depth, found } => {
                let parent = if depth == 0 {
                    "the event itself".to_string()
                } else {
                    format!("'{}'", self.prefix(depth))
                };
                format!(
                    "field '{path}' of event type {type_name} cannot be read: {parent} is a map \
                     whose keys are {found}; only string, char, integer, float, bool and unit \
                     enum variant keys can be selected by name, so use CustomKeyExtractor"
                )
            }
            Kind::Custom(cause) => format!(
                "field '{path}' of event type {type_name} could not be read: serializing the \
                 event failed ({cause}); fix the event's Serialize implementation or use \
                 CustomKeyExtractor"
            ),
        };
        StateError::KeyExtraction(message)
    }
}

impl<T: Serialize> KeyExtractor<T> for FieldKeyExtractor {
    /// The key, or an empty string when there is none.
    ///
    /// Prefer [`try_extract_key`](KeyExtractor::try_extract_key), which operators call: it
    /// reports why an event has no key instead of putting all such events under `""`.
    fn extract_key(&self, event: &T) -> String {
        self.try_extract_key(event).unwrap_or_default()
    }

    /// Reads the field, or returns a [`StateError::KeyExtraction`] naming the path, the event
    /// type and what to do: the field is missing, is not a key (a struct, `None`, a sequence…),
    /// or the path is empty.
    fn try_extract_key(&self, event: &T) -> StateResult<String> {
        if self.field_name.is_empty() {
            return Err(StateError::KeyExtraction(
                "FieldKeyExtractor has an empty field name; name the field that holds the key, \
                 like 'user_id', or a nested one like 'user.id'"
                    .to_string(),
            ));
        }
        if self.path.iter().any(String::is_empty) {
            return Err(StateError::KeyExtraction(format!(
                "FieldKeyExtractor field path '{}' has an empty segment; write dotted paths like \
                 'user.id', without leading, trailing or doubled dots",
                self.field_name
            )));
        }
        event
            .serialize(Walker {
                path: &self.path,
                depth: 0,
            })
            .map_err(|err| self.to_state_error(err, std::any::type_name::<T>()))
    }
}

// ---------------------------------------------------------------------------------------------
// Errors of the walk. Kept allocation-free except for serde's `custom` messages; the full
// message is built only once, by `FieldKeyExtractor::to_state_error`.

/// Description used for `None`; compared to choose a dedicated message.
const NONE: &str = "None";

/// Why the walk did not produce a key.
#[derive(Debug)]
struct WalkError(Kind);

#[derive(Debug)]
enum Kind {
    /// The struct or map at `path[..depth]` has no entry named `path[depth]`.
    Missing { depth: usize, in_map: bool },
    /// The value at `path[..depth]` is `found`, which cannot hold the field `path[depth]`.
    NotNested { depth: usize, found: &'static str },
    /// The value at the full path is `found`, which cannot be turned into a key.
    NotAKey { found: &'static str, hint: Hint },
    /// The map at `path[..depth]` has keys of a kind that cannot be matched by name.
    UnsupportedMapKey { depth: usize, found: &'static str },
    /// The event's `Serialize` implementation reported an error.
    Custom(String),
}

/// What to suggest when the final value is not a key.
#[derive(Debug, Clone, Copy)]
enum Hint {
    /// A struct whose first field has this name.
    Field(&'static str),
    /// A struct whose fields are not known.
    Nested,
    /// A map.
    MapKey,
    /// Nothing to suggest beyond pointing at a scalar.
    None,
}

impl Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Missing { depth, .. } => write!(f, "no field at path segment {depth}"),
            Kind::NotNested { depth, found } => {
                write!(f, "value before path segment {depth} is {found}")
            }
            Kind::NotAKey { found, .. } => write!(f, "selected value is {found}, not a key"),
            Kind::UnsupportedMapKey { depth, found } => {
                write!(f, "map before path segment {depth} has {found} keys")
            }
            Kind::Custom(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for WalkError {}

impl ser::Error for WalkError {
    fn custom<M: Display>(msg: M) -> Self {
        WalkError(Kind::Custom(msg.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// The walker: a serializer that either descends towards `path[depth]` (while segments remain) or
// captures the value it is given as the key (once `depth == path.len()`).

/// Serializer for the value at `path[..depth]`.
#[derive(Clone, Copy)]
struct Walker<'a> {
    path: &'a [String],
    depth: usize,
}

impl<'a> Walker<'a> {
    /// The segment to select next, or `None` when this value is the key itself.
    #[inline]
    fn segment(self) -> Option<&'a str> {
        self.path.get(self.depth).map(String::as_str)
    }

    /// The walker for the value of the field just matched.
    #[inline]
    fn child(self) -> Walker<'a> {
        Walker {
            path: self.path,
            depth: self.depth + 1,
        }
    }

    /// A scalar: the key when at the end of the path, otherwise an error.
    #[inline]
    fn scalar(
        self,
        found: &'static str,
        key: impl FnOnce() -> String,
    ) -> Result<String, WalkError> {
        match self.segment() {
            None => Ok(key()),
            Some(_) => Err(self.not_nested(found)),
        }
    }

    /// A value that is never a key and cannot be descended into.
    #[inline]
    fn neither(self, found: &'static str) -> WalkError {
        match self.segment() {
            None => WalkError(Kind::NotAKey {
                found,
                hint: Hint::None,
            }),
            Some(_) => self.not_nested(found),
        }
    }

    #[inline]
    fn not_nested(self, found: &'static str) -> WalkError {
        WalkError(Kind::NotNested {
            depth: self.depth,
            found,
        })
    }
}

impl<'a> ser::Serializer for Walker<'a> {
    type Ok = String;
    type Error = WalkError;
    type SerializeSeq = Impossible<String, WalkError>;
    type SerializeTuple = Impossible<String, WalkError>;
    type SerializeTupleStruct = Impossible<String, WalkError>;
    type SerializeTupleVariant = Impossible<String, WalkError>;
    type SerializeMap = MapWalker<'a>;
    type SerializeStruct = StructWalker<'a>;
    type SerializeStructVariant = StructWalker<'a>;

    fn serialize_bool(self, v: bool) -> Result<String, WalkError> {
        self.scalar("a bool", || v.to_string())
    }
    fn serialize_i8(self, v: i8) -> Result<String, WalkError> {
        self.scalar("an integer", || v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<String, WalkError> {
        self.scalar("an integer", || v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<String, WalkError> {
        self.scalar("an integer", || v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<String, WalkError> {
        self.scalar("an integer", || v.to_string())
    }
    fn serialize_i128(self, v: i128) -> Result<String, WalkError> {
        self.scalar("an integer", || v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<String, WalkError> {
        self.scalar("an integer", || v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<String, WalkError> {
        self.scalar("an integer", || v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<String, WalkError> {
        self.scalar("an integer", || v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<String, WalkError> {
        self.scalar("an integer", || v.to_string())
    }
    fn serialize_u128(self, v: u128) -> Result<String, WalkError> {
        self.scalar("an integer", || v.to_string())
    }
    fn serialize_f32(self, v: f32) -> Result<String, WalkError> {
        self.scalar("a float", || v.to_string())
    }
    fn serialize_f64(self, v: f64) -> Result<String, WalkError> {
        self.scalar("a float", || v.to_string())
    }
    fn serialize_char(self, v: char) -> Result<String, WalkError> {
        self.scalar("a char", || v.to_string())
    }
    fn serialize_str(self, v: &str) -> Result<String, WalkError> {
        self.scalar("a string", || v.to_owned())
    }
    fn collect_str<D: Display + ?Sized>(self, value: &D) -> Result<String, WalkError> {
        self.scalar("a string", || value.to_string())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<String, WalkError> {
        Err(self.neither("bytes"))
    }
    fn serialize_none(self) -> Result<String, WalkError> {
        Err(self.neither(NONE))
    }
    fn serialize_some<V: Serialize + ?Sized>(self, value: &V) -> Result<String, WalkError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<String, WalkError> {
        Err(self.neither("the unit value ()"))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, WalkError> {
        Err(self.neither("a unit struct"))
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        variant: &'static str,
    ) -> Result<String, WalkError> {
        self.scalar("an enum variant without fields", || variant.to_owned())
    }
    fn serialize_newtype_struct<V: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &V,
    ) -> Result<String, WalkError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<V: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _variant_index: u32,
        _variant: &'static str,
        value: &V,
    ) -> Result<String, WalkError> {
        // Looked through while walking (so `enum Event { Click(Click) }` reads `Click`'s fields),
        // but not a key by itself: `Id::User(5)` and `Id::Team(5)` must not both become "5".
        match self.segment() {
            Some(_) => value.serialize(self),
            None => Err(self.neither("an enum variant with data")),
        }
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, WalkError> {
        Err(self.neither("a sequence"))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, WalkError> {
        Err(self.neither("a tuple"))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, WalkError> {
        Err(self.neither("a tuple struct"))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, WalkError> {
        Err(self.neither("an enum variant with data"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapWalker<'a>, WalkError> {
        match self.segment() {
            Some(segment) => Ok(MapWalker {
                walker: self,
                segment,
                matched: false,
                found: None,
            }),
            None => Err(WalkError(Kind::NotAKey {
                found: "a map",
                hint: Hint::MapKey,
            })),
        }
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<StructWalker<'a>, WalkError> {
        Ok(StructWalker {
            walker: self,
            segment: self.segment(),
            found: None,
            first_field: None,
        })
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<StructWalker<'a>, WalkError> {
        match self.segment() {
            Some(segment) => Ok(StructWalker {
                walker: self,
                segment: Some(segment),
                found: None,
                first_field: None,
            }),
            None => Err(WalkError(Kind::NotAKey {
                found: "an enum variant with fields",
                hint: Hint::Nested,
            })),
        }
    }
}

/// Walks a struct's fields looking for `segment`.
///
/// With `segment == None` the struct itself was selected as the key: no field is serialized, the
/// first field's name is remembered for the error's suggestion, and `end` fails.
struct StructWalker<'a> {
    walker: Walker<'a>,
    segment: Option<&'a str>,
    found: Option<String>,
    first_field: Option<&'static str>,
}

impl StructWalker<'_> {
    #[inline]
    fn field<V: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &V,
    ) -> Result<(), WalkError> {
        match self.segment {
            // First match wins; later fields are not looked at.
            Some(segment) if self.found.is_none() && name == segment => {
                self.found = Some(value.serialize(self.walker.child())?);
            }
            Some(_) => {}
            None => {
                self.first_field.get_or_insert(name);
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<String, WalkError> {
        match (self.segment, self.found) {
            (_, Some(key)) => Ok(key),
            (Some(_), None) => Err(WalkError(Kind::Missing {
                depth: self.walker.depth,
                in_map: false,
            })),
            (None, None) => Err(WalkError(Kind::NotAKey {
                found: "a struct",
                hint: self.first_field.map_or(Hint::Nested, Hint::Field),
            })),
        }
    }
}

impl ser::SerializeStruct for StructWalker<'_> {
    type Ok = String;
    type Error = WalkError;

    fn serialize_field<V: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &V,
    ) -> Result<(), WalkError> {
        self.field(key, value)
    }

    fn end(self) -> Result<String, WalkError> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for StructWalker<'_> {
    type Ok = String;
    type Error = WalkError;

    fn serialize_field<V: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &V,
    ) -> Result<(), WalkError> {
        self.field(key, value)
    }

    fn end(self) -> Result<String, WalkError> {
        self.finish()
    }
}

/// Walks a map's entries looking for the key whose text is `segment`.
struct MapWalker<'a> {
    walker: Walker<'a>,
    segment: &'a str,
    /// The key just serialized matched; its value is the one to walk into.
    matched: bool,
    found: Option<String>,
}

impl MapWalker<'_> {
    #[inline]
    fn key_matches<K: Serialize + ?Sized>(&self, key: &K) -> Result<bool, WalkError> {
        if self.found.is_some() {
            return Ok(false);
        }
        key.serialize(KeyMatcher {
            target: self.segment,
            depth: self.walker.depth,
        })
    }

    #[inline]
    fn value<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<(), WalkError> {
        self.found = Some(value.serialize(self.walker.child())?);
        Ok(())
    }
}

impl ser::SerializeMap for MapWalker<'_> {
    type Ok = String;
    type Error = WalkError;

    fn serialize_key<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<(), WalkError> {
        self.matched = self.key_matches(key)?;
        Ok(())
    }

    fn serialize_value<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<(), WalkError> {
        if std::mem::take(&mut self.matched) {
            self.value(value)?;
        }
        Ok(())
    }

    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), WalkError> {
        if self.key_matches(key)? {
            self.value(value)?;
        }
        Ok(())
    }

    fn end(self) -> Result<String, WalkError> {
        self.found.ok_or(WalkError(Kind::Missing {
            depth: self.walker.depth,
            in_map: true,
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Map keys: compared with the path segment by their text, without allocating.

/// Serializer answering whether a map key's text equals `target`.
struct KeyMatcher<'a> {
    target: &'a str,
    /// Depth of the map, for the error on unsupported key kinds.
    depth: usize,
}

impl KeyMatcher<'_> {
    #[inline]
    fn display_eq(&self, value: &(impl Display + ?Sized)) -> bool {
        let mut cmp = PrefixEq {
            rest: self.target.as_bytes(),
        };
        write!(cmp, "{value}").is_ok() && cmp.rest.is_empty()
    }

    fn unsupported(&self, found: &'static str) -> WalkError {
        WalkError(Kind::UnsupportedMapKey {
            depth: self.depth,
            found,
        })
    }
}

/// A `fmt::Write` that checks the written text is a prefix of `rest`, consuming it; it fails as
/// soon as the text diverges.
struct PrefixEq<'a> {
    rest: &'a [u8],
}

impl fmt::Write for PrefixEq<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.rest.strip_prefix(s.as_bytes()) {
            Some(rest) => {
                self.rest = rest;
                Ok(())
            }
            None => Err(fmt::Error),
        }
    }
}

impl ser::Serializer for KeyMatcher<'_> {
    type Ok = bool;
    type Error = WalkError;
    type SerializeSeq = Impossible<bool, WalkError>;
    type SerializeTuple = Impossible<bool, WalkError>;
    type SerializeTupleStruct = Impossible<bool, WalkError>;
    type SerializeTupleVariant = Impossible<bool, WalkError>;
    type SerializeMap = Impossible<bool, WalkError>;
    type SerializeStruct = Impossible<bool, WalkError>;
    type SerializeStructVariant = Impossible<bool, WalkError>;

    fn serialize_bool(self, v: bool) -> Result<bool, WalkError> {
        Ok(self.target == if v { "true" } else { "false" })
    }
    fn serialize_i8(self, v: i8) -> Result<bool, WalkError> {
        Ok(self.display_eq(&v))
    }
    fn serialize_i16(self, v: i16) -> Result<bool, WalkError> {
        Ok(self.display_eq(&v))
    }
    fn serialize_i32(self, v: i32) -> Result<bool, WalkError> {
        Ok(self.display_eq(&v))
    }
    fn serialize_i64(self, v: i64) -> Result<bool, WalkError> {
        Ok(self.display_eq(&v))
    }
    fn serialize_i128(self, v: i128) -> Result<bool, WalkError> {
        Ok(self.display_eq(&v))
    }
    fn serialize_u8(self, v: u8) -> Result<bool, WalkError> {
        Ok(self.display_eq(&v))
    }
    fn serialize_u16(self, v: u16) -> Result<bool, WalkError> {
        Ok(self.display_eq(&v))
    }
    fn serialize_u32(self, v: u32) -> Result<bool, WalkError> {
        Ok(self.display_eq(&v))
    }
    fn serialize_u64(self, v: u64) -> Result<bool, WalkError> {
        Ok(self.display_eq(&v))
    }
    fn serialize_u128(self, v: u128) -> Result<bool, WalkError> {
        Ok(self.display_eq(&v))
    }
    fn serialize_f32(self, v: f32) -> Result<bool, WalkError> {
        Ok(self.display_eq(&v))
    }
    fn serialize_f64(self, v: f64) -> Result<bool, WalkError> {
        Ok(self.display_eq(&v))
    }
    fn serialize_char(self, v: char) -> Result<bool, WalkError> {
        Ok(self.target == v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<bool, WalkError> {
        Ok(self.target == v)
    }
    fn collect_str<D: Display + ?Sized>(self, value: &D) -> Result<bool, WalkError> {
        Ok(self.display_eq(value))
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<bool, WalkError> {
        Err(self.unsupported("bytes"))
    }
    fn serialize_none(self) -> Result<bool, WalkError> {
        // `None` has no text, so no segment names it.
        Ok(false)
    }
    fn serialize_some<V: Serialize + ?Sized>(self, value: &V) -> Result<bool, WalkError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<bool, WalkError> {
        Ok(false)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<bool, WalkError> {
        Ok(false)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        variant: &'static str,
    ) -> Result<bool, WalkError> {
        Ok(self.target == variant)
    }
    fn serialize_newtype_struct<V: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &V,
    ) -> Result<bool, WalkError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<V: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _variant_index: u32,
        _variant: &'static str,
        _value: &V,
    ) -> Result<bool, WalkError> {
        Err(self.unsupported("enum variants with data"))
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, WalkError> {
        Err(self.unsupported("sequences"))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, WalkError> {
        Err(self.unsupported("tuples"))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, WalkError> {
        Err(self.unsupported("tuple structs"))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, WalkError> {
        Err(self.unsupported("enum variants with data"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, WalkError> {
        Err(self.unsupported("maps"))
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, WalkError> {
        Err(self.unsupported("structs"))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, WalkError> {
        Err(self.unsupported("enum variants with fields"))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::{BTreeMap, HashMap};

    use serde::{Serialize, Serializer};

    use super::*;

    fn key<T: Serialize>(path: &str, event: &T) -> StateResult<String> {
        FieldKeyExtractor::new(path).try_extract_key(event)
    }

    fn err_msg<T: Serialize>(path: &str, event: &T) -> String {
        match key(path, event) {
            Err(StateError::KeyExtraction(msg)) => msg,
            other => panic!("expected a KeyExtraction error for '{path}', got {other:?}"),
        }
    }

    #[derive(Serialize)]
    struct Address {
        city: String,
        zip: u32,
    }

    #[derive(Serialize)]
    struct Profile {
        address: Address,
        tier: Tier,
    }

    #[derive(Serialize)]
    struct User {
        id: u64,
        email: Option<String>,
        profile: Profile,
    }

    #[derive(Serialize)]
    #[allow(dead_code)]
    enum Tier {
        Free,
        #[serde(rename = "gold")]
        Gold,
    }

    #[derive(Serialize)]
    struct UserId(String);

    #[derive(Serialize)]
    struct Event {
        name: String,
        count: i32,
        user: User,
        owner: UserId,
        nick: Option<String>,
        tier: Tier,
        tags: Vec<String>,
        attrs: HashMap<String, String>,
    }

    fn event() -> Event {
        Event {
            name: "click".into(),
            count: -3,
            user: User {
                id: 42,
                email: None,
                profile: Profile {
                    address: Address {
                        city: "Oslo".into(),
                        zip: 150,
                    },
                    tier: Tier::Gold,
                },
            },
            owner: UserId("u-9".into()),
            nick: Some("ann".into()),
            tier: Tier::Free,
            tags: vec!["a".into()],
            attrs: HashMap::from([
                ("region".to_string(), "eu".to_string()),
                ("team".to_string(), "blue".to_string()),
            ]),
        }
    }

    #[test]
    fn top_level_string_field() {
        assert_eq!(key("name", &event()).unwrap(), "click");
    }

    #[test]
    fn integer_fields() {
        assert_eq!(key("count", &event()).unwrap(), "-3");
        assert_eq!(key("user.id", &event()).unwrap(), "42");

        #[derive(Serialize)]
        struct Wide {
            big: u128,
            small: i128,
            byte: u8,
        }
        let wide = Wide {
            big: u128::MAX,
            small: i128::MIN,
            byte: 7,
        };
        assert_eq!(key("big", &wide).unwrap(), u128::MAX.to_string());
        assert_eq!(key("small", &wide).unwrap(), i128::MIN.to_string());
        assert_eq!(key("byte", &wide).unwrap(), "7");
    }

    #[test]
    fn float_bool_and_char_fields() {
        #[derive(Serialize)]
        struct Scalars {
            ratio: f64,
            flag: bool,
            letter: char,
        }
        let s = Scalars {
            ratio: 1.5,
            flag: true,
            letter: 'ß',
        };
        assert_eq!(key("ratio", &s).unwrap(), "1.5");
        assert_eq!(key("flag", &s).unwrap(), "true");
        assert_eq!(key("letter", &s).unwrap(), "ß");
    }

    #[test]
    fn nested_path() {
        assert_eq!(key("user.profile.address.city", &event()).unwrap(), "Oslo");
        assert_eq!(key("user.profile.address.zip", &event()).unwrap(), "150");
    }

    #[test]
    fn a_b_c_path() {
        #[derive(Serialize)]
        struct C {
            c: &'static str,
        }
        #[derive(Serialize)]
        struct B {
            b: C,
        }
        #[derive(Serialize)]
        struct A {
            x: u8,
            a: B,
        }
        let ev = A {
            x: 1,
            a: B { b: C { c: "deep" } },
        };
        assert_eq!(key("a.b.c", &ev).unwrap(), "deep");
    }

    #[test]
    fn option_some_is_transparent() {
        assert_eq!(key("nick", &event()).unwrap(), "ann");

        #[derive(Serialize)]
        struct Outer {
            inner: Option<Address>,
        }
        let ev = Outer {
            inner: Some(Address {
                city: "Rome".into(),
                zip: 1,
            }),
        };
        assert_eq!(key("inner.city", &ev).unwrap(), "Rome");
    }

    #[test]
    fn option_none_is_an_error() {
        let msg = err_msg("user.email", &event());
        assert!(msg.contains("'user.email'"), "{msg}");
        assert!(msg.contains("is None"), "{msg}");
        assert!(msg.contains("CustomKeyExtractor"), "{msg}");

        #[derive(Serialize)]
        struct Outer {
            inner: Option<Address>,
        }
        let msg = err_msg("inner.city", &Outer { inner: None });
        assert!(msg.contains("'inner' is None"), "{msg}");
    }

    #[test]
    fn unit_enum_variant_is_its_name() {
        assert_eq!(key("tier", &event()).unwrap(), "Free");
        assert_eq!(key("user.profile.tier", &event()).unwrap(), "gold");
    }

    #[test]
    fn newtype_struct_is_transparent() {
        assert_eq!(key("owner", &event()).unwrap(), "u-9");

        #[derive(Serialize)]
        struct Wrapped(Address);
        #[derive(Serialize)]
        struct Outer {
            home: Wrapped,
        }
        let ev = Outer {
            home: Wrapped(Address {
                city: "Lima".into(),
                zip: 2,
            }),
        };
        assert_eq!(key("home.city", &ev).unwrap(), "Lima");
    }

    #[test]
    fn newtype_event_is_transparent() {
        #[derive(Serialize)]
        struct Envelope(Event);
        assert_eq!(key("user.id", &Envelope(event())).unwrap(), "42");
    }

    #[test]
    fn missing_field() {
        let msg = err_msg("nmae", &event());
        assert!(
            msg.starts_with("field 'nmae' not found in event of type"),
            "{msg}"
        );
        assert!(msg.contains(std::any::type_name::<Event>()), "{msg}");
        assert!(msg.contains("CustomKeyExtractor"), "{msg}");

        let msg = err_msg("user.idd", &event());
        assert!(msg.contains("'user' has no field 'idd'"), "{msg}");
    }

    #[test]
    fn path_into_a_non_struct() {
        let msg = err_msg("name.first", &event());
        assert!(msg.contains("'name.first'"), "{msg}");
        assert!(
            msg.contains("'name' is a string, not a struct or map"),
            "{msg}"
        );

        let msg = err_msg("tags.0", &event());
        assert!(msg.contains("'tags' is a sequence"), "{msg}");

        let msg = err_msg("x", &"just a string");
        assert!(msg.contains("the event itself is a string"), "{msg}");
    }

    #[test]
    fn struct_at_final_segment() {
        let msg = err_msg("user", &event());
        assert!(msg.contains("field 'user' of event type"), "{msg}");
        assert!(msg.contains("is a struct, not a key"), "{msg}");
        assert!(msg.contains("name a nested field like 'user.id'"), "{msg}");
    }

    #[test]
    fn other_non_keys_at_final_segment() {
        let msg = err_msg("tags", &event());
        assert!(msg.contains("is a sequence, not a key"), "{msg}");
        let msg = err_msg("attrs", &event());
        assert!(msg.contains("is a map, not a key"), "{msg}");
        assert!(msg.contains("'attrs.<key>'"), "{msg}");

        #[derive(Serialize)]
        struct Odd {
            unit: (),
            bytes: serde_bytes_like::Bytes,
        }
        let ev = Odd {
            unit: (),
            bytes: serde_bytes_like::Bytes(b"ab"),
        };
        assert!(err_msg("unit", &ev).contains("unit value"));
        assert!(err_msg("bytes", &ev).contains("is bytes, not a key"));
    }

    /// Stand-in for `serde_bytes` (not a dependency): serializes as bytes.
    mod serde_bytes_like {
        pub struct Bytes(pub &'static [u8]);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
    }

    #[test]
    fn map_field_with_dotted_path() {
        assert_eq!(key("attrs.region", &event()).unwrap(), "eu");
        assert_eq!(key("attrs.team", &event()).unwrap(), "blue");

        let msg = err_msg("attrs.zone", &event());
        assert!(
            msg.contains("'attrs' is a map without the key 'zone'"),
            "{msg}"
        );
    }

    #[test]
    fn map_event_and_non_string_keys() {
        let top: BTreeMap<&str, u32> = BTreeMap::from([("a", 1), ("b", 2)]);
        assert_eq!(key("b", &top).unwrap(), "2");

        let by_number: BTreeMap<u32, &str> = BTreeMap::from([(7, "seven"), (70, "seventy")]);
        assert_eq!(key("7", &by_number).unwrap(), "seven");
        assert_eq!(key("70", &by_number).unwrap(), "seventy");
        assert!(key("700", &by_number).is_err());

        let by_tuple: BTreeMap<(u8, u8), &str> = BTreeMap::from([((1, 2), "x")]);
        let msg = err_msg("k", &by_tuple);
        assert!(msg.contains("map whose keys are tuples"), "{msg}");
    }

    /// A field whose serialization must never happen.
    struct Tripwire<'a>(&'a Cell<u32>);

    impl Serialize for Tripwire<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.set(self.0.get() + 1);
            s.serialize_str("tripped")
        }
    }

    #[test]
    fn first_match_wins_and_other_fields_are_not_serialized() {
        // A hand-written Serialize that emits `id` twice, with tripwires around it.
        struct Dup<'a> {
            hits: &'a Cell<u32>,
        }
        impl Serialize for Dup<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct("Dup", 4)?;
                st.serialize_field("before", &Tripwire(self.hits))?;
                st.serialize_field("id", "first")?;
                st.serialize_field("id", &Tripwire(self.hits))?;
                st.serialize_field("after", &Tripwire(self.hits))?;
                st.end()
            }
        }
        let hits = Cell::new(0);
        assert_eq!(key("id", &Dup { hits: &hits }).unwrap(), "first");
        assert_eq!(hits.get(), 0, "skipped fields were serialized");

        // Same for maps: values of non-matching and later entries are not serialized.
        struct DupMap<'a> {
            hits: &'a Cell<u32>,
        }
        impl Serialize for DupMap<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("other", &Tripwire(self.hits))?;
                m.serialize_key("id")?;
                m.serialize_value("first")?;
                m.serialize_entry("id", &Tripwire(self.hits))?;
                m.end()
            }
        }
        assert_eq!(key("id", &DupMap { hits: &hits }).unwrap(), "first");
        assert_eq!(hits.get(), 0, "skipped map values were serialized");
    }

    #[test]
    fn enums_with_fields() {
        #[derive(Serialize)]
        #[allow(dead_code)]
        enum Action {
            Click { user: String, x: i32 },
            View(Address),
        }
        assert_eq!(
            key(
                "user",
                &Action::Click {
                    user: "bo".into(),
                    x: 1
                }
            )
            .unwrap(),
            "bo"
        );
        let view = Action::View(Address {
            city: "Kyiv".into(),
            zip: 3,
        });
        assert_eq!(key("city", &view).unwrap(), "Kyiv");

        #[derive(Serialize)]
        struct Holder {
            action: Action,
        }
        let msg = err_msg("action", &Holder { action: view });
        assert!(msg.contains("an enum variant with data"), "{msg}");

        #[derive(Serialize)]
        #[serde(tag = "kind")]
        #[allow(dead_code)]
        enum Tagged {
            Login { user: String },
        }
        let ev = Tagged::Login { user: "cy".into() };
        assert_eq!(key("kind", &ev).unwrap(), "Login");
        assert_eq!(key("user", &ev).unwrap(), "cy");
    }

    #[test]
    fn serde_attributes_are_respected() {
        #[derive(Serialize)]
        struct Inner {
            region: String,
        }
        #[derive(Serialize)]
        struct Renamed {
            #[serde(rename = "userId")]
            user_id: String,
            #[serde(flatten)]
            inner: Inner,
        }
        let ev = Renamed {
            user_id: "u1".into(),
            inner: Inner {
                region: "eu".into(),
            },
        };
        assert_eq!(key("userId", &ev).unwrap(), "u1");
        assert!(key("user_id", &ev).is_err());
        assert_eq!(key("region", &ev).unwrap(), "eu");
    }

    #[test]
    fn empty_paths_are_errors() {
        let msg = err_msg("", &event());
        assert!(msg.contains("empty field name"), "{msg}");
        for path in ["user..id", ".name", "name."] {
            let msg = err_msg(path, &event());
            assert!(msg.contains("empty segment"), "{msg}");
        }
    }

    #[test]
    fn custom_serialize_errors_are_reported() {
        struct Broken;
        impl Serialize for Broken {
            fn serialize<S: Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("clock went backwards"))
            }
        }
        let msg = err_msg("x", &Broken);
        assert!(msg.contains("clock went backwards"), "{msg}");
    }

    #[test]
    fn extract_key_falls_back_to_empty() {
        let by_name = FieldKeyExtractor::new("name");
        assert_eq!(by_name.field_name(), "name");
        assert_eq!(by_name.extract_key(&event()), "click");
        assert_eq!(FieldKeyExtractor::new("nope").extract_key(&event()), "");
    }
}
