//! The gateway ↔ node wire protocol: a pure codec (bytes ↔ [`Msg`]), no I/O.
//!
//! Every ZeroMQ message body is one frame:
//!
//! ```text
//! "VG" | version: u8 | kind: u8 | body
//! ```
//!
//! Integers in bodies are LEB128 varints (signed ones zigzag-encoded), strings
//! are a varint byte length then UTF-8, floats are 8 bytes little-endian. The
//! `Error` kind (0xFF, body = UTF-8 text) has the same layout in every version,
//! so a peer speaking another version can always be told why it is refused.
//! `docs/protocol.md` is the reference; this module is the implementation.
//!
//! Decoding never panics and never allocates more than the input could hold:
//! every count is checked against the bytes that remain.

use crate::engine::Route;
use crate::value::{Event, Value};
use std::fmt;
use std::sync::Arc;

pub const MAGIC: [u8; 2] = *b"VG";
/// The protocol version this build speaks.
pub const VERSION: u8 = 3;
/// Kind byte of the version-independent error frame.
pub const KIND_ERROR: u8 = 0xFF;

/// Gateway → node: open (or re-open) a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// Random per gateway process: a node seeing a new one starts fresh.
    pub gateway: u64,
    pub node_index: u16,
    /// The virtual shards this node owns.
    pub shards: Vec<u16>,
    pub lateness_ms: i64,
    pub max_runs_per_key: u32,
}

/// Node → gateway: session accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    /// Random per node process: a new value means the node restarted.
    pub instance: u64,
    pub name: String,
    /// Rule-set version the node runs (0: none yet).
    pub rules_version: u64,
    /// Initial credit window, in event copies.
    pub credits: u32,
}

/// Gateway → node: run this rule set from now on.
#[derive(Debug, Clone, PartialEq)]
pub struct Deploy {
    pub version: u64,
    /// `.vgl` sources (file name, text), compiled by the node.
    pub files: Vec<(String, String)>,
    /// Per rule: (name, rule version, shadow).
    pub rules: Vec<(String, u32, bool)>,
}

/// Node → gateway: a deploy was applied (or why not).
#[derive(Debug, Clone, PartialEq)]
pub struct DeployAck {
    pub version: u64,
    pub error: Option<String>,
}

/// One routed copy of an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// Gateway sequence number of the event (copies share it).
    pub seq: u64,
    pub shard: u16,
    pub route: Route,
    /// The gateway's event-time clock (highest `ts` accepted) *before* this
    /// event; `i64::MIN` when none. The node's watermark follows it, so every
    /// shard sees the watermark a single engine would.
    pub clock: i64,
    pub event: Event,
}

/// Gateway → node: a batch of routed events, encoded against one rule set.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rules_version: u64,
    pub events: Vec<Routed>,
    /// The gateway's clock after the last event of the batch.
    pub clock: i64,
}

/// Node → gateway: more room, and progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Credit {
    pub grant: u32,
    /// Highest gateway sequence number processed.
    pub processed_seq: u64,
}

/// Node → gateway: one alert, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct WireAlert {
    pub id: String,
    /// `alert.<severity>.<rule>`.
    pub topic: String,
    pub shadow: bool,
    /// The alert JSON (spec §6).
    pub json: String,
    /// The matched events by binding, JSON (`{binding: [event…]}`): the
    /// explanation the gateway stores with the alert.
    pub events: String,
}

