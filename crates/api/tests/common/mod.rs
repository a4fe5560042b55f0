//! Test harness: a gateway on 127.0.0.1 with fixture accounts, a recording backend, a manual
//! clock at a fixed time, and a raw HTTP/1.1 client.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use switchyard_api::client::{
    ApiCall, SignedRequest, build_acs3_request, build_hmac_sha1_request, encode_params,
};
use switchyard_api::{
    AccessKey, Account, ActionContext, ApiServer, ApiSettings, BackendFuture,
    DisasterRecoveryBackend, Effect, GroupIdBackend, GroupIdInfo, ManualClock, RamUser,
    ServiceError, Statement, Tag, signature_v1,
};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The time of the signature test vectors; the server clock starts here.
pub const NOW: OffsetDateTime = datetime!(2025-01-01 00:00:00 UTC);
pub const ACCOUNT_ID: &str = "1000000000000001";
pub const OTHER_ACCOUNT_ID: &str = "2000000000000002";

/// A valid `DisasterDowngrade` form body.
pub const DOWNGRADE_FORM: &[(&str, &str)] = &[
    ("DowngradeInstanceId", "mqtt-cn-bbb"),
    ("InstanceId", "mqtt-cn-aaa"),
];

fn access_key(id: &str) -> AccessKey {
    AccessKey {
        id: id.to_owned(),
        secret: format!("{id}-secret"),
    }
}

fn statement(effect: Effect, actions: &[&str], resources: &[&str]) -> Statement {
    Statement {
        effect,
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
    }
}

fn ram_user(name: &str, policies: Vec<Statement>) -> RamUser {
    RamUser {
        name: name.to_owned(),
        access_keys: vec![access_key(&format!("LTAI{name}"))],
        policies,
    }
}

/// Root key of the main account.
pub fn root_key() -> AccessKey {
    access_key("LTAIroot")
}

/// Key of RAM user `LTAI<name>` of the main account; see [`accounts`] for the users.
pub fn user_key(name: &str) -> AccessKey {
    access_key(&format!("LTAI{name}"))
}

/// The fixture accounts:
/// - `operator`: allows `mq:Disaster*` on every resource;
/// - `viewer`: no policies;
/// - `downgrader`: allows only `mq:DisasterDowngrade`;
/// - `restricted`: allows `mq:*` on `mqtt-cn-aaa` only;
/// - `denied`: allows everything but denies `mq:DisasterDowngrade` on `mqtt-cn-bbb`;
/// - `hangzhou`: allows `mq:*` on resources in region `cn-hangzhou` only.
pub fn accounts() -> Vec<Account> {
    vec![
        Account {
            id: ACCOUNT_ID.to_owned(),
            access_keys: vec![root_key()],
            ram_users: vec![
                ram_user(
                    "operator",
                    vec![statement(Effect::Allow, &["mq:Disaster*"], &["*"])],
                ),
                ram_user("viewer", Vec::new()),
                ram_user(
                    "downgrader",
                    vec![statement(Effect::Allow, &["mq:DisasterDowngrade"], &["*"])],
                ),
                ram_user(
                    "restricted",
                    vec![statement(
                        Effect::Allow,
                        &["mq:*"],
                        &["acs:mq:*:*:mqtt-cn-aaa"],
                    )],
                ),
                ram_user(
                    "denied",
                    vec![
                        statement(Effect::Allow, &["*"], &["*"]),
                        statement(
                            Effect::Deny,
                            &["mq:DisasterDowngrade"],
                            &["acs:mq:*:*:mqtt-cn-bbb"],
                        ),
                    ],
                ),
                ram_user(
                    "hangzhou",
                    vec![statement(
                        Effect::Allow,
                        &["mq:*"],
                        &[&format!("acs:mq:cn-hangzhou:{ACCOUNT_ID}:*")],
                    )],
                ),
            ],
        },
        Account {
            id: OTHER_ACCOUNT_ID.to_owned(),
            access_keys: vec![access_key("LTAIother")],
            ram_users: Vec::new(),
        },
    ]
}

