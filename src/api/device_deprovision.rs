//! DeviceDeprovision: revoke one device at DPS, then disable or delete it in its hub.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CertificateSource, ProvisioningServiceRef, conditions};

/// The two-step unprovisioning of one device: DPS must refuse it (its individual enrollment is disabled,
/// or a disabled individual enrollment is created to block it inside a group), then its hub identity is
/// disabled or deleted.
///
/// Deleting this resource changes nothing outside Kubernetes unless `onDelete` is `Reinstate`; the
/// blocking entry stays in DPS so the device cannot re-enroll through its group.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dps.iot-operator.dev",
    version = "v1alpha1",
    kind = "DeviceDeprovision",
    namespaced,
    doc = "Revokes one device at the provisioning service, then disables or deletes it in its IoT hub.",
    status = "DeviceDeprovisionStatus",
    shortname = "deprov",
    category = "iot",
    printcolumn(name = "Registration ID", type_ = "string", json_path = ".spec.registrationId"),
    printcolumn(name = "Device", type_ = "string", json_path = ".spec.device"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Hub", type_ = "string", json_path = ".status.assignedHub"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceDeprovisionSpec {
    /// The ProvisioningService whose DPS instance provisioned the device.
    pub provisioning_service_ref: ProvisioningServiceRef,
    /// The device's registration ID (for X.509 group devices: the leaf certificate CN). Immutable
    /// (a CEL rule, not enforced by Kubernetes before 1.25; the controller enforces it too).
    #[schemars(
        length(min = 1, max = 128),
        pattern(crate::api::common::REGISTRATION_ID_PATTERN),
        extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "registrationId is immutable"}])
    )]
    pub registration_id: String,
    /// The EnrollmentGroup (same namespace) the device was provisioned through, if known. Used to find
    /// its registration record and to report the group on the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_group_ref: Option<EnrollmentGroupRef>,
    /// The device's leaf certificate. When given, the blocking entry is an X.509 individual enrollment
    /// with this certificate; otherwise a symmetric-key entry with throw-away keys, keyed by the
    /// registration ID (both refuse the device once disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_certificate: Option<CertificateSource>,
    /// What happens to the device identity in its hub: `Disable` (default) or `Delete`.
    #[serde(default)]
    pub device: DeprovisionDeviceAction,
    /// Why the device is deprovisioned; written to the hub device's `statusReason` (at most 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub reason: Option<String>,
    /// What deleting this resource does: `Retain` (default) keeps the device blocked; `Reinstate`
    /// removes the blocking entry (or re-enables the device's own entry) and re-enables a disabled
    /// hub device.
    #[serde(default)]
    pub on_delete: DeprovisionDeletion,
}

/// Names an EnrollmentGroup in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct EnrollmentGroupRef {
    /// Name of an EnrollmentGroup in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The hub-side action of a deprovision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeprovisionDeviceAction {
    /// Disable the device identity (keeps its twin and history, can be reinstated).
    #[default]
    Disable,
    /// Delete the device identity.
    Delete,
}

/// What deleting a DeviceDeprovision does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeprovisionDeletion {
    /// Nothing outside changes; the device stays blocked.
    #[default]
    Retain,
    /// Undo the revocation: lift the blocking entry and re-enable the hub device if it was disabled.
    Reinstate,
}

/// Where a deprovision stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeprovisionPhase {
    /// Not started.
    #[default]
    Pending,
    /// Making DPS refuse the device.
    Revoking,
    /// DPS refuses the device.
    Revoked,
    /// Disabling or deleting the hub device.
    Deregistering,
    /// Both steps are done.
    Completed,
    /// Cannot go on without a change from a person; see `message`.
    Failed,
}

/// Observed state of a deprovision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceDeprovisionStatus {
    /// Ready (Completed), Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Revoking, Revoked, Deregistering, Completed or Failed.
    #[serde(default)]
    pub phase: DeprovisionPhase,
    /// Why the phase is what it is, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When revocation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_time: Option<Time>,
    /// When DPS was confirmed to refuse the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_time: Option<Time>,
    /// When the hub device was disabled or deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_time: Option<Time>,
    /// The hub the device had been assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// The device's ID in that hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The DPS entry that refuses the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking_entry: Option<BlockingEntry>,
}

/// The disabled individual enrollment that blocks a device.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockingEntry {
    /// Registration ID of the disabled individual enrollment.
    pub registration_id: String,
    /// True when the operator created the entry for this deprovision; false when it disabled the
    /// device's existing individual enrollment.
    pub created: bool,
    /// Attestation of the entry: `x509` or `symmetricKey` (created), or the existing entry's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
}
