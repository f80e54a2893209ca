//! Small shared helpers: identifiers, time, randomness, etags, request bodies, api-version.

use axum::body::Body;
use axum::http::{HeaderMap, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt as _;
use ring::rand::{SecureRandom, SystemRandom};
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult, ErrorKind};

/// Largest accepted request body (Azure's 96 KB message limit).
pub const MAX_BODY: usize = 96 * 1024;

/// `n` random bytes from the system generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // The system generator only fails when the OS has no randomness; fall back to time-derived bytes then.
    if SystemRandom::new().fill(&mut buf).is_err() {
        let seed = jiff::Timestamp::now().as_nanosecond();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8 ^ i as u8;
        }
    }
    buf
}

/// A random UUID (version 4) as text.
pub fn new_uuid() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Standard base64.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Decodes standard base64.
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    B64.decode(text.trim()).ok()
}

/// A service-generated symmetric key: 64 random bytes, base64.
pub fn generate_key() -> String {
    b64(&random_bytes(64))
}

/// Now, RFC 3339 in UTC with fractional seconds (`2026-01-02T03:04:05.123456Z`).
pub fn now_utc() -> String {
    jiff::Timestamp::now().to_string()
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A new DPS etag, quoted like Azure's (`"\"…\""`).
pub fn new_dps_etag() -> String {
    format!("\"{}\"", new_uuid())
}

/// A new IoT Hub etag (unquoted base64, as the registry returns it).
pub fn new_hub_etag() -> String {
    b64(new_uuid().as_bytes())
}

/// Strips quotes and a weak prefix from an etag.
pub fn bare_etag(tag: &str) -> &str {
    let t = tag.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    t.trim_matches('"')
}

/// The `If-Match` header, if present and not empty.
pub fn if_match(headers: &HeaderMap) -> Option<String> {
    headers.get("if-match").and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
}

/// Whether an If-Match value (etag or `*`) matches the stored etag.
pub fn etag_matches(if_match: &str, stored: &str) -> bool {
    let want = bare_etag(if_match);
    want == "*" || want == bare_etag(stored)
}

/// A query parameter's value (percent-decoded).
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let q = uri.query()?;
    form_pairs(q).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Splits `a=b&c=d`, percent-decoding keys and values (`+` stays `+`).
pub fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

/// Percent-decodes, lossily.
pub fn pct_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Requires an `api-version` query parameter of the form `YYYY-MM-DD` (optionally `-preview`).
pub fn require_api_version(uri: &Uri) -> ApiResult<String> {
    let v = query_param(uri, "api-version")
        .ok_or_else(|| ApiError::bad_request("the api-version query parameter is required"))?;
    let date = v.strip_suffix("-preview").unwrap_or(&v);
    let ok = date.len() == 10
        && date.chars().enumerate().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() });
    if ok { Ok(v) } else { Err(ApiError::bad_request(format!("unsupported api-version '{v}'"))) }
}

/// How much of an oversized body is read and thrown away before answering 413, so that the client, which is
/// still sending, gets the answer instead of a broken pipe. Beyond this the connection is closed instead.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

/// Reads a body of at most [`MAX_BODY`] bytes; a larger one is answered 413.
pub async fn read_body(headers: &HeaderMap, body: Body) -> ApiResult<bytes_alias::Bytes> {
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > MAX_BODY) {
        drain(&mut stream, 0).await;
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("request body unreadable: {e}")))?;
        if buf.len() + chunk.len() > MAX_BODY {
            drain(&mut stream, buf.len() + chunk.len()).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.into())
}

async fn drain(stream: &mut axum::body::BodyDataStream, mut seen: usize) {
    while seen <= DRAIN_LIMIT {
        match stream.next().await {
            Some(Ok(chunk)) => seen += chunk.len(),
            _ => break,
        }
    }
}

fn too_large() -> ApiError {
    ApiError::new(ErrorKind::PayloadTooLarge, format!("the request body exceeds {MAX_BODY} bytes"))
}

/// Reads and parses a JSON body of at most [`MAX_BODY`] bytes; an empty body parses as `null`.
pub async fn read_json<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> ApiResult<T> {
    let bytes = read_body(headers, body).await?;
    let slice: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"null" } else { &bytes };
    serde_json::from_slice(slice).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

/// Re-export so callers need not name the bytes crate.
pub mod bytes_alias {
    pub use axum::body::Bytes;
}

/// Validates a registration ID (DPS's rule, [`crate::api::common::is_valid_registration_id`]) and returns its
/// stored (lower-case) form.
pub fn registration_key(id: &str) -> ApiResult<String> {
    if crate::api::common::is_valid_registration_id(id) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(ApiError::bad_request(format!("invalid registration ID '{}': {ID_RULE}", truncate(id))))
    }
}

/// Validates an enrollment group ID (same rule as registration IDs) and returns its stored form.
pub fn group_key(id: &str) -> ApiResult<String> {
    registration_key(id)
        .map_err(|_| ApiError::bad_request(format!("invalid enrollment group ID '{}': {ID_RULE}", truncate(id))))
}

const ID_RULE: &str = "1-128 characters, alphanumeric or - . _ :, the last one alphanumeric or -";

