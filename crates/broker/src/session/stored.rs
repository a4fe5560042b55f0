//! The store side of a session: the writes its changes produce, and the session rebuilt from
//! its records after a restart.
//!
//! A stored session collects one [`WriteOp`] per change to its durable state (subscriptions,
//! expiry, QoS 1 and 2 messages queued and in flight, inbound QoS 2 ids, will). The instance
//! takes them with [`Session::take_store_ops`] under the same lock as the change and submits
//! them before releasing it, so the store receives each session's changes in order. QoS 0
//! messages are never stored.

use std::time::{Duration, Instant};

use switchyard_codec::QoS;
use switchyard_store::{InflightMessage, SessionRecord, SessionState, UnixMillis, WriteOp};

use super::will::DelayedWill;
use super::{Awaiting, Inflight, NEVER_EXPIRES, Session};
use crate::ids::ClientId;
use crate::persist::{
    instant_of, restored_delivery, restored_origin, restored_subscriber, restored_will,
    stored_delivery, stored_origin, stored_subscription, stored_will, unix_millis_of, version_of,
};

impl Session {
    /// Reports whether the session's changes are written to the store.
    pub(crate) fn is_stored(&self) -> bool {
        self.store_ops.is_some()
    }

    /// Starts or stops writing the session's changes to the store.
    ///
    /// Starting returns the writes of the whole current state, led by the removal of any
    /// records of the client id. The instance has no other session of that client id, but
    /// the store can still have its records. A move that failed while a new session opened
    /// leaves them on the giving instance, and a moved session dropped before adoption
    /// leaves them on the adopting one. Without the removal, those queue and inflight records
    /// would come back under the new session after a restart. Stopping returns the removal
    /// of the stored session. Returns nothing when the state does not change.
    pub(crate) fn handle_store(&mut self, stored: bool) -> Vec<WriteOp> {
        match (self.is_stored(), stored) {
            (false, true) => {
                self.store_ops = Some(Vec::new());
                let mut ops = vec![WriteOp::RemoveSession {
                    client_id: self.client_id.as_str().to_owned(),
                }];
                ops.extend(self.snapshot_ops());
                ops
            }
            (true, false) => {
                self.store_ops = None;
                vec![WriteOp::RemoveSession {
                    client_id: self.client_id.as_str().to_owned(),
                }]
            }
            _ => Vec::new(),
        }
    }

    /// Takes the writes recorded since the last call.
    pub(crate) fn take_store_ops(&mut self) -> Vec<WriteOp> {
        match &mut self.store_ops {
            Some(ops) => std::mem::take(ops),
            None => Vec::new(),
        }
    }

    /// Records the session record with its current subscriptions, expiry and origin.
    pub(crate) fn record_session(&mut self) {
        if self.is_stored() {
            let record = self.session_record();
            self.record(WriteOp::PutSession(record));
        }
    }

    pub(super) fn record(&mut self, op: WriteOp) {
        if let Some(ops) = &mut self.store_ops {
            ops.push(op);
        }
    }

    pub(super) fn record_dequeue(&mut self, sequence: u64) {
        if self.is_stored() {
            let client_id = self.client_id.as_str().to_owned();
            self.record(WriteOp::Dequeue {
                client_id,
                seq: sequence,
            });
        }
    }

    pub(super) fn record_inflight(&mut self, packet_id: u16, inflight: InflightMessage) {
        let client_id = self.client_id.as_str().to_owned();
        self.record(WriteOp::PutInflight {
            client_id,
            packet_id,
            inflight,
        });
    }

    pub(super) fn record_remove_inflight(&mut self, packet_id: u16) {
        if self.is_stored() {
            let client_id = self.client_id.as_str().to_owned();
            self.record(WriteOp::RemoveInflight {
                client_id,
                packet_id,
            });
        }
    }

    /// Records the will of the attached connection, or its absence.
    pub(super) fn record_will(&mut self) {
        if !self.is_stored() {
            return;
        }
        let client_id = self.client_id.as_str().to_owned();
        let op = match (&self.delayed_will, &self.will) {
            (Some(delayed), _) => WriteOp::PutWill {
                client_id,
                will: stored_will(&delayed.will, Some(unix_millis_of(delayed.due))),
            },
            (None, Some(will)) => WriteOp::PutWill {
                client_id,
                will: stored_will(will, None),
            },
            (None, None) => WriteOp::RemoveWill { client_id },
        };
        self.record(op);
    }

