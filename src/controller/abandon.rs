//! Abandon: a person releases a resource being deleted without the operator touching DPS or the hub,
//! for a DPS instance (or credentials) that no longer exists. The release is recorded as a Warning event
//! naming who and why, so nobody has to hand-edit finalizers and leave no trace.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::status::FIELD_MANAGER;
use super::{Context, FINALIZER, events};
use crate::Result;

/// Set on a resource being deleted, its value the reason: the finalizer is released at once, with no
/// DPS or hub call.
pub const ABANDON: &str = "dps.iot-operator.dev/abandon";
/// Optional: who asks for the abandon (Kubernetes does not record the requesting user on the object).
pub const ABANDONED_BY: &str = "dps.iot-operator.dev/abandoned-by";

/// The reason a person gave, when `obj` is being deleted, still carries our finalizer and is annotated
/// for abandon. A live resource is never abandoned: the annotation waits for its deletion.
pub fn requested<K: Resource>(obj: &K) -> Option<String> {
    obj.meta().deletion_timestamp.as_ref()?;
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return None;
    }
    obj.annotations().get(ABANDON).map(|reason| reason.trim().to_string())
}

/// Who asked: the `abandoned-by` annotation when set, else the field manager that wrote the abandon
/// annotation (a client name such as `kubectl-annotate`; the user is only in the API server's audit log).
pub fn requester<K: Resource>(obj: &K) -> String {
    if let Some(by) = obj.annotations().get(ABANDONED_BY).filter(|by| !by.trim().is_empty()) {
        return by.trim().to_string();
    }
    let key = format!("f:{ABANDON}");
    obj.meta()
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .and_then(|f| f.0.pointer("/f:metadata/f:annotations"))
                .and_then(|a| a.as_object())
                .is_some_and(|a| a.contains_key(&key))
        })
        .filter_map(|entry| entry.manager.clone())
        .next_back()
        .map_or_else(|| "an unknown client".to_string(), |manager| format!("field manager {manager}"))
}

/// Records the abandon as a Warning event, then removes our finalizer (guarded by the resourceVersion,
/// so a concurrent change to the list is never lost).
pub async fn release<K>(api: &Api<K>, obj: &K, reason: &str, ctx: &Context) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let who = requester(obj);
    let why = if reason.is_empty() { "no reason given" } else { reason };
    warn!(object = %super::object_key(obj), by = %who, reason = %why, "abandoned: finalizer released without DPS or hub calls");
    let note = format!(
        "{ABANDON}: finalizer released without any DPS or hub call, at the request of {who}; reason: {why}. \
         Anything this resource created in DPS or the hub is left as it is (see `dps-operator audit`)."
    );
    events::warning(ctx, obj, "Abandoned", note).await;
    let finalizers: Vec<String> = obj.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": obj.resource_version() } });
    api.patch(
        &obj.name_any(),
        &PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() },
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::IndividualEnrollment;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};

    fn enrollment(deleting: bool, annotations: &[(&str, &str)]) -> IndividualEnrollment {
        let mut e: IndividualEnrollment = serde_json::from_value(json!({
            "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "IndividualEnrollment",
            "metadata": { "name": "e", "namespace": "n", "finalizers": [FINALIZER] },
            "spec": { "provisioningServiceRef": { "name": "p" }, "attestation": { "tpm": { "endorsementKey": "k" } } }
        }))
        .expect("an enrollment");
        if deleting {
            e.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        }
        e.metadata.annotations = Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        e
    }

    #[test]
    fn abandon_is_only_requested_for_a_resource_being_deleted() {
        assert_eq!(requested(&enrollment(false, &[(ABANDON, "dps gone")])), None);
        assert_eq!(requested(&enrollment(true, &[])), None);
        assert_eq!(requested(&enrollment(true, &[(ABANDON, " dps gone ")])).as_deref(), Some("dps gone"));
    }

    #[test]
    fn the_requester_is_the_abandoned_by_annotation_else_the_annotations_field_manager() {
        let mut e = enrollment(true, &[(ABANDON, "x")]);
        e.metadata.managed_fields = Some(vec![
            ManagedFieldsEntry { manager: Some("dps-operator".into()), ..Default::default() },
            ManagedFieldsEntry {
                manager: Some("kubectl-annotate".into()),
                fields_v1: Some(FieldsV1(json!({"f:metadata": {"f:annotations": {format!("f:{ABANDON}"): {}}}}))),
                ..Default::default()
            },
        ]);
        assert_eq!(requester(&e), "field manager kubectl-annotate");
        e.metadata.annotations.get_or_insert_default().insert(ABANDONED_BY.into(), "alice".into());
        assert_eq!(requester(&e), "alice");
    }
}
