//! Sharding: which virtual shard a key lives on, and which copies of an event
//! the router sends.
//!
//! A key's shard is `fold(fnv1a64(text)) % SHARDS`, where `text` is the key's
//! canonical text (the same text alert ids use: strings as they are, integers in
//! decimal, booleans as `true`/`false`) and `fold(h) = h ^ (h >> 32)`. FNV-1a is
//! tiny, has no seed and is specified by its constants, so every process and
//! every future version agrees on it; the fold mixes the high bits into the low
//! ones that the modulus keeps. Global (unkeyed) rules run on [`GLOBAL_SHARD`].

use crate::engine::Route;
use crate::value::{Event, Key};
use rule_lang::program::RuleSet;

/// Number of virtual shards. Fixed: changing it moves every key.
pub const SHARDS: u16 = 1024;

/// The shard that runs every global rule.
pub const GLOBAL_SHARD: u16 = 0;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The virtual shard of a key.
pub fn shard_of(key: &Key) -> u16 {
    let h = match key {
        Key::Global => return GLOBAL_SHARD,
        Key::Str(s) => fnv1a64(s.as_bytes()),
        Key::Int(i) => fnv1a64(i.to_string().as_bytes()),
        Key::Bool(b) => fnv1a64(if *b { b"true" } else { b"false" }),
    };
    ((h ^ (h >> 32)) % u64::from(SHARDS)) as u16
}

/// Per event type, the copies the router sends: one per distinct key slot among
/// the rules that read the type, plus one for global rules if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    by_type: Vec<Vec<Route>>,
}

impl Routes {
    pub fn new(rules: &RuleSet) -> Routes {
        let mut by_type: Vec<Vec<Route>> = vec![vec![]; rules.schemas.len()];
        for r in &rules.rules {
            for &t in &r.types {
                let route = match &r.key {
                    None => Route::Global,
                    Some(_) => match r.key_slots.get(t as usize).copied().flatten() {
                        Some(s) => Route::Key(s),
                        None => continue,
                    },
                };
                let routes = &mut by_type[t as usize];
                if !routes.contains(&route) {
                    routes.push(route);
                }
            }
        }
        Routes { by_type }
    }

    /// The routes of an event type (empty: no rule reads it).
    pub fn of_type(&self, ty: usize) -> &[Route] {
        self.by_type.get(ty).map_or(&[], Vec::as_slice)
    }

    /// The (route, shard) copies of one event. A keyed route whose key field is
    /// missing (optional field) sends nothing: no rule on it could key the event.
    pub fn targets<'a>(&'a self, ev: &'a Event) -> impl Iterator<Item = (Route, u16)> + 'a {
        self.of_type(ev.ty as usize)
            .iter()
            .filter_map(move |&route| match route {
                Route::Global | Route::All => Some((route, GLOBAL_SHARD)),
                Route::Key(s) => Key::from_value(ev.slot(s)).map(|k| (route, shard_of(&k))),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fnv_matches_the_published_vectors() {
        // Test vectors of the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // Pinned: a change here moves every key of every deployment.
        assert_eq!(
            shard_of(&Key::Str(Arc::from("card-17"))),
            shard_of_text("card-17")
        );
        assert_eq!(shard_of(&Key::Int(42)), shard_of_text("42"));
        let pinned: Vec<u16> = ["c1", "c2", "card-17", "acct-9"]
            .iter()
            .map(|s| shard_of_text(s))
            .collect();
        assert_eq!(pinned, PINNED);
        let mut hist = vec![0u32; SHARDS as usize];
        for i in 0..102_400 {
            hist[shard_of(&Key::Str(Arc::from(format!("card-{i}").as_str()))) as usize] += 1;
        }
        let (min, max) = (hist.iter().min(), hist.iter().max());
        assert!(min >= Some(&50) && max <= Some(&160), "{min:?} {max:?}");
    }

    // Computed independently (Python) from the definition in the module docs.
    const PINNED: [u16; 4] = [862, 839, 145, 809];

    fn shard_of_text(s: &str) -> u16 {
        shard_of(&Key::Str(Arc::from(s)))
    }

    #[test]
    fn routes_one_copy_per_key_field() {
        let rs = rule_lang::compile_str(
            "t.vgl",
            r#"
event Txn { card: string, account: string, amount: float }
rule by_card {
  key card
  pattern a: Txn -> b: Txn
  within 1m
}
rule by_card2 {
  key card
  pattern a: Txn[amount > 1.0] -> b: Txn
  within 1m
}
rule by_account {
  key account
  pattern a: Txn -> b: Txn
  within 1m
}
rule everything {
  pattern a: Txn -> b: Txn
  within 1m
}
            "#,
        )
        .expect("compiles");
        let routes = Routes::new(&rs);
        assert_eq!(
            routes.of_type(0),
            &[Route::Key(0), Route::Key(1), Route::Global]
        );
    }
}
