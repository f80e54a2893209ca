//! SQLite storage: WAL, `synchronous=FULL`, one writer thread with group commit, a few reader connections.
//!
//! Every write runs as a closure on the writer thread inside a savepoint of the current batch transaction;
//! its caller is answered only after the batch commits, so an acknowledged write survives `kill -9`.
//! Check-and-write logic (etags, existence) runs inside the closure and therefore sees every earlier write.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::error::{ApiError, ApiResult};

/// Individual enrollments, keyed by lower-case registration ID.
pub const INDIVIDUAL: &str = "individual";
/// Enrollment groups, keyed by lower-case group ID.
pub const GROUPS: &str = "groups";
/// Registration states, keyed by lower-case registration ID, with the group ID in `grp`.
pub const REGISTRATIONS: &str = "registrations";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS individual (id TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (id TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS registrations (id TEXT PRIMARY KEY, grp TEXT, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS registrations_grp ON registrations (grp, id);
CREATE TABLE IF NOT EXISTS devices (hub TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (hub, id));
CREATE TABLE IF NOT EXISTS refusals (id TEXT PRIMARY KEY, attempts INTEGER NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL);
";

type Done = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Done) + Send>;

const READERS: usize = 4;
const MAX_BATCH: usize = 512;

/// The engine's database.
pub struct Store {
    readers: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    writer: Mutex<mpsc::Sender<Job>>,
}

impl Store {
    /// Opens (creating) the database file and starts the writer thread.
    pub fn open(path: &Path) -> Result<Store, super::EngineError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open(path)?;
            r.busy_timeout(std::time::Duration::from_secs(10))?;
            r.pragma_update(None, "query_only", true)?;
            readers.push(Mutex::new(r));
        }
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("engine-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|source| super::EngineError::Io { path: path.display().to_string(), source })?;
        Ok(Store { readers, next: AtomicUsize::new(0), writer: Mutex::new(tx) })
    }

    /// Runs a read on one of the reader connections (sees committed data only).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> ApiResult<T>) -> ApiResult<T> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..READERS {
            if let Some(slot) = self.readers.get((start + i) % READERS)
                && let Ok(conn) = slot.try_lock()
            {
                return f(&conn);
            }
        }
        let slot = self.readers.get(start % READERS).ok_or_else(|| ApiError::internal("no reader connection"))?;
        let conn = slot.lock().map_err(|_| ApiError::internal("reader connection poisoned"))?;
        f(&conn)
    }

    /// Runs `f` on the writer thread; answers after the batch holding it has committed.
    /// An error from `f` rolls back only `f`'s own changes.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let (tx, rx) = oneshot::channel::<ApiResult<T>>();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let done: Done = Box::new(move |commit| {
                let _ = tx.send(match commit {
                    Ok(()) => result,
                    Err(e) => Err(ApiError::internal(format!("commit failed: {e}"))),
                });
            });
            (ok, done)
        });
        {
            let sender = self.writer.lock().map_err(|_| ApiError::internal("writer channel poisoned"))?;
            sender.send(job).map_err(|_| ApiError::internal("the storage writer has stopped"))?;
        }
        rx.await.map_err(|_| ApiError::internal("the storage writer dropped the request"))?
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut dones = Vec::with_capacity(jobs.len());
        let began = conn.execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = began {
            // Dropping the jobs answers every caller with an internal error.
            tracing::error!(error = %e, "cannot begin a storage transaction");
            drop(jobs);
            continue;
        }
        for job in jobs {
            let sp = conn.execute_batch("SAVEPOINT op");
            let (ok, done) = job(&conn);
            let end = if ok && sp.is_ok() { "RELEASE op" } else { "ROLLBACK TO op; RELEASE op" };
            if let Err(e) = conn.execute_batch(end) {
                tracing::error!(error = %e, "savepoint handling failed");
            }
            dones.push(done);
        }
        let commit = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for done in dones {
            done(commit.clone());
        }
    }
}

