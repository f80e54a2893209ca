//! IndividualEnrollment: one device's DPS entry.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    CertificatePair, CredentialStatus, ProvisioningServiceRef, ProvisioningSettings, ProvisioningStatus,
    SymmetricKeyAttestation, conditions,
};

/// A device's individual enrollment in DPS.
///
/// Deleting it revokes first: the entry is disabled, the device identity is disabled or deleted in the
/// hub it was assigned to, then the entry is deleted or kept as `onDelete` says.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dps.iot-operator.dev",
    version = "v1alpha1",
    kind = "IndividualEnrollment",
    namespaced,
    doc = "One device's individual enrollment in a device provisioning service.",
    status = "IndividualEnrollmentStatus",
    shortname = "ienr",
    category = "iot",
    printcolumn(name = "Registration ID", type_ = "string", json_path = ".status.registrationId"),
    printcolumn(name = "Status", type_ = "string", json_path = ".spec.provisioningStatus"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Hub", type_ = "string", json_path = ".status.registration.assignedHub"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.registrationId) == has(oldSelf.registrationId)",
        "message": "registrationId cannot be added or removed after creation"
    },
    {
        // A transition rule, so it judges only a change: an entry created before the rule was enforced
        // (Kubernetes < 1.25, or an older CRD) keeps its ID and can still be edited and disabled. A
        // Disabled entry is exempt: no device registers through it, so the CN limit cannot matter.
        "rule": "!has(self.attestation.x509) || !has(self.registrationId) || size(self.registrationId) <= 64 || (has(self.provisioningStatus) && self.provisioningStatus == 'Disabled') || (has(oldSelf.attestation.x509) && has(oldSelf.registrationId) && oldSelf.registrationId == self.registrationId)",
        "message": "registrationId is at most 64 characters with X.509 attestation (it is the certificate CN) while the entry is Enabled"
    }
]))]
pub struct IndividualEnrollmentSpec {
    /// The ProvisioningService whose DPS instance holds the entry.
    pub provisioning_service_ref: ProvisioningServiceRef,
    /// DPS registration ID. Defaults to `metadata.name`. Immutable. Alphanumeric plus `- . _ :`, ending
    /// in an alphanumeric character or `-` (DPS's rule), at most 128 characters: every apiserver enforces
    /// these. With X.509 attestation an Enabled entry's ID is at most 64 (it is the certificate CN). The
    /// immutability and X.509 rules are CEL rules, which Kubernetes before 1.25 drops; the controller
    /// enforces them too and stalls the resource. The X.509 rule judges only a change (a new ID, or a
    /// switch to X.509), so an entry created before it was enforced can still be edited and disabled; a
    /// new entry breaking it is stalled by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        pattern(crate::api::common::REGISTRATION_ID_PATTERN),
        extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "registrationId is immutable"}])
    )]
    pub registration_id: Option<String>,
    /// IoT Hub device ID the device gets. Defaults to the registration ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9\-.%_*?!(),:=@$']+$"))]
    pub device_id: Option<String>,
    /// `Enabled` lets the device register; `Disabled` refuses it (even when an enabled group covers it).
    /// While a DeviceDeprovision for the same registration ID is in force the entry stays disabled.
    #[serde(default)]
    pub provisioning_status: ProvisioningStatus,
    /// How the device proves its identity: exactly one of `symmetricKey`, `x509`, `tpm`.
    pub attestation: IndividualAttestation,
    /// Allocation, hubs, initial twin, reprovisioning and capabilities.
    #[serde(flatten)]
    pub settings: ProvisioningSettings,
    /// What deleting this resource does outside Kubernetes.
    #[serde(default)]
    pub on_delete: IndividualEnrollmentDeletion,
}

/// Attestation of an individual enrollment: exactly one mechanism.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::common::exactly_one_property, extend("x-kubernetes-validations" = [{
    "rule": "[has(self.symmetricKey), has(self.x509), has(self.tpm)].exists_one(x, x)",
    "message": "attestation must set exactly one of symmetricKey, x509, tpm"
}]))]
pub enum IndividualAttestation {
    /// Shared access signatures from a symmetric key pair.
    SymmetricKey(SymmetricKeyAttestation),
    /// The device's own X.509 certificate.
    X509(IndividualX509Attestation),
    /// A TPM's endorsement key.
    Tpm(TpmAttestation),
}

/// X.509 attestation of one device by its leaf (client) certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndividualX509Attestation {
    /// The device's leaf certificate(s); its CN must equal the registration ID.
    pub client_certificates: CertificatePair,
}

/// TPM attestation: the public endorsement key (not secret).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TpmAttestation {
    /// The TPM's endorsement key, base64 encoded (TPM2B_PUBLIC).
    #[schemars(length(min = 64, max = 4096), pattern(r"^[A-Za-z0-9+/]+={0,2}$"))]
    pub endorsement_key: String,
    /// The TPM's storage root key, base64 encoded, if it is known in advance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 64, max = 4096), pattern(r"^[A-Za-z0-9+/]+={0,2}$"))]
    pub storage_root_key: Option<String>,
}

/// What happens to the DPS entry when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EnrollmentDeletion {
    /// Disable the entry first, then delete it.
    #[default]
    Delete,
    /// Leave the entry in DPS, disabled.
    Disable,
    /// Leave the entry in DPS as it is (the device keeps access).
    Retain,
}

/// What happens to the device identity in its assigned hub when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeviceDeletion {
    /// Delete the device identity.
    Delete,
    /// Disable the device identity (keeps its twin and history).
    #[default]
    Disable,
    /// Leave the device identity as it is.
    Retain,
}

/// Deletion policy of an individual enrollment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndividualEnrollmentDeletion {
    /// The DPS entry: `Delete` (default), `Disable` or `Retain`.
    #[serde(default)]
    pub enrollment: EnrollmentDeletion,
    /// The hub device identity: `Disable` (default), `Delete` or `Retain`.
    #[serde(default)]
    pub device: DeviceDeletion,
}

/// Observed state of an individual enrollment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndividualEnrollmentStatus {
    /// Ready, Reconciling, Stalled, and `Blocked` while a DeviceDeprovision keeps the entry disabled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The registration ID the resource is bound to (kept so a changed spec can be refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    /// The DPS entry's etag at the last write or read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The credentials the DPS entry holds (never the key material) and their rotation generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialStatus>,
    /// The device's registration state in DPS, once it has registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<RegistrationSummary>,
    /// How this resource came to manage the DPS entry: `Created` it, or `Adopted` an existing one
    /// (only with the annotation `dps.iot-operator.dev/adopt: "true"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<EntryOwnership>,
    /// Progress of the deletion steps, while the resource is being deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<DeletionProgress>,
}

/// How a resource came to manage its DPS entry.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EntryOwnership {
    /// The operator created the entry for this resource.
    Created,
    /// The entry existed and this resource adopted it, as its annotation asked.
    Adopted,
}

/// A device's registration state as DPS reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationSummary {
    /// Host name of the hub the device was assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// The device ID in that hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// DPS registration status: unassigned, assigning, assigned, failed or disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// When DPS last updated the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_time: Option<Time>,
}

/// Which deletion step has completed; a restarted operator resumes from here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionProgress {
    /// The last completed step, for example `EntryDisabled`, `DeviceDisabled`, `EntryDeleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// When deletion started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_time: Option<Time>,
    /// What the current step is waiting for, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
