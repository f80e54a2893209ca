//! Apply: create or update the DPS group with etags, count the devices registered through it, and warn
//! when an enabled group higher in its certificate chain would re-admit them.

use kube::ResourceExt;
use kube::api::Api;

use super::attestation::{self, GroupPlan};
use super::{chain, group_id};
use crate::api::EnrollmentGroup;
use crate::api::common::ProvisioningStatus;
use crate::api::enrollment_group::{EnrollmentGroupStatus, GroupAttestation};
use crate::azure::wire;
use crate::controller::dps_entry::{held_attestation, lost_create};
use crate::controller::finalizer::Finalizer;
use crate::controller::health::{self, Health};
use crate::controller::individual_enrollment::apply::ready_backend;
use crate::controller::individual_enrollment::attestation::write_generated;
use crate::controller::requeue::Action;
use crate::controller::settings::{self, WireSettings};
use crate::controller::{Context, events, ownership, rotation, status, validation};
use crate::{Error, Result};

/// How often an in-sync group is read again (and its devices counted).
/// Condition type: an enabled group higher in the chain would re-admit this group's devices.
pub const RE_ENROLLMENT_RISK: &str = "ReEnrollmentRisk";
/// Page size of the registration-state queries.
pub(super) const PAGE: u32 = 100;

pub(super) async fn apply(
    group: &EnrollmentGroup,
    ctx: &Context,
    finalizer: &Finalizer<EnrollmentGroup>,
) -> Result<Action> {
    let namespace = group.namespace().unwrap_or_default();
    let api = Api::<EnrollmentGroup>::namespaced(ctx.client.clone(), &namespace);
    let current = group.status.clone();
    let mut next = current.clone().unwrap_or_default();
    next.deletion = None;
    if let Some((owned, id)) =
        ownership::annotated_binding(next.ownership, next.enrollment_group_id.as_deref(), group.annotations())
    {
        next.ownership = Some(owned);
        next.enrollment_group_id = Some(id);
    }
    let result = sync(group, ctx, &api, finalizer, &mut next).await;
    let previous = current.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let health = match &result {
        Ok(_) => Health::ready("GroupInSync", "the DPS enrollment group matches the spec"),
        Err(e) => Health::from_error(e),
    };
    let generation = group.metadata.generation;
    let mut conditions = health.conditions(generation, &previous);
    let at_risk = !next.re_enrollment_risk.is_empty();
    let named: Vec<String> = match &result {
        Ok(higher) => higher
            .iter()
            .map(|h| {
                if h.verified {
                    h.group_id.clone()
                } else {
                    format!("{} (by issuer name only: its certificate is not visible to verify)", h.group_id)
                }
            })
            .collect(),
        Err(_) => next.re_enrollment_risk.clone(),
    };
    let message = if at_risk {
        format!(
            "enabled group(s) {} higher in the certificate chain would re-admit this group's devices if it were deleted; onDelete.group DeleteIfSafe keeps it disabled instead",
            named.join(", ")
        )
    } else {
        String::new()
    };
    conditions.push(health::condition(
        RE_ENROLLMENT_RISK,
        at_risk,
        if at_risk { "EnabledGroupAbove" } else { "NoEnabledGroupAbove" },
        &message,
        generation,
        &previous,
    ));
    next.conditions = conditions;
    next.observed_generation = generation;
    status::write(&api, group, current.as_ref(), &next).await?;
    match result {
        Ok(_) => Ok(Action::requeue(ctx.next_resync())),
        Err(e) => {
            if !current
                .as_ref()
                .is_some_and(|s| health::already_stalled(&s.conditions, s.observed_generation, generation))
            {
                events::warning(ctx, group, health.reason(), health.message().to_string()).await;
            }
            Err(e)
        }
    }
}

