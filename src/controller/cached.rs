//! What the controllers' caches keep of each resource: its identity and the few fields that lookups across
//! resources read (which ProvisioningService it names, the ID it claims, the Secrets and ConfigMaps it
//! reads), not the object. A reconcile reads its object from the apiserver.
//!
//! A cached object costs about a third of a typed copy: at 10,000 resources of each kind the full copies
//! were most of the operator's memory (1.75 KB and some 45 allocations each), and a reconcile that started
//! from a cached copy had to read the apiserver anyway whenever the copy lagged the operator's own writes.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer};

use super::Reconciled;

/// The fields of a resource that lookups across resources read, with names kept as 64-bit digests
/// ([`name_digest`], [`id_digest`]): a lookup only compares names, and with tens of thousands of resources
/// cached a digest's 8 bytes are a fraction of a `String` and its allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The ProvisioningService the resource names (0 for a ProvisioningService).
    pub service: u64,
    /// The ID it claims on that service (a registration or group ID: the spec's, else the resource's
    /// name; 0 for a ProvisioningService).
    pub id: u64,
    /// The Secrets it reads.
    pub secrets: Box<[u64]>,
    /// The ConfigMaps it reads.
    pub config_maps: Box<[u64]>,
    /// Whether its status says Ready.
    pub ready: bool,
    /// Whether its status says Stalled (counted by the `dps_operator_resources_stalled` gauge).
    pub stalled: bool,
    /// Whether it carries the operator's finalizer.
    pub finalized: bool,
    /// A digest of its UID, to tell a recreated resource from the one that had its name.
    pub uid: u64,
}

impl View {
    /// The view of a resource that names the ProvisioningService `service`, claims `id` and reads
    /// `secrets` and `config_maps`.
    pub fn of(service: &str, id: &str, secrets: &[String], config_maps: &[String]) -> Self {
        let names = |names: &[String]| names.iter().map(|n| name_digest(n)).collect();
        View {
            service: name_digest(service),
            id: id_digest(id),
            secrets: names(secrets),
            config_maps: names(config_maps),
            ..View::default()
        }
    }
}

/// The digest a [`View`] keeps of an object's name.
pub fn name_digest(name: &str) -> u64 {
    crate::key_digest::of(name)
}

/// [`name_digest`] of the name in `meta`.
pub fn name_digest_of(meta: &ObjectMeta) -> u64 {
    name_digest(meta.name.as_deref().unwrap_or_default())
}

/// The digest a [`View`] keeps of a claimed ID: registration and group IDs compare ASCII
/// case-insensitively in DPS, so `Kiosk-7` and `kiosk-7` have the same one.
pub fn id_digest(id: &str) -> u64 {
    crate::key_digest::of(&id.to_ascii_lowercase())
}

/// What a controller's cache holds of one `K`: name, namespace, generation and the creation and deletion
/// times in its metadata (no UID or resource version, which the cache's index would copy again), and its
/// [`View`].
pub struct Cached<K> {
    metadata: ObjectMeta,
    /// The digest of what a change must touch to start a reconcile (`lenient::reconcile_worthy`).
    pub changes: u64,
    /// The fields lookups read.
    pub view: View,
    kind: PhantomData<fn() -> K>,
}

impl<K: Reconciled> Cached<K> {
    /// The cached form of `object`.
    pub fn of(object: &K) -> Self {
        let meta = object.meta();
        let mut view = object.view();
        view.uid = meta.uid.as_deref().map_or(0, crate::key_digest::of);
        view.stalled =
            object.health().is_some_and(|(conditions, _)| super::health::is_true(conditions, super::health::STALLED));
        view.finalized = meta.finalizers.iter().flatten().any(|f| f == super::FINALIZER);
        Cached {
            metadata: ObjectMeta {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                generation: meta.generation,
                creation_timestamp: meta.creation_timestamp.clone(),
                deletion_timestamp: meta.deletion_timestamp.clone(),
                ..ObjectMeta::default()
            },
            changes: reconcile_worthy(object),
            view,
            kind: PhantomData,
        }
    }
}

impl<K> Cached<K> {
    /// `namespace/name` (a namespace holds no `/`): the resource's key in the operator's timers.
    pub fn key(&self) -> Box<str> {
        let (namespace, name) = (self.metadata.namespace.as_deref(), self.metadata.name.as_deref());
        format!("{}/{}", namespace.unwrap_or_default(), name.unwrap_or_default()).into_boxed_str()
    }

    /// Whether the resource is being deleted.
    pub fn deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Whether the change from `before` to this copy calls for a reconcile: it touched what
    /// [`reconcile_worthy`] covers, or someone took the operator's finalizer off a live resource (which
    /// would let it be deleted without its revocation), so it goes back at once, not at the next resync.
    pub fn calls_for_reconcile(&self, before: &Cached<K>) -> bool {
        self.changes != before.changes || (before.view.finalized && !self.view.finalized && !self.deleting())
    }
}

