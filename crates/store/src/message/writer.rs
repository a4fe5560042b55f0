//! The writer thread of [`SqliteMessageStore`](super::SqliteMessageStore): it owns the
//! connection, groups batches into commits as the [`Durability`] sets, and keeps the counters
//! that enforce the queue and storage limits.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::admission::Slot;
use super::record::{Encoder, Key, Kind, seal};
use super::sqlite::load_instance;
use super::{
    Durability, InstanceState, MessageStoreSettings, PurgeReport, QueueFullPolicy, UnixMillis,
    WriteBatch, WriteOp,
};
use crate::error::StoreError;
use crate::sqlite::sqlite_error;

/// The maximum number of batches in one commit under [`Durability::Memory`].
const MEMORY_MAX_BATCH: usize = 256;

/// One submit waiting for the writer: a single batch, or the batches of an atomic submit,
/// which the writer applies inside one savepoint of one transaction. It comes with the
/// channel that completes the submit.
#[derive(Debug)]
pub(crate) struct PendingWrite {
    pub(crate) batches: Vec<WriteBatch>,
    pub(crate) done: oneshot::Sender<Result<(), StoreError>>,
    /// Given back when the writer drops the write, which admits the next waiting command.
    pub(crate) _slot: Slot,
}

/// A request to the writer thread.
#[derive(Debug)]
pub(crate) enum Command {
    Write(PendingWrite),
    Load {
        instance_id: String,
        now: UnixMillis,
        done: oneshot::Sender<Result<InstanceState, StoreError>>,
    },
    Purge {
        now: UnixMillis,
        done: oneshot::Sender<Result<PurgeReport, StoreError>>,
    },
    Compact {
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Blocks the writer until the sender of `resume` is dropped.
    Pause {
        resume: std::sync::mpsc::Receiver<()>,
    },
    Shutdown,
}

/// Counters shared between the writer and the store handle.
#[derive(Debug, Default)]
pub(crate) struct SharedStats {
    pub(crate) commits: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) dropped_oldest: AtomicU64,
    pub(crate) compactions: AtomicU64,
}

/// The counters of one instance that enforce the limits.
#[derive(Debug, Default)]
pub(crate) struct InstanceUsage {
    /// Bytes of stored values, corrupt ones included.
    pub(crate) bytes: u64,
    /// Client ids with a valid session record.
    pub(crate) sessions: HashSet<String>,
    /// Number of queued messages per client id.
    pub(crate) queued: HashMap<String, u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Usage {
    instances: HashMap<String, InstanceUsage>,
}

impl Usage {
    pub(crate) fn instance_mut(&mut self, instance_id: &str) -> &mut InstanceUsage {
        if !self.instances.contains_key(instance_id) {
            self.instances
                .insert(instance_id.to_owned(), InstanceUsage::default());
        }
        self.instances.get_mut(instance_id).expect("inserted above")
    }
}

/// The previous value of one counter, restored when a batch or a commit fails.
enum Undo {
    Bytes(u64),
    Session(String, bool),
    Queued(String, Option<u64>),
}

/// The changes of one batch to the counters, to undo or to add to the statistics.
#[derive(Default)]
struct BatchEffects {
    undo: Vec<Undo>,
    dropped_oldest: u64,
    removed_bytes: u64,
}

pub(crate) struct Writer {
    connection: Connection,
    path: PathBuf,
    settings: MessageStoreSettings,
    usage: Usage,
    stats: Arc<SharedStats>,
    removed_since_compaction: u64,
    /// The number of writes in the previous group commit.
    previous_group: usize,
}

impl Writer {
    pub(crate) fn new(
        connection: Connection,
        path: PathBuf,
        settings: MessageStoreSettings,
        usage: Usage,
        stats: Arc<SharedStats>,
    ) -> Writer {
        Writer {
            connection,
            path,
            settings,
            usage,
            stats,
            removed_since_compaction: 0,
            previous_group: 1,
        }
    }

