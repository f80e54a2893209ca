//! Who manages a DPS entry: a resource takes an entry it did not create only when asked to adopt it, the
//! newer of two resources naming one ID is refused, and an in-sync entry changed outside is drift.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use kube::Resource;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::cached::Cached;

use crate::api::individual_enrollment::EntryOwnership;
use crate::{Error, Result};

/// The annotation that lets a resource take over an entry that already exists in DPS.
pub const ADOPT_ANNOTATION: &str = "dps.iot-operator.dev/adopt";

/// Set on a resource about to create its DPS entry (the value is the entry's ID), in the same patch as
/// the operator's finalizer: the record that the entry is this resource's until the Ready status carries
/// it, so a crash right after the create still finds the entry ours and cleanup knows what to revoke.
pub const CREATED_ANNOTATION: &str = "dps.iot-operator.dev/created-id";

/// The binding to restore from [`CREATED_ANNOTATION`]: only while status binds no ID (once it does,
/// status is the record, including a create lost to someone else, which drops the ownership).
pub fn annotated_binding(
    recorded: Option<EntryOwnership>,
    bound: Option<&str>,
    annotations: &BTreeMap<String, String>,
) -> Option<(EntryOwnership, String)> {
    if recorded.is_some() || bound.is_some() {
        return None;
    }
    annotations.get(CREATED_ANNOTATION).filter(|id| !id.is_empty()).map(|id| (EntryOwnership::Created, id.clone()))
}

/// The ID of the entry a resource owns, from its status or, before status records it, its
/// [`CREATED_ANNOTATION`].
pub fn owned_id(
    recorded: Option<EntryOwnership>,
    bound: Option<&str>,
    annotations: &BTreeMap<String, String>,
) -> Option<String> {
    match (recorded, bound) {
        (Some(_), Some(id)) => Some(id.to_string()),
        _ => annotated_binding(recorded, bound, annotations).map(|(_, id)| id),
    }
}

/// Records `wanted` for the entry `id` before the first write outside, when it can go with the
/// finalizer: a resource without it that is about to create its entry gets both in one patch (returns
/// true). Otherwise the finalizer is made sure of and the caller records `wanted` in status.
pub async fn record_with_finalizer<K>(
    finalizer: &super::finalizer::Finalizer<K>,
    object: &K,
    wanted: EntryOwnership,
    id: &str,
) -> Result<bool>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if wanted == EntryOwnership::Created && !finalizer.is_present() {
        return finalizer.ensure(object, Some((CREATED_ANNOTATION, id))).await;
    }
    finalizer.ensure(object, None).await?;
    Ok(false)
}

/// What a resource may record about the entry named `id` (`noun`: "an entry", "a group"): `None` when
/// status already binds it, else the ownership to record before the first write. An entry that exists
/// and was not created by this resource is refused with `Conflict` unless the resource is annotated to
/// adopt it, so two owners never fight over one entry.
pub fn claim(
    recorded: Option<EntryOwnership>,
    bound: bool,
    exists: bool,
    annotations: &BTreeMap<String, String>,
    noun: &str,
    id: &str,
) -> Result<Option<EntryOwnership>> {
    // A bound ID without ownership means a create lost a race to someone else (status dropped the
    // ownership then): the entry is still not ours.
    Ok(Some(match (recorded, exists) {
        (Some(_), _) if bound => return Ok(None),
        (Some(known), _) => known,
        (None, false) => EntryOwnership::Created,
        (None, true) if annotations.get(ADOPT_ANNOTATION).is_some_and(|v| v == "true") => EntryOwnership::Adopted,
        (None, true) => {
            return Err(Error::invalid(
                "Conflict",
                format!(
                    "DPS already holds {noun} {id:?} that this resource did not create; annotate the resource with {ADOPT_ANNOTATION}: \"true\" to manage it, or choose another ID"
                ),
            ));
        }
    }))
}

