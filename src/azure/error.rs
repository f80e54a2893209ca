//! Typed errors of the DPS and hub clients, mapped from status, headers and body.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::connection_string::ConnectionStringError;
use super::retry::parse_retry_after;
use super::sas::SasError;

/// Longest service message kept (longer ones are cut), so a misbehaving server cannot flood logs.
const MAX_MESSAGE: usize = 512;

/// What the service said about a failed request. Holds no credentials: requests carry those in a header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceError {
    /// HTTP status.
    pub status: u16,
    /// The service's error code: `x-ms-error-code` / `iothub-errorcode` header, else from the body
    /// (DPS `errorCode` number; hub `errorCode` number inside a JSON `Message`, or its `ErrorCode:Name;` prefix).
    pub code: Option<String>,
    /// The service's message.
    pub message: Option<String>,
    /// The service's tracking ID (DPS `trackingId`, hub `trackingId` or `Tracking ID:`), when given.
    pub tracking_id: Option<String>,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        if let Some(tracking) = &self.tracking_id {
            write!(f, " (tracking ID {tracking})")?;
        }
        Ok(())
    }
}

/// Everything a DPS, hub or device-registration call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// 404: the entry does not exist.
    #[error("not found: {0}")]
    NotFound(ServiceError),
    /// 409: the entry already exists (PUT without If-Match) or conflicts.
    #[error("conflict: {0}")]
    Conflict(ServiceError),
    /// 412: the etag given in If-Match is stale.
    #[error("precondition failed: {0}")]
    PreconditionFailed(ServiceError),
    /// 429: throttled; retry after the given delay when the service said one.
    #[error("throttled: {detail}")]
    Throttled {
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
        /// What the service said.
        detail: ServiceError,
    },
    /// 401/403: the token or certificate was refused.
    #[error("unauthorized: {0}")]
    Unauthorized(ServiceError),
    /// 5xx or 408: worth retrying.
    #[error("transient service error: {detail}")]
    Transient {
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
        /// What the service said.
        detail: ServiceError,
    },
    /// Any other 4xx: the request itself is wrong; retrying will not help.
    #[error("invalid request: {0}")]
    Invalid(ServiceError),
    /// The request never got an HTTP answer (connect, TLS, timeout, I/O). URLs are stripped.
    #[error("transport error: {}", error_chain(source))]
    Transport {
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// An operation (e.g. device registration polling) did not finish in time.
    #[error("deadline exceeded: {0}")]
    Deadline(String),
    /// A success answer whose body was not what the API promises.
    #[error("cannot decode the service's answer: {0}")]
    Decode(String),
    /// Local configuration is unusable (endpoint, CA bundle, client certificate, arguments).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// A connection string did not parse (the key is never shown).
    #[error("invalid connection string: {0}")]
    ConnectionString(#[from] ConnectionStringError),
    /// A key or token could not be used (the key is never shown).
    #[error("invalid credentials: {0}")]
    Sas(#[from] SasError),
}

impl From<reqwest::Error> for AzureError {
    fn from(source: reqwest::Error) -> Self {
        AzureError::Transport { source: source.without_url() }
    }
}

/// DPS error body `{errorCode, trackingId, message}`; hub body `{"Message": "<HubMessage as JSON>"}` or, in the
/// older form, `{"Message": "ErrorCode:X;...", "ExceptionMessage": "Tracking ID:..."}`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorBody {
    #[serde(rename = "errorCode")]
    error_code: Option<serde_json::Value>,
    #[serde(rename = "trackingId")]
    tracking_id: Option<String>,
    message: Option<String>,
    #[serde(rename = "Message")]
    hub_message: Option<String>,
    #[serde(rename = "ExceptionMessage")]
    exception_message: Option<String>,
}

/// What today's IoT Hub puts, as a JSON string, in the `Message` of its error body.
#[derive(Deserialize)]
struct HubMessage {
    #[serde(rename = "errorCode", default)]
    error_code: Option<serde_json::Value>,
    #[serde(rename = "trackingId", default)]
    tracking_id: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl AzureError {
    /// A short, fixed label per variant, for metrics, events and conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            AzureError::NotFound(_) => "NotFound",
            AzureError::Conflict(_) => "Conflict",
            AzureError::PreconditionFailed(_) => "PreconditionFailed",
            AzureError::Throttled { .. } => "Throttled",
            AzureError::Unauthorized(_) => "Unauthorized",
            AzureError::Transient { .. } => "Transient",
            AzureError::Invalid(_) => "Invalid",
            AzureError::Transport { .. } => "Transport",
            AzureError::Deadline(_) => "Deadline",
            AzureError::Decode(_) => "Decode",
            AzureError::Config(_) => "Config",
            AzureError::ConnectionString(_) => "ConnectionString",
            AzureError::Sas(_) => "Credentials",
        }
    }

    /// Maps a non-success answer to its variant.
    pub fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Self {
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let detail = service_error(status, headers, body);
        match status.as_u16() {
            404 => AzureError::NotFound(detail),
            409 => AzureError::Conflict(detail),
            412 => AzureError::PreconditionFailed(detail),
            429 => AzureError::Throttled { retry_after, detail },
            401 | 403 => AzureError::Unauthorized(detail),
            408 | 500..=599 => AzureError::Transient { retry_after, detail },
            _ => AzureError::Invalid(detail),
        }
    }

    /// What the service said, for the variants that come from an HTTP answer.
    pub fn service(&self) -> Option<&ServiceError> {
        match self {
            AzureError::NotFound(d)
            | AzureError::Conflict(d)
            | AzureError::PreconditionFailed(d)
            | AzureError::Unauthorized(d)
            | AzureError::Invalid(d)
            | AzureError::Throttled { detail: d, .. }
            | AzureError::Transient { detail: d, .. } => Some(d),
            _ => None,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        self.service().map(|d| d.status)
    }

    /// Whether retrying the same request may succeed (Transient, Throttled, connect/timeout failures).
    pub fn is_retryable(&self) -> bool {
        match self {
            AzureError::Throttled { .. } | AzureError::Transient { .. } => true,
            AzureError::Transport { source } => {
                (source.is_connect() || source.is_timeout() || source.is_request()) && !is_tls_rejection(source)
            }
            _ => false,
        }
    }

    /// The delay the service asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AzureError::Throttled { retry_after, .. } | AzureError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether this is a 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AzureError::NotFound(_))
    }
}

