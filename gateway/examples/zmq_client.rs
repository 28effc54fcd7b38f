//! A trading-system client in a few lines: sends a JSONL file of events to the
//! gateway's acknowledged ZeroMQ ingest (DEALER → ROUTER), prints the
//! acknowledgement, then prints the alerts that arrive on the PUB socket.
//!
//! ```sh
//! cargo run --release -p vigil-gateway --example zmq_client -- rules/tests/lib_card_testing/events.jsonl
//! ```
//!
//! Options (positional, after the file): ROUTER endpoint (default
//! tcp://127.0.0.1:7702), PUB endpoint (default tcp://127.0.0.1:7703), seconds to
//! wait for alerts (default 3).

use std::io::BufRead;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: zmq_client EVENTS.jsonl [ROUTER] [PUB] [WAIT_SECONDS]");
        std::process::exit(2);
    };
    let router = args.get(1).map_or("tcp://127.0.0.1:7702", String::as_str);
    let publ = args.get(2).map_or("tcp://127.0.0.1:7703", String::as_str);
    let wait: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);

    let ctx = zmq::Context::new();
    // Subscribe first, so no alert is missed.
    let sub = ctx.socket(zmq::SUB)?;
    sub.connect(publ)?;
    sub.set_subscribe(b"alert.")?;
    std::thread::sleep(Duration::from_millis(200));

    let events: Vec<String> = std::io::BufReader::new(std::fs::File::open(path)?)
        .lines()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let dealer = ctx.socket(zmq::DEALER)?;
    dealer.connect(router)?;
    // One multipart message = one batch; each frame is one JSON event.
    dealer.send_multipart(events.iter().map(String::as_bytes), 0)?;
    dealer.set_rcvtimeo(5_000)?;
    let ack = dealer.recv_string(0)?.unwrap_or_default();
    println!("sent {} events; gateway ack: {ack}", events.len());

    let until = Instant::now() + Duration::from_secs(wait);
    sub.set_rcvtimeo(200)?;
    let mut n = 0;
    while Instant::now() < until {
        let Ok(frames) = sub.recv_multipart(0) else {
            continue;
        };
        if let [topic, body] = frames.as_slice() {
            n += 1;
            println!(
                "{}  {}",
                String::from_utf8_lossy(topic),
                String::from_utf8_lossy(body)
            );
        }
    }
    println!("{n} alerts");
    Ok(())
}