/// What a change must touch to start a reconcile: the spec (generation), annotations (adopt, abandon),
/// finalizers or deletion, and which object holds the name (a resource deleted and created again with the
/// same spec is a new one). The operator's own writes are not among them: its status writes, and the patch
/// adding its finalizer with the record of a created entry, are made during the reconcile that needs them,
/// so each does not cost one more reconcile; resyncs and retries are scheduled by the reconcile's result
/// instead. (A person removing the operator's finalizer from a live resource is a change too:
/// [`Cached::calls_for_reconcile`].)
pub(crate) fn reconcile_worthy<K: Resource>(object: &K) -> u64 {
    let meta = object.meta();
    let mut hasher = std::hash::DefaultHasher::new();
    meta.uid.hash(&mut hasher);
    meta.generation.hash(&mut hasher);
    for (key, value) in meta.annotations.iter().flatten() {
        if key != super::ownership::CREATED_ANNOTATION {
            (key, value).hash(&mut hasher);
        }
    }
    meta.finalizers.iter().flatten().filter(|f| *f != super::FINALIZER).for_each(|f| f.hash(&mut hasher));
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    hasher.finish()
}

impl<K> Clone for Cached<K> {
    fn clone(&self) -> Self {
        Cached { metadata: self.metadata.clone(), changes: self.changes, view: self.view.clone(), kind: PhantomData }
    }
}

impl<K: Resource<DynamicType = ()>> fmt::Debug for Cached<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("kind", &K::kind(&()))
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("view", &self.view)
            .finish()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Cached<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Reads a whole `K` and keeps its cached form (the controller's bounds ask for it; the operator's own
/// watches convert objects themselves, reporting those that do not read as `K`).
impl<'de, K: Reconciled> Deserialize<'de> for Cached<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(deserializer).map(|object| Cached::of(&object))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::IndividualEnrollment;

    fn enrollment(metadata: serde_json::Value, spec: serde_json::Value) -> IndividualEnrollment {
        serde_json::from_value(json!({
            "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "IndividualEnrollment",
            "metadata": metadata, "spec": spec,
        }))
        .expect("an enrollment")
    }

    #[test]
    fn the_cache_keeps_identity_and_lookup_fields_but_no_version_uid_or_spec() {
        let spec = json!({
            "provisioningServiceRef": { "name": "dps" },
            "registrationId": "kiosk-7",
            "attestation": { "symmetricKey": { "secretName": "kiosk-keys" } },
        });
        let metadata = json!({
            "name": "kiosk", "namespace": "shop", "uid": "u-1", "resourceVersion": "42", "generation": 3,
            "annotations": { "a": "b" }, "finalizers": ["f"], "labels": { "app": "kiosk" },
        });
        let cached = Cached::of(&enrollment(metadata, spec));
        let meta = cached.meta();
        assert_eq!(
            (meta.name.as_deref(), meta.namespace.as_deref(), meta.generation),
            (Some("kiosk"), Some("shop"), Some(3))
        );
        assert_eq!((meta.uid.as_ref(), meta.resource_version.as_ref()), (None, None));
        assert_eq!((meta.annotations.as_ref(), meta.finalizers.as_ref(), meta.labels.as_ref()), (None, None, None));
        assert_eq!(cached.view.service, name_digest("dps"));
        assert_eq!(cached.view.id, id_digest("Kiosk-7"), "IDs compare case-insensitively");
        assert_eq!(&*cached.view.secrets, [name_digest("kiosk-keys")]);
        assert_eq!(cached.view.uid, crate::key_digest::of("u-1"));
    }

    #[test]
    fn a_resource_created_again_under_the_same_name_is_a_change_worth_a_reconcile() {
        let spec = json!({
            "provisioningServiceRef": { "name": "dps" },
            "attestation": { "symmetricKey": { "secretName": "kiosk-keys" } },
        });
        let first =
            enrollment(json!({ "name": "kiosk", "namespace": "shop", "uid": "u-1", "generation": 1 }), spec.clone());
        let again = enrollment(json!({ "name": "kiosk", "namespace": "shop", "uid": "u-2", "generation": 1 }), spec);
        assert_eq!(Cached::of(&first).view.id, id_digest("kiosk"), "no registrationId: the name");
        assert_ne!(reconcile_worthy(&first), reconcile_worthy(&again));
    }

    #[test]
    fn only_taking_the_operators_finalizer_off_a_live_resource_calls_for_a_reconcile() {
        let spec = json!({
            "provisioningServiceRef": { "name": "dps" },
            "attestation": { "symmetricKey": { "secretName": "kiosk-keys" } },
        });
        let with = |finalizers: &[&str], deleting: bool| {
            let mut metadata = json!({ "name": "kiosk", "namespace": "shop", "uid": "u-1", "finalizers": finalizers });
            if deleting {
                metadata["deletionTimestamp"] = json!("2026-11-29T00:00:00Z");
            }
            Cached::of(&enrollment(metadata, spec.clone()))
        };
        let (bare, held) = (with(&[], false), with(&[crate::controller::FINALIZER], false));
        assert!(!held.calls_for_reconcile(&bare), "the operator adding its finalizer costs no reconcile");
        assert!(bare.calls_for_reconcile(&held), "someone taking it off a live resource does");
        let (deleting_held, deleting_bare) =
            (with(&[crate::controller::FINALIZER, "other"], true), with(&["other"], true));
        assert!(!deleting_bare.calls_for_reconcile(&deleting_held), "the operator releasing it at deletion does not");
    }
}
