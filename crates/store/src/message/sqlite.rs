//! [`SqliteMessageStore`]: the [`MessageStore`] in one SQLite file, written by one thread.
//!
//! All records are rows of the table `records`, keyed by `(instance, kind, name, seq)` as the
//! module documentation of [`crate::message`] describes, in a `WITHOUT ROWID` table so the
//! rows sit in key order. The database runs in WAL mode with the exclusive locking mode, so a
//! second process cannot open the same store, and with incremental auto-vacuum, so removed
//! records can be returned to the file system.
//!
//! SQLite was chosen over fjall by measurement (`examples/store_bench.rs`, figures in
//! docs/benchmarks.md, "Message store"): with fsync both engines run at the disk's sync rate,
//! and SQLite returns a damaged value to the store's CRC check, so a corrupt record is skipped
//! alone.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::admission::{Admission, Queued};
use super::record::{Decoder, Key, Kind, open};
use super::writer::{Command, SharedStats, Usage, Writer};
use super::{
    CorruptRecord, Durability, InstanceState, MessageStore, MessageStoreSettings,
    MessageStoreStats, PurgeReport, SessionState, StoreFuture, UnixMillis, WriteBatch,
};
use crate::error::StoreError;
use crate::sqlite::sqlite_error;

/// The directory of the SQLite message store inside the data directory.
pub const MESSAGE_STORE_DIR: &str = "message-store/sqlite";

/// The name of the message database file inside [`MESSAGE_STORE_DIR`].
pub const MESSAGE_DATABASE_FILE_NAME: &str = "messages.db";

/// The newest layout of the message database this build reads and writes, kept in SQLite's
/// `user_version`.
const MESSAGE_SCHEMA_VERSION: i64 = 1;

/// The [`MessageStore`] in `<data_dir>/message-store/sqlite/messages.db`.
///
/// One writer thread owns the connection and runs every operation in submission order, so a
/// load returns the effect of every batch submitted before it. [`Durability`] sets when a commit completes.
/// Dropping the store lets the writer finish the operations already submitted, then closes the
/// database; the drop blocks until then.
#[derive(Debug)]
pub struct SqliteMessageStore {
    path: PathBuf,
    admission: Arc<Admission>,
    stats: Arc<SharedStats>,
    corrupt_at_open: Vec<CorruptRecord>,
    writer: Option<JoinHandle<()>>,
}

impl SqliteMessageStore {
    /// Opens the store under `data_dir`, creating the directories and the database if they do
    /// not exist, and starts the writer thread.
    ///
    /// Opening reads every record once to check its checksum and to count each session's
    /// queue and each instance's bytes, so it takes time in proportion to the stored data and
    /// blocks: async code should call it inside `tokio::task::spawn_blocking`. Records that
    /// fail the check are logged, listed by [`corrupt_records_at_open`](Self::corrupt_records_at_open)
    /// and left in place. Fails if another process has the store open, if the file was
    /// written by a newer Switchyard, or if SQLite fails.
    pub fn open(
        data_dir: &Path,
        settings: MessageStoreSettings,
    ) -> Result<SqliteMessageStore, StoreError> {
        let directory = data_dir.join(MESSAGE_STORE_DIR);
        std::fs::create_dir_all(&directory).map_err(|error| StoreError::CreateDataDir {
            path: directory.clone(),
            error,
        })?;
        let path = directory.join(MESSAGE_DATABASE_FILE_NAME);

        let connection = Connection::open(&path).map_err(sqlite_error("open", &path))?;
        configure(&connection, &path, settings.durability)?;
        create_schema(&connection, &path)?;
        let (usage, corrupt_at_open) = scan(&connection, &path)?;
        for record in &corrupt_at_open {
            tracing::warn!(file = %record.file.display(), key = %record.key, reason = %record.reason,
                "skipping corrupt message store record");
        }

        let stats = Arc::new(SharedStats::default());
        let (sender, receiver) = mpsc::channel();
        let admission = Admission::new(sender, settings.max_pending_batches);
        let writer = Writer::new(
            connection,
            path.clone(),
            settings,
            usage,
            Arc::clone(&stats),
        );
        let handle = std::thread::Builder::new()
            .name("message-store-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|error| StoreError::WriterThread {
                path: path.clone(),
                error,
            })?;

