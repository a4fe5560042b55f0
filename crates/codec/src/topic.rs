//! Topic names, topic filters, shared subscriptions and filter matching (MQTT 3.1.1 section 4.7,
//! MQTT 5.0 sections 4.7 and 4.8.2).
//!
//! The decoder checks topic names in PUBLISH and will messages. It does not check topic filters
//! in SUBSCRIBE and UNSUBSCRIBE, because MQTT 5.0 reports an invalid filter with a per-filter
//! SUBACK code 0x8F (Topic Filter Invalid) instead of closing the connection. The broker calls
//! [`validate_topic_filter`] on each filter.

/// Prefix that marks a shared subscription, `$share/<group>/<filter>`.
pub const SHARED_PREFIX: &str = "$share/";

/// Reason a topic name or topic filter is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Topic names and filters must be at least one character long [MQTT-4.7.3-1].
    #[error("topic is empty")]
    Empty,
    /// Topic names and filters must not contain U+0000 [MQTT-4.7.3-2].
    #[error("topic contains U+0000")]
    NullCharacter,
    /// Topic names and filters are UTF-8 strings of at most 65,535 bytes [MQTT-4.7.3-3].
    #[error("topic is longer than 65,535 bytes")]
    TooLong,
    /// A topic name contains `+` or `#`, which are allowed only in filters.
    #[error("topic name contains a wildcard character (+ or #)")]
    WildcardInName,
    /// `#` is not the last level or does not fill its level.
    #[error("multi-level wildcard # must be the last level and fill it")]
    InvalidMultiLevelWildcard,
    /// `+` does not fill its level.
    #[error("single-level wildcard + must fill its level")]
    InvalidSingleLevelWildcard,
    /// The share name of `$share/<group>/<filter>` is empty or contains `/`, `+` or `#`.
    #[error("shared subscription group name is empty or contains + or #")]
    InvalidShareName,
    /// `$share/<group>` is not followed by `/` and a topic filter.
    #[error("shared subscription has no topic filter after the group name")]
    MissingSharedFilter,
}

/// A shared subscription filter split into its parts, borrowing from the full filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedSubscription<'a> {
    /// Share name: subscribers with the same group take turns receiving messages.
    pub group: &'a str,
    /// Topic filter that messages are matched against.
    pub filter: &'a str,
}

fn check_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > usize::from(u16::MAX) {
        return Err(TopicError::TooLong);
    }
    if topic.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Checks a topic name as PUBLISH and will messages carry it.
///
/// A topic name is non-empty and has no wildcard characters [MQTT-4.7.0-1 in 5.0, MQTT-4.7.1-1 in
/// 3.1.1]. An empty PUBLISH topic with a 5.0 Topic Alias is handled by the decoder, not here.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter of SUBSCRIBE or UNSUBSCRIBE, shared subscriptions included.
///
/// `#` must be the last level and fill it, `+` must fill its level [MQTT-4.7.1-1, MQTT-4.7.1-2 in
/// 5.0, MQTT-4.7.1-2, MQTT-4.7.1-3 in 3.1.1]. A filter starting with `$share/` must also be a
/// valid shared subscription, see [`parse_shared_subscription`].
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    match parse_shared_subscription(filter)? {
        Some(shared) => validate_plain_filter(shared.filter),
        None => validate_plain_filter(filter),
    }
}

fn validate_plain_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !is_last) {
            return Err(TopicError::InvalidMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::InvalidSingleLevelWildcard);
        }
    }
    Ok(())
}

/// Splits a shared subscription `$share/<group>/<filter>` into group and filter.
///
/// Returns `Ok(None)` for a filter that does not start with `$share/`. The group must be at
/// least one character without `/`, `+` or `#` [MQTT-4.8.2-1], and a `/` and a filter must follow
/// it [MQTT-4.8.2-2]. The returned filter is not validated; [`validate_topic_filter`] does that.
pub fn parse_shared_subscription(
    filter: &str,
) -> Result<Option<SharedSubscription<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARED_PREFIX) else {
        return Ok(None);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        if rest.is_empty() || rest.contains(['+', '#']) {
            return Err(TopicError::InvalidShareName);
        }
        return Err(TopicError::MissingSharedFilter);
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::InvalidShareName);
    }
    if inner.is_empty() {
        return Err(TopicError::MissingSharedFilter);
    }
    Ok(Some(SharedSubscription {
        group,
        filter: inner,
    }))
}

