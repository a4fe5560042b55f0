//! Retained messages of an instance: the last PUBLISH with RETAIN set on each topic, sent to
//! each new subscription whose filter matches the topic.
//!
//! The instance reaches them through the [`RetainedStore`] trait so that a durable store can
//! replace [`MemoryRetainedStore`], which keeps them in memory and loses them on restart.
//! Implementations are called under no other lock of the instance and must not block for long,
//! because publishers and subscribers call them on their connection tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::message::Message;

/// Result of [`RetainedStore::retain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetainOutcome {
    /// The message is now the retained message of its topic.
    Stored,
    /// The message had an empty payload, so the topic has no retained message any more
    /// [MQTT-3.3.1-10, MQTT-3.3.1-11 in 3.1.1].
    Deleted,
    /// The store is full and the topic had no retained message, so the message was not
    /// retained. `limit` is the store's capacity in messages.
    Full { limit: usize },
}

/// Storage for the retained messages of one instance.
pub(crate) trait RetainedStore: Send + Sync {
    /// Makes `message` the retained message of its topic, or deletes the topic's retained
    /// message when the payload is empty.
    fn retain(&self, message: &Arc<Message>) -> RetainOutcome;

    /// Returns the retained messages whose topics match `filter` and whose Message Expiry
    /// Interval has not passed at `now`. Topics starting with `$` match only filters that do
    /// not start with a wildcard [MQTT-4.7.2-1 in 3.1.1 and 5.0].
    fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>>;

    /// Returns the number of retained messages, counting expired ones not yet removed.
    fn len(&self) -> usize;
}

/// Retained messages in memory, in a tree with one node per topic level, so a filter visits
/// only the branches it can match.
///
/// Expired messages are removed when a subscription finds them and when the store is full.
#[derive(Debug)]
pub(crate) struct MemoryRetainedStore {
    inner: Mutex<Tree>,
    max_messages: usize,
}