        Ok(SqliteMessageStore {
            path,
            admission,
            stats,
            corrupt_at_open,
            writer: Some(handle),
        })
    }

    /// Returns the path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the records that failed their checksum when the store was opened.
    pub fn corrupt_records_at_open(&self) -> &[CorruptRecord] {
        &self.corrupt_at_open
    }

    /// Submits a command built around a oneshot sender and returns the future of its result.
    fn request<T: Send + 'static>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> StoreFuture<T> {
        let (done, answer) = oneshot::channel();
        self.admission.submit(Queued::Other(command(done)));
        let path = self.path.clone();
        Box::pin(async move { answer.await.map_err(|_| closed(&path))? })
    }

    /// Submits one write of `batches` during this call, so that it commits in call order
    /// whenever its future is polled.
    fn submit_write(&self, batches: Vec<WriteBatch>) -> StoreFuture<()> {
        let (done, answer) = oneshot::channel();
        self.admission.submit(Queued::Write { batches, done });
        let path = self.path.clone();
        Box::pin(async move { answer.await.map_err(|_| closed(&path))? })
    }

    /// Pauses the writer thread until the returned guard is dropped, so that tests can fill
    /// the write queue. The writer first runs the commands submitted before this call, and
    /// the ones submitted meanwhile wait as they do behind a slow disk. Dropping the store
    /// blocks until the guard is dropped too, because the writer finishes every command first.
    pub fn pause_writer(&self) -> WriterPause {
        let (resume, paused) = mpsc::channel();
        self.admission
            .submit(Queued::Other(Command::Pause { resume: paused }));
        WriterPause { _resume: resume }
    }
}

/// A pause of the writer thread, from [`SqliteMessageStore::pause_writer`] until it is
/// dropped.
#[derive(Debug)]
pub struct WriterPause {
    _resume: mpsc::Sender<()>,
}

fn closed(path: &Path) -> StoreError {
    StoreError::MessageStoreClosed {
        path: path.to_owned(),
    }
}

impl MessageStore for SqliteMessageStore {
    fn submit(&self, batch: WriteBatch) -> StoreFuture<()> {
        self.submit_write(vec![batch])
    }

    fn submit_atomic(&self, batches: Vec<WriteBatch>) -> StoreFuture<()> {
        if batches.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        self.submit_write(batches)
    }

    fn load_all_at(&self, instance_id: &str, now: UnixMillis) -> StoreFuture<InstanceState> {
        let instance_id = instance_id.to_owned();
        self.request(move |done| Command::Load {
            instance_id,
            now,
            done,
        })
    }

    fn purge_expired(&self, now: UnixMillis) -> StoreFuture<PurgeReport> {
        self.request(move |done| Command::Purge { now, done })
    }

    fn compact(&self) -> StoreFuture<()> {
        self.request(|done| Command::Compact { done })
    }

    fn stats(&self) -> MessageStoreStats {
        MessageStoreStats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            batches: self.stats.batches.load(Ordering::Relaxed),
            dropped_oldest: self.stats.dropped_oldest.load(Ordering::Relaxed),
            compactions: self.stats.compactions.load(Ordering::Relaxed),
        }
    }
}

impl Drop for SqliteMessageStore {
    fn drop(&mut self) {
        // The writer runs the commands submitted before this one, then exits.
        self.admission.submit(Queued::Other(Command::Shutdown));
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!(file = %self.path.display(), "message store writer thread panicked");
        }
    }
}

/// Sets the pragmas of the message database.
fn configure(
    connection: &Connection,
    path: &Path,
    durability: Durability,
) -> Result<(), StoreError> {
    // The exclusive locking mode must come before the first WAL access, so that SQLite keeps
    // the WAL index in process memory and holds the file lock for the life of the connection.
    connection
        .pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(sqlite_error("set locking mode", path))?;
    // Takes effect only on a database without tables, which is when it is needed.
    connection
        .pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(sqlite_error("set auto vacuum", path))?;
    let mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sqlite_error("set journal mode", path))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::WalUnavailable {
            path: path.to_owned(),
            mode,
        });
    }
    let synchronous = match durability {
        Durability::PerMessage | Durability::GroupCommit { .. } => "FULL",
        Durability::Memory => "NORMAL",
    };
    connection
        .pragma_update(None, "synchronous", synchronous)
        .map_err(sqlite_error("set synchronous", path))?;
    // Takes the exclusive lock now, so that a second process fails at open, not later.
    connection
        .execute_batch("BEGIN IMMEDIATE; COMMIT;")
        .map_err(sqlite_error("lock message store", path))?;
    Ok(())
}

