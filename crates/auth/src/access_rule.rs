//! Topic access rules: an ordered list of ALLOW and DENY rules for publishing and subscribing,
//! modelled on the cloud product's custom-auth permissions (`Effect`, `PermitAction`, `Topic`).
//!
//! The first rule that applies to a client, an operation and a topic decides. When none
//! applies, the instance's other topic checks decide, as if there were no rules. A rule applies
//! when its client selectors match and:
//!
//! - for a PUBLISH, its filter matches the topic name;
//! - for a SUBSCRIBE, a DENY rule's filter overlaps the requested filter, because a subscriber
//!   of the requested filter could receive a topic the rule denies. An ALLOW rule's filter
//!   covers the requested filter: every topic it could receive is one the rule allows. A DENY rule
//!   may instead refuse only the filters it covers ([`SubscribeMatch::Cover`]), which leaves
//!   wider filters such as `+/+` to the later rules.
//!
//! A rule's topic may contain the placeholders `%c` (the client id) and `%u` (the username).
//! A substituted value never widens access: when it contains `+`, `#` or `/`, an ALLOW rule
//! does not apply and a DENY rule applies to every topic, and a rule naming `%u` does not apply
//! to a client without a username.

use std::borrow::Cow;
use std::fmt;

use switchyard_codec::topic::{
    TopicError, filter_covers, filters_overlap, matches, parse_shared_subscription,
    validate_topic_filter,
};

use crate::policy::TopicAccess;

/// Whether a rule grants or refuses what it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleEffect {
    /// `ALLOW`.
    Allow,
    /// `DENY`.
    Deny,
}

/// The operations a rule is about, with the cloud product's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PermitAction {
    /// `PUB`: publishing, will messages included.
    Publish,
    /// `SUB`: subscribing.
    Subscribe,
    /// `PUB_SUB`: both.
    PublishSubscribe,
}

impl PermitAction {
    fn includes(self, access: TopicAccess) -> bool {
        match self {
            PermitAction::Publish => access == TopicAccess::Publish,
            PermitAction::Subscribe => access == TopicAccess::Subscribe,
            PermitAction::PublishSubscribe => true,
        }
    }
}

/// The MQTT 5.0 reason code that a client refused by a DENY rule gets in SUBACK, PUBACK or
/// PUBREC. MQTT 3.1.1 has one SUBACK failure code, 0x80, whichever this is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// 0x87 Not authorized, the default.
    #[default]
    NotAuthorized,
    /// 0x80 Unspecified error, for a server that does not tell the client why.
    UnspecifiedError,
}

impl DenyReason {
    /// Returns the MQTT 5.0 reason code: 0x87 or 0x80.
    pub fn reason_code(self) -> u8 {
        match self {
            DenyReason::NotAuthorized => 0x87,
            DenyReason::UnspecifiedError => 0x80,
        }
    }
}

/// The requested SUBSCRIBE filters that a DENY rule refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SubscribeMatch {
    /// Every filter that overlaps the rule's filter, so no subscription can receive a topic
    /// the rule covers. The default.
    #[default]
    Overlap,
    /// Only the filters that the rule's filter covers, such as `a/b` and `a/+` for a rule on
    /// `a/#`. A wider filter (`+/b`, `#`) is left to the later rules, so its subscriber may
    /// still receive the rule's topics: this refuses filters, it does not protect topics.
    Cover,
}

/// An invalid access rule, naming the value and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessRuleError {
    /// The topic is not a valid MQTT topic filter once placeholders are filled in.
    #[error("topic {topic:?} is not a valid topic filter: {source}")]
    InvalidTopic {
        topic: String,
        #[source]
        source: TopicError,
    },
    /// The topic starts with `$share/`, but rules are about the topics a filter reads.
    #[error(
        "topic {topic:?} is a shared subscription; write the filter without the \
         $share/<ShareName>/ prefix, because a rule on a filter also applies to shared \
         subscriptions of it"
    )]
    SharedSubscription { topic: String },
    /// The topic contains `%` not followed by `c` or `u`.
    #[error(
        "topic {topic:?} contains an unknown placeholder at byte {position}; the placeholders \
         are %c (client id) and %u (username), and a topic with another '%' cannot be matched"
    )]
    UnknownPlaceholder { topic: String, position: usize },
    /// A client id or username selector is empty.
    #[error("client selector {key} is empty; remove it to match every client, or use \"*\"")]
    EmptySelector { key: &'static str },
    /// A reason code is set on an ALLOW rule, which refuses nothing.
    #[error("an ALLOW rule refuses nothing, so it takes no reason code; remove it")]
    ReasonOnAllow,
    /// A subscribe match is set on an ALLOW rule, which always needs to cover a filter.
    #[error(
        "an ALLOW rule applies only to the filters it covers, so it takes no subscribe match; \
         remove it"
    )]
    SubscribeMatchOnAllow,
}

