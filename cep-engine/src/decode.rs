//! JSON → [`Event`], once, at the edge, using the declared schemas.
//!
//! The object is read in one pass into a small list of (name, scalar) pairs with
//! serde_json (borrowing strings where it can), then mapped to slots by the
//! schema of its `type`. Every way an event can be wrong is a [`Rejection`] with
//! a stable reason code; nothing here panics on input.

use crate::value::{Event, Value};
use rule_lang::program::{RuleSet, Schema, Type, TypeId};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Why an event was rejected. `reason` is a stable code used in metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// Decodes JSON events against a rule set's schemas.
#[derive(Debug, Clone)]
pub struct Decoder {
    schemas: Vec<Schema>,
    by_name: HashMap<String, TypeId>,
}

#[derive(Debug)]
enum Raw<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    /// Nested object or array: carried, not typed.
    Other,
}

impl Decoder {
    pub fn new(rules: &RuleSet) -> Decoder {
        Decoder {
            schemas: rules.schemas.clone(),
            by_name: rules
                .schemas
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i as TypeId))
                .collect(),
        }
    }

    pub fn schemas(&self) -> &[Schema] {
        &self.schemas
    }

    /// Decodes one JSON text. `default_id` is used when the event has no `id`
    /// (the caller passes `<source>:<sequence>`).
    pub fn decode(
        &self,
        json: &[u8],
        default_id: impl FnOnce() -> String,
    ) -> Result<Event, Rejection> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let pairs = match ObjectSeed.deserialize(&mut de) {
            Ok(p) => p,
            Err(e) => return Err(parse_failure(json, &e)),
        };
        if let Err(e) = de.end() {
            return Err(Rejection::new("malformed_json", e.to_string()));
        }
        if let Some(k) = duplicate_key(&pairs) {
            // serde_json would keep the last; an event that says two
            // different things about one field is refused instead.
            return Err(Rejection::new(
                "duplicate_key",
                format!("key `{k}` appears more than once in the event"),
            ));
        }
        self.build(pairs, default_id)
    }

    /// [`Decoder::decode`] driven by another JSON parser's serde
    /// deserializer (the JSON benchmark, `examples/json_bench.rs`, runs the
    /// same schema-directed decoding on serde_json, simd-json and sonic-rs).
    /// Parse errors are reported without serde_json's positions.
    #[doc(hidden)]
    pub fn decode_with<'de, D>(
        &self,
        de: D,
        default_id: impl FnOnce() -> String,
    ) -> Result<Event, Rejection>
    where
        D: serde::Deserializer<'de>,
    {
        let pairs = ObjectSeed
            .deserialize(de)
            .map_err(|e| Rejection::new("malformed_json", e.to_string()))?;
        if let Some(k) = duplicate_key(&pairs) {
            return Err(Rejection::new(
                "duplicate_key",
                format!("key `{k}` appears more than once in the event"),
            ));
        }
        self.build(pairs, default_id)
    }

    fn build(
        &self,
        pairs: Pairs<'_>,
        default_id: impl FnOnce() -> String,
    ) -> Result<Event, Rejection> {
        let mut ty_name = None;
        let mut ts = None;
        let mut id = None;
        for (k, v) in &pairs {
            match k.as_ref() {
                "type" => ty_name = Some(v),
                "ts" => ts = Some(v),
                "id" => id = Some(v),
                _ => {}
            }
        }
        let ty_name = match ty_name {
            Some(Raw::Str(s)) => s,
            Some(_) => return Err(Rejection::new("missing_type", "`type` must be a string")),
            None => return Err(Rejection::new("missing_type", "the event has no `type`")),
        };
        let Some(&ty) = self.by_name.get(ty_name.as_ref()) else {
            return Err(Rejection::new(
                "unknown_type",
                format!("`{ty_name}` is not a declared event type"),
            ));
        };
        let ts = match ts {
            None | Some(Raw::Null) => {
                return Err(Rejection::new("missing_ts", "the event has no `ts`"));
            }
            Some(v) => time_value(v).ok_or_else(|| {
                Rejection::new(
                    "bad_ts",
                    "`ts` must be an RFC 3339 string or integer epoch milliseconds",
                )
            })?,
        };
        check_ts_range(ts)?;
        let id: Arc<str> = match id {
            None | Some(Raw::Null) => default_id().into(),
            Some(Raw::Str(s)) => Arc::from(s.as_ref()),
            Some(Raw::I64(i)) => i.to_string().into(),
            Some(Raw::U64(u)) => u.to_string().into(),
            Some(_) => {
                return Err(Rejection::new(
                    "bad_id",
                    "`id` must be a string or an integer",
                ));
            }
        };
        let schema = &self.schemas[ty as usize];
        let mut fields: Vec<Value> = vec![Value::Missing; schema.fields.len()];
        for (k, v) in pairs {
            let Some(slot) = schema.slot(k.as_ref()) else {
                continue; // undeclared: carried, not typed
            };
            let def = &schema.fields[slot as usize];
            let val = match (def.ty, v) {
                (_, Raw::Null) => Value::Missing,
                (Type::String, Raw::Str(s)) => Value::Str(Arc::from(s.as_ref())),
                (Type::Int, Raw::I64(i)) => Value::Int(i),
                (Type::Int, Raw::U64(u)) if u <= i64::MAX as u64 => Value::Int(u as i64),
                (Type::Int, Raw::U64(u)) => {
                    return Err(Rejection::new(
                        "out_of_range",
                        format!(
                            "`{}.{}` = {u} is out of range for int (at most {})",
                            schema.name,
                            def.name,
                            i64::MAX
                        ),
                    ));
                }
                (Type::Float, Raw::F64(f)) => Value::Float(f),
                (Type::Float, Raw::I64(i)) => Value::Float(i as f64),
                (Type::Float, Raw::U64(u)) => Value::Float(u as f64),
                (Type::Bool, Raw::Bool(b)) => Value::Bool(b),
                (Type::Time, v) => match time_value(&v) {
                    Some(t) => Value::Time(t),
                    None => return Err(wrong(schema, &def.name, def.ty, &v)),
                },
                (_, v) => return Err(wrong(schema, &def.name, def.ty, &v)),
            };
            fields[slot as usize] = val;
        }
        for (i, def) in schema.fields.iter().enumerate() {
            if !def.optional && fields[i].is_missing() {
                return Err(Rejection::new(
                    "missing_field",
                    format!(
                        "`{}` requires field `{}` ({})",
                        schema.name, def.name, def.ty
                    ),
                ));
            }
        }
        Ok(Event {
            ty,
            ts,
            id,
            fields: fields.into_boxed_slice(),
            seq: 0,
        })
    }
}

