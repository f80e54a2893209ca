//! Errors on the wire, in Azure's two shapes: the DPS shape (`{errorCode:int, trackingId, message, info,
//! timestampUtc}` + `x-ms-error-code`) and the IoT Hub shape (`{"Message":"<JSON string>","ExceptionMessage"}`
//! + `iothub-errorcode`, with the older `ErrorCode:..;..` Message for DeviceNotFound).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::util;

/// Which service's error shape a response uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// DPS service and device registration APIs.
    Dps,
    /// IoT Hub identity registry API.
    Hub,
}

/// The kinds of failure the engine reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed request, invalid field or identifier.
    BadRequest,
    /// Missing, malformed, expired or wrong credentials.
    Unauthorized,
    /// The record does not exist.
    NotFound,
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// The record already exists (create without If-Match).
    Conflict,
    /// The If-Match etag does not match.
    PreconditionFailed,
    /// The body is larger than 96 KB.
    PayloadTooLarge,
    /// The body is not JSON.
    UnsupportedMediaType,
    /// Over the endpoint's request quota (`--throttle-per-minute`).
    Throttled,
    /// The engine failed (storage, a bug).
    Internal,
    /// The service cannot handle the request for now (only as an injected fault, see `faults`).
    ServiceUnavailable,
}

impl ErrorKind {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::Throttled => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// DPS's six-digit error code (HTTP status followed by a detail number).
    pub fn dps_code(self) -> u32 {
        match self {
            ErrorKind::BadRequest => 400_004,
            ErrorKind::Unauthorized => 401_002,
            ErrorKind::NotFound => 404_201,
            ErrorKind::MethodNotAllowed => 405_001,
            ErrorKind::Conflict => 409_201,
            ErrorKind::PreconditionFailed => 412_001,
            ErrorKind::PayloadTooLarge => 413_001,
            ErrorKind::UnsupportedMediaType => 415_001,
            ErrorKind::Throttled => 429_001,
            ErrorKind::Internal => 500_000,
            ErrorKind::ServiceUnavailable => 503_000,
        }
    }

