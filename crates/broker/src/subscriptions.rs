//! The subscription tree of an instance: topic filters of every session, indexed by level so a
//! topic is matched without scanning all filters.
//!
//! Each node is one topic level. A filter ending in `#` is stored on the node of the level before
//! the `#`, because `sport/#` also matches `sport` itself. Filters starting with a wildcard do not
//! match topics whose first level starts with `$` [MQTT-4.7.2-1 in 3.1.1 and 5.0].
//!
//! A shared subscription `$share/<group>/<filter>` is stored on the node of its `<filter>`, in a
//! [`SharedGroup`] per share name, so it matches topics exactly as `<filter>` does.
//!
//! Every walk is a loop rather than a recursion: a topic can have tens of thousands of levels,
//! and a recursion that deep would overflow the stack of the task that publishes.

use std::collections::HashMap;

use switchyard_codec::topic::{SharedSubscription, parse_shared_subscription};
use switchyard_codec::{QoS, SubscriptionOptions};

use crate::ids::ClientId;
use crate::shared::SharedGroup;

/// One subscription of one session: the options from SUBSCRIBE and the MQTT 5.0 Subscription
/// Identifier, if the packet carried one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Subscriber {
    pub(crate) options: SubscriptionOptions,
    pub(crate) subscription_id: Option<u32>,
}

/// The delivery options of one client for one topic, merged over its matching subscriptions. The broker
/// sends a message once per client even when several of its filters match, with the highest QoS
/// among them [MQTT-3.3.5-1 in 3.1.1, MQTT-3.3.4-2 in 5.0].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Matched {
    /// The highest QoS among the matching subscriptions.
    pub(crate) max_qos: QoS,
    /// Whether any matching subscription asked for Retain As Published.
    pub(crate) retain_as_published: bool,
    /// Subscription Identifiers of the matching subscriptions, in no particular order.
    pub(crate) subscription_ids: Vec<u32>,
}

/// Everything that a topic matches: the clients with ordinary subscriptions, merged per client,
/// and the shared subscription groups, each of which picks one member.
#[derive(Debug, Default)]
pub(crate) struct Matches<'a> {
    pub(crate) clients: HashMap<ClientId, Matched>,
    pub(crate) shared: Vec<&'a SharedGroup>,
}

/// Topic filters of every session of one instance.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionTree {
    root: Node,
    len: usize,
}

#[derive(Debug, Default)]
struct Node {
    /// Children by literal level.
    children: HashMap<Box<str>, Node>,
    /// The child for a `+` level.
    single_level: Option<Box<Node>>,
    /// Filters that end at this node.
    subscribers: HashMap<ClientId, Subscriber>,
    /// Filters that end with `#` right after this node.
    multi_level: HashMap<ClientId, Subscriber>,
    /// Shared subscriptions whose filter ends at this node, by share name.
    shared: HashMap<Box<str>, SharedGroup>,
    /// Shared subscriptions whose filter ends with `#` right after this node, by share name.
    shared_multi_level: HashMap<Box<str>, SharedGroup>,
}

// === impl SubscriptionTree ===