/// Why a text that did not read as an object was refused: bytes that are not
/// UTF-8, a number beyond f64, valid JSON that is not an object, or not JSON.
fn parse_failure(json: &[u8], e: &serde_json::Error) -> Rejection {
    if let Err(u) = std::str::from_utf8(json) {
        return Rejection::new(
            "invalid_utf8",
            format!("the event is not UTF-8 (at byte {})", u.valid_up_to()),
        );
    }
    // serde_json's own wording for a number it cannot represent (`1e400`).
    if e.to_string().starts_with("number out of range") {
        return Rejection::new(
            "out_of_range",
            format!("a number is out of range (beyond a 64-bit float): {e}"),
        );
    }
    if serde_json::from_slice::<IgnoredAny>(json).is_ok() {
        Rejection::new("not_an_object", "an event must be a JSON object")
    } else {
        Rejection::new("malformed_json", e.to_string())
    }
}

/// A key that appears twice in `pairs`, if any (O(n log n) for wide objects).
fn duplicate_key<'p>(pairs: &'p Pairs<'_>) -> Option<&'p str> {
    if pairs.len() <= 16 {
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(p, _)| p == k) {
                return Some(k);
            }
        }
        return None;
    }
    let mut keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_ref()).collect();
    keys.sort_unstable();
    keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