/// Node → gateway: figures, in answer to a ping.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub instance: u64,
    pub rules_version: u64,
    pub processed_seq: u64,
    pub events: u64,
    pub late: u64,
    pub alerts: u64,
    pub active_runs: u64,
    pub active_keys: u64,
    pub buffered: u64,
    pub shards_active: u32,
    pub rejected_batches: u64,
    /// The gateway clock every shard of the node has been advanced to (its
    /// timers fired, their alerts sent before this message); `i64::MIN`
    /// before any.
    pub clock: i64,
    /// Partial matches dropped at `max_run_events` (version 3).
    pub runs_dropped_events_cap: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Hello(Hello),
    Welcome(Welcome),
    Deploy(Deploy),
    DeployAck(DeployAck),
    Events(Batch),
    Credit(Credit),
    Alerts(Vec<WireAlert>),
    /// Gateway → node: the clock moved without events for this node.
    Advance {
        clock: i64,
    },
    Ping {
        nonce: u64,
    },
    Stats(Stats),
    /// Node → gateway: shutting down, everything received was processed.
    Bye {
        reason: String,
    },
    /// Gateway → node: replace (or create) a reference list.
    SetList {
        name: String,
        entries: Vec<String>,
    },
    /// Gateway → node: snapshot every shard engine now (everything sent
    /// before this message is processed; nothing after it is).
    Checkpoint {
        id: u64,
    },
    /// Node → gateway: one shard's engine state for checkpoint `checkpoint`.
    ShardState {
        checkpoint: u64,
        shard: u16,
        state: Vec<u8>,
    },
    /// Node → gateway: every `ShardState` of checkpoint `id` has been sent.
    CheckpointDone {
        id: u64,
        shards: u32,
    },
    /// Gateway → node: take over `shard` with this state (empty: start empty).
    /// The shard is held off the node's clock until `Resume` names it, so the
    /// events replayed after it are matched at the clock they first had.
    Restore {
        shard: u16,
        state: Vec<u8>,
    },
    /// Gateway → node: the replay for these restored shards is done; they
    /// follow the node's clock again.
    Resume {
        shards: Vec<u16>,
    },
    /// Gateway → node: these shards moved to another node; drop their state.
    Release {
        shards: Vec<u16>,
    },
    /// Either way: the message before could not be accepted.
    Error {
        text: String,
    },
}

impl Msg {
    pub fn kind(&self) -> u8 {
        match self {
            Msg::Hello(_) => 1,
            Msg::Welcome(_) => 2,
            Msg::Deploy(_) => 3,
            Msg::DeployAck(_) => 4,
            Msg::Events(_) => 5,
            Msg::Credit(_) => 6,
            Msg::Alerts(_) => 7,
            Msg::Advance { .. } => 8,
            Msg::Ping { .. } => 9,
            Msg::Stats(_) => 10,
            Msg::Bye { .. } => 11,
            Msg::SetList { .. } => 12,
            Msg::Checkpoint { .. } => 13,
            Msg::ShardState { .. } => 14,
            Msg::CheckpointDone { .. } => 15,
            Msg::Restore { .. } => 16,
            Msg::Resume { .. } => 17,
            Msg::Release { .. } => 18,
            Msg::Error { .. } => KIND_ERROR,
        }
    }
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    Truncated,
    BadMagic,
    /// The peer speaks another protocol version.
    Version {
        got: u8,
    },
    UnknownKind(u8),
    BadUtf8,
    Invalid(&'static str),
    TrailingBytes(usize),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => write!(f, "message truncated"),
            WireError::BadMagic => write!(f, "not a Vigil wire message (bad magic)"),
            WireError::Version { got } => write!(
                f,
                "peer speaks Vigil wire protocol version {got}; this build speaks version {VERSION}"
            ),
            WireError::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            WireError::BadUtf8 => write!(f, "a string is not valid UTF-8"),
            WireError::Invalid(what) => write!(f, "invalid {what}"),
            WireError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the message"),
        }
    }
}

impl std::error::Error for WireError {}

// ---------------------------------------------------------------------------
// Encoding

