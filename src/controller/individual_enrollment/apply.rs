//! Apply: create or update the DPS entry with etags, keep it disabled while a DeviceDeprovision is in
//! force, and report the device's registration.

use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::attestation::{self, Plan};
use super::{Freshness, blocking_deprovision, registration_id};
use crate::api::common::ProvisioningStatus;
use crate::api::individual_enrollment::{IndividualAttestation, IndividualEnrollmentStatus, RegistrationSummary};
use crate::api::{IndividualEnrollment, ProvisioningService};
use crate::azure::wire;
use crate::controller::backend::Backend;
use crate::controller::cached::Cached;
use crate::controller::dps_entry::{held_attestation, lost_create};
use crate::controller::finalizer::Finalizer;
use crate::controller::health::{self, Health};
use crate::controller::requeue::Action;
use crate::controller::settings::{self, WireSettings};
use crate::controller::{Context, events, ownership, rotation, status, validation};
use crate::{Error, Result};

/// Condition type: a DeviceDeprovision keeps the entry disabled.
pub const BLOCKED: &str = "Blocked";

pub(super) async fn apply(
    enrollment: &IndividualEnrollment,
    ctx: &Context,
    finalizer: &Finalizer<IndividualEnrollment>,
) -> Result<Action> {
    let namespace = enrollment.namespace().unwrap_or_default();
    let api = Api::<IndividualEnrollment>::namespaced(ctx.client.clone(), &namespace);
    let current = enrollment.status.clone();
    let mut next = current.clone().unwrap_or_default();
    next.deletion = None;
    if let Some((owned, id)) =
        ownership::annotated_binding(next.ownership, next.registration_id.as_deref(), enrollment.annotations())
    {
        next.ownership = Some(owned);
        next.registration_id = Some(id);
    }
    let result = sync(enrollment, ctx, &api, finalizer, &mut next).await;
    let previous = current.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let (health, blocked_by) = match &result {
        Ok(Synced { blocked_by: Some(d) }) => (
            Health::stalled(
                "Blocked",
                format!(
                    "DeviceDeprovision {d} is in force: the entry stays disabled until it is deleted with onDelete: Reinstate"
                ),
            ),
            Some(d.clone()),
        ),
        Ok(Synced { blocked_by: None }) => (Health::ready("EntryInSync", "the DPS entry matches the spec"), None),
        Err(e) => (Health::from_error(e), None),
    };
    let generation = enrollment.metadata.generation;
    let mut conditions = health.conditions(generation, &previous);
    conditions.push(health::condition(
        BLOCKED,
        blocked_by.is_some(),
        if blocked_by.is_some() { "DeviceDeprovisionInForce" } else { "NotBlocked" },
        &blocked_by.map(|d| format!("blocked by DeviceDeprovision {d}")).unwrap_or_default(),
        generation,
        &previous,
    ));
    next.conditions = conditions;
    next.observed_generation = generation;
    status::write(&api, enrollment, current.as_ref(), &next).await?;
    match result {
        Ok(_) => Ok(Action::requeue(ctx.next_resync())),
        Err(e) => {
            if !current
                .as_ref()
                .is_some_and(|s| health::already_stalled(&s.conditions, s.observed_generation, generation))
            {
                events::warning(ctx, enrollment, health.reason(), health.message().to_string()).await;
            }
            Err(e)
        }
    }
}

struct Synced {
    blocked_by: Option<String>,
}

