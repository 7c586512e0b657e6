//! A durable [`WorkQueue`] in a SQLite file: one machine, nothing deployed.
//!
//! Several named queues (and the job store) share one database file, each component on its
//! own connection: the file is in WAL mode with a busy timeout, and every write is one
//! transaction with `synchronous = FULL`, so a push that returned Ok survives a crash.
//!
//! A message is visible when `visible_ms <= now` (wall-clock milliseconds, so leases survive
//! a restart). Pulling one takes a lease: `visible_ms = now + lease` and a fresh random
//! per-delivery token. The [`LeaseId`] is `"<id>:<token>"`, so once a message is released
//! or delivered again, the old holder's `renew` fails with `Conflict` and its `ack` does
//! nothing. A message already delivered `max_deliveries` times is moved to a dead-letter
//! table instead of being delivered again. Order is roughly FIFO by enqueue time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::queue::{Delivery, LeaseId, QueueDepth, WorkQueue};

/// Deliveries after which a message goes to the dead-letter table (SQS's maxReceiveCount).
pub const DEFAULT_MAX_DELIVERIES: u32 = 10;
/// How often a waiting `pull` looks again for work pushed by another connection.
const POLL: Duration = Duration::from_millis(25);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue       TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    visible_ms  INTEGER NOT NULL,
    deliveries  INTEGER NOT NULL DEFAULT 0,
    token       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_messages_by_queue ON queue_messages (queue, id);
CREATE TABLE IF NOT EXISTS queue_dead_letters (
    id          INTEGER PRIMARY KEY,
    queue       TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    deliveries  INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    dead_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_dead_letters_by_queue ON queue_dead_letters (queue, id);
";

/// One named queue in a SQLite file. Cheap to clone: clones share the connection and wake
/// each other's waiting pulls at once; other connections to the file are seen by polling.
#[derive(Clone)]
pub struct SqliteQueue {
    conn: Arc<Mutex<Connection>>,
    queue: Arc<str>,
    path: PathBuf,
    max_deliveries: u32,
    pushed: Arc<Notify>,
}

impl SqliteQueue {
    /// Opens (creating if needed) the file at `path` and the queue named `queue` in it.
    /// Several queues and other components may share the file, each on its own connection.
    pub fn open(path: &Path, queue: &str) -> Result<Self> {
        if queue.is_empty() {
            return Err(Error::invalid("a queue name must not be empty"));
        }
        let what = format!("opening queue {queue:?} in {}", path.display());
        let conn = Connection::open(path).map_err(|e| db_err(&what, e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .and_then(|()| conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|()| conn.execute_batch(SCHEMA))
            .map_err(|e| db_err(&what, e))?;
        Ok(SqliteQueue {
            conn: Arc::new(Mutex::new(conn)),
            queue: queue.into(),
            path: path.to_path_buf(),
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            pushed: Arc::new(Notify::new()),
        })
    }

    /// Dead-letters a message instead of delivering it an `n + 1`th time (at least 1;
    /// default [`DEFAULT_MAX_DELIVERIES`]).
    pub fn with_max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// Makes every leased message of this queue visible now, invalidates its lease and
    /// resets its delivery count to one; returns how many. For a single-process owner
    /// restarting: nobody holds a lease then, and the deliveries it counted ended with a
    /// killed process, not a failure of the message (ten SIGKILLed runs must not dead-letter
    /// a segment). One, not zero: the message was delivered, and its next delivery must say
    /// so (a consumer may act on a first delivery as on work nobody has started).
    pub async fn release_all(&self) -> Result<u64> {
        let n = self
            .with_conn("releasing all leases", |conn, queue| {
                let now = now_ms();
                conn.execute(
                    "UPDATE queue_messages SET visible_ms = ?2, token = random(), deliveries = 1
                     WHERE queue = ?1 AND visible_ms > ?2",
                    params![queue, now],
                )
            })
            .await?;
        self.pushed.notify_waiters();
        tracing::info!(queue = %self.queue, released = n, "released every lease");
        Ok(n as u64)
    }

    /// Moves every dead letter of this queue back onto it, visible now, with its delivery
    /// count reset to one (as [`SqliteQueue::release_all`]); returns how many. What a user's rerun of a local job does: whatever made
    /// them fail (a full disk, a bad permission) may be fixed now.
    pub async fn requeue_dead_letters(&self) -> Result<u64> {
        let n = self
            .with_conn("requeueing dead letters", |conn, queue| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = now_ms();
                let n = tx.execute(
                    "INSERT INTO queue_messages (queue, body, enqueued_ms, visible_ms, deliveries)
                     SELECT queue, body, ?2, ?2, 1 FROM queue_dead_letters WHERE queue = ?1 ORDER BY id",
                    params![queue, now],
                )?;
                tx.execute("DELETE FROM queue_dead_letters WHERE queue = ?1", [queue])?;
                tx.commit()?;
                Ok(n)
            })
            .await?;
        self.pushed.notify_waiters();
        Ok(n as u64)
    }

    /// Deletes every message of this queue, dead letters included; returns how many. For a
    /// queue whose work was given up (a cancelled local job's).
    pub async fn purge(&self) -> Result<u64> {
        let n = self
            .with_conn("purging", |conn, queue| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let n = tx.execute("DELETE FROM queue_messages WHERE queue = ?1", [queue])?
                    + tx.execute("DELETE FROM queue_dead_letters WHERE queue = ?1", [queue])?;
                tx.commit()?;
                Ok(n)
            })
            .await?;
        Ok(n as u64)
    }

    /// Runs `f` on the connection in a blocking thread, mapping SQLite errors.
    async fn with_conn<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        let queue = self.queue.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            // A panic mid-transaction rolled it back when the guard dropped: the data is fine.
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn, &queue).map_err(|e| db_err(&format!("{what} (queue {queue:?} in {})", path.display()), e))
        })
        .await
        .map_err(|e| Error::permanent(format!("{what}: queue task failed: {e}")))?
    }

    /// Leases up to `max` visible messages now, dead-lettering exhausted ones on the way.
    async fn take(&self, max: usize, lease: Duration) -> Result<Vec<Delivery>> {
        let limit = self.max_deliveries;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let (out, dead) = self
            .with_conn("pulling", move |conn, queue| {
                // Idle polls stay read-only: take the write lock only when there is work.
                let any: Option<i64> = conn
                    .query_row(
                        "SELECT id FROM queue_messages WHERE queue = ?1 AND visible_ms <= ?2
                         LIMIT 1",
                        params![queue, now_ms()],
                        |r| r.get(0),
                    )
                    .optional()?;
                if any.is_none() {
                    return Ok((Vec::new(), Vec::new()));
                }
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let got = lease_visible(&tx, queue, max, lease_ms, limit)?;
                tx.commit()?;
                Ok(got)
            })
            .await?;
        for (id, deliveries) in dead {
            tracing::warn!(queue = %self.queue, id, deliveries, "message dead-lettered");
        }
        Ok(out)
    }
}

