//! The PUBLISH and SUBSCRIBE check: access rules, then registered parent topics.

use crate::access_rule::{RuleDecision, RuleSubject, evaluate_rules};
use crate::error::{AuthError, AuthErrorKind, quote};
use crate::policy::{Identity, InstanceAuthPolicy, TopicAccess};

/// The prefix of an MQTT 5.0 shared subscription, `$share/<ShareName>/<filter>`.
const SHARED_SUBSCRIPTION_PREFIX: &str = "$share/";

impl InstanceAuthPolicy {
    /// Checks whether `identity` may publish to a topic name or subscribe to a topic filter.
    ///
    /// The access rules come first, and the first one that applies decides (see
    /// [`crate::access_rule`]): an ALLOW rule skips the checks below and a DENY rule rejects
    /// with kind [`AuthErrorKind::TopicDeniedByRule`]. When no rule applies:
    ///
    /// When registered parent topics are required, the first level of the topic or filter must
    /// be one of them. A filter whose first level is `+` or `#` is rejected, because it would
    /// match topics outside the registered ones. Topics starting with `$`, `$SYS/...` included,
    /// are rejected because they are not parent topics, and this server offers no system topics
    /// yet. For a subscription the filter inside `$share/<ShareName>/<filter>` is checked.
    /// Point-to-point topics `<parent>/p2p/<clientId>` are ordinary topics under their parent.
    ///
    /// When registered parent topics are not required, every topic passes. The broker still
    /// validates topic names, filters and wildcards by the MQTT rules.
    ///
    /// These rejections have the kind [`AuthErrorKind::TopicNotAllowed`] (reason code 0x87).
    pub fn check_topic(
        &self,
        identity: &Identity,
        topic_or_filter: &str,
        access: TopicAccess,
    ) -> Result<(), AuthError> {
        let subject = RuleSubject {
            client_id: &identity.client_id,
            username: identity.username.as_deref(),
        };
        match evaluate_rules(&self.access_rules, subject, access, topic_or_filter) {
            Some(RuleDecision::Allow) => return Ok(()),
            Some(RuleDecision::Deny { rule, reason }) => {
                let rule_text = self.access_rules.get(rule).map(ToString::to_string);
                return Err(AuthError::new(
                    AuthErrorKind::TopicDeniedByRule(reason),
                    format!(
                        "client {} may not {} {} on instance {} because access rule {} ({}) \
                         denies it",
                        quote(&identity.client_id),
                        access.verb(),
                        quote(topic_or_filter),
                        self.instance_id,
                        rule + 1,
                        rule_text.unwrap_or_default(),
                    ),
                ));
            }
            None => {}
        }
        if !self.require_registered_parent_topics {
            return Ok(());
        }

        let reject = |reason: String| {
            AuthError::new(
                AuthErrorKind::TopicNotAllowed,
                format!(
                    "client {} may not {} {} on instance {} because {reason}",
                    quote(&identity.client_id),
                    access.verb(),
                    quote(topic_or_filter),
                    self.instance_id,
                ),
            )
        };

        let mut topic = topic_or_filter;
        if access == TopicAccess::Subscribe
            && let Some(shared) = topic_or_filter.strip_prefix(SHARED_SUBSCRIPTION_PREFIX)
        {
            let Some((_share_name, filter)) = shared.split_once('/') else {
                return Err(reject(
                    "the shared subscription has no topic filter after the share name".to_owned(),
                ));
            };
            topic = filter;
        }

        if topic.starts_with("$SYS/") || topic == "$SYS" {
            return Err(reject(
                "$SYS topics are system topics, not parent topics, and this server offers no \
                 system topics yet"
                    .to_owned(),
            ));
        }
        if topic.starts_with('$') {
            return Err(reject(
                "topics starting with '$' are reserved for the server and are not parent topics"
                    .to_owned(),
            ));
        }

        let parent = topic.split('/').next().unwrap_or(topic);
        if parent == "+" || parent == "#" {
            return Err(reject(format!(
                "a filter whose first level is {parent:?} would match topics outside the \
                 registered parent topics, so subscribe under a parent topic such as <parent>/#"
            )));
        }
        if !self.parent_topics.contains(parent) {
            return Err(reject(format!(
                "parent topic {} is not registered on the instance, so register it \
                 (parent_topics in the instance's configuration) or use a registered one",
                quote(parent)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ANONYMOUS_PRINCIPAL;

    fn policy() -> InstanceAuthPolicy {
        let mut policy = InstanceAuthPolicy::new("mqtt-cn-hz01");
        policy.parent_topics.insert("sensors".to_owned());
        policy.parent_topics.insert("alerts".to_owned());
        policy
    }

    fn identity() -> Identity {
        Identity {
            principal: "Signature|LTAIexample".to_owned(),
            client_id: "GID_demo@@@dev1".to_owned(),
            username: None,
            mode: None,
        }
    }

    fn rejection(policy: &InstanceAuthPolicy, topic: &str, access: TopicAccess) -> AuthError {
        let error = policy.check_topic(&identity(), topic, access).unwrap_err();
        assert_eq!(error.kind, AuthErrorKind::TopicNotAllowed, "{topic}");
        assert_eq!(error.reason_code(), 0x87, "{topic}");
        error
    }

    #[test]
    fn check_topic_accepts_registered_parents() {
        let policy = policy();
        for topic in ["sensors", "sensors/room1/temp", "alerts/x", "sensors/"] {
            assert_eq!(
                policy.check_topic(&identity(), topic, TopicAccess::Publish),
                Ok(()),
                "{topic}"
            );
        }
        for filter in ["sensors/#", "sensors/+/temp", "alerts", "sensors/room1/#"] {
            assert_eq!(
                policy.check_topic(&identity(), filter, TopicAccess::Subscribe),
                Ok(()),
                "{filter}"
            );
        }
    }

    #[test]
    fn check_topic_accepts_p2p_topics() {
        let policy = policy();
        let topic = "sensors/p2p/GID_demo@@@dev2";
        assert_eq!(
            policy.check_topic(&identity(), topic, TopicAccess::Publish),
            Ok(())
        );
        let topic = "sensors/p2p/GID_demo@@@dev1";
        assert_eq!(
            policy.check_topic(&identity(), topic, TopicAccess::Subscribe),
            Ok(())
        );
        let error = rejection(&policy, "other/p2p/GID_demo@@@dev2", TopicAccess::Publish);
        assert!(
            error.detail.contains("\"other\" is not registered"),
            "{}",
            error.detail
        );
    }

    #[test]
    fn check_topic_rejects_unregistered_parent() {
        let policy = policy();
        let error = rejection(&policy, "metrics/cpu", TopicAccess::Publish);
        assert!(
            error.detail.contains("parent topic \"metrics\""),
            "{}",
            error.detail
        );
        assert!(error.detail.contains("not registered"), "{}", error.detail);
        assert!(error.detail.contains("mqtt-cn-hz01"), "{}", error.detail);
        assert!(error.detail.contains("GID_demo@@@dev1"), "{}", error.detail);
        assert!(
            error.detail.contains("may not publish to"),
            "{}",
            error.detail
        );

        // Parent topics are case-sensitive, and a leading '/' makes an empty first level.
        rejection(&policy, "Sensors/x", TopicAccess::Publish);
        rejection(&policy, "/sensors/x", TopicAccess::Publish);
        rejection(&policy, "", TopicAccess::Publish);

        let error = rejection(&policy, "metrics/#", TopicAccess::Subscribe);
        assert!(
            error.detail.contains("may not subscribe to"),
            "{}",
            error.detail
        );
    }

    #[test]
    fn check_topic_rejects_leading_wildcards() {
        let policy = policy();
        for filter in ["#", "+", "+/temp", "+/#"] {
            let error = rejection(&policy, filter, TopicAccess::Subscribe);
            assert!(
                error.detail.contains("would match topics outside"),
                "{filter}: {}",
                error.detail
            );
        }
    }

    #[test]
    fn check_topic_rejects_system_topics() {
        let policy = policy();
        for (topic, access) in [
            ("$SYS/uploadToken", TopicAccess::Publish),
            ("$SYS/tokenExpireNotice", TopicAccess::Subscribe),
            ("$SYS", TopicAccess::Subscribe),
            ("$SYS/#", TopicAccess::Subscribe),
        ] {
            let error = rejection(&policy, topic, access);
            assert!(
                error
                    .detail
                    .contains("$SYS topics are system topics, not parent topics"),
                "{topic}: {}",
                error.detail
            );
        }

        let error = rejection(&policy, "$other/x", TopicAccess::Publish);
        assert!(
            error.detail.contains("reserved for the server"),
            "{}",
            error.detail
        );
    }

    #[test]
    fn check_topic_checks_shared_subscription_filter() {
        let policy = policy();
        assert_eq!(
            policy.check_topic(
                &identity(),
                "$share/workers/sensors/#",
                TopicAccess::Subscribe
            ),
            Ok(())
        );

        let error = rejection(&policy, "$share/workers/metrics/#", TopicAccess::Subscribe);
        assert!(error.detail.contains("\"metrics\""), "{}", error.detail);

        let error = rejection(&policy, "$share/workers/#", TopicAccess::Subscribe);
        assert!(
            error.detail.contains("would match topics outside"),
            "{}",
            error.detail
        );

        let error = rejection(&policy, "$share/workers", TopicAccess::Subscribe);
        assert!(error.detail.contains("no topic filter"), "{}", error.detail);

        // Publishing to a $share topic is publishing to a '$' topic.
        let error = rejection(&policy, "$share/workers/sensors/x", TopicAccess::Publish);
        assert!(
            error.detail.contains("reserved for the server"),
            "{}",
            error.detail
        );
    }

    #[test]
    fn check_topic_allows_everything_when_not_required() {
        let mut policy = policy();
        policy.require_registered_parent_topics = false;
        let anonymous = Identity {
            principal: ANONYMOUS_PRINCIPAL.to_owned(),
            client_id: "plain".to_owned(),
            username: None,
            mode: None,
        };
        for topic in ["metrics/cpu", "#", "+/x", "$SYS/uploadToken", "sensors/x"] {
            assert_eq!(
                policy.check_topic(&anonymous, topic, TopicAccess::Subscribe),
                Ok(()),
                "{topic}"
            );
            assert_eq!(
                policy.check_topic(&anonymous, topic, TopicAccess::Publish),
                Ok(()),
                "{topic}"
            );
        }
    }

    #[test]
    fn check_topic_evaluates_access_rules_first() {
        use crate::access_rule::{AccessRule, DenyReason, PermitAction, RuleEffect};

        let mut policy = policy();
        policy.access_rules = vec![
            AccessRule::new(RuleEffect::Deny, PermitAction::Subscribe, "sensors/secret")
                .unwrap()
                .with_deny_reason(DenyReason::UnspecifiedError)
                .unwrap(),
            AccessRule::new(
                RuleEffect::Allow,
                PermitAction::PublishSubscribe,
                "metrics/#",
            )
            .unwrap(),
        ];

        let error = policy
            .check_topic(&identity(), "sensors/#", TopicAccess::Subscribe)
            .unwrap_err();
        assert_eq!(
            error.kind,
            AuthErrorKind::TopicDeniedByRule(DenyReason::UnspecifiedError)
        );
        assert_eq!(error.reason_code(), 0x80);
        assert_eq!(
            error.detail,
            "client \"GID_demo@@@dev1\" may not subscribe to \"sensors/#\" on instance \
             mqtt-cn-hz01 because access rule 1 (DENY SUB \"sensors/secret\") denies it"
        );

        // The ALLOW rule grants an unregistered parent topic; without a rule it is rejected.
        for access in [TopicAccess::Publish, TopicAccess::Subscribe] {
            assert_eq!(
                policy.check_topic(&identity(), "metrics/cpu", access),
                Ok(())
            );
        }
        rejection(&policy, "other/x", TopicAccess::Publish);
        assert_eq!(
            policy.check_topic(&identity(), "sensors/x", TopicAccess::Subscribe),
            Ok(())
        );
    }
}
