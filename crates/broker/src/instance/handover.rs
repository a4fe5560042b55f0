//! Session handover between instances of one process: an offline session leaves one instance
//! as a [`DetachedSession`] value and another instance adopts it for a new connection.
//!
//! The DR layer decides when a session moves, because it has the membership of each group.
//! The broker provides the mechanism: [`Instance::take_detached_session`] on the instance that
//! holds the session, and [`Instance::accept_connection_with_handover`] with a
//! [`SessionHandover`] on the instance the device reached.
//!
//! With a message store shared by both instances, the move is one unit in the store: the
//! removal from the giving instance and the whole session on the adopting one commit
//! together. That commit completes before the take returns, so before the adopting instance
//! sends CONNACK.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use switchyard_store::{StoreFuture, WriteOp};
use tracing::{info, warn};

use super::{Instance, Registry, SessionSlot, lock};
use crate::connection::{CLOSE_TIMEOUT, Origin};
use crate::ids::ClientId;
use crate::session::Session;

/// How long [`Instance::take_detached_session`] waits for a closing connection to detach: a
/// closing connection spends at most `CLOSE_TIMEOUT` flushing before it detaches, plus a
/// margin for the task to be scheduled.
const DETACH_WAIT: Duration = CLOSE_TIMEOUT.saturating_add(Duration::from_secs(1));

/// How often a waiting handover checks the session again when no detach notification came, in
/// case the session changed owner instead of detaching.
const DETACH_RECHECK: Duration = Duration::from_millis(50);

/// An offline session taken out of an instance, carried as a value to the instance that adopts
/// it: subscriptions with their options and identifiers, the queue, outbound QoS 1 and QoS 2
/// messages in flight, inbound QoS 2 packet ids awaiting PUBREL, the delayed will and the
/// expiry interval.
///
/// It contains no socket, no timer and no task. Times in it are `std::time::Instant` values, which stay
/// comparable because every instance runs in the same process. A value that is dropped instead
/// of adopted loses the session from memory. If the move was committed to a shared store, the
/// adopting instance's stored copy remains and comes back at its next restart, unless a new
/// session of the client is stored there first, which removes it.
#[derive(Debug)]
pub struct DetachedSession {
    /// Boxed, because a session is over a kilobyte and the value moves through futures.
    session: Box<Session>,
}

/// The source of a session held by another instance, consulted by
/// [`Instance::accept_connection_with_handover`].
pub trait SessionHandover: Send + Sync + 'static {
    /// Takes the offline session of `client_id` from wherever it is held, or returns `None`
    /// when no instance may hand one over.
    fn take_session<'a>(
        &'a self,
        client_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<DetachedSession>> + Send + 'a>>;
}

/// What [`Instance::try_take`] found.
enum TakeAttempt {
    /// The session left the registry. `move_write` is the store unit that moves it to the
    /// adopting instance, still to be awaited. Boxed like [`DetachedSession`]'s session.
    Taken {
        session: Box<Session>,
        move_write: Option<StoreFuture<()>>,
    },
    /// A connection owns the session and was asked to close, so it detaches soon.
    Closing(Arc<SessionSlot>),
    /// Nothing to take: no session, a session in use, expired, or of another origin.
    Unavailable,
}

// === impl DetachedSession ===

impl DetachedSession {
    /// Returns the client identifier of the session.
    pub fn client_id(&self) -> &str {
        self.session.client_id().as_str()
    }

    /// Returns the number of subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.session.subscription_count()
    }

    /// Returns the number of messages waiting in the queue.
    pub fn queued_len(&self) -> usize {
        self.session.queued_len()
    }

    /// Returns the number of outbound QoS 1 and QoS 2 messages awaiting acknowledgement.
    pub fn inflight_len(&self) -> usize {
        self.session.inflight_len()
    }

    /// Returns the number of inbound QoS 2 packet ids awaiting PUBREL.
    pub fn unreleased_len(&self) -> usize {
        self.session.unreleased_len()
    }

    pub(super) fn into_session(self) -> Session {
        *self.session
    }
}

// === impl Instance ===

impl Instance {
    /// Reports whether the instance has a session for `client_id`, online or offline.
    pub fn has_session(&self, client_id: &str) -> bool {
        self.read_registry().sessions.contains_key(client_id)
    }

