//! Reference lists through a running gateway with every shard live: a large
//! entry is held once per node, stays out of checkpoints, and still matches
//! after a restart restores the shards from the checkpoint.

use std::time::Duration;
use vigil_tests::*;

const RULES: &str = "event Txn { card_id: string, amount: float, merchant: string }\n\
rule hot_twice {\n  severity high\n  key card_id\n  \
pattern a: Txn[merchant in list \"hot\"] -> b: Txn[merchant in list \"hot\"]\n  within 1h\n}\n";

fn txn(i: u64, card: &str, merchant: &str) -> String {
    // 2026-01-05T00:00:00Z plus i seconds.
    let ts = 1_767_571_200_000 + i as i64 * 1_000;
    format!(
        r#"{{"id":"t{i}","type":"Txn","ts":{ts},"card_id":"{card}","amount":1.0,"merchant":"{merchant}"}}"#
    )
}

/// The admin key a first start prints once.
fn admin_key(gw: &Proc) -> String {
    gw.output()
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("vk_"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no admin key in: {}", gw.output()))
}

/// The last durable checkpoint once it covers `seq`: (id, shards, bytes).
fn checkpoint_after(http: &str, id_above: u64, seq: u64) -> (u64, u64, u64) {
    let mut out = (0, 0, 0);
    wait_until(
        "a checkpoint covering the events",
        Duration::from_secs(60),
        || {
            let Some(c) = cluster(http) else { return false };
            let ck = &c["checkpoint"];
            let id = ck["id"].as_u64().unwrap_or(0);
            out = (
                id,
                ck["shards"].as_u64().unwrap_or(0),
                ck["bytes"].as_u64().unwrap_or(0),
            );
            id > id_above && ck["seq"].as_u64() >= Some(seq)
        },
    );
    out
}

fn alerts(http: &str, key: &str) -> Vec<serde_json::Value> {
    let auth = format!("Bearer {key}");
    http_request(
        http,
        "GET",
        "/v1/alerts?rule=hot_twice",
        &[("Authorization", &auth)],
        "",
    )
    .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
    .and_then(|v| v["alerts"].as_array().cloned())
    .unwrap_or_default()
}

#[test]
fn a_large_list_entry_stays_out_of_checkpoints_and_matches_after_a_restart() {
    let rules = fresh_dir("lists-rules");
    std::fs::write(rules.join("r.vgl"), RULES).expect("write rules");
    let data = fresh_dir("lists-data");
    let ep = Endpoints::fresh();
    let flags = ["--idle", "0s", "--checkpoint-every", "300ms"];
    let mut gw = start_gateway_in(&data, &rules, &[], &ep, &flags);
    let key = admin_key(&gw);
    let ctx = zmq::Context::new();
    // 5,000 cards: nearly every one of the 1,024 shards gets an engine.
    let cards = 5_000u64;
    let events: Vec<String> = (0..cards).map(|i| txn(i, &format!("c{i}"), "m")).collect();
    push_events(&ctx, &ep.pull, &events, 500);
    wait_processed(&ep.http, cards);
    let (id0, shards, before) = checkpoint_after(&ep.http, 0, cards);
    assert!(shards >= 1_000, "most shards are live: {shards}");
    // One 100 kB entry and the hot merchant.
    let big = "x".repeat(100_000);
    let auth = format!("Bearer {key}");
    let body = serde_json::json!([big, "m-hot"]).to_string();
    let (status, text) = http_request(
        &ep.http,
        "PUT",
        "/v1/lists/hot",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .expect("PUT list");
    assert_eq!(status, 200, "{text}");
    // The first half of a match: kept in the checkpoint.
    push_events(&ctx, &ep.pull, &[txn(cards, "c1", "m-hot")], 1);
    wait_processed(&ep.http, cards + 1);
    let (_, _, after) = checkpoint_after(&ep.http, id0, cards + 1);
    // Without the list copied into 1,000 shard states, a checkpoint grows by
    // one partial match, not by 1,000 × 100 kB.
    assert!(
        after < before + 64 * 1024,
        "checkpoint {before} -> {after} bytes after a 100 kB list entry"
    );
    // A restart: shards come back from the checkpoint, the lists from the store.
    gw.signal("TERM");
    wait_until("the gateway stops", Duration::from_secs(30), || !gw.alive());
    let gw = start_gateway_in(&data, &rules, &[], &ep, &flags);
    push_events(&ctx, &ep.pull, &[txn(cards + 1, "c1", "m-hot")], 1);
    wait_until(
        "the match completed after the restart",
        Duration::from_secs(30),
        || !alerts(&ep.http, &key).is_empty(),
    );
    let a = alerts(&ep.http, &key);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        (&a[0]["key"], &a[0]["matched"]["a"], &a[0]["matched"]["b"]),
        (
            &serde_json::json!("c1"),
            &serde_json::json!([format!("t{cards}")]),
            &serde_json::json!([format!("t{}", cards + 1)])
        ),
        "{a:?}\n{}",
        gw.output()
    );
}
