//! Shared access signature (SAS) tokens, device key derivation and a renewing token cache.
//!
//! `sr` = URL-encode(lowercase resource URI); `sig` = base64(HMAC-SHA256(key, sr + "\n" + se));
//! token = `SharedAccessSignature sr={sr}&sig={urlencode(sig)}&se={se}[&skn={policy}]`.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;

use super::connection_string::{ConnectionString, Credential};
use super::secret::Secret;

/// Characters left as they are when URL-encoding (those of JavaScript's `encodeURIComponent`, less `!*'()`).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Default lifetime of the tokens the cache signs.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The cache signs a new token when the current one has less than this left.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(300);

/// Why a token or key could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    /// The key is not base64 (its value is never shown).
    #[error("the shared access key is not valid base64")]
    KeyNotBase64,
    /// A token lacks a field or is not a `SharedAccessSignature` token.
    #[error("malformed SharedAccessSignature token: {0}")]
    MalformedToken(&'static str),
}

/// URL-encodes a string the way tokens need it (unreserved characters kept, the rest `%XX`).
pub fn url_encode(value: &str) -> String {
    utf8_percent_encode(value, ENCODE).to_string()
}

/// The `sr` value for a resource URI: URL-encode(lowercase(uri)).
pub fn encode_resource_uri(resource_uri: &str) -> String {
    url_encode(&resource_uri.to_lowercase())
}

/// The base64 signature for a raw resource URI (e.g. `mydps.azure-devices-provisioning.net` or
/// `0ne00000001/registrations/dev-1`) and an expiry in unix seconds. The engine verifies a token by
/// recomputing this (or [`sign_encoded`] over the `sr` exactly as received) and comparing.
pub fn signature(key: &[u8], resource_uri: &str, expiry: u64) -> String {
    sign_encoded(key, &encode_resource_uri(resource_uri), expiry)
}

/// The base64 signature over an already encoded `sr` value: base64(HMAC-SHA256(key, sr + "\n" + se)).
pub fn sign_encoded(key: &[u8], encoded_sr: &str, expiry: u64) -> String {
    STANDARD.encode(hmac_sha256(key, format!("{encoded_sr}\n{expiry}").as_bytes()))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { unreachable!("HMAC accepts keys of every length") };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Decodes a base64 key without ever echoing it.
pub fn decode_key(key_b64: &str) -> Result<Vec<u8>, SasError> {
    STANDARD.decode(key_b64.trim()).map_err(|_| SasError::KeyNotBase64)
}

/// A full token `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]` (`skn` omitted when `policy` is None).
pub fn generate_token(key: &[u8], resource_uri: &str, policy: Option<&str>, expiry: u64) -> Secret {
    let sr = encode_resource_uri(resource_uri);
    let sig = url_encode(&sign_encoded(key, &sr, expiry));
    let mut token = format!("SharedAccessSignature sr={sr}&sig={sig}&se={expiry}");
    if let Some(policy) = policy {
        token.push_str("&skn=");
        token.push_str(&url_encode(policy));
    }
    Secret::new(token)
}

/// The device key of a symmetric-key enrollment group member: base64(HMAC-SHA256(groupKey, registrationId)).
pub fn derive_device_key(group_key_b64: &str, registration_id: &str) -> Result<Secret, SasError> {
    let key = decode_key(group_key_b64)?;
    Ok(Secret::new(STANDARD.encode(hmac_sha256(&key, registration_id.as_bytes()))))
}

/// The fields of a received token, for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken {
    /// `sr` exactly as it appeared (still URL-encoded): sign this with [`sign_encoded`].
    pub encoded_resource: String,
    /// `sr` URL-decoded.
    pub resource: String,
    /// `sig` URL-decoded (base64).
    pub signature: String,
    /// `se`: expiry in unix seconds.
    pub expiry: u64,
    /// `skn`, when present.
    pub policy: Option<String>,
}

/// Parses `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]` (fields in any order).
pub fn parse_token(token: &str) -> Result<ParsedToken, SasError> {
    let rest = token.trim().strip_prefix("SharedAccessSignature ").ok_or(SasError::MalformedToken("prefix"))?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for pair in rest.trim().split('&') {
        let (name, value) = pair.split_once('=').ok_or(SasError::MalformedToken("field"))?;
        match name {
            "sr" => sr = Some(value.to_owned()),
            "sig" => sig = Some(decode(value)?),
            "se" => se = Some(value.parse::<u64>().map_err(|_| SasError::MalformedToken("se"))?),
            "skn" => skn = Some(decode(value)?),
            _ => {}
        }
    }
    let encoded_resource = sr.ok_or(SasError::MalformedToken("sr"))?;
    Ok(ParsedToken {
        resource: decode(&encoded_resource)?,
        encoded_resource,
        signature: sig.ok_or(SasError::MalformedToken("sig"))?,
        expiry: se.ok_or(SasError::MalformedToken("se"))?,
        policy: skn,
    })
}

fn decode(value: &str) -> Result<String, SasError> {
    percent_decode_str(value).decode_utf8().map(|s| s.into_owned()).map_err(|_| SasError::MalformedToken("encoding"))
}

/// Seconds since the unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Signs tokens for one (resource, policy) pair and reuses each until it is close to expiry.
///
/// One cache per client: a client talks to one host with one policy, so this is the per-(host, policy) cache.
pub struct TokenCache {
    source: TokenSource,
    ttl: Duration,
    renew_before: Duration,
    current: Mutex<Option<(Secret, u64)>>,
}

