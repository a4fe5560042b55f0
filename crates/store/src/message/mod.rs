//! The data-plane message store: persistent MQTT sessions, their queued and inflight messages,
//! retained messages and will messages, behind the [`MessageStore`] trait.
//!
//! This is separate from the control-plane [`Store`](crate::Store) because its write rate is
//! that of the MQTT traffic. Every QoS 1 or 2 publish to a persistent session is a write, and
//! the broker may acknowledge the publisher only after that write is durable under the
//! configured [`Durability`].
//!
//! # Data model
//!
//! Every record has the key `(instance id, kind, name, seq)`, so all of an instance's state sits
//! in one key range and instances never share records:
//!
//! | kind | name | seq | value |
//! |---|---|---|---|
//! | session | client id | 0 | [`SessionRecord`] |
//! | queued message | client id | queue sequence number, assigned by the broker | [`StoredMessage`] |
//! | inflight outbound QoS 1/2 | client id | packet id | [`InflightMessage`] |
//! | inbound QoS 2 awaiting PUBREL | client id | packet id | nothing |
//! | will message | client id | 0 | [`StoredWill`] |
//! | retained message | topic | 0 | [`StoredMessage`] |
//!
//! The broker writes with [`WriteBatch`]es: all operations of one batch commit together or not
//! at all, and batches of one store commit in the order [`MessageStore::submit`] was called,
//! whichever future is polled first. [`MessageStore::submit_atomic`] commits several
//! batches, of one instance or of several, as one unit: that is how a session moves from one
//! instance to another without a moment where it is stored on neither or on both.
//!
//! # A NATS JetStream implementation
//!
//! A later implementation for deployments of more than one machine maps the same keys onto
//! JetStream, without changing this interface:
//!
//! - sessions, inflight state, inbound QoS 2 ids and wills go into one KV bucket with the key
//!   `<instance>.<kind>.<name>.<seq>` (names encoded so that `.`, `*` and `>` cannot occur);
//! - each session's queue is the subject `q.<instance>.<client>` of one stream, so the queue
//!   order is the stream order. [`WriteOp::Enqueue`] is a publish and [`WriteOp::Dequeue`] a
//!   message delete. The stream's `max_msgs_per_subject` is the per-session limit, and its
//!   `discard` setting (old or new) is the [`QueueFullPolicy`];
//! - retained messages are a KV bucket keyed by `<instance>.<topic>`, using per-message TTL
//!   for expiry;
//! - a [`WriteBatch`] becomes one JetStream atomic batch publish, and [`MessageStore::submit`]
//!   completes when the server's acknowledgement of the batch arrives, which is durable on the
//!   stream's replicas under its own sync settings. To keep the call order, `submit` appends
//!   the batch to an in-process queue during the call, and one task publishes from that queue
//!   in order, with at most `max_pending_batches` publishes awaiting their acknowledgement;
//! - the batches of a [`MessageStore::submit_atomic`] go into one atomic batch publish too.
//!   Instance ids are part of keys and subjects, not of bucket or stream names, so a unit
//!   that spans two instances needs no stream that a single batch does not already use.
//!
//! NOTE: an atomic batch publish (nats-server 2.12 and later, streams with `allow_atomic`)
//! covers one stream and at most 1,000 messages, while a KV bucket is a stream of its own.
//! So in a JetStream implementation, a batch that touches the KV bucket and the queue stream,
//! or a session move with a long queue, needs a second step. For example, it writes the new
//! records marked pending, then commits one small batch that makes them live and removes the
//! old ones. The contract of this trait stays as stated either way.
//! - [`MessageStore::load_all`] reads the instance's key range from the bucket and the instance's
//!   queue subjects from the stream.
//!
//! # Layout
//!
//! - this file: the records, [`WriteBatch`], [`MessageStore`] and its settings;
//! - `record`: the checksummed binary encoding of each record;
//! - `sqlite`: [`SqliteMessageStore`], the embedded implementation, and its writer thread.

mod admission;
mod record;
mod sqlite;
mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::StoreError;

pub use sqlite::{MESSAGE_DATABASE_FILE_NAME, MESSAGE_STORE_DIR, SqliteMessageStore, WriterPause};

