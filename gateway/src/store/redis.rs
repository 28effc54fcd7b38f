//! The Redis backend: records as JSON under `{namespace}:…` keys, through a
//! [`ConnectionManager`] (one multiplexed connection, reconnected on error).
//!
//! Layout, with `ns` the namespace:
//!
//! | key                          | type   | holds                                             |
//! |------------------------------|--------|---------------------------------------------------|
//! | `ns:keys`                    | hash   | key name → `ApiKey` JSON                          |
//! | `ns:key_hashes`              | hash   | secret hash → key name                            |
//! | `ns:version_seq:RULE`        | string | last version number of RULE (INCR)                |
//! | `ns:versions:RULE`           | hash   | version number → `RuleVersion` JSON               |
//! | `ns:rule_states`             | hash   | rule name → `RuleState` JSON                      |
//! | `ns:schema`                  | string | the schema text                                   |
//! | `ns:audit`                   | list   | `AuditEntry` JSON; seq = index + 1 (RPUSH)        |
//! | `ns:alerts`                  | hash   | alert id → `StoredAlert` JSON                     |
//! | `ns:alerts_by_time`          | zset   | score 0, member `AT20:ID` (lexical order)         |
//! | `ns:lists`                   | set    | list names (a list may be empty)                  |
//! | `ns:list:NAME`               | set    | entries of list NAME                              |
//! | `ns:lists_revision`          | string | list change counter (INCR)                        |
//! | `ns:webhooks`                | hash   | webhook id → `Webhook` JSON                       |
//! | `ns:webhook_dedup:WH\0ALERT` | string | `AT20` of the expiry; TTL `dedup_until - created_at` ms |
//! | `ns:deliveries`              | hash   | `MSG\0WH` → pending `Delivery` JSON               |
//! | `ns:deliveries_index`        | hash   | `MSG\0WH` → its `NEXT20:CREATED20:MSG\0WH`        |
//! | `ns:deliveries_by_due`       | zset   | score 0, `NEXT20:CREATED20:MSG\0WH`               |
//! | `ns:deliveries_by_age`       | zset   | score 0, `CREATED20:MSG\0WH`                      |
//! | `ns:deliveries_of:WH`        | zset   | score 0, `CREATED20:MSG` (one webhook's)          |
//! | `ns:dead_letters…`           |        | the dead letters, as `deliveries…` (no `by_due`)  |
//! | `ns:delivery_log:WH`         | list   | `DeliveryAttempt` JSON, newest first (LPUSH, LTRIM) |
//! | `ns:ckpt:current`            | string | the current `CheckpointManifest` JSON             |
//! | `ns:ckpt:current_id`         | string | its id as `ID20`                                  |
//! | `ns:ckpt:chunks`             | zset   | score 0, `ID20:SHARD:I` of every chunk key written |
//! | `ns:ckpt:ID20:SHARD:I`       | string | chunk I of SHARD's blob in checkpoint ID (bytes)  |
//!
//! Multi-key steps that must be atomic (key uniqueness, version numbering,
//! idempotent alert insert with trimming, list changes with the revision
//! bump, delivery queue changes with their indexes and the dedup record, the
//! checkpoint switch) are Lua scripts.
//!
//! A checkpoint put takes four round trips: `GET ns:ckpt:current_id` (the
//! new id must be above it); one pipeline adding the chunk members to
//! `ns:ckpt:chunks` and then `SET`ting the chunks; the switch script, which
//! sets `ns:ckpt:current` and `current_id` unless a newer checkpoint is
//! current and returns the chunk members of every lower id; one pipeline
//! deleting (`UNLINK`) those chunk keys and then their members. A crash before the
//! switch leaves chunks that `ns:ckpt:chunks` still names, deleted by the
//! next put that succeeds; a crash before the deletion leaves them named
//! too.
//!
//! `AT20` is `at` with its sign bit flipped, as 20 zero-padded decimal
//! digits, so that byte order of members is (at, id) order; `ID20` is a
//! checkpoint id as 20 zero-padded digits, for the same reason. Webhook and
//! message ids never contain NUL (checked on write), so `MSG\0WH` is
//! unambiguous.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, RedisResult, Script};

use super::{
    AlertFilter, AlertPage, ApiKey, AuditEntry, CHECKPOINT_CHUNK, CheckpointManifest, Cursor,
    DEFAULT_MAX_ALERTS, DELIVERY_LOG_MAX, DeadCursor, Delivery, DeliveryAttempt, RuleState,
    RuleVersion, StoreError, StoreResult, StoredAlert, Webhook, filter_matches, from_json,
    join_chunks, page, to_json,
};

/// Alerts fetched by the first round trip of a query scan; each further
/// round trip fetches twice as many, up to `SCAN_BATCH_MAX`.
const SCAN_BATCH: usize = 128;
const SCAN_BATCH_MAX: usize = 4096;
/// Members per SADD/SREM call inside scripts (Lua's `unpack` has a limit).
const LUA_CHUNK: usize = 1000;
/// Keys or members per ZADD/UNLINK/ZREM command of a checkpoint put.
const CKPT_BATCH: usize = 1000;

/// KEYS: keys, key_hashes. ARGV: name, hash, json.
/// Returns 0 stored, 1 name taken, 2 hash taken.
static PUT_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 0
",
    )
});

/// KEYS: version_seq, versions. ARGV: json (its `version` is rewritten on
/// read from the hash field). Returns the new version number.
static CREATE_VERSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], n, ARGV[1])
return n
",
    )
});

/// KEYS: alerts, alerts_by_time. ARGV: id, member, json, max alerts.
/// Returns 0 if the id was already stored, else 1.
static PUT_ALERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[2])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if excess > 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
  for _, member in ipairs(oldest) do
    redis.call('HDEL', KEYS[1], string.sub(member, 22))
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
end
return 1
",
    )
});