enum TokenSource {
    Key { key: Secret, resource_uri: String, policy: Option<String> },
    Fixed(Secret),
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, resource) = match &self.source {
            TokenSource::Key { resource_uri, .. } => ("key", resource_uri.as_str()),
            TokenSource::Fixed(_) => ("fixed", ""),
        };
        f.debug_struct("TokenCache").field("source", &kind).field("resource", &resource).finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache signing with a base64 key for `resource_uri`, `skn=policy` when given.
    pub fn from_key(key_b64: &Secret, resource_uri: &str, policy: Option<&str>) -> Result<Self, SasError> {
        decode_key(key_b64.expose())?;
        Ok(Self::new(TokenSource::Key {
            key: key_b64.clone(),
            resource_uri: resource_uri.to_owned(),
            policy: policy.map(str::to_owned),
        }))
    }

    /// A cache for a service connection string: audience = its host name, `skn` = its policy. A string with a
    /// ready-made `SharedAccessSignature` uses that token as it is.
    pub fn from_connection_string(cs: &ConnectionString) -> Result<Self, SasError> {
        match &cs.credential {
            Credential::Key(key) => Self::from_key(key, &cs.host_name, cs.policy.as_deref()),
            Credential::Signature(sig) => Ok(Self::new(TokenSource::Fixed(sig.clone()))),
        }
    }

    fn new(source: TokenSource) -> Self {
        TokenCache { source, ttl: DEFAULT_TOKEN_TTL, renew_before: DEFAULT_RENEW_BEFORE, current: Mutex::new(None) }
    }

    /// Changes the lifetime of new tokens and how long before expiry they are renewed.
    pub fn with_lifetime(mut self, ttl: Duration, renew_before: Duration) -> Self {
        self.ttl = ttl;
        self.renew_before = renew_before.min(ttl / 2);
        self
    }

    /// The token to send now.
    pub fn token(&self) -> Secret {
        self.token_at(unix_now())
    }

    /// The token to send at `now` (unix seconds): the cached one unless it expires within `renew_before`.
    pub fn token_at(&self, now: u64) -> Secret {
        let (key, resource_uri, policy) = match &self.source {
            TokenSource::Fixed(token) => return token.clone(),
            TokenSource::Key { key, resource_uri, policy } => (key, resource_uri, policy),
        };
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((token, expiry)) = current.as_ref()
            && now.saturating_add(self.renew_before.as_secs()) < *expiry
        {
            return token.clone();
        }
        let expiry = now.saturating_add(self.ttl.as_secs());
        // The key was checked in the constructor.
        let key_bytes = decode_key(key.expose()).unwrap_or_default();
        let token = generate_token(&key_bytes, resource_uri, policy.as_deref(), expiry);
        *current = Some((token.clone(), expiry));
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP_KEY: &str = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";

    #[test]
    fn derives_the_documented_device_key() {
        let key = derive_device_key(GROUP_KEY, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6").expect("derives");
        assert_eq!(key.expose(), "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
        assert_eq!(derive_device_key("not base64!", "x"), Err(SasError::KeyNotBase64));
    }

    #[test]
    fn token_shape_and_signature_round_trip() {
        let key = decode_key(GROUP_KEY).expect("base64");
        let token = generate_token(&key, "0ne0000ABCD/registrations/Dev-1", Some("registration"), 1_700_000_000);
        let t = token.expose();
        assert!(t.starts_with("SharedAccessSignature sr=0ne0000abcd%2Fregistrations%2Fdev-1&sig="), "{t}");
        assert!(t.ends_with("&se=1700000000&skn=registration"), "{t}");
        let parsed = parse_token(t).expect("parses");
        assert_eq!(parsed.resource, "0ne0000abcd/registrations/dev-1");
        assert_eq!(parsed.expiry, 1_700_000_000);
        assert_eq!(parsed.policy.as_deref(), Some("registration"));
        assert_eq!(parsed.signature, signature(&key, "0ne0000ABCD/registrations/Dev-1", 1_700_000_000));
        assert_eq!(parsed.signature, sign_encoded(&key, &parsed.encoded_resource, parsed.expiry));
        // HMAC-SHA256 base64 is 44 characters.
        assert_eq!(parsed.signature.len(), 44);
    }

    #[test]
    fn skn_omitted_without_policy() {
        let token = generate_token(b"k", "hub.example.net", None, 5);
        assert!(!token.expose().contains("skn="));
        assert!(parse_token(token.expose()).expect("parses").policy.is_none());
    }

    #[test]
    fn cache_reuses_then_renews_before_expiry() {
        let cache = TokenCache::from_key(&Secret::new(GROUP_KEY), "dps.example.net", Some("owner"))
            .expect("key")
            .with_lifetime(Duration::from_secs(3600), Duration::from_secs(300));
        let first = cache.token_at(1_000);
        assert_eq!(cache.token_at(1_000 + 3000), first);
        let renewed = cache.token_at(1_000 + 3301);
        assert_ne!(renewed, first);
        assert_eq!(parse_token(renewed.expose()).expect("parses").expiry, 1_000 + 3301 + 3600);
        assert!(!format!("{cache:?}").contains(GROUP_KEY));
    }
}
