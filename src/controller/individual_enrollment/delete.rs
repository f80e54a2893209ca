//! Cleanup, in the order that never re-admits the device: disable the entry -> read its registration
//! state -> disable or delete the device in the assigned hub -> delete the entry (per policy) -> release.
//! Each completed step is recorded in `status.deletion` before the next starts.

use kube::ResourceExt;
use kube::api::Api;

use super::blocking_deprovision;
use crate::api::IndividualEnrollment;
use crate::api::individual_enrollment::{
    DeletionProgress, DeviceDeletion, EnrollmentDeletion, IndividualEnrollmentStatus,
};
use crate::api::provisioning_service::ProvisioningService;
use crate::azure::wire;
use crate::controller::health::{self, Health};
use crate::controller::hub_device::{self, HubOutcome};
use crate::controller::requeue::Action;
use crate::controller::{Context, events, failpoint, status};
use crate::{Error, Result};

/// The steps, in order; `status.deletion.step` holds the last one completed.
const STEPS: [&str; 4] = ["EntryDisabled", "RegistrationRead", "DeviceRevoked", "EntryRemoved"];

pub(super) async fn cleanup(enrollment: &IndividualEnrollment, ctx: &Context) -> Result<Action> {
    let namespace = enrollment.namespace().unwrap_or_default();
    let api = Api::<IndividualEnrollment>::namespaced(ctx.client.clone(), &namespace);
    let status = enrollment.status.as_ref();
    let Some(id) = crate::controller::ownership::owned_id(
        status.and_then(|s| s.ownership),
        status.and_then(|s| s.registration_id.as_deref()),
        enrollment.annotations(),
    ) else {
        // Apply never bound a registration ID to an entry this resource owns (or lost the race to create it), so
        // nothing outside is ours to revoke.
        return Ok(Action::await_change());
    };
    let policy = enrollment.spec.on_delete.clone();
    let mut state = enrollment.status.clone().unwrap_or_default();
    let done = |state: &IndividualEnrollmentStatus, step: &str| {
        crate::controller::deletion_steps::done(&STEPS, state.deletion.as_ref().and_then(|d| d.step.as_deref()), step)
    };
    if state.deletion.is_none() {
        state.deletion = Some(DeletionProgress { step: None, started_time: Some(health::now()), message: None });
    }
    let backend = match service_backend(ctx, &namespace, &enrollment.spec.provisioning_service_ref.name).await {
        Ok(b) => b,
        Err(e) => return fail(enrollment, ctx, &api, state, e).await,
    };

    // 1. Revoke first, so the device cannot register again while the rest runs.
    if !done(&state, "EntryDisabled") {
        if policy.enrollment != EnrollmentDeletion::Retain {
            match disable_entry(&backend.dps, &id).await {
                Ok(true) => events::normal(ctx, enrollment, "EntryDisabled", format!("disabled DPS entry {id}")).await,
                Ok(false) => {}
                Err(e) => return fail(enrollment, ctx, &api, state, e).await,
            }
        }
        state = progress(ctx, enrollment, &api, state, "EntryDisabled").await?;
        failpoint::hit("ienr-after-entry-disabled");
    }
    // 2. Where the device went (kept in status, so a crash after this step still knows).
    if !done(&state, "RegistrationRead") {
        match backend.dps.get_registration_state(&id).await {
            Ok(reg) => state.registration = Some(super::apply::summary(&reg)),
            Err(e) if e.is_not_found() => state.registration = None,
            Err(e) => return fail(enrollment, ctx, &api, state, e.into()).await,
        }
        state = progress(ctx, enrollment, &api, state, "RegistrationRead").await?;
        failpoint::hit("ienr-after-registration-read");
    }
    // 3. The hub identity.
    if !done(&state, "DeviceRevoked") {
        let target = state.registration.as_ref().and_then(|r| Some((r.assigned_hub.clone()?, r.device_id.clone()?)));
        if let (Some((hub_name, device_id)), true) = (target, policy.device != DeviceDeletion::Retain) {
            let outcome = async {
                let hub = backend.hub(&hub_name)?;
                let reason = format!("IndividualEnrollment {namespace}/{} deleted", enrollment.name_any());
                match policy.device {
                    DeviceDeletion::Delete => hub_device::delete(hub, &device_id).await,
                    _ => hub_device::disable(hub, &device_id, &reason).await,
                }
            }
            .await;
            match outcome {
                Ok(HubOutcome::Changed) => {
                    let verb = if policy.device == DeviceDeletion::Delete { "deleted" } else { "disabled" };
                    let reason =
                        if policy.device == DeviceDeletion::Delete { "HubDeviceDeleted" } else { "HubDeviceDisabled" };
                    events::normal(ctx, enrollment, reason, format!("{verb} device {device_id} in hub {hub_name}"))
                        .await;
                }
                Ok(HubOutcome::AlreadyDone) => {}
                Err(e) => return fail(enrollment, ctx, &api, state, e).await,
            }
        }
        state = progress(ctx, enrollment, &api, state, "DeviceRevoked").await?;
        failpoint::hit("ienr-after-device-revoked");
    }
    // 4. The entry, unless a DeviceDeprovision relies on it to keep the device out.
    if !done(&state, "EntryRemoved") {
        if policy.enrollment == EnrollmentDeletion::Delete {
            match blocking_deprovision(ctx, enrollment, &id, super::Freshness::Fresh).await {
                Ok(Some(d)) => {
                    events::normal(
                        ctx,
                        enrollment,
                        "EntryKept",
                        format!("kept disabled DPS entry {id}: DeviceDeprovision {d} relies on it"),
                    )
                    .await;
                }
                Ok(None) => match backend.dps.delete_enrollment(&id, None).await {
                    Ok(()) => events::normal(ctx, enrollment, "EntryDeleted", format!("deleted DPS entry {id}")).await,
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return fail(enrollment, ctx, &api, state, e.into()).await,
                },
                Err(e) => return fail(enrollment, ctx, &api, state, e).await,
            }
        }
        progress(ctx, enrollment, &api, state, "EntryRemoved").await?;
    }
    Ok(Action::await_change())
}