/// KEYS: lists, list, lists_revision. ARGV: name, entries…
static PUT_LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
redis.call('DEL', KEYS[2])
for i = 2, #ARGV, {LUA_CHUNK} do
  redis.call('SADD', KEYS[2], unpack(ARGV, i, math.min(i + {LUA_CHUNK} - 1, #ARGV)))
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[3])
return 1
"
    ))
});

/// KEYS: lists, list, lists_revision. ARGV: SADD or SREM, name, entries…
/// Returns -1 if there is no such list, else how many entries changed.
static CHANGE_LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 then return -1 end
local n = 0
for i = 3, #ARGV, {LUA_CHUNK} do
  n = n + redis.call(ARGV[1], KEYS[2], unpack(ARGV, i, math.min(i + {LUA_CHUNK} - 1, #ARGV)))
end
if n > 0 then redis.call('INCR', KEYS[3]) end
return n
"
    ))
});

/// KEYS: lists, list, lists_revision. ARGV: name. Returns 1 if deleted.
static DELETE_LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('INCR', KEYS[3])
return 1
",
    )
});

/// Lua functions on a delivery queue `q` = {records, index, by_age, of
/// [, by_due]} (see the layout). `m` is the record's `NEXT20:CREATED20:FIELD`
/// member, kept in `index` so that removing needs only the field.
const QUEUE_LUA: &str = r"
local function q_remove(q, field, msg)
  local m = redis.call('HGET', q[2], field)
  if not m then return false end
  local json = redis.call('HGET', q[1], field)
  redis.call('HDEL', q[1], field)
  redis.call('HDEL', q[2], field)
  local c = string.sub(m, 22, 41)
  redis.call('ZREM', q[3], c .. ':' .. field)
  redis.call('ZREM', q[4], c .. ':' .. msg)
  if q[5] then redis.call('ZREM', q[5], m) end
  return json
end
local function q_insert(q, field, msg, m, json)
  q_remove(q, field, msg)
  redis.call('HSET', q[1], field, json)
  redis.call('HSET', q[2], field, m)
  local c = string.sub(m, 22, 41)
  redis.call('ZADD', q[3], 0, c .. ':' .. field)
  redis.call('ZADD', q[4], 0, c .. ':' .. msg)
  if q[5] then redis.call('ZADD', q[5], 0, m) end
end
";

/// KEYS: dedup, then the pending queue (5). ARGV: AT20 created_at, AT20
/// dedup_until, dedup TTL ms, field, msg, member, json.
/// Returns 0 (duplicate, nothing stored) or 1.
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            QUEUE_LUA,
            r"
local v = redis.call('GET', KEYS[1])
if v and v > ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
q_insert({KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}, ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return 1
",
        ]
        .concat(),
    )
});

/// KEYS: the pending queue (5). ARGV: field, msg, member, json.
/// Returns 0 if there is no such pending delivery, else 1.
static UPDATE_DELIVERY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            QUEUE_LUA,
            r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
q_insert(KEYS, ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
",
        ]
        .concat(),
    )
});

/// KEYS: a queue (4 or 5). ARGV: field, msg. Returns the removed JSON or nil.
static QUEUE_REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            QUEUE_LUA,
            r"
return q_remove(KEYS, ARGV[1], ARGV[2])
",
        ]
        .concat(),
    )
});

/// KEYS: the pending queue (5), the dead letters (4). ARGV: field, msg,
/// member, json.
static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            QUEUE_LUA,
            r"
q_remove({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}, ARGV[1], ARGV[2])
q_insert({KEYS[6], KEYS[7], KEYS[8], KEYS[9]}, ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
",
        ]
        .concat(),
    )
});

/// KEYS: webhooks, the pending queue (5), the dead letters (4), the
/// delivery log. ARGV: webhook id. Returns 1 if the webhook existed.
static DELETE_WEBHOOK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            QUEUE_LUA,
            r"
local existed = redis.call('HDEL', KEYS[1], ARGV[1])
local queues = {{KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}, {KEYS[7], KEYS[8], KEYS[9], KEYS[10]}}
for _, q in ipairs(queues) do
  for _, om in ipairs(redis.call('ZRANGE', q[4], 0, -1)) do
    local msg = string.sub(om, 22)
    q_remove(q, msg .. '\0' .. ARGV[1], msg)
  end
end
redis.call('DEL', KEYS[11])
return existed
",
        ]
        .concat(),
    )
});

/// KEYS: an index zset, the records hash. ARGV: min, max (ZRANGEBYLEX),
/// limit, where the field starts in a member (1-based), a suffix completing
/// the field. Returns the JSON of the records, in index order.
static RANGE_RECORDS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])
local out = {}
for _, m in ipairs(members) do
  local json = redis.call('HGET', KEYS[2], string.sub(m, tonumber(ARGV[4])) .. ARGV[5])
  if json then out[#out + 1] = json end
end
return out
",
    )
});

/// KEYS: ckpt:current, ckpt:current_id, ckpt:chunks. ARGV: ID20, manifest
/// JSON. Returns nil if a checkpoint with a higher id is current (nothing
/// changed), else the `ckpt:chunks` members of every lower id. The same id
/// is let through: a retry of a switch that ran.
static SWITCH_CHECKPOINT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[2])
if cur and cur > ARGV[1] then return false end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
return redis.call('ZRANGEBYLEX', KEYS[3], '-', '(' .. ARGV[1])
",
    )
});

/// The Redis store. Clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    ns: String,
    max_alerts: usize,
    checkpoint_chunk: usize,
}