/// A message moved to the dead letters: its id and how often it had been delivered.
type DeadLetter = (i64, u32);

/// Inside a write transaction: leases up to `max` visible messages in id order, moving
/// those already delivered `limit` times to the dead letters. Returns the deliveries and
/// the `(id, deliveries)` of the dead-lettered.
fn lease_visible(
    tx: &rusqlite::Transaction<'_>,
    queue: &str,
    max: usize,
    lease_ms: i64,
    limit: u32,
) -> rusqlite::Result<(Vec<Delivery>, Vec<DeadLetter>)> {
    let now = now_ms();
    let (mut out, mut dead) = (Vec::new(), Vec::new());
    let mut select = tx.prepare_cached(
        "SELECT id, body, deliveries FROM queue_messages
         WHERE queue = ?1 AND visible_ms <= ?2 AND id > ?3 ORDER BY id LIMIT ?4",
    )?;
    // A cursor on id: a zero lease leaves a delivered message visible, so never reselect.
    let mut after = 0i64;
    while out.len() < max {
        let want = i64::try_from(max - out.len()).unwrap_or(i64::MAX);
        let rows: Vec<(i64, String, u32)> = select
            .query_map(params![queue, now, after, want], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if rows.is_empty() {
            break;
        }
        for (id, body, deliveries) in rows {
            after = id;
            if deliveries >= limit {
                tx.execute(
                    "INSERT OR REPLACE INTO queue_dead_letters
                       (id, queue, body, deliveries, enqueued_ms, dead_ms)
                     SELECT id, queue, body, deliveries, enqueued_ms, ?2
                       FROM queue_messages WHERE id = ?1",
                    params![id, now],
                )?;
                tx.execute("DELETE FROM queue_messages WHERE id = ?1", [id])?;
                dead.push((id, deliveries));
                continue;
            }
            let token: i64 = rand::random();
            tx.execute(
                "UPDATE queue_messages SET deliveries = deliveries + 1, token = ?2,
                   visible_ms = ?3 WHERE id = ?1",
                params![id, token, now.saturating_add(lease_ms)],
            )?;
            out.push(Delivery { lease: LeaseId(format!("{id}:{token}")), body, deliveries: deliveries + 1 });
        }
    }
    Ok((out, dead))
}

#[async_trait]
impl WorkQueue for SqliteQueue {
    /// Enqueues all bodies in one transaction: all or none.
    async fn push(&self, bodies: &[String]) -> Result<()> {
        if bodies.is_empty() {
            return Ok(());
        }
        let bodies = bodies.to_vec();
        let n = bodies.len();
        self.with_conn("pushing", move |conn, queue| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let now = now_ms();
                let mut insert = tx.prepare_cached(
                    "INSERT INTO queue_messages (queue, body, enqueued_ms, visible_ms)
                     VALUES (?1, ?2, ?3, ?3)",
                )?;
                for body in &bodies {
                    insert.execute(params![queue, body, now])?;
                }
            }
            tx.commit()
        })
        .await?;
        self.pushed.notify_waiters();
        tracing::debug!(queue = %self.queue, count = n, "pushed");
        Ok(())
    }

    async fn pull(&self, max: usize, lease: Duration, wait: Duration) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a push between the look and the sleep wakes us.
            let pushed = self.pushed.notified();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            let got = self.take(max, lease).await?;
            let now = Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let nap = POLL.min(deadline - now);
            tokio::select! {
                _ = pushed => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn renew(&self, lease: &LeaseId, lease_for: Duration) -> Result<()> {
        let (id, token) = parse_lease(lease)?;
        let lease_ms = i64::try_from(lease_for.as_millis()).unwrap_or(i64::MAX);
        let changed = self
            .with_conn("renewing a lease", move |conn, queue| {
                let now = now_ms();
                conn.execute(
                    "UPDATE queue_messages SET visible_ms = ?4
                     WHERE id = ?1 AND token = ?2 AND queue = ?3 AND visible_ms > ?5",
                    params![id, token, queue, now.saturating_add(lease_ms), now],
                )
            })
            .await?;
        if changed == 0 {
            return Err(Error::Conflict(format!(
                "lease {} on queue {:?} was lost (expired, released or acked)",
                lease.0, self.queue
            )));
        }
        Ok(())
    }

    /// Deletes the message if `lease` is still its latest delivery; otherwise does nothing.
    async fn ack(&self, lease: &LeaseId) -> Result<()> {
        let (id, token) = parse_lease(lease)?;
        self.with_conn("acking", move |conn, queue| {
            conn.execute(
                "DELETE FROM queue_messages WHERE id = ?1 AND token = ?2 AND queue = ?3",
                params![id, token, queue],
            )
        })
        .await?;
        Ok(())
    }

    /// Makes the message visible now and invalidates `lease`; a stale lease does nothing.
    async fn release(&self, lease: &LeaseId) -> Result<()> {
        let (id, token) = parse_lease(lease)?;
        self.with_conn("releasing a lease", move |conn, queue| {
            conn.execute(
                "UPDATE queue_messages SET visible_ms = ?4, token = random()
                 WHERE id = ?1 AND token = ?2 AND queue = ?3",
                params![id, token, queue, now_ms()],
            )
        })
        .await?;
        self.pushed.notify_waiters();
        Ok(())
    }

    /// The bodies moved to the dead-letter table, oldest first.
    async fn dead_letters(&self, max: usize) -> Result<Vec<String>> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.with_conn("listing dead letters", move |conn, queue| {
            let mut stmt = conn.prepare("SELECT body FROM queue_dead_letters WHERE queue = ?1 ORDER BY id LIMIT ?2")?;
            let rows = stmt.query_map(params![queue, max], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// Exact counts.
    async fn depth(&self) -> Result<QueueDepth> {
        self.with_conn("counting", |conn, queue| {
            conn.query_row(
                "SELECT COALESCE(SUM(visible_ms <= ?2), 0), COALESCE(SUM(visible_ms > ?2), 0),
                        (SELECT COUNT(*) FROM queue_dead_letters WHERE queue = ?1)
                 FROM queue_messages WHERE queue = ?1",
                params![queue, now_ms()],
                |r| Ok(QueueDepth { visible: r.get(0)?, in_flight: r.get(1)?, dead_letters: r.get(2)? }),
            )
        })
        .await
    }
}

fn parse_lease(lease: &LeaseId) -> Result<(i64, i64)> {
    lease
        .0
        .split_once(':')
        .and_then(|(id, token)| Some((id.parse().ok()?, token.parse().ok()?)))
        .ok_or_else(|| Error::invalid(format!("{:?} is not a SqliteQueue lease", lease.0)))
}

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Busy/locked (another connection holds the write lock past the timeout) is transient;
/// everything else (corruption, full disk, bad schema) is permanent.
fn db_err(what: &str, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Transient(format!("{what}: {e}")),
        _ => Error::Permanent(format!("{what}: {e}")),
    }
}

// The tests (the conformance suite and the SQLite-only behaviours) are in sqlite_queue/tests.rs.
#[cfg(test)]
mod tests;