impl SubscriptionTree {
    /// Adds or replaces the subscription of `client` to `filter`, returning the one it replaced.
    ///
    /// `filter` must have passed `topic::validate_topic_filter`. A `#` anywhere but last is then
    /// impossible, and the tree would store it as a literal level. A shared subscription joins
    /// the group of its share name and filter.
    pub(crate) fn insert(
        &mut self,
        filter: &str,
        client: ClientId,
        subscriber: Subscriber,
    ) -> Option<Subscriber> {
        let shared = shared_part(filter);
        let (path, multi_level) = split_filter(shared.map_or(filter, |shared| shared.filter));
        let mut node = &mut self.root;
        for level in path {
            node = node.child_or_insert(level);
        }
        let replaced = match shared {
            Some(shared) => node
                .groups_mut(multi_level)
                .entry(Box::from(shared.group))
                .or_insert_with(|| SharedGroup::new(filter))
                .insert(client, subscriber),
            None => node.entries_mut(multi_level).insert(client, subscriber),
        };
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// Removes the subscription of `client` to `filter`, returning it, and prunes the nodes
    /// that no longer lead to any subscription.
    pub(crate) fn remove(&mut self, filter: &str, client: &ClientId) -> Option<Subscriber> {
        let shared = shared_part(filter);
        let (path, multi_level) = split_filter(shared.map_or(filter, |shared| shared.filter));

        // Find the deepest node on the path that must stay after the removal: the root, or a
        // node with subscriptions or with other children. Its edge towards the filter is the
        // one to cut if the filter's own node ends up empty.
        let mut anchor = 0;
        let mut node = &self.root;
        for (depth, level) in path.iter().enumerate() {
            if depth == 0 || node.has_subscribers() || node.edge_count() > 1 {
                anchor = depth;
            }
            node = node.child(level)?;
        }

        // Remove the subscription itself.
        let mut node = &mut self.root;
        for level in &path {
            node = node.child_mut(level)?;
        }
        let removed = match shared {
            Some(shared) => {
                let groups = node.groups_mut(multi_level);
                let group = groups.get_mut(shared.group)?;
                let removed = group.remove(client)?;
                if group.is_empty() {
                    groups.remove(shared.group);
                }
                removed
            }
            None => node.entries_mut(multi_level).remove(client)?,
        };
        self.len -= 1;

        // Cut the branch that now leads nowhere.
        if node.is_empty() && !path.is_empty() {
            let mut node = &mut self.root;
            for level in &path[..anchor] {
                match node.child_mut(level) {
                    Some(child) => node = child,
                    None => return Some(removed),
                }
            }
            if let Some(level) = path.get(anchor) {
                node.remove_child(level);
            }
        }
        Some(removed)
    }

    /// Collects every client with a subscription matching the topic name `topic`, merged per
    /// client, skipping MQTT 5.0 No Local subscriptions of `publisher` [MQTT-3.8.3-3 in 5.0],
    /// and every shared subscription group whose filter matches.
    pub(crate) fn matches(&self, topic: &str, publisher: &ClientId) -> Matches<'_> {
        let levels: Vec<&str> = topic.split('/').collect();
        let is_dollar_topic = topic.starts_with('$');
        let mut found = Matches::default();
        let mut pending = vec![(&self.root, 0usize)];

        while let Some((node, depth)) = pending.pop() {
            let wildcards_allowed = depth > 0 || !is_dollar_topic;
            if wildcards_allowed {
                merge_into(&mut found.clients, &node.multi_level, publisher);
                found.shared.extend(node.shared_multi_level.values());
            }
            let Some(level) = levels.get(depth) else {
                merge_into(&mut found.clients, &node.subscribers, publisher);
                found.shared.extend(node.shared.values());
                continue;
            };
            if let Some(child) = node.children.get(*level) {
                pending.push((child, depth + 1));
            }
            if wildcards_allowed && let Some(child) = &node.single_level {
                pending.push((child, depth + 1));
            }
        }
        found
    }

    /// Returns the number of subscriptions in the tree, counting each member of a shared
    /// subscription group.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Returns the group of the shared subscription `filter` (`$share/<group>/<filter>`), if it
    /// has members.
    pub(crate) fn shared_group(&self, filter: &str) -> Option<&SharedGroup> {
        let shared = shared_part(filter)?;
        let (path, multi_level) = split_filter(shared.filter);
        let mut node = &self.root;
        for level in path {
            node = node.child(level)?;
        }
        let groups = if multi_level {
            &node.shared_multi_level
        } else {
            &node.shared
        };
        groups.get(shared.group)
    }

    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            count += 1;
            pending.extend(node.children.values());
            pending.extend(node.single_level.as_deref());
        }
        count
    }
}

// === impl Node ===

