//! Credential rotation: the annotation that asks for a newly generated key in one slot, the names (never
//! the material) of the credentials a DPS entry holds, and the generation and event of each step.
//!
//! Rolling one slot at a time is what keeps every device registering: DPS admits a device holding
//! either slot's credential, so replacing the secondary leaves devices on the primary untouched, and
//! once they have moved to the secondary the primary can be replaced.

use base64::Engine as _;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::common::CredentialStatus;
use crate::azure::Secret;
use crate::azure::wire::AttestationMechanism;
use crate::controller::certificate::Certificate;
use crate::controller::individual_enrollment::attestation::{PRIMARY_KEY, SECONDARY_KEY};
use crate::controller::{Context, events, inputs};
use crate::{Error, Result};

/// Annotation on an IndividualEnrollment or EnrollmentGroup asking for a new key in one slot of its key
/// Secret: `primary` or `secondary`, optionally followed by `:` and any label (`secondary:2026-12`). Each
/// distinct value is carried out once; the value stays (so GitOps tools see no drift).
pub const ROTATE_KEY: &str = "dps.iot-operator.dev/rotate-key";
/// Annotation on the key Secret recording which request (`<resource uid>/<value>`) wrote its newest
/// key. It is written together with the key, so a request is never carried out twice.
pub const ROTATED_FOR: &str = "dps.iot-operator.dev/rotated-for";
/// Event reason of each change of the credentials pushed to DPS.
pub const CREDENTIAL_ROTATED: &str = "CredentialRotated";

/// One of the two credential slots of a DPS entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// `primaryKey` / the primary certificate.
    Primary,
    /// `secondaryKey` / the secondary certificate.
    Secondary,
}

impl Slot {
    fn secret_key(self) -> &'static str {
        match self {
            Slot::Primary => PRIMARY_KEY,
            Slot::Secondary => SECONDARY_KEY,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Slot::Primary => "primary",
            Slot::Secondary => "secondary",
        }
    }
}

/// The slot a [`ROTATE_KEY`] value asks for.
pub fn requested_slot(value: &str) -> Result<Slot> {
    match value.trim().split_once(':').map_or(value.trim(), |(slot, _)| slot) {
        "primary" => Ok(Slot::Primary),
        "secondary" => Ok(Slot::Secondary),
        _ => Err(Error::invalid(
            "InvalidRotationRequest",
            format!("annotation {ROTATE_KEY} must be primary or secondary, optionally followed by :<label>"),
        )),
    }
}

/// The token recorded on the Secret for a request: the resource's uid, so a Secret reused by another (or
/// a recreated) resource does not count as done for it.
fn token<K: Resource>(obj: &K, value: &str) -> String {
    format!("{}/{}", obj.meta().uid.as_deref().unwrap_or_default(), value.trim())
}

/// The [`ROTATED_FOR`] value a Secret written now for `obj` should carry, so a request already on the
/// resource when its keys are first generated is not carried out on top of them.
pub fn generated_token<K: Resource>(obj: &K) -> Option<String> {
    obj.meta().annotations.as_ref().and_then(|a| a.get(ROTATE_KEY)).map(|v| token(obj, v))
}

