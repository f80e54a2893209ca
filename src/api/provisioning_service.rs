//! ProvisioningService: one DPS instance and the IoT hubs linked to it, with the credentials to reach them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CertificateSource, KeySelector, conditions};

/// A device provisioning service (Azure IoT Hub DPS or the local engine) and the hubs linked to it.
///
/// Enrollments and deprovisions refer to it by name. It cannot be deleted while any of them still
/// refers to it, and the operator keeps its credential Secrets until the last dependent is gone.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dps.iot-operator.dev",
    version = "v1alpha1",
    kind = "ProvisioningService",
    namespaced,
    doc = "A DPS instance and its linked IoT hubs, with the credentials the operator uses to reach them.",
    status = "ProvisioningServiceStatus",
    shortname = "dps",
    category = "iot",
    printcolumn(name = "Host", type_ = "string", json_path = ".status.serviceHostName"),
    printcolumn(name = "Hubs", type_ = "integer", json_path = ".status.hubCount"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningServiceSpec {
    /// The DPS service API credentials: a Secret key holding a connection string
    /// `HostName=<dps host>;SharedAccessKeyName=<policy>;SharedAccessKey=<key>` for a policy with
    /// enrollment read and write rights (for example `provisioningserviceowner`).
    pub connection_string_secret_ref: KeySelector,
    /// Base URL to call instead of `https://<HostName>` (for example the local engine's
    /// `https://127.0.0.1:8443`). Token audiences still use the connection string's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^https://"))]
    pub endpoint: Option<String>,
    /// The DPS ID scope (for example `0ne00000000`), shown to device simulators and in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9]+$"))]
    pub id_scope: Option<String>,
    /// The IoT hubs linked to this DPS instance, where the operator disables or deletes device identities.
    #[serde(default)]
    #[schemars(length(max = 50))]
    pub hubs: Vec<LinkedHub>,
    /// Extra certificate authorities to trust for both APIs (PEM bundle), on top of the system roots.
    /// The local engine's CA goes here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CertificateSource>,
    /// Request budgets per minute; defaults are Azure's published quotas.
    #[serde(default)]
    pub rate_limits: RateLimits,
}

/// One IoT hub linked to the provisioning service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkedHub {
    /// The hub's host name as DPS reports it in registration states (`assignedHub`), for example
    /// `myhub.azure-devices.net`.
    #[schemars(length(min = 1, max = 253), pattern(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:[0-9]{1,5})?$"))]
    pub host_name: String,
    /// Base URL to call instead of `https://<hostName>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^https://"))]
    pub endpoint: Option<String>,
    /// A Secret key holding the hub's connection string for a policy with registry write rights
    /// (for example `iothubowner`).
    pub connection_string_secret_ref: KeySelector,
}

/// Request budgets, per minute, shared by every resource that uses this provisioning service.
///
/// The fields are `u32` in Rust but `int32` in the schema: Kubernetes knows no `uint32` format and warns
/// about it on every install; the range keeps them positive and well inside both types.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    /// DPS service operations per minute (Azure: 1,000 per DPS instance).
    #[serde(default = "default_service_operations")]
    #[schemars(range(min = 1, max = 1_000_000), extend("format" = "int32"))]
    pub service_operations_per_minute: u32,
    /// Hub identity registry operations per minute, per hub (Azure: 100 per unit on S1/S2; a bulk
    /// call counts once per device).
    #[serde(default = "default_registry_operations")]
    #[schemars(range(min = 1, max = 1_000_000), extend("format" = "int32"))]
    pub registry_operations_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            service_operations_per_minute: default_service_operations(),
            registry_operations_per_minute: default_registry_operations(),
        }
    }
}

fn default_service_operations() -> u32 {
    1_000
}

fn default_registry_operations() -> u32 {
    100
}

/// Observed state of a ProvisioningService.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningServiceStatus {
    /// Ready is True when the DPS service API and every hub answered with the given credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The DPS host name read from the connection string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_host_name: Option<String>,
    /// Number of linked hubs in the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_count: Option<i32>,
    /// Per-hub reachability.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hubs: Vec<LinkedHubStatus>,
}

/// Observed state of one linked hub.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkedHubStatus {
    /// The hub's host name.
    pub host_name: String,
    /// Whether the registry API answered with the given credentials at the last check.
    pub reachable: bool,
    /// Why not, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
