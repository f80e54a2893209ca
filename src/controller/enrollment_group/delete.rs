//! Cleanup, in the order that never re-admits a device: disable the group -> page through its registration
//! states, disabling or deleting the devices in their hubs in bulk -> delete the registration records (per
//! policy) -> delete the group (per policy; `DeleteIfSafe` keeps it disabled while an enabled group higher
//! in the chain would re-admit the devices). Each step, and each page of devices, is recorded in
//! `status.deletion` before the next starts, with a failpoint after it.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::Api;

use super::apply::PAGE;
use super::{attestation, chain};
use crate::api::EnrollmentGroup;
use crate::api::enrollment_group::{
    EnrollmentGroupStatus, GroupDeletion, GroupDeletionProgress, RegistrationRecordDeletion,
};
use crate::api::individual_enrollment::DeviceDeletion;
use crate::azure::DpsServiceClient;
use crate::azure::wire;
use crate::controller::backend::Backend;
use crate::controller::health::{self, Health};
use crate::controller::hub_revocation::{self, GroupDevice, ProvisionedIdentity, Revocation};
use crate::controller::individual_enrollment::delete::service_backend;
use crate::controller::requeue::Action;
use crate::controller::{Context, events, failpoint, status};
use crate::{Error, Result};

/// The steps, in order; `status.deletion.step` holds the last one completed.
const STEPS: [&str; 4] = ["GroupDisabled", "DevicesRevoked", "RegistrationsDeleted", "GroupRemoved"];

