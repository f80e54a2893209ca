//! What the client makes of a backend's error answer (any status, any body, any Retry-After).
#![no_main]

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use dps_operator::azure::error::AzureError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &[u8], &[u8])| {
    let (status, retry_after, body) = input;
    let Ok(status) = StatusCode::from_u16(status) else { return };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(retry_after) {
        headers.insert("retry-after", value);
    }
    let err = AzureError::from_response(status, &headers, body);
    let _ = (err.reason(), err.retry_after(), err.to_string());
});