/// Milliseconds since the Unix epoch, the unit of every deadline in the message store.
pub type UnixMillis = u64;

/// Returns the current time in [`UnixMillis`] (0 if the clock is before 1970).
pub fn unix_millis_now() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The future returned by every [`MessageStore`] operation.
///
/// It owns what it needs, so the caller may keep it after the borrow of the store ends. The
/// implementations in this crate complete it from their writer thread, so polling it never
/// blocks on disk I/O.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// An application message as the store keeps it, in a session's queue, inflight, as a will or
/// as a retained message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The topic name.
    pub topic: String,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// The QoS, 0 to 2.
    pub qos: u8,
    /// The RETAIN flag.
    pub retain: bool,
    /// The MQTT 5 properties as encoded by the broker, opaque to the store.
    pub properties: Vec<u8>,
    /// The deadline after which the message is dropped, or `None` if it never expires.
    pub expires_at: Option<UnixMillis>,
}

impl StoredMessage {
    /// Reports whether the message's deadline is at or before `now`.
    pub fn is_expired(&self, now: UnixMillis) -> bool {
        self.expires_at.is_some_and(|deadline| deadline <= now)
    }
}

/// One subscription of a persistent session with its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The topic filter, including any `$share/<group>/` prefix.
    pub filter: String,
    /// The maximum QoS granted, 0 to 2.
    pub qos: u8,
    /// The MQTT 5 No Local option.
    pub no_local: bool,
    /// The MQTT 5 Retain As Published option.
    pub retain_as_published: bool,
    /// The MQTT 5 Retain Handling option, 0 to 2.
    pub retain_handling: u8,
    /// The MQTT 5 subscription identifier, if the SUBSCRIBE carried one.
    pub subscription_identifier: Option<u32>,
}

/// A persistent session without its messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// The client identifier, unique within the instance.
    pub client_id: String,
    /// The protocol level of the CONNECT: 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0).
    pub protocol_version: u8,
    /// The session expiry interval in seconds (`u32::MAX` means the session never expires).
    pub session_expiry_interval: u32,
    /// The deadline after which the session is removed, set when the client disconnects.
    /// `None` while the client is connected or when the session never expires.
    pub expires_at: Option<UnixMillis>,
    /// The subscriptions, in the order the broker wrote them.
    pub subscriptions: Vec<StoredSubscription>,
    /// The path of the session's last connection to the instance. A DR session handover moves
    /// only sessions whose last connection came through the group's global endpoint.
    pub origin: SessionOrigin,
}

/// The path by which the last connection of a persistent session reached its instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SessionOrigin {
    /// Through one of the instance's own region listeners.
    ///
    /// Records written before the store kept the origin (format 1) load with this value,
    /// although some of them are global-endpoint sessions. Taking a region session for a
    /// global one could move it away from a device that keeps using its region listener. The
    /// other mistake only keeps a session where it is, as before, until its device connects
    /// to the instance through the global endpoint again and the right origin is stored.
    #[default]
    Region,
    /// Through the global endpoint of a disaster-recovery group.
    Global {
        /// The group id.
        group: String,
    },
}

impl SessionRecord {
    /// Reports whether the session's deadline is at or before `now`.
    pub fn is_expired(&self, now: UnixMillis) -> bool {
        self.expires_at.is_some_and(|deadline| deadline <= now)
    }
}

/// An outbound QoS 1 or 2 message sent to the client and not yet completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InflightMessage {
    /// The message as sent.
    pub message: StoredMessage,
    /// Whether the broker has received PUBREC and sent PUBREL (QoS 2 only), so that on
    /// reconnection it resends PUBREL instead of the PUBLISH.
    pub pubrel_sent: bool,
}

/// A will message with its delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredWill {
    /// The will message.
    pub message: StoredMessage,
    /// The MQTT 5 Will Delay Interval in seconds (0 for MQTT 3.1 and 3.1.1).
    pub delay_interval: u32,
    /// The time at which the broker is due to publish the will, set when the network
    /// connection closes. `None` while the client is connected.
    pub publish_at: Option<UnixMillis>,
}

