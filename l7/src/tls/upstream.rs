//! TLS to backends (`tls = { ... }` under `[pool]`): verification against the
//! system roots or a given CA, the name to send and verify, an optional client
//! certificate (mTLS), or no verification at all when the operator says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{provider, read_certs, read_key, roots, TlsError};

/// A pool's upstream TLS, as the config gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsFiles {
    /// Check the backend's certificate (default true).
    pub verify: bool,
    /// Trust this CA instead of the system roots.
    pub ca: Option<PathBuf>,
    /// The name to send (SNI) and to verify; without it, the backend's IP address.
    pub sni: Option<String>,
    /// A client certificate and key to present (mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// What a connection to a TLS backend needs.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Offers the pool's HTTP versions by ALPN.
    pub config: Arc<ClientConfig>,
    /// Offers only `http/1.1`: for Upgrade requests, which HTTP/2 cannot carry.
    pub h1_config: Arc<ClientConfig>,
    pub sni: Option<ServerName<'static>>,
}

impl UpstreamTls {
    /// Loads the files; `alpn` is what the pool offers its backends, most
    /// preferred first.
    pub fn load(files: &UpstreamTlsFiles, alpn: Vec<Vec<u8>>) -> Result<UpstreamTls, TlsError> {
        let provider = Arc::new(provider());
        let at = files.ca.as_deref().unwrap_or(Path::new("tls"));
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(at, e))?;
        let builder = if files.verify {
            let roots = match &files.ca {
                Some(ca) => roots(ca)?,
                None => system_roots(),
            };
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        };
        let mut config = match &files.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
                .map_err(|source| TlsError::Mismatch {
                    cert: cert.clone(),
                    key: key.clone(),
                    source,
                })?,
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let h1_config = Arc::new(config.clone());
        config.alpn_protocols = alpn;
        let sni = match &files.sni {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|e| {
                invalid(
                    at,
                    rustls::Error::General(format!("invalid sni `{name}`: {e}")),
                )
            })?),
            None => None,
        };
        Ok(UpstreamTls {
            config: Arc::new(config),
            h1_config,
            sni,
        })
    }
}

fn invalid(path: &Path, source: rustls::Error) -> TlsError {
    TlsError::Invalid {
        path: path.to_owned(),
        source,
    }
}

/// The system's trust roots (what `/etc/ssl/certs` holds); unreadable ones are
/// skipped, as every TLS client does.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        tracing::warn!("no system trust roots found: TLS backends cannot be verified without `ca`");
    }
    roots
}

/// `verify = false`: any certificate is accepted, but the handshake signatures are
/// still checked, so the connection is at least encrypted to whoever holds the key.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