/// Validates an IoT Hub device ID (case-sensitive).
pub fn validate_device_id(id: &str) -> ApiResult<()> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '.' | '%' | '_' | '*' | '?' | '!' | '(' | ')' | ',' | ':' | '=' | '@' | '$' | '\'')
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid device ID '{}': 1-128 ASCII alphanumeric characters or - . % _ * ? ! ( ) , : = @ $ '",
            truncate(id)
        )))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(140).collect()
}

/// Validates a supplied symmetric key: base64 of 16 to 64 bytes.
pub fn validate_key(key: &str) -> ApiResult<()> {
    match b64_decode(key) {
        Some(raw) if (16..=64).contains(&raw.len()) => Ok(()),
        _ => Err(ApiError::bad_request("symmetric keys must be base64 of 16 to 64 bytes")),
    }
}

/// The page size requested with `x-ms-max-item-count` (default 1000, at most 10000).
pub fn page_size(headers: &HeaderMap) -> ApiResult<usize> {
    match headers.get("x-ms-max-item-count").map(|v| v.to_str().map(str::trim)) {
        None => Ok(1000),
        Some(Ok(v)) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n.min(10_000)),
            _ => Err(ApiError::bad_request("x-ms-max-item-count must be a positive integer")),
        },
        Some(Err(_)) => Err(ApiError::bad_request("x-ms-max-item-count must be a positive integer")),
    }
}

/// The `x-ms-continuation` request header: the last key of the previous page (400 when not one of ours).
pub fn continuation(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(raw) = headers.get("x-ms-continuation") else { return Ok(None) };
    let text = raw.to_str().map_err(|_| ApiError::bad_request("invalid x-ms-continuation"))?;
    if text.is_empty() {
        return Ok(None);
    }
    b64_decode(text)
        .and_then(|raw| String::from_utf8(raw).ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("invalid x-ms-continuation"))
}

/// Encodes a continuation token for the page after `last_key`.
pub fn continuation_token(last_key: &str) -> String {
    b64(last_key.as_bytes())
}

/// Stable 64-bit FNV-1a hash (for hashed allocation).
pub fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Collection names as routed; requests may spell them in any case (the Node SDK sends `enrollmentgroups`).
const COLLECTIONS: [&str; 4] = ["enrollments", "enrollmentGroups", "registrations", "devices"];

/// The path the routers expect: one trailing slash dropped (`POST /enrollments/`, `GET /devices/` as the
/// SDKs send them) and the collection segment in its canonical case. `None` when nothing changes.
pub fn normalize_path(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let trimmed = if path.len() > 1 { path.strip_suffix('/').unwrap_or(path) } else { path };
    let (first, rest) = trimmed.strip_prefix('/').map(|p| p.split_once('/').unwrap_or((p, "")))?;
    let canonical = COLLECTIONS.iter().find(|c| c.eq_ignore_ascii_case(first)).copied().unwrap_or(first);
    let normalized = if rest.is_empty() { format!("/{canonical}") } else { format!("/{canonical}/{rest}") };
    if normalized == path {
        return None;
    }
    let with_query = match uri.query() {
        Some(q) => format!("{normalized}?{q}"),
        None => normalized,
    };
    with_query.parse().ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn paths_are_normalized_as_the_sdks_send_them() {
        let norm = |p: &str| normalize_path(&p.parse::<Uri>().expect("uri")).map(|u| u.to_string());
        assert_eq!(norm("/enrollments/?api-version=x").as_deref(), Some("/enrollments?api-version=x"));
        assert_eq!(
            norm("/enrollmentgroups/g1/attestationmechanism").as_deref(),
            Some("/enrollmentGroups/g1/attestationmechanism")
        );
        assert_eq!(norm("/devices/").as_deref(), Some("/devices"));
        assert_eq!(norm("/enrollmentGroups/g1"), None);
        assert_eq!(norm("/0ne00/registrations/dev-1/register"), None);
        assert_eq!(norm("/"), None);
    }

    use super::*;

    #[test]
    fn registration_ids_follow_dps_rule_any_first_character_last_alphanumeric_or_dash() {
        assert_eq!(registration_key("Dev-01.a_b:c").ok().as_deref(), Some("dev-01.a_b:c"));
        for good in ["a-", "-a", ".a", "_a", ":a", "-", "a.b-"] {
            assert!(registration_key(good).is_ok(), "{good}");
        }
        for bad in ["", "a.", "a_", "a:", "a b", "a/b", "é", &"a".repeat(129)] {
            assert!(registration_key(bad).is_err(), "{bad}");
        }
        assert!(registration_key(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn device_ids() {
        assert!(validate_device_id("dev-1.%_*?!(),:=@$'").is_ok());
        for bad in ["", "a b", "a/b", "a#", "ü", &"a".repeat(129)] {
            assert!(validate_device_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("abc", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(etag_matches("\"*\"", "x"));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }

    #[test]
    fn keys() {
        assert!(validate_key(&generate_key()).is_ok());
        assert!(validate_key(&b64(&[1u8; 15])).is_err());
        assert!(validate_key(&b64(&[1u8; 65])).is_err());
        assert!(validate_key("not base64!").is_err());
    }
}