/// One change to the state of an instance, part of a [`WriteBatch`].
///
/// Operations on a session's messages fail with [`StoreError::SessionNotFound`] unless the
/// session was written before (in the same batch or an earlier one). Removing something that
/// does not exist succeeds and changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Creates or replaces a session record. Its messages stay as they are.
    PutSession(SessionRecord),
    /// Removes a session with its queue, inflight state, inbound QoS 2 ids and will.
    RemoveSession {
        /// The session's client id.
        client_id: String,
    },
    /// Appends a message to a session's queue under `seq`, which the broker assigns in
    /// increasing order per session. A message already stored under `seq` is replaced.
    Enqueue {
        /// The session's client id.
        client_id: String,
        /// The queue position.
        seq: u64,
        /// The message.
        message: StoredMessage,
    },
    /// Removes the queued message `seq`, for example when its PUBACK arrives.
    Dequeue {
        /// The session's client id.
        client_id: String,
        /// The queue position.
        seq: u64,
    },
    /// Creates or replaces the inflight state of an outbound packet id.
    PutInflight {
        /// The session's client id.
        client_id: String,
        /// The packet id, 1 to 65535.
        packet_id: u16,
        /// The message and its PUBREL flag.
        inflight: InflightMessage,
    },
    /// Removes the inflight state of an outbound packet id (PUBACK or PUBCOMP received).
    RemoveInflight {
        /// The session's client id.
        client_id: String,
        /// The packet id.
        packet_id: u16,
    },
    /// Records an inbound QoS 2 packet id for which PUBREC was sent and PUBREL is awaited.
    AddIncomingQos2 {
        /// The session's client id.
        client_id: String,
        /// The packet id, 1 to 65535.
        packet_id: u16,
    },
    /// Removes an inbound QoS 2 packet id (PUBREL received).
    RemoveIncomingQos2 {
        /// The session's client id.
        client_id: String,
        /// The packet id.
        packet_id: u16,
    },
    /// Creates or replaces a session's will message.
    PutWill {
        /// The session's client id.
        client_id: String,
        /// The will message and its delay.
        will: StoredWill,
    },
    /// Removes a session's will message.
    RemoveWill {
        /// The session's client id.
        client_id: String,
    },
    /// Creates or replaces the retained message of `message.topic`. Needs no session.
    PutRetained(StoredMessage),
    /// Removes the retained message of a topic.
    RemoveRetained {
        /// The topic name.
        topic: String,
    },
}

/// Changes to one instance that commit together or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The instance the operations apply to.
    pub instance_id: String,
    /// The operations, applied in order.
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// Creates an empty batch for `instance_id`.
    pub fn new(instance_id: impl Into<String>) -> WriteBatch {
        WriteBatch {
            instance_id: instance_id.into(),
            ops: Vec::new(),
        }
    }

    /// Appends an operation and returns the batch, for chaining.
    pub fn with(mut self, op: WriteOp) -> WriteBatch {
        self.ops.push(op);
        self
    }

    /// Appends an operation.
    pub fn push(&mut self, op: WriteOp) {
        self.ops.push(op);
    }
}

/// Everything stored for one session, as [`MessageStore::load_all`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    /// The session record.
    pub session: SessionRecord,
    /// The queued messages that have not expired, by increasing queue sequence number.
    pub queue: Vec<(u64, StoredMessage)>,
    /// The inflight outbound messages by increasing packet id.
    pub inflight: Vec<(u16, InflightMessage)>,
    /// The inbound QoS 2 packet ids awaiting PUBREL, increasing.
    pub incoming_qos2: Vec<u16>,
    /// The will message, if one is stored.
    pub will: Option<StoredWill>,
}

/// The stored state of one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceState {
    /// The sessions that have not expired, by client id.
    pub sessions: Vec<SessionState>,
    /// The retained messages that have not expired, by topic.
    pub retained: Vec<StoredMessage>,
    /// The number of expired sessions, queued messages and retained messages left out.
    pub expired_skipped: u64,
    /// The records that failed their checksum or did not decode, and the queue, inflight,
    /// QoS 2 and will records whose session record is missing for that reason. They stay on
    /// disk untouched and are not part of the state above.
    pub corrupt: Vec<CorruptRecord>,
}

/// A stored record that could not be used, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptRecord {
    /// The database file that contains the record.
    pub file: PathBuf,
    /// The record's key, as `instance/kind/name/seq`.
    pub key: String,
    /// The defect, such as `checksum mismatch`.
    pub reason: String,
}

