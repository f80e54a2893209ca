//! Apply: the deprovision order. Read where the device went -> record what will block it -> revoke at DPS
//! -> confirm the entry is disabled -> disable or delete the hub device. Each step is recorded in status
//! before the next starts; progress is read from the recorded facts (`blockingEntry`, `revokedTime`,
//! `completedTime`), so `phase` may show `Failed` without losing the place to resume from.

use kube::ResourceExt;

use super::{Progress, entry};
use crate::api::DeviceDeprovision;
use crate::api::device_deprovision::{BlockingEntry, DeprovisionDeviceAction, DeprovisionPhase};
use crate::azure::wire;
use crate::controller::health::{self, Health};
use crate::controller::hub_device::{self, HubOutcome};
use crate::controller::individual_enrollment::ready_backend;
use crate::controller::requeue::Action;
use crate::controller::{Context, events, failpoint, validation};
use crate::{Error, Result};

pub(super) async fn apply(deprovision: &DeviceDeprovision, ctx: &Context) -> Result<Action> {
    let mut progress = Progress::new(ctx, deprovision);
    let result = run(deprovision, ctx, &mut progress).await;
    let health = match &result {
        Ok(()) => Health::ready("Completed", progress.status.message.clone().unwrap_or_else(|| "completed".into())),
        Err(e) => Health::from_error(e),
    };
    let was_stalled = deprovision.status.as_ref().is_some_and(|s| {
        health::already_stalled(&s.conditions, s.observed_generation, deprovision.metadata.generation)
    });
    if let Health::Stalled { message, .. } = &health {
        progress.status.message = Some(message.clone());
        progress.enter(DeprovisionPhase::Failed, message.clone()).await;
    } else if let Err(e) = &result {
        progress.status.message = Some(e.to_string());
    }
    progress.status.observed_generation = deprovision.metadata.generation;
    progress.save(&health).await?;
    match result {
        // Completed orders are checked again at every resync (drift is put back).
        Ok(()) => Ok(Action::requeue(ctx.next_resync())),
        Err(e) => {
            if !was_stalled && !matches!(health, Health::Stalled { .. }) {
                events::warning(ctx, deprovision, health.reason(), health.message().to_string()).await;
            }
            Err(e)
        }
    }
}

