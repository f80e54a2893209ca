//! Raw HTTPS requests to the engine, for wire details our typed client would hide (or refuse to send).

use std::time::{SystemTime, UNIX_EPOCH};

use dps_operator::azure::connection_string::ConnectionString;
use dps_operator::azure::sas;

use super::engine::Engine;

/// A reqwest client trusting the engine's CA only.
pub fn https_client(engine: &Engine) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&engine.ca_pem()).expect("engine CA parses");
    reqwest::Client::builder().tls_built_in_root_certs(false).add_root_certificate(ca).build().expect("client builds")
}

/// Seconds since the epoch, `offset` from now.
pub fn unix_time(offset: i64) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
    now.saturating_add_signed(offset)
}

/// A SAS token for `resource` signed with the connection string's key, under `policy`, expiring at `expiry`.
pub fn token(cs: &ConnectionString, resource: &str, policy: Option<&str>, expiry: u64) -> String {
    let key = cs.key_bytes().expect("connection string has a key");
    sas::generate_token(&key, resource, policy, expiry).expose().to_string()
}

/// A valid service token for the engine's DPS endpoint.
pub fn dps_token(engine: &Engine) -> String {
    let cs = &engine.info.provisioning_service.connection_string;
    token(cs, &cs.host_name, cs.policy.as_deref(), unix_time(3600))
}

/// The DPS service URL of `path` with the API version.
pub fn dps_url(engine: &Engine, path: &str) -> String {
    format!("{}{path}?api-version=2021-10-01", engine.info.provisioning_service.endpoint.trim_end_matches('/'))
}

/// The sizes of the bulk requests the engine answered for `host` and `path` (`/enrollments`,
/// `/enrollmentGroups`, `/devices`), oldest first, from the engine-only `/engine/bulk-requests`.
pub async fn bulk_request_sizes(engine: &Engine, host: &str, path: &str) -> Vec<usize> {
    let response = https_client(engine)
        .get(dps_url(engine, "/engine/bulk-requests"))
        .header("Authorization", dps_token(engine))
        .send()
        .await
        .expect("engine answers");
    assert!(response.status().is_success(), "/engine/bulk-requests: {}", response.status());
    let all: Vec<serde_json::Value> = response.json().await.expect("JSON list");
    all.iter()
        .filter(|r| r["host"] == host && r["path"] == path)
        .map(|r| r["items"].as_u64().expect("item count") as usize)
        .collect()
}
