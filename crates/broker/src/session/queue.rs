//! The queue of a session: messages accepted for the client and not sent yet.

use std::collections::VecDeque;

use switchyard_codec::QoS;

use crate::message::Delivery;

/// Messages not yet sent, oldest first, in two lanes so the oldest QoS 0 message can be dropped
/// first without a scan. Sequence numbers keep the original order across lanes.
#[derive(Debug)]
pub(super) struct Queue {
    pub(super) at_most_once: VecDeque<(u64, Delivery)>,
    pub(super) reliable: VecDeque<(u64, Delivery)>,
    next_sequence: u64,
    capacity: usize,
}

// === impl Queue ===

impl Queue {
    pub(super) fn new(capacity: usize) -> Queue {
        Queue {
            at_most_once: VecDeque::new(),
            reliable: VecDeque::new(),
            next_sequence: 0,
            capacity,
        }
    }

    pub(super) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    pub(super) fn len(&self) -> usize {
        self.at_most_once.len() + self.reliable.len()
    }

    /// Drops the oldest QoS 0 message, or else the oldest message, if the queue is full.
    /// Returns the sequence number and QoS of the message it dropped.
    pub(super) fn make_room(&mut self) -> Option<(u64, QoS)> {
        if self.len() < self.capacity {
            return None;
        }
        let dropped = match self.at_most_once.pop_front() {
            Some(dropped) => Some(dropped),
            None => self.reliable.pop_front(),
        };
        // An empty queue is never full, because the capacity is at least 1.
        Some(
            dropped.map_or((0, QoS::AtMostOnce), |(sequence, delivery)| {
                (sequence, delivery.qos)
            }),
        )
    }

    /// Appends a delivery and returns its sequence number.
    pub(super) fn push(&mut self, delivery: Delivery) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.insert(sequence, delivery);
        sequence
    }

    /// Appends a delivery restored from the store under its stored sequence number, which is
    /// higher than those of the deliveries restored before it.
    pub(super) fn restore(&mut self, sequence: u64, delivery: Delivery) {
        self.next_sequence = self.next_sequence.max(sequence.saturating_add(1));
        self.insert(sequence, delivery);
    }

    fn insert(&mut self, sequence: u64, delivery: Delivery) {
        if delivery.qos == QoS::AtMostOnce {
            self.at_most_once.push_back((sequence, delivery));
        } else {
            self.reliable.push_back((sequence, delivery));
        }
    }

    /// Removes the oldest message that can be sent now: a QoS 1 or 2 message only when
    /// `window_open` and its store write has completed.
    pub(super) fn pop(&mut self, window_open: bool) -> Option<(u64, Delivery)> {
        let ready = self
            .reliable
            .front()
            .is_some_and(|(_, delivery)| delivery.is_ready());
        let window_open = window_open && ready;
        let reliable_next = match (self.reliable.front(), self.at_most_once.front()) {
            (Some(_), None) => window_open,
            (Some((reliable, _)), Some((at_most_once, _))) => {
                window_open && reliable < at_most_once
            }
            (None, _) => false,
        };
        if reliable_next {
            self.reliable.pop_front()
        } else {
            self.at_most_once.pop_front()
        }
    }

    /// Removes and returns the queued deliveries of the shared subscription `share`, or of every
    /// shared subscription when `share` is `None`, in their original order.
    pub(super) fn take_shared(&mut self, share: Option<&str>) -> Vec<(u64, Delivery)> {
        let mut taken: Vec<(u64, Delivery)> = Vec::new();
        for lane in [&mut self.at_most_once, &mut self.reliable] {
            let (moved, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(lane)
                .into_iter()
                .partition(|(_, delivery)| is_of_share(delivery, share));
            *lane = kept;
            taken.extend(moved);
        }
        taken.sort_by_key(|(sequence, _)| *sequence);
        taken
    }
}

/// Reports whether `delivery` came through the shared subscription `share`, or through any
/// shared subscription when `share` is `None`.
pub(super) fn is_of_share(delivery: &Delivery, share: Option<&str>) -> bool {
    match (&delivery.share, share) {
        (Some(own), Some(share)) => **own == *share,
        (Some(_), None) => true,
        (None, _) => false,
    }
}