async fn sync(
    group: &EnrollmentGroup,
    ctx: &Context,
    api: &Api<EnrollmentGroup>,
    finalizer: &Finalizer<EnrollmentGroup>,
    next: &mut EnrollmentGroupStatus,
) -> Result<Vec<chain::Higher>> {
    let namespace = group.namespace().unwrap_or_default();
    let spec = &group.spec;
    let id = group_id(group);
    validation::check_id("enrollmentGroupId", &id, crate::api::common::REGISTRATION_ID_MAX_LEN)
        .map_err(|e| Error::invalid("InvalidEnrollmentGroupId", e.to_string()))?;
    validation::check_immutable("enrollmentGroupId", next.enrollment_group_id.as_deref(), &id)?;
    let backend = ready_backend(ctx, &namespace, &spec.provisioning_service_ref.name).await?;
    let mut plan = attestation::plan(ctx, group).await?;

    if let Some(holder) = ownership::older_claimant(&ctx.groups, group).await? {
        return Err(Error::invalid(
            "EnrollmentGroupIdConflict",
            format!("EnrollmentGroup {holder} already manages group ID {id:?}; delete one of the two"),
        ));
    }

    let held = match backend.dps.get_enrollment_group(&id).await {
        Ok(held) => Some(held),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    // Bind the group ID and record ownership before the first write outside, so a crash after creating
    // the group still leaves cleanup knowing what to revoke.
    let bound = next.enrollment_group_id.is_some();
    match ownership::claim(next.ownership, bound, held.is_some(), group.annotations(), "a group", &id)? {
        None => {
            finalizer.ensure(group, None).await?;
        }
        Some(wanted) => {
            next.enrollment_group_id = Some(id.clone());
            next.ownership = Some(wanted);
            if !ownership::record_with_finalizer(finalizer, group, wanted, &id).await? {
                let current = group.status.clone();
                let mut bound = current.clone().unwrap_or_default();
                bound.enrollment_group_id = Some(id.clone());
                bound.ownership = Some(wanted);
                status::write(api, group, current.as_ref(), &bound).await?;
            }
        }
    }
    // Only once the group is known to be this resource's: a key written for a group it may not manage
    // would never reach DPS.
    if let GroupAttestation::SymmetricKey(sym) = &spec.attestation
        && rotation::rotate_requested_key(ctx, group, &sym.secret_name).await?.is_some()
    {
        plan = attestation::plan(ctx, group).await?;
    }
    let wanted = desired(group, &id, &plan);
    // The keys DPS holds (read through attestationmechanism), for the slots the inputs do not give.
    let mut dps_keys = None;
    let etag = match held {
        None => {
            let created = match backend.dps.create_enrollment_group(&wanted).await {
                Ok(created) => created,
                Err(e @ crate::azure::AzureError::Conflict(_)) => {
                    match lost_create(&backend.dps, &id, &wanted, |held, keys| {
                        differences(held, keys, &wanted, &plan).is_empty()
                    })
                    .await?
                    {
                        Some(ours) => ours,
                        // Someone else created it between our read and our write: not ours after all.
                        None => {
                            next.ownership = None;
                            return Err(e.into());
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            };
            crate::controller::failpoint::hit("egrp-after-group-created");
            // Recorded by the Ready status (`ownership: Created`, the etag) and the log, not an event (as for
            // an IndividualEnrollment's entry).
            tracing::info!(enrollment_group_id = %id, status = status_word(spec.provisioning_status), "created the DPS enrollment group");
            if let Some(secret_name) = &plan.entry.generate_into {
                let keys = backend.dps.enrollment_group_attestation(&id).await?;
                write_generated(ctx, group, secret_name, &keys).await?;
                dps_keys = Some(keys);
                events::normal(
                    ctx,
                    group,
                    "KeysGenerated",
                    format!("DPS generated the group keys; written to Secret {secret_name}"),
                )
                .await;
            }
            created.etag
        }
        Some(held) => {
            let held_attestation = held_attestation(&backend.dps, &id, &held, wanted.attestation.kind).await?;
            if let Some(secret_name) = &plan.entry.generate_into {
                // The Secret is gone (or a crash came between creating the group and writing it).
                write_generated(ctx, group, secret_name, &held_attestation).await?;
            }
            let changed = differences(&held, &held_attestation, &wanted, &plan);
            dps_keys = Some(held_attestation.clone());
            if changed.is_empty() {
                held.etag
            } else {
                let mut update = wanted.clone();
                if plan.entry.generate_into.is_some() {
                    update.attestation = held_attestation;
                }
                let updated = backend.dps.update_enrollment_group(&update, held.etag.as_deref()).await?;
                let recorded = group.status.as_ref().and_then(|s| s.etag.as_deref());
                let drifted = ownership::drifted(group, recorded, held.etag.as_deref());
                if drifted {
                    let note = format!(
                        "DPS enrollment group {id} was changed outside this resource ({}); put back",
                        changed.join(", ")
                    );
                    events::warning(ctx, group, "DriftReverted", note).await;
                }
                let reason = match (held.provisioning_status, wanted.provisioning_status) {
                    (Some(wire::ProvisioningStatus::Enabled) | None, Some(wire::ProvisioningStatus::Disabled)) => {
                        "GroupDisabled"
                    }
                    (Some(wire::ProvisioningStatus::Disabled), Some(wire::ProvisioningStatus::Enabled)) => {
                        "GroupEnabled"
                    }
                    _ => "GroupUpdated",
                };
                events::normal(
                    ctx,
                    group,
                    reason,
                    format!("updated DPS enrollment group {id}: {}", changed.join(", ")),
                )
                .await;
                updated.etag
            }
        }
    };
    next.etag = etag;
    let ids = rotation::held_ids(&plan.entry.credentials, dps_keys.as_ref());
    let (credentials, rotated) = rotation::advance(next.credentials.as_ref(), ids);
    if let Some(note) = rotated {
        let action = rotation::step_action(&credentials);
        events::normal_step(ctx, group, rotation::CREDENTIAL_ROTATED, &action, note).await;
    }
    next.credentials = Some(credentials);
    let registered = backend.dps.query_all_registration_states(&id, Some(PAGE)).await?;
    next.registered_devices = Some(i64::try_from(registered.len()).unwrap_or(i64::MAX));
    let higher = chain::higher_enabled_groups(ctx, &backend.dps, group, &id, &plan.chain_texts).await?;
    next.re_enrollment_risk = higher.iter().map(|h| h.group_id.clone()).collect();
    Ok(higher)
}

fn desired(group: &EnrollmentGroup, id: &str, plan: &GroupPlan) -> wire::EnrollmentGroup {
    let spec = &group.spec;
    let s = settings::wire_settings(&spec.settings);
    wire::EnrollmentGroup {
        enrollment_group_id: id.to_string(),
        attestation: plan.entry.mechanism.clone(),
        capabilities: s.capabilities,
        iot_hubs: s.iot_hubs,
        initial_twin: s.initial_twin,
        provisioning_status: Some(settings::wire_status(spec.provisioning_status)),
        reprovision_policy: s.reprovision_policy,
        allocation_policy: s.allocation_policy,
        custom_allocation_definition: s.custom_allocation_definition,
        ..wire::EnrollmentGroup::default()
    }
}

fn differences(
    held: &wire::EnrollmentGroup,
    held_attestation: &wire::AttestationMechanism,
    wanted: &wire::EnrollmentGroup,
    plan: &GroupPlan,
) -> Vec<&'static str> {
    let mut out = Vec::new();
    if held.provisioning_status.unwrap_or_default() != wanted.provisioning_status.unwrap_or_default() {
        out.push("provisioningStatus");
    }
    if attestation::differs(held_attestation, &plan.entry) {
        out.push("attestation");
    }
    let settings_of = WireSettings::of_group;
    out.extend(settings::differences(&settings_of(held), &settings_of(wanted)));
    out
}

fn status_word(status: ProvisioningStatus) -> &'static str {
    match status {
        ProvisioningStatus::Enabled => "enabled",
        ProvisioningStatus::Disabled => "disabled",
    }
}
