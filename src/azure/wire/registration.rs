//! DPS device registration API (api-version 2021-06-01): what a device sends and gets back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::dps::RegistrationStatus;

/// Body of `PUT /{idScope}/registrations/{registrationId}/register`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistration {
    /// The registration ID (repeated from the path).
    pub registration_id: String,
    /// Custom payload forwarded to custom allocation and returned in the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// TPM attestation data (not used by this client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Value>,
}

/// Answer of `register` (202) and of `GET .../operations/{operationId}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationOperationStatus {
    /// Operation to poll.
    #[serde(default)]
    pub operation_id: String,
    /// `assigning` while in progress, then `assigned|failed|disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RegistrationStatus>,
    /// The result, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_state: Option<DeviceRegistrationResult>,
}

/// `registrationState` as a device sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistrationResult {
    /// Registration ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    /// Created at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    /// Assigned hub host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// Device ID in that hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RegistrationStatus>,
    /// Substatus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    /// Error code when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// Error message when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Updated at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
    /// ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Payload returned by custom allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Attestation-specific fields (`x509`, `symmetricKey`, `tpm`) and anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
