//! TLS server settings: PEM certificates and keys read from files, the rustls `ServerConfig`
//! built from them, and the client certificate a device presented.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// The PEM files of a `tls` or `wss` listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain, the server's own certificate first.
    pub certificate: PathBuf,
    /// Private key of the server certificate: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted.
    pub private_key: PathBuf,
    /// CA certificates that client certificates must chain to. When set, every client must
    /// present a valid certificate during the TLS handshake.
    pub client_ca: Option<PathBuf>,
}

/// The file of a [`TlsFiles`] that an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRole {
    Certificate,
    PrivateKey,
    ClientCa,
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileRole::Certificate => "certificate",
            FileRole::PrivateKey => "private key",
            FileRole::ClientCa => "client CA",
        })
    }
}

/// A failure to build TLS server settings, naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("failed to read {role} file {}: {source}", path.display())]
    Read {
        role: FileRole,
        path: PathBuf,
        source: io::Error,
    },
    #[error("invalid {role} file {}: {message}", path.display())]
    Invalid {
        role: FileRole,
        path: PathBuf,
        message: String,
    },
    #[error(
        "certificate {} and private key {} cannot be used together: {source}; check that the key \
         belongs to the first certificate in the file",
        certificate.display(),
        private_key.display()
    )]
    Identity {
        certificate: PathBuf,
        private_key: PathBuf,
        source: rustls::Error,
    },
    #[error("failed to set up TLS: {0}")]
    Setup(String),
}

/// Returns the rustls cryptography provider Switchyard uses (ring).
///
/// Every config is built with this provider explicitly, so nothing depends on the process-wide
/// default provider being installed.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the files of a listener and builds its TLS server settings.
///
/// Errors name the file and describe what is wrong with it: missing or unreadable, not PEM, no
/// certificate or key in it, or a key that does not match the certificate.
pub fn load_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let certificates = load_certificates(FileRole::Certificate, &files.certificate)?;
    let key = load_private_key(&files.private_key)?;
    let client_roots = match &files.client_ca {
        Some(path) => Some(load_client_roots(path)?),
        None => None,
    };
    server_config(certificates, key, client_roots).map_err(|err| match err {
        ServerConfigError::Identity(source) => TlsConfigError::Identity {
            certificate: files.certificate.clone(),
            private_key: files.private_key.clone(),
            source,
        },
        ServerConfigError::ClientVerifier(message) => match &files.client_ca {
            Some(path) => invalid(FileRole::ClientCa, path, message),
            None => TlsConfigError::Setup(message),
        },
        ServerConfigError::Setup(message) => TlsConfigError::Setup(message),
    })
}

/// A failure of [`server_config`] on certificates and keys already decoded.
#[derive(Debug, thiserror::Error)]
pub enum ServerConfigError {
    #[error("the certificate chain and private key cannot be used together: {0}")]
    Identity(rustls::Error),
    #[error("failed to build the client certificate verifier: {0}")]
    ClientVerifier(String),
    #[error("failed to set up TLS: {0}")]
    Setup(String),
}

/// Builds TLS server settings from a certificate chain and its key, with TLS 1.2 and 1.3.
///
/// With `client_roots`, the handshake requires a client certificate that chains to one of them;
/// without, no client certificate is requested.
pub fn server_config(
    certificates: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<RootCertStore>,
) -> Result<Arc<ServerConfig>, ServerConfigError> {
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| ServerConfigError::Setup(err.to_string()))?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| ServerConfigError::ClientVerifier(err.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certificates, key)
        .map_err(ServerConfigError::Identity)?;
    Ok(Arc::new(config))
}

