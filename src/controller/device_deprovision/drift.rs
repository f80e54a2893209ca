//! Keeping a completed deprovision in force: at every resync the blocking entry must still exist and be
//! disabled, and a disabled hub device must still be disabled. Anything changed outside Kubernetes (portal,
//! CLI, another tool) is put back with a `DriftReverted` warning, because a re-enabled stolen device is a
//! lost revocation.

use kube::ResourceExt;
use tracing::debug;

use super::{Progress, entry};
use crate::Result;
use crate::api::DeviceDeprovision;
use crate::api::device_deprovision::{BlockingEntry, DeprovisionDeviceAction};
use crate::azure::wire::{self, DeviceStatus};
use crate::controller::hub_device::{self, HubOutcome};
use crate::controller::individual_enrollment::{disable_entry, ready_backend};
use crate::controller::{Context, events};

/// Puts back the blocking entry and the hub device of a completed deprovision.
pub(super) async fn enforce(deprovision: &DeviceDeprovision, ctx: &Context, progress: &mut Progress<'_>) -> Result<()> {
    let namespace = deprovision.namespace().unwrap_or_default();
    let Ok(backend) = ready_backend(ctx, &namespace, &deprovision.spec.provisioning_service_ref.name).await else {
        // The service's own condition says why; the revocation is checked again at the next resync.
        debug!(deprovision = %deprovision.name_any(), "provisioning service not ready; drift check skipped");
        return Ok(());
    };
    let id = deprovision.spec.registration_id.as_str();
    match entry::held(&backend.dps, id).await? {
        None => {
            let mechanism = entry::mechanism(ctx, deprovision).await?;
            progress.status.blocking_entry = Some(BlockingEntry {
                registration_id: id.to_string(),
                created: true,
                attestation: Some(entry::type_name(mechanism.kind)),
            });
            progress.save_progressing().await?;
            entry::create_disabled(&backend.dps, id, mechanism).await?;
            let note = format!("the blocking DPS entry {id} was deleted outside Kubernetes; recreated disabled");
            events::warning(ctx, deprovision, "DriftReverted", note).await;
        }
        Some(held) if held.provisioning_status != Some(wire::ProvisioningStatus::Disabled) => {
            if disable_entry(&backend.dps, id).await? {
                let note = format!("the blocking DPS entry {id} was enabled outside Kubernetes; disabled again");
                events::warning(ctx, deprovision, "DriftReverted", note).await;
            }
        }
        Some(_) => {}
    }
    let target = progress.status.assigned_hub.clone().zip(progress.status.device_id.clone());
    if let (DeprovisionDeviceAction::Disable, Some((hub_name, device_id))) = (deprovision.spec.device, target) {
        let hub = backend.hub(&hub_name)?;
        let enabled = match hub.get_device(&device_id).await {
            Ok(device) => device.status != Some(DeviceStatus::Disabled),
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e.into()),
        };
        if enabled {
            let reason = deprovision.spec.reason.clone().unwrap_or_else(|| {
                format!("deprovisioned by DeviceDeprovision {namespace}/{}", deprovision.name_any())
            });
            if hub_device::disable(hub, &device_id, &reason).await? == HubOutcome::Changed {
                let note =
                    format!("device {device_id} in hub {hub_name} was enabled outside Kubernetes; disabled again");
                events::warning(ctx, deprovision, "DriftReverted", note).await;
            }
        }
    }
    Ok(())
}
