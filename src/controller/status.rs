//! The status writer: server-side apply of the whole status under one field manager, skipped when nothing
//! changed, bounded by a timeout.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::debug;

use crate::{Error, Result};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "dps-operator";
/// Longest a status write may take before the reconcile gives up and retries.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// The resourceVersion each object (by uid) had after this process last wrote its status or read it
/// fresh: a cached copy with another version may lack that write, so it must not be trusted. Both are
/// kept as 64-bit hashes, so 10,000 objects cost a few hundred KiB.
static SEEN: LazyLock<Mutex<HashMap<u64, u64>>> = LazyLock::new(Mutex::default);

fn hashed(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Whether a cached copy of `obj` is at least as new as what this process last wrote or read of it
/// (true when it never did either: the cache then holds all there is to know).
pub fn cache_is_current<K: Resource>(obj: &K) -> bool {
    let Some(uid) = obj.uid() else { return false };
    let seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    seen.get(&hashed(&uid)).is_none_or(|rv| obj.resource_version().is_some_and(|v| hashed(&v) == *rv))
}

/// Records the version of `obj` just written or read from the apiserver.
pub fn remember<K: Resource>(obj: &K) {
    if let (Some(uid), Some(rv)) = (obj.uid(), obj.resource_version()) {
        SEEN.lock().unwrap_or_else(|p| p.into_inner()).insert(hashed(&uid), hashed(&rv));
    }
}

/// Forgets an object (by uid) that is gone.
pub fn forget(uid: Option<&str>) {
    if let Some(uid) = uid {
        SEEN.lock().unwrap_or_else(|p| p.into_inner()).remove(&hashed(uid));
    }
}

/// Writes `desired` as the status of `obj` unless it equals `current`. Returns whether it wrote.
pub async fn write<K, S>(api: &Api<K>, obj: &K, current: Option<&S>, desired: &S) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(desired) {
        return Ok(false);
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let name = obj.name_any();
    match tokio::time::timeout(STATUS_TIMEOUT, api.patch_status(&name, &params, &Patch::Apply(&patch))).await {
        Ok(Ok(written)) => {
            remember(&written);
            debug!(object = %name, "status written");
            Ok(true)
        }
        // The object is gone (its finalizer released): nothing left to describe.
        Ok(Err(kube::Error::Api(e))) if e.code == 404 => Ok(false),
        Ok(Err(e)) => {
            debug!(object = %name, patch = %patch, "status write refused");
            Err(e.into())
        }
        Err(_) => Err(Error::StatusTimeout(STATUS_TIMEOUT)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn copy(uid: &str, rv: &str) -> ConfigMap {
        let metadata = ObjectMeta { uid: Some(uid.into()), resource_version: Some(rv.into()), ..ObjectMeta::default() };
        ConfigMap { metadata, ..ConfigMap::default() }
    }

    #[test]
    fn a_cached_copy_older_or_newer_than_the_version_last_written_is_not_trusted() {
        assert!(cache_is_current(&copy("uid-never-written", "5")), "nothing written: the cache is all we know");
        remember(&copy("uid-written", "7"));
        assert!(cache_is_current(&copy("uid-written", "7")));
        assert!(!cache_is_current(&copy("uid-written", "6")), "a copy from before our write");
        forget(Some("uid-written"));
        assert!(cache_is_current(&copy("uid-written", "6")));
    }
}