/// Encodes a message into a fresh buffer.
pub fn encode(msg: &Msg) -> Vec<u8> {
    let mut w = Writer::with_header(msg.kind());
    match msg {
        Msg::Hello(h) => {
            w.u64(h.gateway);
            w.u64(u64::from(h.node_index));
            w.u64(h.shards.len() as u64);
            for s in &h.shards {
                w.u64(u64::from(*s));
            }
            w.i64(h.lateness_ms);
            w.u64(u64::from(h.max_runs_per_key));
        }
        Msg::Welcome(x) => {
            w.u64(x.instance);
            w.str(&x.name);
            w.u64(x.rules_version);
            w.u64(u64::from(x.credits));
        }
        Msg::Deploy(d) => {
            w.u64(d.version);
            w.u64(d.files.len() as u64);
            for (name, text) in &d.files {
                w.str(name);
                w.str(text);
            }
            w.u64(d.rules.len() as u64);
            for (name, version, shadow) in &d.rules {
                w.str(name);
                w.u64(u64::from(*version));
                w.bool(*shadow);
            }
        }
        Msg::DeployAck(a) => {
            w.u64(a.version);
            match &a.error {
                None => w.bool(false),
                Some(e) => {
                    w.bool(true);
                    w.str(e);
                }
            }
        }
        Msg::Events(b) => {
            let mut enc = BatchWriter::new(b.rules_version);
            for r in &b.events {
                enc.push(r);
            }
            return enc.finish(b.clock);
        }
        Msg::Credit(c) => {
            w.u64(u64::from(c.grant));
            w.u64(c.processed_seq);
        }
        Msg::Alerts(alerts) => {
            w.u64(alerts.len() as u64);
            for a in alerts {
                w.str(&a.id);
                w.str(&a.topic);
                w.bool(a.shadow);
                w.str(&a.json);
                w.str(&a.events);
            }
        }
        Msg::Advance { clock } => w.i64(*clock),
        Msg::Ping { nonce } => w.u64(*nonce),
        Msg::Stats(s) => {
            for v in [
                s.instance,
                s.rules_version,
                s.processed_seq,
                s.events,
                s.late,
                s.alerts,
                s.active_runs,
                s.active_keys,
                s.buffered,
                u64::from(s.shards_active),
                s.rejected_batches,
            ] {
                w.u64(v);
            }
            w.i64(s.clock);
            w.u64(s.runs_dropped_events_cap);
        }
        Msg::Bye { reason } => w.str(reason),
        Msg::SetList { name, entries } => {
            w.str(name);
            w.u64(entries.len() as u64);
            for e in entries {
                w.str(e);
            }
        }
        Msg::Checkpoint { id } => w.u64(*id),
        Msg::ShardState {
            checkpoint,
            shard,
            state,
        } => {
            w.u64(*checkpoint);
            w.u64(u64::from(*shard));
            w.bytes(state);
        }
        Msg::CheckpointDone { id, shards } => {
            w.u64(*id);
            w.u64(u64::from(*shards));
        }
        Msg::Restore { shard, state } => {
            w.u64(u64::from(*shard));
            w.bytes(state);
        }
        Msg::Resume { shards } | Msg::Release { shards } => {
            w.u64(shards.len() as u64);
            for s in shards {
                w.u64(u64::from(*s));
            }
        }
        Msg::Error { text } => w.buf.extend_from_slice(text.as_bytes()),
    }
    w.buf
}

/// Builds an `Events` message record by record, without an intermediate
/// `Vec<Routed>` (the gateway's hot path).
pub struct BatchWriter {
    w: Writer,
    count: u32,
    last_seq: u64,
    count_at: usize,
}

