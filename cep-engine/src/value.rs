//! The typed internal form of events: decoded once at the edge, then shared
//! (`Arc<Event>`) by every run that binds it.

use rule_lang::program::TypeId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A field value. `Missing` is an absent optional field (or an absent binding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum Value {
    #[default]
    Missing,
    Str(Arc<str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Epoch milliseconds.
    Time(i64),
}

impl Value {
    #[inline]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) | Value::Time(i) => Some(*i as f64),
            _ => None,
        }
    }

    #[inline]
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) | Value::Time(i) => Some(*i),
            _ => None,
        }
    }

    #[inline]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    #[inline]
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, Value::Missing)
    }

    /// The JSON form used in alerts.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Missing => serde_json::Value::Null,
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Bool(b) => (*b).into(),
            Value::Time(t) => serde_json::Value::String(crate::time::format_ms(*t)),
        }
    }
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub ty: TypeId,
    /// Event time, epoch milliseconds.
    pub ts: i64,
    pub id: Arc<str>,
    /// Declared fields by slot.
    pub fields: Box<[Value]>,
    /// Position in the engine's processing order (assigned on release).
    pub seq: u64,
}

impl Event {
    /// Reads a declared slot without cloning.
    #[inline]
    pub fn slot(&self, s: u16) -> &Value {
        static MISSING: Value = Value::Missing;
        self.fields.get(s as usize).unwrap_or(&MISSING)
    }
}

/// A partition key value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Key {
    /// Unkeyed (global) rules.
    Global,
    Str(Arc<str>),
    Int(i64),
    Bool(bool),
}

impl Key {
    pub fn from_value(v: &Value) -> Option<Key> {
        match v {
            Value::Str(s) => Some(Key::Str(s.clone())),
            Value::Int(i) => Some(Key::Int(*i)),
            Value::Bool(b) => Some(Key::Bool(*b)),
            _ => None,
        }
    }

    /// The JSON form used in alerts (`null` for global rules).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Key::Global => serde_json::Value::Null,
            Key::Str(s) => serde_json::Value::String(s.to_string()),
            Key::Int(i) => (*i).into(),
            Key::Bool(b) => (*b).into(),
        }
    }

    /// Text used in alert ids.
    pub fn id_text(&self) -> String {
        match self {
            Key::Global => String::new(),
            Key::Str(s) => s.to_string(),
            Key::Int(i) => i.to_string(),
            Key::Bool(b) => b.to_string(),
        }
    }
}

/// Serde helper: a map with non-string keys as a list of pairs (JSON-friendly).
pub mod map_as_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<'a, M, K, V, S>(m: &'a M, s: S) -> Result<S::Ok, S::Error>
    where
        &'a M: IntoIterator<Item = (&'a K, &'a V)>,
        K: Serialize + 'a,
        V: Serialize + 'a,
        S: Serializer,
    {
        s.collect_seq(m)
    }

    pub fn deserialize<'de, M, K, V, D>(d: D) -> Result<M, D::Error>
    where
        M: FromIterator<(K, V)>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let pairs: Vec<(K, V)> = Vec::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}
