//! Types shared by several kinds: references, provisioning settings, certificates, conditions.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Registration and enrollment-group IDs as DPS defines them: alphanumeric plus `- . _ :`, the last character
/// alphanumeric or `-` (any of them may come first).
pub const REGISTRATION_ID_PATTERN: &str = r"^[A-Za-z0-9._:-]*[A-Za-z0-9-]$";
/// The longest registration ID DPS accepts.
pub const REGISTRATION_ID_MAX_LEN: usize = 128;

/// Whether `id` is a registration or enrollment-group ID DPS accepts ([`REGISTRATION_ID_PATTERN`], 1 to
/// [`REGISTRATION_ID_MAX_LEN`] characters); the engine and the CRD schemas share this one rule.
pub fn is_valid_registration_id(id: &str) -> bool {
    id.len() <= REGISTRATION_ID_MAX_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
        && id.chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
}
/// With X.509 attestation the registration ID is the certificate's common name, which is limited to 64.
pub const X509_REGISTRATION_ID_MAX_LEN: usize = 64;
/// IoT Hub device IDs: ASCII alphanumeric plus `- . % _ * ? ! ( ) , : = @ $ '`.
pub const DEVICE_ID_PATTERN: &str = r"^[A-Za-z0-9\-.%_*?!(),:=@$']+$";
/// DNS host name or IPv4 address, with an optional port (the local engine may listen off 443).
pub const HOST_NAME_PATTERN: &str =
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:[0-9]{1,5})?$";

/// Names the ProvisioningService (in the same namespace) whose DPS instance and hubs this resource uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ProvisioningServiceRef {
    /// Name of a ProvisioningService in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A key inside a Secret or ConfigMap in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct KeySelector {
    /// Name of the Secret or ConfigMap, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within its data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Whether DPS lets devices register through an entry.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ProvisioningStatus {
    /// Devices matching the entry may register.
    #[default]
    Enabled,
    /// Devices matching the entry are refused, even when an enabled group would admit them.
    Disabled,
}

/// How DPS picks the hub for a device.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AllocationPolicy {
    /// Evenly weighted hashing across the linked hubs.
    Hashed,
    /// The hub with the lowest latency to the device.
    GeoLatency,
    /// Always the single hub listed in `iotHubs`.
    Static,
    /// A webhook decides; see `customAllocation`.
    Custom,
}

/// The webhook DPS calls when `allocationPolicy` is `Custom`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomAllocation {
    /// HTTPS URL of the allocation webhook (for example an Azure Function).
    #[schemars(length(min = 1, max = 2048), pattern(r"^https://"))]
    pub webhook_url: String,
    /// API version of the provisioning service types sent to the webhook, for example `2021-10-01`.
    #[schemars(pattern(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$"))]
    pub api_version: String,
}

/// The device twin a device gets when it is first provisioned.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitialTwin {
    /// Twin tags (free-form JSON object), visible to the back end only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub tags: Option<Value>,
    /// Desired properties (free-form JSON object) sent to the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub desired_properties: Option<Value>,
}

/// What DPS does when an already provisioned device registers again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReprovisionPolicy {
    /// Re-evaluate the hub assignment on re-registration (DPS default true).
    #[serde(default = "default_true")]
    pub update_hub_assignment: bool,
    /// Move the device's twin data to the new hub when the assignment changes (DPS default true).
    #[serde(default = "default_true")]
    pub migrate_device_data: bool,
}

impl Default for ReprovisionPolicy {
    fn default() -> Self {
        Self { update_hub_assignment: true, migrate_device_data: true }
    }
}

fn default_true() -> bool {
    true
}

/// Device capabilities recorded in the hub.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCapabilities {
    /// The device is an IoT Edge device.
    #[serde(default)]
    pub iot_edge: bool,
}

/// Where a PEM (or base64 DER) certificate comes from. Exactly one source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = exactly_one_property, extend("x-kubernetes-validations" = [{
    "rule": "[has(self.pem), has(self.secretRef), has(self.configMapRef)].exists_one(x, x)",
    "message": "a certificate source must set exactly one of pem, secretRef, configMapRef"
}]))]
pub enum CertificateSource {
    /// The certificate inline, PEM encoded. Certificates are public; never put a private key here.
    Pem(#[schemars(length(min = 1, max = 16384))] String),
    /// A key of a Secret in the same namespace holding the PEM certificate (for example `tls.crt`).
    SecretRef(KeySelector),
    /// A key of a ConfigMap in the same namespace holding the PEM certificate (for example `ca.crt`).
    ConfigMapRef(KeySelector),
}

/// A primary certificate and an optional secondary one (for rolling a certificate without downtime).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct CertificatePair {
    /// The primary certificate.
    pub primary: CertificateSource,
    /// The secondary certificate, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<CertificateSource>,
}

