//! The ApsaraMQ client id `GroupId@@@DeviceId`.

use crate::error::{AuthError, AuthErrorKind, quote};

/// The separator between the Group ID and the device id.
pub const CLIENT_ID_SEPARATOR: &str = "@@@";

/// Maximum length of a whole client id, in characters.
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// Minimum length of a Group ID, in characters: the prefix and at least three more.
pub const MIN_GROUP_ID_LEN: usize = 7;

/// Maximum length of a Group ID, in characters.
///
/// The cloud product documents 64, but a client id `GroupId@@@DeviceId` has at most
/// [`MAX_CLIENT_ID_LEN`] characters, so a longer Group ID leaves no room for the separator and
/// a device id and no device could ever log in with it.
pub const MAX_GROUP_ID_LEN: usize = MAX_CLIENT_ID_LEN - CLIENT_ID_SEPARATOR.len() - 1;

/// The two parts of an ApsaraMQ client id, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientId<'a> {
    /// The Group ID, such as `GID_demo`.
    pub group_id: &'a str,
    /// The device id, unique within the Group ID.
    pub device_id: &'a str,
}

/// Parses a client id of the form `GroupId@@@DeviceId`.
///
/// The rules are the cloud product's. The whole id is at most 64 characters. The Group ID is
/// 7 to 64 characters, starts with `GID_` or `GID-` and contains only `[A-Za-z0-9_-]`. The
/// device id is non-empty and contains only `[A-Za-z0-9_-]`. Any other id is rejected with
/// [`AuthErrorKind::ClientIdentifierNotValid`]. The id is split at the first `@@@`, so an id
/// with a second separator fails the device id rule.
pub fn parse_client_id(client_id: &str) -> Result<ClientId<'_>, AuthError> {
    let invalid = |reason: String| {
        AuthError::new(
            AuthErrorKind::ClientIdentifierNotValid,
            format!(
                "client id {} is not a valid GroupId@@@DeviceId client id because {reason}",
                quote(client_id)
            ),
        )
    };

    let Some((group_id, device_id)) = client_id.split_once(CLIENT_ID_SEPARATOR) else {
        return Err(invalid(format!(
            "it has no {CLIENT_ID_SEPARATOR} separator between the Group ID and the device id"
        )));
    };

    // Every accepted character is ASCII, so an id that passes the character checks has as many
    // characters as bytes. The length check counts characters so that its message is right for
    // any input.
    let length = client_id.chars().count();
    if length > MAX_CLIENT_ID_LEN {
        return Err(invalid(format!(
            "it is {length} characters long and the maximum is {MAX_CLIENT_ID_LEN}"
        )));
    }

    check_group_id(group_id).map_err(invalid)?;

    if device_id.is_empty() {
        return Err(invalid(
            "the device id after the separator is empty".to_owned(),
        ));
    }
    if let Some(bad) = device_id.chars().find(|c| !is_name_char(*c)) {
        return Err(invalid(format!(
            "the device id {} contains {bad:?}, but only letters, digits, '_' and '-' are allowed",
            quote(device_id)
        )));
    }

    Ok(ClientId {
        group_id,
        device_id,
    })
}

