//! Checks for action parameters, each failing with 400 `InvalidParameter.<Name>`.

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
