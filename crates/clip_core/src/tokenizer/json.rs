//! The parts of a Hugging Face style `tokenizer.json` that [`super::ClipTokenizer`] reads, deserialised straight
//! into the shapes it needs. Strings are borrowed from the file's bytes wherever they hold no escape: loading
//! the CLIP vocabulary (49,408 tokens, 48,894 merges) through a generic JSON tree took 70-110 ms of a fresh
//! backend's first text call, most of it allocating and freeing strings.
use std::borrow::{Borrow, Cow};
use std::fmt;

use rustc_hash::FxHashMap;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct TokenizerJson<'a> {
    #[serde(borrow)]
    pub model: BpeJson<'a>,
    /// Read loosely, as a tree: entries without a content or an integer id are skipped. A short list.
    #[serde(default)]
    pub added_tokens: Option<serde_json::Value>,
}

#[derive(Deserialize)]
pub(super) struct BpeJson<'a> {
    #[serde(rename = "type", default, borrow)]
    pub kind: Option<JsonStr<'a>>,
    #[serde(default, borrow)]
    pub end_of_word_suffix: Option<JsonStr<'a>>,
    #[serde(borrow)]
    pub vocab: FxHashMap<JsonStr<'a>, i64>,
    #[serde(borrow)]
    pub merges: Vec<Merge<'a>>,
}

/// A JSON string, borrowed from the input when it holds no escape sequence.
#[derive(PartialEq, Eq, Hash)]
pub(super) struct JsonStr<'a>(pub Cow<'a, str>);

impl Borrow<str> for JsonStr<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = JsonStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// One entry of `model.merges`: `"a b"` (split later, so that a malformed entry is reported with its rank) or
/// `["a", "b"]`.
pub(super) enum Merge<'a> {
    Joined(JsonStr<'a>),
    Pair(JsonStr<'a>, JsonStr<'a>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Merge<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MergeVisitor;
        impl<'de> Visitor<'de> for MergeVisitor {
            type Value = Merge<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a merge: \"a b\" or [\"a\", \"b\"]")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Merge::Joined(JsonStr(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Merge::Joined(JsonStr(Cow::Owned(v.to_owned()))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let a = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let b = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(Merge::Pair(a, b))
            }
        }
        deserializer.deserialize_any(MergeVisitor)
    }
}
