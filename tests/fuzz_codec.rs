//! Fuzzing the codec on the stable toolchain: arbitrary bytes decoded as many types never
//! panic (an `Err` or a value that encodes and decodes to itself), arbitrary values round-trip,
//! trailing bytes are refused, and through `StateAccess` (with the default `Postcard` and with a
//! second `Codec`) undecodable stored bytes are a `Serialization` error naming the key and are
//! never overwritten.
//!
//! The default case count keeps CI fast; the long run (see `docs/reliability.md`):
//! `RS2_FUZZ_CASES=100000 cargo test --release -p rs2-suite -p rs2-operators --lib --test fuzz_layouts --test fuzz_codec`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use proptest::prelude::*;
use rs2::state::{Codec, Postcard, StateAccess, StateError, StateStorage};
use rs2_suite::MapStore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

fn cases() -> u32 {
    std::env::var("RS2_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

/// A user's state type with the shapes serde has: enums, options, nested collections, floats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Tuple(u8, i64),
    Named { name: String, tags: Vec<String> },
    Nested(Option<Box<Shape>>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserState {
    count: u64,
    ratio: f32,
    last: Option<char>,
    shapes: Vec<Shape>,
    totals: BTreeMap<String, i32>,
    bytes: Vec<u8>,
    flag: bool,
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    let leaf = prop_oneof![
        Just(Shape::Unit),
        (any::<u8>(), any::<i64>()).prop_map(|(a, b)| Shape::Tuple(a, b)),
        (".{0,6}", proptest::collection::vec(".{0,4}", 0..3))
            .prop_map(|(name, tags)| Shape::Named { name, tags }),
    ];
    leaf.prop_recursive(3, 8, 1, |inner| {
        proptest::option::of(inner).prop_map(|s| Shape::Nested(s.map(Box::new)))
    })
}

fn arb_user_state() -> impl Strategy<Value = UserState> {
    (
        any::<u64>(),
        // Not NaN, so that `==` can compare round trips.
        -1e30f32..1e30,
        any::<Option<char>>(),
        proptest::collection::vec(arb_shape(), 0..4),
        proptest::collection::btree_map(".{0,4}", any::<i32>(), 0..4),
        proptest::collection::vec(any::<u8>(), 0..16),
        any::<bool>(),
    )
        .prop_map(
            |(count, ratio, last, shapes, totals, bytes, flag)| UserState {
                count,
                ratio,
                last,
                shapes,
                totals,
                bytes,
                flag,
            },
        )
}

/// A second codec, as a user would plug one in for readable values.
struct Json;

impl Codec for Json {
    const NAME: &'static str = "json";

    fn encode<S: Serialize + ?Sized>(value: &S, buf: &mut Vec<u8>) -> Result<(), String> {
        serde_json::to_writer(buf, value).map_err(|e| e.to_string())
    }

    fn decode<S: DeserializeOwned>(bytes: &[u8]) -> Result<S, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// `bytes` decoded as `T` through `C`: an `Err`, or a value whose encoding decodes to it again.
fn decodes_or_errs<C: Codec, T>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    if let Ok(value) = C::decode::<T>(bytes) {
        let mut again = Vec::new();
        C::encode(&value, &mut again).map_err(TestCaseError::fail)?;
        let back: T = C::decode(&again).map_err(TestCaseError::fail)?;
        prop_assert_eq!(back, value, "{} of {:?}", C::NAME, bytes);
    }
    Ok(())
}

/// Every type the tests decode arbitrary bytes as.
fn decode_as_everything<C: Codec>(bytes: &[u8]) -> Result<(), TestCaseError> {
    decodes_or_errs::<C, u64>(bytes)?;
    decodes_or_errs::<C, i64>(bytes)?;
    decodes_or_errs::<C, u128>(bytes)?;
    decodes_or_errs::<C, bool>(bytes)?;
    decodes_or_errs::<C, char>(bytes)?;
    decodes_or_errs::<C, String>(bytes)?;
    decodes_or_errs::<C, (String, u64)>(bytes)?;
    decodes_or_errs::<C, Vec<u8>>(bytes)?;
    decodes_or_errs::<C, Vec<String>>(bytes)?;
    decodes_or_errs::<C, Option<u32>>(bytes)?;
    decodes_or_errs::<C, BTreeMap<String, u64>>(bytes)?;
    decodes_or_errs::<C, [u16; 3]>(bytes)?;
    decodes_or_errs::<C, Shape>(bytes)?;
    // Not `Vec<()>`: postcard decodes a sequence of zero-width elements one by one for as
    // many as its length prefix says; an optimised build skips the empty loop (2^26 in 60 ns),
    // a debug build takes ages over garbage claiming 2^60 (see `docs/reliability.md`).
    // Floats: NaN is not equal to itself; only the absence of a panic is checked.
    let _ = C::decode::<f64>(bytes);
    let _ = C::decode::<UserState>(bytes);
    let _ = C::decode::<Vec<UserState>>(bytes);
    Ok(())
}

/// Bytes aimed at the decoder's length prefixes: a varint (often huge) then anything.
fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..96),
        (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..32)).prop_map(|(n, rest)| {
            let mut out = Vec::new();
            Postcard::encode(&n, &mut out).expect("a u64 encodes");
            out.extend(rest);
            out
        }),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// Through `StateAccess` with codec `C`: arbitrary stored bytes read as `UserState` are a value
/// or a `Serialization` error naming the key; after a failed `get` a write is refused and the
/// bytes stay as they were.
async fn stored_garbage_is_reported_and_kept<C: Codec>(
    bytes: Vec<u8>,
) -> Result<(), TestCaseError> {
    let store = Arc::new(MapStore::default());
    store.set("acct-7", &bytes).await.expect("set");
    let access = StateAccess::new(store.clone(), "acct-7".into()).with_codec::<C>();
    match access.try_get::<UserState>().await {
        Ok(value) => prop_assert!(value.is_some()),
        Err(StateError::Serialization(msg)) => {
            prop_assert!(msg.contains("acct-7"), "names the key: {}", msg)
        }
        Err(other) => prop_assert!(false, "not a serialization error: {}", other),
    }
    if access.get::<UserState>().await.is_none() {
        let fresh = UserState {
            count: 0,
            ratio: 0.0,
            last: None,
            shapes: vec![],
            totals: BTreeMap::new(),
            bytes: vec![],
            flag: false,
        };
        let refused = access.set(&fresh).await;
        prop_assert!(refused.is_err(), "a write after a failed read is refused");
        prop_assert_eq!(store.get("acct-7").await.expect("get"), Some(bytes));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Arbitrary bytes decoded as many types by `Postcard` and by a JSON codec: never a panic,
    /// never an allocation the bytes do not justify (a huge length prefix is an `Err`); a value
    /// that decodes encodes and decodes to itself.
    #[test]
    fn arbitrary_bytes_decode_or_err(bytes in arb_bytes()) {
        decode_as_everything::<Postcard>(&bytes)?;
        decode_as_everything::<Json>(&bytes)?;
    }

    /// Arbitrary values round-trip through both codecs; `Postcard` refuses trailing bytes
    /// (state of another type is an error, not a misread prefix) and appends to the buffer it
    /// is given without touching what is there.
    #[test]
    fn arbitrary_values_round_trip(
        value in arb_user_state(),
        prefix in proptest::collection::vec(any::<u8>(), 0..8),
        trailing in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        let mut buf = prefix.clone();
        Postcard::encode(&value, &mut buf).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&buf[..prefix.len()], &prefix[..]);
        let encoded = buf[prefix.len()..].to_vec();
        prop_assert_eq!(Postcard::decode::<UserState>(&encoded).ok(), Some(value.clone()));
        let mut longer = encoded.clone();
        longer.extend(&trailing);
        prop_assert!(Postcard::decode::<UserState>(&longer).is_err());
        // A strict prefix of the encoding is an error too.
        prop_assert!(Postcard::decode::<UserState>(&encoded[..encoded.len() - 1]).is_err());

        let mut json = Vec::new();
        Json::encode(&value, &mut json).map_err(TestCaseError::fail)?;
        prop_assert_eq!(Json::decode::<UserState>(&json).ok(), Some(value));
    }

    /// Stored bytes nobody checked, read through `StateAccess` with each codec.
    #[test]
    fn state_access_reports_and_keeps_undecodable_bytes(bytes in arb_bytes()) {
        let rt = runtime();
        rt.block_on(stored_garbage_is_reported_and_kept::<Postcard>(bytes.clone()))?;
        rt.block_on(stored_garbage_is_reported_and_kept::<Json>(bytes))?;
    }
}

/// The round-trip property would hold for a codec that wrote nothing; this one does not.
#[test]
fn a_user_state_encodes_to_bytes_that_name_its_fields_in_json_only() {
    let value = UserState {
        count: 3,
        ratio: 0.5,
        last: Some('x'),
        shapes: vec![Shape::Named {
            name: "n".into(),
            tags: vec!["t".into()],
        }],
        totals: BTreeMap::from([("a".into(), -1)]),
        bytes: vec![1, 2],
        flag: true,
    };
    let (mut p, mut j) = (Vec::new(), Vec::new());
    Postcard::encode(&value, &mut p).unwrap();
    Json::encode(&value, &mut j).unwrap();
    assert!(!p.is_empty() && p.len() < j.len());
    assert!(String::from_utf8(j).unwrap().contains("\"count\":3"));
    assert_eq!(Postcard::decode::<UserState>(&p).unwrap(), value);
}
