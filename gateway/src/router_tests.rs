//! The router's event-time rules and checkpoint skipping, driven by calls
//! (no node answers: the node endpoint is never reached) with a hand-set
//! wall clock.

use super::*;
use std::sync::atomic::AtomicI64;

/// 2026-01-05T00:00:00Z.
const WALL: i64 = 1_767_571_200_000;

/// A router with rules deployed.
fn router(wall: &Arc<AtomicI64>, idle_ms: i64) -> Router {
    deployed(bare(wall, idle_ms))
}

/// A router before any command (where checkpoints are turned on).
fn bare(wall: &Arc<AtomicI64>, idle_ms: i64) -> Router {
    let cfg = RouterConfig {
        nodes: vec!["tcp://127.0.0.1:9".into()],
        idle_ms,
        wall: WallClock::manual(wall.clone()),
        skip_unchanged_checkpoints: true,
        ..RouterConfig::default()
    };
    Router::new(zmq::Context::new(), cfg, Arc::new(Status::default())).expect("a router")
}

fn deployed(mut r: Router) -> Router {
    let text = "event Txn { card_id: string, amount: float }\nrule r {\n  key card_id\n  pattern a: Txn -> b: Txn\n  within 1m\n}\n";
    let set = rule_lang::compile_str("r.vgl", text).expect("compiles");
    r.deploy(Bundle {
        version: 1,
        files: vec![("r.vgl".into(), text.into())],
        rules: vec![("r".into(), 1, false)],
        set: Arc::new(set),
    });
    r
}

fn ev(ts: i64) -> Vec<u8> {
    format!(r#"{{"type":"Txn","ts":{ts},"card_id":"c","amount":1}}"#).into_bytes()
}

fn reason(r: Result<(), Rejection>) -> &'static str {
    r.err().map_or("ok", |e| e.reason)
}

#[test]
fn exactly_max_future_ahead_is_accepted_one_ms_more_is_ts_in_future() {
    let wall = Arc::new(AtomicI64::new(WALL));
    let mut r = router(&wall, 0);
    let max = r.cfg.max_future_ms;
    assert_eq!(max, 300_000, "the default is 5 minutes");
    assert_eq!(reason(r.ingest(&ev(WALL + max + 1))), "ts_in_future");
    assert_eq!(r.clock, i64::MIN, "a refused event moves no clock");
    assert_eq!(r.seq, 0, "and takes no sequence number");
    assert_eq!(reason(r.ingest(&ev(WALL + max))), "ok");
    assert_eq!(r.clock, WALL + max);
    // The limit follows the wall clock: 1 ms later the same time is fine.
    wall.store(WALL + 1, Ordering::Relaxed);
    assert_eq!(reason(r.ingest(&ev(WALL + max + 1))), "ok");
    // Past times are always fine, however old.
    assert_eq!(reason(r.ingest(&ev(0))), "ok");
    for absurd in [i64::MAX, i64::MIN, -1, cep_engine::decode::END_TS_MS] {
        assert_eq!(reason(r.ingest(&ev(absurd))), "bad_ts", "{absurd}");
    }
    assert_eq!(r.clock, WALL + max + 1);
}

#[test]
fn a_far_future_event_cannot_poison_the_clock_a_restart_reports_an_old_poisoned_one() {
    let wall = Arc::new(AtomicI64::new(WALL));
    let mut r = router(&wall, 0);
    assert_eq!(reason(r.ingest(&ev(WALL + 86_400_000))), "ts_in_future");
    assert_eq!(reason(r.ingest(&ev(WALL - 1000))), "ok");
    r.publish_view();
    assert_eq!(r.status.clock_ahead_ms.load(Ordering::Relaxed), 0);
    // A checkpoint written before the limit existed carries a clock years
    // ahead: the gateway says so and is not ready.
    let r = bare(&wall, 0).with_checkpoints(checkpoints(Some(manifest(
        cep_engine::decode::END_TS_MS - 1,
        None,
    ))));
    r.publish_view();
    assert!(r.status.clock_ahead_ms.load(Ordering::Relaxed) > 0);
    r.status.view.lock().expect("lock").nodes.push(NodeView {
        state: "up".into(),
        rules_version: 1,
        ..NodeView::default()
    });
    r.status.rules_version.store(1, Ordering::Relaxed);
    let why = r.status.ready().expect_err("not ready");
    assert!(why.contains("ahead of the wall clock"), "{why}");
}

fn manifest(clock: i64, idle_base: Option<(i64, i64)>) -> CheckpointManifest {
    CheckpointManifest {
        id: 3,
        seq: 0,
        clock,
        inputs: BTreeMap::new(),
        offsets: BTreeMap::new(),
        rules_version: 1,
        created_ms: 0,
        shards: vec![],
        bytes: 0,
        idle_base,
    }
}