/// Whether a transport error is a TLS refusal (bad certificate, unknown issuer): retrying will not help.
/// rustls reports these as `io::Error`s of kind `InvalidData` inside the connect error.
fn is_tls_rejection(err: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        // `io::Error::source` skips the wrapped error, so unwrap nested io errors by hand.
        let mut io = cause.downcast_ref::<std::io::Error>();
        while let Some(e) = io {
            if e.kind() == std::io::ErrorKind::InvalidData {
                return true;
            }
            io = e.get_ref().and_then(|inner| inner.downcast_ref::<std::io::Error>());
        }
        source = cause.source();
    }
    false
}

/// An error and its causes, `: `-separated (reqwest's own text omits the cause).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn service_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ServiceError {
    let header = |name: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
    };
    let mut code = header("x-ms-error-code").or_else(|| header("iothub-errorcode"));
    let mut message = None;
    let mut tracking_id = None;
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => {
            tracking_id = parsed.tracking_id;
            if code.is_none() {
                code = parsed.error_code.map(code_text);
            }
            message = parsed.message;
            if let Some(hub) = parsed.hub_message {
                match serde_json::from_str::<HubMessage>(&hub) {
                    Ok(inner) => {
                        if code.is_none() {
                            code = inner.error_code.map(code_text);
                        }
                        tracking_id = tracking_id.or(inner.tracking_id);
                        message = inner.message;
                    }
                    Err(_) => {
                        let (hub_code, rest) = split_hub_message(&hub);
                        if code.is_none() {
                            code = hub_code;
                        }
                        message = Some(rest);
                        let exception = parsed.exception_message.as_deref().unwrap_or_default();
                        if let Some(id) = exception.trim().strip_prefix("Tracking ID:").filter(|id| !id.is_empty()) {
                            tracking_id = tracking_id.or_else(|| Some(id.to_owned()));
                        }
                    }
                }
            } else if message.is_none() {
                message = parsed.exception_message;
            }
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            if !text.is_empty() {
                message = Some(text);
            }
        }
    }
    ServiceError { status: status.as_u16(), code, message: message.map(truncate), tracking_id }
}

