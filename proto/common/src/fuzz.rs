//! What the parsers' property tests share (feature `fuzz`, for tests only): JSON values
//! of any shape, text made of the characters that break parsers, the corpus of
//! interesting inputs kept in the repository (`tests/corpus/<parser>/`, replayed by
//! every run), and how many cases each property runs (`SLIPWAY_FUZZ_CASES`, default
//! [`CASES`]: a few seconds in CI).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{Value, json};

/// Generated cases per property, unless `SLIPWAY_FUZZ_CASES` says otherwise.
pub const CASES: u32 = 500;

/// The proptest settings of every parser property.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("SLIPWAY_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig {
        cases,
        // Failures are kept by the test's own corpus (tests/corpus), not in files
        // next to each source file.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text that parsers trip over: control, bidi and non-BMP characters, quotes,
/// backslashes, braces, huge numbers, or any string at all.
pub fn nasty_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        any::<String>(),
        Just("\u{0}".to_owned()),
        Just("\u{202e}".to_owned()),
        Just("\u{1f600}".to_owned()),
        Just("\\u0000".to_owned()),
        Just("\\ud800".to_owned()),
        Just("\"".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("\r\n".to_owned()),
        Just("1e999999".to_owned()),
        Just("-99999999999999999999999".to_owned()),
        "[a-z_]{0,12}",
    ];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

/// Any JSON value, a few levels deep, with [`nasty_text`] in keys and strings.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        nasty_text().prop_map(Value::from),
        Just(json!("")),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(nasty_text(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object holding some of `fields` (each any value, or a plausible one from
/// `good`) and maybe an extra field.
pub fn object_with(fields: &'static [&'static str], good: Value) -> impl Strategy<Value = Value> {
    let picks = prop::collection::vec((prop::sample::select(fields), any::<bool>(), json_value()), 0..6);
    (picks, prop::option::of((nasty_text(), json_value()))).prop_map(move |(picks, extra)| {
        let mut object = serde_json::Map::new();
        for (field, plausible, value) in picks {
            let value = match good.get(field) {
                Some(good) if plausible => good.clone(),
                _ => value,
            };
            object.insert(field.to_owned(), value);
        }
        if let Some((key, value)) = extra {
            object.insert(key, value);
        }
        Value::Object(object)
    })
}

/// Bytes: random ones, or the text of a JSON value cut anywhere.
pub fn json_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<Vec<u8>>(),
        (json_value(), any::<prop::sample::Index>()).prop_map(|(value, cut)| {
            let text = value.to_string().into_bytes();
            let at = cut.index(text.len() + 1);
            text[..at].to_vec()
        }),
        json_value().prop_map(|v| v.to_string().into_bytes()),
    ]
}

/// `tests/corpus` in the repository.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
}

/// Every input of one parser's corpus (`tests/corpus/<parser>/*`), by file name,
/// sorted. Panics when there is none: a corpus that went missing must not pass.
pub fn corpus(parser: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir().join(parser);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_file())
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(entry.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "corpus {} is empty", dir.display());
    inputs
}
