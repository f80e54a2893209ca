//! Wire records: enrollments, attestation mechanisms, registration states, hub devices.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An individual enrollment or an enrollment group (the group has `enrollmentGroupId` and no device fields).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Individual enrollments: the registration ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    /// Groups: the group ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
    /// Individual enrollments: the desired device ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Individual enrollments: the current registration state (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_state: Option<Value>,
    /// Individual enrollments: free-form device information.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional_device_information: Option<Value>,
    /// How devices prove their identity.
    #[serde(default)]
    pub attestation: Option<Attestation>,
    /// `{iotEdge: bool}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Value>,
    /// Legacy single hub.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iot_hub_host_name: Option<String>,
    /// Hubs devices may be assigned to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iot_hubs: Option<Vec<String>>,
    /// Initial twin `{tags, properties{desired}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_twin: Option<Value>,
    /// Quoted etag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `enabled` (default) or `disabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_status: Option<String>,
    /// `{updateHubAssignment, migrateDeviceData}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reprovision_policy: Option<ReprovisionPolicy>,
    /// `hashed`, `geoLatency`, `static` or `custom`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation_policy: Option<String>,
    /// Custom allocation webhook (stored, not called).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_allocation_definition: Option<Value>,
    /// Creation time (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    /// Last update time (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
}

impl Entry {
    /// Whether the entry admits devices.
    pub fn enabled(&self) -> bool {
        !self.provisioning_status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("disabled"))
    }

    /// `reprovisionPolicy.updateHubAssignment` (default true).
    pub fn update_hub_assignment(&self) -> bool {
        self.reprovision_policy.as_ref().is_none_or(|p| p.update_hub_assignment)
    }

    /// `capabilities.iotEdge` (default false).
    pub fn iot_edge(&self) -> bool {
        self.capabilities.as_ref().and_then(|c| c.get("iotEdge")).and_then(Value::as_bool).unwrap_or(false)
    }

    /// The same entry as answered to clients: keys and certificates removed unless `with_secrets`.
    pub fn for_output(&self, with_secrets: bool) -> Entry {
        let mut e = self.clone();
        if let Some(a) = e.attestation.as_mut() {
            a.strip(with_secrets);
        }
        e
    }
}

/// `{updateHubAssignment, migrateDeviceData}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReprovisionPolicy {
    /// Move the device to the newly allocated hub on re-registration.
    pub update_hub_assignment: bool,
    /// Carry twin data across (not modelled: the engine keeps twins per hub).
    pub migrate_device_data: bool,
}

/// An attestation mechanism.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attestation {
    /// `none`, `tpm`, `x509` or `symmetricKey`.
    #[serde(rename = "type")]
    pub kind: String,
    /// TPM endorsement and storage root keys (stored only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Value>,
    /// X.509 certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509Attestation>,
    /// Symmetric keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKeys>,
}

impl Attestation {
    fn strip(&mut self, with_secrets: bool) {
        if with_secrets {
            return;
        }
        if let Some(k) = self.symmetric_key.as_mut() {
            k.primary_key = None;
            k.secondary_key = None;
        }
        if let Some(x) = self.x509.as_mut() {
            for certs in [x.client_certificates.as_mut(), x.signing_certificates.as_mut()].into_iter().flatten() {
                for c in [certs.primary.as_mut(), certs.secondary.as_mut()].into_iter().flatten() {
                    c.certificate = None;
                }
            }
        }
    }
}

/// `{primaryKey, secondaryKey}`. An empty key means "generate one", as a missing one does: the Azure IoT
/// SDKs send `""` for keys the caller did not give.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKeys {
    /// Base64 key.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "empty_as_none")]
    pub primary_key: Option<String>,
    /// Base64 key.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "empty_as_none")]
    pub secondary_key: Option<String>,
}

fn empty_as_none<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let key: Option<String> = Option::deserialize(deserializer)?;
    Ok(key.filter(|k| !k.is_empty()))
}

