//! Cleanup. `Retain` changes nothing outside: the blocking entry stays, so the device stays refused.
//! `Reinstate` undoes what status records: the hub device is re-enabled first (so a device DPS lets back
//! in finds its identity enabled), then the created entry is deleted or the device's own entry re-enabled.
//! Each step is idempotent, so a crash in between is resumed by running them again.

use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::{Progress, entry};
use crate::api::device_deprovision::{DeprovisionDeletion, DeprovisionDeviceAction};
use crate::api::{DeviceDeprovision, IndividualEnrollment};
use crate::controller::health::Health;
use crate::controller::hub_device::{self, HubOutcome};
use crate::controller::individual_enrollment::{RETAINED_REVOCATION_ANNOTATION, registration_id, service_backend};
use crate::controller::requeue::Action;
use crate::controller::{Context, events, failpoint};
use crate::{Error, Result};

pub(super) async fn cleanup(deprovision: &DeviceDeprovision, ctx: &Context) -> Result<Action> {
    if deprovision.spec.on_delete == DeprovisionDeletion::Retain {
        retain_on_enrollments(deprovision, ctx).await?;
        return Ok(Action::await_change());
    }
    let Some(status) = deprovision.status.clone() else {
        return Ok(Action::await_change());
    };
    let Some(blocking) = status.blocking_entry.clone() else {
        // Nothing outside was written.
        return Ok(Action::await_change());
    };
    match reinstate(deprovision, ctx, &status, &blocking.registration_id, blocking.created).await {
        Ok(()) => Ok(Action::await_change()),
        Err(e) => {
            let health = Health::from_error(&e);
            let mut progress = Progress::new(ctx, deprovision);
            progress.status.message = Some(health.message().to_string());
            progress.save(&health).await?;
            events::warning(ctx, deprovision, health.reason(), health.message().to_string()).await;
            Err(e)
        }
    }
}

async fn reinstate(
    deprovision: &DeviceDeprovision,
    ctx: &Context,
    status: &crate::api::device_deprovision::DeviceDeprovisionStatus,
    id: &str,
    created: bool,
) -> Result<()> {
    let namespace = deprovision.namespace().unwrap_or_default();
    let backend = service_backend(ctx, &namespace, &deprovision.spec.provisioning_service_ref.name).await?;
    let target = status.assigned_hub.clone().zip(status.device_id.clone());
    // Only a device this order disabled (it reached the hub step) is enabled again; a deleted one is
    // recreated by DPS when the device registers.
    if let (Some((hub_name, device_id)), DeprovisionDeviceAction::Disable, true) =
        (target, deprovision.spec.device, status.revoked_time.is_some())
    {
        let hub = backend.hub(&hub_name)?;
        if hub_device::enable(hub, &device_id).await? == HubOutcome::Changed {
            events::normal(
                ctx,
                deprovision,
                "HubDeviceEnabled",
                format!("enabled device {device_id} in hub {hub_name}"),
            )
            .await;
        }
        failpoint::hit("deprov-reinstate-after-hub-device");
    }
    if created {
        match backend.dps.delete_enrollment(id, None).await {
            Ok(()) => {
                events::normal(ctx, deprovision, "EntryDeleted", format!("deleted blocking DPS entry {id}")).await
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::from(e)),
        }
    } else if entry::enable(&backend.dps, id).await? {
        events::normal(ctx, deprovision, "EntryEnabled", format!("re-enabled DPS entry {id}")).await;
    }
    Ok(())
}

/// `Retain` keeps the block: when it is the device's own entry, the IndividualEnrollment managing it would
/// turn it back on once this order is gone, so the enrollment is marked first (before the finalizer goes).
async fn retain_on_enrollments(deprovision: &DeviceDeprovision, ctx: &Context) -> Result<()> {
    let own_entry = deprovision.status.as_ref().and_then(|s| s.blocking_entry.as_ref()).is_some_and(|b| !b.created);
    if !own_entry {
        return Ok(());
    }
    let namespace = deprovision.namespace().unwrap_or_default();
    let api = Api::<IndividualEnrollment>::namespaced(ctx.client.clone(), &namespace);
    let name = deprovision.name_any();
    for enrollment in api.list(&ListParams::default()).await? {
        let same = registration_id(&enrollment).eq_ignore_ascii_case(&deprovision.spec.registration_id)
            && enrollment.spec.provisioning_service_ref.name == deprovision.spec.provisioning_service_ref.name;
        if !same {
            continue;
        }
        // Marked before a crash or a failed release: the event is told again, since it may never have been.
        if enrollment.annotations().get(RETAINED_REVOCATION_ANNOTATION) != Some(&name) {
            let annotations =
                serde_json::Map::from_iter([(RETAINED_REVOCATION_ANNOTATION.to_string(), name.clone().into())]);
            let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
            api.patch(&enrollment.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            failpoint::hit("deprov-retain-after-mark");
        }
        let note = format!("the block stays after deletion: marked IndividualEnrollment {}", enrollment.name_any());
        events::normal(ctx, deprovision, "BlockRetained", note).await;
    }
    Ok(())
}
