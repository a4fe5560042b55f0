use super::*;

const PUB: TopicAccess = TopicAccess::Publish;
const SUB: TopicAccess = TopicAccess::Subscribe;

fn rule(effect: RuleEffect, action: PermitAction, topic: &str) -> AccessRule {
    AccessRule::new(effect, action, topic).unwrap()
}

fn subject<'a>(client_id: &'a str, username: Option<&'a str>) -> RuleSubject<'a> {
    RuleSubject {
        client_id,
        username,
    }
}

fn decide(rules: &[AccessRule], access: TopicAccess, topic: &str) -> Option<RuleDecision> {
    evaluate_rules(rules, subject("dev1", Some("alice")), access, topic)
}

const DENIED: Option<RuleDecision> = Some(RuleDecision::Deny {
    rule: 0,
    reason: DenyReason::NotAuthorized,
});

#[test]
fn deny_subscribe_refuses_overlapping_filters() {
    let rules = [rule(
        RuleEffect::Deny,
        PermitAction::Subscribe,
        "test/nosubscribe",
    )];
    for filter in [
        "test/nosubscribe",
        "test/#",
        "test/+",
        "+/nosubscribe",
        "#",
        "+/+",
    ] {
        assert_eq!(decide(&rules, SUB, filter), DENIED, "{filter}");
    }
    for filter in ["test/other", "test", "test/nosubscribe/x", "+", "$SYS/#"] {
        assert_eq!(decide(&rules, SUB, filter), None, "{filter}");
    }
}

#[test]
fn cover_match_refuses_only_covered_filters() {
    let rules = [
        rule(
            RuleEffect::Deny,
            PermitAction::Subscribe,
            "test/nosubscribe",
        )
        .with_subscribe_match(SubscribeMatch::Cover)
        .unwrap(),
        rule(RuleEffect::Deny, PermitAction::Subscribe, "private/#")
            .with_subscribe_match(SubscribeMatch::Cover)
            .unwrap(),
    ];
    assert_eq!(decide(&rules, SUB, "test/nosubscribe"), DENIED);
    for filter in ["private/#", "private/a/+", "private"] {
        assert!(
            matches!(
                decide(&rules, SUB, filter),
                Some(RuleDecision::Deny { rule: 1, .. })
            ),
            "{filter}"
        );
    }
    // Wider filters are left to later rules and the other checks.
    for filter in ["test/+", "+/+", "#", "+/a"] {
        assert_eq!(decide(&rules, SUB, filter), None, "{filter}");
    }

    let allow = rule(RuleEffect::Allow, PermitAction::Subscribe, "a");
    assert_eq!(
        allow.with_subscribe_match(SubscribeMatch::Cover),
        Err(AccessRuleError::SubscribeMatchOnAllow)
    );
}

#[test]
fn deny_subscribe_leaves_publish_alone() {
    let rules = [rule(
        RuleEffect::Deny,
        PermitAction::Subscribe,
        "test/nosubscribe",
    )];
    assert_eq!(decide(&rules, PUB, "test/nosubscribe"), None);
}

#[test]
fn allow_subscribe_needs_covering_filter() {
    let rules = [rule(
        RuleEffect::Allow,
        PermitAction::Subscribe,
        "sensors/+/temp",
    )];
    for filter in ["sensors/+/temp", "sensors/room1/temp"] {
        assert_eq!(
            decide(&rules, SUB, filter),
            Some(RuleDecision::Allow),
            "{filter}"
        );
    }
    // These read more than the rule allows, so the rule leaves them to the other checks.
    for filter in ["sensors/#", "sensors/+/+", "#", "+/+/temp"] {
        assert_eq!(decide(&rules, SUB, filter), None, "{filter}");
    }
}

#[test]
fn publish_rules_match_topic_names() {
    let rules = [
        rule(RuleEffect::Allow, PermitAction::Publish, "sensors/room1/#"),
        rule(
            RuleEffect::Deny,
            PermitAction::PublishSubscribe,
            "sensors/#",
        ),
    ];
    assert_eq!(
        decide(&rules, PUB, "sensors/room1/temp"),
        Some(RuleDecision::Allow)
    );
    assert_eq!(
        decide(&rules, PUB, "sensors/room2/temp"),
        Some(RuleDecision::Deny {
            rule: 1,
            reason: DenyReason::NotAuthorized
        })
    );
    assert_eq!(decide(&rules, PUB, "alerts/x"), None);
}