/// One call the backend received. Group ID calls put the Group ID in `target_instance_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendCall {
    pub method: &'static str,
    pub ctx: ActionContext,
    pub instance_id: String,
    pub target_instance_id: String,
}

/// A backend that records its calls and returns `failure` when one is set, after waiting
/// `delay` when one is set.
#[derive(Default)]
pub struct RecordingBackend {
    pub calls: Mutex<Vec<BackendCall>>,
    /// Tags of every `create_group_id` call, in order.
    pub created_tags: Mutex<Vec<Vec<Tag>>>,
    /// What `list_group_ids` returns.
    pub group_ids: Mutex<Vec<GroupIdInfo>>,
    pub failure: Mutex<Option<ServiceError>>,
    pub regions: Mutex<HashMap<String, String>>,
    pub delay: Mutex<StdDuration>,
}

impl RecordingBackend {
    pub fn calls(&self) -> Vec<BackendCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn fail_with(&self, error: ServiceError) {
        if let Ok(mut failure) = self.failure.lock() {
            *failure = Some(error);
        }
    }

    /// Makes every later call wait `delay` after it is recorded and before it returns.
    pub fn delay_calls(&self, delay: StdDuration) {
        if let Ok(mut current) = self.delay.lock() {
            *current = delay;
        }
    }

    async fn wait_delay(&self) {
        let delay = self.delay.lock().map(|d| *d).unwrap_or_default();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    pub fn set_region(&self, instance_id: &str, region: &str) {
        if let Ok(mut regions) = self.regions.lock() {
            regions.insert(instance_id.to_owned(), region.to_owned());
        }
    }

    fn record(
        &self,
        method: &'static str,
        ctx: &ActionContext,
        instance_id: &str,
        target: &str,
    ) -> Result<(), ServiceError> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(BackendCall {
                method,
                ctx: ctx.clone(),
                instance_id: instance_id.to_owned(),
                target_instance_id: target.to_owned(),
            });
        }
        match self.failure.lock().ok().and_then(|f| f.clone()) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl DisasterRecoveryBackend for RecordingBackend {
    fn downgrade<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        downgrade_instance_id: &'a str,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let result = self.record("downgrade", ctx, instance_id, downgrade_instance_id);
            self.wait_delay().await;
            result
        })
    }

    fn recover<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        recovery_instance_id: &'a str,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let result = self.record("recover", ctx, instance_id, recovery_instance_id);
            self.wait_delay().await;
            result
        })
    }

    fn instance_region(&self, instance_id: &str) -> Option<String> {
        self.regions.lock().ok()?.get(instance_id).cloned()
    }
}

impl GroupIdBackend for RecordingBackend {
    fn create_group_id<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        group_id: &'a str,
        tags: &'a [Tag],
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(mut created) = self.created_tags.lock() {
                created.push(tags.to_vec());
            }
            self.record("create_group_id", ctx, instance_id, group_id)
        })
    }

    fn delete_group_id<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        group_id: &'a str,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move { self.record("delete_group_id", ctx, instance_id, group_id) })
    }

    fn list_group_ids<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
    ) -> BackendFuture<'a, Vec<GroupIdInfo>> {
        Box::pin(async move {
            self.record("list_group_ids", ctx, instance_id, "")?;
            Ok(self.group_ids.lock().map(|g| g.clone()).unwrap_or_default())
        })
    }
}