    /// Runs commands until [`Command::Shutdown`] or until every sender is gone.
    pub(crate) fn run(mut self, receiver: Receiver<Command>) {
        let mut next: Option<Command> = None;
        loop {
            let command = match next.take() {
                Some(command) => command,
                None => match receiver.recv() {
                    Ok(command) => command,
                    Err(_) => break,
                },
            };
            match command {
                Command::Write(first) => {
                    let mut group = vec![first];
                    next = self.collect(&receiver, &mut group);
                    self.previous_group = group.len();
                    self.commit_group(group);
                    self.compact_if_due();
                }
                Command::Load {
                    instance_id,
                    now,
                    done,
                } => {
                    let _ = done.send(load_instance(
                        &self.connection,
                        &self.path,
                        &instance_id,
                        now,
                    ));
                }
                Command::Purge { now, done } => {
                    let _ = done.send(self.purge(now));
                }
                Command::Compact { done } => {
                    let _ = done.send(self.compact());
                }
                Command::Pause { resume } => {
                    // Returns with an error once the sender is dropped, which is the resume.
                    let _ = resume.recv();
                }
                Command::Shutdown => break,
            }
        }
        // Moves the WAL into the main file so that the next open starts from one file.
        if let Err(error) = self
            .connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        {
            tracing::warn!(file = %self.path.display(), %error, "message store checkpoint at close failed");
        }
    }

