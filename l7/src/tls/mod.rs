//! TLS termination with rustls: certificates and keys loaded from PEM files (PKCS#8,
//! SEC1 or PKCS#1 keys), chosen per connection by SNI from each certificate's
//! subject alternative names (wildcards honoured), ALPN `h2` and `http/1.1`, TLS 1.2
//! and 1.3, session resumption by tickets and by cache, optional client certificates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

mod upstream;

pub use upstream::{UpstreamTls, UpstreamTlsFiles};

/// Sessions kept for resumption by id (TLS 1.2) per listener; tickets need none.
const SESSION_CACHE: usize = 4096;

/// One `{ cert, key }` pair from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM: the certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: the private key.
    pub key: PathBuf,
}

/// Why certificates could not be loaded; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {}: {source}", path.display())]
    Certs {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate in {}", .0.display())]
    NoCert(PathBuf),
    #[error("cannot read a private key from {}: {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{} cannot be used with {}: {source}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("no certificate given")]
    Empty,
}

/// The certificates of one listener, by the names they are valid for.
#[derive(Debug)]
pub struct Certs {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` certificates by `example.com`: a wildcard covers one label.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For clients that send no SNI, or a name no certificate has: the first one.
    default: Arc<CertifiedKey>,
}

impl Certs {
    /// Loads every pair; the first is the default.
    pub fn load(files: &[CertFiles]) -> Result<Certs, TlsError> {
        let provider = provider();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for f in files {
            let (key, names) = load_pair(f, &provider)?;
            for name in names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| Arc::clone(&key));
            }
            default.get_or_insert(key);
        }
        Ok(Certs {
            exact,
            wildcard,
            default: default.ok_or(TlsError::Empty)?,
        })
    }

    /// The certificate for `name` (an SNI host name).
    pub fn choose(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return &self.default;
        };
        self.exact
            .get(&name)
            .or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
            .unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.choose(hello.server_name())))
    }
}

/// A server config for `files`, asking for client certificates signed by
/// `client_ca` when given.
pub fn server_config(
    files: &[CertFiles],
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = Arc::new(Certs::load(files)?);
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| invalid(&files[0].cert, source))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| invalid(ca, rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    // The server's cipher suite order (strongest first, as the provider lists
    // them), not whatever the client prefers.
    config.ignore_client_order = true;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| invalid(&files[0].cert, e))?;
    Ok(Arc::new(config))
}

/// CA certificates from a PEM file, as trust roots.
pub fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| invalid(path, e))?;
    }
    Ok(roots)
}

/// The crypto provider fulcrum uses everywhere (aws-lc-rs, rustls' default).
pub fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

fn invalid(path: &Path, source: rustls::Error) -> TlsError {
    TlsError::Invalid {
        path: path.to_owned(),
        source,
    }
}

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certs {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(path.to_owned()));
    }
    Ok(certs)
}

/// A private key in any of the PEM forms (PKCS#8, SEC1, PKCS#1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Key {
        path: path.to_owned(),
        source,
    })
}

/// Loads one pair, checks that key and certificate belong together, and returns
/// the names the certificate is valid for.
fn load_pair(
    f: &CertFiles,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, Vec<String>), TlsError> {
    let chain = read_certs(&f.cert)?;
    let key = read_key(&f.key)?;
    let names = webpki::EndEntityCert::try_from(&chain[0])
        .map(|cert| cert.valid_dns_names().map(str::to_owned).collect())
        .map_err(|e| invalid(&f.cert, rustls::Error::General(e.to_string())))?;
    let certified =
        CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Mismatch {
            cert: f.cert.clone(),
            key: f.key.clone(),
            source,
        })?;
    Ok((Arc::new(certified), names))
}
