//! The life of sessions in an instance: opening and resuming them for new connections, closing
//! them when connections end, ending them on a clean start or at expiry, their subscriptions,
//! and the will messages that fall due along the way.

use std::sync::Arc;
use std::time::Instant;

use switchyard_codec::ReasonCode;
use switchyard_codec::topic::parse_shared_subscription;
use tracing::info;

use switchyard_store::StoreFuture;

use super::{DetachedSession, Instance, OpenedSession, Registry, SessionSlot, lock};
use crate::connection::Origin;
use crate::ids::{ClientId, ConnectionId};
use crate::negotiate::Negotiated;
use crate::session::{Link, Session};
use crate::subscriptions::Subscriber;
use crate::will::WillMessage;

/// Result of [`Instance::subscribe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubscribeOutcome {
    /// The subscription is in place. `replaced` is true when it replaced one with the same
    /// filter.
    Subscribed { replaced: bool },
    /// The session has `max_subscriptions_per_client` subscriptions already.
    QuotaExceeded,
    /// Another connection took the session over.
    SessionLost,
}

impl Instance {
    /// Attaches `connection` to the session of the negotiated client id, creating it, resuming
    /// it or adopting `adopted`, and requests a connection that owned the session to close with
    /// 0x8E (session taken over). `will` is the will of the new connection, and `origin` how it
    /// reached the instance.
    ///
    /// With `clean_start`, or when the old session has expired, the old session ends (its
    /// subscriptions are discarded and its will, if any, is published) and a new one is
    /// created. A resumed session cancels the delayed will of the previous connection.
    ///
    /// `adopted` is a session handed over from another instance. It replaces a session that
    /// appeared here since the caller checked there was none, which ends like a clean start.
    #[expect(
        clippy::too_many_arguments,
        reason = "each argument is one fact of the CONNECT, none of which belong together"
    )]
    pub(crate) fn open_session(
        &self,
        negotiated: &Negotiated,
        clean_start: bool,
        connection: ConnectionId,
        link: Link,
        will: Option<WillMessage>,
        origin: &Origin,
        adopted: Option<DetachedSession>,
        now: Instant,
    ) -> OpenedSession {
        let client_id = &negotiated.client_id;
        let mut due_wills = Vec::new();
        let (opened, previous_owner) = {
            let mut registry = self.write_registry();
            let existing = registry.sessions.get(client_id).cloned();
            let previous_owner = existing.as_ref().and_then(|slot| slot.lock().owner());
            let resumable = adopted.is_none() && !clean_start;
            let replaced = existing.is_some();
            let resumed = match existing {
                Some(slot) if resumable && !slot.lock().is_expired(now) => Some(slot),
                Some(slot) => {
                    due_wills.extend(self.end_session(&mut registry, &slot));
                    None
                }
                None => None,
            };
            let (slot, session_present) = match (resumed, adopted) {
                (Some(slot), _) => (slot, true),
                (None, Some(adopted)) => {
                    let mut session = adopted.into_session();
                    if replaced {
                        // Ending the replaced session removed the client's records here,
                        // the moved ones included, so the adopted session is written whole
                        // again below. The removal this returns was submitted already.
                        session.handle_store(false);
                    }
                    session.handle_queue_capacity(self.settings.max_queued_messages);
                    (self.insert_adopted(&mut registry, session), true)
                }
                (None, None) => {
                    let session = Session::new(
                        client_id.clone(),
                        negotiated.session_expiry,
                        self.settings.max_queued_messages,
                    );
                    let slot = Arc::new(SessionSlot::new(session));
                    registry
                        .sessions
                        .insert(client_id.clone(), Arc::clone(&slot));
                    (slot, false)
                }
            };
            let mut session = slot.lock();
            due_wills.extend(session.handle_reconnect());
            session.handle_expiry_interval(negotiated.session_expiry);
            session.handle_attach(connection, link);
            session.handle_will(will);
            session.handle_origin(origin.clone());
            let store_write = self.store_opened(&mut session, negotiated.session_expiry);
            drop(session);
            let opened = OpenedSession {
                slot,
                session_present,
                store_write,
            };
            (opened, previous_owner)
        };

        self.publish_wills(client_id, due_wills);
        if let Some(owner) = previous_owner {
            let handle = lock(&self.connections).get(&owner).cloned();
            if let Some(handle) = handle {
                info!(instance = %self.id(), %client_id, "Session taken over by a new connection");
                handle.disconnect(ReasonCode::SESSION_TAKEN_OVER);
            }
        }
        opened
    }

    /// Writes an opened session to the store if it is persistent (expiry above 0), or removes
    /// it from the store if it no longer is, and returns the write.
    fn store_opened(&self, session: &mut Session, expiry: u32) -> Option<StoreFuture<()>> {
        let store = self.store()?;
        let was_stored = session.is_stored();
        let mut ops = session.take_store_ops();
        ops.extend(session.handle_store(expiry > 0));
        if was_stored && session.is_stored() {
            // The record now has the new expiry and protocol version and no deadline.
            session.record_session();
            ops.extend(session.take_store_ops());
        }
        store.submit(ops)
    }

    /// Detaches `connection` from its session at `now`. `publish_will` is false when the client
    /// ended the connection with DISCONNECT 0x00, which deletes the will.
    ///
    /// A session with expiry interval 0 ends at once. Any other gets a timer that ends it when
    /// it expires, and a will with a delay gets a timer of its own. Does nothing when another
    /// connection has taken the session over, because the takeover handled the will.
    pub(crate) fn close_session(
        self: &Arc<Self>,
        slot: &Arc<SessionSlot>,
        connection: ConnectionId,
        now: Instant,
        publish_will: bool,
    ) {
        let mut registry = self.write_registry();
        let mut session = slot.lock();
        if !session.handle_detach(connection, now) {
            return;
        }
        let client_id = session.client_id().clone();
        let mut due_wills: Vec<WillMessage> = session
            .handle_close_will(publish_will, now)
            .into_iter()
            .collect();
        let write = self.submit_session_ops(&mut session);
        self.finish_in_background(write, "close session");
        if session.expiry_interval() == 0 {
            drop(session);
            due_wills.extend(self.end_session(&mut registry, slot));
            drop(registry);
            slot.detached.notify_waiters();
            self.publish_wills(&client_id, due_wills);
            return;
        }
        let expiry_deadline = session.poll_expiry();
        let will_deadline = session.poll_will();
        drop(session);
        drop(registry);
        slot.detached.notify_waiters();

        self.publish_wills(&client_id, due_wills);
        if let Some(deadline) = will_deadline {
            // The session's end publishes the will too, so a timer past it would only wait.
            let deadline = expiry_deadline.map_or(deadline, |expiry| deadline.min(expiry));
            self.schedule_will(Arc::clone(slot), client_id.clone(), deadline);
        }
        if let Some(deadline) = expiry_deadline {
            self.schedule_expiry(Arc::clone(slot), client_id, deadline);
        }
    }

    /// Adds a subscription for the session in `slot`, which `connection` must own, unless the
    /// session has `max_subscriptions_per_client` other subscriptions already.
    pub(crate) fn subscribe(
        &self,
        slot: &Arc<SessionSlot>,
        connection: ConnectionId,
        filter: &str,
        subscriber: Subscriber,
    ) -> SubscribeOutcome {
        let mut registry = self.write_registry();
        let mut session = slot.lock();
        if !session.is_owned_by(connection) {
            return SubscribeOutcome::SessionLost;
        }
        let is_new = !session.has_subscription(filter);
        if is_new && session.subscription_count() >= self.settings.max_subscriptions_per_client {
            return SubscribeOutcome::QuotaExceeded;
        }
        let client_id = session.client_id().clone();
        let replaced = session.handle_subscribe(filter, subscriber);
        drop(session);
        registry.subscriptions.insert(filter, client_id, subscriber);
        SubscribeOutcome::Subscribed { replaced }
    }

    /// Removes a subscription of the session in `slot`, which `connection` must own. Returns
    /// whether it existed, or `None` when the connection lost the session.
    ///
    /// Leaving a shared subscription hands the session's queued messages of that group to the
    /// remaining members.
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
        let is_shared = matches!(parse_shared_subscription(filter), Ok(Some(_)));
        let handed_over = if existed && is_shared {
            session.take_shared_deliveries(Some(filter), false)
        } else {
            Vec::new()
        };
        drop(session);
        registry.subscriptions.remove(filter, &client_id);
        self.hand_over(&registry, handed_over);
        Some(existed)
    }

    /// Ends the session in `slot` and returns the will that falls due because it ends.
    ///
    /// The attached connection, if any, no longer owns the session. Its subscriptions leave the
    /// tree, and its messages of shared subscriptions go to the other members of each group.
    /// The registry entry is removed if it still maps the client id to `slot`.
    ///
    /// The caller must not hold the lock of `slot`.
    fn end_session(&self, registry: &mut Registry, slot: &Arc<SessionSlot>) -> Option<WillMessage> {
        let mut session = slot.lock();
        session.handle_discard();
        let mut ops = session.take_store_ops();
        ops.extend(session.handle_store(false));
        if let Some(store) = self.store() {
            self.finish_in_background(store.submit(ops), "end session");
        }
        let client_id = session.client_id().clone();
        let filters: Vec<String> = session.subscription_filters().map(str::to_owned).collect();
        let handed_over = session.take_shared_deliveries(None, true);
        let will = session.take_will_at_end();
        drop(session);

        for filter in &filters {
            registry.subscriptions.remove(filter, &client_id);
        }
        let current = registry.sessions.get(&client_id);
        if current.is_some_and(|current| Arc::ptr_eq(current, slot)) {
            registry.sessions.remove(&client_id);
        }
        self.hand_over(registry, handed_over);
        will
    }

    /// Starts a timer that ends the offline session in `slot` at `deadline`, unless the client
    /// came back or the session was replaced by then. The timer holds no strong reference, so
    /// it does not keep a dropped instance alive.
    pub(super) fn schedule_expiry(
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
        if !slot.lock().is_expired(now) {
            return;
        }
        let current = registry.sessions.get(client_id);
        if !current.is_some_and(|current| Arc::ptr_eq(current, slot)) {
            return;
        }
        let will = self.end_session(&mut registry, slot);
        drop(registry);
        info!(instance = %self.id(), %client_id, "Session expired");
        self.publish_wills(client_id, will.into_iter().collect());
    }

    /// Starts a timer that publishes the delayed will of the session in `slot` at `deadline`,
    /// unless the client came back or the session ended by then.
    pub(super) fn schedule_will(
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
                    let Some(instance) = instance.upgrade() else {
                        return;
                    };
                    let now = tokio::time::Instant::now().into_std();
                    let will = {
                        let mut session = slot.lock();
                        let will = session.take_due_will(now);
                        let write = instance.submit_session_ops(&mut session);
                        instance.finish_in_background(write, "delayed will");
                        will
                    };
                    instance.publish_wills(&client_id, will.into_iter().collect());
                }
            }
        });
    }

    /// Publishes the wills of `client_id` that fell due, as the client would publish them.
    fn publish_wills(&self, client_id: &ClientId, wills: Vec<WillMessage>) {
        for will in wills {
            let now = tokio::time::Instant::now().into_std();
            let topic = will.topic.clone();
            let receivers = self.publish(will.to_message(client_id, now));
            info!(instance = %self.id(), %client_id, %topic, receivers, "Will message published");
        }
    }
}