/// Reads one JSON record.
pub fn get<T: DeserializeOwned>(conn: &Connection, table: &str, key: &str) -> ApiResult<Option<T>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT json FROM {table} WHERE id = ?1"))?;
    let json: Option<String> = stmt.query_row(params![key], |r| r.get(0)).optional()?;
    Ok(match json {
        Some(j) => Some(serde_json::from_str(&j)?),
        None => None,
    })
}

/// Writes one JSON record (insert or replace).
pub fn put<T: Serialize>(conn: &Connection, table: &str, key: &str, value: &T) -> ApiResult<()> {
    let json = serde_json::to_string(value)?;
    let mut stmt = conn.prepare_cached(&format!("INSERT OR REPLACE INTO {table} (id, json) VALUES (?1, ?2)"))?;
    stmt.execute(params![key, json])?;
    Ok(())
}

/// Deletes one record; whether it existed.
pub fn delete(conn: &Connection, table: &str, key: &str) -> ApiResult<bool> {
    let mut stmt = conn.prepare_cached(&format!("DELETE FROM {table} WHERE id = ?1"))?;
    Ok(stmt.execute(params![key])? > 0)
}

/// Every record of a table, in key order.
pub fn all<T: DeserializeOwned>(conn: &Connection, table: &str) -> ApiResult<Vec<(String, T)>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT id, json FROM {table} ORDER BY id"))?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (k, j) = row?;
        out.push((k, serde_json::from_str(&j)?));
    }
    Ok(out)
}

/// The records of a table whose stored JSON contains `text` (a cheap pre-filter: callers confirm on the
/// parsed record), in key order.
pub fn containing<T: DeserializeOwned>(conn: &Connection, table: &str, text: &str) -> ApiResult<Vec<(String, T)>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT id, json FROM {table} WHERE instr(json, ?1) > 0 ORDER BY id"))?;
    let rows = stmt.query_map(params![text], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (k, j) = row?;
        out.push((k, serde_json::from_str(&j)?));
    }
    Ok(out)
}

/// One page of a table after `after` (exclusive), at most `limit` records; also whether more follow.
pub fn page<T: DeserializeOwned>(
    conn: &Connection,
    table: &str,
    after: Option<&str>,
    limit: usize,
) -> ApiResult<(Vec<(String, T)>, bool)> {
    let mut stmt = conn.prepare_cached(&format!("SELECT id, json FROM {table} WHERE id > ?1 ORDER BY id LIMIT ?2"))?;
    collect_page(&mut stmt, params![after.unwrap_or(""), (limit + 1) as i64], limit)
}

/// One page of the registration states of a group.
pub fn group_registrations<T: DeserializeOwned>(
    conn: &Connection,
    group: &str,
    after: Option<&str>,
    limit: usize,
) -> ApiResult<(Vec<(String, T)>, bool)> {
    let mut stmt =
        conn.prepare_cached("SELECT id, json FROM registrations WHERE grp = ?1 AND id > ?2 ORDER BY id LIMIT ?3")?;
    collect_page(&mut stmt, params![group, after.unwrap_or(""), (limit + 1) as i64], limit)
}

fn collect_page<T: DeserializeOwned>(
    stmt: &mut rusqlite::CachedStatement<'_>,
    p: impl rusqlite::Params,
    limit: usize,
) -> ApiResult<(Vec<(String, T)>, bool)> {
    let rows = stmt.query_map(p, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (k, j) = row?;
        out.push((k, serde_json::from_str(&j)?));
    }
    let more = out.len() > limit;
    out.truncate(limit);
    Ok((out, more))
}

/// Writes a registration state with its group.
pub fn put_registration<T: Serialize>(conn: &Connection, key: &str, group: Option<&str>, value: &T) -> ApiResult<()> {
    let json = serde_json::to_string(value)?;
    let mut stmt = conn.prepare_cached("INSERT OR REPLACE INTO registrations (id, grp, json) VALUES (?1, ?2, ?3)")?;
    stmt.execute(params![key, group, json])?;
    Ok(())
}

/// Reads a hub device.
pub fn get_device<T: DeserializeOwned>(conn: &Connection, hub: &str, id: &str) -> ApiResult<Option<T>> {
    let mut stmt = conn.prepare_cached("SELECT json FROM devices WHERE hub = ?1 AND id = ?2")?;
    let json: Option<String> = stmt.query_row(params![hub, id], |r| r.get(0)).optional()?;
    Ok(match json {
        Some(j) => Some(serde_json::from_str(&j)?),
        None => None,
    })
}

