//! Alerts (spec §6) and their deterministic ids.

use crate::time::format_ms;
use crate::value::Key;
use rule_lang::program::Severity;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// One alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: String,
    pub rule: String,
    pub version: u32,
    pub severity: Severity,
    pub key: Key,
    /// Event time of the match, epoch ms.
    pub at: i64,
    /// Binding → event ids, in binding order.
    pub matched: Vec<(String, Vec<Arc<str>>)>,
    /// The matched events themselves, by binding (the explanation of the
    /// alert; not part of the alert JSON — see [`Alert::evidence_json`]).
    pub evidence: Vec<(String, Vec<Arc<crate::value::Event>>)>,
    /// Aggregate rules: binding → full window count.
    pub matched_count: Option<(String, u64)>,
    /// Emitted fields in `emit` order.
    pub fields: Vec<(String, serde_json::Value)>,
    /// Wall clock when detected, epoch ms (the only field that varies between runs).
    pub detected_at: i64,
    /// `shadow` alerts come from rules deployed in shadow mode.
    pub shadow: bool,
}

impl Alert {
    /// `sha256(rule, version, key, matched ids[, at])`, first 128 bits as hex.
    pub fn compute_id(
        rule: &str,
        version: u32,
        key: &Key,
        matched: &[(String, Vec<Arc<str>>)],
        absence_at: Option<i64>,
    ) -> String {
        let mut h = Sha256::new();
        h.update(rule.as_bytes());
        h.update([0]);
        h.update(version.to_le_bytes());
        match key {
            Key::Str(s) => h.update(s.as_bytes()),
            other => h.update(other.id_text().as_bytes()),
        }
        h.update([0]);
        for (name, ids) in matched {
            h.update(name.as_bytes());
            h.update([1]);
            for id in ids {
                h.update(id.as_bytes());
                h.update([2]);
            }
        }
        if let Some(at) = absence_at {
            h.update(at.to_le_bytes());
        }
        let digest = h.finalize();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = String::with_capacity(32);
        for b in &digest[..16] {
            id.push(char::from(HEX[usize::from(b >> 4)]));
            id.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        id
    }

    /// Topic for the ZeroMQ alert publisher: `alert.<severity>.<rule>`.
    pub fn topic(&self) -> String {
        format!("alert.{}.{}", self.severity.as_str(), self.rule)
    }

    /// The evidence as JSON, `{binding: [event, …]}`, each event with its
    /// `type`, `ts`, `id` and declared fields (names from `schemas`).
    pub fn evidence_json(&self, schemas: &[rule_lang::program::Schema]) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (binding, events) in &self.evidence {
            let list = events
                .iter()
                .map(|e| {
                    let mut m = serde_json::Map::new();
                    let schema = schemas.get(e.ty as usize);
                    m.insert(
                        "type".into(),
                        schema.map_or(serde_json::Value::Null, |s| s.name.clone().into()),
                    );
                    m.insert("ts".into(), format_ms(e.ts).into());
                    m.insert("id".into(), e.id.to_string().into());
                    if let Some(s) = schema {
                        for (f, v) in s.fields.iter().zip(e.fields.iter()) {
                            if !v.is_missing() {
                                m.insert(f.name.clone(), v.to_json());
                            }
                        }
                    }
                    serde_json::Value::Object(m)
                })
                .collect();
            out.insert(binding.clone(), serde_json::Value::Array(list));
        }
        serde_json::Value::Object(out)
    }

    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

struct Matched<'a>(&'a [(String, Vec<Arc<str>>)]);

impl Serialize for Matched<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, &v.iter().map(|x| &**x).collect::<Vec<&str>>())?;
        }
        m.end()
    }
}

struct Fields<'a>(&'a [(String, serde_json::Value)]);

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

struct Count<'a>(&'a (String, u64));

impl Serialize for Count<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(&self.0.0, &self.0.1)?;
        m.end()
    }
}

