//! Service-level SAS authentication for the DPS service API and the hub registry API.

use axum::http::HeaderMap;

use super::error::{ApiError, ApiResult};
use super::sas::SasToken;
use super::{Hub, Shared, util};

/// The DPS service policy name.
pub const DPS_POLICY: &str = "provisioningserviceowner";
/// The hub registry policy name.
pub const HUB_POLICY: &str = "iothubowner";

/// The parsed token of the Authorization header.
pub fn token(headers: &HeaderMap) -> ApiResult<SasToken> {
    let value = headers
        .get("authorization")
        .ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    SasToken::parse(value).map_err(|e| ApiError::unauthorized(e.to_string()))
}

/// Requires a valid `provisioningserviceowner` token for the DPS host.
pub fn dps(shared: &Shared, headers: &HeaderMap) -> ApiResult<()> {
    let t = token(headers)?;
    t.verify(&shared.dps_host, Some(DPS_POLICY), &[&shared.dps_key], util::unix_now())
        .map_err(|e| ApiError::unauthorized(e.to_string()))
}

/// Requires a valid `iothubowner` token for the hub's host.
pub fn hub(hub: &Hub, headers: &HeaderMap) -> ApiResult<()> {
    let t = token(headers).map_err(ApiError::hub)?;
    t.verify(&hub.host_name, Some(HUB_POLICY), &[&hub.key], util::unix_now())
        .map_err(|e| ApiError::unauthorized(e.to_string()).hub())
}