/// A code sent as a number (`404001`) or a string, as text.
fn code_text(code: serde_json::Value) -> String {
    match code {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// `ErrorCode:DeviceNotFound;Device xyz not found` -> (Some("DeviceNotFound"), "Device xyz not found").
fn split_hub_message(message: &str) -> (Option<String>, String) {
    match message.strip_prefix("ErrorCode:").and_then(|rest| rest.split_once(';')) {
        Some((code, rest)) => (Some(code.trim().to_owned()), rest.trim().to_owned()),
        None => (None, message.to_owned()),
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn maps_dps_error_body_and_header() {
        let body = br#"{"errorCode":404201,"trackingId":"t-1","message":"Enrollment not found","timestampUtc":"x"}"#;
        let err = AzureError::from_response(StatusCode::NOT_FOUND, &HeaderMap::new(), body);
        assert_eq!(err.reason(), "NotFound");
        let d = err.service().expect("service error");
        assert_eq!(d.code.as_deref(), Some("404201"));
        assert_eq!(d.tracking_id.as_deref(), Some("t-1"));
        assert_eq!(d.message.as_deref(), Some("Enrollment not found"));
        let err = AzureError::from_response(
            StatusCode::PRECONDITION_FAILED,
            &headers(&[("x-ms-error-code", "PreconditionFailed")]),
            body,
        );
        assert_eq!(err.reason(), "PreconditionFailed");
        assert_eq!(err.service().and_then(|d| d.code.as_deref()), Some("PreconditionFailed"));
    }

    #[test]
    fn maps_hub_error_body_and_header() {
        let body = br#"{"Message":"ErrorCode:DeviceAlreadyExists;A device with ID 'd1' is already registered.","ExceptionMessage":"Tracking ID:abc"}"#;
        let err = AzureError::from_response(StatusCode::CONFLICT, &HeaderMap::new(), body);
        assert_eq!(err.reason(), "Conflict");
        let d = err.service().expect("service error");
        assert_eq!(d.code.as_deref(), Some("DeviceAlreadyExists"));
        assert_eq!(d.message.as_deref(), Some("A device with ID 'd1' is already registered."));
        let err = AzureError::from_response(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("iothub-errorcode", "ThrottlingException"), ("retry-after", "7")]),
            b"",
        );
        assert!(matches!(err, AzureError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(7)));
        assert_eq!(err.service().and_then(|d| d.code.as_deref()), Some("ThrottlingException"));
        assert!(err.is_retryable());
    }

    #[test]
    fn reads_the_current_hub_error_body_with_a_json_document_in_message() {
        let body = br#"{"Message":"{\"errorCode\":409001,\"trackingId\":\"abc-TimeStamp:11/29/2026 06:00:00\",\"message\":\"Device d1 already exists\",\"timestampUtc\":\"2026-11-29T06:00:00Z\"}","ExceptionMessage":""}"#;
        let err = AzureError::from_response(StatusCode::CONFLICT, &HeaderMap::new(), body);
        let d = err.service().expect("service error");
        assert_eq!(d.code.as_deref(), Some("409001"));
        assert_eq!(d.message.as_deref(), Some("Device d1 already exists"));
        assert_eq!(d.tracking_id.as_deref(), Some("abc-TimeStamp:11/29/2026 06:00:00"));
        let err = AzureError::from_response(
            StatusCode::CONFLICT,
            &headers(&[("iothub-errorcode", "DeviceAlreadyExists")]),
            body,
        );
        assert_eq!(err.service().and_then(|d| d.code.as_deref()), Some("DeviceAlreadyExists"));
    }

    #[test]
    fn reads_the_tracking_id_of_the_older_hub_error_body() {
        let body = br#"{"Message":"ErrorCode:DeviceNotFound;Device d1 not found","ExceptionMessage":"Tracking ID:t-9-G:0-TimeStamp:10/18/2022 20:50:39"}"#;
        let err = AzureError::from_response(StatusCode::NOT_FOUND, &HeaderMap::new(), body);
        let d = err.service().expect("service error");
        assert_eq!(d.code.as_deref(), Some("DeviceNotFound"));
        assert_eq!(d.message.as_deref(), Some("Device d1 not found"));
        assert_eq!(d.tracking_id.as_deref(), Some("t-9-G:0-TimeStamp:10/18/2022 20:50:39"));
    }

    #[test]
    fn status_classes() {
        let cases = [
            (400, "Invalid", false),
            (401, "Unauthorized", false),
            (403, "Unauthorized", false),
            (408, "Transient", true),
            (415, "Invalid", false),
            (500, "Transient", true),
            (503, "Transient", true),
        ];
        for (status, reason, retry) in cases {
            let status = StatusCode::from_u16(status).expect("status");
            let err = AzureError::from_response(status, &HeaderMap::new(), b"not json");
            assert_eq!(err.reason(), reason, "{status}");
            assert_eq!(err.is_retryable(), retry, "{status}");
            assert_eq!(err.service().and_then(|d| d.message.as_deref()), Some("not json"));
        }
    }

    #[test]
    fn long_messages_are_cut() {
        let body = format!(r#"{{"message":"{}"}}"#, "é".repeat(600));
        let err = AzureError::from_response(StatusCode::BAD_REQUEST, &HeaderMap::new(), body.as_bytes());
        assert!(err.service().and_then(|d| d.message.as_ref()).is_some_and(|m| m.len() <= MAX_MESSAGE + 3));
    }
}