    fn session_record(&self) -> SessionRecord {
        let mut subscriptions: Vec<_> = self
            .subscriptions
            .iter()
            .map(|(filter, subscriber)| stored_subscription(filter, subscriber))
            .collect();
        subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
        SessionRecord {
            client_id: self.client_id.as_str().to_owned(),
            protocol_version: self.link.version.level(),
            session_expiry_interval: self.expiry_interval,
            expires_at: self.poll_expiry().map(unix_millis_of),
            subscriptions,
            origin: stored_origin(&self.origin),
        }
    }

    /// Returns the writes that store the whole state of the session.
    fn snapshot_ops(&self) -> Vec<WriteOp> {
        let client_id = self.client_id.as_str();
        let mut ops = vec![WriteOp::PutSession(self.session_record())];
        for (sequence, delivery) in &self.queue.reliable {
            ops.push(WriteOp::Enqueue {
                client_id: client_id.to_owned(),
                seq: *sequence,
                message: stored_delivery(delivery),
            });
        }
        for entry in &self.inflight {
            ops.push(WriteOp::PutInflight {
                client_id: client_id.to_owned(),
                packet_id: entry.packet_id,
                inflight: InflightMessage {
                    message: stored_delivery(&entry.delivery),
                    pubrel_sent: entry.awaiting == Awaiting::PubComp,
                },
            });
        }
        for packet_id in &self.inbound_unreleased {
            ops.push(WriteOp::AddIncomingQos2 {
                client_id: client_id.to_owned(),
                packet_id: *packet_id,
            });
        }
        let will = match (&self.delayed_will, &self.will) {
            (Some(delayed), _) => Some(stored_will(
                &delayed.will,
                Some(unix_millis_of(delayed.due)),
            )),
            (None, Some(will)) => Some(stored_will(will, None)),
            (None, None) => None,
        };
        if let Some(will) = will {
            ops.push(WriteOp::PutWill {
                client_id: client_id.to_owned(),
                will,
            });
        }
        ops
    }

    /// Rebuilds an offline, stored session from its records, as of `now` (`now_millis` in Unix
    /// time).
    ///
    /// A session that was connected when the server stopped counts as disconnected at `now`:
    /// its expiry starts then, and its will, if any, falls due after its delay.
    pub(crate) fn restore(
        state: SessionState,
        max_queued_messages: usize,
        now: Instant,
        now_millis: UnixMillis,
    ) -> Session {
        let record = &state.session;
        let client_id = ClientId::new(&record.client_id);
        let interval = record.session_expiry_interval;
        let mut session = Session::new(client_id, interval, max_queued_messages);
        session.link.version = version_of(record.protocol_version);
        session.origin = restored_origin(&record.origin);
        let deadline = record
            .expires_at
            .filter(|_| interval != NEVER_EXPIRES)
            .map(|deadline| instant_of(deadline, now, now_millis));
        let disconnected_at = deadline
            .and_then(|deadline| deadline.checked_sub(Duration::from_secs(u64::from(interval))))
            .unwrap_or(now);
        session.disconnected_at = Some(disconnected_at);

        for subscription in &record.subscriptions {
            let subscriber = restored_subscriber(subscription);
            session
                .subscriptions
                .insert(subscription.filter.clone(), subscriber);
        }
        for (sequence, message) in state.queue {
            let delivery = restored_delivery(message, now, now_millis);
            session.queue.restore(sequence, delivery);
        }

        for (packet_id, inflight) in state.inflight {
            let delivery = restored_delivery(inflight.message, now, now_millis);
            let awaiting = match (inflight.pubrel_sent, delivery.qos) {
                (true, _) => Awaiting::PubComp,
                (false, QoS::ExactlyOnce) => Awaiting::PubRec,
                (false, _) => Awaiting::PubAck,
            };
            session.inflight.push_back(Inflight {
                packet_id,
                delivery,
                awaiting,
                sent: false,
            });
            session.next_packet_id = packet_id.checked_add(1).unwrap_or(1);
        }
        session
            .inbound_unreleased
            .extend(state.incoming_qos2.iter().copied());

        if let Some(stored) = &state.will {
            let due = match stored.publish_at {
                Some(publish_at) => instant_of(publish_at, now, now_millis),
                None => now
                    .checked_add(Duration::from_secs(u64::from(stored.delay_interval)))
                    .unwrap_or(now),
            };
            session.delayed_will = Some(DelayedWill {
                will: restored_will(stored),
                due,
            });
        }
        session.store_ops = Some(Vec::new());
        session
    }
}
