//! RFC 3986 percent-encoding as both signature schemes use it, and the strict parser for query
//! strings and `application/x-www-form-urlencoded` bodies.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};

/// Every byte except the RFC 3986 unreserved characters `A-Z a-z 0-9 - _ . ~`, so a space
/// becomes `%20`, `*` becomes `%2A` and `~` stays as it is.
const RFC3986_RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes `value` as UTF-8, keeping only the RFC 3986 unreserved characters.
pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, RFC3986_RESERVED).to_string()
}

/// Origin of a parameter, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParamSource {
    Query,
    FormBody,
}

impl ParamSource {
    fn describe(self) -> &'static str {
        match self {
            ParamSource::Query => "query string",
            ParamSource::FormBody => "form body",
        }
    }
}

/// Failure to turn a query string or form body into parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ParamError {
    /// A name or value is not UTF-8 after percent-decoding.
    InvalidUtf8 { source: ParamSource },
    /// A name is empty or contains characters other than the RFC 3986 unreserved ones.
    InvalidName { source: ParamSource, name: String },
    /// The same name appears twice, within one source or across query string and form body.
    Duplicate { name: String },
}

impl ParamError {
    pub(crate) fn message(&self) -> String {
        match self {
            ParamError::InvalidUtf8 { source } => format!(
                "The {} is not valid UTF-8 after percent-decoding. Percent-encode every \
                 parameter name and value as UTF-8.",
                source.describe()
            ),
            ParamError::InvalidName { source, name } => format!(
                "The parameter name {} in the {} is not valid. Parameter names contain only \
                 letters, digits, '-', '_', '.' and '~'.",
                quote_value(name),
                source.describe()
            ),
            ParamError::Duplicate { name } => format!(
                "The parameter {name} is given more than once. Send each parameter once, in \
                 the query string or in the form body."
            ),
        }
    }
}

/// Splits `input` at `&` and `=` and decodes each name and value with form rules: `+` is a
/// space and `%XY` is a byte.
///
/// The query string is decoded the same way, because the current Python and Java SDKs build it
/// with form encoding (a space is sent as `+`), and every SDK sends a literal `+` as `%2B`.
/// Empty segments, as in `a=1&&b=2`, are skipped. A segment without `=` has an empty value.
pub(crate) fn parse_urlencoded(
    input: &[u8],
    source: ParamSource,
) -> Result<Vec<(String, String)>, ParamError> {
    let mut pairs = Vec::new();
    for segment in input.split(|&byte| byte == b'&') {
        if segment.is_empty() {
            continue;
        }
        let (raw_name, raw_value) = match segment.iter().position(|&byte| byte == b'=') {
            Some(at) => (&segment[..at], &segment[at + 1..]),
            None => (segment, &[][..]),
        };
        let name = decode_component(raw_name, source)?;
        if !is_valid_name(&name) {
            return Err(ParamError::InvalidName { source, name });
        }
        let value = decode_component(raw_value, source)?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn decode_component(raw: &[u8], source: ParamSource) -> Result<String, ParamError> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&byte| if byte == b'+' { b' ' } else { byte })
        .collect();
    let decoded: Vec<u8> = percent_decode(&spaced).collect();
    String::from_utf8(decoded).map_err(|_| ParamError::InvalidUtf8 { source })
}

/// Accepts names made only of RFC 3986 unreserved characters. Those are the same whether or not
/// the client percent-encodes names, which the Python SDK does not do for ACS3 signatures.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~'))
}

/// The parameters of one request: query string and form body merged, names unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Merges the parameter lists, rejecting any name that occurs twice.
    pub(crate) fn merge(
        query: &[(String, String)],
        form: &[(String, String)],
    ) -> Result<Self, ParamError> {
        let mut values = BTreeMap::new();
        for (name, value) in query.iter().chain(form) {
            if values.insert(name.clone(), value.clone()).is_some() {
                return Err(ParamError::Duplicate { name: name.clone() });
            }
        }
        Ok(Self { values })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Returns every parameter except `excluded`, sorted by name in byte order.
    pub(crate) fn sorted_except<'a>(&'a self, excluded: &str) -> Vec<(&'a str, &'a str)> {
        self.values
            .iter()
            .filter(|(name, _)| name.as_str() != excluded)
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect()
    }
}

/// Quotes a request value for an error message, cut to 80 characters so a huge value cannot
/// bloat the response.
pub(crate) fn quote_value(value: &str) -> String {
    const MAX_CHARS: usize = 80;
    if value.chars().count() <= MAX_CHARS {
        format!("\"{value}\"")
    } else {
        let head: String = value.chars().take(MAX_CHARS).collect();
        format!("\"{head}...\" ({} characters)", value.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn percent_encode_keeps_only_unreserved() {
        assert_eq!(percent_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(percent_encode("a b"), "a%20b");
        assert_eq!(percent_encode("*"), "%2A");
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("+"), "%2B");
        assert_eq!(percent_encode("@:="), "%40%3A%3D");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn parse_urlencoded_decodes_form_rules() {
        let parsed = parse_urlencoded(b"A=x+y&B=%2B%20z&C&&D=", ParamSource::Query);
        assert_eq!(
            parsed,
            Ok(vec![
                pair("A", "x y"),
                pair("B", "+ z"),
                pair("C", ""),
                pair("D", ""),
            ])
        );
    }

    #[test]
    fn parse_urlencoded_keeps_equals_in_value() {
        let parsed = parse_urlencoded(b"Token=a%3Db=c", ParamSource::FormBody);
        assert_eq!(parsed, Ok(vec![pair("Token", "a=b=c")]));
    }

    #[test]
    fn parse_urlencoded_rejects_bad_utf8() {
        let parsed = parse_urlencoded(b"A=%FF", ParamSource::FormBody);
        assert_eq!(
            parsed,
            Err(ParamError::InvalidUtf8 {
                source: ParamSource::FormBody
            })
        );
    }

    #[test]
    fn parse_urlencoded_rejects_bad_names() {
        for raw in [&b"=value"[..], b"a%20b=1", b"a/b=1", b"%C3%A9=1"] {
            let parsed = parse_urlencoded(raw, ParamSource::Query);
            assert!(
                matches!(parsed, Err(ParamError::InvalidName { .. })),
                "{:?} gave {parsed:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn params_merge_rejects_duplicates() {
        let query = vec![pair("InstanceId", "a")];
        let form = vec![pair("InstanceId", "b")];
        assert_eq!(
            Params::merge(&query, &form),
            Err(ParamError::Duplicate {
                name: "InstanceId".to_owned()
            })
        );
        let twice = vec![pair("X", "1"), pair("X", "1")];
        assert!(Params::merge(&twice, &[]).is_err());
    }

    #[test]
    fn params_sorted_except_orders_by_bytes() {
        let query = vec![pair("b", "2"), pair("Signature", "s"), pair("B", "1")];
        let form = vec![pair("a", "3")];
        let params = Params::merge(&query, &form).unwrap_or_default();
        assert_eq!(
            params.sorted_except("Signature"),
            vec![("B", "1"), ("a", "3"), ("b", "2")]
        );
    }

    #[test]
    fn quote_value_cuts_long_values() {
        assert_eq!(quote_value("abc"), "\"abc\"");
        let long = "x".repeat(300);
        let quoted = quote_value(&long);
        assert!(quoted.starts_with(&format!("\"{}...", "x".repeat(80))));
        assert!(quoted.ends_with("...\" (300 characters)"));
    }
}