/// One access rule. Build it with [`AccessRule::new`] and the `with_*` methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    effect: RuleEffect,
    action: PermitAction,
    topic: String,
    client_id: Option<NamePattern>,
    username: Option<NamePattern>,
    deny_reason: DenyReason,
    subscribe_match: SubscribeMatch,
}

/// The decision of the first rule that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleDecision {
    /// An ALLOW rule applied.
    Allow,
    /// A DENY rule applied; `rule` is its position in the list, from 0.
    Deny { rule: usize, reason: DenyReason },
}

/// The client an access rule is evaluated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleSubject<'a> {
    /// The client id of the connection, assigned by the server if the client sent none.
    pub client_id: &'a str,
    /// The username of the CONNECT, if it had one.
    pub username: Option<&'a str>,
}

impl AccessRule {
    /// Creates a rule for every client, with the default deny reason.
    ///
    /// `topic` is a topic filter, with wildcards and the placeholders `%c` and `%u` allowed.
    pub fn new(
        effect: RuleEffect,
        action: PermitAction,
        topic: &str,
    ) -> Result<AccessRule, AccessRuleError> {
        check_rule_topic(topic)?;
        Ok(AccessRule {
            effect,
            action,
            topic: topic.to_owned(),
            client_id: None,
            username: None,
            deny_reason: DenyReason::default(),
            subscribe_match: SubscribeMatch::default(),
        })
    }

    /// Limits the rule to clients whose client id matches `pattern`, in which `*` stands for
    /// any run of characters.
    pub fn with_client_id(mut self, pattern: &str) -> Result<AccessRule, AccessRuleError> {
        self.client_id = Some(NamePattern::new("client_id", pattern)?);
        Ok(self)
    }

    /// Limits the rule to clients whose username matches `pattern`, in which `*` stands for
    /// any run of characters. Clients without a username never match.
    pub fn with_username(mut self, pattern: &str) -> Result<AccessRule, AccessRuleError> {
        self.username = Some(NamePattern::new("username", pattern)?);
        Ok(self)
    }

    /// Sets the reason code a DENY rule refuses with.
    pub fn with_deny_reason(mut self, reason: DenyReason) -> Result<AccessRule, AccessRuleError> {
        if self.effect == RuleEffect::Allow {
            return Err(AccessRuleError::ReasonOnAllow);
        }
        self.deny_reason = reason;
        Ok(self)
    }

    /// Sets which requested filters a DENY rule refuses.
    pub fn with_subscribe_match(
        mut self,
        subscribe_match: SubscribeMatch,
    ) -> Result<AccessRule, AccessRuleError> {
        if self.effect == RuleEffect::Allow {
            return Err(AccessRuleError::SubscribeMatchOnAllow);
        }
        self.subscribe_match = subscribe_match;
        Ok(self)
    }

    /// Returns the rule's effect.
    pub fn effect(&self) -> RuleEffect {
        self.effect
    }

    /// Returns the rule's topic as configured, placeholders included.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Reports whether this rule applies to `subject` doing `access` on `topic_or_filter`, a
    /// topic name for a PUBLISH or a plain topic filter for a SUBSCRIBE.
    fn applies(
        &self,
        subject: RuleSubject<'_>,
        access: TopicAccess,
        topic_or_filter: &str,
    ) -> bool {
        if !self.action.includes(access) || !self.selects(subject) {
            return false;
        }
        let filter = match substitute(&self.topic, subject) {
            Substituted::Filter(filter) => filter,
            Substituted::NoUsername => return false,
            // A DENY rule must not shrink because of the value, so it denies everything.
            Substituted::UnsafeValue => return self.effect == RuleEffect::Deny,
        };
        if access == TopicAccess::Publish {
            return matches(&filter, topic_or_filter);
        }
        match (self.effect, self.subscribe_match) {
            (RuleEffect::Deny, SubscribeMatch::Overlap) => {
                filters_overlap(&filter, topic_or_filter)
            }
            (RuleEffect::Deny, SubscribeMatch::Cover) | (RuleEffect::Allow, _) => {
                filter_covers(&filter, topic_or_filter)
            }
        }
    }

    fn selects(&self, subject: RuleSubject<'_>) -> bool {
        if let Some(pattern) = &self.client_id
            && !pattern.matches(subject.client_id)
        {
            return false;
        }
        if let Some(pattern) = &self.username {
            return subject
                .username
                .is_some_and(|username| pattern.matches(username));
        }
        true
    }
}

impl fmt::Display for AccessRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let effect = match self.effect {
            RuleEffect::Allow => "ALLOW",
            RuleEffect::Deny => "DENY",
        };
        let action = match self.action {
            PermitAction::Publish => "PUB",
            PermitAction::Subscribe => "SUB",
            PermitAction::PublishSubscribe => "PUB_SUB",
        };
        write!(f, "{effect} {action} {:?}", self.topic)
    }
}

