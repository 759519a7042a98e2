//! Test helpers: the golden captures in `operator/tests/data/celery-wire` and an order-preserving
//! JSON reader (the workspace's `serde_json::Value` sorts keys).

use std::fmt;
use std::fs;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

/// Where the captures live (README.txt there says how they were taken).
pub(crate) const WIRE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/celery-wire");

/// One capture: the exact list element, its decoded body and its Redis key.
pub(crate) struct Capture {
    pub raw: String,
    pub body: String,
    pub key: Vec<u8>,
}

impl Capture {
    /// Loads the capture whose file names start with `prefix` (e.g. `01_`).
    pub(crate) fn load(prefix: &str) -> Self {
        let dir = PathBuf::from(WIRE_DIR);
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let stem = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find_map(|name| {
                name.strip_suffix(".raw.json")
                    .filter(|_| name.starts_with(prefix))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no capture {prefix}* in {}", dir.display()));
        let read = |ext: &str| {
            let path = dir.join(format!("{stem}{ext}"));
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        Self {
            raw: read(".raw.json"),
            body: read(".body.json"),
            key: parse_python_str_repr(read(".key.txt").trim()),
        }
    }
}

/// Bytes of a Python `bytes`/`str` repr such as `b'myqueue\x06\x163'` or `'celery'`.
pub(crate) fn parse_python_str_repr(repr: &str) -> Vec<u8> {
    let inner = repr.strip_prefix('b').unwrap_or(repr);
    let quote = inner.chars().next().expect("quoted repr");
    assert!(quote == '\'' || quote == '"', "not a repr: {repr}");
    let inner = inner
        .strip_prefix(quote)
        .and_then(|s| s.strip_suffix(quote))
        .expect("closing quote");
    let mut out = Vec::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next().expect("escape") {
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&hex, 16).expect("hex escape"));
            }
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            other => out.push(u8::try_from(other).expect("ASCII escape")),
        }
    }
    out
}

/// JSON with object keys in document order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OJson {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<OJson>),
    Obj(Vec<(String, OJson)>),
}

impl OJson {
    pub(crate) fn parse(json: &str) -> Self {
        serde_json::from_str(json).expect("valid JSON")
    }

    /// The value at an object path.
    pub(crate) fn get(&self, path: &[&str]) -> Option<&OJson> {
        path.iter().try_fold(self, |node, key| match node {
            OJson::Obj(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        })
    }

    /// Keys, in order, of the object at `path`.
    pub(crate) fn keys(&self, path: &[&str]) -> Vec<String> {
        match self.get(path) {
            Some(OJson::Obj(pairs)) => pairs.iter().map(|(k, _)| k.clone()).collect(),
            other => panic!("{path:?} is not an object: {other:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for OJson {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<OJson, E> {
                Ok(OJson::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<OJson, E> {
                Ok(OJson::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<OJson, E> {
                Ok(OJson::Num(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<OJson, E> {
                Ok(OJson::Num(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<OJson, E> {
                serde_json::Number::from_f64(v)
                    .map(OJson::Num)
                    .ok_or_else(|| E::custom("non-finite"))
            }
            fn visit_str<E>(self, v: &str) -> Result<OJson, E> {
                Ok(OJson::Str(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OJson, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OJson::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OJson, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(OJson::Obj(pairs))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[test]
fn python_repr_keys_parse() {
    assert_eq!(
        parse_python_str_repr(r"b'myqueue\x06\x163'"),
        b"myqueue\x06\x163"
    );
    assert_eq!(parse_python_str_repr("'celery'"), b"celery");
    assert_eq!(parse_python_str_repr("b'celery'"), b"celery");
    assert_eq!(parse_python_str_repr(r"'a\\b\'c'"), b"a\\b'c");
}

#[test]
fn ordered_json_keeps_key_order() {
    let j = OJson::parse(r#"{"z": 1, "a": {"y": [], "b": null}}"#);
    assert_eq!(j.keys(&[]), ["z", "a"]);
    assert_eq!(j.keys(&["a"]), ["y", "b"]);
    assert_eq!(j.get(&["a", "b"]), Some(&OJson::Null));
}