#[test]
fn first_applying_rule_decides() {
    let rules = [
        rule(RuleEffect::Deny, PermitAction::Subscribe, "sensors/secret"),
        rule(RuleEffect::Allow, PermitAction::Subscribe, "sensors/#"),
    ];
    assert_eq!(
        decide(&rules, SUB, "sensors/public"),
        Some(RuleDecision::Allow)
    );
    // `sensors/#` could receive sensors/secret, so the DENY rule comes first.
    assert_eq!(decide(&rules, SUB, "sensors/#"), DENIED);

    let reversed = [rules[1].clone(), rules[0].clone()];
    assert_eq!(
        decide(&reversed, SUB, "sensors/secret"),
        Some(RuleDecision::Allow)
    );
}

#[test]
fn wildcards_never_reach_dollar_topics() {
    let deny_all = [rule(RuleEffect::Deny, PermitAction::PublishSubscribe, "#")];
    assert_eq!(decide(&deny_all, SUB, "$SYS/#"), None);
    assert_eq!(decide(&deny_all, PUB, "$SYS/x"), None);

    let allow_all = [rule(RuleEffect::Allow, PermitAction::PublishSubscribe, "#")];
    assert_eq!(decide(&allow_all, SUB, "$SYS/x"), None);
    assert_eq!(decide(&allow_all, SUB, "a/#"), Some(RuleDecision::Allow));
}

#[test]
fn shared_subscription_is_evaluated_by_its_filter() {
    let rules = [rule(
        RuleEffect::Deny,
        PermitAction::Subscribe,
        "test/nosubscribe",
    )];
    assert_eq!(decide(&rules, SUB, "$share/g/test/#"), DENIED);
    assert_eq!(decide(&rules, SUB, "$share/g/other/#"), None);
}

#[test]
fn deny_reason_is_kept() {
    let rules = [rule(RuleEffect::Deny, PermitAction::Subscribe, "a")
        .with_deny_reason(DenyReason::UnspecifiedError)
        .unwrap()];
    assert_eq!(
        decide(&rules, SUB, "a"),
        Some(RuleDecision::Deny {
            rule: 0,
            reason: DenyReason::UnspecifiedError
        })
    );
    assert_eq!(DenyReason::UnspecifiedError.reason_code(), 0x80);
    assert_eq!(DenyReason::NotAuthorized.reason_code(), 0x87);
}

#[test]
fn client_selectors_limit_a_rule() {
    let rules = [rule(RuleEffect::Deny, PermitAction::Publish, "cmd/#")
        .with_client_id("GID_ops@@@*")
        .unwrap()
        .with_username("Signature|*")
        .unwrap()];
    let ops = subject("GID_ops@@@dev1", Some("Signature|LTAI1|mqtt-cn-x"));
    assert!(evaluate_rules(&rules, ops, PUB, "cmd/reboot").is_some());

    let other_group = subject("GID_web@@@dev1", Some("Signature|LTAI1|mqtt-cn-x"));
    assert_eq!(evaluate_rules(&rules, other_group, PUB, "cmd/reboot"), None);

    let anonymous = subject("GID_ops@@@dev1", None);
    assert_eq!(evaluate_rules(&rules, anonymous, PUB, "cmd/reboot"), None);
}

#[test]
fn name_patterns_match_with_stars() {
    let cases = [
        ("dev1", "dev1", true),
        ("dev1", "dev10", false),
        ("dev*", "dev", true),
        ("dev*", "dev10", true),
        ("*", "", true),
        ("*1", "dev1", true),
        ("*1", "dev12", false),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "abcb", false),
        ("a*b*c", "abbbc", true),
        ("**", "x", true),
        ("é*", "éa", true),
    ];
    for (pattern, name, expected) in cases {
        let pattern = NamePattern::new("client_id", pattern).unwrap();
        assert_eq!(pattern.matches(name), expected, "{pattern:?} {name}");
    }
}

