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

/// When a test certificate is valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Validity {
    /// rcgen's default period (1975 to 4096): valid now.
    #[default]
    Current,
    /// 2020 to 2021: expired.
    Expired,
    /// From 2090: not valid yet.
    NotYetValid,
}

impl Validity {
    fn apply(self, params: &mut CertificateParams) {
        match self {
            Validity::Current => {}
            Validity::Expired => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            Validity::NotYetValid => {
                params.not_before = rcgen::date_time_ymd(2090, 1, 1);
                params.not_after = rcgen::date_time_ymd(2095, 1, 1);
            }
        }
    }
}

fn ca_params(name: &str, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list is valid");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity.apply(&mut params);
    params
}

fn leaf_params(registration_id: &str, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list is valid");
    params.distinguished_name.push(DnType::CommonName, registration_id);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity.apply(&mut params);
    params
}

impl TestCa {
    /// A self-signed root CA.
    pub fn root(name: &str) -> Self {
        Self::root_with(name, Validity::Current)
    }

    /// A self-signed root CA valid when `validity` says.
    pub fn root_with(name: &str, validity: Validity) -> Self {
        let key = KeyPair::generate().expect("key generates");
        let issuer = CertifiedIssuer::self_signed(ca_params(name, validity), key).expect("root signs itself");
        Self { issuer, chain_to_send: Vec::new() }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> Self {
        self.intermediate_with(name, Validity::Current)
    }

    /// An intermediate CA signed by this one, valid when `validity` says.
    pub fn intermediate_with(&self, name: &str, validity: Validity) -> Self {
        self.issue(ca_params(name, validity))
    }

    /// A device certificate (not a CA: `basicConstraints cA=FALSE`) signed by this CA, whose key is then
    /// used to sign further certificates anyway, as a forger holding a device's key would.
    pub fn end_entity_as_issuer(&self, registration_id: &str) -> Self {
        self.issue(leaf_params(registration_id, Validity::Current))
    }

    fn issue(&self, params: CertificateParams) -> Self {
        let key = KeyPair::generate().expect("key generates");
        let issuer = CertifiedIssuer::signed_by(params, key, &self.issuer).expect("certificate signed");
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
        self.leaf_with(registration_id, Validity::Current)
    }

    /// A device certificate with CN `registration_id`, signed by this CA, valid when `validity` says.
    pub fn leaf_with(&self, registration_id: &str, validity: Validity) -> TestLeaf {
        let key = KeyPair::generate().expect("key generates");
        let cert = leaf_params(registration_id, validity).signed_by(&key, &self.issuer).expect("leaf signed");
        let cert_pem = cert.pem();
        let chain_pem = std::iter::once(cert_pem.clone()).chain(self.chain_to_send.iter().cloned()).collect();
        TestLeaf { cert_pem, key_pem: key.serialize_pem(), chain_pem }
    }
}
