//! The operator's finalizer on each resource: in place before the first write outside Kubernetes, and
//! released once the deletion order is done.
//!
//! Unlike kube-runtime's `finalizer()` helper, adding it does not end the reconcile (the apply runs on at
//! once instead of after a round trip through the watch), and a kind may add it together with the record
//! of the DPS entry it is about to create, in one patch: a new resource then costs the apiserver two
//! writes (this patch and the Ready status) instead of four.

use std::sync::atomic::{AtomicBool, Ordering};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, TestOperation};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::FINALIZER;
use crate::{Error, Result};

/// The finalizer of one resource during one reconcile.
pub struct Finalizer<K> {
    api: Api<K>,
    present: AtomicBool,
}

impl<K> Finalizer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    /// The finalizer of `obj`, as the copy being reconciled shows it.
    pub fn of(api: Api<K>, obj: &K) -> Self {
        let present = obj.finalizers().iter().any(|f| f == FINALIZER);
        Self { api, present: AtomicBool::new(present) }
    }

    /// Whether the resource carries the finalizer (or this reconcile added it).
    pub fn is_present(&self) -> bool {
        self.present.load(Ordering::Acquire)
    }

    /// Adds the finalizer unless it is there, with `annotation` in the same patch. Returns whether it
    /// wrote: when the finalizer was already there the annotation is not written (the caller records it
    /// another way).
    ///
    /// The patch tests the finalizer list it extends, so a list changed meanwhile (another controller's
    /// finalizer) fails it and the reconcile retries, instead of one of the two being lost.
    pub async fn ensure(&self, obj: &K, annotation: Option<(&str, &str)>) -> Result<bool> {
        if self.is_present() {
            return Ok(false);
        }
        let ops = adding(obj, annotation)?;
        self.api
            .patch(&obj.name_any(), &PatchParams::default(), &Patch::Json::<()>(json_patch::Patch(ops)))
            .await
            .map_err(Error::Finalizer)?;
        self.present.store(true, Ordering::Release);
        Ok(true)
    }

    /// Removes the finalizer after a completed cleanup (tested at its index, so another controller's
    /// finalizer is never removed). A resource already gone counts as released.
    pub async fn release(&self, obj: &K) -> Result<()> {
        let Some(index) = obj.finalizers().iter().position(|f| f == FINALIZER) else { return Ok(()) };
        let path = format!("/metadata/finalizers/{index}");
        let ops =
            vec![test(&path, FINALIZER.into())?, PatchOperation::Remove(RemoveOperation { path: pointer(&path)? })];
        let params = PatchParams::default();
        match self.api.patch(&obj.name_any(), &params, &Patch::Json::<()>(json_patch::Patch(ops))).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(Error::Finalizer(e)),
        }
    }
}

/// The patch adding the finalizer to `obj`, and `annotation` when given.
fn adding<K: Resource>(obj: &K, annotation: Option<(&str, &str)>) -> Result<Vec<PatchOperation>> {
    let mut ops = Vec::new();
    let finalizers = obj.meta().finalizers.as_deref().unwrap_or_default();
    if finalizers.is_empty() {
        ops.push(test("/metadata/finalizers", serde_json::Value::Null)?);
        ops.push(add("/metadata/finalizers", vec![FINALIZER].into())?);
    } else {
        ops.push(test("/metadata/finalizers", finalizers.into())?);
        ops.push(add("/metadata/finalizers/-", FINALIZER.into())?);
    }
    if let Some((key, value)) = annotation {
        if obj.meta().annotations.as_ref().is_none_or(|a| a.is_empty()) {
            // Adding the whole map would replace one the cached copy does not show yet: test it is absent.
            ops.push(test("/metadata/annotations", serde_json::Value::Null)?);
            ops.push(add("/metadata/annotations", serde_json::json!({ key: value }))?);
        } else {
            let path = PointerBuf::from_tokens(["metadata", "annotations", key]);
            ops.push(PatchOperation::Add(AddOperation { path, value: value.into() }));
        }
    }
    Ok(ops)
}

fn pointer(path: &str) -> Result<PointerBuf> {
    PointerBuf::parse(path).map_err(|e| Error::invalid("InvalidFinalizerPath", format!("{path}: {e}")))
}

fn test(path: &str, value: serde_json::Value) -> Result<PatchOperation> {
    Ok(PatchOperation::Test(TestOperation { path: pointer(path)?, value }))
}

fn add(path: &str, value: serde_json::Value) -> Result<PatchOperation> {
    Ok(PatchOperation::Add(AddOperation { path: pointer(path)?, value }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::IndividualEnrollment;

    fn enrollment(metadata: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "IndividualEnrollment", "metadata": metadata,
            "spec": { "provisioningServiceRef": { "name": "p" }, "attestation": { "tpm": { "endorsementKey": "k" } } },
        })
    }

    fn patched(mut doc: serde_json::Value, annotation: Option<(&str, &str)>) -> serde_json::Value {
        let obj: IndividualEnrollment = serde_json::from_value(doc.clone()).expect("typed");
        let ops = adding(&obj, annotation).expect("ops");
        json_patch::patch(&mut doc, &ops).expect("the patch applies");
        doc["metadata"].clone()
    }

    #[test]
    fn the_finalizer_and_the_created_record_go_on_in_one_patch_keeping_what_is_there() {
        let key = crate::controller::ownership::CREATED_ANNOTATION;
        // The apiserver's JSON patch reads an absent member as null in a test (json-patch here does not).
        let bare =
            patched(enrollment(json!({ "name": "e", "finalizers": null, "annotations": null })), Some((key, "e")));
        assert_eq!(bare["finalizers"], json!([FINALIZER]));
        assert_eq!(bare["annotations"], json!({ key: "e" }));
        let applied = enrollment(json!({
            "name": "e", "finalizers": ["example.com/other"],
            "annotations": { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
        }));
        let kept = patched(applied, Some((key, "e")));
        assert_eq!(kept["finalizers"], json!(["example.com/other", FINALIZER]));
        assert_eq!(kept["annotations"][key], "e");
        assert_eq!(kept["annotations"]["kubectl.kubernetes.io/last-applied-configuration"], "{}");
        let without = patched(enrollment(json!({ "name": "e", "finalizers": null })), None);
        assert!(without.get("annotations").is_none());
    }

    #[test]
    fn a_finalizer_list_changed_since_the_copy_was_read_fails_the_patch() {
        let stale: IndividualEnrollment = serde_json::from_value(enrollment(json!({ "name": "e" }))).expect("typed");
        let ops = adding(&stale, None).expect("ops");
        let mut now = enrollment(json!({ "name": "e", "finalizers": ["example.com/other"] }));
        assert!(json_patch::patch(&mut now, &ops).is_err(), "the test operation must refuse it");
    }
}
