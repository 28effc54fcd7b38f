//! The `library` workload: every event type of `rules/events.vgl`, with
//! values drawn so that the rule library's patterns and aggregates see both
//! ordinary traffic and now and then what they look for (tiny card probes,
//! big transfers, night ATM withdrawals, 5xx bursts, silent devices…).
//! Deterministic (seed, index), ids `e<i>` like the `gen` workload, event
//! time [`STEP_MS`] apart; event `i` depends only on the seed and `i`, so any
//! range can be generated on its own (a soak streams it).

/// Event time between two events: 20 events a second of event time, so a
/// long run covers the rule library's longest window (7 days) in about 12M
/// events and its state then stops growing.
pub const STEP_MS: i64 = 50;

use crate::replay::SplitMix;

/// Which synthetic workload `gen` and `load` produce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// `Txn` events only, over `card-<n>` (the benchmark workload of W1/W2).
    #[default]
    Txn,
    /// Every event type of `rules/events.vgl`, for the rule library.
    Library,
}

/// Events `from .. from + n` of a workload.
pub fn range(flavor: Flavor, from: u64, n: u64, keys: u64, seed: u64, base_ms: i64) -> Vec<String> {
    match flavor {
        Flavor::Txn => crate::replay::generate_range(from, n, keys, seed, base_ms),
        Flavor::Library => (from..from + n)
            .map(|i| event(seed, i, keys, base_ms))
            .collect(),
    }
}