impl BatchWriter {
    pub fn new(rules_version: u64) -> BatchWriter {
        let mut w = Writer::with_header(5);
        w.u64(rules_version);
        let count_at = w.buf.len();
        // Fixed-width placeholder for the record count, patched by `finish`.
        w.buf.extend_from_slice(&[0; 4]);
        BatchWriter {
            w,
            count: 0,
            last_seq: 0,
            count_at,
        }
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn bytes(&self) -> usize {
        self.w.buf.len()
    }

    pub fn push(&mut self, r: &Routed) {
        self.push_parts(r.seq, r.shard, r.route, r.clock, &r.event);
    }

    pub fn push_parts(&mut self, seq: u64, shard: u16, route: Route, clock: i64, ev: &Event) {
        let w = &mut self.w;
        w.u64(seq.wrapping_sub(self.last_seq));
        self.last_seq = seq;
        w.u64(u64::from(shard));
        w.u64(match route {
            Route::All => 0,
            Route::Global => 1,
            Route::Key(s) => 2 + u64::from(s),
        });
        w.u64(u64::from(ev.ty));
        w.i64(ev.ts);
        w.i64(clock.wrapping_sub(ev.ts));
        w.str(&ev.id);
        w.u64(ev.fields.len() as u64);
        for v in ev.fields.iter() {
            match v {
                Value::Missing => w.buf.push(0),
                Value::Str(s) => {
                    w.buf.push(1);
                    w.str(s);
                }
                Value::Int(i) => {
                    w.buf.push(2);
                    w.i64(*i);
                }
                Value::Float(f) => {
                    w.buf.push(3);
                    w.buf.extend_from_slice(&f.to_le_bytes());
                }
                Value::Bool(b) => w.buf.push(if *b { 5 } else { 4 }),
                Value::Time(t) => {
                    w.buf.push(6);
                    w.i64(*t);
                }
            }
        }
        self.count += 1;
    }

    /// Seals the batch with the gateway clock after its last event.
    pub fn finish(mut self, clock: i64) -> Vec<u8> {
        self.w.i64(clock);
        self.w.buf[self.count_at..self.count_at + 4].copy_from_slice(&self.count.to_le_bytes());
        self.w.buf
    }
}

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn with_header(kind: u8) -> Writer {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&MAGIC);
        buf.push(VERSION);
        buf.push(kind);
        Writer { buf }
    }

    fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    fn bool(&mut self, b: bool) {
        self.buf.push(u8::from(b));
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.buf.extend_from_slice(b);
    }
}

// ---------------------------------------------------------------------------
// Decoding

/// Decodes one message. A frame of another protocol version is refused with
/// [`WireError::Version`], except the version-independent error frame.
pub fn decode(bytes: &[u8]) -> Result<Msg, WireError> {
    if bytes.len() < 4 {
        return Err(if bytes.len() >= 2 && bytes[..2] != MAGIC {
            WireError::BadMagic
        } else {
            WireError::Truncated
        });
    }
    if bytes[..2] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let (version, kind) = (bytes[2], bytes[3]);
    let body = &bytes[4..];
    if kind == KIND_ERROR {
        let text = std::str::from_utf8(body).map_err(|_| WireError::BadUtf8)?;
        return Ok(Msg::Error {
            text: text.to_string(),
        });
    }
    if version != VERSION {
        return Err(WireError::Version { got: version });
    }
    let mut r = Reader { buf: body };
    let msg = match kind {
        1 => {
            let gateway = r.u64()?;
            let node_index = r.u16()?;
            let n = r.count(1)?;
            let mut shards = Vec::with_capacity(n);
            for _ in 0..n {
                shards.push(r.u16()?);
            }
            Msg::Hello(Hello {
                gateway,
                node_index,
                shards,
                lateness_ms: r.i64()?,
                max_runs_per_key: r.u32()?,
            })
        }
        2 => Msg::Welcome(Welcome {
            instance: r.u64()?,
            name: r.string()?,
            rules_version: r.u64()?,
            credits: r.u32()?,
        }),
        3 => {
            let version = r.u64()?;
            let n = r.count(2)?;
            let mut files = Vec::with_capacity(n);
            for _ in 0..n {
                files.push((r.string()?, r.string()?));
            }
            let n = r.count(3)?;
            let mut rules = Vec::with_capacity(n);
            for _ in 0..n {
                rules.push((r.string()?, r.u32()?, r.bool()?));
            }
            Msg::Deploy(Deploy {
                version,
                files,
                rules,
            })
        }
        4 => {
            let version = r.u64()?;
            let error = if r.bool()? { Some(r.string()?) } else { None };
            Msg::DeployAck(DeployAck { version, error })
        }
        5 => Msg::Events(decode_batch(&mut r)?),
        6 => Msg::Credit(Credit {
            grant: r.u32()?,
            processed_seq: r.u64()?,
        }),
        7 => {
            let n = r.count(4)?;
            let mut alerts = Vec::with_capacity(n);
            for _ in 0..n {
                alerts.push(WireAlert {
                    id: r.string()?,
                    topic: r.string()?,
                    shadow: r.bool()?,
                    json: r.string()?,
                    events: r.string()?,
                });
            }
            Msg::Alerts(alerts)
        }
        8 => Msg::Advance { clock: r.i64()? },
        9 => Msg::Ping { nonce: r.u64()? },
        10 => Msg::Stats(Stats {
            instance: r.u64()?,
            rules_version: r.u64()?,
            processed_seq: r.u64()?,
            events: r.u64()?,
            late: r.u64()?,
            alerts: r.u64()?,
            active_runs: r.u64()?,
            active_keys: r.u64()?,
            buffered: r.u64()?,
            shards_active: r.u32()?,
            rejected_batches: r.u64()?,
            clock: r.i64()?,
            runs_dropped_events_cap: r.u64()?,
        }),
        11 => Msg::Bye {
            reason: r.string()?,
        },
        12 => {
            let name = r.string()?;
            let n = r.count(1)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(r.string()?);
            }
            Msg::SetList { name, entries }
        }
        13 => Msg::Checkpoint { id: r.u64()? },
        14 => Msg::ShardState {
            checkpoint: r.u64()?,
            shard: r.u16()?,
            state: r.bytes()?.to_vec(),
        },
        15 => Msg::CheckpointDone {
            id: r.u64()?,
            shards: r.u32()?,
        },
        16 => Msg::Restore {
            shard: r.u16()?,
            state: r.bytes()?.to_vec(),
        },
        17 | 18 => {
            let n = r.count(1)?;
            let mut shards = Vec::with_capacity(n);
            for _ in 0..n {
                shards.push(r.u16()?);
            }
            if kind == 17 {
                Msg::Resume { shards }
            } else {
                Msg::Release { shards }
            }
        }
        k => return Err(WireError::UnknownKind(k)),
    };
    if !r.buf.is_empty() {
        return Err(WireError::TrailingBytes(r.buf.len()));
    }
    Ok(msg)
}

