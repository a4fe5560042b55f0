//! The `startup` benchmark: the start-up time and memory of `switchyard serve` over a data
//! directory that already holds many persistent sessions with queued messages.
//!
//! 1. Fill: the message store of a new data directory is written through the store crate's
//!    public API, with the records the broker writes for an offline 3.1.1 session (Clean
//!    Session 0) subscribed at QoS 1 to its own topic, with its queued QoS 1 messages.
//! 2. Start: `switchyard serve --config` runs over that directory, and the run measures the
//!    time from spawning it to its `ready` line and its peak resident memory.
//! 3. Check: a sample of the clients reconnects with Clean Session 0. Each must get Session
//!    Present 1 and exactly its own queued messages, in order.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{BufMut, BytesMut};
use switchyard_codec::{Packet, ProtocolVersion};
use switchyard_store::message::unix_millis_now;
use switchyard_store::{
    Durability, MessageStore, MessageStoreSettings, SessionOrigin, SessionRecord,
    SqliteMessageStore, StoreFuture, StoredMessage, StoredSubscription, WriteBatch, WriteOp,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::connection::{Connection, Login};
use crate::device::signature_login;
use crate::server::{GROUP_ID, INSTANCE_ID, Memory, PARENT_TOPIC, Server, ServerConfig};

/// The Session Expiry Interval the broker stores for a 3.1.1 persistent session: the
/// instance's default `max_session_expiry_seconds` (3 days).
const SESSION_EXPIRY_SECONDS: u32 = 259_200;

/// Sessions written in one [`WriteBatch`] during the fill.
const SESSIONS_PER_BATCH: usize = 1_000;

/// Fill batches submitted and not yet committed at any time.
const BATCHES_IN_FLIGHT: usize = 4;

/// Sampled clients that reconnect at the same time during the check.
const CHECK_CONCURRENCY: usize = 50;

/// How long a checked client waits after its last queued message for one too many.
const EXTRA_MESSAGE_WAIT: Duration = Duration::from_millis(200);

/// Bound on one CONNECT/CONNACK exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of one `startup` run.
#[derive(Clone, Debug)]
pub struct StartupOptions {
    pub binary: PathBuf,
    pub sessions: usize,
    pub messages_per_session: usize,
    pub payload_bytes: usize,
    /// Clients that reconnect to check their sessions, spread evenly over all sessions.
    pub sample: usize,
    /// Directory of the configuration, data directory and server log.
    pub work_dir: PathBuf,
    pub ready_timeout: Duration,
    /// Upper bound of the fill and of the check, each.
    pub timeout: Duration,
    pub access_key_id: String,
    pub access_key_secret: String,
}

/// The figures of a `startup` run.
#[derive(Clone, Debug)]
pub struct StartupReport {
    pub sessions: usize,
    pub messages: usize,
    pub fill: Duration,
    /// Size of the message database file after the fill, with its write-ahead log.
    pub database_bytes: u64,
    pub time_to_ready: Duration,
    /// Memory when `ready` was read.
    pub memory_at_ready: Option<Memory>,
    /// Memory after the check.
    pub memory_after_check: Option<Memory>,
    pub checked_sessions: usize,
    pub checked_messages: usize,
    pub check: Duration,
}

impl StartupReport {
    /// Formats the report for a terminal, then one JSON line.
    pub fn to_text(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let memory = |memory: Option<Memory>| {
            memory.map_or("-".to_owned(), |m| {
                format!(
                    "peak RSS {:.1} MiB, RSS {:.1} MiB",
                    mib(m.peak_rss_kib),
                    mib(m.rss_kib)
                )
            })
        };
        let lines = [
            format!(
                "  stored                 {} sessions, {} queued messages",
                self.sessions, self.messages
            ),
            format!(
                "  fill                   {:.2} s, database {:.1} MiB",
                self.fill.as_secs_f64(),
                self.database_bytes as f64 / (1024.0 * 1024.0)
            ),
            format!(
                "  spawn to ready         {:.2} s",
                self.time_to_ready.as_secs_f64()
            ),
            format!("  memory at ready        {}", memory(self.memory_at_ready)),
            format!(
                "  checked                {} sessions present, {} queued messages received, \
                 in {:.2} s",
                self.checked_sessions,
                self.checked_messages,
                self.check.as_secs_f64()
            ),
            format!(
                "  memory after check     {}",
                memory(self.memory_after_check)
            ),
        ];
        let json = serde_json::json!({
            "sessions": self.sessions,
            "messages": self.messages,
            "fill_s": self.fill.as_secs_f64(),
            "database_bytes": self.database_bytes,
            "time_to_ready_s": self.time_to_ready.as_secs_f64(),
            "peak_rss_kib_at_ready": self.memory_at_ready.map(|m| m.peak_rss_kib),
            "peak_rss_kib_after_check": self.memory_after_check.map(|m| m.peak_rss_kib),
            "checked_sessions": self.checked_sessions,
            "checked_messages": self.checked_messages,
            "check_s": self.check.as_secs_f64(),
        });
        format!("{}\n{json}\n", lines.join("\n"))
    }
}

/// Runs the fill, the start and the check.
pub fn run(
    options: &StartupOptions,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<StartupReport> {
    let data_dir = options.work_dir.join("data");
    if data_dir.exists() {
        bail!(
            "data directory {} already exists; the fill needs a new one",
            data_dir.display()
        );
    }

    eprintln!(
        "fill: {} sessions with {} queued messages each",
        options.sessions, options.messages_per_session
    );
    let fill_started = std::time::Instant::now();
    let database = runtime.block_on(async {
        tokio::time::timeout(options.timeout, fill(options, data_dir.clone()))
            .await
            .unwrap_or_else(|_| bail!("the fill did not finish within --timeout"))
    })?;
    let fill = fill_started.elapsed();
    let database_bytes = [database.clone(), wal_path(&database)]
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|metadata| metadata.len())
        .sum();

    eprintln!("start: {} serve", options.binary.display());
    let config = ServerConfig {
        access_key_id: options.access_key_id.clone(),
        access_key_secret: options.access_key_secret.clone(),
        // The default policy, as a deployment would run.
        durability: None,
        max_queued_messages: options.messages_per_session.max(1000),
        max_publish_rate: 1_000,
        max_connection_rate: 100_000,
    };
    let mut server = Server::start(
        &options.binary,
        &options.work_dir,
        &config.to_toml(&data_dir),
        options.ready_timeout,
    )?;
    let memory_at_ready = server.memory();
    let addr = server.instance_addr()?;

    eprintln!("check: {} sampled clients reconnect", options.sample);
    let check_started = Instant::now();
    let checked = runtime.block_on(async {
        tokio::time::timeout(options.timeout, check(options, addr))
            .await
            .unwrap_or_else(|_| bail!("the check did not finish within --timeout"))
    });
    let check = check_started.elapsed();
    let memory_after_check = server.memory();
    if !server.is_running() {
        bail!(
            "the server exited during the check; end of its log:\n{}",
            server.log_tail()
        );
    }
    server.stop();
    if checked.is_err() {
        eprintln!("end of the server log:\n{}", server.log_tail());
    }
    let checked_messages =
        checked.with_context(|| format!("see the server log in {}", server.log_path.display()))?;

    Ok(StartupReport {
        sessions: options.sessions,
        messages: options.sessions * options.messages_per_session,
        fill,
        database_bytes,
        time_to_ready: server.time_to_ready,
        memory_at_ready,
        memory_after_check,
        checked_sessions: options.sample,
        checked_messages,
        check,
    })
}

fn wal_path(database: &std::path::Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Writes every session and its queue, then closes the store. Returns the database path.
async fn fill(options: &StartupOptions, data_dir: PathBuf) -> anyhow::Result<PathBuf> {
    // The fill is not what is measured, so it skips fsync; the file format is the same.
    let settings = MessageStoreSettings {
        durability: Durability::Memory,
        ..MessageStoreSettings::default()
    };
    let store = tokio::task::spawn_blocking(move || SqliteMessageStore::open(&data_dir, settings))
        .await
        .context("message store open task failed")?
        .context("failed to open the message store for the fill")?;
    let database = store.path().to_owned();
    let store = Arc::new(store);

    let expires_at = unix_millis_now() + u64::from(SESSION_EXPIRY_SECONDS) * 1000;
    let mut pending: VecDeque<StoreFuture<()>> = VecDeque::new();
    let mut first = 0;
    while first < options.sessions {
        let end = (first + SESSIONS_PER_BATCH).min(options.sessions);
        let mut batch = WriteBatch::new(INSTANCE_ID);
        for session in first..end {
            append_session(&mut batch, session, options, expires_at);
        }
        pending.push_back(store.submit(batch));
        if pending.len() >= BATCHES_IN_FLIGHT
            && let Some(oldest) = pending.pop_front()
        {
            oldest.await.context("fill write failed")?;
        }
        first = end;
    }
    for future in pending {
        future.await.context("fill write failed")?;
    }
    // Dropping the last handle stops the writer thread once it has written everything.
    tokio::task::spawn_blocking(move || drop(store))
        .await
        .context("message store close task failed")?;
    Ok(database)
}

/// Appends the records of session `index`: the session with its one subscription, then its
/// queue, with the sequence numbers the broker gives a new session's queue (from 0).
fn append_session(batch: &mut WriteBatch, index: usize, options: &StartupOptions, expires_at: u64) {
    let client_id = client_id(index);
    let topic = topic(index);
    batch.push(WriteOp::PutSession(SessionRecord {
        client_id: client_id.clone(),
        protocol_version: ProtocolVersion::V3_1_1.level(),
        session_expiry_interval: SESSION_EXPIRY_SECONDS,
        expires_at: Some(expires_at),
        subscriptions: vec![StoredSubscription {
            filter: topic.clone(),
            qos: 1,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            subscription_identifier: None,
        }],
        origin: SessionOrigin::Region,
    }));
    for seq in 0..options.messages_per_session {
        batch.push(WriteOp::Enqueue {
            client_id: client_id.clone(),
            seq: seq as u64,
            message: StoredMessage {
                topic: topic.clone(),
                payload: payload(index, seq, options.payload_bytes),
                qos: 1,
                retain: false,
                properties: Vec::new(),
                expires_at: None,
            },
        });
    }
}

fn client_id(index: usize) -> String {
    format!("{GROUP_ID}@@@startup-{index}")
}

fn topic(index: usize) -> String {
    format!("{PARENT_TOPIC}/startup/{index}")
}

/// Builds the payload of message `seq` of session `index`: both as big-endian `u64`, then
/// filler up to `payload_bytes`.
fn payload(index: usize, seq: usize, payload_bytes: usize) -> Vec<u8> {
    let mut payload = BytesMut::with_capacity(payload_bytes.max(16));
    payload.put_u64(index as u64);
    payload.put_u64(seq as u64);
    payload.resize(payload_bytes.max(16), b'x');
    payload.to_vec()
}

/// Reconnects the sampled clients and checks each session. Returns the number of queued
/// messages received in all.
async fn check(options: &StartupOptions, addr: std::net::SocketAddr) -> anyhow::Result<usize> {
    let limit = Arc::new(Semaphore::new(CHECK_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for position in 0..options.sample {
        let index = position * options.sessions / options.sample;
        let login = Login {
            clean_start: false,
            ..signature_login(
                client_id(index),
                &options.access_key_id,
                &options.access_key_secret,
                INSTANCE_ID,
                ProtocolVersion::V3_1_1,
            )
        };
        let limit = Arc::clone(&limit);
        let options = options.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            check_session(addr, &login, index, &options).await
        });
    }
    let mut received = 0;
    while let Some(joined) = tasks.join_next().await {
        received += joined.context("check task panicked")??;
    }
    Ok(received)
}

/// Resumes session `index` and checks that its queued messages arrive, in order, and no more.
async fn check_session(
    addr: std::net::SocketAddr,
    login: &Login,
    index: usize,
    options: &StartupOptions,
) -> anyhow::Result<usize> {
    let (mut connection, _) = Connection::open(addr, login, EXCHANGE_TIMEOUT)
        .await
        .with_context(|| format!("client {} failed to reconnect", login.client_id))?;
    if !connection.session_present() {
        bail!(
            "client {} reconnected with Session Present 0; its session was not restored",
            login.client_id
        );
    }
    let mut expected = 0;
    loop {
        let wait = if expected < options.messages_per_session {
            EXCHANGE_TIMEOUT
        } else {
            EXTRA_MESSAGE_WAIT
        };
        let packet = match tokio::time::timeout(wait, connection.receive()).await {
            Err(_) if expected == options.messages_per_session => break,
            Err(_) => bail!(
                "client {} received {expected} of {} queued messages",
                login.client_id,
                options.messages_per_session
            ),
            Ok(received) => received
                .with_context(|| format!("client {} connection failed", login.client_id))?
                .with_context(|| format!("server closed client {}", login.client_id))?,
        };
        connection.acknowledge(&packet).await?;
        let Packet::Publish(publish) = packet else {
            continue;
        };
        let want = payload(index, expected, options.payload_bytes);
        if publish.topic.as_str() != topic(index) || publish.payload.as_ref() != want.as_slice() {
            bail!(
                "client {} received an unexpected message on {} as queued message {expected}",
                login.client_id,
                publish.topic.as_str()
            );
        }
        expected += 1;
    }
    connection.close().await;
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_names_session_and_sequence() {
        let bytes = payload(3, 9, 100);
        assert_eq!(bytes.len(), 100);
        assert_eq!(bytes[..8], 3u64.to_be_bytes());
        assert_eq!(bytes[8..16], 9u64.to_be_bytes());
    }

    #[test]
    fn wal_path_appends_suffix() {
        let path = wal_path(std::path::Path::new("/d/messages.db"));
        assert_eq!(path, PathBuf::from("/d/messages.db-wal"));
    }
}
