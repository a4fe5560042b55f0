//! Checks for action parameters. The DR actions fail with 400 `InvalidParameter.<Name>`, the
//! Group ID actions with 400 `Missing<Name>` for an absent parameter, the gateway's code for a
//! required one, and `ParameterFieldCheckFailed` for a malformed one, as the cloud documents
//! for each.

use std::collections::HashSet;
use std::sync::LazyLock;

use serde::Deserialize;
use switchyard_auth::{MAX_CLIENT_ID_LEN, MAX_GROUP_ID_LEN, MIN_GROUP_ID_LEN, check_group_id};

use crate::backend::Tag;
use crate::encoding::{Params, quote_value};
use crate::errors::ApiError;

const INSTANCE_ID_MAX_CHARS: usize = 64;
const INSTANCE_ID_FORM: &str = "1 to 64 characters of letters, digits, '_' and '-', such as \
                                mqtt-cn-hz01";

/// Returns the instance id in parameter `name`: present, non-empty, at most 64 characters of
/// `[A-Za-z0-9_-]`.
pub(crate) fn instance_id<'a>(params: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    let Some(value) = params.get(name) else {
        return Err(ApiError::invalid_parameter(
            name,
            format!("The parameter {name} is missing. Pass an instance ID of {INSTANCE_ID_FORM}."),
        ));
    };
    let well_formed = !value.is_empty()
        && value.len() <= INSTANCE_ID_MAX_CHARS
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if !well_formed {
        return Err(ApiError::invalid_parameter(
            name,
            format!(
                "The parameter {name} value {} is not a valid instance ID. Pass an instance ID \
                 of {INSTANCE_ID_FORM}.",
                quote_value(value)
            ),
        ));
    }
    Ok(value)
}

/// Returns the instance id in parameter `name`, as [`instance_id`] checks it, but failing with
/// `Missing<name>` when it is absent and `ParameterFieldCheckFailed` when it is malformed.
pub(crate) fn instance_id_field<'a>(params: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    if params.get(name).is_none() {
        return Err(ApiError::missing(
            name,
            &format!("Pass an instance ID of {INSTANCE_ID_FORM}."),
        ));
    }
    instance_id(params, name).map_err(|error| ApiError::parameter_field_check_failed(error.message))
}

/// The Group ID rules as the error messages state them.
static GROUP_ID_FORM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{MIN_GROUP_ID_LEN} to {MAX_GROUP_ID_LEN} characters that start with GID_ or GID- and \
         contain only letters, digits, '_' and '-', such as GID_sensors"
    )
});

/// Returns the `GroupId` parameter, checked by the same rules as the Group IDs of logins and of
/// the configuration file ([`check_group_id`]). Fails with `MissingGroupId` when it is absent
/// and `ParameterFieldCheckFailed` when it is malformed.
pub(crate) fn group_id(params: &Params) -> Result<&str, ApiError> {
    let form = &*GROUP_ID_FORM;
    let Some(value) = params.get("GroupId") else {
        return Err(ApiError::missing(
            "GroupId",
            &format!("Pass a Group ID of {form}."),
        ));
    };
    // The rule's own text quotes the value in full, so a long value is quoted here instead.
    check_group_id(value).map_err(|_| {
        let reason = group_id_reason(value);
        ApiError::parameter_field_check_failed(format!(
            "The parameter GroupId value {} is not a valid Group ID because {reason}. Pass a \
             Group ID of {form}.",
            quote_value(value)
        ))
    })?;
    Ok(value)
}

/// Names the first Group ID rule that `value` breaks, without quoting it.
fn group_id_reason(value: &str) -> String {
    if !(value.starts_with("GID_") || value.starts_with("GID-")) {
        "it does not start with GID_ or GID-".to_owned()
    } else if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        format!("it contains {bad:?}")
    } else if value.len() > MAX_GROUP_ID_LEN {
        format!(
            "it is {} characters long, and a client id GroupId@@@DeviceId has at most \
             {MAX_CLIENT_ID_LEN}, which leaves a Group ID at most {MAX_GROUP_ID_LEN}",
            value.len()
        )
    } else {
        format!("it is {} characters long", value.chars().count())
    }
}