/// The name of another resource in the controller's cache that claimed the same ID on the same
/// ProvisioningService first (older, or as old and earlier by name).
///
/// The cache is enough, and spares a list of every resource per reconcile: it applies watch events in
/// resourceVersion order, so once it is ready and holds `object` it holds every older resource too.
pub async fn older_claimant<K: super::Reconciled>(
    cache: &OnceLock<Store<Cached<K>>>,
    object: &K,
) -> Result<Option<String>> {
    let store = super::context::filled_cache(cache)
        .await
        .ok_or_else(|| Error::waiting("CacheNotReady", "waiting for the controller's cache to fill"))?;
    let mine = Cached::of(object);
    let meta = mine.meta();
    let rank = (meta.creation_timestamp.as_ref(), meta.name.as_deref());
    // One pass under the cache's read lock, without copying: this runs once per reconcile over every
    // resource of the kind. The same name in the same namespace is this resource (a copy of it, or of
    // the one it replaced).
    let older = store.find(|other| {
        let other_meta = other.meta();
        other_meta.namespace == meta.namespace
            && other_meta.name != meta.name
            && other.view.service == mine.view.service
            && other.view.id == mine.view.id
            && (other_meta.creation_timestamp.as_ref(), other_meta.name.as_deref()) < rank
    });
    Ok(older.map(|other| other.name_any()))
}

/// Whether a difference found now is drift: the resource was settled (Ready at its generation, so the
/// spec has not changed since the entry was last in sync), yet DPS holds another version than the one it
/// recorded writing or reading.
pub fn drifted<K: super::Reconciled>(object: &K, recorded_etag: Option<&str>, held_etag: Option<&str>) -> bool {
    super::settled(object) && recorded_etag.is_some() && recorded_etag != held_etag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adopt() -> BTreeMap<String, String> {
        BTreeMap::from([(ADOPT_ANNOTATION.to_string(), "true".to_string())])
    }

    #[test]
    fn an_existing_entry_is_refused_unless_the_resource_asks_to_adopt_it() {
        let none = BTreeMap::new();
        let refused = claim(None, false, true, &none, "an entry", "kiosk").expect_err("refused");
        assert_eq!(refused.reason(), "Conflict");
        assert_eq!(claim(None, false, true, &adopt(), "an entry", "kiosk").ok(), Some(Some(EntryOwnership::Adopted)));
        assert_eq!(claim(None, false, false, &none, "an entry", "kiosk").ok(), Some(Some(EntryOwnership::Created)));
    }

    #[test]
    fn the_created_annotation_binds_only_until_status_records_a_binding() {
        let annotated = BTreeMap::from([(CREATED_ANNOTATION.to_string(), "kiosk".to_string())]);
        assert_eq!(annotated_binding(None, None, &annotated), Some((EntryOwnership::Created, "kiosk".to_string())));
        assert_eq!(owned_id(None, None, &annotated).as_deref(), Some("kiosk"));
        // A create lost to someone else: status binds the ID without ownership, and that wins.
        assert_eq!(annotated_binding(None, Some("kiosk"), &annotated), None);
        assert_eq!(owned_id(None, Some("kiosk"), &annotated), None);
        assert_eq!(owned_id(Some(EntryOwnership::Adopted), Some("kiosk"), &BTreeMap::new()).as_deref(), Some("kiosk"));
        assert_eq!(owned_id(None, None, &BTreeMap::new()), None);
    }

    #[test]
    fn a_bound_resource_keeps_what_it_recorded() {
        let none = BTreeMap::new();
        assert_eq!(claim(Some(EntryOwnership::Adopted), true, true, &none, "an entry", "kiosk").ok(), Some(None));
        assert_eq!(
            claim(Some(EntryOwnership::Created), false, true, &none, "an entry", "kiosk").ok(),
            Some(Some(EntryOwnership::Created))
        );
    }
}
