//! Certificate chains for X.509 tests: root CA -> intermediate CA(s) -> device leaf (CN = registration ID).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that can sign intermediates and device certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// What a device signed by this CA sends after its leaf: this CA and the CAs above it, nearest first,
    /// without the root (empty for a root).
    chain_to_send: Vec<String>,
}

/// A device certificate, its key, and the chain a device presents (leaf first).
pub struct TestLeaf {
    /// The leaf certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// Leaf plus every intermediate, leaf first (what a device sends in its TLS handshake).
    pub chain_pem: String,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list is valid");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

impl TestCa {
    /// A self-signed root CA.
    pub fn root(name: &str) -> Self {
        let key = KeyPair::generate().expect("key generates");
        let issuer = CertifiedIssuer::self_signed(ca_params(name), key).expect("root signs itself");
        Self { issuer, chain_to_send: Vec::new() }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> Self {
        let key = KeyPair::generate().expect("key generates");
        let issuer = CertifiedIssuer::signed_by(ca_params(name), key, &self.issuer).expect("intermediate signed");
        let mut chain_to_send = vec![issuer.pem()];
        chain_to_send.extend(self.chain_to_send.iter().cloned());
        Self { issuer, chain_to_send }
    }

    /// This CA's certificate (PEM), as an enrollment group's signing certificate.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A device certificate with CN `registration_id`, signed by this CA.
    pub fn leaf(&self, registration_id: &str) -> TestLeaf {
        let key = KeyPair::generate().expect("key generates");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list is valid");
        params.distinguished_name.push(DnType::CommonName, registration_id);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("leaf signed");
        let cert_pem = cert.pem();
        let chain_pem = std::iter::once(cert_pem.clone()).chain(self.chain_to_send.iter().cloned()).collect();
        TestLeaf { cert_pem, key_pem: key.serialize_pem(), chain_pem }
    }
}
