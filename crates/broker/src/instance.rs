//! An instance: one isolated MQTT namespace with its own sessions, subscription tree and
//! connections, and the routing of published messages to sessions.
//!
//! Locks are `std::sync` locks held for one short step and never across an `.await`. When two
//! are held together they are taken in this order: the registry, then one session. The map of
//! connection handles is never held together with either.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;

use bytes::BytesMut;
use switchyard_codec::{Connect, ReasonCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::auth::Authenticator;
use crate::connection::{self, ConnectionHandle, Origin};
use crate::ids::{ClientId, ConnectionId};
use crate::message::{Delivery, Message};
use crate::negotiate::Negotiated;
use crate::session::{DeliverOutcome, Link, Session};
use crate::settings::InstanceSettings;
use crate::subscriptions::{Subscriber, SubscriptionTree};

/// An isolated MQTT namespace: its own sessions, subscriptions and connections.
///
/// Connections arrive through [`Instance::serve`] (a region listener) or
/// [`Instance::accept_connection`] (the DR global endpoint, which has already read the CONNECT).
///
/// Not implemented yet:
/// - will messages: a CONNECT with a will is accepted, and the will is never published;
/// - retained messages: CONNACK announces Retain Available 0 to 5.0 clients, and a 3.x PUBLISH
///   with RETAIN is delivered to current subscribers and not stored;
/// - shared subscriptions (SUBACK 0x9E, or 0x80 in 3.1.1) and topic aliases (Topic Alias
///   Maximum 0).
pub struct Instance {
    settings: InstanceSettings,
    auth: Arc<dyn Authenticator>,
    registry: RwLock<Registry>,
    connections: Mutex<HashMap<ConnectionId, ConnectionHandle>>,
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
}

/// A session opened for a new connection.
pub(crate) struct OpenedSession {
    pub(crate) slot: Arc<SessionSlot>,
    /// Whether an existing session was resumed, for CONNACK's Session Present flag.
    pub(crate) session_present: bool,
}

// === impl Instance ===

impl Instance {
    /// Creates an instance with no sessions; it accepts connections once they are handed to it.
    pub fn new(settings: InstanceSettings, auth: Arc<dyn Authenticator>) -> Arc<Instance> {
        Arc::new(Instance {
            settings,
            auth,
            registry: RwLock::new(Registry::default()),
            connections: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(1),
            healthy: AtomicBool::new(true),
            stopping: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
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
        let run = connection::run(instance, stream, peer, connect, buffered, origin);
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

    /// Attaches `connection` to the session of the negotiated client id, creating it or
    /// resuming it, and requests a connection that owned the session to close with 0x8E (session
    /// taken over).
    ///
    /// With `clean_start`, or when the old session has expired, the old session and its
    /// subscriptions are discarded and a new one is created.
    pub(crate) fn open_session(
        &self,
        negotiated: &Negotiated,
        clean_start: bool,
        connection: ConnectionId,
        link: Link,
        now: Instant,
    ) -> OpenedSession {
        let client_id = &negotiated.client_id;
        let (opened, previous_owner) = {
            let mut registry = self.write_registry();
            let existing = registry.sessions.get(client_id).cloned();
            let previous_owner = existing.as_ref().and_then(|slot| slot.lock().owner());
            let resumed = existing.filter(|slot| {
                let resume = !clean_start && !slot.lock().is_expired(now);
                if !resume {
                    discard_session(&mut registry, slot);
                }
                resume
            });
            let opened = match resumed {
                Some(slot) => {
                    let mut session = slot.lock();
                    session.handle_expiry_interval(negotiated.session_expiry);
                    session.handle_attach(connection, link);
                    drop(session);
                    OpenedSession {
                        slot,
                        session_present: true,
                    }
                }
                None => {
                    let slot = self.create_session(&mut registry, negotiated, connection, link);
                    OpenedSession {
                        slot,
                        session_present: false,
                    }
                }
            };
            (opened, previous_owner)
        };

        if let Some(owner) = previous_owner {
            let handle = lock(&self.connections).get(&owner).cloned();
            if let Some(handle) = handle {
                info!(instance = %self.id(), %client_id, "Session taken over by a new connection");
                handle.disconnect(ReasonCode::SESSION_TAKEN_OVER);
            }
        }
        opened
    }

    /// Creates the session of the negotiated client id, attached to `connection`.
    fn create_session(
        &self,
        registry: &mut Registry,
        negotiated: &Negotiated,
        connection: ConnectionId,
        link: Link,
    ) -> Arc<SessionSlot> {
        let client_id = negotiated.client_id.clone();
        let mut session = Session::new(
            client_id.clone(),
            negotiated.session_expiry,
            self.settings.max_queued_messages,
        );
        session.handle_attach(connection, link);
        let slot = Arc::new(SessionSlot::new(session));
        registry.sessions.insert(client_id, Arc::clone(&slot));
        slot
    }

    /// Detaches `connection` from its session at `now`. A session with expiry interval 0 is
    /// removed at once; any other gets a timer that removes it when it expires.
    ///
    /// Does nothing when another connection has taken the session over.
    pub(crate) fn close_session(
        self: &Arc<Self>,
        slot: &Arc<SessionSlot>,
        connection: ConnectionId,
        now: Instant,
    ) {
        let mut registry = self.write_registry();
        let mut session = slot.lock();
        if !session.handle_detach(connection, now) {
            return;
        }
        let client_id = session.client_id().clone();
        if session.expiry_interval() == 0 {
            let filters: Vec<String> = session.subscription_filters().map(str::to_owned).collect();
            drop(session);
            remove_session(&mut registry, &client_id, slot, filters);
            return;
        }
        let deadline = session.poll_expiry();
        drop(session);
        drop(registry);
        if let Some(deadline) = deadline {
            self.schedule_expiry(Arc::clone(slot), client_id, deadline);
        }
    }

    /// Adds a subscription for the session in `slot`, which `connection` must own. Returns
    /// `false` when the connection lost the session.
    pub(crate) fn subscribe(
        &self,
        slot: &Arc<SessionSlot>,
        connection: ConnectionId,
        filter: &str,
        subscriber: Subscriber,
    ) -> bool {
        let mut registry = self.write_registry();
        let mut session = slot.lock();
        if !session.is_owned_by(connection) {
            return false;
        }
        let client_id = session.client_id().clone();
        session.handle_subscribe(filter, subscriber);
        drop(session);
        registry.subscriptions.insert(filter, client_id, subscriber);
        true
    }

    /// Removes a subscription of the session in `slot`, which `connection` must own. Returns
    /// whether it existed, or `None` when the connection lost the session.
    pub(crate) fn unsubscribe(
        &self,
        slot: &Arc<SessionSlot>,
        connection: ConnectionId,
        filter: &str,
    ) -> Option<bool> {
        let mut registry = self.write_registry();
        let mut session = slot.lock();
        if !session.is_owned_by(connection) {
            return None;
        }
        let client_id = session.client_id().clone();
        let existed = session.handle_unsubscribe(filter);
        drop(session);
        registry.subscriptions.remove(filter, &client_id);
        Some(existed)
    }

    /// Delivers `message` to every session it is addressed to and returns how many there were.
    ///
    /// A point-to-point topic `<parent>/p2p/<clientId>` goes to that client's session alone,
    /// without a subscription; any other topic goes to the sessions whose filters match it. The
    /// publisher never waits for a subscriber: a full queue drops its oldest messages instead.
    pub(crate) fn publish(&self, message: Message) -> usize {
        let message = Arc::new(message);
        let deliveries = self.route(&message);
        let count = deliveries.len();
        for (slot, delivery) in deliveries {
            let outcome = slot.lock().handle_deliver(delivery);
            match outcome {
                DeliverOutcome::Queued => slot.wake.notify_one(),
                DeliverOutcome::QueuedAfterDrop { dropped_total } => {
                    slot.wake.notify_one();
                    // Log the 1st, 2nd, 4th, 8th ... drop of a session so a stuck client
                    // cannot flood the log.
                    if dropped_total.is_power_of_two() {
                        let client_id = slot.lock().client_id().clone();
                        warn!(
                            instance = %self.id(),
                            %client_id,
                            dropped_total,
                            "Session queue full; dropped its oldest message"
                        );
                    }
                }
                DeliverOutcome::DroppedOffline => {}
            }
        }
        count
    }

    /// Finds the sessions `message` goes to, holding the registry lock only for the lookup.
    fn route(&self, message: &Arc<Message>) -> Vec<(Arc<SessionSlot>, Delivery)> {
        let registry = self.read_registry();
        if let Some(target) = p2p_target(&message.topic) {
            let Some(slot) = registry.sessions.get(target) else {
                debug!(instance = %self.id(), target, "No session for point-to-point message");
                return Vec::new();
            };
            let delivery = Delivery {
                message: Arc::clone(message),
                qos: message.qos,
                retain: false,
                subscription_ids: Vec::new(),
            };
            return vec![(Arc::clone(slot), delivery)];
        }

        let matched = registry
            .subscriptions
            .matches(&message.topic, &message.publisher);
        let mut deliveries = Vec::with_capacity(matched.len());
        for (client_id, matched) in matched {
            let Some(slot) = registry.sessions.get(&client_id) else {
                continue;
            };
            let delivery = Delivery {
                message: Arc::clone(message),
                qos: message.qos.min(matched.max_qos),
                retain: message.retain && matched.retain_as_published,
                subscription_ids: matched.subscription_ids,
            };
            deliveries.push((Arc::clone(slot), delivery));
        }
        deliveries
    }

    /// Starts a timer that removes the offline session in `slot` at `deadline`, unless the
    /// client came back or the session was replaced by then. The timer holds no strong
    /// reference, so it does not keep a dropped instance alive.
    fn schedule_expiry(
        self: &Arc<Self>,
        slot: Arc<SessionSlot>,
        client_id: ClientId,
        deadline: Instant,
    ) {
        let instance = Arc::downgrade(self);
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            tokio::select! {
                () = stopping.cancelled() => {}
                () = sleep => {
                    if let Some(instance) = instance.upgrade() {
                        instance.expire_session(&slot, &client_id);
                    }
                }
            }
        });
    }

    fn expire_session(&self, slot: &Arc<SessionSlot>, client_id: &ClientId) {
        let now = tokio::time::Instant::now().into_std();
        let mut registry = self.write_registry();
        let session = slot.lock();
        if !session.is_expired(now) {
            return;
        }
        let filters: Vec<String> = session.subscription_filters().map(str::to_owned).collect();
        drop(session);
        if remove_session(&mut registry, client_id, slot, filters) {
            info!(instance = %self.id(), %client_id, "Session expired");
        }
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
        }
    }

    /// Locks the session; hold the guard for one step and never across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }
}

/// Discards the session in `slot` on a clean start or after expiry. Its subscriptions leave the
/// tree, and the connection attached to it no longer owns it. The caller replaces it in the
/// registry.
fn discard_session(registry: &mut Registry, slot: &SessionSlot) {
    let mut session = slot.lock();
    session.handle_discard();
    let client_id = session.client_id().clone();
    let filters: Vec<String> = session.subscription_filters().map(str::to_owned).collect();
    drop(session);
    for filter in filters {
        registry.subscriptions.remove(&filter, &client_id);
    }
}

/// Removes the session in `slot` and its subscriptions, if the registry still maps `client_id`
/// to that slot. Returns whether it did.
fn remove_session(
    registry: &mut Registry,
    client_id: &ClientId,
    slot: &Arc<SessionSlot>,
    filters: Vec<String>,
) -> bool {
    let current = registry.sessions.get(client_id);
    if !current.is_some_and(|current| Arc::ptr_eq(current, slot)) {
        return false;
    }
    registry.sessions.remove(client_id);
    for filter in filters {
        registry.subscriptions.remove(&filter, client_id);
    }
    true
}

/// Returns the target client id of a point-to-point topic `<parent>/p2p/<clientId>`: the second
/// level is exactly `p2p` and the parent and the client id are not empty. The client id is the
/// rest of the topic, so it may contain `/`.
fn p2p_target(topic: &str) -> Option<&str> {
    let mut parts = topic.splitn(3, '/');
    let parent = parts.next()?;
    let marker = parts.next()?;
    let target = parts.next()?;
    let valid = !parent.is_empty() && marker == "p2p" && !target.is_empty();
    valid.then_some(target)
}

/// Locks a mutex, taking over the data if a panicking thread poisoned it: every critical
/// section leaves the data consistent between statements, so it stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2p_target_needs_p2p_second_level() {
        assert_eq!(p2p_target("sensors/p2p/GID_a@@@1"), Some("GID_a@@@1"));
        assert_eq!(p2p_target("sensors/p2p/a/b"), Some("a/b"));
        assert_eq!(p2p_target("sensors/p2p/"), None);
        assert_eq!(p2p_target("sensors/p2p"), None);
        assert_eq!(p2p_target("/p2p/client"), None);
        assert_eq!(p2p_target("sensors/x/p2p/client"), None);
        assert_eq!(p2p_target("sensors/P2P/client"), None);
    }
}