impl Node {
    fn child(&self, level: &str) -> Option<&Node> {
        if level == "+" {
            self.single_level.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node> {
        if level == "+" {
            self.single_level.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Node {
        if level == "+" {
            self.single_level.get_or_insert_with(Box::default)
        } else {
            self.children.entry(Box::from(level)).or_default()
        }
    }

    fn remove_child(&mut self, level: &str) {
        if level == "+" {
            self.single_level = None;
        } else {
            self.children.remove(level);
        }
    }

    fn entries_mut(&mut self, multi_level: bool) -> &mut HashMap<ClientId, Subscriber> {
        if multi_level {
            &mut self.multi_level
        } else {
            &mut self.subscribers
        }
    }

    fn groups_mut(&mut self, multi_level: bool) -> &mut HashMap<Box<str>, SharedGroup> {
        if multi_level {
            &mut self.shared_multi_level
        } else {
            &mut self.shared
        }
    }

    fn has_subscribers(&self) -> bool {
        !self.subscribers.is_empty()
            || !self.multi_level.is_empty()
            || !self.shared.is_empty()
            || !self.shared_multi_level.is_empty()
    }

    fn edge_count(&self) -> usize {
        self.children.len() + usize::from(self.single_level.is_some())
    }

    fn is_empty(&self) -> bool {
        !self.has_subscribers() && self.edge_count() == 0
    }

    fn take_children(&mut self) -> impl Iterator<Item = Node> + use<> {
        let literal: Vec<Node> = self.children.drain().map(|(_, child)| child).collect();
        literal
            .into_iter()
            .chain(self.single_level.take().map(|child| *child))
    }
}

impl Drop for Node {
    /// Drops the descendants one at a time, because the derived drop would recurse once per
    /// level.
    fn drop(&mut self) {
        let mut pending: Vec<Node> = self.take_children().collect();
        while let Some(mut node) = pending.pop() {
            pending.extend(node.take_children());
        }
    }
}

/// Returns the parts of a shared subscription filter, or `None` for an ordinary filter.
fn shared_part(filter: &str) -> Option<SharedSubscription<'_>> {
    parse_shared_subscription(filter).ok().flatten()
}

/// Splits a filter into the levels that lead to its node and whether it ends with `#`.
fn split_filter(filter: &str) -> (Vec<&str>, bool) {
    let mut path: Vec<&str> = filter.split('/').collect();
    let multi_level = path.last() == Some(&"#");
    if multi_level {
        path.pop();
    }
    (path, multi_level)
}

fn merge_into(
    found: &mut HashMap<ClientId, Matched>,
    entries: &HashMap<ClientId, Subscriber>,
    publisher: &ClientId,
) {
    for (client, subscriber) in entries {
        let options = &subscriber.options;
        if options.no_local && client == publisher {
            continue;
        }
        let matched = found.entry(client.clone()).or_insert(Matched {
            max_qos: options.qos,
            retain_as_published: false,
            subscription_ids: Vec::new(),
        });
        matched.max_qos = matched.max_qos.max(options.qos);
        matched.retain_as_published |= options.retain_as_published;
        matched.subscription_ids.extend(subscriber.subscription_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(qos: QoS) -> Subscriber {
        Subscriber {
            options: SubscriptionOptions::with_qos(qos),
            subscription_id: None,
        }
    }

    fn client(id: &str) -> ClientId {
        ClientId::new(id)
    }

    fn matching_clients(tree: &SubscriptionTree, topic: &str) -> Vec<String> {
        let mut clients: Vec<String> = tree
            .matches(topic, &client("publisher"))
            .clients
            .into_keys()
            .map(|id| id.as_str().to_owned())
            .collect();
        clients.sort();
        clients
    }

    fn tree_with(filters: &[(&str, &str)]) -> SubscriptionTree {
        let mut tree = SubscriptionTree::default();
        for (id, filter) in filters {
            tree.insert(filter, client(id), subscriber(QoS::AtLeastOnce));
        }
        tree
    }

    #[test]
    fn exact_filter_matches_only_its_topic() {
        let tree = tree_with(&[("c1", "sport/tennis/player1")]);
        assert_eq!(matching_clients(&tree, "sport/tennis/player1"), ["c1"]);
        assert!(matching_clients(&tree, "sport/tennis").is_empty());
        assert!(matching_clients(&tree, "sport/tennis/player1/ranking").is_empty());
        assert!(matching_clients(&tree, "sport/tennis/player2").is_empty());
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_descendants() {
        let tree = tree_with(&[("c1", "sport/tennis/player1/#")]);
        assert_eq!(matching_clients(&tree, "sport/tennis/player1"), ["c1"]);
        assert_eq!(
            matching_clients(&tree, "sport/tennis/player1/ranking"),
            ["c1"]
        );
        assert_eq!(
            matching_clients(&tree, "sport/tennis/player1/score/wimbledon"),
            ["c1"]
        );
        assert!(matching_clients(&tree, "sport/tennis/player2").is_empty());
        assert!(matching_clients(&tree, "sport/tennis").is_empty());
    }

    #[test]
    fn lone_multi_level_wildcard_matches_everything() {
        let tree = tree_with(&[("c1", "#")]);
        assert_eq!(matching_clients(&tree, "a"), ["c1"]);
        assert_eq!(matching_clients(&tree, "a/b/c"), ["c1"]);
        assert_eq!(matching_clients(&tree, "/"), ["c1"]);
    }

    #[test]
    fn single_level_wildcard_matches_one_level() {
        let tree = tree_with(&[("c1", "sport/tennis/+")]);
        assert_eq!(matching_clients(&tree, "sport/tennis/player1"), ["c1"]);
        assert_eq!(matching_clients(&tree, "sport/tennis/player2"), ["c1"]);
        assert!(matching_clients(&tree, "sport/tennis/player1/ranking").is_empty());
        assert!(matching_clients(&tree, "sport/tennis").is_empty());
    }

    #[test]
    fn single_level_wildcard_matches_empty_levels() {
        let tree = tree_with(&[("c1", "+"), ("c2", "/+"), ("c3", "+/+")]);
        assert_eq!(matching_clients(&tree, "sport"), ["c1"]);
        assert_eq!(matching_clients(&tree, "/finance"), ["c2", "c3"]);
        assert_eq!(matching_clients(&tree, "/"), ["c2", "c3"]);
        assert!(matching_clients(&tree, "sport/").contains(&"c3".to_owned()));
    }

    #[test]
    fn wildcards_combine_in_one_filter() {
        let tree = tree_with(&[("c1", "+/tennis/#"), ("c2", "sport/+/player1")]);
        assert_eq!(matching_clients(&tree, "sport/tennis"), ["c1"]);
        assert_eq!(
            matching_clients(&tree, "sport/tennis/player1"),
            ["c1", "c2"]
        );
        assert_eq!(matching_clients(&tree, "sport/golf/player1"), ["c2"]);
        assert!(matching_clients(&tree, "sport/golf").is_empty());
    }

    #[test]
    fn dollar_topics_skip_leading_wildcards() {
        let tree = tree_with(&[
            ("all", "#"),
            ("plus", "+/monitor/Clients"),
            ("sys", "$SYS/#"),
            ("sys_plus", "$SYS/monitor/+"),
        ]);
        assert_eq!(
            matching_clients(&tree, "$SYS/monitor/Clients"),
            ["sys", "sys_plus"]
        );
        assert_eq!(matching_clients(&tree, "$SYS"), ["sys"]);
        assert_eq!(
            matching_clients(&tree, "other/monitor/Clients"),
            ["all", "plus"]
        );
    }

    #[test]
    fn dollar_inside_later_level_is_ordinary() {
        let tree = tree_with(&[("c1", "+/$x"), ("c2", "a/#")]);
        assert_eq!(matching_clients(&tree, "a/$x"), ["c1", "c2"]);
    }

    #[test]
    fn overlapping_subscriptions_merge_per_client() {
        let mut tree = SubscriptionTree::default();
        let id = client("c1");
        tree.insert("a/#", id.clone(), subscriber(QoS::AtMostOnce));
        tree.insert("a/+", id.clone(), subscriber(QoS::ExactlyOnce));
        tree.insert("a/b", id.clone(), subscriber(QoS::AtLeastOnce));
        tree.insert("a/b", client("c2"), subscriber(QoS::AtMostOnce));

        let found = tree.matches("a/b", &client("publisher")).clients;
        assert_eq!(found.len(), 2);
        assert_eq!(found[&id].max_qos, QoS::ExactlyOnce);
        assert_eq!(found[&client("c2")].max_qos, QoS::AtMostOnce);
    }

    #[test]
    fn subscription_ids_collect_across_matches() {
        let mut tree = SubscriptionTree::default();
        let id = client("c1");
        let with_id = |qos, subscription_id| Subscriber {
            options: SubscriptionOptions::with_qos(qos),
            subscription_id,
        };
        tree.insert("a/#", id.clone(), with_id(QoS::AtMostOnce, Some(1)));
        tree.insert("a/+", id.clone(), with_id(QoS::AtMostOnce, Some(2)));
        tree.insert("+/b", id.clone(), with_id(QoS::AtMostOnce, None));

        let found = tree.matches("a/b", &client("publisher")).clients;
        let mut ids = found[&id].subscription_ids.clone();
        ids.sort();
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn retain_as_published_is_merged() {
        let mut tree = SubscriptionTree::default();
        let id = client("c1");
        let mut options = SubscriptionOptions::with_qos(QoS::AtMostOnce);
        tree.insert(
            "a/b",
            id.clone(),
            Subscriber {
                options,
                subscription_id: None,
            },
        );
        options.retain_as_published = true;
        tree.insert(
            "a/#",
            id.clone(),
            Subscriber {
                options,
                subscription_id: None,
            },
        );

        let found = tree.matches("a/b", &client("publisher")).clients;
        assert!(found[&id].retain_as_published);
    }

    #[test]
    fn no_local_skips_the_publisher_only() {
        let mut tree = SubscriptionTree::default();
        let mut options = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
        options.no_local = true;
        let entry = Subscriber {
            options,
            subscription_id: None,
        };
        tree.insert("a/b", client("publisher"), entry);
        tree.insert("a/b", client("other"), entry);
        assert_eq!(matching_clients(&tree, "a/b"), ["other"]);
    }

    #[test]
    fn insert_replaces_same_filter() {
        let mut tree = SubscriptionTree::default();
        let id = client("c1");
        assert_eq!(
            tree.insert("a/b", id.clone(), subscriber(QoS::AtMostOnce)),
            None
        );
        let replaced = tree.insert("a/b", id.clone(), subscriber(QoS::ExactlyOnce));
        assert_eq!(replaced, Some(subscriber(QoS::AtMostOnce)));
        assert_eq!(tree.len(), 1);
        assert_eq!(
            tree.matches("a/b", &client("p")).clients[&id].max_qos,
            QoS::ExactlyOnce
        );
    }

    #[test]
    fn remove_prunes_empty_branches() {
        let mut tree = SubscriptionTree::default();
        tree.insert("a/b/c/d", client("c1"), subscriber(QoS::AtMostOnce));
        tree.insert("a/+/#", client("c1"), subscriber(QoS::AtMostOnce));
        tree.insert("a", client("c2"), subscriber(QoS::AtMostOnce));
        assert_eq!(tree.node_count(), 6);

        assert!(tree.remove("a/b/c/d", &client("c1")).is_some());
        assert_eq!(tree.node_count(), 3);
        assert!(tree.remove("a/+/#", &client("c1")).is_some());
        assert_eq!(tree.node_count(), 2);
        assert_eq!(matching_clients(&tree, "a"), ["c2"]);
        assert!(tree.remove("a", &client("c2")).is_some());
        assert_eq!(tree.node_count(), 1);
        assert_eq!(tree.len(), 0);
    }

    #[test]
    fn remove_keeps_branches_of_other_clients() {
        let mut tree = tree_with(&[("c1", "a/b"), ("c2", "a/b"), ("c3", "a/b/c")]);
        assert!(tree.remove("a/b", &client("c1")).is_some());
        assert_eq!(matching_clients(&tree, "a/b"), ["c2"]);
        assert!(tree.remove("a/b", &client("c2")).is_some());
        assert_eq!(matching_clients(&tree, "a/b/c"), ["c3"]);
        assert_eq!(tree.len(), 1);
    }

    #[test]
    fn remove_unknown_subscription_changes_nothing() {
        let mut tree = tree_with(&[("c1", "a/b")]);
        assert_eq!(tree.remove("a/c", &client("c1")), None);
        assert_eq!(tree.remove("a/b", &client("c2")), None);
        assert_eq!(tree.remove("a/b/#", &client("c1")), None);
        assert_eq!(tree.len(), 1);
        assert_eq!(matching_clients(&tree, "a/b"), ["c1"]);
    }

    #[test]
    fn tree_agrees_with_codec_matching() {
        let filters = [
            "#", "+", "+/+", "a", "a/#", "a/+", "a/b", "a/+/c", "+/b/#", "/", "/+", "+/", "$SYS/#",
            "$SYS/+", "+/$x", "a//b", "a/+/+/#", "+/#",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "a/x/c", "/", "/a", "a/", "$SYS/x", "$SYS", "b/$x", "a//b",
            "x/b/y/z", "a/b/c/d", "b",
        ];
        let mut tree = SubscriptionTree::default();
        for filter in filters {
            tree.insert(filter, client(filter), subscriber(QoS::AtMostOnce));
        }
        for topic in topics {
            let mut expected: Vec<String> = filters
                .iter()
                .filter(|filter| switchyard_codec::topic::matches(filter, topic))
                .map(|filter| (*filter).to_owned())
                .collect();
            expected.sort();
            assert_eq!(matching_clients(&tree, topic), expected, "topic {topic:?}");
        }
    }

    #[test]
    fn deep_topic_matches_without_recursion() {
        let depth = 50_000;
        let filter = vec!["+"; depth].join("/");
        let topic = vec!["x"; depth].join("/");
        let mut tree = SubscriptionTree::default();
        tree.insert(&filter, client("c1"), subscriber(QoS::AtMostOnce));
        assert_eq!(matching_clients(&tree, &topic), ["c1"]);
        assert!(tree.remove(&filter, &client("c1")).is_some());
        assert_eq!(tree.node_count(), 1);
    }

    fn shared_filters(tree: &SubscriptionTree, topic: &str) -> Vec<String> {
        let mut filters: Vec<String> = tree
            .matches(topic, &client("publisher"))
            .shared
            .iter()
            .map(|group| group.filter().to_string())
            .collect();
        filters.sort();
        filters
    }

    #[test]
    fn shared_filters_match_like_their_inner_filter() {
        let tree = tree_with(&[
            ("c1", "$share/g1/sport/+"),
            ("c2", "$share/g1/sport/+"),
            ("c3", "$share/g2/sport/#"),
            ("c4", "$share/g3/#"),
            ("c5", "sport/tennis"),
        ]);
        assert_eq!(
            shared_filters(&tree, "sport/tennis"),
            ["$share/g1/sport/+", "$share/g2/sport/#", "$share/g3/#"]
        );
        assert_eq!(
            shared_filters(&tree, "sport"),
            ["$share/g2/sport/#", "$share/g3/#"]
        );
        assert_eq!(matching_clients(&tree, "sport/tennis"), ["c5"]);
        assert!(shared_filters(&tree, "$SYS/x").is_empty());
        assert_eq!(tree.len(), 5);
    }

    #[test]
    fn shared_group_ends_with_last_member() {
        let mut tree = tree_with(&[("c1", "$share/g/a/b"), ("c2", "$share/g/a/b")]);
        assert!(tree.shared_group("$share/g/a/b").is_some());
        assert!(tree.shared_group("$share/other/a/b").is_none());
        assert!(tree.shared_group("a/b").is_none());

        assert!(tree.remove("$share/g/a/b", &client("c1")).is_some());
        assert!(tree.remove("$share/g/a/b", &client("c1")).is_none());
        assert_eq!(shared_filters(&tree, "a/b"), ["$share/g/a/b"]);
        assert!(tree.remove("$share/g/a/b", &client("c2")).is_some());
        assert!(tree.shared_group("$share/g/a/b").is_none());
        assert!(shared_filters(&tree, "a/b").is_empty());
        assert_eq!(tree.node_count(), 1);
        assert_eq!(tree.len(), 0);
    }

    #[test]
    fn shared_and_plain_filters_independent() {
        let mut tree = tree_with(&[("c1", "$share/g/a"), ("c1", "a")]);
        assert_eq!(tree.len(), 2);
        assert!(tree.remove("a", &client("c1")).is_some());
        assert_eq!(shared_filters(&tree, "a"), ["$share/g/a"]);
        assert!(matching_clients(&tree, "a").is_empty());
    }
}
