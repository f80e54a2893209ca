//! What re-runs a resource when another object changes: the Secrets and ConfigMaps it reads (one watch of
//! each for every controller), or a resource of another kind (from that kind's own watch).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use tracing::warn;

use super::cached::View;
use super::context::Context;
use super::{Reconciled, Scope};
use crate::api::{EnrollmentGroup, IndividualEnrollment, ProvisioningService};

/// Reconciles again, now, each cached `K` in `namespace` whose view `depends` says depends on an object that
/// changed (through its timers: due at once, and handed over with the rest a few dozen at a time).
pub fn wake_dependents<K: Reconciled>(ctx: &Context, namespace: Option<&str>, depends: impl Fn(&View) -> bool) {
    let Some(store) = K::cache(ctx).get() else { return };
    // Under the cache's read lock, copying only the matches: this runs for every watched change.
    for object in store.state_filter(|o| o.meta().namespace.as_deref() == namespace && depends(&o.view)) {
        K::timers(ctx).set(&object, Some(Duration::ZERO));
    }
}

/// Watches the Secrets and ConfigMaps in `scope` (names only) until `stop`, once for every controller:
/// each change reconciles again the resources that read the object.
pub async fn watch_inputs(ctx: Arc<Context>, scope: &Scope, stop: impl Future<Output = ()> + Send + 'static) {
    let secrets = names_of(scope.api::<PartialObjectMeta<Secret>>(&ctx.client)).map_ok(|secret| {
        let (namespace, name) = (secret.metadata.namespace.as_deref(), name_of(&secret.metadata));
        wake_dependents::<IndividualEnrollment>(&ctx, namespace, |v| v.secrets.contains(&name));
        wake_dependents::<EnrollmentGroup>(&ctx, namespace, |v| v.secrets.contains(&name));
        wake_dependents::<ProvisioningService>(&ctx, namespace, |v| v.secrets.contains(&name));
    });
    let config_maps = names_of(scope.api::<PartialObjectMeta<ConfigMap>>(&ctx.client)).map_ok(|map| {
        let (namespace, name) = (map.metadata.namespace.as_deref(), name_of(&map.metadata));
        wake_dependents::<IndividualEnrollment>(&ctx, namespace, |v| v.config_maps.contains(&name));
        wake_dependents::<EnrollmentGroup>(&ctx, namespace, |v| v.config_maps.contains(&name));
    });
    futures::stream::select(secrets, config_maps)
        .take_until(stop)
        .for_each(|result| async move {
            // The watch retries with backoff on its own; an error is only worth a line in the log.
            if let Err(e) = result {
                warn!(error = %e, "watch of Secrets or ConfigMaps failed; retrying");
            }
        })
        .await;
}

/// The digest of an object's name, as the views keep it.
fn name_of(meta: &ObjectMeta) -> u64 {
    super::cached::name_digest(meta.name.as_deref().unwrap_or_default())
}

/// The names of `K` objects as they change (metadata-only requests): enough to find who reads them, so
/// the operator never receives a Secret's data (or a large ConfigMap) through a watch. The objects a
/// reconcile needs it reads itself.
fn names_of<K>(
    api: kube::Api<PartialObjectMeta<K>>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watcher(api, super::lenient::watch_config()).default_backoff().touched_objects()
}

/// A channel whose one receiving end is taken by the controller that consumes it (the context that holds
/// the sending end lives as long as the process).
pub struct Handoff<T> {
    tx: mpsc::UnboundedSender<T>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<T>>>,
}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self { tx, rx: Mutex::new(Some(rx)) }
    }
}

impl<T> Handoff<T> {
    /// Sends `item` to the consumer.
    pub fn send(&self, item: T) {
        // Only fails once the consumer is gone (shutting down): nothing left to tell.
        let _ = self.tx.send(item);
    }

    /// The receiving end, for the one consumer per process (`None` if taken before).
    pub fn take(&self) -> Option<mpsc::UnboundedReceiver<T>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}