async fn run(deprovision: &DeviceDeprovision, ctx: &Context, progress: &mut Progress<'_>) -> Result<()> {
    let spec = &deprovision.spec;
    let id = spec.registration_id.as_str();
    // X.509 registration IDs are certificate CNs, which X.509 caps at 64 characters.
    validation::check_id("registrationId", id, if spec.leaf_certificate.is_some() { 64 } else { 128 })?;
    let bound = progress.status.blocking_entry.as_ref().map(|b| b.registration_id.clone());
    validation::check_immutable("registrationId", bound.as_deref(), id)?;
    if progress.status.completed_time.is_some() {
        // A stall after completion (an edited spec) set `Failed`; the order itself stays done.
        let done = completion_message(id, &progress.status);
        progress.enter(DeprovisionPhase::Completed, done).await;
        return super::drift::enforce(deprovision, ctx, progress).await;
    }
    let namespace = deprovision.namespace().unwrap_or_default();
    let backend = ready_backend(ctx, &namespace, &spec.provisioning_service_ref.name).await?;
    // Resolved before any write, so a bad certificate stops the order with nothing changed.
    let mechanism = entry::mechanism(ctx, deprovision).await?;
    let dps = &backend.dps;

    // 1. Where the device went, and what will block it (recorded before the write, so a crash after the
    //    write still knows whether the entry is ours to remove on Reinstate).
    if progress.status.blocking_entry.is_none() {
        match dps.get_registration_state(id).await {
            Ok(state) => record_assignment(progress, &state),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let held = entry::held(dps, id).await?;
        let attestation = held.as_ref().map_or(mechanism.kind, |h| h.attestation.kind);
        progress.status.blocking_entry = Some(BlockingEntry {
            registration_id: id.to_string(),
            created: held.is_none(),
            attestation: Some(entry::type_name(attestation)),
        });
        progress.status.started_time = Some(health::now());
        progress.enter(DeprovisionPhase::Revoking, format!("revoking registration ID {id} at DPS")).await;
        progress.save_progressing().await?;
        failpoint::hit("deprov-after-intent");
    }

    // 2. Revoke at DPS and confirm.
    if progress.status.revoked_time.is_none() {
        match entry::held(dps, id).await? {
            None => {
                let recorded = progress.status.blocking_entry.clone().unwrap_or_default();
                if !recorded.created {
                    // The device's own entry is gone: block it with one of ours, recorded first.
                    progress.status.blocking_entry = Some(BlockingEntry {
                        registration_id: id.to_string(),
                        created: true,
                        attestation: Some(entry::type_name(mechanism.kind)),
                    });
                    progress.save_progressing().await?;
                }
                entry::create_disabled(dps, id, mechanism.clone()).await?;
                let kind = entry::type_name(mechanism.kind);
                events::normal(ctx, deprovision, "EntryCreated", format!("created disabled {kind} DPS entry {id}"))
                    .await;
            }
            Some(_) => {
                if crate::controller::individual_enrollment::disable_entry(dps, id).await? {
                    events::normal(ctx, deprovision, "EntryDisabled", format!("disabled DPS entry {id}")).await;
                }
            }
        }
        failpoint::hit("deprov-after-entry-written");
        let confirmed = entry::held(dps, id).await?;
        if confirmed.as_ref().and_then(|e| e.provisioning_status) != Some(wire::ProvisioningStatus::Disabled) {
            return Err(Error::waiting(
                "EntryNotDisabled",
                format!("DPS does not show entry {id} disabled yet; retrying"),
            ));
        }
        // Read again now that the device can no longer move: a registration since step 1 counts.
        match dps.get_registration_state(id).await {
            Ok(state) => record_assignment(progress, &state),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        progress.status.revoked_time = Some(health::now());
        progress.enter(DeprovisionPhase::Revoked, format!("DPS refuses registration ID {id}")).await;
        progress.save_progressing().await?;
        failpoint::hit("deprov-after-revoked");
    }

    // 3. The hub identity.
    let target = progress.status.assigned_hub.clone().zip(progress.status.device_id.clone());
    let Some((hub_name, device_id)) = target else {
        progress.status.completed_time = Some(health::now());
        let done = completion_message(id, &progress.status);
        progress.enter(DeprovisionPhase::Completed, done).await;
        return Ok(());
    };
    progress.enter(DeprovisionPhase::Deregistering, format!("changing device {device_id} in hub {hub_name}")).await;
    progress.save_progressing().await?;
    failpoint::hit("deprov-after-deregistering");
    let hub = backend.hub(&hub_name)?;
    let (outcome, verb, reason) = match spec.device {
        DeprovisionDeviceAction::Disable => {
            let why = spec.reason.clone().unwrap_or_else(|| {
                format!("deprovisioned by DeviceDeprovision {namespace}/{}", deprovision.name_any())
            });
            (hub_device::disable(hub, &device_id, &why).await?, "disabled", "HubDeviceDisabled")
        }
        DeprovisionDeviceAction::Delete => (hub_device::delete(hub, &device_id).await?, "deleted", "HubDeviceDeleted"),
    };
    if outcome == HubOutcome::Changed {
        events::normal(ctx, deprovision, reason, format!("{verb} device {device_id} in hub {hub_name}")).await;
    }
    failpoint::hit("deprov-after-hub-device");
    progress.status.completed_time = Some(health::now());
    let done = completion_message(id, &progress.status);
    progress.enter(DeprovisionPhase::Completed, done).await;
    Ok(())
}

/// What a completed order did, from its record.
fn completion_message(id: &str, status: &crate::api::device_deprovision::DeviceDeprovisionStatus) -> String {
    match (&status.assigned_hub, &status.device_id) {
        (Some(hub), Some(device)) => {
            format!("DPS refuses registration ID {id} and device {device} in hub {hub} is deprovisioned")
        }
        _ => format!("DPS refuses registration ID {id}; it never registered, so there was no hub device to change"),
    }
}

/// Keeps the hub and device ID of an assigned registration (a refused or failed one names none).
fn record_assignment(progress: &mut Progress<'_>, state: &wire::DeviceRegistrationState) {
    if let (Some(hub), Some(device)) = (&state.assigned_hub, &state.device_id) {
        progress.status.assigned_hub = Some(hub.clone());
        progress.status.device_id = Some(device.clone());
    }
}
