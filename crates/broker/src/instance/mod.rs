//! An instance: one isolated MQTT namespace with its own sessions, subscription tree, retained
//! messages and connections.
//!
//! - `sessions`: opening, closing and ending sessions, their subscriptions, expiry timers and
//!   will messages.
//! - `routing`: publishing messages to sessions: subscriptions, shared subscription groups,
//!   point-to-point topics and retained messages.
//! - `handover`: moving an offline session to another instance of the process, for the DR
//!   global endpoint.
//! - `restore`: [`Instance::with_store`], which rebuilds sessions and retained messages from a
//!   message store.
//!
//! Locks are `std::sync` locks held for one short step and never across an `.await`. When two
//! are held together they are taken in this order: the registry, then one session. The map of
//! connection handles and the retained store are never held together with either.

mod handover;
mod restore;
mod routing;
mod sessions;

pub use handover::{DetachedSession, SessionHandover};
pub(crate) use sessions::SubscribeOutcome;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;

use bytes::BytesMut;
use switchyard_codec::{Connect, ReasonCode};
use switchyard_store::StoreFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::Authenticator;
use crate::connection::{self, ConnectionHandle, Origin};
use crate::ids::{ClientId, ConnectionId};
use crate::persist::InstanceStore;
use crate::rate::RateLimiter;
use crate::retained::{MemoryRetainedStore, RetainedStore};
use crate::session::Session;
use crate::settings::InstanceSettings;
use crate::subscriptions::SubscriptionTree;

/// An isolated MQTT namespace: its own sessions, subscriptions and connections.
///
/// Connections arrive through [`Instance::serve`] (a region listener) or
/// [`Instance::accept_connection`] (the DR global endpoint, which has already read the CONNECT).
///
/// Sessions and retained messages live in memory. An instance created with
/// [`Instance::with_store`] also writes its persistent sessions and retained messages to a
/// [`MessageStore`](switchyard_store::MessageStore), so they survive a restart; one created
/// with [`Instance::new`] keeps them only until it is dropped.
pub struct Instance {
    settings: InstanceSettings,
    auth: Arc<dyn Authenticator>,
    /// The message store of persistent sessions and retained messages, if any.
    store: Option<InstanceStore>,
    registry: RwLock<Registry>,
    retained: Box<dyn RetainedStore>,
    /// Retained messages not stored because the store was full, for rate-limited warnings.
    retained_rejected: AtomicU64,
    connections: Mutex<HashMap<ConnectionId, ConnectionHandle>>,
    /// New connections per second, limited by `max_connection_rate`.
    connection_rate: Mutex<RateLimiter>,
    /// Connections rejected by `check_admission`, for rate-limited warnings.
    admission_rejected: AtomicU64,
    next_connection_id: AtomicU64,
    healthy: AtomicBool,
    /// Cancelled by [`Instance::shutdown`]; listeners, connections and expiry timers stop.
    stopping: CancellationToken,
    /// Every task of the instance, so shutdown can wait for them.
    tasks: TaskTracker,
}

/// Sessions by client id and the subscription tree that refers to them.
#[derive(Default)]
struct Registry {
    sessions: HashMap<ClientId, Arc<SessionSlot>>,
    subscriptions: SubscriptionTree,
}

/// A session shared by its connection task and the publishers that deliver to it.
pub(crate) struct SessionSlot {
    session: Mutex<Session>,
    /// Wakes the writer of the attached connection when there may be packets to send.
    pub(crate) wake: Notify,
    /// Wakes a handover waiting for the attached connection to detach.
    pub(crate) detached: Notify,
}

/// A session opened for a new connection.
pub(crate) struct OpenedSession {
    pub(crate) slot: Arc<SessionSlot>,
    /// Whether an existing session was resumed, for CONNACK's Session Present flag.
    pub(crate) session_present: bool,
    /// The store write of the session, to complete before CONNACK.
    pub(crate) store_write: Option<StoreFuture<()>>,
}

// === impl Instance ===

impl Instance {
    /// Creates an instance with no sessions; it accepts connections once they are handed to it.
    pub fn new(settings: InstanceSettings, auth: Arc<dyn Authenticator>) -> Arc<Instance> {
        Arc::new(Instance::build(settings, auth, None))
    }