impl std::fmt::Display for CorruptRecord {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "corrupt record {} in {}: {}",
            self.key,
            self.file.display(),
            self.reason
        )
    }
}

/// Counts of the records [`MessageStore::purge_expired`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Expired sessions removed, each with all of its state.
    pub sessions: u64,
    /// Expired queued messages removed from sessions that remain.
    pub queued_messages: u64,
    /// Expired retained messages removed.
    pub retained_messages: u64,
}

/// When a write counts as durable, and so when [`MessageStore::submit`] completes.
///
/// Every policy commits batches in submission order, and a batch that completes with `Ok` is
/// never partly applied. The policies differ in which failures a completed write survives:
///
/// | policy | process crash (SIGKILL, panic, OOM kill) | OS crash or power loss |
/// |---|---|---|
/// | `PerMessage` | survives | survives, if the disk honours fsync |
/// | `GroupCommit` | survives | survives, if the disk honours fsync |
/// | `Memory` | survives | may lose the writes since the last checkpoint, never leaves a torn store |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Each batch is its own transaction, synced to disk (fsync) before its submit completes.
    /// One fsync per batch bounds the throughput by the disk's sync latency.
    PerMessage,
    /// One writer thread takes the first pending batch, then keeps taking batches until it has
    /// `max_batch` of them or `max_delay` has passed since the first, commits them in one
    /// transaction with one fsync, and only then completes every waiting submit. A caller that
    /// acknowledges the publisher after its submit completes acknowledges a durable write.
    ///
    /// The writer stops waiting early, once the channel is empty and the group has as many
    /// batches as the previous group had. So a lone writer does not wait, while a steady set
    /// of concurrent writers shares one fsync.
    GroupCommit {
        /// The longest time the first batch of a group waits for more batches.
        max_delay: Duration,
        /// The maximum number of batches in one commit (at least 1).
        max_batch: usize,
    },
    /// Batches are grouped as with `GroupCommit` with no delay, and a commit completes once
    /// SQLite has written it to its write-ahead log with `write()`, without fsync. The data is
    /// then in the OS page cache, so it survives the crash of the Switchyard process. An OS
    /// crash or power loss can lose the commits since the last WAL checkpoint (SQLite
    /// `synchronous=NORMAL`), but the store reopens consistent, with whole batches only.
    Memory,
}

impl Default for Durability {
    /// `GroupCommit` with a delay of at most 1 ms and up to 256 batches per commit.
    ///
    /// It loses no completed write on a process crash or a power loss, a lone writer pays no
    /// delay, and under concurrent publishers one fsync covers every batch that queued up
    /// during the previous one. The measured figures are in docs/benchmarks.md, section
    /// "Message store".
    fn default() -> Durability {
        Durability::GroupCommit {
            max_delay: Duration::from_millis(1),
            max_batch: 256,
        }
    }
}

/// The behaviour of a write that would take a session's queue past
/// [`MessageStoreSettings::max_queued_messages_per_session`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueFullPolicy {
    /// The batch fails with [`StoreError::QueueFull`] and changes nothing. The broker rejects
    /// the publish with reason code 0x97 (Quota exceeded).
    #[default]
    Reject,
    /// The session's oldest queued message is removed to make room, in the same commit, and
    /// counted in [`MessageStoreStats::dropped_oldest`].
    DropOldest,
}

/// Settings of a message store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageStoreSettings {
    /// When a write counts as durable. The default is [`Durability::default`].
    pub durability: Durability,
    /// The maximum number of queued messages of one session. The default is 10,000.
    pub max_queued_messages_per_session: u64,
    /// The behaviour of a write past the per-session queue limit. The default is
    /// [`QueueFullPolicy::Reject`].
    pub queue_full: QueueFullPolicy,
    /// The maximum number of bytes of encoded records of one instance, counting every record
    /// kind. A write that would grow an instance past it fails with
    /// [`StoreError::InstanceStorageFull`], while removals always succeed. SQLite's page
    /// overhead is not counted. The default is 1 GiB.
    pub max_instance_bytes: u64,
    /// The maximum number of submitted writes handed to the writer thread at once, counting
    /// the batches of one [`MessageStore::submit_atomic`] as one. A write past it waits in the
    /// store's own queue, in submission order, and its future completes only after its
    /// commit, so a caller that awaits its writes waits for the writer to catch up. That
    /// queue contains every write not yet handed to the writer, so its memory is bounded by the
    /// writes the callers leave outstanding, not by this setting. The default is 65,536.
    pub max_pending_batches: usize,
    /// The number of bytes of removed records after which the writer returns free pages to
    /// the file system, so that the file size follows the live data. The default is 64 MiB.
    pub compact_after_removed_bytes: u64,
}