    /// Adds batches to `group` as the durability policy allows and returns a command other
    /// than a write that ended the group, to run after the commit.
    fn collect(
        &self,
        receiver: &Receiver<Command>,
        group: &mut Vec<PendingWrite>,
    ) -> Option<Command> {
        let (max_delay, max_batch) = match self.settings.durability {
            Durability::PerMessage => return None,
            Durability::GroupCommit {
                max_delay,
                max_batch,
            } => (max_delay, max_batch.max(1)),
            Durability::Memory => (Duration::ZERO, MEMORY_MAX_BATCH),
        };
        // Waiting pays off only when as many writers as last time are about to submit again,
        // so a group stops waiting once it is as large as the previous one. A lone writer
        // therefore does not wait.
        let target = self.previous_group.clamp(1, max_batch);
        let deadline = Instant::now() + max_delay;
        while group.len() < max_batch {
            let command = match receiver.try_recv() {
                Ok(command) => command,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if group.len() >= target || now >= deadline {
                        break;
                    }
                    match receiver.recv_timeout(deadline - now) {
                        Ok(command) => command,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            match command {
                Command::Write(write) => group.push(write),
                other => return Some(other),
            }
        }
        None
    }

    /// Commits a group of writes in one transaction and completes their submits.
    ///
    /// Each write runs inside its own savepoint, so a write that fails (a limit, an invalid
    /// operation) is rolled back alone while the others commit. A write of several batches
    /// is never split: its batches share the savepoint, and one failing batch rolls back all
    /// of them.
    fn commit_group(&mut self, group: Vec<PendingWrite>) {
        if let Err(error) = self.connection.execute_batch("BEGIN IMMEDIATE") {
            let message = error.to_string();
            for write in group {
                let _ = write.done.send(Err(self.commit_failed(&message)));
            }
            return;
        }

        let mut results: Vec<Result<Vec<BatchEffects>, StoreError>> =
            Vec::with_capacity(group.len());
        let mut broken = None;
        for write in &group {
            match self.apply_in_savepoint(&write.batches) {
                Ok(result) => results.push(result),
                Err(error) => {
                    // The savepoint could not be set or rolled back, so the transaction may
                    // contain part of a failed write: nothing of the group may commit.
                    broken = Some(error.to_string());
                    results.push(Ok(Vec::new()));
                    break;
                }
            }
        }
        if let Some(message) = broken {
            tracing::error!(file = %self.path.display(), error = %message, "message store savepoint failed");
            let _ = self.connection.execute_batch("ROLLBACK");
            self.fail_group(group, results, &message);
            return;
        }

        if let Err(error) = self.connection.execute_batch("COMMIT") {
            let message = error.to_string();
            tracing::error!(file = %self.path.display(), %error, writes = group.len(),
                "message store commit failed");
            let _ = self.connection.execute_batch("ROLLBACK");
            self.fail_group(group, results, &message);
            return;
        }

        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        for (write, result) in group.into_iter().zip(results) {
            let result = result.map(|batches| {
                let count = batches.len() as u64;
                self.stats.batches.fetch_add(count, Ordering::Relaxed);
                for effects in batches {
                    self.stats
                        .dropped_oldest
                        .fetch_add(effects.dropped_oldest, Ordering::Relaxed);
                    self.removed_since_compaction += effects.removed_bytes;
                }
            });
            let _ = write.done.send(result);
        }
    }

    /// Undoes the counters of the writes that had applied and fails every submit of a group
    /// whose transaction was rolled back.
    fn fail_group(
        &mut self,
        group: Vec<PendingWrite>,
        results: Vec<Result<Vec<BatchEffects>, StoreError>>,
        message: &str,
    ) {
        let mut applied: Vec<(String, Vec<Undo>)> = Vec::new();
        for (write, result) in group.iter().zip(results) {
            let Ok(batches) = result else { continue };
            for (batch, effects) in write.batches.iter().zip(batches) {
                applied.push((batch.instance_id.clone(), effects.undo));
            }
        }
        for (instance_id, undo) in applied.into_iter().rev() {
            self.undo(&instance_id, undo);
        }
        for write in group {
            let _ = write.done.send(Err(self.commit_failed(message)));
        }
    }

    fn commit_failed(&self, message: &str) -> StoreError {
        StoreError::CommitFailed {
            path: self.path.clone(),
            message: message.to_owned(),
        }
    }

    /// Applies the batches of one write, in order, inside one savepoint and returns the
    /// effects of each. The outer error means the transaction itself is in doubt, the inner
    /// one that a batch failed and every batch of the write was rolled back.
    fn apply_in_savepoint(
        &mut self,
        batches: &[WriteBatch],
    ) -> Result<Result<Vec<BatchEffects>, StoreError>, StoreError> {
        self.connection
            .execute_batch("SAVEPOINT write")
            .map_err(sqlite_error("write batch", &self.path))?;
        let mut applied: Vec<BatchEffects> = Vec::with_capacity(batches.len());
        let mut failure = None;
        for batch in batches {
            let mut effects = BatchEffects::default();
            let result = self.apply(batch, &mut effects);
            applied.push(effects);
            if let Err(error) = result {
                failure = Some(error);
                break;
            }
        }
        let Some(error) = failure else {
            self.connection
                .execute_batch("RELEASE write")
                .map_err(sqlite_error("write batch", &self.path))?;
            return Ok(Ok(applied));
        };
        for (batch, effects) in batches.iter().zip(applied).rev() {
            self.undo(&batch.instance_id, effects.undo);
        }
        self.connection
            .execute_batch("ROLLBACK TO write; RELEASE write")
            .map_err(sqlite_error("roll back batch", &self.path))?;
        Ok(Err(error))
    }

    fn undo(&mut self, instance_id: &str, undo: Vec<Undo>) {
        let instance = self.usage.instance_mut(instance_id);
        for entry in undo.into_iter().rev() {
            match entry {
                Undo::Bytes(old) => instance.bytes = old,
                Undo::Session(client_id, true) => {
                    instance.sessions.insert(client_id);
                }
                Undo::Session(client_id, false) => {
                    instance.sessions.remove(&client_id);
                }
                Undo::Queued(client_id, Some(count)) => {
                    instance.queued.insert(client_id, count);
                }
                Undo::Queued(client_id, None) => {
                    instance.queued.remove(&client_id);
                }
            }
        }
    }

    fn apply(&mut self, batch: &WriteBatch, effects: &mut BatchEffects) -> Result<(), StoreError> {
        let instance_id = batch.instance_id.as_str();
        if instance_id.is_empty() {
            return Err(invalid(instance_id, "the instance id is empty".to_owned()));
        }
        for op in &batch.ops {
            validate(instance_id, op)?;
            self.apply_op(instance_id, op, effects)?;
        }
        Ok(())
    }

    fn apply_op(
        &mut self,
        instance_id: &str,
        op: &WriteOp,
        effects: &mut BatchEffects,
    ) -> Result<(), StoreError> {
        let key = |kind, name, seq| Key {
            instance_id,
            kind,
            name,
            seq,
        };
        match op {
            WriteOp::PutSession(session) => {
                let key = key(Kind::Session, &session.client_id, 0);
                let mut encoder = Encoder::default();
                encoder.session(session);
                self.put(key, session.expires_at, encoder.finish(), effects)?;
                let instance = self.usage.instance_mut(instance_id);
                if instance.sessions.insert(session.client_id.clone()) {
                    effects
                        .undo
                        .push(Undo::Session(session.client_id.clone(), false));
                }
            }
            WriteOp::RemoveSession { client_id } => {
                self.remove_session(instance_id, client_id, effects)?
            }
            WriteOp::Enqueue {
                client_id,
                seq,
                message,
            } => {
                self.require_session(instance_id, client_id)?;
                let key = key(Kind::Queued, client_id, *seq);
                if self.stored_length(&key)?.is_none() {
                    self.make_room_in_queue(instance_id, client_id, effects)?;
                    self.add_queued(instance_id, client_id, 1, effects);
                }
                let mut encoder = Encoder::default();
                encoder.message(message);
                self.put(key, message.expires_at, encoder.finish(), effects)?;
            }
            WriteOp::Dequeue { client_id, seq } => {
                if self.remove(&key(Kind::Queued, client_id, *seq), effects)? {
                    self.add_queued(instance_id, client_id, -1, effects);
                }
            }
            WriteOp::PutInflight {
                client_id,
                packet_id,
                inflight,
            } => {
                self.require_session(instance_id, client_id)?;
                let mut encoder = Encoder::default();
                encoder.inflight(inflight);
                let key = key(Kind::Inflight, client_id, u64::from(*packet_id));
                self.put(key, None, encoder.finish(), effects)?;
            }
            WriteOp::RemoveInflight {
                client_id,
                packet_id,
            } => {
                self.remove(
                    &key(Kind::Inflight, client_id, u64::from(*packet_id)),
                    effects,
                )?;
            }
            WriteOp::AddIncomingQos2 {
                client_id,
                packet_id,
            } => {
                self.require_session(instance_id, client_id)?;
                let key = key(Kind::IncomingQos2, client_id, u64::from(*packet_id));
                self.put(key, None, Vec::new(), effects)?;
            }
            WriteOp::RemoveIncomingQos2 {
                client_id,
                packet_id,
            } => {
                let key = key(Kind::IncomingQos2, client_id, u64::from(*packet_id));
                self.remove(&key, effects)?;
            }
            WriteOp::PutWill { client_id, will } => {
                self.require_session(instance_id, client_id)?;
                let mut encoder = Encoder::default();
                encoder.will(will);
                self.put(
                    key(Kind::Will, client_id, 0),
                    None,
                    encoder.finish(),
                    effects,
                )?;
            }
            WriteOp::RemoveWill { client_id } => {
                self.remove(&key(Kind::Will, client_id, 0), effects)?;
            }
            WriteOp::PutRetained(message) => {
                let mut encoder = Encoder::default();
                encoder.message(message);
                let key = key(Kind::Retained, &message.topic, 0);
                self.put(key, message.expires_at, encoder.finish(), effects)?;
            }
            WriteOp::RemoveRetained { topic } => {
                self.remove(&key(Kind::Retained, topic, 0), effects)?;
            }
        }
        Ok(())
    }

    fn require_session(&mut self, instance_id: &str, client_id: &str) -> Result<(), StoreError> {
        if self
            .usage
            .instance_mut(instance_id)
            .sessions
            .contains(client_id)
        {
            Ok(())
        } else {
            Err(StoreError::SessionNotFound {
                instance_id: instance_id.to_owned(),
                client_id: client_id.to_owned(),
            })
        }
    }

    /// Applies the queue limit before one more message is queued for `client_id`.
    fn make_room_in_queue(
        &mut self,
        instance_id: &str,
        client_id: &str,
        effects: &mut BatchEffects,
    ) -> Result<(), StoreError> {
        let limit = self.settings.max_queued_messages_per_session;
        let queued = self.queued(instance_id, client_id);
        if queued < limit {
            return Ok(());
        }
        let full = || StoreError::QueueFull {
            instance_id: instance_id.to_owned(),
            client_id: client_id.to_owned(),
            limit,
        };
        if self.settings.queue_full == QueueFullPolicy::Reject {
            return Err(full());
        }
        // Drops as many of the oldest messages as needed, which is one unless the limit was
        // lowered since they were queued.
        for _ in limit..=queued {
            let oldest: Option<i64> = self
                .connection
                .prepare_cached(
                    "SELECT seq FROM records WHERE instance = ?1 AND kind = ?2 AND name = ?3 \
                     ORDER BY seq LIMIT 1",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row(
                            params![instance_id, Kind::Queued as i64, client_id],
                            |row| row.get(0),
                        )
                        .optional()
                })
                .map_err(sqlite_error("find oldest queued message", &self.path))?;
            let Some(oldest) = oldest else {
                return Err(full());
            };
            let key = Key {
                instance_id,
                kind: Kind::Queued,
                name: client_id,
                seq: oldest as u64,
            };
            if self.remove(&key, effects)? {
                self.add_queued(instance_id, client_id, -1, effects);
                effects.dropped_oldest += 1;
            }
        }
        Ok(())
    }

    fn queued(&mut self, instance_id: &str, client_id: &str) -> u64 {
        self.usage
            .instance_mut(instance_id)
            .queued
            .get(client_id)
            .copied()
            .unwrap_or(0)
    }

    fn add_queued(
        &mut self,
        instance_id: &str,
        client_id: &str,
        delta: i64,
        effects: &mut BatchEffects,
    ) {
        let instance = self.usage.instance_mut(instance_id);
        let old = instance.queued.get(client_id).copied();
        effects.undo.push(Undo::Queued(client_id.to_owned(), old));
        let new = old.unwrap_or(0).saturating_add_signed(delta);
        if new == 0 {
            instance.queued.remove(client_id);
        } else {
            instance.queued.insert(client_id.to_owned(), new);
        }
    }

    fn set_bytes(&mut self, instance_id: &str, bytes: u64, effects: &mut BatchEffects) {
        let instance = self.usage.instance_mut(instance_id);
        effects.undo.push(Undo::Bytes(instance.bytes));
        instance.bytes = bytes;
    }

    fn stored_length(&self, key: &Key<'_>) -> Result<Option<u64>, StoreError> {
        self.connection
            .prepare_cached(
                "SELECT length(value) FROM records \
                 WHERE instance = ?1 AND kind = ?2 AND name = ?3 AND seq = ?4",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(
                        params![key.instance_id, key.kind as i64, key.name, key.seq as i64],
                        |row| row.get::<_, i64>(0),
                    )
                    .optional()
            })
            .map(|length| length.map(|length| length as u64))
            .map_err(sqlite_error("write batch", &self.path))
    }