/// Carries out `obj`'s [`ROTATE_KEY`] request on Secret `secret_name`, if there is one not yet done: a new
/// random key (64 bytes, as DPS generates) replaces the requested slot only, and the Secret records the
/// request in the same write (guarded by its resourceVersion). Returns the slot replaced. The caller then
/// pushes the Secret to DPS as for any Secret change. A missing Secret is left to the caller.
pub async fn rotate_requested_key<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    secret_name: &str,
) -> Result<Option<Slot>> {
    let Some(value) = obj.annotations().get(ROTATE_KEY) else { return Ok(None) };
    let slot = requested_slot(value)?;
    let namespace = obj.namespace().unwrap_or_default();
    let Some(secret) = inputs::get_secret(&ctx.client, &namespace, secret_name).await? else { return Ok(None) };
    let wanted = token(obj, value);
    if secret.annotations().get(ROTATED_FOR) == Some(&wanted) {
        return Ok(None);
    }
    let key = new_key()?;
    let patch = json!({
        "metadata": {
            "resourceVersion": secret.metadata.resource_version,
            "annotations": { ROTATED_FOR: wanted },
        },
        "data": { slot.secret_key(): base64::engine::general_purpose::STANDARD.encode(key.expose()) },
    });
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(ctx.client.clone(), &namespace)
        .patch(secret_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let note = format!("generated a new {} key into Secret {secret_name}, as {ROTATE_KEY} asked", slot.word());
    let action = match slot {
        Slot::Primary => "GeneratePrimaryKey",
        Slot::Secondary => "GenerateSecondaryKey",
    };
    events::normal_step(ctx, obj, "KeyGenerated", action, note).await;
    Ok(Some(slot))
}

/// A new key: base64 of 64 random bytes, the length DPS generates.
fn new_key() -> Result<Secret> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 64];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::invalid("RandomUnavailable", "the system random generator failed".to_string()))?;
    Ok(Secret::new(base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// The status name of a symmetric key: `key:` and the first 12 hex digits of the SHA-256 of its base64
/// text. Keys are random, so this names a key without revealing it; users can compute it with
/// `printf %s "$KEY" | sha256sum | cut -c1-12`.
pub fn key_id(key: &Secret) -> String {
    let digest = Sha256::digest(key.expose().as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("key:{hex}")
}

/// The status name of a certificate: `sha256:` and its SHA-256 thumbprint, as DPS reports it.
pub fn certificate_id(cert: &Certificate) -> String {
    format!("sha256:{}", cert.sha256_thumbprint())
}

/// The status name of a CA certificate registered in DPS, referred to by name.
pub fn ca_reference_id(name: &str) -> String {
    format!("ca:{name}")
}

/// The credentials DPS holds: `known` (from the resource's inputs) where set, else the keys DPS holds
/// (generated by DPS, or kept because the Secret has no such key).
pub fn held_ids(known: &[Option<String>; 2], dps_keys: Option<&AttestationMechanism>) -> [Option<String>; 2] {
    let keys = dps_keys.and_then(|m| m.symmetric_key.clone()).unwrap_or_default();
    let [primary, secondary] = known.clone();
    [
        primary.or_else(|| keys.primary_key.as_ref().map(key_id)),
        secondary.or_else(|| keys.secondary_key.as_ref().map(key_id)),
    ]
}

/// The next credential status, and a note for the [`CREDENTIAL_ROTATED`] event when the pair changed
/// since `previous` (none the first time: nothing was rotated).
pub fn advance(previous: Option<&CredentialStatus>, ids: [Option<String>; 2]) -> (CredentialStatus, Option<String>) {
    let [primary, secondary] = ids;
    let Some(previous) = previous else {
        return (CredentialStatus { primary, secondary, generation: 1 }, None);
    };
    if previous.primary == primary && previous.secondary == secondary {
        return (previous.clone(), None);
    }
    let generation = previous.generation + 1;
    let name = |id: &Option<String>| id.clone().unwrap_or_else(|| "none".to_string());
    let mut steps = Vec::new();
    if primary.is_some() && primary == previous.secondary {
        steps.push(format!("secondary promoted to primary ({})", name(&primary)));
    } else if primary != previous.primary {
        steps.push(format!("primary {} replaced by {}", name(&previous.primary), name(&primary)));
    }
    if secondary != previous.secondary && !(secondary.is_some() && secondary == previous.primary) {
        steps.push(match (&previous.secondary, &secondary) {
            (None, Some(new)) => format!("secondary {new} added"),
            (Some(old), None) => format!("secondary {old} removed"),
            _ => format!("secondary {} replaced by {}", name(&previous.secondary), name(&secondary)),
        });
    } else if secondary.is_some() && secondary == previous.primary {
        steps.push(format!("former primary kept as secondary ({})", name(&secondary)));
    }
    let note = format!("credential generation {generation}: {}", steps.join("; "));
    (CredentialStatus { primary, secondary, generation }, Some(note))
}

/// The event action of the step that reached `credentials`: one per generation, so each step's event keeps
/// its own note instead of joining the previous step's series.
pub fn step_action(credentials: &CredentialStatus) -> String {
    format!("RotateCredentialsToGeneration{}", credentials.generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(p: Option<&str>, s: Option<&str>) -> [Option<String>; 2] {
        [p.map(str::to_string), s.map(str::to_string)]
    }

    #[test]
    fn a_key_id_names_the_key_without_containing_it() {
        let key = Secret::new("c2VjcmV0LWtleS1mb3ItcHVtcC0zLTAxMjM0NTY3ODk=".to_string());
        let id = key_id(&key);
        assert_eq!(id.len(), "key:".len() + 12);
        assert!(!id.contains(key.expose()) && !key.expose().contains(&id[4..]));
        assert_eq!(id, key_id(&Secret::new(key.expose().to_string())), "stable");
    }

    #[test]
    fn the_first_credentials_are_generation_one_without_an_event() {
        let (status, note) = advance(None, ids(Some("key:a"), Some("key:b")));
        assert_eq!(status.generation, 1);
        assert!(note.is_none());
    }

    #[test]
    fn each_change_of_the_pair_is_one_generation_and_names_the_slots() {
        let first = advance(None, ids(Some("key:a"), Some("key:b"))).0;
        let (same, none) = advance(Some(&first), ids(Some("key:a"), Some("key:b")));
        assert_eq!((same.generation, none), (1, None));
        let (second, note) = advance(Some(&first), ids(Some("key:a"), Some("key:c")));
        assert_eq!(second.generation, 2);
        assert_eq!(note.as_deref(), Some("credential generation 2: secondary key:b replaced by key:c"));
        let (third, note) = advance(Some(&second), ids(Some("key:c"), Some("key:a")));
        assert_eq!(third.generation, 3);
        let note = note.unwrap_or_default();
        assert!(note.contains("secondary promoted to primary (key:c)") && note.contains("former primary"), "{note}");
        let (_, note) = advance(Some(&third), ids(Some("key:c"), None));
        assert_eq!(note.as_deref(), Some("credential generation 4: secondary key:a removed"));
    }

    #[test]
    fn a_rotation_request_names_a_slot_and_may_carry_a_label() {
        assert_eq!(requested_slot("secondary").ok(), Some(Slot::Secondary));
        assert_eq!(requested_slot("primary:2026-12").ok(), Some(Slot::Primary));
        assert!(requested_slot("both").is_err());
    }
}