/// Reports whether `filter` matches `topic`.
///
/// `+` matches exactly one level (possibly empty) and `#` matches its parent level and any
/// number of levels below it. Filters starting with a wildcard do not match topics starting
/// with `$` [MQTT-4.7.2-1]. Both arguments are taken as already valid; for a shared subscription
/// pass the filter part of [`parse_shared_subscription`].
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return filter_levels.next().is_none(),
            (Some("+"), Some(_)) => {}
            (Some(filter_level), Some(topic_level)) if filter_level == topic_level => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Reports whether some topic name matches both `first` and `second`.
///
/// An access rule that denies a filter uses this on a requested filter: if the two overlap, a
/// subscriber of the requested filter could receive a message the rule denies. The first-level
/// `$` rule of [`matches`] applies: a filter starting with `+` or `#` never overlaps one whose
/// first level is a literal starting with `$` [MQTT-4.7.2-1]. Both filters are taken as valid
/// plain filters, without a `$share/<group>/` prefix.
pub fn filters_overlap(first: &str, second: &str) -> bool {
    if wildcard_meets_dollar(first, second) || wildcard_meets_dollar(second, first) {
        return false;
    }
    let mut first_levels = first.split('/');
    let mut second_levels = second.split('/');
    // The common topic is built level by level: literals where a filter has one, any non-empty
    // level where both have `+`. It is invalid only if it is the single empty level "".
    let mut common_levels = 0;
    let mut first_level_is_empty = false;
    loop {
        match (first_levels.next(), second_levels.next()) {
            // `#` also matches its parent level, so `a/#` and `a` share the topic `a`. With
            // levels left on the other side, the common topic has at least two levels.
            (Some("#"), None) | (None, Some("#")) | (None, None) => {
                return !(common_levels == 1 && first_level_is_empty);
            }
            (Some("#"), Some(_)) | (Some(_), Some("#")) => return true,
            (Some(a), Some(b)) if a == "+" || b == "+" || a == b => {
                if common_levels == 0 {
                    first_level_is_empty = a.is_empty() || b.is_empty();
                }
                common_levels += 1;
            }
            _ => return false,
        }
    }
}

