//! Certificates the resources name: parsed before they are sent, so a bad or expired one is a clear
//! condition on the resource instead of a service error.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Error, Result};

/// A parsed certificate: its DER and what the controller checks.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The DER bytes.
    pub der: Vec<u8>,
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// Whether basicConstraints says CA.
    pub is_ca: bool,
}

impl Certificate {
    /// Parses PEM (first certificate) or base64 DER; `what` names the source in the error.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let der = decode(text).ok_or_else(|| {
            Error::invalid("InvalidCertificate", format!("{what} is not a PEM or base64 DER certificate"))
        })?;
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|e| Error::invalid("InvalidCertificate", format!("{what} does not parse as X.509: {e}")))?;
        if !cert.validity().is_valid() {
            return Err(Error::invalid(
                "CertificateExpired",
                format!(
                    "{what} is outside its validity period ({} to {}); provide a current certificate",
                    cert.validity().not_before,
                    cert.validity().not_after
                ),
            ));
        }
        let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
        let is_ca = cert.is_ca();
        Ok(Certificate { common_name, is_ca, der })
    }

    /// The certificate as base64 DER, as sent to DPS.
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.der)
    }

    /// Upper-case hex SHA-256 thumbprint, the way DPS reports `sha256Thumbprint`.
    pub fn sha256_thumbprint(&self) -> String {
        hex_upper(&Sha256::digest(&self.der))
    }

    /// Upper-case hex SHA-1 thumbprint, the way DPS reports `sha1Thumbprint`.
    pub fn sha1_thumbprint(&self) -> String {
        // SHA-1 only to match the thumbprint DPS reports, not for security.
        hex_upper(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &self.der).as_ref())
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn decode(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim();
    if trimmed.starts_with("-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(trimmed.as_bytes()).ok()?;
        return Some(pem.contents);
    }
    let compact: String = trimmed.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(compact).ok()
}