    /// IoT Hub's error code name (the `iothub-errorcode` header).
    pub fn hub_code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "ArgumentInvalid",
            ErrorKind::Unauthorized => "IotHubUnauthorizedAccess",
            ErrorKind::NotFound => "DeviceNotFound",
            ErrorKind::MethodNotAllowed => "GenericMethodNotAllowed",
            ErrorKind::Conflict => "DeviceAlreadyExists",
            ErrorKind::PreconditionFailed => "PreconditionFailed",
            ErrorKind::PayloadTooLarge => "MessageTooLarge",
            ErrorKind::UnsupportedMediaType => "GenericUnsupportedMediaType",
            ErrorKind::Throttled => "ThrottlingException",
            ErrorKind::Internal => "ServerError",
            ErrorKind::ServiceUnavailable => "ServiceUnavailable",
        }
    }

    /// IoT Hub's six-digit number for [`hub_code`](Self::hub_code): the C# SDK only trusts the header when the
    /// two agree, so they must name the same code.
    pub fn hub_number(self) -> u32 {
        match self {
            ErrorKind::BadRequest => 400_004,
            ErrorKind::Unauthorized => 401_002,
            ErrorKind::NotFound => 404_001,
            ErrorKind::MethodNotAllowed => 405_000,
            ErrorKind::Conflict => 409_001,
            ErrorKind::PreconditionFailed => 412_001,
            ErrorKind::PayloadTooLarge => 413_001,
            ErrorKind::UnsupportedMediaType => 415_000,
            ErrorKind::Throttled => 429_001,
            ErrorKind::Internal => 500_001,
            ErrorKind::ServiceUnavailable => 503_001,
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub message: String,
    /// Which shape to render.
    pub flavor: Flavor,
}

impl ApiError {
    /// A DPS-shaped error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { kind, message: message.into(), flavor: Flavor::Dps }
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    /// 412.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PreconditionFailed, message)
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// The same error rendered in the IoT Hub shape.
    pub fn hub(mut self) -> Self {
        self.flavor = Flavor::Hub;
        self
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(err: rusqlite::Error) -> Self {
        ApiError::internal(format!("storage: {err}"))
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(err: serde_json::Error) -> Self {
        ApiError::internal(format!("stored record unreadable: {err}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let tracking = util::new_uuid();
        let now = util::now_utc();
        let status = self.kind.status();
        let mut resp = match self.flavor {
            Flavor::Dps => {
                let code = self.kind.dps_code();
                let body = serde_json::json!({
                    "errorCode": code,
                    "trackingId": tracking,
                    "message": self.message,
                    "info": {},
                    "timestampUtc": now,
                });
                let mut resp = (status, axum::Json(body)).into_response();
                resp.headers_mut().insert("x-ms-error-code", HeaderValue::from(code));
                resp
            }
            Flavor::Hub => {
                let code = self.kind.hub_code();
                let mut resp = (status, axum::Json(hub_body(self.kind, &self.message, &tracking))).into_response();
                resp.headers_mut().insert("iothub-errorcode", HeaderValue::from_static(code));
                resp
            }
        };
        if self.kind == ErrorKind::PayloadTooLarge {
            // The rest of the oversized body is never read, so the connection cannot carry another request.
            resp.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The IoT Hub error body. Today's hub puts a JSON document in `Message` (`errorCode` as six digits, `trackingId`,
/// `message`, `timestampUtc`), which the C# SDK parses first; DeviceNotFound keeps the older
/// `ErrorCode:DeviceNotFound;<text>` form, the only one the Node SDK turns into `DeviceNotFoundError` (the C# SDK
/// reads it as its fallback). Evidence in tests/sdk-compat/WIRE-NOTES.md, "Task B".
fn hub_body(kind: ErrorKind, message: &str, tracking: &str) -> serde_json::Value {
    let now = jiff::Timestamp::now();
    // Azure's tracking IDs end in the time, in .NET's invariant short form.
    let tracking_id = format!("{}-TimeStamp:{}", tracking.replace('-', ""), now.strftime("%m/%d/%Y %H:%M:%S"));
    if kind == ErrorKind::NotFound {
        return serde_json::json!({
            "Message": format!("ErrorCode:{};{message}", kind.hub_code()),
            "ExceptionMessage": format!("Tracking ID:{tracking_id}"),
        });
    }
    let inner = serde_json::json!({
        "errorCode": kind.hub_number(),
        "trackingId": tracking_id,
        "message": message,
        "timestampUtc": now.to_string(),
    });
    serde_json::json!({ "Message": inner.to_string(), "ExceptionMessage": "" })
}

/// Result of an engine operation answered on the wire.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [ErrorKind; 10] = [
        ErrorKind::BadRequest,
        ErrorKind::Unauthorized,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Conflict,
        ErrorKind::PreconditionFailed,
        ErrorKind::PayloadTooLarge,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::Throttled,
        ErrorKind::Internal,
    ];

    #[test]
    fn hub_error_numbers_are_six_digits_under_their_http_status() {
        for kind in KINDS {
            assert_eq!(kind.hub_number() / 1000, u32::from(kind.status().as_u16()), "{kind:?}");
        }
    }

    #[test]
    fn hub_errors_other_than_not_found_hold_their_number_and_text_in_a_json_message() {
        for kind in KINDS.into_iter().filter(|k| *k != ErrorKind::NotFound) {
            let body = hub_body(kind, "why it failed", "0a1b-2c3d");
            let inner: serde_json::Value =
                serde_json::from_str(body["Message"].as_str().unwrap_or_default()).expect("Message is JSON");
            assert_eq!(inner["errorCode"], kind.hub_number(), "{kind:?}");
            assert_eq!(inner["message"], "why it failed");
            assert!(inner["trackingId"].as_str().is_some_and(|t| t.starts_with("0a1b2c3d-TimeStamp:")), "{inner}");
        }
        let body = hub_body(ErrorKind::NotFound, "Device d not found", "t");
        assert_eq!(body["Message"], "ErrorCode:DeviceNotFound;Device d not found");
    }
}