pub(super) async fn cleanup(group: &EnrollmentGroup, ctx: &Context) -> Result<Action> {
    let namespace = group.namespace().unwrap_or_default();
    let api = Api::<EnrollmentGroup>::namespaced(ctx.client.clone(), &namespace);
    let status = group.status.as_ref();
    let Some(id) = crate::controller::ownership::owned_id(
        status.and_then(|s| s.ownership),
        status.and_then(|s| s.enrollment_group_id.as_deref()),
        group.annotations(),
    ) else {
        // Apply never bound a group ID to an entry this resource owns (or lost the race to create it), so
        // nothing outside is ours to revoke.
        return Ok(Action::await_change());
    };
    let policy = group.spec.on_delete.clone();
    let mut state = group.status.clone().unwrap_or_default();
    let done = |state: &EnrollmentGroupStatus, step: &str| {
        crate::controller::deletion_steps::done(&STEPS, state.deletion.as_ref().and_then(|d| d.step.as_deref()), step)
    };
    if state.deletion.is_none() {
        state.deletion = Some(GroupDeletionProgress {
            started_time: Some(health::now()),
            devices_total: state.registered_devices.unwrap_or(0),
            ..GroupDeletionProgress::default()
        });
    }
    let backend = match service_backend(ctx, &namespace, &group.spec.provisioning_service_ref.name).await {
        Ok(b) => b,
        Err(e) => return fail(group, ctx, &api, state, e).await,
    };

    // 1. Refuse new registrations first, so no device joins (or rejoins) while the rest runs.
    if !done(&state, "GroupDisabled") {
        if policy.group != GroupDeletion::Retain {
            match disable_group(&backend.dps, &id).await {
                Ok(true) => {
                    events::normal(ctx, group, "GroupDisabled", format!("disabled DPS enrollment group {id}")).await
                }
                Ok(false) => {}
                Err(e) => return fail(group, ctx, &api, state, e).await,
            }
        }
        state = progress(group, &api, state, "GroupDisabled").await?;
        failpoint::hit("egrp-after-group-disabled");
    }
    // 2. The hub identities, a batch of registration states at a time, resuming at the recorded cursor.
    if !done(&state, "DevicesRevoked") {
        if policy.devices != DeviceDeletion::Retain {
            loop {
                match revoke_batch(group, ctx, &backend, &id, &mut state, policy.devices).await {
                    Ok(()) => {}
                    Err(e) => return fail(group, ctx, &api, state, e).await,
                }
                let more = state.deletion.as_ref().is_some_and(|d| d.continuation.is_some());
                status::write(&api, group, group.status.as_ref(), &state).await?;
                failpoint::hit("egrp-after-devices-page");
                if !more {
                    break;
                }
            }
        }
        state = progress(group, &api, state, "DevicesRevoked").await?;
        failpoint::hit("egrp-after-devices-revoked");
    }
    // 3. The registration records (the devices are already out, so none is re-created meanwhile).
    if !done(&state, "RegistrationsDeleted") {
        if policy.registrations == RegistrationRecordDeletion::Delete {
            match delete_records(&backend.dps, &id).await {
                Ok(0) => {}
                Ok(n) => {
                    events::normal(
                        ctx,
                        group,
                        "RegistrationsDeleted",
                        format!("deleted {n} registration records of group {id}"),
                    )
                    .await
                }
                Err(e) => return fail(group, ctx, &api, state, e).await,
            }
        }
        state = progress(group, &api, state, "RegistrationsDeleted").await?;
        failpoint::hit("egrp-after-registrations-deleted");
    }
    // 4. The group itself, per policy.
    if !done(&state, "GroupRemoved") {
        let delete = match policy.group {
            GroupDeletion::Retain | GroupDeletion::Disable => false,
            GroupDeletion::Delete => true,
            GroupDeletion::DeleteIfSafe => match higher_groups(group, ctx, &backend, &id, &state).await {
                Ok(higher) if higher.is_empty() => true,
                Ok(higher) => {
                    let note = format!(
                        "kept DPS enrollment group {id} disabled instead of deleting it: enabled group(s) {} higher in its certificate chain would re-admit its devices",
                        higher.join(", ")
                    );
                    if let Some(d) = state.deletion.as_mut() {
                        d.message = Some(note.clone());
                    }
                    events::normal(ctx, group, "GroupKept", note).await;
                    false
                }
                Err(e) => return fail(group, ctx, &api, state, e).await,
            },
        };
        if delete {
            match backend.dps.delete_enrollment_group(&id, None).await {
                Ok(()) => {
                    events::normal(ctx, group, "GroupDeleted", format!("deleted DPS enrollment group {id}")).await
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return fail(group, ctx, &api, state, e.into()).await,
            }
        }
        progress(group, &api, state, "GroupRemoved").await?;
        failpoint::hit("egrp-after-group-removed");
    }
    Ok(Action::await_change())
}

/// Registration states read before their devices are revoked and the cursor moves past them: devices are
/// sent per hub in bulk calls of 100 across the whole batch (not per page, where each hub's share of a page
/// would cost a call of its own), and a crash redoes at most one batch (each item is idempotent).
const BATCH: usize = 10_000;

/// Revokes the devices of the next batch of registration states, grouped per hub, and advances the cursor.
async fn revoke_batch(
    group: &EnrollmentGroup,
    ctx: &Context,
    backend: &Backend,
    id: &str,
    state: &mut EnrollmentGroupStatus,
    how: DeviceDeletion,
) -> Result<()> {
    let mut cursor = state.deletion.as_ref().and_then(|d| d.continuation.clone());
    let mut by_hub: BTreeMap<String, Vec<GroupDevice>> = BTreeMap::new();
    let mut read = 0;
    loop {
        let page = backend.dps.query_registration_states(id, Some(PAGE), cursor.as_deref()).await?;
        read += page.items.len();
        for reg in page.items {
            if let (Some(hub), Some(device_id), Some(registration_id)) =
                (reg.assigned_hub, reg.device_id, reg.registration_id)
            {
                by_hub.entry(hub.to_ascii_lowercase()).or_default().push(GroupDevice { device_id, registration_id });
            }
        }
        cursor = page.continuation;
        if cursor.is_none() || read >= BATCH {
            break;
        }
    }
    let identity = match how {
        DeviceDeletion::Disable if !by_hub.is_empty() => provisioned_identity(&backend.dps, id).await?,
        _ => None,
    };
    let how = match (how, &identity) {
        (DeviceDeletion::Delete, _) => Revocation::Delete,
        (_, Some(identity)) => Revocation::DisableAsProvisioned(identity),
        (_, None) => Revocation::Disable,
    };
    let reason = format!("EnrollmentGroup {}/{} deleted", group.namespace().unwrap_or_default(), group.name_any());
    // One event per batch naming every hub: the publisher folds repeats of a reason into one series.
    // Hubs at once: each has its own rate budget, so one hub's wait must not hold the others back.
    let per_hub = by_hub.iter().map(|(hub_name, devices)| {
        let reason = &reason;
        async move {
            let hub = backend.hub(hub_name)?;
            let revoked = hub_revocation::revoke(hub, devices, how, reason).await?;
            Ok::<_, Error>((revoked.changed > 0).then(|| format!("{} in hub {hub_name}", revoked.changed)))
        }
    });
    let changed: Vec<String> = futures::future::try_join_all(per_hub).await?.into_iter().flatten().collect();
    if !changed.is_empty() {
        let (event, verb) = if matches!(how, Revocation::Delete) {
            ("HubDevicesDeleted", "deleted")
        } else {
            ("HubDevicesDisabled", "disabled")
        };
        events::normal(ctx, group, event, format!("{verb} devices of group {id}: {}", changed.join(", "))).await;
    }
    if let Some(d) = state.deletion.as_mut() {
        d.devices_done += i64::try_from(read).unwrap_or(i64::MAX);
        d.devices_total = d.devices_total.max(d.devices_done);
        d.continuation = cursor;
        d.message = None;
    }
    Ok(())
}

/// The identity DPS gave the group's devices, from the group as DPS holds it (disabled by now); None when
/// the group is gone, and then each device is read before it is disabled.
async fn provisioned_identity(dps: &DpsServiceClient, id: &str) -> Result<Option<ProvisionedIdentity>> {
    let mut held = match dps.get_enrollment_group(id).await {
        Ok(held) => held,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if held.attestation.kind == wire::AttestationType::SymmetricKey {
        held.attestation = match dps.enrollment_group_attestation(id).await {
            Ok(attestation) => attestation,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
    }
    Ok(ProvisionedIdentity::of_group(&held))
}

/// Disables the group with its etag; `false` when it is already disabled or gone. Symmetric keys are read
/// through attestationmechanism and sent back, so the update never changes them.
async fn disable_group(dps: &DpsServiceClient, id: &str) -> Result<bool> {
    let mut held = match dps.get_enrollment_group(id).await {
        Ok(held) => held,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if held.provisioning_status == Some(wire::ProvisioningStatus::Disabled) {
        return Ok(false);
    }
    if held.attestation.kind == wire::AttestationType::SymmetricKey {
        held.attestation = dps.enrollment_group_attestation(id).await?;
    }
    held.provisioning_status = Some(wire::ProvisioningStatus::Disabled);
    let etag = held.etag.clone();
    dps.update_enrollment_group(&held, etag.as_deref()).await?;
    Ok(true)
}

/// Deletes every registration record of the group, re-reading the first page until it is empty (deleted
/// records leave the query, so no cursor is needed and a restart simply starts over). Returns how many.
async fn delete_records(dps: &DpsServiceClient, id: &str) -> Result<usize> {
    let mut deleted = 0;
    let mut last_page: Vec<String> = Vec::new();
    loop {
        let page = dps.query_registration_states(id, Some(PAGE), None).await?;
        let ids: Vec<String> = page.items.iter().filter_map(|r| r.registration_id.clone()).collect();
        if ids.is_empty() {
            return Ok(deleted);
        }
        if ids.iter().any(|i| last_page.contains(i)) {
            return Err(Error::waiting(
                "RegistrationRecordsRemain",
                format!("registration records of group {id} are still listed after being deleted; retrying"),
            ));
        }
        for registration_id in &ids {
            dps.delete_registration_state(registration_id, None).await?;
            deleted += 1;
        }
        last_page = ids;
    }
}

/// The enabled groups above this one. When its certificate cannot be read any more (its Secret deleted
/// first, say), the risk last recorded while it lived is used, so an unreadable input never deletes a
/// group that protects against re-admission.
async fn higher_groups(
    group: &EnrollmentGroup,
    ctx: &Context,
    backend: &Backend,
    id: &str,
    state: &EnrollmentGroupStatus,
) -> Result<Vec<String>> {
    if !matches!(
        group.spec.attestation,
        crate::api::enrollment_group::GroupAttestation::X509(
            crate::api::enrollment_group::GroupX509Attestation::SigningCertificates(_)
        )
    ) {
        return Ok(Vec::new());
    }
    let Ok(plan) = attestation::plan(ctx, group).await else {
        return Ok(state.re_enrollment_risk.clone());
    };
    let higher = chain::higher_enabled_groups(ctx, &backend.dps, group, id, &plan.chain_texts).await?;
    Ok(higher.into_iter().map(|h| h.group_id).collect())
}

async fn progress(
    group: &EnrollmentGroup,
    api: &Api<EnrollmentGroup>,
    mut state: EnrollmentGroupStatus,
    step: &str,
) -> Result<EnrollmentGroupStatus> {
    if let Some(d) = state.deletion.as_mut() {
        d.step = Some(step.to_string());
        if step != "GroupRemoved" {
            d.message = None;
        }
    }
    let previous = state.conditions.clone();
    let mut conditions = Health::progressing("Deleting", format!("deletion step {step} done"))
        .conditions(group.metadata.generation, &previous);
    conditions.extend(previous.into_iter().filter(|c| c.type_ == super::RE_ENROLLMENT_RISK));
    state.conditions = conditions;
    status::write(api, group, group.status.as_ref(), &state).await?;
    Ok(state)
}

async fn fail(
    group: &EnrollmentGroup,
    ctx: &Context,
    api: &Api<EnrollmentGroup>,
    mut state: EnrollmentGroupStatus,
    err: Error,
) -> Result<Action> {
    let health = Health::from_error(&err);
    if let Some(d) = state.deletion.as_mut() {
        d.message = Some(health.message().to_string());
    }
    let previous = state.conditions.clone();
    let mut conditions = health.conditions(group.metadata.generation, &previous);
    conditions.extend(previous.into_iter().filter(|c| c.type_ == super::RE_ENROLLMENT_RISK));
    state.conditions = conditions;
    status::write(api, group, group.status.as_ref(), &state).await?;
    events::warning(ctx, group, health.reason(), health.message().to_string()).await;
    Err(err)
}
