//! The admission of commands to the writer thread of
//! [`SqliteMessageStore`](super::SqliteMessageStore).
//!
//! Every command is admitted in the order it was submitted, and no more than
//! [`max_pending_batches`](super::MessageStoreSettings::max_pending_batches) writes are in the
//! writer's channel at once. A write that finds no free slot waits in a queue here, and every
//! command submitted after it, write or not, waits behind it. So commits follow the order of
//! the submit calls, in whatever order the futures are polled.

use std::collections::VecDeque;
use std::sync::mpsc::{SendError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::WriteBatch;
use super::writer::{Command, PendingWrite};
use crate::error::StoreError;

/// The gate in front of the writer's channel, shared by the store handle and every write slot.
#[derive(Debug)]
pub(super) struct Admission {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The writer's channel. It is sent to only with the lock held, so the channel order is
    /// the admission order.
    sender: Sender<Command>,
    /// The writes that may still enter the channel.
    free_slots: usize,
    /// The commands submitted while an earlier write waited for a slot, oldest first.
    waiting: VecDeque<Queued>,
    /// Set once a send failed because the writer thread is gone.
    closed: bool,
}

/// A submitted command before it enters the writer's channel.
#[derive(Debug)]
pub(super) enum Queued {
    /// A write, which takes a slot until the writer drops it.
    Write {
        batches: Vec<WriteBatch>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A command that takes no slot: a load, a purge, a compaction, a pause or the shutdown.
    Other(Command),
}

/// A place in the writer's channel, held by one [`PendingWrite`] and given back when the
/// writer drops it, which admits the commands waiting behind it.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Arc<Admission>,
}

// === impl Admission ===

impl Admission {
    /// Creates the gate in front of `sender` with `max_pending_writes` slots (at least 1).
    pub(super) fn new(sender: Sender<Command>, max_pending_writes: usize) -> Arc<Admission> {
        Arc::new(Admission {
            state: Mutex::new(State {
                sender,
                free_slots: max_pending_writes.max(1),
                waiting: VecDeque::new(),
                closed: false,
            }),
        })
    }

    /// Admits `command` to the writer's channel now, or queues it behind the commands that
    /// are waiting. A command that cannot be sent because the writer thread is gone is
    /// dropped, which closes its result channel.
    pub(super) fn submit(self: &Arc<Self>, command: Queued) {
        let mut rejected = Vec::new();
        {
            let mut state = self.lock();
            state.waiting.push_back(command);
            self.admit_waiting(&mut state, &mut rejected);
        }
        // Dropped after the lock is released, because a rejected write gives its slot back,
        // which takes the lock again.
        drop(rejected);
    }

    /// Sends the waiting commands, oldest first, until a write finds no free slot.
    fn admit_waiting(self: &Arc<Self>, state: &mut State, rejected: &mut Vec<Command>) {
        if state.closed {
            state.waiting.clear();
            return;
        }
        while let Some(front) = state.waiting.front() {
            if matches!(front, Queued::Write { .. }) && state.free_slots == 0 {
                return;
            }
            let command = match state.waiting.pop_front() {
                Some(Queued::Write { batches, done }) => {
                    state.free_slots -= 1;
                    Command::Write(PendingWrite {
                        batches,
                        done,
                        _slot: Slot {
                            admission: Arc::clone(self),
                        },
                    })
                }
                Some(Queued::Other(command)) => command,
                None => return,
            };
            if let Err(SendError(command)) = state.sender.send(command) {
                rejected.push(command);
                state.closed = true;
                state.waiting.clear();
                return;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, and a poisoned lock must not turn every
        // later submit into a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Slot ===

impl Drop for Slot {
    fn drop(&mut self) {
        let mut rejected = Vec::new();
        {
            let mut state = self.admission.lock();
            state.free_slots += 1;
            self.admission.admit_waiting(&mut state, &mut rejected);
        }
        drop(rejected);
    }
}
