//! Shared subscriptions `$share/<group>/<filter>`: the sessions subscribed with the same share
//! name and filter form a group, and each matching message goes to one member of the group.
//!
//! Strategy: round robin over the members in the order they subscribed. Counting from the
//! member after the one that received the previous message, the first member whose client is
//! online gets the message. Offline members (persistent sessions whose client is away) are
//! skipped while any member is online. When every member is offline, the next offline member in
//! turn gets the message. Its QoS 1 and QoS 2 messages wait in its queue and QoS 0 messages are
//! dropped, as for any offline session.
//!
//! A member that leaves the group by UNSUBSCRIBE hands its queued messages of the group to the
//! remaining members. A member whose session ends also hands over its QoS 1 messages awaiting
//! PUBACK. `Session::take_shared_deliveries` explains why QoS 2 messages in flight stay.
//!
//! Shared subscriptions work for MQTT 3.1.1 clients too, as a common extension: to a 3.1.1
//! client, `$share/...` is otherwise a filter that matches nothing it could publish to.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::ids::ClientId;
use crate::subscriptions::Subscriber;

/// The members of one shared subscription, as stored in the subscription tree.
#[derive(Debug)]
pub(crate) struct SharedGroup {
    /// The full filter `$share/<group>/<filter>`, which names the group in sessions and
    /// deliveries.
    filter: Arc<str>,
    /// Members in the order they subscribed; one entry per client.
    members: Vec<(ClientId, Subscriber)>,
    /// Index of the member to try first for the next message. Publishers update it under the
    /// registry's read lock, so concurrent publishers may pick the same member. The order stays
    /// fair over time, which is all that round robin promises here.
    next: AtomicUsize,
}

/// The state of one member's session, as the choice of a member sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemberState {
    /// A connection is attached to the session.
    Online,
    /// The session waits for its client to come back.
    Offline,
    /// The instance has no session for the member; it is never chosen.
    Missing,
}

// === impl SharedGroup ===

impl SharedGroup {
    /// Creates an empty group for the full shared filter `filter`.
    pub(crate) fn new(filter: &str) -> SharedGroup {
        SharedGroup {
            filter: Arc::from(filter),
            members: Vec::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// Returns the full filter `$share/<group>/<filter>`.
    pub(crate) fn filter(&self) -> &Arc<str> {
        &self.filter
    }

    /// Adds `client` or replaces its subscription options, returning the options it replaced.
    pub(crate) fn insert(
        &mut self,
        client: ClientId,
        subscriber: Subscriber,
    ) -> Option<Subscriber> {
        match self
            .members
            .iter_mut()
            .find(|(member, _)| *member == client)
        {
            Some((_, existing)) => Some(std::mem::replace(existing, subscriber)),
            None => {
                self.members.push((client, subscriber));
                None
            }
        }
    }

    /// Removes `client`, returning its subscription options.
    pub(crate) fn remove(&mut self, client: &ClientId) -> Option<Subscriber> {
        let index = self
            .members
            .iter()
            .position(|(member, _)| member == client)?;
        let (_, subscriber) = self.members.remove(index);
        Some(subscriber)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Chooses the member for the next message, as the module documentation describes, and
    /// advances the round robin past it. Returns `None` when no member has a session.
    pub(crate) fn choose(
        &self,
        mut state: impl FnMut(&ClientId) -> MemberState,
    ) -> Option<(&ClientId, &Subscriber)> {
        let len = self.members.len();
        if len == 0 {
            return None;
        }
        let start = self.next.load(Ordering::Relaxed) % len;
        let mut first_offline = None;
        for step in 0..len {
            let index = (start + step) % len;
            let Some((client, _)) = self.members.get(index) else {
                continue;
            };
            match state(client) {
                MemberState::Online => return self.chosen(index),
                MemberState::Offline if first_offline.is_none() => first_offline = Some(index),
                MemberState::Offline | MemberState::Missing => {}
            }
        }
        first_offline.and_then(|index| self.chosen(index))
    }

    fn chosen(&self, index: usize) -> Option<(&ClientId, &Subscriber)> {
        self.next.store(index + 1, Ordering::Relaxed);
        self.members
            .get(index)
            .map(|(client, subscriber)| (client, subscriber))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use switchyard_codec::{QoS, SubscriptionOptions};

    use super::*;

    fn subscriber() -> Subscriber {
        Subscriber {
            options: SubscriptionOptions::with_qos(QoS::AtLeastOnce),
            subscription_id: None,
        }
    }

    fn group(members: &[&str]) -> SharedGroup {
        let mut group = SharedGroup::new("$share/g/t");
        for member in members {
            group.insert(ClientId::new(member), subscriber());
        }
        group
    }

    fn choose_with(group: &SharedGroup, states: &HashMap<&str, MemberState>) -> Option<String> {
        group
            .choose(|client| states[client.as_str()])
            .map(|(client, _)| client.as_str().to_owned())
    }

    #[test]
    fn online_members_take_turns() {
        let group = group(&["a", "b", "c"]);
        let states = HashMap::from([
            ("a", MemberState::Online),
            ("b", MemberState::Online),
            ("c", MemberState::Online),
        ]);
        let picks: Vec<Option<String>> = (0..6).map(|_| choose_with(&group, &states)).collect();
        let expected = ["a", "b", "c", "a", "b", "c"].map(|id| Some(id.to_owned()));
        assert_eq!(picks, expected);
    }

    #[test]
    fn offline_members_are_skipped_while_one_is_online() {
        let group = group(&["a", "b", "c"]);
        let states = HashMap::from([
            ("a", MemberState::Online),
            ("b", MemberState::Offline),
            ("c", MemberState::Online),
        ]);
        let picks: Vec<Option<String>> = (0..4).map(|_| choose_with(&group, &states)).collect();
        let expected = ["a", "c", "a", "c"].map(|id| Some(id.to_owned()));
        assert_eq!(picks, expected);
    }

    #[test]
    fn offline_members_take_turns_when_all_are_offline() {
        let group = group(&["a", "b", "gone"]);
        let states = HashMap::from([
            ("a", MemberState::Offline),
            ("b", MemberState::Offline),
            ("gone", MemberState::Missing),
        ]);
        let picks: Vec<Option<String>> = (0..3).map(|_| choose_with(&group, &states)).collect();
        let expected = ["a", "b", "a"].map(|id| Some(id.to_owned()));
        assert_eq!(picks, expected);
    }

    #[test]
    fn group_without_sessions_chooses_nobody() {
        let group = group(&["gone"]);
        let states = HashMap::from([("gone", MemberState::Missing)]);
        assert_eq!(choose_with(&group, &states), None);
        assert_eq!(choose_with(&SharedGroup::new("$share/g/t"), &states), None);
    }

    #[test]
    fn insert_replaces_and_remove_forgets() {
        let mut group = group(&["a"]);
        assert!(group.insert(ClientId::new("a"), subscriber()).is_some());
        assert_eq!(group.members.len(), 1);
        assert!(group.remove(&ClientId::new("a")).is_some());
        assert!(group.remove(&ClientId::new("a")).is_none());
        assert!(group.is_empty());
        assert_eq!(&**group.filter(), "$share/g/t");
    }
}
