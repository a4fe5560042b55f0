//! Loading TLS listener files: every error names the file and what is wrong with it.

use std::path::Path;

use switchyard_transport::testing::{CLIENT_COMMON_NAME, TestPki};
use switchyard_transport::{
    FileRole, TlsConfigError, TlsFiles, TransportAcceptor, load_server_config,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write file");
    path
}

fn load_error(files: &TlsFiles) -> TlsConfigError {
    match load_server_config(files) {
        Ok(_) => panic!("files were accepted: {files:?}"),
        Err(err) => err,
    }
}

/// Asserts that `err` is about `role` in `path` and that its message names the file and
/// contains `expected`.
fn assert_names_file(err: &TlsConfigError, role: FileRole, path: &Path, expected: &str) {
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "path missing in: {message}"
    );
    assert!(
        message.contains(expected),
        "{expected:?} missing in: {message}"
    );
    match err {
        TlsConfigError::Read { role: actual, .. }
        | TlsConfigError::Invalid { role: actual, .. } => {
            assert_eq!(*actual, role, "{message}");
        }
        other => panic!("expected an error about the {role} file, got: {other}"),
    }
}

#[test]
fn valid_files_load() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let files = TestPki::generate().write_files(dir.path());
    load_server_config(&files.tls_files(false)).expect("server files load");
    load_server_config(&files.tls_files(true)).expect("files with client CA load");
}

#[test]
fn missing_certificate_is_named() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut files = TestPki::generate().write_files(dir.path()).tls_files(false);
    files.certificate = dir.path().join("absent.pem");
    let err = load_error(&files);
    assert_names_file(
        &err,
        FileRole::Certificate,
        &files.certificate,
        "failed to read",
    );
}

#[test]
fn missing_private_key_is_named() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut files = TestPki::generate().write_files(dir.path()).tls_files(false);
    files.private_key = dir.path().join("absent.key");
    let err = load_error(&files);
    assert_names_file(
        &err,
        FileRole::PrivateKey,
        &files.private_key,
        "private key",
    );
}

#[test]
fn missing_client_ca_is_named() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut files = TestPki::generate().write_files(dir.path()).tls_files(true);
    let absent = dir.path().join("absent-ca.pem");
    files.client_ca = Some(absent.clone());
    let err = load_error(&files);
    assert_names_file(&err, FileRole::ClientCa, &absent, "client CA");
}

#[test]
fn certificate_without_pem_block_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut files = TestPki::generate().write_files(dir.path()).tls_files(false);
    files.certificate = write(dir.path(), "plain.pem", "this is not a certificate\n");
    let err = load_error(&files);
    assert_names_file(
        &err,
        FileRole::Certificate,
        &files.certificate,
        "BEGIN CERTIFICATE",
    );
}

#[test]
fn certificate_with_bad_base64_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut files = TestPki::generate().write_files(dir.path()).tls_files(false);
    let text = "-----BEGIN CERTIFICATE-----\n%%%%not base64%%%%\n-----END CERTIFICATE-----\n";
    files.certificate = write(dir.path(), "bad64.pem", text);
    let err = load_error(&files);
    assert_names_file(&err, FileRole::Certificate, &files.certificate, "base64");
}

#[test]
fn certificate_without_end_line_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pki = TestPki::generate();
    let mut files = pki.write_files(dir.path()).tls_files(false);
    let truncated: String = pki
        .server_certificate
        .lines()
        .filter(|line| !line.starts_with("-----END"))
        .map(|line| format!("{line}\n"))
        .collect();
    files.certificate = write(dir.path(), "truncated.pem", &truncated);
    let err = load_error(&files);
    assert_names_file(
        &err,
        FileRole::Certificate,
        &files.certificate,
        "END CERTIFICATE",
    );
}

#[test]
fn certificate_with_bad_der_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut files = TestPki::generate().write_files(dir.path()).tls_files(false);
    // Valid PEM and base64 ("hello world") around bytes that are no X.509 certificate.
    let text = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    files.certificate = write(dir.path(), "garbage.pem", text);
    let err = load_error(&files);
    assert_names_file(&err, FileRole::Certificate, &files.certificate, "X.509");
}

#[test]
fn key_file_without_key_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pki = TestPki::generate();
    let mut files = pki.write_files(dir.path()).tls_files(false);
    files.private_key = write(dir.path(), "cert-as-key.pem", &pki.server_certificate);
    let err = load_error(&files);
    assert_names_file(
        &err,
        FileRole::PrivateKey,
        &files.private_key,
        "BEGIN PRIVATE KEY",
    );
}

#[test]
fn encrypted_key_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut files = TestPki::generate().write_files(dir.path()).tls_files(false);
    let text =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8=\n-----END ENCRYPTED PRIVATE KEY-----\n";
    files.private_key = write(dir.path(), "encrypted.key", text);
    let err = load_error(&files);
    assert_names_file(&err, FileRole::PrivateKey, &files.private_key, "decrypt");
}

#[test]
fn mismatched_key_names_both_files() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pki = TestPki::generate();
    let written = pki.write_files(dir.path());
    let mut files = written.tls_files(false);
    files.private_key = written.client_key.clone();
    let err = load_error(&files);
    let message = err.to_string();
    assert!(matches!(err, TlsConfigError::Identity { .. }), "{message}");
    assert!(
        message.contains(&files.certificate.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&files.private_key.display().to_string()),
        "{message}"
    );
}

#[test]
fn client_ca_without_certificate_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pki = TestPki::generate();
    let mut files = pki.write_files(dir.path()).tls_files(true);
    let key_only = write(dir.path(), "key-as-ca.pem", &pki.client_key);
    files.client_ca = Some(key_only.clone());
    let err = load_error(&files);
    assert_names_file(&err, FileRole::ClientCa, &key_only, "BEGIN CERTIFICATE");
}

#[tokio::test]
async fn loaded_files_serve_mutual_tls() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pki = TestPki::generate();
    let files = pki.write_files(dir.path()).tls_files(true);
    let config = load_server_config(&files).expect("files load");
    let acceptor = TransportAcceptor::tls(config);

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let server = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.expect("accept");
        let mut accepted = acceptor.accept(stream, peer).await.expect("handshake");
        let mut buf = [0; 3];
        accepted.stream.read_exact(&mut buf).await.expect("read");
        (accepted.info, buf)
    });
    let mut client = pki.connect_tls(addr, true).await.expect("TLS connect");
    client.write_all(b"abc").await.expect("write");
    client.flush().await.expect("flush");

    let (info, received) = server.await.expect("server task");
    assert_eq!(&received, b"abc");
    let certificate = info.client_certificate.expect("client certificate");
    assert_eq!(certificate.common_name.as_deref(), Some(CLIENT_COMMON_NAME));
}