/// A running gateway; dropping it shuts the server down.
pub struct TestServer {
    pub addr: SocketAddr,
    pub backend: Arc<RecordingBackend>,
    pub clock: Arc<ManualClock>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_settings(ApiSettings::default()).await
    }

    pub async fn with_settings(settings: ApiSettings) -> Self {
        let backend = Arc::new(RecordingBackend::default());
        let clock = Arc::new(ManualClock::new(NOW));
        let server = ApiServer::new(accounts(), settings, backend.clone(), clock.clone())
            .expect("fixture accounts and settings are valid")
            .with_group_id_backend(backend.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("read the bound address");
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = shutdown_signal.await;
        }));
        Self {
            addr,
            backend,
            clock,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Signs a POST with `form` as the body, the way the current SDK does by default.
    pub fn acs3(&self, key: &AccessKey, action: &str, form: &[(&str, &str)]) -> SignedRequest {
        let host = self.host();
        let nonce = next_nonce();
        build_acs3_request(
            key,
            &ApiCall {
                method: "POST",
                host: &host,
                action,
                query: &[],
                form,
                time: NOW,
                nonce: &nonce,
            },
        )
    }

    /// Signs a POST with HMAC-SHA1, common parameters in the query and `form` as the body.
    pub fn hmac(&self, key: &AccessKey, action: &str, form: &[(&str, &str)]) -> SignedRequest {
        let host = self.host();
        let nonce = next_nonce();
        build_hmac_sha1_request(
            key,
            &ApiCall {
                method: "POST",
                host: &host,
                action,
                query: &[],
                form,
                time: NOW,
                nonce: &nonce,
            },
        )
    }

    pub async fn send(&self, request: &SignedRequest) -> Reply {
        self.send_raw(&to_http(request)).await
    }

    /// Writes `bytes` as one request on a new connection and reads the reply.
    pub async fn send_raw(&self, bytes: &[u8]) -> Reply {
        send_raw_to(self.addr, bytes).await
    }

    /// Opens a connection to the server.
    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr)
            .await
            .expect("connect to the test server")
    }

    /// Completes the shutdown signal and waits for `serve` to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

/// Writes `bytes` as one request on a new connection to `addr` and reads the reply until the
/// server closes the connection.
pub async fn send_raw_to(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(bytes).await?;
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await?;
        Ok::<_, std::io::Error>(received)
    };
    let received = tokio::time::timeout(StdDuration::from_secs(10), exchange)
        .await
        .expect("the server replies within 10 s")
        .expect("the exchange succeeds");
    Reply::parse(&received)
}

/// Reads one response with a `content-length` from a connection that stays open.
pub async fn read_response(stream: &mut TcpStream) -> Reply {
    let read = async {
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(head_end) = find_head_end(&received) {
                let body_length = content_length(&received[..head_end]);
                if received.len() >= head_end + body_length {
                    received.truncate(head_end + body_length);
                    return Ok::<_, std::io::Error>(received);
                }
            }
            let count = stream.read(&mut chunk).await?;
            if count == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before the response ended",
                ));
            }
            received.extend_from_slice(&chunk[..count]);
        }
    };
    let received = tokio::time::timeout(StdDuration::from_secs(10), read)
        .await
        .expect("the server replies within 10 s")
        .expect("the response is complete");
    Reply::parse(&received)
}

/// Returns the length of the header block, blank line included.
fn find_head_end(received: &[u8]) -> Option<usize> {
    received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|position| position + 4)
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .expect("the response has a content-length")
}

/// Reads from `stream` until the server closes it, and returns the bytes received. A reset
/// counts as closed, since a server that closes with unread input sends RST instead of FIN.
pub async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let read = async {
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return received,
                Ok(count) => received.extend_from_slice(&chunk[..count]),
            }
        }
    };
    tokio::time::timeout(StdDuration::from_secs(5), read)
        .await
        .expect("the server closes the connection within 5 s")
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Returns a unique nonce of 32 hex digits, like the Python SDK's.
pub fn next_nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    format!("{:032x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Serializes a request as HTTP/1.1 with `Connection: close` and a `Content-Length`.
pub fn to_http(request: &SignedRequest) -> Vec<u8> {
    let mut bytes = http_head(request, "connection: close\r\n");
    bytes.extend_from_slice(&request.body);
    bytes
}

/// Serializes a request as HTTP/1.1 with a `Content-Length`, leaving the connection open.
pub fn to_http_keep_alive(request: &SignedRequest) -> Vec<u8> {
    let mut bytes = http_head(request, "");
    bytes.extend_from_slice(&request.body);
    bytes
}

/// Serializes the request line and headers, `extra` included, up to the blank line.
pub fn http_head(request: &SignedRequest, extra: &str) -> Vec<u8> {
    let mut text = format!("{} {} HTTP/1.1\r\n", request.method, request.path_and_query);
    for (name, value) in &request.headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("content-length: {}\r\n", request.body.len()));
    text.push_str(extra);
    text.push_str("\r\n");
    text.into_bytes()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    pub raw_body: String,
}

