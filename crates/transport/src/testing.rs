//! Test support for the crates that run Switchyard's transports, built only with the
//! `test-util` feature. [`TestPki`] is a throwaway PKI made with rcgen: a CA, a server
//! certificate for `localhost` and 127.0.0.1, and a client certificate. The module also has the
//! client side of TLS and WebSocket connections, and [`MqttClient`], which sends and reads exact
//! MQTT packets over any byte stream.
//!
//! Everything here panics on failure, because it runs only inside tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use switchyard_codec::{ConnAck, Connect, Packet, ProtocolVersion, decode_packet, encode_packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;

use crate::tls::{TlsFiles, crypto_provider, server_config};

/// Common name of the client certificate of [`TestPki::generate`].
pub const CLIENT_COMMON_NAME: &str = "GID_test@@@device-1";

/// A CA with one server and one client certificate, all as PEM text.
#[derive(Clone, Debug)]
pub struct TestPki {
    pub ca_certificate: String,
    pub server_certificate: String,
    pub server_key: String,
    pub client_certificate: String,
    pub client_key: String,
}

/// Paths of the PEM files that [`TestPki::write_files`] wrote.
#[derive(Clone, Debug)]
pub struct TestPkiFiles {
    pub ca_certificate: PathBuf,
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
}

impl TestPkiFiles {
    /// Returns the files of a server listener; with `client_ca`, clients need a certificate.
    pub fn tls_files(&self, client_ca: bool) -> TlsFiles {
        TlsFiles {
            certificate: self.server_certificate.clone(),
            private_key: self.server_key.clone(),
            client_ca: client_ca.then(|| self.ca_certificate.clone()),
        }
    }
}

impl TestPki {
    /// Generates the CA and both certificates with new ECDSA P-256 keys.
    pub fn generate() -> TestPki {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_certificate = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("generate server key");
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let mut server_params = CertificateParams::new(names).expect("server params");
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_certificate = server_params
            .signed_by(&server_key, &issuer)
            .expect("sign server certificate");

        let client_key = KeyPair::generate().expect("generate client key");
        let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        client_params
            .distinguished_name
            .push(DnType::CommonName, CLIENT_COMMON_NAME);
        client_params
            .distinguished_name
            .push(DnType::OrganizationName, "Switchyard tests");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_certificate = client_params
            .signed_by(&client_key, &issuer)
            .expect("sign client certificate");

        TestPki {
            ca_certificate: ca_certificate.pem(),
            server_certificate: server_certificate.pem(),
            server_key: server_key.serialize_pem(),
            client_certificate: client_certificate.pem(),
            client_key: client_key.serialize_pem(),
        }
    }

    /// Writes every certificate and key into `dir` as PEM files.
    pub fn write_files(&self, dir: &Path) -> TestPkiFiles {
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).expect("write PEM file");
            path
        };
        TestPkiFiles {
            ca_certificate: write("ca.pem", &self.ca_certificate),
            server_certificate: write("server.pem", &self.server_certificate),
            server_key: write("server.key", &self.server_key),
            client_certificate: write("client.pem", &self.client_certificate),
            client_key: write("client.key", &self.client_key),
        }
    }

    /// Builds server settings from the PEM text; with `client_ca`, clients need a certificate.
    pub fn server_config(&self, client_ca: bool) -> Arc<ServerConfig> {
        let roots = client_ca.then(|| self.roots());
        server_config(
            certificates(&self.server_certificate),
            private_key(&self.server_key),
            roots,
        )
        .expect("server config")
    }

    /// Builds client settings that trust the test CA, presenting the client certificate when
    /// `with_certificate` is set.
    pub fn client_config(&self, with_certificate: bool) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(self.roots());
        let config = if with_certificate {
            let chain = certificates(&self.client_certificate);
            builder
                .with_client_auth_cert(chain, private_key(&self.client_key))
                .expect("client certificate")
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(config)
    }

    /// Opens a TCP connection to `addr` and runs the TLS handshake for server name `localhost`.
    pub async fn connect_tls(
        &self,
        addr: SocketAddr,
        with_certificate: bool,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let connector = TlsConnector::from(self.client_config(with_certificate));
        let name = ServerName::try_from("localhost").expect("valid server name");
        connector.connect(name, tcp).await
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for certificate in certificates(&self.ca_certificate) {
            roots.add(certificate).expect("add test CA");
        }
        roots
    }
}

fn certificates(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

fn private_key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("PEM private key")
}

/// Runs the client side of a WebSocket upgrade on `stream` for `url`, offering `subprotocols`
/// in one `Sec-WebSocket-Protocol` header (none when empty).
pub async fn connect_websocket<S>(
    stream: S,
    url: &str,
    subprotocols: &[&str],
) -> Result<(WebSocketStream<S>, Response), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url.into_client_request()?;
    if !subprotocols.is_empty() {
        let offered = HeaderValue::from_str(&subprotocols.join(", ")).expect("header value");
        request
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, offered);
    }
    tokio_tungstenite::client_async(request, stream).await
}

/// Upper bound for one [`MqttClient::receive`], so a broken server fails a test instead of
/// hanging it.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Encodes `packets` back to back, as one buffer.
pub fn encode_packets(packets: &[Packet], version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    for packet in packets {
        encode_packet(packet, version, &mut out);
    }
    out
}

/// A raw MQTT client that writes exact packets and reads the server's packets one at a time.
pub struct MqttClient<S> {
    pub stream: S,
    pub version: ProtocolVersion,
    buffer: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> MqttClient<S> {
    pub fn new(stream: S, version: ProtocolVersion) -> MqttClient<S> {
        MqttClient {
            stream,
            version,
            buffer: BytesMut::new(),
        }
    }

    /// Writes `packets` with one write and flushes.
    pub async fn send(&mut self, packets: &[Packet]) {
        let out = encode_packets(packets, self.version);
        self.stream.write_all(&out).await.expect("write packets");
        self.stream.flush().await.expect("flush packets");
    }

    /// Reads the next packet, or returns `None` when the server closes the connection or the
    /// read fails. Panics if nothing arrives within [`RECEIVE_TIMEOUT`].
    pub async fn receive(&mut self) -> Option<Packet> {
        let read = async {
            loop {
                match decode_packet(&mut self.buffer, self.version, 1 << 20) {
                    Ok(Some(packet)) => return Some(packet),
                    Ok(None) => {}
                    Err(err) => panic!("server sent an invalid packet: {err}"),
                }
                match self.stream.read_buf(&mut self.buffer).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(RECEIVE_TIMEOUT, read)
            .await
            .expect("server responded in time")
    }

    /// Sends `connect` and returns the CONNACK, panicking on anything else.
    pub async fn connect(&mut self, connect: Connect) -> ConnAck {
        self.send(&[Packet::Connect(Box::new(connect))]).await;
        match self.receive().await {
            Some(Packet::ConnAck(connack)) => connack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}