    /// Creates or replaces a record, enforcing the instance storage limit.
    fn put(
        &mut self,
        key: Key<'_>,
        expires_at: Option<UnixMillis>,
        body: Vec<u8>,
        effects: &mut BatchEffects,
    ) -> Result<(), StoreError> {
        let value = seal(&key, body);
        let old = self.stored_length(&key)?.unwrap_or(0);
        let new = value.len() as u64;
        let used = self.usage.instance_mut(key.instance_id).bytes;
        let after = used.saturating_sub(old).saturating_add(new);
        let limit = self.settings.max_instance_bytes;
        if new > old && after > limit {
            return Err(StoreError::InstanceStorageFull {
                instance_id: key.instance_id.to_owned(),
                used,
                requested: new - old,
                limit,
            });
        }
        let expires_at = expires_at.map(|deadline| deadline.min(i64::MAX as u64) as i64);
        self.connection
            .prepare_cached(
                "INSERT OR REPLACE INTO records (instance, kind, name, seq, expires_at, value) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    key.instance_id,
                    key.kind as i64,
                    key.name,
                    key.seq as i64,
                    expires_at,
                    value
                ])
            })
            .map_err(sqlite_error("write batch", &self.path))?;
        self.set_bytes(key.instance_id, after, effects);
        effects.removed_bytes += old;
        Ok(())
    }

    /// Removes a record and reports whether it existed.
    fn remove(&mut self, key: &Key<'_>, effects: &mut BatchEffects) -> Result<bool, StoreError> {
        let length: Option<i64> = self
            .connection
            .prepare_cached(
                "DELETE FROM records WHERE instance = ?1 AND kind = ?2 AND name = ?3 AND seq = ?4 \
                 RETURNING length(value)",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(
                        params![key.instance_id, key.kind as i64, key.name, key.seq as i64],
                        |row| row.get(0),
                    )
                    .optional()
            })
            .map_err(sqlite_error("write batch", &self.path))?;
        let Some(length) = length else {
            return Ok(false);
        };
        let used = self.usage.instance_mut(key.instance_id).bytes;
        self.set_bytes(key.instance_id, used.saturating_sub(length as u64), effects);
        effects.removed_bytes += length as u64;
        Ok(true)
    }

    fn remove_session(
        &mut self,
        instance_id: &str,
        client_id: &str,
        effects: &mut BatchEffects,
    ) -> Result<(), StoreError> {
        let removed: i64 = self
            .connection
            .prepare_cached(
                "DELETE FROM records WHERE instance = ?1 AND kind IN (0, 1, 2, 3, 4) AND name = ?2 \
                 RETURNING length(value)",
            )
            .and_then(|mut statement| {
                let lengths = statement
                    .query_map(params![instance_id, client_id], |row| row.get::<_, i64>(0))?;
                lengths.sum::<rusqlite::Result<i64>>()
            })
            .map_err(sqlite_error("remove session", &self.path))?;
        let used = self.usage.instance_mut(instance_id).bytes;
        self.set_bytes(instance_id, used.saturating_sub(removed as u64), effects);
        effects.removed_bytes += removed as u64;

        let instance = self.usage.instance_mut(instance_id);
        if instance.sessions.remove(client_id) {
            effects.undo.push(Undo::Session(client_id.to_owned(), true));
        }
        if let Some(count) = instance.queued.remove(client_id) {
            effects
                .undo
                .push(Undo::Queued(client_id.to_owned(), Some(count)));
        }
        Ok(())
    }

    /// Removes expired sessions, queued messages and retained messages in one transaction.
    fn purge(&mut self, now: UnixMillis) -> Result<PurgeReport, StoreError> {
        let now_column = now.min(i64::MAX as u64) as i64;
        let expired_sessions: Vec<(String, String)> = self
            .connection
            .prepare_cached(
                "SELECT instance, name FROM records WHERE kind = 0 AND expires_at <= ?1",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(params![now_column], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect()
            })
            .map_err(sqlite_error("find expired sessions", &self.path))?;

        self.connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(sqlite_error("purge expired records", &self.path))?;
        let mut effects: Vec<(String, BatchEffects)> = Vec::new();
        let result = self.purge_in_transaction(now_column, &expired_sessions, &mut effects);
        let result = result.and_then(|report| {
            self.connection
                .execute_batch("COMMIT")
                .map_err(sqlite_error("purge expired records", &self.path))?;
            Ok(report)
        });
        match result {
            Ok(report) => {
                for (_, effect) in effects {
                    self.removed_since_compaction += effect.removed_bytes;
                }
                self.compact_if_due();
                Ok(report)
            }
            Err(error) => {
                let _ = self.connection.execute_batch("ROLLBACK");
                for (instance_id, effect) in effects.into_iter().rev() {
                    self.undo(&instance_id, effect.undo);
                }
                Err(error)
            }
        }
    }

    fn purge_in_transaction(
        &mut self,
        now_column: i64,
        expired_sessions: &[(String, String)],
        effects: &mut Vec<(String, BatchEffects)>,
    ) -> Result<PurgeReport, StoreError> {
        let mut report = PurgeReport::default();
        for (instance_id, client_id) in expired_sessions {
            let mut effect = BatchEffects::default();
            let result = self.remove_session(instance_id, client_id, &mut effect);
            effects.push((instance_id.clone(), effect));
            result?;
            report.sessions += 1;
        }

        let removed: Vec<(String, i64, String, i64)> = self
            .connection
            .prepare_cached(
                "DELETE FROM records WHERE kind IN (1, 5) AND expires_at <= ?1 \
                 RETURNING instance, kind, name, length(value)",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(params![now_column], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })?
                    .collect()
            })
            .map_err(sqlite_error("purge expired records", &self.path))?;
        for (instance_id, kind, name, length) in removed {
            let mut effect = BatchEffects::default();
            let used = self.usage.instance_mut(&instance_id).bytes;
            self.set_bytes(
                &instance_id,
                used.saturating_sub(length as u64),
                &mut effect,
            );
            effect.removed_bytes += length as u64;
            if kind == Kind::Queued as i64 {
                self.add_queued(&instance_id, &name, -1, &mut effect);
                report.queued_messages += 1;
            } else {
                report.retained_messages += 1;
            }
            effects.push((instance_id, effect));
        }
        Ok(report)
    }

    fn compact_if_due(&mut self) {
        if self.removed_since_compaction < self.settings.compact_after_removed_bytes {
            return;
        }
        if let Err(error) = self.compact() {
            tracing::warn!(file = %self.path.display(), %error, "message store compaction failed");
        }
    }

    /// Returns the free pages to the file system and truncates the WAL.
    fn compact(&mut self) -> Result<(), StoreError> {
        // The pragma frees one page per step and returns a row for each, so it must be stepped
        // to the end.
        self.connection
            .prepare("PRAGMA incremental_vacuum")
            .and_then(|mut statement| {
                let mut rows = statement.query([])?;
                while rows.next()?.is_some() {}
                Ok(())
            })
            .map_err(sqlite_error("compact message store", &self.path))?;
        self.connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(sqlite_error("compact message store", &self.path))?;
        self.removed_since_compaction = 0;
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn invalid(instance_id: &str, reason: String) -> StoreError {
    StoreError::InvalidWrite {
        instance_id: instance_id.to_owned(),
        reason,
    }
}

/// Checks the values the store relies on: names are not empty, QoS and Retain Handling are in
/// range, packet ids are not 0, and queue sequence numbers fit SQLite's signed integer.
fn validate(instance_id: &str, op: &WriteOp) -> Result<(), StoreError> {
    let check_client = |client_id: &str| {
        if client_id.is_empty() {
            Err(invalid(instance_id, "the client id is empty".to_owned()))
        } else {
            Ok(())
        }
    };
    let check_qos = |qos: u8| {
        if qos > 2 {
            Err(invalid(instance_id, format!("QoS {qos} is not 0, 1 or 2")))
        } else {
            Ok(())
        }
    };
    let check_packet_id = |packet_id: u16| {
        if packet_id == 0 {
            Err(invalid(
                instance_id,
                "packet id 0 is not allowed".to_owned(),
            ))
        } else {
            Ok(())
        }
    };
    match op {
        WriteOp::PutSession(session) => {
            check_client(&session.client_id)?;
            if !(3..=5).contains(&session.protocol_version) {
                return Err(invalid(
                    instance_id,
                    format!(
                        "protocol version {} is not 3, 4 or 5",
                        session.protocol_version
                    ),
                ));
            }
            for subscription in &session.subscriptions {
                check_qos(subscription.qos)?;
                if subscription.retain_handling > 2 {
                    return Err(invalid(
                        instance_id,
                        format!(
                            "retain handling {} of filter {:?} is not 0, 1 or 2",
                            subscription.retain_handling, subscription.filter
                        ),
                    ));
                }
            }
        }
        WriteOp::Enqueue {
            client_id,
            seq,
            message,
        } => {
            check_client(client_id)?;
            check_qos(message.qos)?;
            if *seq > i64::MAX as u64 {
                return Err(invalid(
                    instance_id,
                    format!("queue sequence number {seq} is above {}", i64::MAX),
                ));
            }
        }
        WriteOp::PutInflight {
            client_id,
            packet_id,
            inflight,
        } => {
            check_client(client_id)?;
            check_packet_id(*packet_id)?;
            check_qos(inflight.message.qos)?;
        }
        WriteOp::AddIncomingQos2 {
            client_id,
            packet_id,
        } => {
            check_client(client_id)?;
            check_packet_id(*packet_id)?;
        }
        WriteOp::PutWill { client_id, will } => {
            check_client(client_id)?;
            check_qos(will.message.qos)?;
        }
        WriteOp::PutRetained(message) => {
            check_qos(message.qos)?;
            if message.topic.is_empty() {
                return Err(invalid(
                    instance_id,
                    "the retained topic is empty".to_owned(),
                ));
            }
        }
        WriteOp::RemoveSession { .. }
        | WriteOp::Dequeue { .. }
        | WriteOp::RemoveInflight { .. }
        | WriteOp::RemoveIncomingQos2 { .. }
        | WriteOp::RemoveWill { .. }
        | WriteOp::RemoveRetained { .. } => {}
    }
    Ok(())
}
