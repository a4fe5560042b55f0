//! RAM policy evaluation for RAM users, and the `AccessDeniedDetail` of a denial.
//!
//! Root AccessKeys may call every action. A RAM user may call an action on a set of resources
//! when, for every resource, some `Allow` statement matches the action and the resource, and no
//! `Deny` statement matches them. An explicit `Deny` on any resource wins over a missing `Allow`
//! on another, and is reported first.
//!
//! The resource of an OnsMqtt instance is `acs:mq:<region>:<account id>:<instance id>`. When the
//! backend does not report an instance's region, the region segment of every policy resource
//! matches, so `acs:mq:cn-hangzhou:*:mqtt-x` then also covers `mqtt-x` in other regions.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;

use crate::account::{Caller, Effect, Principal, Statement};

/// One OnsMqtt instance that an action touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InstanceResource {
    pub(crate) instance_id: String,
    /// Region reported by the backend, or `None` when it is not known.
    pub(crate) region: Option<String>,
}

impl InstanceResource {
    /// Returns the resource name matched against `pattern`, taking the region from `pattern`
    /// itself when the region is unknown.
    fn name_for_pattern(&self, account_id: &str, pattern: &str) -> String {
        let region = match &self.region {
            Some(region) => region.as_str(),
            None => pattern.split(':').nth(2).unwrap_or("*"),
        };
        format!("acs:mq:{region}:{account_id}:{}", self.instance_id)
    }

    /// Returns the resource name for messages, with `*` for an unknown region.
    fn display_name(&self, account_id: &str) -> String {
        let region = self.region.as_deref().unwrap_or("*");
        format!("acs:mq:{region}:{account_id}:{}", self.instance_id)
    }
}

/// Whether a denial came from a missing `Allow` or from a matching `Deny`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoPermissionType {
    ImplicitDeny,
    ExplicitDeny,
}

impl NoPermissionType {
    fn as_str(self) -> &'static str {
        match self {
            NoPermissionType::ImplicitDeny => "ImplicitDeny",
            NoPermissionType::ExplicitDeny => "ExplicitDeny",
        }
    }
}

/// A RAM denial of one action on one resource by one RAM user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Denial {
    pub(crate) action: String,
    pub(crate) resource: String,
    pub(crate) user_name: String,
    pub(crate) account_id: String,
    pub(crate) kind: NoPermissionType,
}

impl Denial {
    pub(crate) fn message(&self) -> String {
        match self.kind {
            NoPermissionType::ImplicitDeny => format!(
                "RAM user {} is not authorized to perform {} on resource {}: no RAM policy \
                 allows it. Ask the account owner to attach a RAM policy that allows {} on \
                 this resource.",
                self.user_name, self.action, self.resource, self.action
            ),
            NoPermissionType::ExplicitDeny => format!(
                "RAM user {} is not authorized to perform {} on resource {}: a RAM policy \
                 statement denies it. The RAM policy must allow {} on this resource and no \
                 Deny statement may match it; remove or narrow the Deny statement.",
                self.user_name, self.action, self.resource, self.action
            ),
        }
    }

    pub(crate) fn detail(&self) -> AccessDeniedDetail {
        let diagnostic = format!(
            "action={};resource={};principal={};type={}",
            self.action,
            self.resource,
            self.user_name,
            self.kind.as_str()
        );
        AccessDeniedDetail {
            auth_action: self.action.clone(),
            auth_principal_type: "SubUser".to_owned(),
            auth_principal_display_name: self.user_name.clone(),
            auth_principal_owner_id: self.account_id.clone(),
            no_permission_type: self.kind.as_str().to_owned(),
            policy_type: "AccountLevelIdentityBasedPolicy".to_owned(),
            encoded_diagnostic_message: BASE64.encode(diagnostic),
        }
    }
}

/// The `AccessDeniedDetail` object of a `NoPermission` error body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AccessDeniedDetail {
    pub(crate) auth_action: String,
    pub(crate) auth_principal_type: String,
    pub(crate) auth_principal_display_name: String,
    pub(crate) auth_principal_owner_id: String,
    pub(crate) no_permission_type: String,
    pub(crate) policy_type: String,
    /// Base64 of `action=..;resource=..;principal=..;type=..`. Clients treat it as opaque.
    pub(crate) encoded_diagnostic_message: String,
}

