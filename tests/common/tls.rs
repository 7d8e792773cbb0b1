//! Certificates made at test time (rcgen): a test CA and leaf certificates for
//! given names, written as PEM files; and a rustls client that reports which
//! certificate and ALPN protocol the server chose.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::scratch;

/// A certificate authority that issues leaf certificates into a scratch folder.
pub struct Pki {
    pub dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    pub ca_pem: PathBuf,
}

/// One issued certificate and where its files are.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = scratch(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("fulcrum test CA {name}"));
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        std::fs::write(dir.join("ca.key"), ca_key.serialize_pem()).unwrap();
        Pki {
            dir,
            ca,
            ca_key,
            ca_pem,
        }
    }

    /// Issues a certificate for `names`, written as `<file>.pem` and `<file>.key`
    /// (PKCS#8).
    pub fn issue(&self, file: &str, names: &[&str]) -> Leaf {
        self.issue_with(file, names, |_| {})
    }

    /// Issues a certificate that expired in 2020.
    pub fn issue_expired(&self, file: &str, names: &[&str]) -> Leaf {
        self.issue_with(file, names, |p| {
            p.not_before = rcgen::date_time_ymd(2019, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 1, 1);
        })
    }

    fn issue_with(
        &self,
        file: &str,
        names: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        edit(&mut params);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }
}

/// What a TLS client saw of the server.
pub struct Seen {
    pub cert: CertificateDer<'static>,
    pub alpn: Option<Vec<u8>>,
    /// The answer to one HTTP/1.1 GET, when one was sent.
    pub answer: String,
}

/// A rustls client config trusting the CA certificates in `ca`.
pub fn client_config(ca: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Connects with rustls, trusting `ca`, sending `sni` (none when `None`), and
/// asks for `alpn`; then sends a plain GET when the server chose HTTP/1.1.
pub fn handshake(addr: SocketAddr, ca: &Path, sni: Option<&str>, alpn: &[&[u8]]) -> Seen {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut config = client_config(ca);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // rustls sends no SNI for an IP address: the server must fall back to its
    // default certificate, which then has to name 127.0.0.1.
    let name = ServerName::try_from(sni.unwrap_or("127.0.0.1").to_owned()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = match connector.connect(name, tcp).await {
            Ok(tls) => tls,
            Err(e) => panic!("handshake with {addr} (sni {sni:?}) failed: {e}"),
        };
        let (_, session) = tls.get_ref();
        let cert = session.peer_certificates().unwrap()[0].clone().into_owned();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let mut answer = String::new();
        if alpn.as_deref() != Some(b"h2") {
            tls.write_all(b"GET /tls HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            tls.read_to_string(&mut answer).await.unwrap_or_default();
        }
        Seen { cert, alpn, answer }
    })
}
