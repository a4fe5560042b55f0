//! `switchyard serve` with TLS, WebSocket and secure WebSocket listeners: the binary starts,
//! devices connect over each transport, and bad listener files stop the start with a message
//! that names the file.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use switchyard_codec::{Connect, Properties, ProtocolVersion, ReasonCode};
use switchyard_transport::WebSocketByteStream;
use switchyard_transport::testing::{MqttClient, TestPki, TestPkiFiles, connect_websocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

mod common;

use common::{BINARY, START_TIMEOUT, Server};

/// Renders a configuration with one open instance (anonymous logins, no registration checks)
/// in a DR group with a second instance. `listeners` is the instance's listener list and
/// `global` the group's.
fn config(data_dir: &Path, listeners: &str, global: &str) -> String {
    let data_dir = data_dir.display();
    format!(
        r#"
data_dir = "{data_dir}"

[api]
listen = "127.0.0.1:0"

[[accounts]]
id = "1000000000000001"
access_keys = [{{ id = "LTAItransport", secret = "transport-secret" }}]

[[instances]]
id = "mqtt-cn-tls"
account = "1000000000000001"
region = "cn-hangzhou"
edition = "platinum"
disaster_recovery = true
allow_anonymous = true
require_registered_group_ids = false
require_registered_parent_topics = false
listeners = [{listeners}]

[[instances]]
id = "mqtt-cn-other"
account = "1000000000000001"
region = "cn-shanghai"
edition = "platinum"
disaster_recovery = true
allow_anonymous = true
require_registered_group_ids = false
require_registered_parent_topics = false

[[disaster_recovery_groups]]
id = "global"
instances = ["mqtt-cn-tls", "mqtt-cn-other"]
listeners = [{global}]
"#
    )
}

fn tls_listener(protocol: &str, files: &TestPkiFiles, extra: &str) -> String {
    format!(
        r#"{{ protocol = "{protocol}", listen = "127.0.0.1:0", certificate = "{}", private_key = "{}"{extra} }}"#,
        files.server_certificate.display(),
        files.server_key.display()
    )
}

/// Runs `switchyard serve --config` on `text` and returns its output once it exits, which it
/// must do within the start timeout.
fn serve_expecting_exit(dir: &Path, text: &str) -> Output {
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, text).expect("write configuration");
    let mut child = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard");
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while child.try_wait().expect("poll child").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("switchyard kept running with an invalid configuration");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("collect output")
}

fn anonymous_connect(client_id: &str) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

async fn assert_connects<S: AsyncRead + AsyncWrite + Unpin>(stream: S, client_id: &str) {
    let mut client = MqttClient::new(stream, ProtocolVersion::V5);
    let connack = client.connect(anonymous_connect(client_id)).await;
    assert_eq!(
        connack.reason,
        ReasonCode::SUCCESS,
        "{client_id}: {connack:?}"
    );
}

#[tokio::test]
async fn serve_accepts_every_transport() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pki = TestPki::generate();
    let files = pki.write_files(dir.path());
    let client_ca = format!(r#", client_ca = "{}""#, files.ca_certificate.display());
    let listeners = [
        r#"{ protocol = "tcp", listen = "127.0.0.1:0" }"#.to_owned(),
        tls_listener("tls", &files, &client_ca),
        r#"{ protocol = "ws", listen = "127.0.0.1:0", path = "/devices" }"#.to_owned(),
        tls_listener("wss", &files, ""),
    ]
    .join(", ");
    let global = [
        tls_listener("tls", &files, ""),
        r#"{ protocol = "ws", listen = "127.0.0.1:0" }"#.to_owned(),
    ]
    .join(", ");
    let server = Server::start(
        dir.path(),
        &config(&dir.path().join("data"), &listeners, &global),
    );

    let tcp = TcpStream::connect(server.endpoint("instance", "mqtt-cn-tls", "tcp"))
        .await
        .expect("TCP connect");
    assert_connects(tcp, "tcp-device").await;

    let addr = server.endpoint("instance", "mqtt-cn-tls", "tls");
    let tls = pki.connect_tls(addr, true).await.expect("TLS connect");
    assert_connects(tls, "tls-device").await;

    let addr = server.endpoint("instance", "mqtt-cn-tls", "ws");
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let url = format!("ws://{addr}/devices");
    let (ws, _) = connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect("upgrade");
    assert_connects(WebSocketByteStream::new(ws), "ws-device").await;

    let addr = server.endpoint("instance", "mqtt-cn-tls", "wss");
    let tls = pki.connect_tls(addr, false).await.expect("TLS connect");
    let (ws, _) = connect_websocket(tls, "wss://localhost/mqtt", &["mqtt"])
        .await
        .expect("upgrade");
    assert_connects(WebSocketByteStream::new(ws), "wss-device").await;

    let addr = server.endpoint("global", "global", "tls");
    let tls = pki.connect_tls(addr, false).await.expect("TLS connect");
    assert_connects(tls, "global-tls-device").await;

    let addr = server.endpoint("global", "global", "ws");
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let url = format!("ws://{addr}/mqtt");
    let (ws, _) = connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect("upgrade");
    assert_connects(WebSocketByteStream::new(ws), "global-ws-device").await;
}

#[test]
fn serve_rejects_missing_certificate() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut files = TestPki::generate().write_files(dir.path());
    files.server_certificate = dir.path().join("missing.pem");
    let listeners = tls_listener("tls", &files, "");
    let output = serve_expecting_exit(
        dir.path(),
        &config(&dir.path().join("data"), &listeners, ""),
    );

    assert!(!output.status.success(), "switchyard started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let missing = files.server_certificate.display().to_string();
    assert!(stderr.contains(&missing), "{stderr}");
    assert!(
        stderr.contains("failed to read certificate file"),
        "{stderr}"
    );
    assert!(stderr.contains("instance mqtt-cn-tls"), "{stderr}");
}

#[test]
fn serve_rejects_bad_pem() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut files = TestPki::generate().write_files(dir.path());
    files.server_certificate = dir.path().join("bad.pem");
    std::fs::write(&files.server_certificate, "not a certificate\n").expect("write file");
    let global = tls_listener("wss", &files, "");
    let output = serve_expecting_exit(dir.path(), &config(&dir.path().join("data"), "", &global));

    assert!(!output.status.success(), "switchyard started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let bad = files.server_certificate.display().to_string();
    assert!(stderr.contains(&bad), "{stderr}");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");
    assert!(
        stderr.contains("disaster-recovery group global"),
        "{stderr}"
    );
}

#[test]
fn serve_rejects_tls_without_private_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let files = TestPki::generate().write_files(dir.path());
    let listeners = format!(
        r#"{{ protocol = "tls", listen = "127.0.0.1:0", certificate = "{}" }}"#,
        files.server_certificate.display()
    );
    let output = serve_expecting_exit(
        dir.path(),
        &config(&dir.path().join("data"), &listeners, ""),
    );

    assert!(!output.status.success(), "switchyard started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no private_key"), "{stderr}");
    assert!(stderr.contains("mqtt-cn-tls"), "{stderr}");
}