/// Disables the entry with its etag; `false` when it is already disabled or gone. Symmetric keys are read
/// through attestationmechanism and sent back, so the update never changes them.
pub(crate) async fn disable_entry(dps: &crate::azure::DpsServiceClient, id: &str) -> Result<bool> {
    let mut held = match dps.get_enrollment(id).await {
        Ok(held) => held,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if held.provisioning_status == Some(wire::ProvisioningStatus::Disabled) {
        return Ok(false);
    }
    if held.attestation.kind == wire::AttestationType::SymmetricKey {
        held.attestation = dps.enrollment_attestation(id).await?;
    }
    held.provisioning_status = Some(wire::ProvisioningStatus::Disabled);
    let etag = held.etag.clone();
    held.registration_state = None;
    dps.update_enrollment(&held, etag.as_deref()).await?;
    Ok(true)
}

/// The backend for cleanup: the ProvisioningService may itself be terminating (its finalizer waits for
/// us), so only its existence and Secrets matter, not its Ready condition.
pub(crate) async fn service_backend(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<std::sync::Arc<crate::controller::backend::Backend>> {
    let service = Api::<ProvisioningService>::namespaced(ctx.client.clone(), namespace).get_opt(name).await?.ok_or_else(|| {
        Error::invalid(
            "ProvisioningServiceNotFound",
            format!("ProvisioningService {namespace}/{name} does not exist, so the device cannot be revoked; recreate it, or abandon the resource"),
        )
    })?;
    ctx.backends.resolve(&ctx.client, &service).await
}

async fn progress(
    ctx: &Context,
    enrollment: &IndividualEnrollment,
    api: &Api<IndividualEnrollment>,
    mut state: IndividualEnrollmentStatus,
    step: &str,
) -> Result<IndividualEnrollmentStatus> {
    let _ = ctx;
    if let Some(d) = state.deletion.as_mut() {
        d.step = Some(step.to_string());
        d.message = None;
    }
    let previous = state.conditions.clone();
    state.observed_generation = enrollment.metadata.generation;
    state.conditions = Health::progressing("Deleting", format!("deletion step {step} done"))
        .conditions(enrollment.metadata.generation, &previous);
    status::write(api, enrollment, enrollment.status.as_ref(), &state).await?;
    Ok(state)
}

async fn fail(
    enrollment: &IndividualEnrollment,
    ctx: &Context,
    api: &Api<IndividualEnrollment>,
    mut state: IndividualEnrollmentStatus,
    err: Error,
) -> Result<Action> {
    let health = Health::from_error(&err);
    if let Some(d) = state.deletion.as_mut() {
        d.message = Some(health.message().to_string());
    }
    let previous = state.conditions.clone();
    state.observed_generation = enrollment.metadata.generation;
    state.conditions = health.conditions(enrollment.metadata.generation, &previous);
    status::write(api, enrollment, enrollment.status.as_ref(), &state).await?;
    events::warning(ctx, enrollment, health.reason(), health.message().to_string()).await;
    Err(err)
}
