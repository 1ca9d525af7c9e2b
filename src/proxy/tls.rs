//! TLS for the data path: the server configuration (PEM certificates, several chosen
//! by SNI, TLS 1.2 + 1.3, ALPN `http/1.1`, session resumption by tickets and a
//! session cache) and the client configuration for TLS upstreams.
//!
//! Owns: certificate loading and the SNI resolver. Must not touch: sockets (the
//! acceptor lives in the worker), config parsing. Crypto provider: `ring` (one
//! provider, pure `cc` build, the one rustls tests most).
//! Reload: the control plane calls `build_server_config` again with the same
//! `Resumption` so tickets issued before the reload stay valid.

use std::path::Path;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{CertConfig, UpstreamTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read certificate chain: {msg}")]
    Cert { path: String, msg: String },
    #[error("{path}: cannot read private key: {msg}")]
    Key { path: String, msg: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Shared resumption state, kept across certificate reloads.
#[derive(Clone)]
pub struct Resumption {
    pub ticketer: Arc<dyn rustls::server::ProducesTickets>,
    pub cache: Arc<dyn StoresServerSessions>,
}

impl Resumption {
    pub fn new() -> Result<Resumption, TlsError> {
        Ok(Resumption {
            ticketer: rustls::crypto::ring::Ticketer::new()?,
            cache: rustls::server::ServerSessionMemoryCache::new(16384),
        })
    }
}

struct Entry {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// Picks a certificate by SNI: exact configured name, then `*.domain` configured
/// names, then any certificate whose SANs cover the name; else the first (default).
#[derive(Debug)]
struct SniResolver {
    entries: Vec<EntryDbg>,
}

struct EntryDbg(Entry);
impl std::fmt::Debug for EntryDbg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cert{:?}", self.0.names)
    }
}

impl SniResolver {
    fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let first = self.entries.first().map(|e| e.0.key.clone());
        let Some(sni) = sni else { return first };
        let sni = sni.to_ascii_lowercase();
        for e in &self.entries {
            if e.0.names.contains(&sni) {
                return Some(e.0.key.clone());
            }
        }
        for e in &self.entries {
            for n in &e.0.names {
                if let Some(suffix) = n.strip_prefix("*.") {
                    if let Some((_, rest)) = sni.split_once('.') {
                        if rest == suffix {
                            return Some(e.0.key.clone());
                        }
                    }
                }
            }
        }
        if let Ok(name) = ServerName::try_from(sni.as_str()) {
            for e in &self.entries {
                if !e.0.names.is_empty() {
                    continue;
                }
                if let Some(der) = e.0.key.cert.first() {
                    if let Ok(ee) = webpki::EndEntityCert::try_from(der) {
                        if ee.verify_is_valid_for_subject_name(&name).is_ok() {
                            return Some(e.0.key.clone());
                        }
                    }
                }
            }
        }
        first
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}

fn load_certified_key(c: &CertConfig) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert_file)
        .map_err(|e| TlsError::Cert {
            path: c.cert_file.display().to_string(),
            msg: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: c.cert_file.display().to_string(),
            msg: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: c.cert_file.display().to_string(),
            msg: "no CERTIFICATE block found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&c.key_file).map_err(|e| TlsError::Key {
        path: c.key_file.display().to_string(),
        msg: e.to_string(),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key {
            path: c.key_file.display().to_string(),
            msg: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| TlsError::Key {
        path: c.key_file.display().to_string(),
        msg: format!(
            "key does not match certificate {}: {e}",
            c.cert_file.display()
        ),
    })?;
    Ok(ck)
}

/// Builds the HTTPS listener configuration from the certificate list.
pub fn build_server_config(
    certs: &[CertConfig],
    resumption: &Resumption,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut entries = Vec::new();
    for c in certs {
        entries.push(EntryDbg(Entry {
            names: c
                .server_names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            key: Arc::new(load_certified_key(c)?),
        }));
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { entries }));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.ticketer = resumption.ticketer.clone();
    cfg.session_storage = resumption.cache.clone();
    Ok(Arc::new(cfg))
}

/// Builds the client configuration for TLS upstreams (trusting `ca_file`).
pub fn build_client_config(t: &UpstreamTlsConfig) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let path: &Path = &t.ca_file;
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| TlsError::Cert {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    for c in certs {
        let c = c.map_err(|e| TlsError::Cert {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        roots.add(c)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