/// The first event time accepted: 1970-01-01T00:00:00.000Z.
pub const MIN_TS_MS: i64 = 0;
/// The first event time refused as absurd: 10000-01-01T00:00:00.000Z (the
/// spec's valid years are 1970 to 9999). A live gateway refuses a `9999-12-31`
/// "never" sentinel anyway, as `ts_in_future`.
pub const END_TS_MS: i64 = 253_402_300_800_000;

/// `bad_ts` unless `MIN_TS_MS <= ts < END_TS_MS`: times before 1970 or after
/// year 9999 are mistakes, never real events. Every
/// path that decodes events shares this rule (gateway, replay, backtests).
pub fn check_ts_range(ts: i64) -> Result<(), Rejection> {
    if (MIN_TS_MS..END_TS_MS).contains(&ts) {
        return Ok(());
    }
    Err(Rejection::new(
        "bad_ts",
        format!(
            "`ts` {ts} is outside 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z (epoch ms {MIN_TS_MS} .. {})",
            END_TS_MS - 1
        ),
    ))
}

/// `ts_in_future` if `ts` is more than `max_future_ms` ahead of `wall_ms`
/// (the caller's wall clock, epoch ms). Exactly `max_future_ms` ahead is
/// accepted. For paths that have a wall clock (the gateway); a replay of
/// recorded events has none and applies only [`check_ts_range`].
pub fn check_not_future(ts: i64, wall_ms: i64, max_future_ms: i64) -> Result<(), Rejection> {
    let limit = wall_ms.saturating_add(max_future_ms.max(0));
    if ts <= limit {
        return Ok(());
    }
    Err(Rejection::new(
        "ts_in_future",
        format!(
            "`ts` {} is {} ms ahead of the gateway's clock {}; at most {max_future_ms} ms is accepted (--max-future)",
            crate::time::format_ms(ts),
            ts.saturating_sub(wall_ms),
            crate::time::format_ms(wall_ms)
        ),
    ))
}

fn wrong(schema: &Schema, field: &str, ty: Type, v: &Raw<'_>) -> Rejection {
    let got = match v {
        Raw::Null => "null",
        Raw::Bool(_) => "a bool",
        Raw::I64(_) | Raw::U64(_) => "an integer",
        Raw::F64(_) => "a number with a fraction",
        Raw::Str(_) => "a string",
        Raw::Other => "an object or array",
    };
    Rejection::new(
        "wrong_type",
        format!("`{}.{field}` must be {ty}, got {got}", schema.name),
    )
}

fn time_value(v: &Raw<'_>) -> Option<i64> {
    match v {
        Raw::Str(s) => crate::time::parse_rfc3339_ms(s),
        Raw::I64(i) => Some(*i),
        Raw::U64(u) => i64::try_from(*u).ok(),
        _ => None,
    }
}

type Pairs<'a> = SmallVec<[(Cow<'a, str>, Raw<'a>); 16]>;

struct ObjectSeed;

impl<'de> DeserializeSeed<'de> for ObjectSeed {
    type Value = Pairs<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Pairs<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("not an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Pairs::new();
        while let Some(k) = map.next_key::<CowStr<'de>>()? {
            let v = map.next_value::<RawSeed<'de>>()?;
            out.push((k.0, v.0));
        }
        Ok(out)
    }
}

struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

struct RawSeed<'a>(Raw<'a>);

