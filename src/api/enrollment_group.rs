//! EnrollmentGroup: a DPS entry admitting every device whose certificate chain or derived key matches.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    CertificatePair, CredentialStatus, ProvisioningServiceRef, ProvisioningSettings, ProvisioningStatus,
    SymmetricKeyAttestation, conditions,
};
use super::individual_enrollment::{DeviceDeletion, EntryOwnership};

/// An enrollment group in DPS.
///
/// Deleting it disables the group, disables or deletes every device registered through it in its hub,
/// removes the registration records, and then deletes the group unless a higher enabled group in the
/// same certificate chain would re-admit the devices (see `onDelete.group`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dps.iot-operator.dev",
    version = "v1alpha1",
    kind = "EnrollmentGroup",
    namespaced,
    doc = "An enrollment group in a device provisioning service.",
    status = "EnrollmentGroupStatus",
    shortname = "egrp",
    category = "iot",
    printcolumn(name = "Group ID", type_ = "string", json_path = ".status.enrollmentGroupId"),
    printcolumn(name = "Status", type_ = "string", json_path = ".spec.provisioningStatus"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Devices", type_ = "integer", json_path = ".status.registeredDevices"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.enrollmentGroupId) == has(oldSelf.enrollmentGroupId)",
        "message": "enrollmentGroupId cannot be added or removed after creation"
    }
]))]
pub struct EnrollmentGroupSpec {
    /// The ProvisioningService whose DPS instance holds the group.
    pub provisioning_service_ref: ProvisioningServiceRef,
    /// DPS enrollment group ID. Defaults to `metadata.name`. Immutable (a CEL rule, not enforced by
    /// Kubernetes before 1.25; the controller enforces it too). Alphanumeric plus `- . _ :`, ending
    /// in an alphanumeric character or `-`, at most 128 characters (DPS's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        pattern(crate::api::common::REGISTRATION_ID_PATTERN),
        extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "enrollmentGroupId is immutable"}])
    )]
    pub enrollment_group_id: Option<String>,
    /// `Enabled` admits the group's devices; `Disabled` refuses them, even when a group higher in
    /// their certificate chain is enabled.
    #[serde(default)]
    pub provisioning_status: ProvisioningStatus,
    /// How member devices prove their identity: exactly one of `symmetricKey` or `x509`.
    pub attestation: GroupAttestation,
    /// Allocation, hubs, initial twin, reprovisioning and capabilities.
    #[serde(flatten)]
    pub settings: ProvisioningSettings,
    /// What deleting this resource does outside Kubernetes.
    #[serde(default)]
    pub on_delete: EnrollmentGroupDeletion,
}

/// Attestation of an enrollment group: exactly one mechanism.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::common::exactly_one_property, extend("x-kubernetes-validations" = [{
    "rule": "[has(self.symmetricKey), has(self.x509)].exists_one(x, x)",
    "message": "attestation must set exactly one of symmetricKey, x509"
}]))]
pub enum GroupAttestation {
    /// A group key; each device uses HMAC-SHA256(group key, registration ID) as its own key.
    SymmetricKey(SymmetricKeyAttestation),
    /// An intermediate or root CA certificate in the devices' chains.
    X509(GroupX509Attestation),
}

/// X.509 attestation of a group: exactly one of `signingCertificates` or `caReferences`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::common::exactly_one_property, extend("x-kubernetes-validations" = [{
    "rule": "[has(self.signingCertificates), has(self.caReferences)].exists_one(x, x)",
    "message": "x509 must set exactly one of signingCertificates, caReferences"
}]))]
pub enum GroupX509Attestation {
    /// The intermediate or root CA certificate(s) that signed the devices' certificates.
    SigningCertificates(CertificatePair),
    /// Names of CA certificates already registered (and verified) in the DPS instance.
    CaReferences(CaReferences),
}

/// Names of CA certificates registered in the DPS instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct CaReferences {
    /// Name of the primary CA certificate.
    #[schemars(length(min = 1, max = 256))]
    pub primary: String,
    /// Name of the secondary CA certificate, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub secondary: Option<String>,
}

/// What happens to the DPS group when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum GroupDeletion {
    /// Delete the group unless an enabled group higher in the chain would re-admit its devices; then
    /// keep it disabled and say so in an event.
    #[default]
    DeleteIfSafe,
    /// Delete the group even when devices could re-enroll through a higher group.
    Delete,
    /// Leave the group in DPS, disabled.
    Disable,
    /// Leave the group in DPS as it is (its devices keep access).
    Retain,
}

/// What happens to the group's registration records in DPS when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RegistrationRecordDeletion {
    /// Delete each device's registration record.
    #[default]
    Delete,
    /// Keep the registration records.
    Retain,
}

/// Deletion policy of an enrollment group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentGroupDeletion {
    /// The DPS group: `DeleteIfSafe` (default), `Delete`, `Disable` or `Retain`.
    #[serde(default)]
    pub group: GroupDeletion,
    /// Every device registered through the group, in its hub: `Disable` (default), `Delete` or `Retain`.
    #[serde(default)]
    pub devices: DeviceDeletion,
    /// The group's registration records in DPS: `Delete` (default) or `Retain`.
    #[serde(default)]
    pub registrations: RegistrationRecordDeletion,
}

/// Observed state of an enrollment group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentGroupStatus {
    /// Ready, Reconciling, Stalled, and `ReEnrollmentRisk` when an enabled group higher in the chain exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The group ID the resource is bound to (kept so a changed spec can be refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
    /// The DPS group's etag at the last write or read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The credentials the DPS entry holds (never the key material) and their rotation generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialStatus>,
    /// Number of devices with a registration record through this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_devices: Option<i64>,
    /// How this resource came to manage the DPS group: `Created` it, or `Adopted` an existing one
    /// (only with the annotation `dps.iot-operator.dev/adopt: "true"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<EntryOwnership>,
    /// IDs of enabled groups higher in the same certificate chain that would re-admit this group's
    /// devices if this group were deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub re_enrollment_risk: Vec<String>,
    /// Progress of the deletion steps, while the resource is being deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<GroupDeletionProgress>,
}

/// Which deletion step has completed, and how far through the group's devices it is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupDeletionProgress {
    /// The last completed step, for example `GroupDisabled`, `DevicesDisabled`, `GroupDeleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// When deletion started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_time: Option<Time>,
    /// Devices handled so far in their hubs.
    #[serde(default)]
    pub devices_done: i64,
    /// Devices found in the group's registration records.
    #[serde(default)]
    pub devices_total: i64,
    /// DPS paging cursor of the registration query, so a restart resumes where it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<String>,
    /// What the current step is waiting for, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
