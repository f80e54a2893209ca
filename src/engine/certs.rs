//! X.509 certificates: parsing supplied certificates, filling `info`, thumbprints, chain signatures,
//! validity periods and CA flags.

use ring::digest;
use x509_parser::prelude::*;

use super::error::{ApiError, ApiResult};
use super::model::X509CertificateInfo;
use super::util;

/// Decodes a certificate supplied as PEM or base64 DER into DER bytes, checking that it parses.
pub fn decode_certificate(text: &str) -> ApiResult<Vec<u8>> {
    let trimmed = text.trim();
    let der = if trimmed.starts_with("-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(trimmed.as_bytes())
            .map_err(|_| ApiError::bad_request("the certificate is not valid PEM"))?;
        pem.contents
    } else {
        let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
        util::b64_decode(&compact)
            .ok_or_else(|| ApiError::bad_request("the certificate is neither PEM nor base64 DER"))?
    };
    parse(&der).map_err(|e| ApiError::bad_request(format!("the certificate cannot be parsed: {e}")))?;
    Ok(der)
}

/// Parses DER.
pub fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Upper-case hex SHA-1 of the DER.
pub fn sha1_thumbprint(der: &[u8]) -> String {
    util::hex(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()).to_ascii_uppercase()
}

/// Upper-case hex SHA-256 of the DER.
pub fn sha256_thumbprint(der: &[u8]) -> String {
    util::hex(digest::digest(&digest::SHA256, der).as_ref()).to_ascii_uppercase()
}

/// Whether a thumbprint (SHA-1 or SHA-256 hex, any case, colons allowed) names this certificate.
pub fn thumbprint_matches(der: &[u8], thumbprint: &str) -> bool {
    let t: String = thumbprint.chars().filter(|c| *c != ':').collect::<String>().to_ascii_uppercase();
    t == sha1_thumbprint(der) || t == sha256_thumbprint(der)
}

/// The `info` the service reports for a certificate.
pub fn info(der: &[u8]) -> ApiResult<X509CertificateInfo> {
    let cert = parse(der).map_err(|e| ApiError::bad_request(format!("the certificate cannot be parsed: {e}")))?;
    let time = |t: ASN1Time| jiff::Timestamp::from_second(t.timestamp()).map(|ts| ts.to_string()).unwrap_or_default();
    Ok(X509CertificateInfo {
        subject_name: cert.subject().to_string(),
        sha1_thumbprint: sha1_thumbprint(der),
        sha256_thumbprint: sha256_thumbprint(der),
        issuer_name: cert.issuer().to_string(),
        not_before_utc: time(cert.validity().not_before),
        not_after_utc: time(cert.validity().not_after),
        serial_number: util::hex(cert.raw_serial()).to_ascii_uppercase(),
        version: cert.version().0 + 1,
    })
}

/// The subject common name.
pub fn common_name(der: &[u8]) -> Option<String> {
    let cert = parse(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// Whether `issuer` signed `child` (signature check with the issuer's public key and matching names).
pub fn signed_by(child: &[u8], issuer: &[u8]) -> bool {
    let (Ok(c), Ok(i)) = (parse(child), parse(issuer)) else { return false };
    c.issuer().as_raw() == i.subject().as_raw() && c.verify_signature(Some(i.public_key())).is_ok()
}

/// Whether the two certificates carry the same subject public key.
pub fn same_public_key(a: &[u8], b: &[u8]) -> bool {
    match (parse(a), parse(b)) {
        (Ok(x), Ok(y)) => x.public_key().raw == y.public_key().raw,
        _ => false,
    }
}

/// Refuses a certificate that is outside its validity period at `now` (unix seconds), with the reason.
pub fn check_validity(der: &[u8], now: i64) -> Result<(), String> {
    let cert = parse(der)?;
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(format!("'{}' is not valid before {}", cert.subject(), validity.not_before));
    }
    if now > validity.not_after.timestamp() {
        return Err(format!("'{}' expired at {}", cert.subject(), validity.not_after));
    }
    Ok(())
}

/// Refuses a certificate that may not sign others at `now`: outside its validity period, or without
/// `basicConstraints cA=TRUE` (RFC 5280 4.2.1.9; a missing extension means an end entity).
pub fn check_issuer(der: &[u8], now: i64) -> Result<(), String> {
    check_validity(der, now)?;
    let cert = parse(der)?;
    if !cert.is_ca() {
        return Err(format!("'{}' is not a CA certificate and cannot sign others", cert.subject()));
    }
    Ok(())
}