fn create_schema(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite_error("read schema version", path))?;
    if version > MESSAGE_SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: version,
            supported: MESSAGE_SCHEMA_VERSION,
        });
    }
    if version < 0 {
        return Err(StoreError::SchemaUnknown {
            path: path.to_owned(),
            found: version,
            supported: MESSAGE_SCHEMA_VERSION,
        });
    }
    connection
        .execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS records (
                 instance TEXT NOT NULL,
                 kind INTEGER NOT NULL,
                 name TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 expires_at INTEGER,
                 value BLOB NOT NULL,
                 PRIMARY KEY (instance, kind, name, seq)
             ) WITHOUT ROWID;
             PRAGMA user_version = 1;
             COMMIT;",
        )
        .map_err(sqlite_error("create message schema", path))?;
    Ok(())
}

/// Reads every record once, checking its checksum, and returns the usage counters with the
/// records that failed.
fn scan(connection: &Connection, path: &Path) -> Result<(Usage, Vec<CorruptRecord>), StoreError> {
    let mut usage = Usage::default();
    let mut corrupt = Vec::new();
    let mut statement = connection
        .prepare("SELECT instance, kind, name, seq, value FROM records")
        .map_err(sqlite_error("scan message store", path))?;
    let mut rows = statement
        .query([])
        .map_err(sqlite_error("scan message store", path))?;
    while let Some(row) = rows
        .next()
        .map_err(sqlite_error("scan message store", path))?
    {
        let instance_id: String = row
            .get(0)
            .map_err(sqlite_error("scan message store", path))?;
        let kind: i64 = row
            .get(1)
            .map_err(sqlite_error("scan message store", path))?;
        let name: String = row
            .get(2)
            .map_err(sqlite_error("scan message store", path))?;
        let seq: i64 = row
            .get(3)
            .map_err(sqlite_error("scan message store", path))?;
        let value = row
            .get_ref(4)
            .and_then(|value| value.as_blob().map_err(rusqlite::Error::from))
            .map_err(sqlite_error("scan message store", path))?;

        let instance = usage.instance_mut(&instance_id);
        instance.bytes += value.len() as u64;
        let Some(kind) = Kind::from_column(kind) else {
            corrupt.push(CorruptRecord {
                file: path.to_owned(),
                key: format!("{instance_id}/{kind}/{name}/{seq}"),
                reason: format!("unknown record kind {kind}"),
            });
            continue;
        };
        let key = Key {
            instance_id: &instance_id,
            kind,
            name: &name,
            seq: seq as u64,
        };
        if let Err(reason) = open(&key, value) {
            corrupt.push(CorruptRecord {
                file: path.to_owned(),
                key: key.describe(),
                reason,
            });
            continue;
        }
        match kind {
            Kind::Session => {
                instance.sessions.insert(name);
            }
            Kind::Queued => *instance.queued.entry(name).or_insert(0) += 1,
            _ => {}
        }
    }
    Ok((usage, corrupt))
}

