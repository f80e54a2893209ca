//! The status writer: server-side apply of the whole status under one field manager, skipped when nothing
//! changed, bounded by a timeout.

use std::fmt::Debug;
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
        Ok(Ok(_)) => {
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