/// Reads every PEM certificate in `path`, in file order, and checks that each parses as X.509.
/// Other PEM sections, such as a key in the same file, are skipped.
pub fn load_certificates(
    role: FileRole,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let contents = read_file(role, path)?;
    let mut certificates = Vec::new();
    for item in CertificateDer::pem_slice_iter(&contents) {
        let certificate = item.map_err(|err| invalid(role, path, describe_pem_error(&err)))?;
        if let Err(err) = x509_parser::parse_x509_certificate(certificate.as_ref()) {
            let message = format!(
                "certificate {} in the file is not a valid X.509 certificate: {err}",
                certificates.len() + 1
            );
            return Err(invalid(role, path, message));
        }
        certificates.push(certificate);
    }
    if certificates.is_empty() {
        let message = "it contains no PEM certificate; expected a block that starts with \
                       -----BEGIN CERTIFICATE-----";
        return Err(invalid(role, path, message.to_owned()));
    }
    Ok(certificates)
}

/// Reads the first private key in `path`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let role = FileRole::PrivateKey;
    let contents = read_file(role, path)?;
    match PrivateKeyDer::from_pem_slice(&contents) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if contains(&contents, b"ENCRYPTED PRIVATE KEY") => {
            let message = "the key is encrypted; decrypt it first, for example with \
                           `openssl pkey -in KEY -out KEY.plain`";
            Err(invalid(role, path, message.to_owned()))
        }
        Err(pem::Error::NoItemsFound) => {
            let message = "it contains no private key; expected a block that starts with \
                           -----BEGIN PRIVATE KEY-----, -----BEGIN RSA PRIVATE KEY----- or \
                           -----BEGIN EC PRIVATE KEY-----";
            Err(invalid(role, path, message.to_owned()))
        }
        Err(err) => Err(invalid(role, path, describe_pem_error(&err))),
    }
}

/// Reads the CA certificates of a `client_ca` file into a root store.
pub fn load_client_roots(path: &Path) -> Result<RootCertStore, TlsConfigError> {
    let role = FileRole::ClientCa;
    let certificates = load_certificates(role, path)?;
    let mut roots = RootCertStore::empty();
    for (index, certificate) in certificates.into_iter().enumerate() {
        if let Err(err) = roots.add(certificate) {
            let message = format!(
                "certificate {} in the file is not usable as a CA: {err}",
                index + 1
            );
            return Err(invalid(role, path, message));
        }
    }
    Ok(roots)
}

fn read_file(role: FileRole, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read {
        role,
        path: path.to_owned(),
        source,
    })
}

fn invalid(role: FileRole, path: &Path, message: String) -> TlsConfigError {
    TlsConfigError::Invalid {
        role,
        path: path.to_owned(),
        message,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn describe_pem_error(err: &pem::Error) -> String {
    match err {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a PEM section has no end line -----END {}-----",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => {
            format!("invalid PEM begin line {:?}", String::from_utf8_lossy(line))
        }
        pem::Error::Base64Decode(detail) => {
            format!("a PEM section is not valid base64 ({detail})")
        }
        other => format!("it is not valid PEM: {other}"),
    }
}

/// The certificate a client presented in the TLS handshake, already verified against the
/// listener's `client_ca`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// Subject distinguished name in RFC 4514 style, for example `CN=GID_a@@@dev-1, O=Example`.
    /// Empty when the certificate could not be parsed beyond what the TLS verifier checked.
    pub subject: String,
    /// First common name (CN) of the subject, if it has one that is a string.
    pub common_name: Option<String>,
    /// SHA-256 of the DER certificate, as lowercase hex.
    pub sha256_fingerprint: String,
    /// The DER certificate itself.
    pub der: CertificateDer<'static>,
}

impl ClientCertificate {
    /// Describes a DER end-entity certificate. A certificate that the X.509 parser rejects
    /// gets an empty subject and no common name instead of an error.
    pub fn from_der(der: CertificateDer<'static>) -> ClientCertificate {
        let sha256_fingerprint = hex::encode(Sha256::digest(der.as_ref()));
        let (subject, common_name) = match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_rest, certificate)) => {
                let subject = certificate.subject();
                let common_name = subject
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                    .map(str::to_owned);
                (subject.to_string(), common_name)
            }
            Err(_) => (String::new(), None),
        };
        ClientCertificate {
            subject,
            common_name,
            sha256_fingerprint,
            der,
        }
    }
}