/// A symmetric key pair kept in a Secret, or generated into one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKeyAttestation {
    /// Secret (same namespace) whose keys `primaryKey` and `secondaryKey` hold base64 keys of 16 to 64
    /// bytes. The controller checks the lengths and reports a bad key on the resource's conditions.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// When true and the Secret does not exist, the provisioning service generates the keys and the
    /// operator writes them into a new Secret of that name, owned by this resource. When false a
    /// missing Secret stalls the resource until it appears.
    #[serde(default)]
    pub generate: bool,
}

/// Which credentials the DPS entry holds now, named without key material: a device holding either one
/// registers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialStatus {
    /// The primary credential: `key:` and the first 12 hex digits of the SHA-256 of a symmetric key's
    /// base64 text, `sha256:` and the SHA-256 thumbprint of a certificate, or `ca:` and a CA
    /// certificate's name in DPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The secondary credential, in the same form, if the entry has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<String>,
    /// Counts the changes of the pair pushed to DPS: 1 for the first, one more for each rotation step.
    pub generation: i64,
}

/// Common provisioning settings of individual enrollments and enrollment groups.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningSettings {
    /// How DPS picks a hub. Unset uses the DPS instance's default policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_policy: Option<AllocationPolicy>,
    /// Host names of the linked hubs this entry may assign devices to (unset: all linked hubs).
    /// `Static` allocation needs exactly one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), inner(length(min = 1, max = 253), pattern(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:[0-9]{1,5})?$")))]
    pub iot_hubs: Vec<String>,
    /// The allocation webhook; required when `allocationPolicy` is `Custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_allocation: Option<CustomAllocation>,
    /// Initial device twin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_twin: Option<InitialTwin>,
    /// Behaviour when a provisioned device registers again. Unset means DPS's default (both true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprovision_policy: Option<ReprovisionPolicy>,
    /// Capabilities recorded on the device in its hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<DeviceCapabilities>,
}

/// Rewrites the schema of an enum of choices (serde's externally tagged form: a `oneOf` of objects with one
/// required property each) as one object that holds every choice and has exactly one property
/// (`minProperties` and `maxProperties` 1).
///
/// Unknown properties are pruned before validation, so this refuses what the `oneOf` refused, on every
/// Kubernetes version. It matters on current ones: a failed `oneOf` reports `Required value` for its first
/// choice, and a `Required` error makes the apiserver skip every CEL rule of the object ("some validation
/// rules were not checked"), so the choice's own CEL rule, whose message names all choices, never showed.
/// A `minProperties` error does not stop the CEL rules.
pub fn exactly_one_property(schema: &mut Schema) {
    let Some(object) = schema.as_object_mut() else { return };
    let Some(Value::Array(choices)) = object.remove("oneOf") else { return };
    let mut properties = serde_json::Map::new();
    for choice in choices {
        let description = choice.get("description").cloned();
        let Some(Value::Object(choice_properties)) = choice.get("properties") else { continue };
        for (name, property) in choice_properties {
            let mut property = property.clone();
            // The variant's doc says what the choice means here; the type's own doc is generic.
            if let (Some(description), Some(fields)) = (&description, property.as_object_mut()) {
                fields.insert("description".into(), description.clone());
            }
            properties.insert(name.clone(), property);
        }
    }
    object.insert("type".into(), "object".into());
    object.insert("properties".into(), Value::Object(properties));
    object.insert("minProperties".into(), 1.into());
    object.insert("maxProperties".into(), 1.into());
}

/// Schema for a free-form JSON object that the apiserver keeps as is.
pub fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Schema for a `conditions` list: a list-map keyed by `type`, as `kubectl wait` and kstatus expect.
pub fn conditions(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "Current state: Ready, Reconciling and Stalled (kstatus), plus kind-specific conditions.",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "properties": {
                "lastTransitionTime": { "format": "date-time", "type": "string" },
                "message": { "type": "string" },
                "observedGeneration": { "type": "integer", "format": "int64" },
                "reason": { "type": "string" },
                "status": { "type": "string", "enum": ["True", "False", "Unknown"] },
                "type": { "type": "string" }
            },
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
        },
    })
}