#[derive(Debug, Default)]
struct Tree {
    root: Node,
    len: usize,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

// === impl MemoryRetainedStore ===

impl MemoryRetainedStore {
    /// Creates an empty store that keeps at most `max_messages` retained messages.
    pub(crate) fn new(max_messages: usize) -> MemoryRetainedStore {
        MemoryRetainedStore {
            inner: Mutex::new(Tree::default()),
            max_messages,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tree> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RetainedStore for MemoryRetainedStore {
    fn retain(&self, message: &Arc<Message>) -> RetainOutcome {
        let mut tree = self.lock();
        if message.payload.is_empty() {
            tree.remove(&message.topic);
            return RetainOutcome::Deleted;
        }
        if tree.len >= self.max_messages && !tree.contains(&message.topic) {
            tree.remove_expired(message.received_at);
            if tree.len >= self.max_messages {
                return RetainOutcome::Full {
                    limit: self.max_messages,
                };
            }
        }
        tree.insert(Arc::clone(message));
        RetainOutcome::Stored
    }

    fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let mut tree = self.lock();
        let mut found = tree.matching(filter);
        let expired: Vec<Arc<Message>> = found
            .iter()
            .filter(|message| message.is_expired(now))
            .cloned()
            .collect();
        if !expired.is_empty() {
            for message in &expired {
                tree.remove(&message.topic);
            }
            found.retain(|message| !message.is_expired(now));
        }
        found
    }

    fn len(&self) -> usize {
        self.lock().len
    }
}

// === impl Tree ===

impl Tree {
    fn insert(&mut self, message: Arc<Message>) {
        let mut node = &mut self.root;
        for level in message.topic.split('/') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        if node.message.replace(message).is_none() {
            self.len += 1;
        }
    }

    fn contains(&self, topic: &str) -> bool {
        let mut node = &self.root;
        for level in topic.split('/') {
            match node.children.get(level) {
                Some(child) => node = child,
                None => return false,
            }
        }
        node.message.is_some()
    }

    /// Removes the retained message of `topic` and prunes the nodes that no longer lead to one.
    fn remove(&mut self, topic: &str) {
        let levels: Vec<&str> = topic.split('/').collect();

        // Find the deepest node on the path that must stay: the root, or a node with a message
        // or with other children. Its edge towards the topic is the one to cut.
        let mut anchor = 0;
        let mut node = &self.root;
        for (depth, level) in levels.iter().enumerate() {
            if depth == 0 || node.message.is_some() || node.children.len() > 1 {
                anchor = depth;
            }
            match node.children.get(*level) {
                Some(child) => node = child,
                None => return,
            }
        }
        if node.message.is_none() {
            return;
        }
        self.len -= 1;
        if !node.children.is_empty() {
            let mut node = &mut self.root;
            for level in &levels {
                match node.children.get_mut(*level) {
                    Some(child) => node = child,
                    None => return,
                }
            }
            node.message = None;
            return;
        }
        let mut node = &mut self.root;
        for level in &levels[..anchor] {
            match node.children.get_mut(*level) {
                Some(child) => node = child,
                None => return,
            }
        }
        if let Some(level) = levels.get(anchor) {
            node.children.remove(*level);
        }
    }

    fn remove_expired(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            if let Some(message) = &node.message
                && message.is_expired(now)
            {
                expired.push(Arc::clone(message));
            }
            pending.extend(node.children.values());
        }
        for message in expired {
            self.remove(&message.topic);
        }
    }

    /// Collects the messages whose topics match `filter`, expired ones included.
    fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut found = Vec::new();
        let mut pending = vec![(&self.root, 0usize)];
        while let Some((node, depth)) = pending.pop() {
            let Some(level) = levels.get(depth) else {
                found.extend(node.message.iter().cloned());
                continue;
            };
            // At the first level, wildcards skip topics that start with `$`.
            let visible = |name: &str| depth > 0 || !name.starts_with('$');
            match *level {
                "#" => {
                    // `#` also matches the parent level: `a/#` matches `a`.
                    found.extend(node.message.iter().cloned());
                    let mut below: Vec<&Node> = node
                        .children
                        .iter()
                        .filter(|(name, _)| visible(name))
                        .map(|(_, child)| child)
                        .collect();
                    while let Some(descendant) = below.pop() {
                        found.extend(descendant.message.iter().cloned());
                        below.extend(descendant.children.values());
                    }
                }
                "+" => {
                    let children = node.children.iter().filter(|(name, _)| visible(name));
                    pending.extend(children.map(|(_, child)| (child, depth + 1)));
                }
                literal => {
                    if let Some(child) = node.children.get(literal) {
                        pending.push((child, depth + 1));
                    }
                }
            }
        }
        found
    }
}

impl Drop for Node {
    /// Drops the descendants one at a time, because the derived drop would recurse once per
    /// topic level.
    fn drop(&mut self) {
        let mut pending: Vec<Node> = self.children.drain().map(|(_, child)| child).collect();
        while let Some(mut node) = pending.pop() {
            pending.extend(node.children.drain().map(|(_, child)| child));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use switchyard_codec::{ByteStr, Properties, Publish, QoS};

    use super::*;
    use crate::ids::ClientId;

    fn message(
        topic: &str,
        payload: &'static [u8],
        expiry: Option<u32>,
        now: Instant,
    ) -> Arc<Message> {
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: ByteStr::from(topic),
            packet_id: Some(1),
            properties: Properties {
                message_expiry_interval: expiry,
                ..Properties::default()
            },
            payload: Bytes::from_static(payload),
        };
        Arc::new(Message::from_publish(
            publish,
            ClientId::new("publisher"),
            now,
        ))
    }

    fn store_with(topics: &[&str]) -> MemoryRetainedStore {
        let store = MemoryRetainedStore::new(100);
        for topic in topics {
            store.retain(&message(topic, b"x", None, Instant::now()));
        }
        store
    }

    fn matching_topics(store: &MemoryRetainedStore, filter: &str) -> Vec<String> {
        let mut topics: Vec<String> = store
            .matching(filter, Instant::now())
            .iter()
            .map(|message| message.topic.as_str().to_owned())
            .collect();
        topics.sort();
        topics
    }

    #[test]
    fn retain_replaces_and_empty_payload_deletes() {
        let store = MemoryRetainedStore::new(10);
        let now = Instant::now();
        assert_eq!(
            store.retain(&message("a/b", b"1", None, now)),
            RetainOutcome::Stored
        );
        assert_eq!(
            store.retain(&message("a/b", b"2", None, now)),
            RetainOutcome::Stored
        );
        assert_eq!(store.len(), 1);
        let found = store.matching("a/b", now);
        assert_eq!(found.len(), 1);
        assert_eq!(&found[0].payload[..], b"2");

        assert_eq!(
            store.retain(&message("a/b", b"", None, now)),
            RetainOutcome::Deleted
        );
        assert_eq!(store.len(), 0);
        assert!(store.matching("a/b", now).is_empty());
        assert_eq!(store.lock().root.children.len(), 0, "empty branch pruned");
    }

    #[test]
    fn wildcards_match_stored_topics() {
        let store = store_with(&["a", "a/b", "a/b/c", "a/x/c", "b", "/", "/a"]);
        assert_eq!(
            matching_topics(&store, "a/#"),
            ["a", "a/b", "a/b/c", "a/x/c"]
        );
        assert_eq!(matching_topics(&store, "a/+"), ["a/b"]);
        assert_eq!(matching_topics(&store, "a/+/c"), ["a/b/c", "a/x/c"]);
        assert_eq!(matching_topics(&store, "+"), ["a", "b"]);
        assert_eq!(matching_topics(&store, "+/+"), ["/", "/a", "a/b"]);
        assert_eq!(matching_topics(&store, "#").len(), 7);
        assert_eq!(matching_topics(&store, "a/b"), ["a/b"]);
        assert!(matching_topics(&store, "c/#").is_empty());
    }

    #[test]
    fn dollar_topics_need_a_literal_first_level() {
        let store = store_with(&["$SYS/uptime", "plain/uptime"]);
        assert_eq!(matching_topics(&store, "#"), ["plain/uptime"]);
        assert_eq!(matching_topics(&store, "+/uptime"), ["plain/uptime"]);
        assert_eq!(matching_topics(&store, "$SYS/#"), ["$SYS/uptime"]);
        assert_eq!(matching_topics(&store, "$SYS/+"), ["$SYS/uptime"]);
    }

    #[test]
    fn store_agrees_with_codec_matching() {
        let topics = [
            "a", "a/b", "a/b/c", "/", "/a", "a/", "$SYS/x", "b/$x", "a//b",
        ];
        let filters = [
            "#", "+", "+/+", "a/#", "a/+", "+/b/#", "/+", "+/", "$SYS/#", "+/$x", "a/+/+",
        ];
        let store = store_with(&topics);
        for filter in filters {
            let mut expected: Vec<String> = topics
                .iter()
                .filter(|topic| switchyard_codec::topic::matches(filter, topic))
                .map(|topic| (*topic).to_owned())
                .collect();
            expected.sort();
            assert_eq!(
                matching_topics(&store, filter),
                expected,
                "filter {filter:?}"
            );
        }
    }

    #[test]
    fn expired_messages_are_not_returned() {
        let store = MemoryRetainedStore::new(10);
        let now = Instant::now();
        store.retain(&message("short", b"x", Some(5), now));
        store.retain(&message("long", b"x", Some(60), now));
        let later = now + Duration::from_secs(10);
        let found = store.matching("#", later);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].topic.as_str(), "long");
        assert_eq!(store.len(), 1, "expired message removed");
    }