    /// Takes the offline session of `client_id` out of this instance, with its subscriptions,
    /// shared subscription memberships included, leaving the subscription tree, for `adopter`
    /// to adopt.
    ///
    /// Only a session whose last connection came in through `origin` is taken. A session that
    /// a connection owns is not taken, unless that connection was asked to close (a DR
    /// downgrade, a takeover, a shutdown): then this waits for it to detach, a few seconds at
    /// most. Returns `None`, changing nothing, when there is no such session, when it has
    /// expired, or when it is still in use.
    ///
    /// When both instances write to one message store, the removal of the session here and
    /// its whole state on `adopter` commit as one unit
    /// ([`MessageStore::submit_atomic`](switchyard_store::MessageStore::submit_atomic)), and
    /// this returns only after that commit. So after a crash at any moment the store has the
    /// session on exactly one of the two. If the commit fails, the session goes back into this
    /// instance as it was, and this returns `None`.
    ///
    /// The will and expiry timers of the session stay behind and find nothing to do. Messages
    /// published here after the take no longer reach the client.
    pub async fn take_detached_session(
        self: &Arc<Self>,
        client_id: &str,
        origin: &Origin,
        adopter: &Instance,
    ) -> Option<DetachedSession> {
        let deadline = tokio::time::Instant::now() + DETACH_WAIT;
        loop {
            let slot = match self.try_take(client_id, origin, adopter) {
                TakeAttempt::Taken {
                    session,
                    move_write,
                } => return self.finish_take(session, move_write, adopter).await,
                TakeAttempt::Unavailable => return None,
                TakeAttempt::Closing(slot) => slot,
            };
            let detached = slot.detached.notified();
            tokio::pin!(detached);
            // Register for the notification before checking again, so a detach between the
            // check and the wait is not missed.
            detached.as_mut().enable();
            if !self.is_owner_closing(&slot) {
                continue;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                info!(
                    instance = %self.id(),
                    client_id,
                    "Closing connection kept its session too long; not handing it over"
                );
                return None;
            }
            let wait = (deadline - now).min(DETACH_RECHECK);
            let _ = tokio::time::timeout(wait, detached).await;
        }
    }

    /// Takes the session of `client_id` if it is offline, not expired and of `origin`, and
    /// submits its move to `adopter` while the registry is still locked. The store commits in
    /// submission order, so the move commits after every write this instance submitted for
    /// the session, its pending changes included, and before any later one.
    fn try_take(&self, client_id: &str, origin: &Origin, adopter: &Instance) -> TakeAttempt {
        let now = tokio::time::Instant::now().into_std();

        let mut registry = self.write_registry();
        let Some(slot) = registry.sessions.get(client_id).cloned() else {
            return TakeAttempt::Unavailable;
        };
        let mut session = slot.lock();
        if let Some(owner) = session.owner() {
            drop(session);
            drop(registry);
            // The connection map is never locked together with the registry.
            let closing = lock(&self.connections)
                .get(&owner)
                .is_some_and(|handle| handle.is_closing());
            return if closing {
                TakeAttempt::Closing(slot)
            } else {
                TakeAttempt::Unavailable
            };
        }
        if session.is_expired(now) || session.origin() != origin {
            return TakeAttempt::Unavailable;
        }

        // The slot keeps an empty session, so the timers that still refer to it find no will
        // and no expiry, and the slot is no longer in the registry.
        let retired = Session::new(session.client_id().clone(), 0, 1);
        let moved = std::mem::replace(&mut *session, retired);
        drop(session);

        let mut moved = moved;
        let move_write = self.submit_move(&mut moved, adopter);
        let client_id = moved.client_id().clone();
        remove_session(&mut registry, &client_id, &moved);
        drop(registry);
        TakeAttempt::Taken {
            session: Box::new(moved),
            move_write,
        }
    }

    /// Submits the store writes that move `session` to `adopter` and returns the unit to wait
    /// for, if there is one.
    ///
    /// With one store for both instances, the removal here and the whole session on `adopter`
    /// form one unit, and the session is marked as stored, on `adopter` from now on. Otherwise
    /// the removal commits alone and `adopter` writes the session when it opens it.
    fn submit_move(&self, session: &mut Session, adopter: &Instance) -> Option<StoreFuture<()>> {
        let store = self.store()?;
        // Changes recorded but not yet submitted commit first, on their own, so that the
        // store still matches the session here if the move fails.
        let pending = session.take_store_ops();
        self.finish_in_background(store.submit(pending), "session changes before handover");
        let removal = session.handle_store(false);
        if !removal.is_empty()
            && let Some(target) = adopter.store()
        {
            let whole = session.handle_store(true);
            if let Some(unit) = store.submit_move(target, removal.clone(), whole) {
                return Some(unit);
            }
            session.handle_store(false);
        }
        // NOTE: two different message stores cannot commit one unit, so a crash between this
        // removal and the adopter's write loses the session. `switchyard serve` gives every
        // instance the same store.
        self.finish_in_background(store.submit(removal), "hand over session");
        None
    }