fn checkpoints(resume: Option<CheckpointManifest>) -> Checkpoints {
    Checkpoints {
        resume,
        loader: Box::new(|_, shards| shards.iter().map(|_| Ok(None)).collect()),
        committed: None,
    }
}

#[test]
fn a_checkpoint_is_skipped_until_something_it_records_changes() {
    let wall = Arc::new(AtomicI64::new(WALL));
    let mut r = bare(&wall, 5_000).with_checkpoints(checkpoints(Some(manifest(WALL, None))));
    // Resumed from checkpoint 3: that is this state.
    assert!(r.unchanged());
    // The live-mode clock moving alone changes nothing a restore needs.
    r.clock = WALL + 60_000;
    assert!(r.unchanged());
    let mut r = deployed(r);
    for change in 0..4 {
        if change > 0 {
            match change {
                1 => assert_eq!(reason(r.ingest(&ev(WALL))), "ok"),
                2 => r.set_list("l".into(), vec!["x".into()]),
                _ => {
                    let b = r.bundle.clone().expect("deployed");
                    r.deploy(b);
                }
            }
        }
        // Change 0 is the first deploy.
        assert!(!r.unchanged(), "change {change}");
        // Its checkpoint becomes durable: unchanged again.
        let ck = r.ckpt.as_mut().expect("on");
        ck.pending_changes = Some((4 + change, r.changes));
        ck.storing = Some((4 + change, Instant::now(), 0));
        let stored = manifest(WALL, None);
        assert!(r.stored(
            4 + change,
            Ok(CheckpointManifest {
                id: 4 + change,
                seq: r.seq,
                ..stored
            })
        ));
        assert!(r.unchanged(), "after change {change}");
    }
    // A refused event changes nothing.
    assert_eq!(reason(r.ingest(&ev(i64::MAX))), "bad_ts");
    assert!(r.unchanged());
    // A checkpoint that was not stored leaves the change pending.
    assert_eq!(reason(r.ingest(&ev(WALL))), "ok");
    let ck = r.ckpt.as_mut().expect("on");
    ck.pending_changes = Some((9, r.changes));
    ck.storing = Some((9, Instant::now(), 0));
    assert!(!r.stored(9, Err("disk full".into())));
    assert!(!r.unchanged());
}

#[test]
fn a_restart_goes_on_with_the_idle_clock_where_it_would_be() {
    let wall = Arc::new(AtomicI64::new(WALL));
    // The last event (at event time 10:00) came 60 s of wall time before
    // now; the checkpoint recorded that base.
    let base = WALL - 3_600_000;
    let mut r = bare(&wall, 5_000).with_checkpoints(checkpoints(Some(manifest(
        base + 2_000,
        Some((base, WALL - 60_000)),
    ))));
    assert_eq!(r.clock, base + 2_000);
    r.housekeeping();
    assert!(
        (base + 60_000..base + 70_000).contains(&r.clock),
        "the idle clock counts the 60 s: {}",
        r.clock - base
    );
    // Without a recorded base (an older checkpoint) it counts from now.
    let mut r = bare(&wall, 5_000).with_checkpoints(checkpoints(Some(manifest(base, None))));
    r.housekeeping();
    assert_eq!(r.clock, base);
}

/// A node in this process that is silent past the timeout is busy, not
/// gone: it stays up (counted) until its thread ends. A node elsewhere that
/// is as silent is marked down.
#[test]
fn a_silent_in_process_node_stays_up_until_its_thread_ends() {
    let alive = NodeAlive::new();
    let cfg = RouterConfig {
        nodes: vec!["tcp://127.0.0.1:9".into(), "tcp://127.0.0.1:9".into()],
        in_process: vec![alive.clone()],
        node_timeout: Duration::from_millis(100),
        ..RouterConfig::default()
    };
    let mut r =
        Router::new(zmq::Context::new(), cfg, Arc::new(Status::default())).expect("a router");
    let long_ago = Instant::now() - Duration::from_secs(10);
    for l in &mut r.links {
        l.state = LinkState::Up;
        l.last_heard = long_ago;
    }
    r.housekeeping();
    assert_eq!(r.links[0].state, LinkState::Up, "busy, its thread runs");
    assert_eq!(
        r.links[1].state,
        LinkState::Down,
        "another host's node: timed out"
    );
    let status = r.status.clone();
    let busy = || status.counters.nodes_busy.load(Ordering::Relaxed);
    assert_eq!(busy(), 1);
    r.housekeeping();
    assert_eq!(busy(), 1, "one report per silence");
    drop(alive.guard()); // the thread ends
    r.housekeeping();
    assert_eq!(r.links[0].state, LinkState::Down, "its thread ended");
}
