//! One signed management API call over plain HTTP/1.1, as the official SDK sends it: an RPC-style
//! `POST /` with the action and version in `x-acs-*` headers and the parameters in a form body.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::signing::{RequestToSign, form_body, hex_sha256, sign_acs3};

/// API version of every `OnsMqtt` action.
pub const API_VERSION: &str = "2020-04-20";

/// Largest response accepted, in bytes; API responses are a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A management API endpoint and the AccessKey pair that signs the calls.
#[derive(Clone)]
pub struct ApiClient {
    pub addr: SocketAddr,
    pub access_key_id: String,
    pub access_key_secret: String,
    /// Bound on connecting, sending and reading the whole response.
    pub timeout: Duration,
}

/// A successful action call.
#[derive(Debug)]
pub struct ActionResponse {
    /// `RequestId` from the response body.
    pub request_id: String,
    /// When the request was about to be written.
    pub sent_at: Instant,
    /// When the last byte of the response had been read.
    pub received_at: Instant,
}

impl ApiClient {
    /// Calls `action` with form parameters and checks for HTTP 200 and `"Success": true`.
    pub async fn call(
        &self,
        action: &str,
        params: &[(&str, &str)],
    ) -> anyhow::Result<ActionResponse> {
        let request = self.build_request(action, params);
        let exchange = async {
            let mut stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("failed to connect to the API at {}", self.addr))?;
            let sent_at = Instant::now();
            stream
                .write_all(request.as_bytes())
                .await
                .context("failed to send the request")?;
            let response = read_response(&mut stream).await?;
            Ok::<_, anyhow::Error>((sent_at, Instant::now(), response))
        };
        let (sent_at, received_at, response) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                anyhow!(
                    "{action} timed out after {} s without a complete response from {}",
                    self.timeout.as_secs(),
                    self.addr
                )
            })?
            .with_context(|| format!("{action} request to {} failed", self.addr))?;

        let request_id = check_success(action, &response)?;
        Ok(ActionResponse {
            request_id,
            sent_at,
            received_at,
        })
    }

    fn build_request(&self, action: &str, params: &[(&str, &str)]) -> String {
        let body = form_body(params);
        let host = self.addr.to_string();
        let date = OffsetDateTime::now_utc()
            .format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .expect("a UTC timestamp always formats");
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let content_sha256 = hex_sha256(body.as_bytes());
        let headers = [
            ("host", host.as_str()),
            ("x-acs-action", action),
            ("x-acs-version", API_VERSION),
            ("x-acs-date", date.as_str()),
            ("x-acs-signature-nonce", nonce.as_str()),
            ("x-acs-content-sha256", content_sha256.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ];
        let signature = sign_acs3(
            &RequestToSign {
                method: "POST",
                path: "/",
                query: &[],
                headers: &headers,
                body: body.as_bytes(),
            },
            &self.access_key_secret,
        );

        let mut request = String::from("POST / HTTP/1.1\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!(
            "authorization: {}\r\n",
            signature.authorization(&self.access_key_id)
        ));
        request.push_str(concat!(
            "user-agent: switchyard-loadgen/",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        ));
        request.push_str(&format!("content-length: {}\r\n", body.len()));
        request.push_str("connection: close\r\n\r\n");
        request.push_str(&body);
        request
    }
}

/// An HTTP response: status code and decoded body.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Reads one HTTP/1.1 response, framed by `content-length`, chunked encoding or end of stream.
async fn read_response(stream: &mut TcpStream) -> anyhow::Result<HttpResponse> {
    let mut buffer = Vec::with_capacity(4096);
    loop {
        match parse_response(&buffer, false)? {
            Some(response) => return Ok(response),
            None if buffer.len() > MAX_RESPONSE_BYTES => {
                bail!("response is larger than {MAX_RESPONSE_BYTES} bytes")
            }
            None => {}
        }
        let read = stream
            .read_buf(&mut buffer)
            .await
            .context("failed to read the response")?;
        if read == 0 {
            return parse_response(&buffer, true)?
                .ok_or_else(|| anyhow!("connection closed before the response was complete"));
        }
    }
}

