//! The configuration reference in docs/configuration.md and the README is checked against
//! the real config structs: every documented key exists, and every existing key is
//! documented. The keys are read from the structs themselves, by a serde deserializer that
//! walks every field instead of parsing a file.

#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use llm_bridge::AppConfig;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Walks a type's fields, recording each key path (`providers.<name>.models.<model>.timeout`).
#[derive(Clone)]
struct Walker {
    path: Vec<String>,
    keys: Rc<RefCell<BTreeSet<String>>>,
    /// The placeholder for the keys of maps under this path.
    depth: usize,
}

#[derive(Debug)]
struct WalkError(String);

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WalkError {}

impl de::Error for WalkError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        WalkError(msg.to_string())
    }
}

/// Names for map keys, by the map's own key path.
fn placeholder(path: &[String]) -> String {
    match path.last().map(String::as_str) {
        Some("providers") => "<name>".into(),
        Some("models") => "<model>".into(),
        Some("routes") => "<alias>".into(),
        _ => "<key>".into(),
    }
}

impl Walker {
    fn child(&self, key: &str) -> Walker {
        let mut path = self.path.clone();
        path.push(key.to_owned());
        self.keys.borrow_mut().insert(path.join("."));
        Walker {
            path,
            keys: self.keys.clone(),
            depth: self.depth + 1,
        }
    }
}

macro_rules! scalar {
    ($($method:ident => $visit:ident($value:expr)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> { v.$visit($value) })*
    };
}

impl<'de> Deserializer<'de> for Walker {
    type Error = WalkError;

    // Anything self-describing is given a number-like string: it satisfies strings, the
    // untagged forms (a key list, a target name) and numbers written as text.
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_str("1")
    }

    scalar! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i64(0), deserialize_i16 => visit_i64(0), deserialize_i32 => visit_i64(0),
        deserialize_i64 => visit_i64(0), deserialize_u8 => visit_u64(1), deserialize_u16 => visit_u64(1),
        deserialize_u32 => visit_u64(1), deserialize_u64 => visit_u64(1), deserialize_f32 => visit_f64(1.0),
        deserialize_f64 => visit_f64(1.0), deserialize_char => visit_char('x'), deserialize_str => visit_str("1"),
        deserialize_string => visit_str("1"), deserialize_bytes => visit_bytes(b"1"),
        deserialize_byte_buf => visit_bytes(b"1"), deserialize_identifier => visit_str("1"),
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_unit()
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, WalkError> {
        v.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, WalkError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_seq(Empty)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, WalkError> {
        v.visit_seq(Empty)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, WalkError> {
        v.visit_seq(Empty)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        // One entry, under a placeholder key, so that what maps hold is walked too.
        let key = placeholder(&self.path);
        v.visit_map(Fields {
            walker: self,
            names: vec![Box::leak(key.into_boxed_str())],
            next: 0,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, WalkError> {
        v.visit_map(Fields {
            walker: self,
            names: fields.to_vec(),
            next: 0,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, WalkError> {
        use serde::de::IntoDeserializer;
        let first: de::value::StrDeserializer<'_, WalkError> = variants[0].into_deserializer();
        v.visit_enum(first)
    }
}

struct Empty;

impl<'de> SeqAccess<'de> for Empty {
    type Error = WalkError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        _: T,
    ) -> Result<Option<T::Value>, WalkError> {
        Ok(None)
    }
}

struct Fields {
    walker: Walker,
    names: Vec<&'static str>,
    next: usize,
}

impl<'de> MapAccess<'de> for Fields {
    type Error = WalkError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, WalkError> {
        use serde::de::IntoDeserializer;
        let Some(name) = self.names.get(self.next) else {
            return Ok(None);
        };
        let d: de::value::StrDeserializer<'_, WalkError> = (*name).into_deserializer();
        seed.deserialize(d).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, WalkError> {
        let name = self.names[self.next];
        self.next += 1;
        seed.deserialize(self.walker.child(name))
    }
}

/// Every key path the config accepts.
fn config_keys() -> BTreeSet<String> {
    let keys = Rc::new(RefCell::new(BTreeSet::new()));
    let walker = Walker {
        path: Vec::new(),
        keys: keys.clone(),
        depth: 0,
    };
    AppConfig::deserialize(walker).unwrap_or_else(|e| panic!("walking the config structs: {e}"));
    let all: BTreeSet<String> = keys
        .borrow()
        .iter()
        .filter(|k| !k.ends_with('>'))
        .cloned()
        .collect();
    // Sections (`server`, `providers.<name>.models`) hold keys; the keys are what is set.
    all.iter()
        .filter(|k| !all.iter().any(|other| other.starts_with(&format!("{k}."))))
        .cloned()
        .collect()
}

/// The key paths in the first column of the reference tables of a Markdown file: rows that
/// start with `` | `a.b.c` ``.
fn documented_keys(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_owned()))
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._<>".contains(c))
        })
        .collect()
}

fn read(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_walker_finds_the_keys_of_the_config() {
    let keys = config_keys();
    for k in [
        "server.port",
        "providers.<name>.models.<model>.param_config.rename_params",
        "routes.<alias>.strategy",
        "logging.output.file.max_size",
    ] {
        assert!(keys.contains(k), "{k} missing from {keys:#?}");
    }
    assert!(!keys.contains("server"), "sections are not keys");
}

#[test]
fn every_config_key_is_documented_and_every_documented_key_exists() {
    let keys = config_keys();
    for file in ["docs/configuration.md", "README.md"] {
        let documented = documented_keys(&read(file));
        let unknown: Vec<_> = documented.difference(&keys).collect();
        assert!(
            unknown.is_empty(),
            "{file} documents keys that do not exist: {unknown:?}"
        );
        let missing: Vec<_> = keys.difference(&documented).collect();
        assert!(missing.is_empty(), "{file} does not document: {missing:?}");
    }
}