/// Reads the state of one instance, leaving out what expired at or before `now`.
pub(super) fn load_instance(
    connection: &Connection,
    path: &Path,
    instance_id: &str,
    now: UnixMillis,
) -> Result<InstanceState, StoreError> {
    let error = || sqlite_error("load instance", path);
    let mut statement = connection
        .prepare_cached(
            "SELECT kind, name, seq, value FROM records WHERE instance = ?1 \
             ORDER BY kind, name, seq",
        )
        .map_err(error())?;
    let mut rows = statement.query(params![instance_id]).map_err(error())?;

    let mut state = InstanceState::default();
    let mut sessions: BTreeMap<String, SessionState> = BTreeMap::new();
    let mut expired_sessions: HashSet<String> = HashSet::new();
    while let Some(row) = rows.next().map_err(error())? {
        let kind: i64 = row.get(0).map_err(error())?;
        let name: String = row.get(1).map_err(error())?;
        let seq: i64 = row.get(2).map_err(error())?;
        let value = row
            .get_ref(3)
            .and_then(|value| value.as_blob().map_err(rusqlite::Error::from))
            .map_err(error())?;
        let Some(kind) = Kind::from_column(kind) else {
            state.corrupt.push(CorruptRecord {
                file: path.to_owned(),
                key: format!("{instance_id}/{kind}/{name}/{seq}"),
                reason: format!("unknown record kind {kind}"),
            });
            continue;
        };
        let key = Key {
            instance_id,
            kind,
            name: &name,
            seq: seq as u64,
        };
        let corrupt = |reason: String| CorruptRecord {
            file: path.to_owned(),
            key: key.describe(),
            reason,
        };
        let decoded = open(&key, value).and_then(|body| {
            let mut decoder = Decoder::new(body);
            let record = decode_into(&mut decoder, kind, &name, seq)?;
            decoder.finish()?;
            Ok(record)
        });
        let record = match decoded {
            Ok(record) => record,
            Err(reason) => {
                state.corrupt.push(corrupt(reason));
                continue;
            }
        };

        if let Decoded::Session(session) = &record {
            if session.is_expired(now) {
                state.expired_skipped += 1;
                expired_sessions.insert(name);
            } else {
                sessions.insert(
                    name,
                    SessionState {
                        session: session.clone(),
                        queue: Vec::new(),
                        inflight: Vec::new(),
                        incoming_qos2: Vec::new(),
                        will: None,
                    },
                );
            }
            continue;
        }
        if let Decoded::Retained(message) = record {
            if message.is_expired(now) {
                state.expired_skipped += 1;
            } else {
                state.retained.push(message);
            }
            continue;
        }
        if expired_sessions.contains(&name) {
            continue;
        }
        let Some(session) = sessions.get_mut(&name) else {
            state.corrupt.push(corrupt(
                "its session record is missing or corrupt".to_owned(),
            ));
            continue;
        };
        match record {
            Decoded::Queued(seq, message) => {
                if message.is_expired(now) {
                    state.expired_skipped += 1;
                } else {
                    session.queue.push((seq, message));
                }
            }
            Decoded::Inflight(packet_id, inflight) => session.inflight.push((packet_id, inflight)),
            Decoded::IncomingQos2(packet_id) => session.incoming_qos2.push(packet_id),
            Decoded::Will(will) => session.will = Some(will),
            Decoded::Session(_) | Decoded::Retained(_) => unreachable!("handled above"),
        }
    }
    state.sessions = sessions.into_values().collect();
    Ok(state)
}

enum Decoded {
    Session(super::SessionRecord),
    Queued(u64, super::StoredMessage),
    Inflight(u16, super::InflightMessage),
    IncomingQos2(u16),
    Will(super::StoredWill),
    Retained(super::StoredMessage),
}

fn decode_into(
    decoder: &mut Decoder<'_>,
    kind: Kind,
    name: &str,
    seq: i64,
) -> Result<Decoded, String> {
    let packet_id = || {
        u16::try_from(seq)
            .ok()
            .filter(|id| *id != 0)
            .ok_or_else(|| format!("packet id {seq} is out of range"))
    };
    Ok(match kind {
        Kind::Session => Decoded::Session(decoder.session(name)?),
        Kind::Queued => Decoded::Queued(seq as u64, decoder.message()?),
        Kind::Inflight => Decoded::Inflight(packet_id()?, decoder.inflight()?),
        Kind::IncomingQos2 => Decoded::IncomingQos2(packet_id()?),
        Kind::Will => Decoded::Will(decoder.will()?),
        Kind::Retained => {
            let message = decoder.message()?;
            if message.topic != name {
                return Err(format!(
                    "stored topic {:?} differs from the key's topic",
                    message.topic
                ));
            }
            Decoded::Retained(message)
        }
    })
}