/// Event `i` of the library workload over `keys` cards (accounts, devices,
/// traders and services are derived from it).
pub fn event(seed: u64, i: u64, keys: u64, base_ms: i64) -> String {
    // One generator per event: skipping to any index is free.
    let mut r = SplitMix(seed ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
    let keys = keys.max(16);
    let mut pick = |n: u64| r.next_u64() % n.max(1);
    let ts = base_ms + i as i64 * STEP_MS;
    let card = pick(keys);
    let account = card / 2;
    let head = format!("\"id\":\"e{i}\",\"ts\":{ts}");
    match pick(100) {
        0..40 => {
            let amount = match pick(100) {
                0..15 => 0.5 + pick(150) as f64 / 100.0,
                15..95 => 1.0 + pick(20_000) as f64 / 100.0,
                _ => 200.0 + pick(200_000) as f64 / 100.0,
            };
            let (country, lat, lon) = COUNTRIES[home(card, pick(20))];
            format!(
                "{{{head},\"type\":\"Txn\",\"card_id\":\"card-{card}\",\"account_id\":\"acct-{account}\",\
                 \"amount\":{amount:.2},\"currency\":\"USD\",\"merchant\":\"{}\",\"mcc\":{},\
                 \"country\":\"{country}\",\"status\":\"{}\",\"channel\":\"{}\",\
                 \"device_id\":\"dev-{}\",\"lat\":{lat},\"lon\":{lon}}}",
                MERCHANTS[pick(MERCHANTS.len() as u64) as usize],
                [5411, 5732, 5999, 6011, 7995][pick(5) as usize],
                if pick(10) == 0 {
                    "declined"
                } else {
                    "approved"
                },
                ["pos", "ecom", "ecom", "atm", "moto"][pick(5) as usize],
                account % 997,
            )
        }
        40..50 => {
            let (country, lat, lon) = COUNTRIES[home(account, pick(50))];
            format!(
                "{{{head},\"type\":\"Login\",\"account_id\":\"acct-{account}\",\"ok\":{},\
                 \"ip\":\"10.0.{}.{}\",\"country\":\"{country}\",\"device_id\":\"dev-{}\",\
                 \"lat\":{lat},\"lon\":{lon}}}",
                pick(4) != 0,
                pick(256),
                pick(256),
                if pick(4) == 0 {
                    pick(100_000)
                } else {
                    account % 997
                },
            )
        }
        50 => format!(
            "{{{head},\"type\":\"Logout\",\"account_id\":\"acct-{account}\",\"device_id\":\"dev-{}\",\"reason\":\"user\"}}",
            account % 997
        ),
        51 => format!(
            "{{{head},\"type\":\"PasswordReset\",\"account_id\":\"acct-{account}\",\"method\":\"email_link\",\
             \"ip\":\"10.1.0.{}\",\"device_id\":\"dev-{}\"}}",
            pick(256),
            account % 997
        ),
        52 => format!(
            "{{{head},\"type\":\"ProfileChange\",\"account_id\":\"acct-{account}\",\"field\":\"{}\",\
             \"ip\":\"10.2.0.{}\",\"device_id\":\"dev-{}\"}}",
            ["email", "phone", "address", "payee"][pick(4) as usize],
            pick(256),
            account % 997
        ),
        53..58 => format!(
            "{{{head},\"type\":\"Transfer\",\"account_id\":\"acct-{account}\",\"to_account\":\"acct-{}\",\
             \"amount\":{:.2},\"currency\":\"USD\",\"channel\":\"web\",\"device_id\":\"dev-{}\"}}",
            pick(5000),
            if pick(20) == 0 {
                2000.0 + pick(300_000) as f64 / 100.0
            } else {
                10.0 + pick(90_000) as f64 / 100.0
            },
            account % 997
        ),
        58..60 => format!(
            "{{{head},\"type\":\"Deposit\",\"account_id\":\"acct-{}\",\"amount\":{:.2},\"channel\":\"{}\",\"branch\":\"br-{}\"}}",
            card,
            if pick(5) == 0 {
                8000.0 + pick(200_000) as f64 / 100.0
            } else {
                100.0 + pick(300_000) as f64 / 100.0
            },
            ["cash", "cheque", "transfer"][pick(3) as usize],
            pick(40)
        ),
        60..62 => format!(
            "{{{head},\"type\":\"Refund\",\"card_id\":\"card-{card}\",\"account_id\":\"acct-{}\",\"merchant\":\"{}\",\
             \"amount\":{:.2},\"reason\":\"{}\"}}",
            account,
            MERCHANTS[pick(MERCHANTS.len() as u64) as usize],
            20.0 + pick(40_000) as f64 / 100.0,
            ["returned", "not_received", "not_as_described", "other"][pick(4) as usize]
        ),
        62..70 => {
            let device = pick(32);
            format!(
                "{{{head},\"type\":\"Heartbeat\",\"device_id\":\"hb-{device}\",\"site\":\"site-{}\",\
                 \"battery\":{:.1},\"firmware\":\"{}\"}}",
                device % 20,
                pick(1000) as f64 / 10.0,
                ["2.1.0", "2.2.0", "beta-3"][(device % 3) as usize]
            )
        }
        70..75 => format!(
            "{{{head},\"type\":\"SensorReading\",\"sensor_id\":\"s-{}\",\"device_id\":\"hb-{}\",\"site\":\"site-{}\",\
             \"kind\":\"temperature\",\"value\":{:.1},\"unit\":\"C\"}}",
            pick(300),
            pick(500),
            pick(20),
            pick(1200) as f64 / 10.0
        ),
        75..85 => format!(
            "{{{head},\"type\":\"Request\",\"service\":\"svc-{}\",\"route\":\"{}\",\"method\":\"GET\",\"status\":{},\
             \"latency_ms\":{:.1},\"client_ip\":\"10.3.{}.{}\"}}",
            pick(20),
            ["/health", "/api/cards", "/api/login", "/admin", "/api/pay"][pick(5) as usize],
            [200, 200, 200, 200, 200, 200, 201, 404, 401, 503][pick(10) as usize],
            5.0 + pick(4000) as f64 / 10.0,
            pick(4),
            pick(256)
        ),
        85..95 => {
            let trader = pick(5000);
            let symbol = symbol(pick(500));
            let order = pick(1_000_000);
            if pick(10) < 3 {
                format!(
                    "{{{head},\"type\":\"Cancel\",\"trader_id\":\"t-{trader}\",\"account_id\":\"acct-{}\",\
                     \"order_id\":\"o-{order}\",\"symbol\":\"{symbol}\"}}",
                    trader * 7
                )
            } else {
                format!(
                    "{{{head},\"type\":\"Order\",\"trader_id\":\"t-{trader}\",\"account_id\":\"acct-{}\",\
                     \"order_id\":\"o-{order}\",\"symbol\":\"{symbol}\",\"side\":\"{}\",\"qty\":{},\"price\":{:.2}}}",
                    trader * 7,
                    if pick(2) == 0 { "buy" } else { "sell" },
                    1 + pick(1000),
                    10.0 + pick(50_000) as f64 / 100.0
                )
            }
        }
        95..98 => {
            let trader = pick(5000);
            format!(
                "{{{head},\"type\":\"Trade\",\"trader_id\":\"t-{trader}\",\"symbol\":\"{}\",\"buyer_account\":\"acct-{}\",\
                 \"seller_account\":\"acct-{}\",\"qty\":{},\"price\":{:.2}}}",
                symbol(pick(500)),
                pick(300),
                pick(300),
                1 + pick(1000),
                10.0 + pick(50_000) as f64 / 100.0
            )
        }
        _ => format!(
            "{{{head},\"type\":\"Quote\",\"symbol\":\"{}\",\"price\":{:.2},\"venue\":\"XNAS\"}}",
            symbol(pick(500)),
            10.0 + pick(50_000) as f64 / 100.0
        ),
    }
}

/// A key's home country (an index into `COUNTRIES`), but abroad when `roll`
/// is 0 (1 in 20 card payments, 1 in 50 logins).
fn home(key: u64, roll: u64) -> usize {
    let k = if roll == 0 { key / 7 + 1 } else { key };
    (k % COUNTRIES.len() as u64) as usize
}

const COUNTRIES: [(&str, f64, f64); 7] = [
    ("US", 40.7, -74.0),
    ("US", 34.0, -118.2),
    ("GB", 51.5, -0.1),
    ("FR", 48.9, 2.4),
    ("BR", -23.5, -46.6),
    ("NG", 6.5, 3.4),
    ("SG", 1.3, 103.8),
];

const MERCHANTS: [&str; 8] = [
    "ACME GROCERY",
    "CITY FUEL",
    "GIFT CARD MALL",
    "COINBASE",
    "BOOKS & CO",
    "ATM 0042",
    "HOTEL CENTRAL",
    "ONLINE STORE",
];

/// Symbols `SYM0` … `SYM499`: few enough that a symbol sees quotes every
/// few seconds, enough that no symbol's five-minute window holds thousands.
fn symbol(n: u64) -> String {
    format!("SYM{}", n % 500)
}