async fn sync(
    enrollment: &IndividualEnrollment,
    ctx: &Context,
    api: &Api<IndividualEnrollment>,
    finalizer: &Finalizer<IndividualEnrollment>,
    next: &mut IndividualEnrollmentStatus,
) -> Result<Synced> {
    let namespace = enrollment.namespace().unwrap_or_default();
    let spec = &enrollment.spec;
    let id = registration_id(enrollment);
    let x509 = matches!(spec.attestation, IndividualAttestation::X509(_));
    let max = validation::registration_id_max_len(x509, spec.provisioning_status);
    validation::check_id("registrationId", &id, max)?;
    validation::check_immutable("registrationId", next.registration_id.as_deref(), &id)?;
    if let Some(holder) = ownership::older_claimant(&ctx.enrollments, enrollment).await? {
        return Err(Error::invalid(
            "RegistrationIdConflict",
            format!("IndividualEnrollment {holder} already manages registration ID {id:?}; delete one of the two"),
        ));
    }
    let backend = ready_backend(ctx, &namespace, &spec.provisioning_service_ref.name).await?;
    let mut plan = attestation::plan(ctx, enrollment, &id).await?;
    let held = match backend.dps.get_enrollment(&id).await {
        Ok(held) => Some(held),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let mut blocked_by = blocking_deprovision(ctx, enrollment, &id, Freshness::Cached).await?;
    let held_disabled =
        held.as_ref().is_some_and(|h| h.provisioning_status == Some(wire::ProvisioningStatus::Disabled));
    if blocked_by.is_none() && held_disabled && spec.provisioning_status == ProvisioningStatus::Enabled {
        // Turning an entry back on must not race a DeviceDeprovision created a moment ago that the
        // cache has not seen yet: ask the apiserver.
        blocked_by = blocking_deprovision(ctx, enrollment, &id, Freshness::Fresh).await?;
    }
    let wanted_status = if blocked_by.is_some() { ProvisioningStatus::Disabled } else { spec.provisioning_status };
    claim(enrollment, api, finalizer, next, held.is_some(), &id).await?;
    // Only once the entry is known to be this resource's: a key written for an entry it may not manage
    // would never reach DPS.
    if let IndividualAttestation::SymmetricKey(sym) = &spec.attestation
        && rotation::rotate_requested_key(ctx, enrollment, &sym.secret_name).await?.is_some()
    {
        plan = attestation::plan(ctx, enrollment, &id).await?;
    }
    let wanted = desired(enrollment, &id, &plan, wanted_status);
    let created_now = held.is_none();
    // The keys DPS holds (read through attestationmechanism), for the slots the inputs do not give.
    let mut dps_keys = None;
    let etag = match held {
        None => {
            let created = match backend.dps.create_enrollment(&wanted).await {
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
            crate::controller::failpoint::hit("ienr-after-entry-created");
            // Recorded by the Ready status (`ownership: Created`, the etag) and the log, not an event: one
            // event per created entry would add half again to the apiserver writes of applying a fleet.
            tracing::info!(registration_id = %id, status = status_word(wanted_status), "created the DPS entry");
            if let Some(secret_name) = &plan.generate_into {
                let keys = backend.dps.enrollment_attestation(&id).await?;
                attestation::write_generated(ctx, enrollment, secret_name, &keys).await?;
                dps_keys = Some(keys);
                events::normal(
                    ctx,
                    enrollment,
                    "KeysGenerated",
                    format!("DPS generated the keys; written to Secret {secret_name}"),
                )
                .await;
            }
            created.etag
        }
        Some(held) => {
            let held_attestation = held_attestation(&backend.dps, &id, &held, wanted.attestation.kind).await?;
            if let Some(secret_name) = &plan.generate_into {
                // The Secret is gone (or a crash came between creating the entry and writing it).
                attestation::write_generated(ctx, enrollment, secret_name, &held_attestation).await?;
            }
            let changed = differences(&held, &held_attestation, &wanted, &plan);
            dps_keys = Some(held_attestation.clone());
            if changed.is_empty() {
                held.etag
            } else {
                let mut update = wanted.clone();
                if plan.generate_into.is_some() {
                    update.attestation = held_attestation;
                }
                let updated = backend.dps.update_enrollment(&update, held.etag.as_deref()).await?;
                let note = format!("updated DPS entry {id}: {}", changed.join(", "));
                let recorded = enrollment.status.as_ref().and_then(|s| s.etag.as_deref());
                let drifted = ownership::drifted(enrollment, recorded, held.etag.as_deref());
                if drifted {
                    let note =
                        format!("DPS entry {id} was changed outside this resource ({}); put back", changed.join(", "));
                    events::warning(ctx, enrollment, "DriftReverted", note).await;
                }
                let reason = match (held.provisioning_status, wanted.provisioning_status) {
                    (Some(wire::ProvisioningStatus::Enabled) | None, Some(wire::ProvisioningStatus::Disabled)) => {
                        "EntryDisabled"
                    }
                    (Some(wire::ProvisioningStatus::Disabled), Some(wire::ProvisioningStatus::Enabled)) => {
                        "EntryEnabled"
                    }
                    _ => "EntryUpdated",
                };
                events::normal(ctx, enrollment, reason, note).await;
                updated.etag
            }
        }
    };
    next.etag = etag;
    let ids = rotation::held_ids(&plan.credentials, dps_keys.as_ref());
    let (credentials, rotated) = rotation::advance(next.credentials.as_ref(), ids);
    if let Some(note) = rotated {
        let action = rotation::step_action(&credentials);
        events::normal_step(ctx, enrollment, rotation::CREDENTIAL_ROTATED, &action, note).await;
    }
    next.credentials = Some(credentials);
    // An entry created just now has no registration yet: no need to ask.
    next.registration = if created_now {
        None
    } else {
        match backend.dps.get_registration_state(&id).await {
            Ok(state) => Some(summary(&state)),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        }
    };
    Ok(Synced { blocked_by })
}

/// Decides whether this resource may manage the entry, and records how (with the finalizer) before any
/// write.
async fn claim(
    enrollment: &IndividualEnrollment,
    api: &Api<IndividualEnrollment>,
    finalizer: &Finalizer<IndividualEnrollment>,
    next: &mut IndividualEnrollmentStatus,
    exists: bool,
    id: &str,
) -> Result<()> {
    let bound = next.registration_id.is_some();
    let annotations = enrollment.annotations();
    let Some(wanted) = ownership::claim(next.ownership, bound, exists, annotations, "an entry", id)? else {
        finalizer.ensure(enrollment, None).await?;
        return Ok(());
    };
    // Recorded (with the registration ID) before the write, so a crash right after creating the entry
    // still finds it ours and cleanup knows what to revoke.
    next.ownership = Some(wanted);
    next.registration_id = Some(id.to_string());
    if ownership::record_with_finalizer(finalizer, enrollment, wanted, id).await? {
        return Ok(());
    }
    let current = enrollment.status.clone();
    let mut recorded = current.clone().unwrap_or_default();
    recorded.registration_id = next.registration_id.clone();
    recorded.ownership = Some(wanted);
    status::write(api, enrollment, current.as_ref(), &recorded).await?;
    Ok(())
}

/// The backend of a Ready ProvisioningService; not found or not ready are conditions, not crashes. The
/// controller's cache says whether the service is Ready and which backend was built for it, so a burst
/// of enrollments costs the apiserver nothing here; the service is read only to build its backend.
pub(crate) async fn ready_backend(ctx: &Context, namespace: &str, name: &str) -> Result<std::sync::Arc<Backend>> {
    let not_ready = || {
        Error::waiting(
            "ProvisioningServiceNotReady",
            format!("waiting for ProvisioningService {namespace}/{name} to become Ready"),
        )
    };
    let cached = crate::controller::context::filled_cache(&ctx.services)
        .await
        .and_then(|store| store.get(&ObjectRef::<Cached<ProvisioningService>>::new(name).within(namespace)));
    if let Some(service) = &cached {
        if !service.view.ready {
            return Err(not_ready());
        }
        if let Some(backend) = ctx.backends.built(namespace, name, service.view.uid, service.meta().generation) {
            return Ok(backend);
        }
    }
    let service = Api::<ProvisioningService>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await?
        .ok_or_else(|| {
            Error::invalid(
                "ProvisioningServiceNotFound",
                format!("ProvisioningService {namespace}/{name} does not exist"),
            )
        })?;
    if !crate::controller::provisioning_service::is_ready(&service) {
        return Err(not_ready());
    }
    ctx.backends.current(&ctx.client, &service).await
}

fn desired(
    enrollment: &IndividualEnrollment,
    id: &str,
    plan: &Plan,
    status: ProvisioningStatus,
) -> wire::IndividualEnrollment {
    let spec = &enrollment.spec;
    let s = settings::wire_settings(&spec.settings);
    wire::IndividualEnrollment {
        registration_id: id.to_string(),
        device_id: spec.device_id.clone(),
        attestation: plan.mechanism.clone(),
        capabilities: s.capabilities,
        iot_hubs: s.iot_hubs,
        initial_twin: s.initial_twin,
        provisioning_status: Some(settings::wire_status(status)),
        reprovision_policy: s.reprovision_policy,
        allocation_policy: s.allocation_policy,
        custom_allocation_definition: s.custom_allocation_definition,
        ..wire::IndividualEnrollment::default()
    }
}

fn differences(
    held: &wire::IndividualEnrollment,
    held_attestation: &wire::AttestationMechanism,
    wanted: &wire::IndividualEnrollment,
    plan: &Plan,
) -> Vec<&'static str> {
    let mut out = Vec::new();
    if held.provisioning_status.unwrap_or_default() != wanted.provisioning_status.unwrap_or_default() {
        out.push("provisioningStatus");
    }
    if wanted.device_id.is_some() && held.device_id != wanted.device_id {
        out.push("deviceId");
    }
    if attestation::differs(held_attestation, plan) {
        out.push("attestation");
    }
    let held_settings = WireSettings::of_enrollment(held);
    let wanted_settings = WireSettings::of_enrollment(wanted);
    out.extend(settings::differences(&held_settings, &wanted_settings));
    out
}

/// The status summary of a registration state.
pub(crate) fn summary(state: &wire::DeviceRegistrationState) -> RegistrationSummary {
    RegistrationSummary {
        assigned_hub: state.assigned_hub.clone(),
        device_id: state.device_id.clone(),
        status: state
            .status
            .map(|s| serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()),
        last_updated_time: None,
    }
}

fn status_word(status: ProvisioningStatus) -> &'static str {
    match status {
        ProvisioningStatus::Enabled => "enabled",
        ProvisioningStatus::Disabled => "disabled",
    }
}
