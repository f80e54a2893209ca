//! The provisioning settings shared by individual enrollments and groups, in DPS's wire form.

use crate::api::common::{AllocationPolicy, ProvisioningSettings, ProvisioningStatus};
use crate::azure::wire;

/// The wire fields an entry takes from [`ProvisioningSettings`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WireSettings {
    /// `allocationPolicy`.
    pub allocation_policy: Option<wire::AllocationPolicy>,
    /// `iotHubs`.
    pub iot_hubs: Option<Vec<String>>,
    /// `customAllocationDefinition`.
    pub custom_allocation_definition: Option<wire::CustomAllocationDefinition>,
    /// `initialTwin`.
    pub initial_twin: Option<wire::InitialTwin>,
    /// `reprovisionPolicy`.
    pub reprovision_policy: Option<wire::ReprovisionPolicy>,
    /// `capabilities`.
    pub capabilities: Option<wire::DeviceCapabilities>,
}

impl WireSettings {
    /// The settings an individual enrollment holds (or is sent with).
    pub fn of_enrollment(e: &wire::IndividualEnrollment) -> Self {
        WireSettings {
            allocation_policy: e.allocation_policy,
            iot_hubs: e.iot_hubs.clone(),
            custom_allocation_definition: e.custom_allocation_definition.clone(),
            initial_twin: e.initial_twin.clone(),
            reprovision_policy: e.reprovision_policy,
            capabilities: e.capabilities,
        }
    }

    /// The settings an enrollment group holds (or is sent with).
    pub fn of_group(g: &wire::EnrollmentGroup) -> Self {
        WireSettings {
            allocation_policy: g.allocation_policy,
            iot_hubs: g.iot_hubs.clone(),
            custom_allocation_definition: g.custom_allocation_definition.clone(),
            initial_twin: g.initial_twin.clone(),
            reprovision_policy: g.reprovision_policy,
            capabilities: g.capabilities,
        }
    }
}

/// Converts the spec's settings.
pub fn wire_settings(settings: &ProvisioningSettings) -> WireSettings {
    WireSettings {
        allocation_policy: settings.allocation_policy.map(|p| match p {
            AllocationPolicy::Hashed => wire::AllocationPolicy::Hashed,
            AllocationPolicy::GeoLatency => wire::AllocationPolicy::GeoLatency,
            AllocationPolicy::Static => wire::AllocationPolicy::Static,
            AllocationPolicy::Custom => wire::AllocationPolicy::Custom,
        }),
        iot_hubs: (!settings.iot_hubs.is_empty()).then(|| settings.iot_hubs.clone()),
        custom_allocation_definition: settings.custom_allocation.as_ref().map(|c| wire::CustomAllocationDefinition {
            webhook_url: c.webhook_url.clone(),
            api_version: c.api_version.clone(),
        }),
        initial_twin: settings.initial_twin.as_ref().map(|t| wire::InitialTwin {
            tags: t.tags.clone(),
            properties: t
                .desired_properties
                .clone()
                .map(|desired| wire::InitialTwinProperties { desired: Some(desired) }),
        }),
        reprovision_policy: settings.reprovision_policy.as_ref().map(|r| wire::ReprovisionPolicy {
            update_hub_assignment: r.update_hub_assignment,
            migrate_device_data: r.migrate_device_data,
        }),
        capabilities: settings.capabilities.as_ref().map(|c| wire::DeviceCapabilities { iot_edge: c.iot_edge }),
    }
}

/// The wire provisioning status.
pub fn wire_status(status: ProvisioningStatus) -> wire::ProvisioningStatus {
    match status {
        ProvisioningStatus::Enabled => wire::ProvisioningStatus::Enabled,
        ProvisioningStatus::Disabled => wire::ProvisioningStatus::Disabled,
    }
}

/// Names of the settings that differ between what DPS holds and what the spec wants (unset in the spec
/// means "DPS's default", so only fields the spec sets are compared).
pub fn differences(held: &WireSettings, wanted: &WireSettings) -> Vec<&'static str> {
    let mut out = Vec::new();
    if wanted.allocation_policy.is_some() && held.allocation_policy != wanted.allocation_policy {
        out.push("allocationPolicy");
    }
    let sorted = |v: &Option<Vec<String>>| {
        let mut v: Vec<String> = v.clone().unwrap_or_default().iter().map(|h| h.to_ascii_lowercase()).collect();
        v.sort();
        v
    };
    if sorted(&held.iot_hubs) != sorted(&wanted.iot_hubs) {
        out.push("iotHubs");
    }
    if wanted.custom_allocation_definition.is_some()
        && held.custom_allocation_definition != wanted.custom_allocation_definition
    {
        out.push("customAllocationDefinition");
    }
    if wanted.initial_twin.is_some() && held.initial_twin != wanted.initial_twin {
        out.push("initialTwin");
    }
    if wanted.reprovision_policy.is_some() && held.reprovision_policy != wanted.reprovision_policy {
        out.push("reprovisionPolicy");
    }
    let edge = |c: &Option<wire::DeviceCapabilities>| c.is_some_and(|c| c.iot_edge);
    if edge(&held.capabilities) != edge(&wanted.capabilities) {
        out.push("capabilities");
    }
    out
}
