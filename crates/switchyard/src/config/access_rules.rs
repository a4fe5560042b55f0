//! The `access_rules` of an instance: the operator's ordered topic ALLOW and DENY rules, with
//! the names of the cloud product's custom-auth permissions (`Effect`, `PermitAction`, `Topic`).

use serde::{Deserialize, Serialize};
use switchyard_auth::{
    AccessRule, AccessRuleError, DenyReason, PermitAction, RuleEffect, SubscribeMatch,
};

/// One `[[instances.access_rules]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRuleConfig {
    /// `"ALLOW"` or `"DENY"`.
    pub effect: EffectName,
    /// `"PUB"`, `"SUB"` or `"PUB_SUB"`.
    pub permit_action: PermitActionName,
    /// A topic filter; `+`, `#`, `%c` (client id) and `%u` (username) allowed.
    pub topic: String,
    /// Client id pattern the rule is limited to, `*` standing for any run of characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Username pattern the rule is limited to, `*` standing for any run of characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// For a DENY rule, the MQTT 5.0 reason code of the refusal: `"not_authorized"` (0x87,
    /// the default) or `"unspecified_error"` (0x80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<ReasonCodeName>,
    /// For a DENY rule, which requested SUBSCRIBE filters it refuses: `"overlap"` (every filter
    /// that could receive one of its topics, the default) or `"cover"` (only the filters its
    /// own filter covers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe_match: Option<SubscribeMatchName>,
}

/// The `effect` of an access rule.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum EffectName {
    Allow,
    Deny,
}

/// The `permit_action` of an access rule.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PermitActionName {
    Pub,
    Sub,
    PubSub,
}

/// The `reason_code` of a DENY rule.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCodeName {
    NotAuthorized,
    UnspecifiedError,
}

/// The `subscribe_match` of a DENY rule.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubscribeMatchName {
    Overlap,
    Cover,
}

impl AccessRuleConfig {
    /// Builds the rule, or returns the error that names its invalid value.
    pub fn to_rule(&self) -> Result<AccessRule, AccessRuleError> {
        let effect = match self.effect {
            EffectName::Allow => RuleEffect::Allow,
            EffectName::Deny => RuleEffect::Deny,
        };
        let action = match self.permit_action {
            PermitActionName::Pub => PermitAction::Publish,
            PermitActionName::Sub => PermitAction::Subscribe,
            PermitActionName::PubSub => PermitAction::PublishSubscribe,
        };
        let mut rule = AccessRule::new(effect, action, &self.topic)?;
        if let Some(pattern) = &self.client_id {
            rule = rule.with_client_id(pattern)?;
        }
        if let Some(pattern) = &self.username {
            rule = rule.with_username(pattern)?;
        }
        if let Some(reason) = self.reason_code {
            let reason = match reason {
                ReasonCodeName::NotAuthorized => DenyReason::NotAuthorized,
                ReasonCodeName::UnspecifiedError => DenyReason::UnspecifiedError,
            };
            rule = rule.with_deny_reason(reason)?;
        }
        if let Some(subscribe_match) = self.subscribe_match {
            let subscribe_match = match subscribe_match {
                SubscribeMatchName::Overlap => SubscribeMatch::Overlap,
                SubscribeMatchName::Cover => SubscribeMatch::Cover,
            };
            rule = rule.with_subscribe_match(subscribe_match)?;
        }
        Ok(rule)
    }
}