    fn build(
        settings: InstanceSettings,
        auth: Arc<dyn Authenticator>,
        store: Option<InstanceStore>,
    ) -> Instance {
        let retained = MemoryRetainedStore::new(settings.max_retained_messages);
        let now = tokio::time::Instant::now().into_std();
        let connection_rate = RateLimiter::new(settings.max_connection_rate, now);
        Instance {
            settings,
            auth,
            store,
            registry: RwLock::new(Registry::default()),
            retained: Box::new(retained),
            retained_rejected: AtomicU64::new(0),
            connections: Mutex::new(HashMap::new()),
            connection_rate: Mutex::new(connection_rate),
            admission_rejected: AtomicU64::new(0),
            next_connection_id: AtomicU64::new(1),
            healthy: AtomicBool::new(true),
            stopping: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Returns the instance id.
    pub fn id(&self) -> &str {
        &self.settings.id
    }

    /// Returns the settings the instance was created with.
    pub fn settings(&self) -> &InstanceSettings {
        &self.settings
    }

    /// Starts serving a connection whose CONNECT was already read, on a task of its own.
    ///
    /// `buffered` contains the bytes read after the CONNECT; the connection decodes them before it
    /// reads from `stream` again. Authentication and the CONNACK happen on that task.
    pub fn accept_connection<S>(
        self: &Arc<Self>,
        stream: S,
        peer: SocketAddr,
        connect: Connect,
        buffered: BytesMut,
        origin: Origin,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let instance = Arc::clone(self);
        let run = connection::run(instance, stream, peer, connect, buffered, origin, None);
        self.tasks.spawn(run);
    }

    /// Starts serving a connection like [`Instance::accept_connection`], and lets it resume a
    /// session that `handover` takes from another instance.
    ///
    /// The connection asks `handover` for a session once it is admitted, and only when the
    /// CONNECT has Clean Start 0 (Clean Session 0 in 3.1.1), names its own client identifier,
    /// and this instance has no session of it. An adopted session is resumed with Session
    /// Present 1, and its messages in flight are sent again, with DUP on PUBLISH packets.
    pub fn accept_connection_with_handover<S>(
        self: &Arc<Self>,
        stream: S,
        peer: SocketAddr,
        connect: Connect,
        buffered: BytesMut,
        origin: Origin,
        handover: Arc<dyn SessionHandover>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let instance = Arc::clone(self);
        let handover = Some(handover);
        let run = connection::run(instance, stream, peer, connect, buffered, origin, handover);
        self.tasks.spawn(run);
    }

    /// Returns the live connections that came in through `origin`.
    pub fn connections(&self, origin: &Origin) -> Vec<ConnectionHandle> {
        let connections = lock(&self.connections);
        connections
            .values()
            .filter(|handle| handle.origin() == origin)
            .cloned()
            .collect()
    }

    /// Returns the number of live connections.
    pub fn connected_count(&self) -> usize {
        lock(&self.connections).len()
    }

    /// Reports whether a connection is attached to the session of `client_id`.
    pub fn is_connected(&self, client_id: &str) -> bool {
        let registry = self.read_registry();
        match registry.sessions.get(client_id) {
            Some(slot) => slot.lock().owner().is_some(),
            None => false,
        }
    }

    /// Returns the number of sessions, online and offline.
    pub fn session_count(&self) -> usize {
        self.read_registry().sessions.len()
    }

    /// Returns the number of subscriptions of all sessions.
    pub fn subscription_count(&self) -> usize {
        self.read_registry().subscriptions.len()
    }

    /// Returns the number of retained messages, counting expired ones not yet removed.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Reports the health flag that the DR global endpoint consults; instances start healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the health flag.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Closes every connection and stops the instance's listeners and timers, then waits for
    /// its tasks to end.
    ///
    /// MQTT 5.0 clients get DISCONNECT 0x8B (server shutting down). Connections handed over
    /// afterwards are rejected with CONNACK 0x88 (server unavailable). Sessions stay in memory
    /// until the instance is dropped.
    pub async fn shutdown(&self) {
        info!(instance = %self.id(), "Instance shutting down");
        self.stopping.cancel();
        let handles: Vec<ConnectionHandle> = lock(&self.connections).values().cloned().collect();
        for handle in &handles {
            handle.disconnect(ReasonCode::SERVER_SHUTTING_DOWN);
        }
        self.tasks.close();
        self.tasks.wait().await;
        info!(instance = %self.id(), closed = handles.len(), "Instance stopped");
    }

    pub(crate) fn store(&self) -> Option<&InstanceStore> {
        self.store.as_ref()
    }

    /// Takes the store writes the session recorded and submits them, while the caller holds
    /// the session's lock, so each session's writes reach the store in order.
    pub(crate) fn submit_session_ops(&self, session: &mut Session) -> Option<StoreFuture<()>> {
        let store = self.store.as_ref()?;
        store.submit(session.take_store_ops())
    }

    /// Lets a store write finish on a task of the instance, logging a failure.
    pub(crate) fn finish_in_background(
        &self,
        write: Option<StoreFuture<()>>,
        purpose: &'static str,
    ) {
        if write.is_none() {
            return;
        }
        let instance_id = self.id().to_owned();
        self.tasks.spawn(async move {
            let _ = crate::persist::wait_logged(write, &instance_id, purpose).await;
        });
    }

    pub(crate) fn authenticator(&self) -> &dyn Authenticator {
        &*self.auth
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    pub(crate) fn next_connection_id(&self) -> ConnectionId {
        ConnectionId(self.next_connection_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Makes up a client identifier for a client that sent an empty one.
    pub(crate) fn assign_client_id(&self) -> String {
        format!("switchyard-{}", uuid::Uuid::new_v4().simple())
    }

    /// Adds a live connection. One registered while the instance shuts down is asked to stop
    /// at once, because shutdown may have listed the connections before it arrived.
    pub(crate) fn register(&self, handle: ConnectionHandle) {
        lock(&self.connections).insert(handle.id(), handle.clone());
        if self.is_stopping() {
            handle.disconnect(ReasonCode::SERVER_SHUTTING_DOWN);
        }
    }

    pub(crate) fn unregister(&self, connection: ConnectionId) {
        lock(&self.connections).remove(&connection);
    }

    /// Checks a new connection of `client_id` at `now` against `max_connection_rate` and
    /// `max_connections`, returning the CONNACK reason code that rejects it. Rejections are
    /// logged as warnings, rate-limited.
    ///
    /// NOTE: connections are counted once registered, after authentication, so connections
    /// admitted at the same moment can exceed `max_connections` by their number.
    pub(crate) fn check_admission(&self, client_id: &str, now: Instant) -> Result<(), ReasonCode> {
        let rejection = if !lock(&self.connection_rate).try_acquire(now) {
            Some((ReasonCode::CONNECTION_RATE_EXCEEDED, "max_connection_rate"))
        } else {
            let max = self.settings.max_connections;
            let full = max > 0 && self.connected_count() >= max;
            // A takeover replaces a live connection, so it does not add one.
            (full && !self.is_connected(client_id))
                .then_some((ReasonCode::QUOTA_EXCEEDED, "max_connections"))
        };
        let Some((reason, setting)) = rejection else {
            return Ok(());
        };
        let rejected = self.admission_rejected.fetch_add(1, Ordering::Relaxed) + 1;
        // Log the 1st, 2nd, 4th, 8th ... rejection so a connection storm cannot flood the log.
        if rejected.is_power_of_two() {
            warn!(
                instance = %self.id(),
                client_id,
                reason = format_args!("0x{:02X}", reason.0),
                setting,
                rejected,
                "Rejected connection over the instance's limit; raise the setting if the load is expected"
            );
        }
        Err(reason)
    }

    fn read_registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_registry(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl SessionSlot ===

impl SessionSlot {
    fn new(session: Session) -> SessionSlot {
        SessionSlot {
            session: Mutex::new(session),
            wake: Notify::new(),
            detached: Notify::new(),
        }
    }

    /// Locks the session; hold the guard for one step and never across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }
}

/// Locks a mutex, taking over the data if a panicking thread poisoned it: every critical
/// section leaves the data consistent between statements, so it stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
