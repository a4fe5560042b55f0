//! MQTT 5.0 Topic Aliases in both directions. A Topic Alias replaces the topic name of a
//! PUBLISH with a number that one side set earlier on the same connection. Mappings never carry
//! over to another connection.
//!
//! - Inbound ([`InboundAliases`]): the client may use aliases 1 to the Topic Alias Maximum that
//!   the server announced in CONNACK.
//! - Outbound ([`OutboundAliases`]): the server uses aliases 1 to the Topic Alias Maximum that
//!   the client announced in CONNECT, capped by a setting. The first PUBLISH to a topic carries
//!   the topic and the alias, later ones only the alias. When all aliases are taken, the least
//!   recently used one is given to the new topic [MQTT-3.1.2-26, MQTT-3.1.2-27 in 5.0].

use std::collections::{BTreeMap, HashMap};

use switchyard_codec::{ByteStr, Publish, ReasonCode};

/// The aliases a client set on one connection.
#[derive(Debug)]
pub(crate) struct InboundAliases {
    maximum: u16,
    /// Topic of each alias, at index `alias - 1`.
    topics: Vec<Option<ByteStr>>,
}

/// A PUBLISH whose Topic Alias cannot be used, with the reason code of the DISCONNECT it calls
/// for and a description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AliasError {
    pub(crate) reason: ReasonCode,
    pub(crate) detail: String,
}

impl InboundAliases {
    /// Accepts aliases 1 to `maximum`; 0 accepts none.
    pub(crate) fn new(maximum: u16) -> InboundAliases {
        InboundAliases {
            maximum,
            topics: Vec::new(),
        }
    }

    /// Replaces the Topic Alias of `publish` by the topic it stands for, recording a new
    /// mapping when the PUBLISH carries both a topic and an alias.
    ///
    /// An alias of 0 or above the maximum is invalid (0x94). An alias that was never set, used
    /// with an empty topic, is a protocol error (0x82).
    pub(crate) fn resolve(&mut self, publish: &mut Publish) -> Result<(), AliasError> {
        let Some(alias) = publish.properties.topic_alias.take() else {
            return Ok(());
        };
        if alias == 0 || alias > self.maximum {
            return Err(AliasError {
                reason: ReasonCode::TOPIC_ALIAS_INVALID,
                detail: format!(
                    "Topic Alias {alias} is outside 1 to {}, the Topic Alias Maximum of the server",
                    self.maximum
                ),
            });
        }
        let index = usize::from(alias - 1);
        if publish.topic.is_empty() {
            return match self.topics.get(index).and_then(Option::as_ref) {
                Some(topic) => {
                    publish.topic = topic.clone();
                    Ok(())
                }
                None => Err(AliasError {
                    reason: ReasonCode::PROTOCOL_ERROR,
                    detail: format!("PUBLISH uses Topic Alias {alias}, which names no topic yet"),
                }),
            };
        }
        if self.topics.len() <= index {
            self.topics.resize(index + 1, None);
        }
        if let Some(slot) = self.topics.get_mut(index) {
            // Copy the topic, because the decoded one shares the buffer of the whole packet.
            *slot = Some(ByteStr::from(publish.topic.as_str()));
        }
        Ok(())
    }
}

/// The aliases the server set towards a client on one connection, reused least recently used
/// first once all are taken.
#[derive(Debug)]
pub(crate) struct OutboundAliases {
    maximum: u16,
    /// Alias and last use of each topic that has one.
    by_topic: HashMap<Box<str>, (u16, u64)>,
    /// Topics by last use, oldest first.
    by_use: BTreeMap<u64, Box<str>>,
    /// Counts uses, so each use has a distinct, increasing number.
    uses: u64,
}

/// The outbound alias of a topic, and whether the client knows it yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutboundAlias {
    /// The client knows the alias already: send the alias with an empty topic.
    Known(u16),
    /// The alias is new for this topic: send the topic and the alias.
    New(u16),
}

impl OutboundAliases {
    /// Uses aliases 1 to `maximum`; 0 turns outbound aliases off.
    pub(crate) fn new(maximum: u16) -> OutboundAliases {
        OutboundAliases {
            maximum,
            by_topic: HashMap::new(),
            by_use: BTreeMap::new(),
            uses: 0,
        }
    }

    /// Returns the alias the client already knows for `topic`, marking it as used.
    pub(crate) fn lookup(&mut self, topic: &str) -> Option<u16> {
        let use_number = self.next_use();
        let (alias, last_use) = self.by_topic.get_mut(topic)?;
        let previous = std::mem::replace(last_use, use_number);
        let alias = *alias;
        if let Some(name) = self.by_use.remove(&previous) {
            self.by_use.insert(use_number, name);
        }
        Some(alias)
    }

    /// Gives `topic`, which has no alias, a free alias or the least recently used one. Returns
    /// `None` when aliases are off.
    pub(crate) fn assign(&mut self, topic: &str) -> Option<u16> {
        if self.maximum == 0 {
            return None;
        }
        let alias = if self.by_topic.len() < usize::from(self.maximum) {
            u16::try_from(self.by_topic.len() + 1).ok()?
        } else {
            let (_, oldest) = self.by_use.pop_first()?;
            self.by_topic.remove(&oldest)?.0
        };
        let use_number = self.next_use();
        self.by_topic.insert(Box::from(topic), (alias, use_number));
        self.by_use.insert(use_number, Box::from(topic));
        Some(alias)
    }