/// Reports whether every topic name that `inner` matches is also matched by `outer`.
///
/// An access rule that allows a filter uses this on a requested filter, so that the rule grants
/// nothing it does not name. The first-level `$` rule of [`matches`] applies: `#` covers `a/#`
/// but not `$SYS/#` [MQTT-4.7.2-1]. Both filters are taken as valid plain filters, without a
/// `$share/<group>/` prefix.
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    if wildcard_meets_dollar(outer, inner) {
        return false;
    }
    let mut outer_levels = outer.split('/').peekable();
    let mut inner_levels = inner.split('/');
    let mut common_levels = 0;
    let mut first_level_is_empty = false;
    loop {
        match (outer_levels.next(), inner_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some("#")) => {
                // The inner `#` matches its parent topic, which the outer `+` does not. That
                // parent is no topic name when it has no levels or is the empty level "",
                // because a topic name has at least one character [MQTT-4.7.3-1]. Then `+/#`
                // is left to match every topic of one or more further levels.
                let parent_is_topic =
                    common_levels >= 2 || (common_levels == 1 && !first_level_is_empty);
                return !parent_is_topic && outer_levels.peek() == Some(&"#");
            }
            (Some(a), Some(b)) if a == "+" || a == b => {
                // An inner `+` may be a non-empty level, so only a literal "" forces it.
                if common_levels == 0 {
                    first_level_is_empty = b.is_empty();
                }
                common_levels += 1;
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Reports whether `wildcard_first` starts with a wildcard and `other` starts with a literal
/// level beginning with `$`, which only a literal first level can match.
fn wildcard_meets_dollar(wildcard_first: &str, other: &str) -> bool {
    wildcard_first.starts_with(['+', '#']) && other.starts_with('$')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_name_rules() {
        assert_eq!(validate_topic_name("a/b/c"), Ok(()));
        assert_eq!(validate_topic_name("/"), Ok(()));
        assert_eq!(validate_topic_name("$SYS/broker"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(
            validate_topic_name("a/+/c"),
            Err(TopicError::WildcardInName)
        );
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a+b"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
        let long = "a".repeat(65_536);
        assert_eq!(validate_topic_name(&long), Err(TopicError::TooLong));
    }

    #[test]
    fn topic_filter_rules() {
        for valid in [
            "#", "+", "a/#", "a/+/c", "+/+", "/+", "a//b", "$SYS/#", "$share",
        ] {
            assert_eq!(validate_topic_filter(valid), Ok(()), "{valid}");
        }
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        assert_eq!(
            validate_topic_filter("a/#/b"),
            Err(TopicError::InvalidMultiLevelWildcard)
        );
        assert_eq!(
            validate_topic_filter("a#"),
            Err(TopicError::InvalidMultiLevelWildcard)
        );
        assert_eq!(
            validate_topic_filter("a/b#"),
            Err(TopicError::InvalidMultiLevelWildcard)
        );
        assert_eq!(
            validate_topic_filter("a+/b"),
            Err(TopicError::InvalidSingleLevelWildcard)
        );
        assert_eq!(
            validate_topic_filter("a/+b"),
            Err(TopicError::InvalidSingleLevelWildcard)
        );
        assert_eq!(validate_topic_filter("a\0"), Err(TopicError::NullCharacter));
    }

    #[test]
    fn shared_subscription_parsing() {
        let parsed = parse_shared_subscription("$share/workers/jobs/+");
        assert_eq!(
            parsed,
            Ok(Some(SharedSubscription {
                group: "workers",
                filter: "jobs/+"
            }))
        );
        assert_eq!(parse_shared_subscription("jobs/+"), Ok(None));
        assert_eq!(parse_shared_subscription("$sharex/g/a"), Ok(None));
        assert_eq!(
            parse_shared_subscription("$share//a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            parse_shared_subscription("$share/g+/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            parse_shared_subscription("$share/#/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            parse_shared_subscription("$share/g"),
            Err(TopicError::MissingSharedFilter)
        );
        assert_eq!(
            parse_shared_subscription("$share/g/"),
            Err(TopicError::MissingSharedFilter)
        );
        assert_eq!(
            parse_shared_subscription("$share/"),
            Err(TopicError::InvalidShareName)
        );
    }

    #[test]
    fn shared_filter_validation() {
        assert_eq!(validate_topic_filter("$share/g/a/#"), Ok(()));
        assert_eq!(validate_topic_filter("$share/g/#"), Ok(()));
        assert_eq!(
            validate_topic_filter("$share/g/a/#/b"),
            Err(TopicError::InvalidMultiLevelWildcard)
        );
        assert_eq!(
            validate_topic_filter("$share/g"),
            Err(TopicError::MissingSharedFilter)
        );
    }

    #[test]
    fn matching_table() {
        let cases = [
            ("a/b/c", "a/b/c", true),
            ("a/b/c", "a/b", false),
            ("a/b", "a/b/c", false),
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a//c", true),
            ("a/+", "a/b/c", false),
            ("+/+", "/x", true),
            ("+", "/x", false),
            ("#", "a/b/c", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("a/b/#", "a/b", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/+", "$SYS/x", true),
            ("a/b", "A/b", false),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(
                matches(filter, topic),
                expected,
                "filter {filter} topic {topic}"
            );
        }
    }

    #[test]
    fn overlap_table() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "+/b", true),
            ("a/+", "a", false),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "b/#", false),
            ("#", "a/b", true),
            ("#", "/", true),
            ("+", "/", false),
            ("+/+", "/", true),
            ("a//b", "a/+/b", true),
            ("a/b/#", "a/+", true),
            ("a/b/#", "a/c/+", false),
            ("test/nosubscribe", "test/#", true),
            ("test/nosubscribe", "test/+", true),
            ("test/nosubscribe", "+/+", true),
            ("test/nosubscribe", "#", true),
            ("test/nosubscribe", "test/nosubscribe/x", false),
            ("test/nosubscribe", "test", false),
            // `/#` matches its parent "", which is no topic name, so it shares none with `+`.
            ("/#", "+", false),
            ("/#", "/", true),
            ("+/#", "+", true),
        ];
        for (first, second, expected) in cases {
            assert_eq!(
                filters_overlap(first, second),
                expected,
                "{first} and {second}"
            );
            assert_eq!(
                filters_overlap(second, first),
                expected,
                "{second} and {first}"
            );
        }
    }

    #[test]
    fn overlap_respects_dollar_topics() {
        let cases = [
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("+/#", "$SYS", false),
            ("#", "$SYS/#", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/+", "$SYS/#", true),
            ("a/#", "a/$x", true),
            ("+/+", "a/$x", true),
            ("$a", "$b", false),
        ];
        for (first, second, expected) in cases {
            assert_eq!(
                filters_overlap(first, second),
                expected,
                "{first} and {second}"
            );
            assert_eq!(
                filters_overlap(second, first),
                expected,
                "{second} and {first}"
            );
        }
    }

    #[test]
    fn cover_table() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/+", false),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/#", false),
            ("a/+", "a", false),
            ("a/#", "a", true),
            ("a/#", "a/#", true),
            ("a/#", "a/b/+/#", true),
            ("a/#", "+/b", false),
            ("a/b/#", "a/#", false),
            ("#", "#", true),
            ("#", "+/+/#", true),
            ("#", "/", true),
            ("+", "/", false),
            ("+/+", "/", true),
            ("+/+", "+/#", false),
            ("+/#", "#", true),
            ("+/+/#", "#", false),
            ("/+/#", "/#", true),
            ("+/+/#", "/#", true),
            ("/+", "/#", false),
            ("a/+/#", "a/#", false),
            ("a", "a/b", false),
        ];
        for (outer, inner, expected) in cases {
            assert_eq!(
                filter_covers(outer, inner),
                expected,
                "{outer} covering {inner}"
            );
        }
    }

    #[test]
    fn cover_respects_dollar_topics() {
        let cases = [
            ("#", "$SYS/x", false),
            ("#", "$SYS/#", false),
            ("+/#", "$SYS/x", false),
            ("+", "$SYS", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/#", "#", false),
            ("$SYS/+", "+/x", false),
            ("a/+", "a/$x", true),
            ("#", "a/$x", true),
        ];
        for (outer, inner, expected) in cases {
            assert_eq!(
                filter_covers(outer, inner),
                expected,
                "{outer} covering {inner}"
            );
        }
    }

    mod brute_force {
        use proptest::prelude::*;

        use super::super::{filter_covers, filters_overlap, matches};

        /// Topic levels of the small alphabet: two literals, a `$` literal and the empty level.
        const LEVELS: [&str; 4] = ["a", "b", "$s", ""];

        /// Every topic name of one to four levels over [`LEVELS`]. Filters below have at most
        /// three levels before an optional `#`, so a topic that distinguishes two of them has
        /// at most four.
        fn all_topics() -> Vec<String> {
            let mut topics: Vec<String> = LEVELS.iter().map(|level| level.to_string()).collect();
            let mut last = topics.clone();
            for _ in 1..4 {
                let longer: Vec<String> = last
                    .iter()
                    .flat_map(|prefix| LEVELS.iter().map(move |level| format!("{prefix}/{level}")))
                    .collect();
                topics.extend(longer.iter().cloned());
                last = longer;
            }
            // A topic name has at least one character [MQTT-4.7.3-1].
            topics.retain(|topic| !topic.is_empty());
            topics
        }

        fn filter() -> impl Strategy<Value = String> {
            let level = prop::sample::select(vec!["a", "b", "$s", "", "+"]);
            let filter =
                (prop::collection::vec(level, 1..=3), any::<bool>()).prop_map(|(levels, hash)| {
                    let mut filter = levels.join("/");
                    if hash {
                        filter.push_str("/#");
                    }
                    filter
                });
            // A topic filter has at least one character [MQTT-4.7.3-1].
            filter.prop_filter("empty filter", |filter| !filter.is_empty())
        }

        fn filter_or_hash() -> impl Strategy<Value = String> {
            prop_oneof![Just("#".to_owned()), filter()]
        }

        proptest! {
            // About 97,000 filter pairs exist over this alphabet, so sample a good share.
            #![proptest_config(ProptestConfig::with_cases(4096))]

            #[test]
            fn overlap_matches_brute_force(first in filter_or_hash(), second in filter_or_hash()) {
                let expected = all_topics()
                    .iter()
                    .any(|topic| matches(&first, topic) && matches(&second, topic));
                prop_assert_eq!(filters_overlap(&first, &second), expected);
            }

            #[test]
            fn cover_matches_brute_force(outer in filter_or_hash(), inner in filter_or_hash()) {
                let expected = all_topics()
                    .iter()
                    .all(|topic| !matches(&inner, topic) || matches(&outer, topic));
                prop_assert_eq!(filter_covers(&outer, &inner), expected);
            }
        }
    }
}
