//! TLS: the engine's CA and server certificate (generated on first start and kept in the data directory),
//! the rustls server configurations, and the client-certificate verifier for X.509 device attestation.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use super::EngineError;
use super::certs;

/// Certificate files supplied on the command line instead of generated ones.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA certificate clients should trust (PEM).
    pub ca: PathBuf,
}

/// The server identity in use.
pub struct ServerIdentity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Private key.
    pub key: PrivateKeyDer<'static>,
    /// Absolute path of the CA certificate clients trust.
    pub ca_path: PathBuf,
}

fn io(path: &Path, e: std::io::Error) -> EngineError {
    EngineError::Io { path: path.display().to_string(), source: e }
}

fn tls(msg: impl std::fmt::Display) -> EngineError {
    EngineError::Tls(msg.to_string())
}

const CA_NAME: &str = "dps-operator local engine CA";

fn ca_params() -> Result<CertificateParams, EngineError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2049, 12, 31);
    Ok(p)
}

/// Loads the server identity from files, or generates (once) a CA and a server certificate for `ips`,
/// `localhost` and the advertised `dns_names` into `dir`. The server certificate is re-issued by the same CA
/// when that name set changes.
pub fn load_or_generate(
    dir: &Path,
    ips: &[IpAddr],
    dns_names: &[String],
    files: Option<&TlsFiles>,
) -> Result<ServerIdentity, EngineError> {
    if let Some(f) = files {
        let chain = read_certs(&f.cert)?;
        let key = read_key(&f.key)?;
        let ca_path = std::path::absolute(&f.ca).map_err(|e| io(&f.ca, e))?;
        return Ok(ServerIdentity { chain, key, ca_path });
    }
    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let srv_crt = dir.join("server.crt");
    let srv_key = dir.join("server.key");
    let sans_file = dir.join("server.sans");
    let params = ca_params()?;
    let ca_keypair = if ca_key.exists() && ca_crt.exists() {
        let pem = std::fs::read_to_string(&ca_key).map_err(|e| io(&ca_key, e))?;
        KeyPair::from_pem(&pem).map_err(tls)?
    } else {
        let key = KeyPair::generate().map_err(tls)?;
        let cert = params.self_signed(&key).map_err(tls)?;
        write_private(&ca_key, key.serialize_pem().as_bytes())?;
        write_file(&ca_crt, cert.pem().as_bytes())?;
        let _ = std::fs::remove_file(&srv_crt);
        key
    };
    let dns: Vec<&str> = std::iter::once("localhost").chain(dns_names.iter().map(String::as_str)).collect();
    let mut sans: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    sans.extend(dns.iter().map(|n| n.to_string()));
    let wanted = sans.join(",");
    let current = std::fs::read_to_string(&sans_file).unwrap_or_default();
    if !(srv_crt.exists() && srv_key.exists() && current.trim() == wanted) {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        p.distinguished_name.push(DnType::CommonName, "dps-operator local engine");
        p.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for name in &dns {
            p.subject_alt_names.push(SanType::DnsName((*name).try_into().map_err(tls)?));
        }
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2049, 12, 31);
        let key = KeyPair::generate().map_err(tls)?;
        let issuer = Issuer::from_params(&params, &ca_keypair);
        let cert = p.signed_by(&key, &issuer).map_err(tls)?;
        write_private(&srv_key, key.serialize_pem().as_bytes())?;
        write_file(&srv_crt, cert.pem().as_bytes())?;
        write_file(&sans_file, wanted.as_bytes())?;
    }
    let chain = read_certs(&srv_crt)?;
    let key = read_key(&srv_key)?;
    let ca_path = std::path::absolute(&ca_crt).map_err(|e| io(&ca_crt, e))?;
    Ok(ServerIdentity { chain, key, ca_path })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, EngineError> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls(format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, EngineError> {
    use rustls_pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls(format!("{}: {e}", path.display())))
}

/// Writes a file.
pub fn write_file(path: &Path, data: &[u8]) -> Result<(), EngineError> {
    std::fs::write(path, data).map_err(|e| io(path, e))
}

/// Writes a file readable by the owner only.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), EngineError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))?;
    f.write_all(data).map_err(|e| io(path, e))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server configuration; with `client_certs` the server asks for (but does not require) a client certificate.
pub fn server_config(id: &ServerIdentity, client_certs: bool) -> Result<Arc<ServerConfig>, EngineError> {
    let provider = provider();
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(tls)?;
    let builder = if client_certs {
        builder.with_client_cert_verifier(Arc::new(AnyChainVerifier { provider }))
    } else {
        builder.with_no_client_auth()
    };
    let mut cfg = builder.with_single_cert(id.chain.clone(), id.key.clone_key()).map_err(tls)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts any client chain whose certificates parse, and checks the handshake signature, so the device
/// proves possession of the leaf's key. Which chains are admitted is decided by the enrollments.
#[derive(Debug)]
pub struct AnyChainVerifier {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyChainVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        for c in std::iter::once(end_entity).chain(intermediates) {
            certs::parse(c.as_ref())
                .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