impl Default for MessageStoreSettings {
    fn default() -> MessageStoreSettings {
        MessageStoreSettings {
            durability: Durability::default(),
            max_queued_messages_per_session: 10_000,
            queue_full: QueueFullPolicy::Reject,
            max_instance_bytes: 1 << 30,
            max_pending_batches: 65_536,
            compact_after_removed_bytes: 64 << 20,
        }
    }
}

/// Counters of a message store since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageStoreStats {
    /// Transactions committed.
    pub commits: u64,
    /// Batches committed.
    pub batches: u64,
    /// Queued messages removed by [`QueueFullPolicy::DropOldest`].
    pub dropped_oldest: u64,
    /// Compactions run, by the writer or by [`MessageStore::compact`].
    pub compactions: u64,
}

/// Durable storage of the data-plane state of every instance.
///
/// No method blocks the calling thread: each returns a [`StoreFuture`] that a background
/// writer completes.
pub trait MessageStore: Send + Sync + 'static {
    /// Commits a batch and completes once it is durable under the store's [`Durability`].
    ///
    /// The batch takes its place in the store's submission order during this call, even
    /// when [`MessageStoreSettings::max_pending_batches`] writes are already waiting. So
    /// writes, [`submit_atomic`](Self::submit_atomic) units, loads, purges and compactions
    /// run in the order they were called, whichever future is polled first, and a caller
    /// that submits while holding a lock orders its write against every submit made under
    /// that lock. The write is not withdrawn when the future is dropped.
    ///
    /// On error nothing of the batch is stored. [`StoreError::QueueFull`] and
    /// [`StoreError::InstanceStorageFull`] mean a limit was reached
    /// ([`StoreError::is_quota_exceeded`]).
    fn submit(&self, batch: WriteBatch) -> StoreFuture<()>;

    /// Commits `batches`, which may belong to different instances, as one unit: every
    /// operation of every batch is stored, or none is, even if the process crashes at any
    /// moment. The batches apply in order, so a later batch sees the effect of an earlier one.
    ///
    /// The unit takes one place in the submission order, like one [`submit`](Self::submit)
    /// call, and completes once it is durable under the store's [`Durability`]. It counts as
    /// one batch against [`MessageStoreSettings::max_pending_batches`] and, under
    /// [`Durability::GroupCommit`], against `max_batch`. It may share a commit with other
    /// submits, but is never split across commits. If any batch fails, for example on a
    /// limit of its instance, the whole unit fails with that batch's error and changes
    /// nothing; the limits of each instance apply to that instance's batches. An empty unit
    /// completes at once.
    ///
    /// A session moves between instances with one unit: the removal of the session from the
    /// instance it leaves, then the whole session written to the instance that adopts it.
    fn submit_atomic(&self, batches: Vec<WriteBatch>) -> StoreFuture<()>;

    /// Loads every session and retained message of an instance, leaving out what expired at
    /// or before `now` and the records that fail their checksum, which it reports.
    fn load_all_at(&self, instance_id: &str, now: UnixMillis) -> StoreFuture<InstanceState>;

    /// Loads every session and retained message of an instance as of the current time.
    fn load_all(&self, instance_id: &str) -> StoreFuture<InstanceState> {
        self.load_all_at(instance_id, unix_millis_now())
    }

    /// Removes, in every instance, the sessions, queued messages and retained messages whose
    /// deadline is at or before `now`.
    fn purge_expired(&self, now: UnixMillis) -> StoreFuture<PurgeReport>;

    /// Returns the space of removed records to the file system now.
    fn compact(&self) -> StoreFuture<()>;

    /// Returns the store's counters.
    fn stats(&self) -> MessageStoreStats;
}