/// Parses a response from `buffer`; returns `None` while more bytes are needed. With `at_eof`,
/// a response without `content-length` or chunked encoding ends at the end of the buffer.
pub fn parse_response(buffer: &[u8], at_eof: bool) -> anyhow::Result<Option<HttpResponse>> {
    let Some(header_end) = find(buffer, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buffer[..header_end])
        .context("response headers are not valid UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("invalid HTTP status line {status_line:?}"))?;

    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("invalid HTTP header line {line:?}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse::<usize>()
                .with_context(|| format!("invalid content-length {value:?}"))?;
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }

    let rest = &buffer[header_end + 4..];
    let body = if chunked {
        match decode_chunked(rest)? {
            Some(body) => body,
            None => return Ok(None),
        }
    } else if let Some(length) = content_length {
        if rest.len() < length {
            return Ok(None);
        }
        rest[..length].to_vec()
    } else if at_eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(HttpResponse { status, body }))
}

/// Decodes a chunked body; returns `None` until the last (zero-length) chunk has arrived.
fn decode_chunked(mut rest: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let size_line =
            std::str::from_utf8(&rest[..line_end]).context("chunk size line is not valid UTF-8")?;
        // A chunk size may be followed by `;extension`, which carries nothing needed here.
        let size_text = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("invalid chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailer fields, if any, end with an empty line.
            return Ok(find(rest, b"\r\n").map(|_| body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Checks that an action succeeded and returns its `RequestId`; otherwise builds an error with
/// the status, `Code` and `Message` of the response.
pub fn check_success(action: &str, response: &HttpResponse) -> anyhow::Result<String> {
    let json: Option<serde_json::Value> = serde_json::from_slice(&response.body).ok();
    let field = |name: &str| -> String {
        match json.as_ref().and_then(|json| json.get(name)) {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    };
    let success = json
        .as_ref()
        .and_then(|json| json.get("Success"))
        .and_then(serde_json::Value::as_bool);
    if response.status == 200 && success == Some(true) {
        return Ok(field("RequestId"));
    }
    if json.is_none() {
        let text = String::from_utf8_lossy(&response.body);
        let excerpt: String = text.chars().take(300).collect();
        bail!(
            "{action} failed: HTTP {} with a body that is not JSON: {excerpt:?}",
            response.status
        );
    }
    bail!(
        "{action} failed: HTTP {}, Success {}, Code {:?}, Message {:?}, RequestId {:?}",
        response.status,
        success.map_or("missing".to_owned(), |value| value.to_string()),
        field("Code"),
        field("Message"),
        field("RequestId")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const OK_BODY: &str = r#"{"RequestId":"0B7E2A5C-1111-2222-3333-444455556666","Code":200,"Success":true,"Message":"operation success."}"#;

    #[test]
    fn response_with_content_length() {
        let raw = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: {}\r\n\r\n{OK_BODY}",
            OK_BODY.len()
        );
        let response = parse_response(raw.as_bytes(), false).unwrap().unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, OK_BODY.as_bytes());
    }

    #[test]
    fn response_waits_for_whole_body() {
        let raw = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{{",
            OK_BODY.len()
        );
        assert_eq!(parse_response(raw.as_bytes(), false).unwrap(), None);
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n", false).unwrap(), None);
    }

    #[test]
    fn response_chunked() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\n\r\n";
        let response = parse_response(raw, false).unwrap().unwrap();
        assert_eq!(response.body, b"abcdef");
        let partial = &raw[..raw.len() - 2];
        assert_eq!(parse_response(partial, false).unwrap(), None);
    }

    #[test]
    fn response_until_eof() {
        let raw = b"HTTP/1.1 500 Internal Server Error\r\n\r\noops";
        assert_eq!(parse_response(raw, false).unwrap(), None);
        let response = parse_response(raw, true).unwrap().unwrap();
        assert_eq!(response.status, 500);
        assert_eq!(response.body, b"oops");
    }

    #[test]
    fn response_invalid_status_line() {
        assert!(parse_response(b"garbage\r\n\r\n", true).is_err());
    }

    #[test]
    fn success_returns_request_id() {
        let response = HttpResponse {
            status: 200,
            body: OK_BODY.as_bytes().to_vec(),
        };
        let request_id = check_success("DisasterDowngrade", &response).unwrap();
        assert_eq!(request_id, "0B7E2A5C-1111-2222-3333-444455556666");
    }

    #[test]
    fn error_names_code_and_message() {
        let response = HttpResponse {
            status: 400,
            body: br#"{"RequestId":"R1","Code":"InvalidParameter.DowngradeInstanceId","Message":"last member"}"#.to_vec(),
        };
        let error = check_success("DisasterDowngrade", &response)
            .unwrap_err()
            .to_string();
        assert!(error.contains("HTTP 400"), "{error}");
        assert!(
            error.contains("InvalidParameter.DowngradeInstanceId"),
            "{error}"
        );
        assert!(error.contains("last member"), "{error}");
    }

    #[test]
    fn http_200_without_success_is_error() {
        let response = HttpResponse {
            status: 200,
            body: br#"{"RequestId":"R1","Success":false}"#.to_vec(),
        };
        assert!(check_success("DisasterRecovery", &response).is_err());
    }

    #[test]
    fn non_json_body_is_error() {
        let response = HttpResponse {
            status: 502,
            body: b"<html>bad gateway</html>".to_vec(),
        };
        let error = check_success("DisasterRecovery", &response)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not JSON"), "{error}");
    }

    /// Runs a one-request HTTP server on loopback that checks the signature with the known
    /// secret and replies with `OK_BODY`.
    #[tokio::test]
    async fn call_sends_signed_form_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            loop {
                socket.read_buf(&mut received).await.unwrap();
                let text = String::from_utf8_lossy(&received);
                if let Some(end) = text.find("\r\n\r\n")
                    && text[end + 4..].len() >= "DowngradeInstanceId=a&InstanceId=a".len()
                {
                    break;
                }
            }
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{OK_BODY}",
                OK_BODY.len()
            );
            socket.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8(received).unwrap()
        });

        let client = ApiClient {
            addr,
            access_key_id: "LTAItest".to_owned(),
            access_key_secret: "testsecret".to_owned(),
            timeout: Duration::from_secs(10),
        };
        let response = client
            .call(
                "DisasterDowngrade",
                &[("InstanceId", "a"), ("DowngradeInstanceId", "a")],
            )
            .await
            .unwrap();
        assert_eq!(response.request_id, "0B7E2A5C-1111-2222-3333-444455556666");
        assert!(response.received_at >= response.sent_at);

        let request = server.await.unwrap();
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "DowngradeInstanceId=a&InstanceId=a");
        let headers: Vec<(&str, &str)> = head
            .split("\r\n")
            .skip(1)
            .map(|line| line.split_once(": ").unwrap())
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("header {name} missing"))
        };
        assert_eq!(header("x-acs-action"), "DisasterDowngrade");
        assert_eq!(header("x-acs-version"), "2020-04-20");
        assert_eq!(header("x-acs-content-sha256"), hex_sha256(body.as_bytes()));
        assert_eq!(header("x-acs-signature-nonce").len(), 32);
        assert_eq!(header("host"), addr.to_string());

        // Recompute the signature from the headers named in SignedHeaders, as a server does.
        let authorization = header("authorization");
        let fields = authorization
            .strip_prefix("ACS3-HMAC-SHA256 ")
            .expect("authorization starts with the algorithm");
        let mut signed_headers = "";
        let mut signature = "";
        for field in fields.split(',') {
            let (name, value) = field.split_once('=').unwrap();
            match name {
                "Credential" => assert_eq!(value, "LTAItest"),
                "SignedHeaders" => signed_headers = value,
                "Signature" => signature = value,
                other => panic!("unexpected field {other}"),
            }
        }
        let to_sign: Vec<(&str, &str)> = signed_headers
            .split(';')
            .map(|name| (name, header(name)))
            .collect();
        let expected = sign_acs3(
            &RequestToSign {
                method: "POST",
                path: "/",
                query: &[],
                headers: &to_sign,
                body: body.as_bytes(),
            },
            "testsecret",
        );
        assert_eq!(signature, expected.signature);
    }
}