fn decode_batch(r: &mut Reader<'_>) -> Result<Batch, WireError> {
    let rules_version = r.u64()?;
    let n = u32::from_le_bytes(r.take(4)?.try_into().map_err(|_| WireError::Truncated)?);
    // The smallest record is 8 bytes: seq delta, shard, route, type, ts,
    // clock delta, id length and field count, one byte each.
    let n = r.bounded(u64::from(n), 8)?;
    let mut events = Vec::with_capacity(n);
    let mut seq = 0u64;
    for _ in 0..n {
        seq = seq.wrapping_add(r.u64()?);
        let shard = r.u16()?;
        let route = match r.u64()? {
            0 => Route::All,
            1 => Route::Global,
            s => Route::Key(u16::try_from(s - 2).map_err(|_| WireError::Invalid("route"))?),
        };
        let ty = r.u16()?;
        let ts = r.i64()?;
        let clock = ts.wrapping_add(r.i64()?);
        let id: Arc<str> = Arc::from(r.str()?);
        let nf = r.count(1)?;
        let mut fields = Vec::with_capacity(nf);
        for _ in 0..nf {
            fields.push(match r.byte()? {
                0 => Value::Missing,
                1 => Value::Str(Arc::from(r.str()?)),
                2 => Value::Int(r.i64()?),
                3 => Value::Float(f64::from_le_bytes(
                    r.take(8)?.try_into().map_err(|_| WireError::Truncated)?,
                )),
                4 => Value::Bool(false),
                5 => Value::Bool(true),
                6 => Value::Time(r.i64()?),
                _ => return Err(WireError::Invalid("value tag")),
            });
        }
        events.push(Routed {
            seq,
            shard,
            route,
            clock,
            event: Event {
                ty,
                ts,
                id,
                fields: fields.into_boxed_slice(),
                seq: 0,
            },
        });
    }
    Ok(Batch {
        rules_version,
        events,
        clock: r.i64()?,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, WireError> {
        let (&b, rest) = self.buf.split_first().ok_or(WireError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            if i == 9 && b > 1 {
                return Err(WireError::Invalid("varint"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::Invalid("varint"))
    }

    fn i64(&mut self) -> Result<i64, WireError> {
        let z = self.u64()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        u32::try_from(self.u64()?).map_err(|_| WireError::Invalid("u32"))
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        u16::try_from(self.u64()?).map_err(|_| WireError::Invalid("u16"))
    }

    fn bool(&mut self) -> Result<bool, WireError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid("bool")),
        }
    }

    fn str(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError::BadUtf8)
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| WireError::Truncated)?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, WireError> {
        self.str().map(str::to_string)
    }

    /// A count of items at least `min_item` bytes each.
    fn count(&mut self, min_item: usize) -> Result<usize, WireError> {
        let n = self.u64()?;
        self.bounded(n, min_item)
    }

    fn bounded(&self, n: u64, min_item: usize) -> Result<usize, WireError> {
        let max = (self.buf.len() / min_item.max(1)) as u64;
        if n > max {
            return Err(WireError::Truncated);
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ty: u16, ts: i64, id: &str, fields: Vec<Value>) -> Event {
        Event {
            ty,
            ts,
            id: Arc::from(id),
            fields: fields.into_boxed_slice(),
            seq: 0,
        }
    }

    fn samples() -> Vec<Msg> {
        vec![
            Msg::Hello(Hello {
                gateway: u64::MAX,
                node_index: 2,
                shards: vec![0, 1, 1023],
                lateness_ms: 5_000,
                max_runs_per_key: 10_000,
            }),
            Msg::Welcome(Welcome {
                instance: 7,
                name: "node-β".into(),
                rules_version: 0,
                credits: 65_536,
            }),
            Msg::Deploy(Deploy {
                version: 3,
                files: vec![("a.vgl".into(), "event A { x: int }\n".into())],
                rules: vec![("r".into(), 2, true), ("s".into(), 1, false)],
            }),
            Msg::DeployAck(DeployAck {
                version: 3,
                error: None,
            }),
            Msg::DeployAck(DeployAck {
                version: 4,
                error: Some("a.vgl:1:1: nope".into()),
            }),
            Msg::Events(Batch {
                rules_version: 3,
                events: vec![
                    Routed {
                        seq: 10,
                        shard: 5,
                        route: Route::Key(0),
                        clock: i64::MIN,
                        event: ev(
                            1,
                            1_767_607_200_000,
                            "e1",
                            vec![
                                Value::Str(Arc::from("c1")),
                                Value::Int(-42),
                                Value::Float(2.5),
                                Value::Bool(true),
                                Value::Bool(false),
                                Value::Time(-1),
                                Value::Missing,
                            ],
                        ),
                    },
                    Routed {
                        seq: 10,
                        shard: 0,
                        route: Route::Global,
                        clock: 1_767_607_200_000,
                        event: ev(0, i64::MAX, "", vec![Value::Float(f64::NAN)]),
                    },
                    Routed {
                        seq: 11,
                        shard: 1023,
                        route: Route::All,
                        clock: i64::MAX,
                        event: ev(0, i64::MIN, "e3", vec![]),
                    },
                ],
                clock: i64::MAX,
            }),
            Msg::Events(Batch {
                rules_version: 0,
                events: vec![],
                clock: i64::MIN,
            }),
            Msg::Credit(Credit {
                grant: 4096,
                processed_seq: 99,
            }),
            Msg::Alerts(vec![WireAlert {
                id: "9f2c".into(),
                topic: "alert.high.card_testing".into(),
                shadow: false,
                json: "{\"id\":\"9f2c\"}".into(),
                events: "{}".into(),
            }]),
            Msg::SetList {
                name: "blocked".into(),
                entries: vec!["a".into(), "ü".into(), String::new()],
            },
            Msg::Advance { clock: -5 },
            Msg::Ping { nonce: 1 << 40 },
            Msg::Stats(Stats {
                instance: 1,
                rules_version: 2,
                processed_seq: 3,
                events: 4,
                late: 5,
                alerts: 6,
                active_runs: 7,
                active_keys: 8,
                buffered: 9,
                shards_active: 10,
                rejected_batches: 11,
                clock: -12,
                runs_dropped_events_cap: 13,
            }),
            Msg::Bye {
                reason: "shutdown".into(),
            },
            Msg::Checkpoint { id: 7 },
            Msg::ShardState {
                checkpoint: 7,
                shard: 1023,
                state: vec![0, 255, 1, 2],
            },
            Msg::CheckpointDone { id: 7, shards: 512 },
            Msg::Restore {
                shard: 3,
                state: vec![],
            },
            Msg::Resume {
                shards: vec![3, 4, 1023],
            },
            Msg::Release { shards: vec![] },
            Msg::Error { text: "no".into() },
        ]
    }

    /// NaN != NaN, so compare through the encoding.
    fn same(a: &Msg, b: &Msg) -> bool {
        encode(a) == encode(b)
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let bytes = encode(&m);
            let back = decode(&bytes).unwrap_or_else(|e| panic!("{m:?}: {e}"));
            assert!(same(&m, &back), "{m:?} came back as {back:?}");
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for m in samples() {
            let bytes = encode(&m);
            for cut in 0..bytes.len() {
                // The error frame's body is free text: any cut after the header
                // is still a (shorter) error frame.
                if matches!(m, Msg::Error { .. }) && cut >= 4 {
                    continue;
                }
                assert!(decode(&bytes[..cut]).is_err(), "{m:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn another_version_is_refused_with_a_clear_error() {
        let mut bytes = encode(&Msg::Ping { nonce: 1 });
        bytes[2] = 1;
        let err = decode(&bytes).expect_err("version 1");
        assert_eq!(err, WireError::Version { got: 1 });
        assert_eq!(
            err.to_string(),
            "peer speaks Vigil wire protocol version 1; this build speaks version 3"
        );
        // The error frame reads the same in every version.
        let mut e = encode(&Msg::Error { text: "why".into() });
        e[2] = 9;
        assert_eq!(decode(&e), Ok(Msg::Error { text: "why".into() }));
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(decode(b"GET / HTTP/1.1"), Err(WireError::BadMagic));
        assert_eq!(decode(b"VG"), Err(WireError::Truncated));
        assert_eq!(
            decode(&[b'V', b'G', VERSION, 0x63]),
            Err(WireError::UnknownKind(0x63))
        );
        let mut extra = encode(&Msg::Ping { nonce: 1 });
        extra.push(0);
        assert_eq!(decode(&extra), Err(WireError::TrailingBytes(1)));
        // A count far beyond the bytes present must not allocate it.
        let mut huge = Writer::with_header(7);
        huge.u64(u64::MAX >> 1);
        assert_eq!(decode(&huge.buf), Err(WireError::Truncated));
        // Overlong varint.
        let mut over = Writer::with_header(9);
        over.buf.extend_from_slice(&[0xff; 11]);
        assert!(decode(&over.buf).is_err());
    }

    #[test]
    fn a_batch_of_smallest_records_decodes() {
        // Found by fuzzing (wire_decode): 8-byte records (empty id, no
        // fields, small numbers) were refused as truncated by a bound that
        // assumed 9 bytes each, so re-encoding a decoded message failed.
        let mut w = BatchWriter::new(1);
        for seq in 1..=16 {
            w.push_parts(seq, 0, Route::All, 0, &ev(0, 0, "", vec![]));
        }
        let bytes = w.finish(0);
        match decode(&bytes) {
            Ok(Msg::Events(b)) => assert_eq!(b.events.len(), 16),
            other => panic!("{other:?}"),
        }
        let fuzzed: &[u8] = &[
            86, 71, 2, 5, 86, 9, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0,
            0, 16, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 162, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 216, 61, 216, 2, 216,
            216, 216, 71, 2, 9, 37, 0, 0,
        ];
        if let Ok(msg) = decode(fuzzed) {
            let again = encode(&msg);
            assert_eq!(decode(&again).map(|m| encode(&m)), Ok(again));
        }
    }

    #[test]
    fn batch_writer_matches_encode() {
        let m = &samples()[5];
        let Msg::Events(b) = m else {
            unreachable!("sample 5 is a batch")
        };
        let mut w = BatchWriter::new(b.rules_version);
        for r in &b.events {
            w.push(r);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.finish(b.clock), encode(m));
    }
}
