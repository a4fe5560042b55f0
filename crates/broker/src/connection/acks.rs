//! The replies a connection owes for the PUBLISH packets it has read, kept in the order the
//! packets arrived.
//!
//! A PUBACK (QoS 1) or PUBREC (QoS 2) promises that the message is stored wherever it must be,
//! so it waits for the message's store write. The reader does not wait with it: it queues the
//! write here and reads on, and the replies go out as the writes complete, in the order of
//! their PUBLISH packets. Section 4.6 of 3.1.1 and of 5.0 states that order for clients
//! [MQTT-4.6.0-2, MQTT-4.6.0-3], and a publisher keeping its own order relies on it from the
//! server too. A reply that needs no write, such as a PUBACK that rejects a PUBLISH, waits
//! behind the earlier ones. A QoS 0 PUBLISH with a store write, such as a retained message,
//! takes a place too, although it gets no reply.
//!
//! The store commits the writes in the order they were submitted, so they complete in queue
//! order too, unless the store's queue of pending batches was full. Only the oldest entry is
//! polled.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use switchyard_codec::{ByteStr, Packet, QoS};
use switchyard_store::StoreError;

use crate::persist::MessageWrite;

/// The pending replies of one connection, oldest first.
pub(super) struct PendingAcks {
    /// The entries, in a mutex only so that the connection stays `Sync` although a store
    /// future is not. Every access goes through `&mut self` and `Mutex::get_mut`, which takes
    /// no lock.
    entries: Mutex<VecDeque<PendingAck>>,
    /// The number of entries at which the reader stops reading until the oldest completes.
    capacity: usize,
}

/// One PUBLISH whose reply, if it has one, is not sent yet.
pub(super) struct PendingAck {
    /// The packet id of the PUBLISH, `None` at QoS 0.
    pub(super) packet_id: Option<u16>,
    pub(super) kind: Pending,
}

pub(super) enum Pending {
    /// A reply decided already, boxed because a packet is large next to a write.
    Ready(Box<Packet>),
    /// A message whose reply depends on its store write. A QoS 0 message has no reply, but
    /// a failed write still ends a 3.x connection.
    Write {
        qos: QoS,
        topic: ByteStr,
        write: MessageWrite,
    },
}

/// The oldest pending entry, now due.
pub(super) enum Settled {
    Ready(Box<Packet>),
    Written {
        packet_id: Option<u16>,
        qos: QoS,
        topic: ByteStr,
        result: Result<(), StoreError>,
    },
}

impl PendingAcks {
    /// Creates an empty queue that reports full at `capacity` entries, at least 1.
    pub(super) fn new(capacity: usize) -> PendingAcks {
        PendingAcks {
            entries: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
        }
    }

    pub(super) fn push(&mut self, entry: PendingAck) {
        self.entries_mut().push_back(entry);
    }

    pub(super) fn is_empty(&mut self) -> bool {
        self.entries_mut().is_empty()
    }

    /// Reports whether the queue has reached its capacity. Entries may still be pushed, so a
    /// packet already being handled is never refused.
    pub(super) fn is_full(&mut self) -> bool {
        let capacity = self.capacity;
        self.entries_mut().len() >= capacity
    }

    /// Reports whether a pending entry has `packet_id`.
    pub(super) fn contains(&mut self, packet_id: u16) -> bool {
        self.entries_mut()
            .iter()
            .any(|entry| entry.packet_id == Some(packet_id))
    }

    /// Waits for the oldest entry to become due and removes it; returns `None` at once when
    /// the queue is empty.
    pub(super) async fn next(&mut self) -> Option<Settled> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Removes the oldest entry if it is due now.
    pub(super) fn try_next(&mut self) -> Option<Settled> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_next(&mut cx) {
            Poll::Ready(settled) => settled,
            Poll::Pending => None,
        }
    }

    fn entries_mut(&mut self) -> &mut VecDeque<PendingAck> {
        // Nothing runs under the lock, so it cannot be poisoned, and a poisoned one would
        // still contain whole entries.
        self.entries
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Settled>> {
        let entries = self.entries_mut();
        let Some(front) = entries.front_mut() else {
            return Poll::Ready(None);
        };
        // A ready entry has no write, and its `result` goes unused.
        let result = match &mut front.kind {
            Pending::Ready(_) => Ok(()),
            Pending::Write { write, .. } => std::task::ready!(Pin::new(write).poll(cx)),
        };
        let Some(entry) = entries.pop_front() else {
            return Poll::Ready(None);
        };
        let settled = match entry.kind {
            Pending::Ready(packet) => Settled::Ready(packet),
            Pending::Write { qos, topic, .. } => Settled::Written {
                packet_id: entry.packet_id,
                qos,
                topic,
                result,
            },
        };
        Poll::Ready(Some(settled))
    }
}
