//! IoT Hub identity registry (api-version 2021-04-12) resources.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::DeviceCapabilities;

/// Device `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceStatus {
    /// The device may connect.
    #[default]
    Enabled,
    /// The device is refused.
    Disabled,
}

/// `authentication.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthenticationType {
    /// Symmetric keys.
    Sas,
    /// Self-signed certificate thumbprints.
    SelfSigned,
    /// CA-signed certificate.
    CertificateAuthority,
    /// None (modules inheriting).
    None,
}

/// `authentication`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationMechanism {
    /// Kind.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AuthenticationType>,
    /// Keys for `sas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKey>,
    /// Thumbprints for `selfSigned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509_thumbprint: Option<X509Thumbprint>,
}

/// `authentication.symmetricKey`: the same `{primaryKey, secondaryKey}` pair as a DPS symmetric-key attestation.
pub use super::dps::SymmetricKeyAttestation as SymmetricKey;

/// `authentication.x509Thumbprint`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Thumbprint {
    /// Primary thumbprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_thumbprint: Option<String>,
    /// Secondary thumbprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_thumbprint: Option<String>,
}

/// A device identity (`/devices/{id}`). `PUT` replaces every updatable field: send the whole object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Device ID (case-sensitive).
    pub device_id: String,
    /// Generation ID (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<String>,
    /// ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `Connected|Disconnected` (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state: Option<String>,
    /// Enabled or disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceStatus>,
    /// Why (at most 128 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Read-only timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state_updated_time: Option<String>,
    /// Read-only timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_updated_time: Option<String>,
    /// Read-only timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<String>,
    /// Read-only counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_to_device_message_count: Option<i64>,
    /// Credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationMechanism>,
    /// Capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<DeviceCapabilities>,
    /// Edge scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// Parent scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_scopes: Option<Vec<String>>,
    /// Fields this client does not know, kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `importMode` of a bulk registry item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ImportMode {
    /// Create; existing devices fail.
    Create,
    /// Replace an existing device; a missing one fails the item with `DeviceNotFound` (never created).
    Update,
    /// Replace an existing device when `eTag` matches; a missing one fails the item with `DeviceNotFound`.
    #[serde(rename = "updateIfMatchETag")]
    UpdateIfMatchETag,
    /// Delete.
    Delete,
    /// Delete when `eTag` matches.
    #[serde(rename = "deleteIfMatchETag")]
    DeleteIfMatchETag,
    /// Update the twin.
    UpdateTwin,
    /// Update the twin when `twinETag` matches.
    #[serde(rename = "updateTwinIfMatchETag")]
    UpdateTwinIfMatchETag,
}

/// One item of bulk `POST /devices` (note `eTag` with a capital T).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportImportDevice {
    /// Device ID.
    pub id: String,
    /// Module ID, for module items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// Device ETag for the `IfMatchETag` modes.
    #[serde(rename = "eTag", default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
    /// What to do.
    pub import_mode: ImportMode,
    /// Enabled or disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceStatus>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationMechanism>,
    /// Twin ETag for `updateTwinIfMatchETag`.
    #[serde(rename = "twinETag", default, skip_serializing_if = "Option::is_none")]
    pub twin_e_tag: Option<String>,
    /// Twin tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Value>,
    /// Twin properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Value>,
    /// Capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<DeviceCapabilities>,
    /// Edge scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// Parent scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_scopes: Option<Vec<String>>,
}

impl ExportImportDevice {
    /// An item with only an ID and a mode.
    pub fn new(id: impl Into<String>, import_mode: ImportMode) -> Self {
        ExportImportDevice {
            id: id.into(),
            module_id: None,
            e_tag: None,
            import_mode,
            status: None,
            status_reason: None,
            authentication: None,
            twin_e_tag: None,
            tags: None,
            properties: None,
            capabilities: None,
            device_scope: None,
            parent_scopes: None,
        }
    }
}

/// An error code that services send as a number or as a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorCodeValue {
    /// Numeric (e.g. `404001`).
    Number(i64),
    /// Named (e.g. `DeviceNotFound`).
    Name(String),
}

impl fmt::Display for ErrorCodeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCodeValue::Number(n) => write!(f, "{n}"),
            ErrorCodeValue::Name(s) => f.write_str(s),
        }
    }
}

/// Result of bulk `POST /devices`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkRegistryOperationResult {
    /// Whether every item succeeded.
    pub is_successful: bool,
    /// Failed items.
    #[serde(default)]
    pub errors: Vec<DeviceRegistryOperationError>,
    /// Warnings.
    #[serde(default)]
    pub warnings: Vec<DeviceRegistryOperationWarning>,
}

impl BulkRegistryOperationResult {
    /// Folds the results of consecutive chunks into one.
    pub fn merge(results: impl IntoIterator<Item = Self>) -> Self {
        let init = BulkRegistryOperationResult { is_successful: true, ..Self::default() };
        results.into_iter().fold(init, |mut acc, r| {
            acc.is_successful &= r.is_successful;
            acc.errors.extend(r.errors);
            acc.warnings.extend(r.warnings);
            acc
        })
    }
}

/// What became of one device's item in a bulk registry call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkItemOutcome<'a> {
    /// The item succeeded.
    Done,
    /// The device does not exist (for a delete, that means it is gone: done as well).
    DeviceNotFound,
    /// The item failed for another reason.
    Failed(&'a DeviceRegistryOperationError),
}

impl BulkRegistryOperationResult {
    /// The outcome of the item for `device_id` (an item without an error succeeded).
    pub fn outcome(&self, device_id: &str) -> BulkItemOutcome<'_> {
        match self.errors.iter().find(|e| e.device_id == device_id && e.module_id.is_none()) {
            None => BulkItemOutcome::Done,
            Some(e) if e.is_device_not_found() => BulkItemOutcome::DeviceNotFound,
            Some(e) => BulkItemOutcome::Failed(e),
        }
    }
}

/// One failed bulk registry item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistryOperationError {
    /// Device ID.
    pub device_id: String,
    /// Error code (name or number).
    pub error_code: ErrorCodeValue,
    /// Error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_status: Option<String>,
    /// Module ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The operation that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

impl DeviceRegistryOperationError {
    /// Whether the item failed because the device does not exist: the spec names the code `DeviceNotFound`,
    /// the C# SDK serializes the same code as the number 404001.
    pub fn is_device_not_found(&self) -> bool {
        match &self.error_code {
            ErrorCodeValue::Name(name) => name == "DeviceNotFound" || name == "404001",
            ErrorCodeValue::Number(n) => *n == 404_001,
        }
    }
}

/// One bulk registry warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistryOperationWarning {
    /// Device ID.
    pub device_id: String,
    /// Warning code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning_code: Option<String>,
    /// Warning text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning_status: Option<String>,
}

/// A row of `POST /devices/query` (`SELECT * FROM devices`): the device twin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    /// Device ID.
    #[serde(default)]
    pub device_id: String,
    /// Module ID (module twins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// Twin ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Device identity ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_etag: Option<String>,
    /// Enabled or disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceStatus>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// `Connected|Disconnected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state: Option<String>,
    /// Authentication kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_type: Option<AuthenticationType>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Value>,
    /// Desired and reported properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Value>,
    /// Capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<DeviceCapabilities>,
    /// Edge scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