/// X.509 attestation: leaf certificates (individual) or signing certificates (group), or CA references.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Attestation {
    /// Individual enrollments: the device's own certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<X509Certificates>,
    /// Groups: intermediate or root CA certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_certificates: Option<X509Certificates>,
    /// Names of verified CA certificates (stored; never match in the engine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_references: Option<Value>,
}

/// `{primary, secondary}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Certificates {
    /// The primary certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<X509CertificateWithInfo>,
    /// The secondary certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secondary: Option<X509CertificateWithInfo>,
}

impl X509Certificates {
    /// The certificates present.
    pub fn iter(&self) -> impl Iterator<Item = &X509CertificateWithInfo> {
        [self.primary.as_ref(), self.secondary.as_ref()].into_iter().flatten()
    }
}

/// `{certificate, info}`: the service fills `info`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509CertificateWithInfo {
    /// PEM or base64 DER as supplied; stored as base64 DER.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Parsed facts about the certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<X509CertificateInfo>,
}

/// Facts the service reports about a certificate.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct X509CertificateInfo {
    /// Subject distinguished name.
    pub subject_name: String,
    /// Upper-case hex SHA-1 of the DER.
    pub sha1_thumbprint: String,
    /// Upper-case hex SHA-256 of the DER.
    pub sha256_thumbprint: String,
    /// Issuer distinguished name.
    pub issuer_name: String,
    /// RFC 3339.
    pub not_before_utc: String,
    /// RFC 3339.
    pub not_after_utc: String,
    /// Upper-case hex serial number.
    pub serial_number: String,
    /// X.509 version (3 for v3).
    pub version: u32,
}

/// A device registration state, as stored and answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationState {
    /// Registration ID (lower-case).
    pub registration_id: String,
    /// First registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    /// Assigned hub host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// Device ID in the hub.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `assigned`, `failed`, `disabled`, ...
    pub status: String,
    /// `initialAssignment`, `deviceDataMigrated`, `deviceDataReset`, `reprovisionedToInitialAssignment`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    /// Numeric error code for failed or disabled registrations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// Error text for failed or disabled registrations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Last change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
    /// Quoted etag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Custom payload (not produced by the engine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// An IoT Hub device identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Device ID (case-sensitive).
    #[serde(default)]
    pub device_id: String,
    /// Changes when the identity is recreated.
    #[serde(default)]
    pub generation_id: Option<String>,
    /// Unquoted etag.
    #[serde(default)]
    pub etag: Option<String>,
    /// Always `Disconnected` in the engine.
    #[serde(default)]
    pub connection_state: Option<String>,
    /// `enabled` or `disabled`.
    #[serde(default)]
    pub status: Option<String>,
    /// Why the status was set (at most 128 characters).
    #[serde(default)]
    pub status_reason: Option<String>,
    /// Connection state change time.
    #[serde(default)]
    pub connection_state_updated_time: Option<String>,
    /// Status change time.
    #[serde(default)]
    pub status_updated_time: Option<String>,
    /// Last activity time.
    #[serde(default)]
    pub last_activity_time: Option<String>,
    /// Always 0 in the engine.
    #[serde(default)]
    pub cloud_to_device_message_count: Option<u64>,
    /// `{type, symmetricKey, x509Thumbprint}`.
    #[serde(default)]
    pub authentication: Option<DeviceAuth>,
    /// `{iotEdge}`.
    #[serde(default)]
    pub capabilities: Option<Value>,
    /// Edge scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// Parent scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_scopes: Option<Vec<String>>,
}

/// Device authentication.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceAuth {
    /// `sas`, `selfSigned`, `certificateAuthority` or `none`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// SAS keys.
    #[serde(default)]
    pub symmetric_key: Option<SymmetricKeys>,
    /// Self-signed thumbprints.
    #[serde(default)]
    pub x509_thumbprint: Option<Thumbprints>,
}

/// `{primaryThumbprint, secondaryThumbprint}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Thumbprints {
    /// Thumbprint.
    #[serde(default)]
    pub primary_thumbprint: Option<String>,
    /// Thumbprint.
    #[serde(default)]
    pub secondary_thumbprint: Option<String>,
}