    #[test]
    fn full_store_keeps_existing_topics_only() {
        let store = MemoryRetainedStore::new(2);
        let now = Instant::now();
        store.retain(&message("a", b"1", None, now));
        store.retain(&message("b", b"1", Some(1), now));
        assert_eq!(
            store.retain(&message("c", b"1", None, now)),
            RetainOutcome::Full { limit: 2 }
        );
        assert_eq!(
            store.retain(&message("a", b"2", None, now)),
            RetainOutcome::Stored
        );

        // Once "b" has expired, its place is free.
        let later = now + Duration::from_secs(2);
        assert_eq!(
            store.retain(&message("c", b"1", None, later)),
            RetainOutcome::Stored
        );
        assert_eq!(matching_topics(&store, "#"), ["a", "c"]);
    }

    #[test]
    fn removing_inner_topic_keeps_descendants() {
        let store = store_with(&["a", "a/b"]);
        store.retain(&message("a", b"", None, Instant::now()));
        assert_eq!(matching_topics(&store, "#"), ["a/b"]);
        store.retain(&message("a/b", b"", None, Instant::now()));
        assert!(matching_topics(&store, "#").is_empty());
        assert_eq!(store.lock().root.children.len(), 0);
    }

    #[test]
    fn deep_topic_is_stored_without_recursion() {
        let topic = vec!["x"; 30_000].join("/");
        let store = store_with(&[&topic]);
        assert_eq!(store.matching("#", Instant::now()).len(), 1);
        drop(store);
    }
}