/// A Redis error as a store error: one that means Redis cannot be reached
/// (connection refused or dropped, a timeout, I/O) makes the store
/// unavailable; a refused command is a backend error.
fn be(e: RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        StoreError::Unavailable(format!("redis: {e}"))
    } else {
        StoreError::Backend(format!("redis: {e}"))
    }
}

/// Errors after which the connection manager reconnects: worth one retry.
/// Not a response timeout: the command may have run, and running `INCR` or
/// `RPUSH` twice would leave a stray version or audit entry.
fn is_connection_error(e: &RedisError) -> bool {
    (e.is_io_error() || e.is_connection_dropped()) && !e.is_timeout()
}

/// `at` as 20 digits whose byte order is the numeric order.
fn at20(at: i64) -> String {
    format!("{:020}", at.cast_unsigned() ^ (1 << 63))
}

/// The `alerts_by_time` member of an alert.
fn member(at: i64, id: &str) -> String {
    format!("{}:{id}", at20(at))
}

/// The id in an `alerts_by_time` member.
fn member_id(member: &str) -> &str {
    member.get(21..).unwrap_or("")
}

/// `AT20` back to `at`.
fn from_at20(text: &str) -> StoreResult<i64> {
    text.get(..20)
        .and_then(|digits| digits.parse::<u64>().ok())
        .map(|u| (u ^ (1 << 63)).cast_signed())
        .ok_or_else(|| StoreError::Backend(format!("redis: bad index member {text:?}")))
}

/// The hash field of a delivery: `MSG\0WH`.
fn delivery_field(webhook: &str, msg_id: &str) -> String {
    format!("{msg_id}\0{webhook}")
}

/// The `index` value and `by_due` member of a delivery.
fn delivery_member(d: &Delivery) -> String {
    format!(
        "{}:{}:{}",
        at20(d.next_at),
        at20(d.created_at),
        delivery_field(&d.webhook, &d.msg_id)
    )
}

/// A checkpoint id as `ID20`: byte order is numeric order.
fn id20(id: u64) -> String {
    format!("{id:020}")
}

/// The `ckpt:chunks` member of chunk `i` of `shard`'s blob in checkpoint
/// `id`; its key is `ns:ckpt:` + member.
fn chunk_member(id: u64, shard: u16, i: u32) -> String {
    format!("{}:{shard}:{i}", id20(id))
}

/// Where the field starts in a `by_due` member (1-based, for Lua).
const DUE_FIELD_AT: usize = 43;
/// Where the field (or msg) starts in a `by_age` (or `of`) member.
const AGE_FIELD_AT: usize = 22;