/// Writes a hub device.
pub fn put_device<T: Serialize>(conn: &Connection, hub: &str, id: &str, value: &T) -> ApiResult<()> {
    let json = serde_json::to_string(value)?;
    let mut stmt = conn.prepare_cached("INSERT OR REPLACE INTO devices (hub, id, json) VALUES (?1, ?2, ?3)")?;
    stmt.execute(params![hub, id, json])?;
    Ok(())
}

/// Deletes a hub device; whether it existed.
pub fn delete_device(conn: &Connection, hub: &str, id: &str) -> ApiResult<bool> {
    let mut stmt = conn.prepare_cached("DELETE FROM devices WHERE hub = ?1 AND id = ?2")?;
    Ok(stmt.execute(params![hub, id])? > 0)
}

/// One page of a hub's devices after `after`.
pub fn device_page<T: DeserializeOwned>(
    conn: &Connection,
    hub: &str,
    after: Option<&str>,
    limit: usize,
) -> ApiResult<(Vec<(String, T)>, bool)> {
    let mut stmt =
        conn.prepare_cached("SELECT id, json FROM devices WHERE hub = ?1 AND id > ?2 ORDER BY id LIMIT ?3")?;
    collect_page(&mut stmt, params![hub, after.unwrap_or(""), (limit + 1) as i64], limit)
}

/// A refused registration attempt record.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    /// Lower-case registration ID.
    pub registration_id: String,
    /// Refused attempts so far.
    pub attempts: u64,
    /// Why the last attempt was refused.
    pub last_reason: String,
    /// When (RFC 3339).
    pub last_attempt_utc: String,
}

/// Counts a refused attempt.
pub fn record_refusal(conn: &Connection, id: &str, reason: &str, at: &str) -> ApiResult<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO refusals (id, attempts, reason, at) VALUES (?1, 1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET attempts = attempts + 1, reason = excluded.reason, at = excluded.at",
    )?;
    stmt.execute(params![id, reason, at])?;
    Ok(())
}

/// Refusal records: one ID or all.
pub fn refusals(conn: &Connection, id: Option<&str>) -> ApiResult<Vec<Refusal>> {
    let sql = if id.is_some() {
        "SELECT id, attempts, reason, at FROM refusals WHERE id = ?1"
    } else {
        "SELECT id, attempts, reason, at FROM refusals WHERE ?1 IS NULL ORDER BY id"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params![id], |r| {
        Ok(Refusal {
            registration_id: r.get(0)?,
            attempts: r.get::<_, i64>(1)?.max(0) as u64,
            last_reason: r.get(2)?,
            last_attempt_utc: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_are_visible_after_ack_and_failed_ops_roll_back() {
        let dir = std::env::temp_dir().join(format!("engine-store-{}", crate::engine::util::new_uuid()));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Store::open(&dir.join("t.db")).expect("open");
        store.write(|c| put(c, INDIVIDUAL, "a", &serde_json::json!({"x": 1}))).await.expect("write");
        let failed = store
            .write(|c| {
                put(c, INDIVIDUAL, "b", &serde_json::json!({"x": 2}))?;
                Err::<(), _>(ApiError::conflict("no"))
            })
            .await;
        assert!(failed.is_err());
        let a: Option<serde_json::Value> = store.read(|c| get(c, INDIVIDUAL, "a")).expect("read");
        let b: Option<serde_json::Value> = store.read(|c| get(c, INDIVIDUAL, "b")).expect("read");
        assert!(a.is_some());
        assert!(b.is_none());
        store.write(|c| record_refusal(c, "d", "r1", "t1")).await.expect("refusal");
        store.write(|c| record_refusal(c, "d", "r2", "t2")).await.expect("refusal");
        let r = store.read(|c| refusals(c, Some("d"))).expect("read");
        assert_eq!(r.first().map(|r| (r.attempts, r.last_reason.as_str())), Some((2, "r2")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
