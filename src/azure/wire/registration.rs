//! DPS device registration API (api-version 2021-06-01): what a device sends and gets back.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// `registrationState` as a device sees it: the service's registration state record.
pub type DeviceRegistrationResult = super::dps::DeviceRegistrationState;