impl Reply {
    fn parse(received: &[u8]) -> Self {
        let text = String::from_utf8_lossy(received).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .expect("the response has a header block");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("the status line has a code");
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let body_json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
        Self {
            status,
            headers,
            body: body_json,
            raw_body: body.to_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn code(&self) -> &str {
        self.body["Code"].as_str().unwrap_or_default()
    }

    pub fn message(&self) -> &str {
        self.body["Message"].as_str().unwrap_or_default()
    }

    /// Field names of the JSON body, sorted.
    pub fn fields(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .body
            .as_object()
            .map(|object| object.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Replaces a query parameter's value, or removes it when `value` is `None`, in an encoded
/// path-and-query.
pub fn edit_query(path_and_query: &str, name: &str, value: Option<&str>) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let prefix = format!("{name}=");
    let pairs: Vec<String> = query
        .split('&')
        .filter_map(|pair| {
            if !pair.starts_with(&prefix) {
                return Some(pair.to_owned());
            }
            value.map(|v| format!("{prefix}{}", switchyard_api::percent_encode(v)))
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

pub fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "status of {}", reply.raw_body);
    assert_eq!(reply.code(), code, "code of {}", reply.raw_body);
}

pub fn assert_success(reply: &Reply) {
    assert_eq!(reply.status, 200, "status of {}", reply.raw_body);
    assert_eq!(reply.body["Success"], serde_json::json!(true));
}

/// Common parameters of an HMAC-SHA1 request the way the legacy SDK sends them, action
/// parameters included, all in the query string.
pub fn legacy_params(nonce: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AccessKeyId", "LTAIroot".to_owned()),
        ("Action", "DisasterDowngrade".to_owned()),
        ("DowngradeInstanceId", "mqtt-cn-bbb".to_owned()),
        ("Format", "JSON".to_owned()),
        ("InstanceId", "mqtt-cn-aaa".to_owned()),
        ("RegionId", "cn-hangzhou".to_owned()),
        ("SignatureMethod", "HMAC-SHA1".to_owned()),
        ("SignatureNonce", nonce.to_owned()),
        ("SignatureType", String::new()),
        ("SignatureVersion", "1.0".to_owned()),
        ("Timestamp", "2025-01-01T00:00:00Z".to_owned()),
        ("Version", "2020-04-20".to_owned()),
    ]
}

/// Signs `params` with HMAC-SHA1 and puts them all, `Signature` last, in the query string of
/// an empty-bodied request. Returns the request and the string to sign.
pub fn query_only_v1(
    server: &TestServer,
    method: &str,
    params: &[(&str, String)],
    secret: &str,
) -> (SignedRequest, String) {
    let borrowed: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let string_to_sign = signature_v1::string_to_sign(method, borrowed.iter().copied());
    let signature = signature_v1::sign(secret, &string_to_sign);
    let mut all = borrowed.clone();
    all.push(("Signature", signature.as_str()));
    let request = SignedRequest {
        method: method.to_owned(),
        path_and_query: format!("/?{}", encode_params(&all)),
        headers: vec![
            ("host".to_owned(), server.host()),
            (
                "content-type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("x-acs-action".to_owned(), "DisasterDowngrade".to_owned()),
            ("x-acs-version".to_owned(), "2020-04-20".to_owned()),
            ("x-sdk-invoke-type".to_owned(), "common".to_owned()),
        ],
        body: Vec::new(),
    };
    (request, string_to_sign)
}

pub fn set_header(request: &mut SignedRequest, name: &str, value: Option<&str>) {
    request.headers.retain(|(candidate, _)| candidate != name);
    if let Some(value) = value {
        request.headers.push((name.to_owned(), value.to_owned()));
    }
}

pub fn header<'r>(request: &'r SignedRequest, name: &str) -> &'r str {
    request
        .headers
        .iter()
        .find(|(candidate, _)| candidate == name)
        .map(|(_, value)| value.as_str())
        .unwrap_or_default()
}