#[test]
fn placeholders_are_filled_in() {
    let rules = [
        rule(
            RuleEffect::Allow,
            PermitAction::PublishSubscribe,
            "devices/%c/#",
        ),
        rule(RuleEffect::Allow, PermitAction::Subscribe, "users/%u/inbox"),
        rule(
            RuleEffect::Deny,
            PermitAction::PublishSubscribe,
            "devices/#",
        ),
    ];
    let dev1 = subject("dev1", Some("alice"));
    assert_eq!(
        evaluate_rules(&rules, dev1, PUB, "devices/dev1/state"),
        Some(RuleDecision::Allow)
    );
    assert_eq!(
        evaluate_rules(&rules, dev1, SUB, "devices/dev1/#"),
        Some(RuleDecision::Allow)
    );
    assert!(matches!(
        evaluate_rules(&rules, dev1, SUB, "devices/dev2/#"),
        Some(RuleDecision::Deny { rule: 2, .. })
    ));
    assert_eq!(
        evaluate_rules(&rules, dev1, SUB, "users/alice/inbox"),
        Some(RuleDecision::Allow)
    );
    assert_eq!(evaluate_rules(&rules, dev1, SUB, "users/bob/inbox"), None);

    // A client without a username gets nothing from %u rules.
    let anonymous = subject("dev1", None);
    assert_eq!(
        evaluate_rules(&rules, anonymous, SUB, "users/alice/inbox"),
        None
    );
}

#[test]
fn placeholder_in_value_stays_literal() {
    let rules = [rule(RuleEffect::Allow, PermitAction::Publish, "a/%c/%u")];
    let tricky = subject("%u", Some("bob"));
    assert_eq!(
        evaluate_rules(&rules, tricky, PUB, "a/%u/bob"),
        Some(RuleDecision::Allow)
    );
    assert_eq!(evaluate_rules(&rules, tricky, PUB, "a/bob/bob"), None);
}

#[test]
fn wildcard_values_never_widen_access() {
    let allow = [rule(
        RuleEffect::Allow,
        PermitAction::PublishSubscribe,
        "devices/%c/#",
    )];
    for client_id in ["+", "#", "a/b", "x+y"] {
        let client = subject(client_id, None);
        for filter in ["devices/+/#", "devices/#", "devices/a/b/#"] {
            assert_eq!(
                evaluate_rules(&allow, client, SUB, filter),
                None,
                "{client_id} {filter}"
            );
        }
        assert_eq!(
            evaluate_rules(&allow, client, PUB, "devices/a/b/x"),
            None,
            "{client_id}"
        );
    }

    // A DENY rule whose value is unsafe denies every topic, so it never lets more through.
    let deny = [rule(
        RuleEffect::Deny,
        PermitAction::PublishSubscribe,
        "devices/%u/#",
    )];
    for username in ["+", "#", "a/b"] {
        let client = subject("dev1", Some(username));
        for (access, topic) in [(SUB, "devices/a/b/#"), (SUB, "other"), (PUB, "devices/x")] {
            assert!(
                matches!(
                    evaluate_rules(&deny, client, access, topic),
                    Some(RuleDecision::Deny { .. })
                ),
                "{username} {topic}"
            );
        }
    }
}

#[test]
fn invalid_rules_are_named() {
    let error = |topic: &str| {
        AccessRule::new(RuleEffect::Deny, PermitAction::Subscribe, topic)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        error("a/#/b"),
        "topic \"a/#/b\" is not a valid topic filter: multi-level wildcard # must be the last \
         level and fill it"
    );
    assert_eq!(
        error("a/+%c"),
        "topic \"a/+%c\" is not a valid topic filter: single-level wildcard + must fill its level"
    );
    assert_eq!(
        error(""),
        "topic \"\" is not a valid topic filter: topic is empty"
    );
    assert!(error("a/%x").contains("unknown placeholder at byte 2"));
    assert!(error("a/%").contains("unknown placeholder at byte 2"));
    assert!(error("$share/g/a").contains("is a shared subscription"));

    let allow = rule(RuleEffect::Allow, PermitAction::Subscribe, "a");
    assert_eq!(
        allow.with_deny_reason(DenyReason::UnspecifiedError),
        Err(AccessRuleError::ReasonOnAllow)
    );
    let deny = rule(RuleEffect::Deny, PermitAction::Subscribe, "a");
    assert_eq!(
        deny.with_client_id("").unwrap_err().to_string(),
        "client selector client_id is empty; remove it to match every client, or use \"*\""
    );
}

#[test]
fn display_shows_the_rule() {
    let rule = rule(RuleEffect::Deny, PermitAction::PublishSubscribe, "a/%c");
    assert_eq!(rule.to_string(), "DENY PUB_SUB \"a/%c\"");
}