/// Decides whether `caller` may perform `action` (such as `mq:DisasterDowngrade`) on every
/// resource in `resources`.
pub(crate) fn authorize(
    caller: &Caller,
    policies: &[Statement],
    action: &str,
    resources: &[InstanceResource],
) -> Result<(), Denial> {
    let Principal::RamUser(user_name) = &caller.principal else {
        return Ok(());
    };
    let denial = |resource: &InstanceResource, kind| Denial {
        action: action.to_owned(),
        resource: resource.display_name(&caller.account_id),
        user_name: user_name.clone(),
        account_id: caller.account_id.clone(),
        kind,
    };
    let matches = |statement: &Statement, resource: &InstanceResource| {
        statement
            .actions
            .iter()
            .any(|pattern| glob_match_ignore_case(pattern, action))
            && statement.resources.iter().any(|pattern| {
                glob_match(
                    pattern,
                    &resource.name_for_pattern(&caller.account_id, pattern),
                )
            })
    };

    for resource in resources {
        let denied = policies
            .iter()
            .any(|s| s.effect == Effect::Deny && matches(s, resource));
        if denied {
            return Err(denial(resource, NoPermissionType::ExplicitDeny));
        }
    }
    for resource in resources {
        let allowed = policies
            .iter()
            .any(|s| s.effect == Effect::Allow && matches(s, resource));
        if !allowed {
            return Err(denial(resource, NoPermissionType::ImplicitDeny));
        }
    }
    Ok(())
}

fn glob_match_ignore_case(pattern: &str, text: &str) -> bool {
    glob_match(&pattern.to_ascii_lowercase(), &text.to_ascii_lowercase())
}