// NOTE: the cloud documents no limits for Group ID tags, so these are Switchyard's own.
const MAX_TAGS: usize = 20;
const MAX_TAG_KEY_CHARS: usize = 128;
const MAX_TAG_VALUE_CHARS: usize = 128;
const TAGS_FORM: &str = "a JSON array of objects with a string key and value, such as \
                         [{\"key\":\"team\",\"value\":\"fleet\"}]";

/// One element of the `Tags` parameter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagParam {
    key: String,
    #[serde(default)]
    value: String,
}

/// Returns the `Tags` parameter: a JSON array of `{"key","value"}` objects, the form
/// `ListInstances` takes, with at most 20 tags, unique non-empty keys of at most 128
/// characters and values of at most 128 characters. A missing or empty parameter means no
/// tags. Fails with `ParameterFieldCheckFailed`.
pub(crate) fn tags(params: &Params) -> Result<Vec<Tag>, ApiError> {
    let Some(text) = params.get("Tags").filter(|text| !text.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let invalid = |reason: String| {
        ApiError::parameter_field_check_failed(format!(
            "The parameter Tags value {} is not valid because {reason}. Pass {TAGS_FORM}, with \
             at most {MAX_TAGS} tags, unique keys of 1 to {MAX_TAG_KEY_CHARS} characters and \
             values of at most {MAX_TAG_VALUE_CHARS} characters.",
            quote_value(text)
        ))
    };
    let parsed: Vec<TagParam> = serde_json::from_str(text)
        .map_err(|error| invalid(format!("it is not {TAGS_FORM} ({error})")))?;
    if parsed.len() > MAX_TAGS {
        return Err(invalid(format!("it has {} tags", parsed.len())));
    }

    let mut keys = HashSet::new();
    let mut tags = Vec::with_capacity(parsed.len());
    for tag in parsed {
        let key_chars = tag.key.chars().count();
        if key_chars == 0 {
            return Err(invalid("a tag has an empty key".to_owned()));
        }
        if key_chars > MAX_TAG_KEY_CHARS {
            return Err(invalid(format!(
                "the key {} is {key_chars} characters long",
                quote_value(&tag.key)
            )));
        }
        let value_chars = tag.value.chars().count();
        if value_chars > MAX_TAG_VALUE_CHARS {
            return Err(invalid(format!(
                "the value of key {} is {value_chars} characters long",
                quote_value(&tag.key)
            )));
        }
        if !keys.insert(tag.key.clone()) {
            return Err(invalid(format!(
                "the key {} appears twice",
                quote_value(&tag.key)
            )));
        }
        tags.push(Tag {
            key: tag.key,
            value: tag.value,
        });
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        Params::merge(&owned, &[]).unwrap_or_default()
    }

    #[test]
    fn instance_id_accepts_valid_ids() {
        let max = "a".repeat(64);
        for id in ["mqtt-cn-hz01", "a", "A_b-9", max.as_str()] {
            let params_with_id = params(&[("InstanceId", id)]);
            assert_eq!(instance_id(&params_with_id, "InstanceId").ok(), Some(id));
        }
    }

    #[test]
    fn instance_id_rejects_malformed_ids() {
        let too_long = "a".repeat(65);
        for id in ["", "mqtt cn", "mqtt/cn", "é", "a.b", too_long.as_str()] {
            let params_with_id = params(&[("InstanceId", id)]);
            let error = instance_id(&params_with_id, "InstanceId").err();
            assert_eq!(
                error.as_ref().map(|e| e.code.as_str()),
                Some("InvalidParameter.InstanceId"),
                "{id:?} was accepted"
            );
            let message = error.map(|e| e.message).unwrap_or_default();
            assert!(message.contains("InstanceId"));
            assert!(message.contains("1 to 64 characters"));
        }
    }

    #[test]
    fn instance_id_reports_missing_parameter() {
        let error = instance_id(&params(&[]), "DowngradeInstanceId").err();
        assert_eq!(
            error.as_ref().map(|e| e.code.as_str()),
            Some("InvalidParameter.DowngradeInstanceId")
        );
        let message = error.map(|e| e.message).unwrap_or_default();
        assert!(message.contains("DowngradeInstanceId is missing"));
    }
}

#[cfg(test)]
mod group_id_tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        Params::merge(&owned, &[]).unwrap_or_default()
    }

    fn group_id_error(value: &str) -> ApiError {
        let params_with_id = params(&[("GroupId", value)]);
        match group_id(&params_with_id) {
            Ok(accepted) => panic!("{accepted:?} was accepted"),
            Err(error) => error,
        }
    }

    #[test]
    fn group_id_accepts_valid_ids() {
        let max = format!("GID_{}", "a".repeat(56));
        for id in ["GID_abc", "GID-abc", "GID_a-b_C9", max.as_str()] {
            let params_with_id = params(&[("GroupId", id)]);
            assert_eq!(group_id(&params_with_id).ok(), Some(id));
        }
    }

    #[test]
    fn group_id_rejects_malformed_ids() {
        let too_long = format!("GID_{}", "a".repeat(57));
        let cases = [
            ("GID_ab", "6 characters long"),
            (too_long.as_str(), "61 characters long"),
            ("gid_abc", "does not start with GID_ or GID-"),
            ("GIDabcd", "does not start with GID_ or GID-"),
            ("", "does not start with GID_ or GID-"),
            ("GID_a.b", "contains '.'"),
            ("GID_a b", "contains ' '"),
            ("GID_été", "contains 'é'"),
            ("GID_a@@@b", "contains '@'"),
        ];
        for (id, reason) in cases {
            let error = group_id_error(id);
            assert_eq!(error.code, "ParameterFieldCheckFailed", "{id:?}");
            assert!(error.message.contains(reason), "{id:?}: {}", error.message);
            assert!(error.message.contains("GroupId"), "{}", error.message);
            assert!(
                error.message.contains("7 to 60 characters"),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn group_id_reports_missing_parameter() {
        let error = group_id(&params(&[])).err();
        assert_eq!(
            error.as_ref().map(|e| e.code.as_str()),
            Some("MissingGroupId")
        );
        let message = error.map(|e| e.message).unwrap_or_default();
        assert!(
            message.starts_with("GroupId is mandatory for this action."),
            "{message}"
        );
    }

    #[test]
    fn instance_id_field_uses_field_check_code() {
        let error = instance_id_field(&params(&[("InstanceId", "a b")]), "InstanceId").err();
        assert_eq!(
            error.as_ref().map(|e| e.code.as_str()),
            Some("ParameterFieldCheckFailed")
        );
        let message = error.map(|e| e.message).unwrap_or_default();
        assert!(message.contains("\"a b\""), "{message}");
    }

    #[test]
    fn tags_parse_key_value_objects() {
        let parsed = tags(&params(&[(
            "Tags",
            r#"[{"key":"team","value":"fleet"},{"key":"tier"}]"#,
        )]));
        assert_eq!(
            parsed.ok(),
            Some(vec![
                Tag {
                    key: "team".to_owned(),
                    value: "fleet".to_owned()
                },
                Tag {
                    key: "tier".to_owned(),
                    value: String::new()
                },
            ])
        );
        assert_eq!(tags(&params(&[])).ok(), Some(Vec::new()));
        assert_eq!(tags(&params(&[("Tags", "")])).ok(), Some(Vec::new()));
        assert_eq!(tags(&params(&[("Tags", "[]")])).ok(), Some(Vec::new()));
    }

    #[test]
    fn tags_reject_malformed_values() {
        let many: Vec<String> = (0..21)
            .map(|i| format!(r#"{{"key":"k{i}","value":"v"}}"#))
            .collect();
        let many = format!("[{}]", many.join(","));
        let long_key = format!(r#"[{{"key":"{}"}}]"#, "k".repeat(129));
        let cases = [
            ("team=fleet", "is not a JSON array"),
            (r#"{"key":"team"}"#, "is not a JSON array"),
            (r#"[{"Key":"team"}]"#, "is not a JSON array"),
            (r#"[{"key":""}]"#, "empty key"),
            (r#"[{"key":"a"},{"key":"a"}]"#, "appears twice"),
            (r#"[{"key":"a","value":1}]"#, "is not a JSON array"),
            (many.as_str(), "has 21 tags"),
            (long_key.as_str(), "129 characters long"),
        ];
        for (text, reason) in cases {
            let error = tags(&params(&[("Tags", text)])).err();
            assert_eq!(
                error.as_ref().map(|e| e.code.as_str()),
                Some("ParameterFieldCheckFailed"),
                "{text}"
            );
            let message = error.map(|e| e.message).unwrap_or_default();
            assert!(message.contains(reason), "{text}: {message}");
            assert!(message.contains("Tags"), "{message}");
        }
    }
}