/// Checks the Group ID rules and returns the broken rule as a clause for an error detail, such
/// as `the Group ID "GID_a.b" contains '.', but only letters, digits, '_' and '-' are allowed`.
pub fn check_group_id(group_id: &str) -> Result<(), String> {
    if !(group_id.starts_with("GID_") || group_id.starts_with("GID-")) {
        return Err(format!(
            "the Group ID {} does not start with GID_ or GID-",
            quote(group_id)
        ));
    }
    if let Some(bad) = group_id.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "the Group ID {} contains {bad:?}, but only letters, digits, '_' and '-' are allowed",
            quote(group_id)
        ));
    }
    let length = group_id.len();
    if !(MIN_GROUP_ID_LEN..=MAX_GROUP_ID_LEN).contains(&length) {
        return Err(format!(
            "the Group ID {} is {length} characters long and must be \
             {MIN_GROUP_ID_LEN} to {MAX_GROUP_ID_LEN}",
            quote(group_id)
        ));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail_of(client_id: &str) -> String {
        let error = parse_client_id(client_id).unwrap_err();
        assert_eq!(
            error.kind,
            AuthErrorKind::ClientIdentifierNotValid,
            "{client_id}"
        );
        error.detail
    }

    #[test]
    fn parse_client_id_splits_parts() {
        let parsed = parse_client_id("GID_Test@@@0001").unwrap();
        assert_eq!(parsed.group_id, "GID_Test");
        assert_eq!(parsed.device_id, "0001");

        let parsed = parse_client_id("GID-a_b-c@@@dev_1-x").unwrap();
        assert_eq!(parsed.group_id, "GID-a_b-c");
        assert_eq!(parsed.device_id, "dev_1-x");
    }

    #[test]
    fn parse_client_id_accepts_length_limits() {
        let shortest_group = "GID_abc";
        assert_eq!(shortest_group.len(), MIN_GROUP_ID_LEN);
        assert!(parse_client_id("GID_abc@@@d").is_ok());

        // 60 + 3 + 1 = 64 characters, the maximum.
        let group = format!("GID_{}", "g".repeat(56));
        let client_id = format!("{group}@@@d");
        assert_eq!(client_id.len(), MAX_CLIENT_ID_LEN);
        assert_eq!(parse_client_id(&client_id).unwrap().group_id, group);
    }

    #[test]
    fn parse_client_id_rejects_missing_separator() {
        for client_id in ["GID_Test", "GID_Test@@0001", "", "plain-client"] {
            assert!(
                detail_of(client_id).contains("no @@@ separator"),
                "{client_id}"
            );
        }
    }

    #[test]
    fn parse_client_id_rejects_long_id() {
        let client_id = format!("GID_{}@@@d", "g".repeat(57));
        assert_eq!(client_id.len(), 65);
        let detail = detail_of(&client_id);
        assert!(detail.contains("65 characters"), "{detail}");
        assert!(detail.contains("maximum is 64"), "{detail}");
    }

    #[test]
    fn parse_client_id_rejects_short_group_id() {
        let detail = detail_of("GID_ab@@@0001");
        assert!(detail.contains("6 characters"), "{detail}");
        assert!(detail.contains("7 to 60"), "{detail}");
    }

    #[test]
    fn parse_client_id_rejects_bad_prefix() {
        for client_id in [
            "gid_Test@@@0001",
            "GIDTest@@@0001",
            "XID_Test@@@0001",
            "@@@0001",
        ] {
            assert!(
                detail_of(client_id).contains("does not start with GID_ or GID-"),
                "{client_id}"
            );
        }
    }

    #[test]
    fn parse_client_id_rejects_bad_group_chars() {
        for client_id in [
            "GID_Te.st@@@0001",
            "GID_Te st@@@0001",
            "GID_Tést@@@0001",
            "GID_T@st@@@0001",
        ] {
            let detail = detail_of(client_id);
            assert!(detail.contains("the Group ID"), "{client_id}: {detail}");
            assert!(
                detail.contains("only letters, digits"),
                "{client_id}: {detail}"
            );
        }
    }

    #[test]
    fn parse_client_id_rejects_bad_device_id() {
        assert!(detail_of("GID_Test@@@").contains("device id after the separator is empty"));

        for client_id in [
            "GID_Test@@@00/1",
            "GID_Test@@@00@@@1",
            "GID_Test@@@dev ice",
            "GID_Test@@@dé",
        ] {
            let detail = detail_of(client_id);
            assert!(detail.contains("the device id"), "{client_id}: {detail}");
            assert!(
                detail.contains("only letters, digits"),
                "{client_id}: {detail}"
            );
        }
    }

    #[test]
    fn parse_client_id_counts_characters_not_bytes() {
        // 62 characters but more than 64 bytes: reaches the character rules, not the length rule.
        let client_id = format!("GID_{}@@@d", "é".repeat(54));
        let detail = detail_of(&client_id);
        assert!(detail.contains("only letters, digits"), "{detail}");
    }
}