impl<'de> Deserialize<'de> for RawSeed<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSeed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawSeed(Raw::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawSeed(Raw::I64(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawSeed(Raw::U64(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(RawSeed(Raw::F64(v)))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawSeed(Raw::Str(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawSeed(Raw::Str(Cow::Owned(v.to_string()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(RawSeed(Raw::Str(Cow::Owned(v))))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(RawSeed(Raw::Null))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(RawSeed(Raw::Null))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RawSeed(Raw::Other))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawSeed(Raw::Other))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        let rs = rule_lang::compile_str(
            "t.vgl",
            "event Txn { card_id: string, amount: float, n: int, ok: bool?, mcc: int?, at: time? }",
        )
        .expect("compiles");
        Decoder::new(&rs)
    }

    fn reason(json: &str) -> &'static str {
        match decoder().decode(json.as_bytes(), || "x:1".into()) {
            Ok(_) => "ok",
            Err(r) => r.reason,
        }
    }

    #[test]
    fn decodes_and_rejects() {
        let ev = decoder()
            .decode(
                br#"{"type":"Txn","ts":"2026-01-05T10:00:03.250Z","card_id":"c1","amount":5,"n":2,"extra":{"a":[1]}}"#,
                || "src:7".into(),
            )
            .expect("valid");
        assert_eq!(&*ev.id, "src:7");
        assert_eq!(ev.fields[1], Value::Float(5.0));
        assert_eq!(ev.fields[3], Value::Missing);
        assert_eq!(reason("[1,2]"), "not_an_object");
        assert_eq!(reason("{\"type\":"), "malformed_json");
        assert_eq!(reason(r#"{"ts":1,"card_id":"c"}"#), "missing_type");
        assert_eq!(
            reason(r#"{"type":"Txn","card_id":"c","amount":1.0,"n":1}"#),
            "missing_ts"
        );
        assert_eq!(
            reason(r#"{"type":"Txn","ts":"soon","card_id":"c","amount":1.0,"n":1}"#),
            "bad_ts"
        );
        assert_eq!(reason(r#"{"type":"Txm","ts":1}"#), "unknown_type");
        assert_eq!(
            reason(r#"{"type":"Txn","ts":1,"card_id":"c","amount":1.0,"n":1.5}"#),
            "wrong_type"
        );
        assert_eq!(
            reason(r#"{"type":"Txn","ts":1,"card_id":"c","amount":"1","n":1}"#),
            "wrong_type"
        );
        assert_eq!(
            reason(r#"{"type":"Txn","ts":1,"card_id":"c","n":1}"#),
            "missing_field"
        );
        assert_eq!(
            reason(r#"{"type":"Txn","ts":1,"id":[1],"card_id":"c","amount":1.0,"n":1}"#),
            "bad_id"
        );
        assert_eq!(
            reason(
                r#"{"type":"Txn","ts":1,"id":7,"card_id":"c","amount":1.0,"n":1,"at":"2026-01-05T10:00:03Z"}"#
            ),
            "ok"
        );
    }

    #[test]
    fn hostile_numbers_bytes_and_duplicate_keys_get_their_own_reason() {
        let d = decoder();
        let why = |json: &[u8]| match d.decode(json, || "x:1".into()) {
            Ok(_) => Rejection::new("ok", ""),
            Err(r) => r,
        };
        // A number beyond f64, anywhere in the event.
        let r = why(br#"{"type":"Txn","ts":1,"card_id":"c","amount":1e400,"n":1}"#);
        assert_eq!(r.reason, "out_of_range", "{r}");
        // An integer beyond i64 in an int field: out of range, not "got an integer".
        let r = why(
            br#"{"type":"Txn","ts":1,"card_id":"c","amount":1,"n":1,"mcc":9223372036854775808}"#,
        );
        assert_eq!(
            r,
            Rejection::new(
                "out_of_range",
                "`Txn.mcc` = 9223372036854775808 is out of range for int (at most 9223372036854775807)"
            )
        );
        // Bytes that are not UTF-8, in a value or in a key.
        let mut bad = br#"{"type":"Txn","ts":1,"card_id":"c"#.to_vec();
        bad.extend([0xff, 0xfe]);
        bad.extend(br#"","amount":1,"n":1}"#);
        assert_eq!(why(&bad).reason, "invalid_utf8");
        assert_eq!(why(b"{\"\xc3\":1}").reason, "invalid_utf8");
        // Two `ts` (or any key twice): refused, not last-wins.
        let r = why(br#"{"type":"Txn","ts":1,"card_id":"c","amount":1,"n":1,"ts":2}"#);
        assert_eq!(
            r,
            Rejection::new(
                "duplicate_key",
                "key `ts` appears more than once in the event"
            )
        );
        let mut wide = String::from(r#"{"type":"Txn","ts":1,"card_id":"c","amount":1,"n":1"#);
        for i in 0..40 {
            wide.push_str(&format!(r#","x{i}":{i}"#));
        }
        wide.push_str(r#","x7":0}"#);
        assert_eq!(why(wide.as_bytes()).reason, "duplicate_key");
        // Still accepted: the largest int, and wide objects without repeats.
        assert_eq!(
            why(br#"{"type":"Txn","ts":1,"card_id":"c","amount":1,"n":9223372036854775807}"#)
                .reason,
            "ok"
        );
        assert_eq!(
            why(wide.replace(r#","x7":0}"#, "}").as_bytes()).reason,
            "ok"
        );
    }

    #[test]
    fn absurd_event_times_are_bad_ts() {
        let ev =
            |ts: &str| format!(r#"{{"type":"Txn","ts":{ts},"card_id":"c","amount":1.0,"n":1}}"#);
        for bad in [
            i64::MAX.to_string(),
            i64::MIN.to_string(),
            u64::MAX.to_string(),
            "-1".into(),
            END_TS_MS.to_string(),
            "\"1969-12-31T23:59:59.999Z\"".into(),
            "\"0001-01-01T00:00:00Z\"".into(),
        ] {
            assert_eq!(reason(&ev(&bad)), "bad_ts", "{bad}");
        }
        for good in [
            "0".to_string(),
            (END_TS_MS - 1).to_string(),
            "\"1970-01-01T00:00:00Z\"".into(),
            "\"9998-12-31T23:59:59.999Z\"".into(),
            "\"9999-01-01T00:00:00Z\"".into(),
            "\"9999-12-31T23:59:59.999Z\"".into(),
        ] {
            assert_eq!(reason(&ev(&good)), "ok", "{good}");
        }
        assert_eq!(
            crate::time::parse_rfc3339_ms("9999-12-31T23:59:59.999Z"),
            Some(END_TS_MS - 1)
        );
    }

    #[test]
    fn exactly_max_future_is_accepted_one_ms_beyond_is_not() {
        let wall = 1_767_571_200_000;
        assert_eq!(check_not_future(wall + 300_000, wall, 300_000), Ok(()));
        assert_eq!(check_not_future(wall - 86_400_000, wall, 300_000), Ok(()));
        let r = check_not_future(wall + 300_001, wall, 300_000).expect_err("1 ms beyond");
        assert_eq!(r.reason, "ts_in_future");
        assert!(r.detail.contains("300001 ms ahead"), "{}", r.detail);
        assert_eq!(check_not_future(wall, wall, 0), Ok(()));
        assert!(check_not_future(wall + 1, wall, 0).is_err());
        // No overflow at the extremes of the wall clock or the limit.
        assert_eq!(check_not_future(END_TS_MS - 1, i64::MAX, i64::MAX), Ok(()));
    }
}

/// One rejected event kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    pub source: String,
    /// 1-based line (or message sequence) where the event came from.
    pub line: u64,
    /// Byte offset of the line in its source.
    pub offset: u64,
    pub reason: String,
    pub detail: String,
}

/// Rejection counts by reason and a bounded sample of rejected events (the
/// first `cap` are kept; later ones are counted only).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DeadLetters {
    pub cap: usize,
    pub by_reason: std::collections::BTreeMap<String, u64>,
    pub sample: Vec<DeadLetter>,
}

impl DeadLetters {
    pub fn new(cap: usize) -> DeadLetters {
        DeadLetters {
            cap,
            ..Default::default()
        }
    }

    pub fn record(&mut self, source: &str, line: u64, offset: u64, r: &Rejection) {
        *self.by_reason.entry(r.reason.to_string()).or_default() += 1;
        if self.sample.len() < self.cap {
            self.sample.push(DeadLetter {
                source: source.to_string(),
                line,
                offset,
                reason: r.reason.to_string(),
                detail: r.detail.clone(),
            });
        }
    }

    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }
}