impl Serialize for Alert {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = 9 + usize::from(self.matched_count.is_some()) + usize::from(self.shadow);
        let mut st = s.serialize_struct("Alert", n)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("rule", &self.rule)?;
        st.serialize_field("version", &self.version)?;
        st.serialize_field("severity", &self.severity)?;
        st.serialize_field("key", &self.key.to_json())?;
        st.serialize_field("at", &format_ms(self.at))?;
        st.serialize_field("matched", &Matched(&self.matched))?;
        if let Some(c) = &self.matched_count {
            st.serialize_field("matched_count", &Count(c))?;
        }
        st.serialize_field("fields", &Fields(&self.fields))?;
        st.serialize_field("detected_at", &format_ms(self.detected_at))?;
        if self.shadow {
            st.serialize_field("mode", "shadow")?;
        }
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<Arc<str>>)> {
        pairs
            .iter()
            .map(|(b, ids)| (b.to_string(), ids.iter().map(|i| Arc::from(*i)).collect()))
            .collect()
    }

    fn key(s: &str) -> Key {
        Key::Str(Arc::from(s))
    }

    /// Alert ids are stored by users and sent as webhook ids: a rebuilt engine
    /// must give the same id for the same alert. The expected values were
    /// computed outside the engine (Python `hashlib`) from the documented
    /// encoding: rule, 0, version (u32 LE), key text, 0, per binding its name,
    /// 1, each id followed by 2, and for absence the `at` (i64 LE ms); the
    /// first 16 bytes of the SHA-256, as hex.
    #[test]
    fn alert_ids_are_pinned() {
        let small_big = m(&[("small", &["e1", "e2", "e5"]), ("big", &["e9"])]);
        assert_eq!(
            Alert::compute_id("card_testing", 3, &key("card-17"), &small_big, None),
            "d882e21e7e2c52dca86f4978ca87f3a7"
        );
        assert_eq!(
            Alert::compute_id("card_testing", 1, &key("card-17"), &small_big, None),
            "dd337f3dcc59cf3005d56320112a61dc"
        );
        assert_eq!(
            Alert::compute_id(
                "missing_heartbeat",
                1,
                &key("dev-1"),
                &m(&[("hb", &["h1"])]),
                Some(1_767_607_260_000)
            ),
            "f9966f041518275fed1f9c2b48be3a0a"
        );
        assert_eq!(
            Alert::compute_id(
                "platform_error_storm",
                2,
                &Key::Global,
                &m(&[("t", &["r1", "r2"])]),
                None
            ),
            "19a77633d1626ea8fbda8565e23ed389"
        );
    }

    /// Each input of the id changes it: rule, version, key, every part of
    /// `matched` (binding names, ids, their order and grouping) and, for
    /// absence alerts, `at`.
    #[test]
    fn alert_id_changes_with_each_input() {
        let id = Alert::compute_id;
        let k1 = key("k1");
        let base_m = m(&[("a", &["e1", "e2"]), ("b", &["e3"])]);
        let base = id("r", 1, &k1, &base_m, None);
        let variants = [
            ("rule", id("r2", 1, &k1, &base_m, None)),
            ("version", id("r", 2, &k1, &base_m, None)),
            ("key", id("r", 1, &key("k2"), &base_m, None)),
            ("global key", id("r", 1, &Key::Global, &base_m, None)),
            (
                "a matched id",
                id(
                    "r",
                    1,
                    &k1,
                    &m(&[("a", &["e1", "e4"]), ("b", &["e3"])]),
                    None,
                ),
            ),
            (
                "one more matched id",
                id(
                    "r",
                    1,
                    &k1,
                    &m(&[("a", &["e1", "e2", "e4"]), ("b", &["e3"])]),
                    None,
                ),
            ),
            (
                "matched order",
                id(
                    "r",
                    1,
                    &k1,
                    &m(&[("a", &["e2", "e1"]), ("b", &["e3"])]),
                    None,
                ),
            ),
            (
                "binding of an id",
                id(
                    "r",
                    1,
                    &k1,
                    &m(&[("a", &["e1"]), ("b", &["e2", "e3"])]),
                    None,
                ),
            ),
            (
                "binding name",
                id(
                    "r",
                    1,
                    &k1,
                    &m(&[("a", &["e1", "e2"]), ("c", &["e3"])]),
                    None,
                ),
            ),
            ("absence at", id("r", 1, &k1, &base_m, Some(60_000))),
        ];
        for (what, v) in &variants {
            assert_ne!(*v, base, "changing the {what} must change the id");
        }
        assert_ne!(
            id("r", 1, &k1, &base_m, Some(60_000)),
            id("r", 1, &k1, &base_m, Some(60_001)),
            "a different absence `at` must change the id"
        );
        let mut all: Vec<&String> = variants.iter().map(|(_, v)| v).collect();
        all.push(&base);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), variants.len() + 1, "ids must all differ");
    }
}
