//! Shared access signatures, verified exactly as Azure computes them.
//!
//! `sig = base64(HMAC-SHA256(base64decode(key), sr + "\n" + se))`, where `sr` is the URL-encoded lower-case
//! resource URI as it appears in the token.

use ring::hmac;

use super::util;
use crate::azure::sas as azure_sas;

/// The device key of a symmetric-key group member: `base64(HMAC-SHA256(base64decode(groupKey), registrationId))`.
/// `None` when the group key is not base64.
pub fn derive_device_key(group_key: &str, registration_id: &str) -> Option<String> {
    azure_sas::derive_device_key(group_key, registration_id).ok().map(|key| key.expose().to_string())
}

/// A parsed `SharedAccessSignature sr=..&sig=..&se=..&skn=..` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken {
    /// `sr` exactly as sent (still URL-encoded): the signed string.
    pub sr_raw: String,
    /// `sr` decoded: the resource URI.
    pub resource: String,
    /// `sig` decoded: base64 signature.
    pub sig: String,
    /// `se`: expiry, unix seconds.
    pub expiry: i64,
    /// `skn`: the policy name, if any.
    pub key_name: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    /// No Authorization header.
    #[error("missing Authorization header")]
    Missing,
    /// Not a SharedAccessSignature or a field is missing or malformed.
    #[error("malformed SharedAccessSignature: {0}")]
    Malformed(&'static str),
    /// `se` is in the past.
    #[error("the SharedAccessSignature has expired")]
    Expired,
    /// `sr` names another resource.
    #[error("the SharedAccessSignature is for another resource")]
    WrongResource,
    /// `skn` names another policy.
    #[error("the SharedAccessSignature names an unknown policy")]
    WrongPolicy,
    /// The signature does not verify with any key.
    #[error("the SharedAccessSignature signature does not match")]
    BadSignature,
}

impl SasToken {
    /// Parses the value of an Authorization header.
    pub fn parse(header: &str) -> Result<SasToken, SasError> {
        let rest = header
            .trim()
            .strip_prefix("SharedAccessSignature ")
            .ok_or(SasError::Malformed("not a SharedAccessSignature"))?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for part in rest.trim().split('&') {
            let (k, v) = part.split_once('=').ok_or(SasError::Malformed("field without '='"))?;
            match k {
                "sr" => sr = Some(v.to_string()),
                "sig" => sig = Some(util::pct_decode(v)),
                "se" => se = Some(v.parse::<i64>().map_err(|_| SasError::Malformed("se is not a number"))?),
                "skn" => skn = Some(util::pct_decode(v)),
                _ => {}
            }
        }
        let sr_raw = sr.ok_or(SasError::Malformed("sr missing"))?;
        Ok(SasToken {
            resource: util::pct_decode(&sr_raw),
            sr_raw,
            sig: sig.ok_or(SasError::Malformed("sig missing"))?,
            expiry: se.ok_or(SasError::Malformed("se missing"))?,
            key_name: skn.filter(|s| !s.is_empty()),
        })
    }

    /// Checks expiry at `now`, that the resource is `resource` (or below it), and the policy name.
    pub fn check_scope(&self, resource: &str, policy: Option<&str>, now: i64) -> Result<(), SasError> {
        if self.expiry <= now {
            return Err(SasError::Expired);
        }
        let got = self.resource.trim_end_matches('/').to_ascii_lowercase();
        let want = resource.trim_end_matches('/').to_ascii_lowercase();
        if got != want && !got.starts_with(&format!("{want}/")) {
            return Err(SasError::WrongResource);
        }
        if let Some(p) = policy
            && self.key_name.as_deref().map(str::to_ascii_lowercase) != Some(p.to_ascii_lowercase())
        {
            return Err(SasError::WrongPolicy);
        }
        Ok(())
    }

    /// Whether the signature verifies with `key` (base64), in constant time.
    pub fn signed_with(&self, key: &str) -> bool {
        let Some(raw) = util::b64_decode(key) else { return false };
        let Some(sig) = util::b64_decode(&self.sig) else { return false };
        let msg = format!("{}\n{}", self.sr_raw, self.expiry);
        hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, &raw), msg.as_bytes(), &sig).is_ok()
    }

    /// Checks scope and signature against a set of keys.
    pub fn verify(&self, resource: &str, policy: Option<&str>, keys: &[&str], now: i64) -> Result<(), SasError> {
        self.check_scope(resource, policy, now)?;
        if keys.iter().any(|k| self.signed_with(k)) { Ok(()) } else { Err(SasError::BadSignature) }
    }
}

/// Builds a token (used by tests and the benchmark; the operator uses its client library). An invalid key
/// gives a token that never verifies.
pub fn make_token(resource: &str, key: &str, policy: Option<&str>, expiry: i64) -> String {
    let key = azure_sas::decode_key(key).unwrap_or_default();
    azure_sas::generate_token(&key, resource, policy, u64::try_from(expiry).unwrap_or(0)).expose().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_key_test_vector() {
        let k = derive_device_key(
            "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
            "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6",
        );
        assert_eq!(k.as_deref(), Some("Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="));
    }

    #[test]
    fn round_trip_and_failures() {
        let key = util::generate_key();
        let other = util::generate_key();
        let now = 1_000;
        let tok = make_token("0ne00/registrations/dev1", &key, Some("registration"), now + 60);
        let t = SasToken::parse(&tok).expect("parses");
        assert_eq!(t.resource, "0ne00/registrations/dev1");
        assert!(t.verify("0ne00/registrations/dev1", Some("registration"), &[&key], now).is_ok());
        assert!(t.verify("0ne00/registrations/DEV1", Some("registration"), &[&other, &key], now).is_ok());
        assert_eq!(
            t.verify("0ne00/registrations/dev1", Some("registration"), &[&other], now),
            Err(SasError::BadSignature)
        );
        assert_eq!(
            t.verify("0ne00/registrations/dev2", Some("registration"), &[&key], now),
            Err(SasError::WrongResource)
        );
        assert_eq!(t.verify("0ne00/registrations/dev1", Some("owner"), &[&key], now), Err(SasError::WrongPolicy));
        assert_eq!(
            t.verify("0ne00/registrations/dev1", Some("registration"), &[&key], now + 61),
            Err(SasError::Expired)
        );
        assert!(SasToken::parse("Bearer x").is_err());
        assert!(SasToken::parse("SharedAccessSignature sig=a&se=1").is_err());
        assert!(SasToken::parse("SharedAccessSignature sr=a&sig=a&se=x").is_err());
    }
}