    /// Maps the topic of `publish` to an alias and rewrites the PUBLISH to use it.
    ///
    /// `fits` reports whether a PUBLISH may be sent at its size. A new alias adds a few bytes,
    /// so a PUBLISH that would no longer fit keeps its topic without an alias and changes no
    /// mapping.
    pub(crate) fn apply(
        &mut self,
        publish: &mut Publish,
        fits: impl FnOnce(&Publish) -> bool,
    ) -> Option<OutboundAlias> {
        if self.maximum == 0 {
            return None;
        }
        if let Some(alias) = self.lookup(&publish.topic) {
            publish.properties.topic_alias = Some(alias);
            publish.topic = ByteStr::default();
            return Some(OutboundAlias::Known(alias));
        }
        // Any alias value encodes to the same length, so 1 replaces the real one for the check.
        publish.properties.topic_alias = Some(1);
        if !fits(publish) {
            publish.properties.topic_alias = None;
            return None;
        }
        let alias = self.assign(&publish.topic);
        publish.properties.topic_alias = alias;
        alias.map(OutboundAlias::New)
    }

    fn next_use(&mut self) -> u64 {
        self.uses += 1;
        self.uses
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use switchyard_codec::{Properties, QoS};

    use super::*;

    fn publish(topic: &str, alias: Option<u16>) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteStr::from(topic),
            packet_id: None,
            properties: Properties {
                topic_alias: alias,
                ..Properties::default()
            },
            payload: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn inbound_alias_is_set_then_used() {
        let mut aliases = InboundAliases::new(10);
        let mut first = publish("sensors/t1", Some(3));
        assert_eq!(aliases.resolve(&mut first), Ok(()));
        assert_eq!(first.topic.as_str(), "sensors/t1");
        assert_eq!(first.properties.topic_alias, None);

        let mut second = publish("", Some(3));
        assert_eq!(aliases.resolve(&mut second), Ok(()));
        assert_eq!(second.topic.as_str(), "sensors/t1");

        let mut remapped = publish("sensors/t2", Some(3));
        aliases.resolve(&mut remapped).expect("remap");
        let mut third = publish("", Some(3));
        aliases.resolve(&mut third).expect("use");
        assert_eq!(third.topic.as_str(), "sensors/t2");
    }

    #[test]
    fn inbound_alias_out_of_range_is_invalid() {
        let mut aliases = InboundAliases::new(2);
        for alias in [0, 3, u16::MAX] {
            let error = aliases
                .resolve(&mut publish("t", Some(alias)))
                .expect_err("out of range");
            assert_eq!(
                error.reason,
                ReasonCode::TOPIC_ALIAS_INVALID,
                "alias {alias}"
            );
        }
        let mut none = InboundAliases::new(0);
        let error = none.resolve(&mut publish("t", Some(1))).expect_err("off");
        assert_eq!(error.reason, ReasonCode::TOPIC_ALIAS_INVALID);
    }

    #[test]
    fn inbound_unknown_alias_is_protocol_error() {
        let mut aliases = InboundAliases::new(5);
        let error = aliases
            .resolve(&mut publish("", Some(2)))
            .expect_err("unknown");
        assert_eq!(error.reason, ReasonCode::PROTOCOL_ERROR);
    }

    #[test]
    fn inbound_publish_without_alias_is_unchanged() {
        let mut aliases = InboundAliases::new(5);
        let mut plain = publish("a/b", None);
        aliases.resolve(&mut plain).expect("plain");
        assert_eq!(plain.topic.as_str(), "a/b");
    }

    #[test]
    fn outbound_sends_topic_once_then_alias() {
        let mut aliases = OutboundAliases::new(4);
        let mut first = publish("a/b", None);
        assert_eq!(
            aliases.apply(&mut first, |_| true),
            Some(OutboundAlias::New(1))
        );
        assert_eq!(first.topic.as_str(), "a/b");
        assert_eq!(first.properties.topic_alias, Some(1));

        let mut second = publish("a/b", None);
        assert_eq!(
            aliases.apply(&mut second, |_| true),
            Some(OutboundAlias::Known(1))
        );
        assert_eq!(second.topic.as_str(), "");
        assert_eq!(second.properties.topic_alias, Some(1));

        let mut other = publish("c", None);
        assert_eq!(
            aliases.apply(&mut other, |_| true),
            Some(OutboundAlias::New(2))
        );
    }

    #[test]
    fn outbound_reuses_least_recently_used_alias() {
        let mut aliases = OutboundAliases::new(2);
        assert_eq!(aliases.assign("a"), Some(1));
        assert_eq!(aliases.assign("b"), Some(2));
        assert_eq!(aliases.lookup("a"), Some(1));
        // "b" is now the least recently used, so "c" takes its alias.
        assert_eq!(aliases.assign("c"), Some(2));
        assert_eq!(aliases.lookup("b"), None);
        assert_eq!(aliases.lookup("a"), Some(1));
        assert_eq!(aliases.lookup("c"), Some(2));
        assert_eq!(aliases.assign("d"), Some(1));
        assert_eq!(aliases.lookup("a"), None);
    }

    #[test]
    fn outbound_aliases_off_change_nothing() {
        let mut aliases = OutboundAliases::new(0);
        let mut message = publish("a/b", None);
        assert_eq!(aliases.apply(&mut message, |_| true), None);
        assert_eq!(message.topic.as_str(), "a/b");
        assert_eq!(message.properties.topic_alias, None);
    }

    #[test]
    fn outbound_alias_skipped_when_packet_would_not_fit() {
        let mut aliases = OutboundAliases::new(4);
        let mut message = publish("a/b", None);
        assert_eq!(aliases.apply(&mut message, |_| false), None);
        assert_eq!(message.topic.as_str(), "a/b");
        assert_eq!(message.properties.topic_alias, None);
        assert_eq!(aliases.lookup("a/b"), None);
    }
}