    /// Waits for the store to commit the move of a taken session and returns it for
    /// `adopter`, or puts it back into this instance if the commit failed.
    async fn finish_take(
        self: &Arc<Self>,
        session: Box<Session>,
        move_write: Option<StoreFuture<()>>,
        adopter: &Instance,
    ) -> Option<DetachedSession> {
        let client_id = session.client_id().clone();
        if let Some(unit) = move_write
            && let Err(error) = unit.await
        {
            warn!(
                instance = %self.id(),
                %client_id,
                adopter = %adopter.id(),
                %error,
                "Message store failed to commit the session handover; keeping the session here"
            );
            self.put_back(session);
            return None;
        }
        info!(
            instance = %self.id(),
            %client_id,
            adopter = %adopter.id(),
            subscriptions = session.subscription_count(),
            queued = session.queued_len(),
            inflight = session.inflight_len(),
            "Session handed over to another instance"
        );
        Some(DetachedSession { session })
    }

    /// Puts a taken session whose move failed back into the registry, offline, with its
    /// subscriptions in the tree and its expiry and will timers running again. The store
    /// still has it here, because the failed unit changed nothing.
    fn put_back(self: &Arc<Self>, session: Box<Session>) {
        let client_id = session.client_id().clone();
        let expiry = session.poll_expiry();
        let will = session.poll_will();
        let slot = {
            let mut registry = self.write_registry();
            if let Some(current) = registry.sessions.get(&client_id) {
                // NOTE: a new session of the client opened here while the move was being
                // committed. It stays, and the taken one is lost although its move failed. A
                // stored new session removed the taken one's records when it wrote itself,
                // and otherwise they are removed now, so a restart cannot bring them back.
                let current = current.lock();
                if !current.is_stored()
                    && let Some(store) = self.store()
                {
                    let removal = vec![WriteOp::RemoveSession {
                        client_id: client_id.as_str().to_owned(),
                    }];
                    self.finish_in_background(
                        store.submit(removal),
                        "drop session that failed to move",
                    );
                }
                drop(current);
                warn!(
                    instance = %self.id(),
                    %client_id,
                    "Session that failed to move is dropped, because a new one replaced it"
                );
                return;
            }
            for (filter, subscriber) in session.subscriptions() {
                registry
                    .subscriptions
                    .insert(filter, client_id.clone(), *subscriber);
            }
            let slot = Arc::new(SessionSlot::new(*session));
            registry
                .sessions
                .insert(client_id.clone(), Arc::clone(&slot));
            slot
        };
        if let Some(deadline) = will {
            let deadline = expiry.map_or(deadline, |expiry| deadline.min(expiry));
            self.schedule_will(Arc::clone(&slot), client_id.clone(), deadline);
        }
        if let Some(deadline) = expiry {
            self.schedule_expiry(slot, client_id, deadline);
        }
    }

    /// Reports whether a connection owns the session in `slot` and was asked to close.
    fn is_owner_closing(&self, slot: &SessionSlot) -> bool {
        let Some(owner) = slot.lock().owner() else {
            return false;
        };
        lock(&self.connections)
            .get(&owner)
            .is_some_and(|handle| handle.is_closing())
    }

    /// Puts an adopted session into the registry attached to a new connection, with its
    /// subscriptions in the tree, and returns its slot.
    ///
    /// NOTE: every subscription is adopted, even past this instance's
    /// `max_subscriptions_per_client`, which only limits new SUBSCRIBE requests.
    pub(super) fn insert_adopted(
        &self,
        registry: &mut Registry,
        session: Session,
    ) -> Arc<SessionSlot> {
        let client_id = session.client_id().clone();
        for (filter, subscriber) in session.subscriptions() {
            registry
                .subscriptions
                .insert(filter, client_id.clone(), *subscriber);
        }
        let slot = Arc::new(SessionSlot::new(session));
        registry.sessions.insert(client_id, Arc::clone(&slot));
        slot
    }
}

/// Removes a taken session's registry entry and its subscriptions from the tree.
fn remove_session(registry: &mut Registry, client_id: &ClientId, session: &Session) {
    for filter in session.subscription_filters() {
        registry.subscriptions.remove(filter, client_id);
    }
    registry.sessions.remove(client_id);
}

#[cfg(test)]
mod tests;