/// Returns the decision of the first rule in `rules` that applies, or `None` when none does.
///
/// For a subscription, pass the filter without its `$share/<ShareName>/` prefix; a filter that
/// still has one is evaluated as the filter inside it.
pub fn evaluate_rules(
    rules: &[AccessRule],
    subject: RuleSubject<'_>,
    access: TopicAccess,
    topic_or_filter: &str,
) -> Option<RuleDecision> {
    let mut plain = topic_or_filter;
    if access == TopicAccess::Subscribe
        && let Ok(Some(shared)) = parse_shared_subscription(topic_or_filter)
    {
        plain = shared.filter;
    }
    let (index, rule) = rules
        .iter()
        .enumerate()
        .find(|(_, rule)| rule.applies(subject, access, plain))?;
    Some(match rule.effect {
        RuleEffect::Allow => RuleDecision::Allow,
        RuleEffect::Deny => RuleDecision::Deny {
            rule: index,
            reason: rule.deny_reason,
        },
    })
}

/// The placeholders a rule topic may contain and the value each one stands for.
const CLIENT_ID_PLACEHOLDER: &str = "%c";
const USERNAME_PLACEHOLDER: &str = "%u";

/// Checks a rule topic: placeholders known, a valid plain filter once they are filled in.
fn check_rule_topic(topic: &str) -> Result<(), AccessRuleError> {
    if topic.starts_with(switchyard_codec::topic::SHARED_PREFIX) {
        return Err(AccessRuleError::SharedSubscription {
            topic: topic.to_owned(),
        });
    }
    let mut sample = String::with_capacity(topic.len());
    let mut rest = topic;
    while let Some(position) = rest.find('%') {
        sample.push_str(&rest[..position]);
        let placeholder = rest.get(position..position + 2);
        if placeholder != Some(CLIENT_ID_PLACEHOLDER) && placeholder != Some(USERNAME_PLACEHOLDER) {
            return Err(AccessRuleError::UnknownPlaceholder {
                topic: topic.to_owned(),
                position: topic.len() - rest.len() + position,
            });
        }
        // Any literal stands for the value: it checks that the level has no wildcard next to it.
        sample.push('x');
        rest = &rest[position + 2..];
    }
    sample.push_str(rest);
    validate_topic_filter(&sample).map_err(|source| AccessRuleError::InvalidTopic {
        topic: topic.to_owned(),
        source,
    })
}

/// A rule topic with its placeholders filled in for one client.
enum Substituted<'a> {
    Filter(Cow<'a, str>),
    /// A value contains `+`, `#` or `/`, which would change the filter's levels or wildcards.
    UnsafeValue,
    /// The topic names `%u` and the client has no username.
    NoUsername,
}

/// Fills in `%c` and `%u` in one pass, so a value that itself contains `%u` stays literal.
fn substitute<'a>(topic: &'a str, subject: RuleSubject<'_>) -> Substituted<'a> {
    if !topic.contains('%') {
        return Substituted::Filter(Cow::Borrowed(topic));
    }
    let mut filter = String::with_capacity(topic.len() + subject.client_id.len());
    let mut rest = topic;
    while let Some(position) = rest.find('%') {
        filter.push_str(&rest[..position]);
        let value = match rest.get(position..position + 2) {
            Some(CLIENT_ID_PLACEHOLDER) => subject.client_id,
            Some(USERNAME_PLACEHOLDER) => match subject.username {
                Some(username) => username,
                None => return Substituted::NoUsername,
            },
            // check_rule_topic admits no other '%', so the rule cannot be matched literally.
            _ => return Substituted::UnsafeValue,
        };
        if value.contains(['+', '#', '/']) {
            return Substituted::UnsafeValue;
        }
        filter.push_str(value);
        rest = &rest[position + 2..];
    }
    filter.push_str(rest);
    Substituted::Filter(Cow::Owned(filter))
}

/// A client id or username pattern in which `*` stands for any run of characters, empty
/// included. Every other character stands for itself.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NamePattern {
    pattern: String,
}

impl NamePattern {
    fn new(key: &'static str, pattern: &str) -> Result<NamePattern, AccessRuleError> {
        if pattern.is_empty() {
            return Err(AccessRuleError::EmptySelector { key });
        }
        Ok(NamePattern {
            pattern: pattern.to_owned(),
        })
    }

    /// Matches by the usual wildcard algorithm: on a mismatch, go back to the last `*` and let
    /// it take one more character. The work is at most the product of the two lengths.
    fn matches(&self, name: &str) -> bool {
        let pattern: Vec<char> = self.pattern.chars().collect();
        let name: Vec<char> = name.chars().collect();
        let (mut p, mut n) = (0, 0);
        let mut last_star: Option<(usize, usize)> = None;
        while n < name.len() {
            if p < pattern.len() && pattern[p] == '*' {
                last_star = Some((p, n));
                p += 1;
            } else if p < pattern.len() && pattern[p] == name[n] {
                p += 1;
                n += 1;
            } else if let Some((star, taken)) = last_star {
                p = star + 1;
                n = taken + 1;
                last_star = Some((star, taken + 1));
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|c| *c == '*')
    }
}

#[cfg(test)]
mod tests;
