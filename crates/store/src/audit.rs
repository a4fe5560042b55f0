//! Audit records of disaster-recovery changes and their one-line text form.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The position of an audit record in the audit log.
///
/// Ids increase with every appended record and are never reused, so the last id a reader has
/// seen is a cursor for [`Store::audit_records`](crate::Store::audit_records).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AuditRecordId(pub i64);

impl fmt::Display for AuditRecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One audited call of a disaster-recovery action, whether it changed anything or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Time of the call, in milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    /// The `RequestId` returned to the caller.
    pub request_id: String,
    /// The account the caller's AccessKey belongs to.
    pub account_id: String,
    /// The caller: `root` for the account's own keys, `ram-user:<name>` for a RAM user.
    pub principal: String,
    /// The AccessKey id that signed the request.
    pub access_key_id: String,
    /// The caller's IP address, if known.
    pub source_ip: Option<String>,
    /// The OpenAPI action, such as `DisasterDowngrade`.
    pub action: String,
    /// The disaster-recovery group of the two instances.
    pub group_id: String,
    /// The `InstanceId` parameter: the instance the call was made on.
    pub instance_id: String,
    /// The member whose global-endpoint access the call changes.
    pub target_instance_id: String,
    /// The target's state before the call, such as `global_access=on`.
    pub before: String,
    /// The target's state after the call, such as `global_access=off`.
    pub after: String,
    /// Free text, such as why an automatic health rule made the change.
    pub note: Option<String>,
}

/// One line for the operator CLI: the UTC time in RFC 3339 form with milliseconds, the action,
/// the target and its state change, then `key=value` fields.
///
/// A value that is empty or contains whitespace, quotes, backslashes or control characters is
/// written as a quoted string with escapes, so the output is always one line.
impl fmt::Display for AuditRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} target={} {} -> {}",
            format_utc_ms(self.time_ms),
            field(&self.action),
            field(&self.target_instance_id),
            field(&self.before),
            field(&self.after),
        )?;
        write!(
            f,
            " instance={} group={} principal={} access_key_id={} account={}",
            field(&self.instance_id),
            field(&self.group_id),
            field(&self.principal),
            field(&self.access_key_id),
            field(&self.account_id),
        )?;
        match &self.source_ip {
            Some(source_ip) => write!(f, " source_ip={}", field(source_ip))?,
            None => write!(f, " source_ip=-")?,
        }
        write!(f, " request_id={}", field(&self.request_id))?;
        if let Some(note) = &self.note {
            write!(f, " note={note:?}")?;
        }
        Ok(())
    }
}

/// Formats one audit record with its id as a single line, for `switchyard audit`.
///
/// The line is the id followed by the record's [`Display`](fmt::Display) form, for example
/// `7 2026-12-04T10:15:30.123Z DisasterDowngrade target=mqtt-cn-sh01 global_access=on ->
/// global_access=off instance=mqtt-cn-hz01 ...`.
pub fn format_audit_record(id: AuditRecordId, record: &AuditRecord) -> String {
    format!("{id} {record}")
}

/// Returns `value` as is when it is a plain token, and Debug-quoted otherwise.
fn field(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\\');
    if plain {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

/// Formats milliseconds since the Unix epoch as UTC, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
///
/// Times before 1970 work too. Years outside 0..=9999 are written with as many digits as they
/// need and a `-` sign when negative, which RFC 3339 does not cover.
pub fn format_utc_ms(time_ms: i64) -> String {
    let days = time_ms.div_euclid(86_400_000);
    let ms_of_day = time_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);

    let hour = ms_of_day / 3_600_000;
    let minute = ms_of_day / 60_000 % 60;
    let second = ms_of_day / 1000 % 60;
    let millisecond = ms_of_day % 1000;
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millisecond:03}Z")
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// The calendar repeats every 400 years (146,097 days). Counting from 0000-03-01 puts the leap
/// day at the end of each year, so a day of the year maps to a month by a linear formula.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    const DAYS_PER_ERA: i64 = 146_097;
    // 1970-01-01 is 719,468 days after 0000-03-01.
    let days = days + 719_468;
    let era = days.div_euclid(DAYS_PER_ERA);
    let day_of_era = days.rem_euclid(DAYS_PER_ERA);

    // Years of 365 days, corrected for the leap days every 4, 100 and 400 years.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);

    // Months from March: 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 28 or 29 days.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };

    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_record() -> AuditRecord {
        AuditRecord {
            time_ms: 1_796_379_330_123,
            request_id: "5E0C8F3A-1B2C-4D5E-8F90-A1B2C3D4E5F6".to_owned(),
            account_id: "1000000000000001".to_owned(),
            principal: "ram-user:ops".to_owned(),
            access_key_id: "LTAIexample".to_owned(),
            source_ip: Some("10.0.0.5".to_owned()),
            action: "DisasterDowngrade".to_owned(),
            group_id: "global".to_owned(),
            instance_id: "mqtt-cn-hz01".to_owned(),
            target_instance_id: "mqtt-cn-sh01".to_owned(),
            before: "global_access=on".to_owned(),
            after: "global_access=off".to_owned(),
            note: None,
        }
    }

    #[test]
    fn format_utc_ms_known_times() {
        // Expected values from Python 3:
        // datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms).
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_796_379_330_123, "2026-12-04T10:15:30.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        ];
        for (time_ms, expected) in cases {
            assert_eq!(format_utc_ms(time_ms), expected, "{time_ms}");
        }
    }

    #[test]
    fn format_utc_ms_extreme_values() {
        // Must not overflow or panic at the ends of the range.
        assert!(!format_utc_ms(i64::MAX).is_empty());
        assert!(!format_utc_ms(i64::MIN).is_empty());
    }

    #[test]
    fn format_audit_record_one_line() {
        let line = format_audit_record(AuditRecordId(7), &sample_record());
        assert_eq!(
            line,
            "7 2026-12-04T10:15:30.123Z DisasterDowngrade target=mqtt-cn-sh01 \
             global_access=on -> global_access=off instance=mqtt-cn-hz01 group=global \
             principal=ram-user:ops access_key_id=LTAIexample account=1000000000000001 \
             source_ip=10.0.0.5 request_id=5E0C8F3A-1B2C-4D5E-8F90-A1B2C3D4E5F6"
        );
    }

    #[test]
    fn format_audit_record_quotes_odd_values() {
        let mut record = sample_record();
        record.source_ip = None;
        record.principal = "ram-user:night ops".to_owned();
        record.group_id = String::new();
        record.note = Some("health rule: 3 failed probes\nin 30 s".to_owned());

        let line = format_audit_record(AuditRecordId(8), &record);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains(" source_ip=- "), "{line}");
        assert!(
            line.contains(" principal=\"ram-user:night ops\" "),
            "{line}"
        );
        assert!(line.contains(" group=\"\" "), "{line}");
        assert!(
            line.ends_with(" note=\"health rule: 3 failed probes\\nin 30 s\""),
            "{line}"
        );
    }

    #[test]
    fn audit_record_json_round_trip() {
        let record = sample_record();
        let json = serde_json::to_string(&record).unwrap();
        assert!(
            json.contains("\"target_instance_id\":\"mqtt-cn-sh01\""),
            "{json}"
        );
        let decoded: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded, record);

        assert_eq!(serde_json::to_string(&AuditRecordId(3)).unwrap(), "3");
    }
}