/// Matches `text` against `pattern`, in which `*` matches any run of characters, including an
/// empty one. Runs in O(pattern × text) time at worst, by backtracking to the last `*` only.
fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Position of the last `*` seen in the pattern, and the text position it was tried at.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, tried)) => {
                    p = star + 1;
                    t = tried + 1;
                    backtrack = Some((star, tried + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(effect: Effect, actions: &[&str], resources: &[&str]) -> Statement {
        Statement {
            effect,
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    fn user() -> Caller {
        Caller {
            account_id: "100".to_owned(),
            access_key_id: "LTAIalice".to_owned(),
            principal: Principal::RamUser("alice".to_owned()),
        }
    }

    fn instance(id: &str, region: Option<&str>) -> InstanceResource {
        InstanceResource {
            instance_id: id.to_owned(),
            region: region.map(str::to_owned),
        }
    }

    const ACTION: &str = "mq:DisasterDowngrade";

    #[test]
    fn glob_match_cases() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "acs:mq:cn:1:x"));
        assert!(glob_match("acs:mq:*", "acs:mq:cn:1:x"));
        assert!(glob_match("acs:mq:*:*:mqtt-*", "acs:mq:cn:1:mqtt-a"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("a**", "a"));
        assert!(!glob_match("a*b", "axxc"));
        assert!(!glob_match("abc", "abcd"));
        assert!(!glob_match("abcd", "abc"));
        assert!(!glob_match("", "a"));
        assert!(glob_match("", ""));
    }

    #[test]
    fn root_is_always_allowed() {
        let root = Caller {
            principal: Principal::Root,
            ..user()
        };
        assert_eq!(
            authorize(&root, &[], ACTION, &[instance("a", None)]),
            Ok(())
        );
    }

    #[test]
    fn allow_patterns_grant_access() {
        let resources = [instance("mqtt-a", None), instance("mqtt-b", None)];
        let allowed = [
            statement(Effect::Allow, &["mq:DisasterDowngrade"], &["*"]),
            statement(Effect::Allow, &["mq:*"], &["acs:mq:*:*:mqtt-*"]),
            statement(Effect::Allow, &["*"], &["acs:mq:*:100:*"]),
            statement(Effect::Allow, &["MQ:disasterdowngrade"], &["acs:mq:*"]),
        ];
        for policy in allowed {
            let result = authorize(&user(), std::slice::from_ref(&policy), ACTION, &resources);
            assert_eq!(result, Ok(()), "{policy:?} did not allow");
        }
    }

    #[test]
    fn missing_allow_is_implicit_deny() {
        let policies = [
            statement(Effect::Allow, &["mq:DisasterRecovery"], &["*"]),
            statement(Effect::Allow, &["mq:*"], &["acs:mq:*:*:mqtt-a"]),
        ];
        let resources = [instance("mqtt-a", None), instance("mqtt-b", None)];
        let denial = authorize(&user(), &policies, ACTION, &resources);
        assert_eq!(
            denial,
            Err(Denial {
                action: ACTION.to_owned(),
                resource: "acs:mq:*:100:mqtt-b".to_owned(),
                user_name: "alice".to_owned(),
                account_id: "100".to_owned(),
                kind: NoPermissionType::ImplicitDeny,
            })
        );
    }

    #[test]
    fn other_account_resource_is_not_matched() {
        let policies = [statement(Effect::Allow, &["mq:*"], &["acs:mq:*:200:*"])];
        let result = authorize(&user(), &policies, ACTION, &[instance("mqtt-a", None)]);
        assert!(result.is_err());
    }

    #[test]
    fn explicit_deny_wins() {
        let policies = [
            statement(Effect::Allow, &["*"], &["*"]),
            statement(Effect::Deny, &["mq:Disaster*"], &["acs:mq:*:*:mqtt-b"]),
        ];
        let resources = [instance("mqtt-a", None), instance("mqtt-b", None)];
        let denial = authorize(&user(), &policies, ACTION, &resources);
        assert_eq!(
            denial.map_err(|d| (d.kind, d.resource)),
            Err((
                NoPermissionType::ExplicitDeny,
                "acs:mq:*:100:mqtt-b".to_owned()
            ))
        );
    }

    #[test]
    fn explicit_deny_reported_before_implicit() {
        let policies = [statement(Effect::Deny, &["*"], &["acs:mq:*:*:mqtt-b"])];
        let resources = [instance("mqtt-a", None), instance("mqtt-b", None)];
        let denial = authorize(&user(), &policies, ACTION, &resources);
        assert_eq!(
            denial.map_err(|d| d.kind),
            Err(NoPermissionType::ExplicitDeny)
        );
    }

    #[test]
    fn known_region_must_match_pattern() {
        let policies = [statement(
            Effect::Allow,
            &["*"],
            &["acs:mq:cn-hangzhou:*:*"],
        )];
        let hangzhou = [instance("mqtt-a", Some("cn-hangzhou"))];
        let shanghai = [instance("mqtt-a", Some("cn-shanghai"))];
        let unknown = [instance("mqtt-a", None)];
        assert_eq!(authorize(&user(), &policies, ACTION, &hangzhou), Ok(()));
        assert!(authorize(&user(), &policies, ACTION, &shanghai).is_err());
        assert_eq!(authorize(&user(), &policies, ACTION, &unknown), Ok(()));
    }

    #[test]
    fn denial_detail_fields() {
        let denial = Denial {
            action: ACTION.to_owned(),
            resource: "acs:mq:*:100:mqtt-b".to_owned(),
            user_name: "alice".to_owned(),
            account_id: "100".to_owned(),
            kind: NoPermissionType::ExplicitDeny,
        };
        let detail = denial.detail();
        assert_eq!(detail.auth_action, ACTION);
        assert_eq!(detail.auth_principal_type, "SubUser");
        assert_eq!(detail.auth_principal_display_name, "alice");
        assert_eq!(detail.auth_principal_owner_id, "100");
        assert_eq!(detail.no_permission_type, "ExplicitDeny");
        assert_eq!(detail.policy_type, "AccountLevelIdentityBasedPolicy");
        assert!(!detail.encoded_diagnostic_message.is_empty());
        assert!(denial.message().contains("mq:DisasterDowngrade"));
        assert!(denial.message().contains("acs:mq:*:100:mqtt-b"));
    }
}