fn limit_arg(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn to_count(n: i64, what: &str) -> StoreResult<usize> {
    usize::try_from(n).map_err(|_| StoreError::Backend(format!("redis: bad {what} count {n}")))
}

impl RedisStore {
    pub(crate) async fn open(url: &str, namespace: &str) -> StoreResult<RedisStore> {
        let client =
            Client::open(url).map_err(|e| StoreError::Backend(format!("bad redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot connect to redis: {e}")))?;
        ::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| StoreError::Backend(format!("redis does not answer PING: {e}")))?;
        Ok(RedisStore {
            conn,
            ns: namespace.to_string(),
            max_alerts: DEFAULT_MAX_ALERTS,
            checkpoint_chunk: CHECKPOINT_CHUNK,
        })
    }

    pub(crate) fn with_max_alerts(mut self, n: usize) -> RedisStore {
        self.max_alerts = n;
        self
    }

    pub(crate) fn max_alerts(&self) -> usize {
        self.max_alerts
    }

    pub(crate) fn with_checkpoint_chunk(mut self, n: usize) -> RedisStore {
        self.checkpoint_chunk = n;
        self
    }

    pub(crate) fn checkpoint_chunk(&self) -> usize {
        self.checkpoint_chunk
    }

    fn k(&self, name: &str) -> String {
        format!("{}:{name}", self.ns)
    }

    /// Runs `op` on the connection; after a connection error (the first
    /// call after the server dropped the connection fails, and makes the
    /// manager reconnect) runs it once more.
    async fn run<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match op(self.conn.clone()).await {
            Err(e) if is_connection_error(&e) => op(self.conn.clone()).await.map_err(be),
            other => other.map_err(be),
        }
    }

    async fn hget(&self, key: &str, field: &str) -> StoreResult<Option<String>> {
        self.run(|mut c| async move {
            ::redis::cmd("HGET")
                .arg(key)
                .arg(field)
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn hvals(&self, key: &str) -> StoreResult<Vec<String>> {
        self.run(|mut c| async move { ::redis::cmd("HVALS").arg(key).query_async(&mut c).await })
            .await
    }

    async fn hset(&self, key: &str, field: &str, value: &str) -> StoreResult<()> {
        self.run(|mut c| async move {
            ::redis::cmd("HSET")
                .arg(key)
                .arg(field)
                .arg(value)
                .exec_async(&mut c)
                .await
        })
        .await
    }

    // --- API keys ---

    pub(crate) async fn put_key(&self, key: &ApiKey) -> StoreResult<()> {
        let json = to_json(key)?;
        let keys = self.k("keys");
        let hashes = self.k("key_hashes");
        let (keys, hashes, json) = (&keys, &hashes, &json);
        let outcome: i64 = self
            .run(|mut c| async move {
                PUT_KEY
                    .key(keys)
                    .key(hashes)
                    .arg(&key.name)
                    .arg(&key.hash)
                    .arg(json)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match outcome {
            0 => Ok(()),
            1 => Err(StoreError::Conflict(format!(
                "an API key named {:?} exists",
                key.name
            ))),
            _ => Err(StoreError::Conflict(
                "an API key with the same secret exists".to_string(),
            )),
        }
    }

    pub(crate) async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        match self.hget(&self.k("key_hashes"), hash).await? {
            Some(name) => self.key(&name).await,
            None => Ok(None),
        }
    }

    pub(crate) async fn key(&self, name: &str) -> StoreResult<Option<ApiKey>> {
        self.hget(&self.k("keys"), name)
            .await?
            .map(|json| from_json(&json))
            .transpose()
    }

    pub(crate) async fn keys(&self) -> StoreResult<Vec<ApiKey>> {
        let mut keys = self
            .hvals(&self.k("keys"))
            .await?
            .iter()
            .map(|json| from_json::<ApiKey>(json))
            .collect::<StoreResult<Vec<_>>>()?;
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(keys)
    }

    pub(crate) async fn revoke_key(&self, name: &str) -> StoreResult<bool> {
        // Keys are never deleted and `revoked` only goes to true, so a plain
        // read-modify-write cannot lose anything.
        let Some(mut key) = self.key(name).await? else {
            return Ok(false);
        };
        if !key.revoked {
            key.revoked = true;
            self.hset(&self.k("keys"), name, &to_json(&key)?).await?;
        }
        Ok(true)
    }

    // --- rule versions ---

    pub(crate) async fn create_version(
        &self,
        rule: &str,
        hash: &str,
        text: &str,
        created_by: &str,
        at: i64,
    ) -> StoreResult<RuleVersion> {
        let mut version = RuleVersion {
            rule: rule.to_string(),
            version: 0,
            hash: hash.to_string(),
            text: text.to_string(),
            created_at: at,
            created_by: created_by.to_string(),
        };
        let json = to_json(&version)?;
        let seq = self.k(&format!("version_seq:{rule}"));
        let versions = self.k(&format!("versions:{rule}"));
        let (seq, versions, json) = (&seq, &versions, &json);
        let n: i64 = self
            .run(|mut c| async move {
                CREATE_VERSION
                    .key(seq)
                    .key(versions)
                    .arg(json)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        version.version = u32::try_from(n)
            .map_err(|_| StoreError::Backend(format!("redis: bad version number {n}")))?;
        Ok(version)
    }

    pub(crate) async fn version(&self, rule: &str, v: u32) -> StoreResult<Option<RuleVersion>> {
        let json = self
            .hget(&self.k(&format!("versions:{rule}")), &v.to_string())
            .await?;
        json.map(|json| {
            let mut version: RuleVersion = from_json(&json)?;
            version.version = v;
            Ok(version)
        })
        .transpose()
    }

    pub(crate) async fn versions(&self, rule: &str) -> StoreResult<Vec<RuleVersion>> {
        let key = self.k(&format!("versions:{rule}"));
        let key = &key;
        let all: Vec<(String, String)> = self
            .run(|mut c| async move { ::redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await?;
        let mut out = Vec::with_capacity(all.len());
        for (field, json) in all {
            let mut version: RuleVersion = from_json(&json)?;
            version.version = field.parse().map_err(|_| {
                StoreError::Backend(format!("redis: bad version field {field:?} of {rule:?}"))
            })?;
            out.push(version);
        }
        out.sort_by_key(|v| v.version);
        Ok(out)
    }

    // --- rule states ---

    pub(crate) async fn put_rule_state(&self, state: &RuleState) -> StoreResult<()> {
        self.hset(&self.k("rule_states"), &state.name, &to_json(state)?)
            .await
    }

    pub(crate) async fn rule_state(&self, name: &str) -> StoreResult<Option<RuleState>> {
        self.hget(&self.k("rule_states"), name)
            .await?
            .map(|json| from_json(&json))
            .transpose()
    }

    pub(crate) async fn rule_states(&self) -> StoreResult<Vec<RuleState>> {
        let mut states = self
            .hvals(&self.k("rule_states"))
            .await?
            .iter()
            .map(|json| from_json::<RuleState>(json))
            .collect::<StoreResult<Vec<_>>>()?;
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }

    // --- schema ---

    pub(crate) async fn schema(&self) -> StoreResult<Option<String>> {
        let key = self.k("schema");
        let key = &key;
        self.run(|mut c| async move { ::redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
    }

    pub(crate) async fn put_schema(&self, text: &str) -> StoreResult<()> {
        let key = self.k("schema");
        let key = &key;
        self.run(|mut c| async move {
            ::redis::cmd("SET")
                .arg(key)
                .arg(text)
                .exec_async(&mut c)
                .await
        })
        .await
    }

    pub(crate) async fn marker(&self) -> StoreResult<Option<String>> {
        let key = self.k("marker");
        let key = &key;
        self.run(|mut c| async move { ::redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
    }

    pub(crate) async fn put_marker(&self, id: &str) -> StoreResult<()> {
        let key = self.k("marker");
        let key = &key;
        self.run(|mut c| async move {
            ::redis::cmd("SET")
                .arg(key)
                .arg(id)
                .exec_async(&mut c)
                .await
        })
        .await
    }

    // --- audit ---

    pub(crate) async fn append_audit(&self, mut entry: AuditEntry) -> StoreResult<u64> {
        // The list index is the seq: RPUSH returns the new length
        // atomically. The stored JSON carries seq 0; reads fill it in.
        entry.seq = 0;
        let json = to_json(&entry)?;
        let key = self.k("audit");
        let (key, json) = (&key, &json);
        self.run(|mut c| async move {
            ::redis::cmd("RPUSH")
                .arg(key)
                .arg(json)
                .query_async::<u64>(&mut c)
                .await
        })
        .await
    }

    pub(crate) async fn audit(&self, after_seq: u64, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Entry seq s is at index s - 1: the entries after `after_seq` start
        // at index `after_seq`.
        let Ok(start) = i64::try_from(after_seq) else {
            return Ok(Vec::new());
        };
        let stop = start.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX) - 1);
        let key = self.k("audit");
        let key = &key;
        let all: Vec<String> = self
            .run(|mut c| async move {
                ::redis::cmd("LRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(stop)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut out = Vec::with_capacity(all.len());
        for (seq, json) in (after_seq + 1..).zip(all) {
            let mut entry: AuditEntry = from_json(&json)?;
            entry.seq = seq;
            out.push(entry);
        }
        Ok(out)
    }

    // --- alerts ---

    pub(crate) async fn put_alert(&self, alert: &StoredAlert) -> StoreResult<bool> {
        let json = to_json(alert)?;
        let alerts = self.k("alerts");
        let by_time = self.k("alerts_by_time");
        let member = member(alert.at, &alert.id);
        let max = self.max_alerts;
        let (alerts, by_time, member, json) = (&alerts, &by_time, &member, &json);
        let stored: i64 = self
            .run(|mut c| async move {
                PUT_ALERT
                    .key(alerts)
                    .key(by_time)
                    .arg(&alert.id)
                    .arg(member)
                    .arg(json)
                    .arg(max)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(stored == 1)
    }

    pub(crate) async fn alerts_known(&self, ids: &[String]) -> StoreResult<Vec<bool>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let key = self.k("alerts");
        let (key, ids) = (&key, ids);
        let found: Vec<Option<String>> = self
            .run(|mut c| async move {
                ::redis::cmd("HMGET")
                    .arg(key)
                    .arg(ids)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(found.into_iter().map(|f| f.is_some()).collect())
    }

    pub(crate) async fn alert(&self, id: &str) -> StoreResult<Option<StoredAlert>> {
        self.hget(&self.k("alerts"), id)
            .await?
            .map(|json| from_json(&json))
            .transpose()
    }

    pub(crate) async fn query_alerts(
        &self,
        filter: &AlertFilter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<AlertPage> {
        // Lexical bounds on the members: `[x` inclusive, `(x` exclusive.
        // Every member at `to` is longer than, so greater than, at20(to).
        let min = filter
            .from
            .map_or_else(|| "-".to_string(), |from| format!("[{}", at20(from)));
        let mut upper = filter.to.map(at20);
        if let Some(c) = after {
            let m = member(c.at, &c.id);
            if upper.as_ref().is_none_or(|u| m < *u) {
                upper = Some(m);
            }
        }
        let mut max = upper.map_or_else(|| "+".to_string(), |u| format!("({u}"));
        let by_time = self.k("alerts_by_time");
        let alerts = self.k("alerts");
        let (by_time, alerts) = (&by_time, &alerts);
        let mut found = Vec::new();
        let mut batch = SCAN_BATCH.max(limit.saturating_add(1)).min(SCAN_BATCH_MAX);
        loop {
            let (max_ref, min_ref) = (&max, &min);
            let members: Vec<String> = self
                .run(|mut c| async move {
                    ::redis::cmd("ZREVRANGEBYLEX")
                        .arg(by_time)
                        .arg(max_ref)
                        .arg(min_ref)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(batch)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let Some(last) = members.last() else {
                break;
            };
            let ids: Vec<&str> = members.iter().map(|m| member_id(m)).collect();
            let ids = &ids;
            let jsons: Vec<Option<String>> = self
                .run(|mut c| async move {
                    ::redis::cmd("HMGET")
                        .arg(alerts)
                        .arg(ids)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            // An id trimmed since the ZREVRANGEBYLEX reads as nil: skipped.
            for json in jsons.into_iter().flatten() {
                let alert: StoredAlert = from_json(&json)?;
                if filter_matches(filter, &alert) {
                    found.push(alert);
                    if found.len() > limit {
                        return Ok(page(found, limit));
                    }
                }
            }
            if members.len() < batch {
                break;
            }
            max = format!("({last}");
            batch = (batch * 2).min(SCAN_BATCH_MAX);
        }
        Ok(page(found, limit))
    }

    pub(crate) async fn alert_count(&self) -> StoreResult<u64> {
        let key = self.k("alerts");
        let key = &key;
        self.run(|mut c| async move { ::redis::cmd("HLEN").arg(key).query_async(&mut c).await })
            .await
    }

    // --- reference lists ---

    fn list_keys(&self, name: &str) -> [String; 3] {
        [
            self.k("lists"),
            self.k(&format!("list:{name}")),
            self.k("lists_revision"),
        ]
    }

    pub(crate) async fn list_names(&self) -> StoreResult<Vec<String>> {
        let key = self.k("lists");
        let key = &key;
        let mut names: Vec<String> = self
            .run(|mut c| async move { ::redis::cmd("SMEMBERS").arg(key).query_async(&mut c).await })
            .await?;
        names.sort();
        Ok(names)
    }

    pub(crate) async fn get_list(&self, name: &str) -> StoreResult<Option<Vec<String>>> {
        let [lists, list, _] = self.list_keys(name);
        let (lists, list) = (&lists, &list);
        // One MULTI/EXEC: existence and entries from the same moment.
        let (exists, mut entries): (bool, Vec<String>) = self
            .run(|mut c| async move {
                ::redis::pipe()
                    .atomic()
                    .cmd("SISMEMBER")
                    .arg(lists)
                    .arg(name)
                    .cmd("SMEMBERS")
                    .arg(list)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if !exists {
            return Ok(None);
        }
        entries.sort();
        Ok(Some(entries))
    }

    pub(crate) async fn put_list(&self, name: &str, entries: &[String]) -> StoreResult<()> {
        let keys = self.list_keys(name);
        let keys = &keys;
        self.run(|mut c| async move {
            PUT_LIST
                .key(&keys[..])
                .arg(name)
                .arg(entries)
                .invoke_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn change_list(
        &self,
        command: &str,
        name: &str,
        entries: &[String],
    ) -> StoreResult<usize> {
        let keys = self.list_keys(name);
        let keys = &keys;
        let n: i64 = self
            .run(|mut c| async move {
                CHANGE_LIST
                    .key(&keys[..])
                    .arg(command)
                    .arg(name)
                    .arg(entries)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if n < 0 {
            return Err(StoreError::NotFound(format!("list {name:?}")));
        }
        to_count(n, "list entry")
    }

    pub(crate) async fn add_to_list(&self, name: &str, entries: &[String]) -> StoreResult<usize> {
        self.change_list("SADD", name, entries).await
    }

    pub(crate) async fn remove_from_list(
        &self,
        name: &str,
        entries: &[String],
    ) -> StoreResult<usize> {
        self.change_list("SREM", name, entries).await
    }

    pub(crate) async fn delete_list(&self, name: &str) -> StoreResult<bool> {
        let keys = self.list_keys(name);
        let keys = &keys;
        let deleted: i64 = self
            .run(|mut c| async move {
                DELETE_LIST
                    .key(&keys[..])
                    .arg(name)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(deleted == 1)
    }

    pub(crate) async fn lists_revision(&self) -> StoreResult<u64> {
        let key = self.k("lists_revision");
        let key = &key;
        let rev: Option<u64> = self
            .run(|mut c| async move { ::redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        Ok(rev.unwrap_or(0))
    }

    // --- webhooks ---

    /// The pending queue's keys, for `webhook`: records, index, by_age, of,
    /// by_due.
    fn pending_keys(&self, webhook: &str) -> Vec<String> {
        vec![
            self.k("deliveries"),
            self.k("deliveries_index"),
            self.k("deliveries_by_age"),
            self.k(&format!("deliveries_of:{webhook}")),
            self.k("deliveries_by_due"),
        ]
    }

    /// The dead letters' keys, for `webhook`: records, index, by_age, of.
    fn dead_keys(&self, webhook: &str) -> Vec<String> {
        vec![
            self.k("dead_letters"),
            self.k("dead_letters_index"),
            self.k("dead_letters_by_age"),
            self.k(&format!("dead_letters_of:{webhook}")),
        ]
    }

    pub(crate) async fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        self.hset(&self.k("webhooks"), &webhook.id, &to_json(webhook)?)
            .await
    }

    pub(crate) async fn webhook(&self, id: &str) -> StoreResult<Option<Webhook>> {
        self.hget(&self.k("webhooks"), id)
            .await?
            .map(|json| from_json(&json))
            .transpose()
    }

    pub(crate) async fn webhooks(&self) -> StoreResult<Vec<Webhook>> {
        let mut webhooks = self
            .hvals(&self.k("webhooks"))
            .await?
            .iter()
            .map(|json| from_json::<Webhook>(json))
            .collect::<StoreResult<Vec<_>>>()?;
        webhooks.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(webhooks)
    }

    pub(crate) async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        let mut keys = vec![self.k("webhooks")];
        keys.extend(self.pending_keys(id));
        keys.extend(self.dead_keys(id));
        keys.push(self.k(&format!("delivery_log:{id}")));
        let keys = &keys;
        let existed: i64 = self
            .run(|mut c| async move {
                DELETE_WEBHOOK
                    .key(&keys[..])
                    .arg(id)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(existed == 1)
    }

    // --- webhook deliveries ---

    pub(crate) async fn enqueue_delivery(
        &self,
        delivery: &Delivery,
        dedup_until: i64,
    ) -> StoreResult<bool> {
        let mut keys = vec![self.k(&format!(
            "webhook_dedup:{}\0{}",
            delivery.webhook, delivery.alert_id
        ))];
        keys.extend(self.pending_keys(&delivery.webhook));
        // The stored expiry decides; the TTL only lets Redis drop the key
        // once it is surely useless (at least 1 ms, as PX requires).
        let ttl = dedup_until.saturating_sub(delivery.created_at).max(1);
        let args = [
            at20(delivery.created_at),
            at20(dedup_until),
            ttl.to_string(),
            delivery_field(&delivery.webhook, &delivery.msg_id),
            delivery.msg_id.clone(),
            delivery_member(delivery),
            to_json(delivery)?,
        ];
        let (keys, args) = (&keys, &args);
        let stored: i64 = self
            .run(|mut c| async move {
                ENQUEUE
                    .key(&keys[..])
                    .arg(&args[..])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(stored == 1)
    }

    /// Up to `limit` records of `records`, following the index zset `index`
    /// between `min` and `max`; each member's field starts at `field_at`
    /// and is completed by `suffix`.
    async fn range_records(
        &self,
        index: &str,
        records: &str,
        (min, max): (&str, &str),
        limit: usize,
        (field_at, suffix): (usize, &str),
    ) -> StoreResult<Vec<Delivery>> {
        let jsons: Vec<String> = self
            .run(|mut c| async move {
                RANGE_RECORDS
                    .key(index)
                    .key(records)
                    .arg(min)
                    .arg(max)
                    .arg(limit_arg(limit))
                    .arg(field_at)
                    .arg(suffix)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        jsons.iter().map(|json| from_json(json)).collect()
    }

    pub(crate) async fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        // next_at <= now: every member below AT20(now + 1) (a member at
        // now + 1 is longer, so greater).
        let max = now
            .checked_add(1)
            .map_or_else(|| "+".to_string(), |n| format!("({}", at20(n)));
        self.range_records(
            &self.k("deliveries_by_due"),
            &self.k("deliveries"),
            ("-", &max),
            limit,
            (DUE_FIELD_AT, ""),
        )
        .await
    }

    pub(crate) async fn pending_for(
        &self,
        webhook: &str,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.range_records(
            &self.k(&format!("deliveries_of:{webhook}")),
            &self.k("deliveries"),
            ("-", "+"),
            limit,
            (AGE_FIELD_AT, &format!("\0{webhook}")),
        )
        .await
    }

    pub(crate) async fn update_delivery(&self, delivery: &Delivery) -> StoreResult<()> {
        let keys = self.pending_keys(&delivery.webhook);
        let args = [
            delivery_field(&delivery.webhook, &delivery.msg_id),
            delivery.msg_id.clone(),
            delivery_member(delivery),
            to_json(delivery)?,
        ];
        let (keys, args) = (&keys, &args);
        let updated: i64 = self
            .run(|mut c| async move {
                UPDATE_DELIVERY
                    .key(&keys[..])
                    .arg(&args[..])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if updated == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!(
                "pending delivery {:?} of webhook {:?}",
                delivery.msg_id, delivery.webhook
            )))
        }
    }

    /// Removes (`webhook`, `msg_id`) from the queue whose keys are `keys`.
    async fn queue_remove(
        &self,
        keys: &[String],
        webhook: &str,
        msg_id: &str,
    ) -> StoreResult<Option<Delivery>> {
        let field = delivery_field(webhook, msg_id);
        let field = &field;
        let json: Option<String> = self
            .run(|mut c| async move {
                QUEUE_REMOVE
                    .key(keys)
                    .arg(field)
                    .arg(msg_id)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        json.map(|json| from_json(&json)).transpose()
    }

    pub(crate) async fn complete_delivery(&self, webhook: &str, msg_id: &str) -> StoreResult<bool> {
        let keys = self.pending_keys(webhook);
        Ok(self.queue_remove(&keys, webhook, msg_id).await?.is_some())
    }

    pub(crate) async fn pending_stats(&self) -> StoreResult<(u64, Option<i64>)> {
        let records = self.k("deliveries");
        let by_age = self.k("deliveries_by_age");
        let (records, by_age) = (&records, &by_age);
        let (count, oldest): (u64, Vec<String>) = self
            .run(|mut c| async move {
                ::redis::pipe()
                    .atomic()
                    .cmd("HLEN")
                    .arg(records)
                    .cmd("ZRANGE")
                    .arg(by_age)
                    .arg(0)
                    .arg(0)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let oldest = oldest.first().map(|m| from_at20(m)).transpose()?;
        Ok((count, oldest))
    }

    // --- dead letters ---

    pub(crate) async fn dead_letter(&self, delivery: &Delivery) -> StoreResult<()> {
        let mut keys = self.pending_keys(&delivery.webhook);
        keys.extend(self.dead_keys(&delivery.webhook));
        let args = [
            delivery_field(&delivery.webhook, &delivery.msg_id),
            delivery.msg_id.clone(),
            delivery_member(delivery),
            to_json(delivery)?,
        ];
        let (keys, args) = (&keys, &args);
        self.run(|mut c| async move {
            DEAD_LETTER
                .key(&keys[..])
                .arg(&args[..])
                .invoke_async::<()>(&mut c)
                .await
        })
        .await
    }

    pub(crate) async fn dead_letters(
        &self,
        webhook: Option<&str>,
        after: Option<&DeadCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let records = self.k("dead_letters");
        match webhook {
            Some(webhook) => {
                // Members `CREATED20:MSG`: past the cursor's, exclusive.
                let min = after.map_or_else(
                    || "-".to_string(),
                    |c| format!("({}:{}", at20(c.created_at), c.msg_id),
                );
                self.range_records(
                    &self.k(&format!("dead_letters_of:{webhook}")),
                    &records,
                    (&min, "+"),
                    limit,
                    (AGE_FIELD_AT, &format!("\0{webhook}")),
                )
                .await
            }
            None => {
                // Members `CREATED20:MSG\0WH`.
                let min = after.map_or_else(
                    || "-".to_string(),
                    |c| format!("({}:{}\0{}", at20(c.created_at), c.msg_id, c.webhook),
                );
                self.range_records(
                    &self.k("dead_letters_by_age"),
                    &records,
                    (&min, "+"),
                    limit,
                    (AGE_FIELD_AT, ""),
                )
                .await
            }
        }
    }

    pub(crate) async fn take_dead_letter(
        &self,
        webhook: &str,
        msg_id: &str,
    ) -> StoreResult<Option<Delivery>> {
        let keys = self.dead_keys(webhook);
        self.queue_remove(&keys, webhook, msg_id).await
    }

    // --- delivery log ---

    pub(crate) async fn log_attempt(&self, attempt: &DeliveryAttempt) -> StoreResult<()> {
        let key = self.k(&format!("delivery_log:{}", attempt.webhook));
        let json = to_json(attempt)?;
        let last = limit_arg(DELIVERY_LOG_MAX) - 1;
        let (key, json) = (&key, &json);
        self.run(|mut c| async move {
            ::redis::pipe()
                .atomic()
                .cmd("LPUSH")
                .arg(key)
                .arg(json)
                .ignore()
                .cmd("LTRIM")
                .arg(key)
                .arg(0)
                .arg(last)
                .ignore()
                .exec_async(&mut c)
                .await
        })
        .await
    }

    pub(crate) async fn delivery_log(
        &self,
        webhook: &str,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryAttempt>> {
        let key = self.k(&format!("delivery_log:{webhook}"));
        let key = &key;
        let stop = limit_arg(limit) - 1;
        let all: Vec<String> = self
            .run(|mut c| async move {
                ::redis::cmd("LRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(stop)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        all.iter().map(|json| from_json(json)).collect()
    }

    // --- checkpoints ---

    pub(crate) async fn put_checkpoint(
        &self,
        manifest: CheckpointManifest,
        shards: Vec<(u16, Vec<u8>)>,
    ) -> StoreResult<CheckpointManifest> {
        let manifest = self.stage_checkpoint(manifest, shards).await?;
        let keys = [
            self.k("ckpt:current"),
            self.k("ckpt:current_id"),
            self.k("ckpt:chunks"),
        ];
        let (id, json) = (id20(manifest.id), to_json(&manifest)?);
        let (keys, id, json) = (&keys, &id, &json);
        let older: Option<Vec<String>> = self
            .run(|mut c| async move {
                SWITCH_CHECKPOINT
                    .key(&keys[..])
                    .arg(id)
                    .arg(json)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let Some(older) = older else {
            // Its chunks stay named in ckpt:chunks, below the current id:
            // the next put deletes them.
            return Err(self.not_newer(manifest.id).await);
        };
        // Keys first, then their members: a crash in between leaves them
        // named, for the next put.
        let mut pipe = ::redis::pipe();
        for batch in older.chunks(CKPT_BATCH) {
            let chunk_keys: Vec<String> =
                batch.iter().map(|m| self.k(&format!("ckpt:{m}"))).collect();
            // UNLINK: the server frees the (large) values in the background.
            pipe.cmd("UNLINK").arg(chunk_keys).ignore();
        }
        for batch in older.chunks(CKPT_BATCH) {
            pipe.cmd("ZREM").arg(&keys[2]).arg(batch).ignore();
        }
        if !older.is_empty() {
            let pipe = &pipe;
            self.run(|mut c| async move { pipe.exec_async(&mut c).await })
                .await?;
        }
        Ok(manifest)
    }

    /// The chunks, after checking that `manifest.id` is above the current
    /// checkpoint's: their members go into `ckpt:chunks` before the chunks
    /// are written (one pipeline, run in order), so that every chunk written
    /// is named there. Chunks an unfinished put left under the same id are
    /// overwritten or, if this put has fewer, deleted with this checkpoint.
    pub(crate) async fn stage_checkpoint(
        &self,
        manifest: CheckpointManifest,
        shards: Vec<(u16, Vec<u8>)>,
    ) -> StoreResult<CheckpointManifest> {
        let current_id = self.k("ckpt:current_id");
        let current_id = &current_id;
        let current: Option<String> = self
            .run(|mut c| async move {
                ::redis::cmd("GET")
                    .arg(current_id)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if current.is_some_and(|cur| cur >= id20(manifest.id)) {
            return Err(self.not_newer(manifest.id).await);
        }
        let chunks_key = self.k("ckpt:chunks");
        let mut members = Vec::new();
        let mut parts = Vec::new();
        for (shard, blob) in &shards {
            for (i, part) in (0u32..).zip(blob.chunks(self.checkpoint_chunk)) {
                members.push(chunk_member(manifest.id, *shard, i));
                parts.push(part);
            }
        }
        if members.is_empty() {
            return Ok(manifest);
        }
        // The members first: a pipeline runs in order.
        let mut pipe = ::redis::pipe();
        for batch in members.chunks(CKPT_BATCH) {
            pipe.cmd("ZADD").arg(&chunks_key);
            for member in batch {
                pipe.arg(0).arg(member);
            }
            pipe.ignore();
        }
        for (member, part) in members.iter().zip(parts) {
            pipe.cmd("SET")
                .arg(self.k(&format!("ckpt:{member}")))
                .arg(part)
                .ignore();
        }
        let pipe = &pipe;
        self.run(|mut c| async move { pipe.exec_async(&mut c).await })
            .await?;
        Ok(manifest)
    }

    /// The conflict of a put whose id is not above the current checkpoint's.
    async fn not_newer(&self, id: u64) -> StoreError {
        let current = match self.checkpoint().await {
            Ok(Some(m)) => m.id.to_string(),
            Ok(None) => "none".to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        StoreError::Conflict(format!(
            "checkpoint {id} is not newer than the current checkpoint {current}"
        ))
    }

    pub(crate) async fn checkpoint(&self) -> StoreResult<Option<CheckpointManifest>> {
        let key = self.k("ckpt:current");
        let key = &key;
        let json: Option<String> = self
            .run(|mut c| async move { ::redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        json.map(|json| from_json(&json)).transpose()
    }

    pub(crate) async fn checkpoint_shard(
        &self,
        id: u64,
        shard: u16,
    ) -> StoreResult<Option<Vec<u8>>> {
        let gone = || StoreError::NotFound(format!("checkpoint {id}"));
        let manifest = self
            .checkpoint()
            .await?
            .filter(|m| m.id == id)
            .ok_or_else(gone)?;
        let Some(entry) = manifest.shards.iter().find(|e| e.shard == shard) else {
            return Ok(None);
        };
        let chunk_keys: Vec<String> = (0..entry.chunks)
            .map(|i| self.k(&format!("ckpt:{}", chunk_member(id, shard, i))))
            .collect();
        let mut parts = Vec::new();
        if !chunk_keys.is_empty() {
            // The current id again, with the chunks (MULTI/EXEC): a put that
            // switched since the manifest was read may have deleted them.
            let current_id = self.k("ckpt:current_id");
            let (current_id, chunk_keys) = (&current_id, &chunk_keys);
            let (current, got): (Option<String>, Vec<Option<Vec<u8>>>) = self
                .run(|mut c| async move {
                    ::redis::pipe()
                        .atomic()
                        .cmd("GET")
                        .arg(current_id)
                        .cmd("MGET")
                        .arg(chunk_keys)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if current != Some(id20(id)) {
                return Err(gone());
            }
            parts = got;
        }
        let mut parts = parts.into_iter();
        let blob = join_chunks(id, entry, |_, out| match parts.next().flatten() {
            Some(part) => {
                out.extend_from_slice(&part);
                Ok(true)
            }
            None => Ok(false),
        })?;
        Ok(Some(blob))
    }
}
