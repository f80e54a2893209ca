//! What re-runs a resource when another object changes: the Secrets and ConfigMaps it reads (one watch of
//! each for every controller), or a resource of another kind (from that kind's own watch).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event, watcher};
use tokio::sync::mpsc;
use tracing::warn;

use super::cached::{Cached, View, name_digest_of};
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

/// Calls [`Reconciled::watched`] for each change of a `K` once its controller's cache holds it, so the
/// resources it wakes read the new copy. A list's objects reach the cache only when the list is complete:
/// at the end of a relist, the objects it found changed are passed on, and those it no longer found as
/// deleted (the watch missed their deletion). The first list's are not: every resource is reconciled
/// after it anyway.
pub struct DependentWakes<K: Reconciled> {
    /// During a relist, the objects cached before it that the list has not shown yet, by key digest.
    unseen: HashMap<u64, Arc<Cached<K>>>,
    /// During a relist, the objects it found changed.
    changed: Vec<ObjectRef<Cached<K>>>,
    filled: bool,
}

impl<K: Reconciled> Default for DependentWakes<K> {
    fn default() -> Self {
        DependentWakes { unseen: HashMap::new(), changed: Vec::new(), filled: false }
    }
}

impl<K: Reconciled> DependentWakes<K> {
    /// Called with each event once `store` holds it, and the copy the store held before.
    pub fn applied(
        &mut self,
        ctx: &Context,
        store: &Store<Cached<K>>,
        before: Option<&Cached<K>>,
        event: &Event<Cached<K>>,
    ) {
        match event {
            Event::Apply(obj) => K::watched(obj, ctx, false),
            Event::Delete(obj) => K::watched(obj, ctx, true),
            // Until the relist is complete the store holds the copies from before it.
            Event::Init if self.filled => {
                self.unseen = store.state().into_iter().map(|o| (crate::key_digest::of(&o.key()), o)).collect();
                self.changed.clear();
            }
            Event::Init => {}
            Event::InitApply(obj) if self.filled => {
                self.unseen.remove(&crate::key_digest::of(&obj.key()));
                if before.is_none_or(|b| b.changes != obj.changes || b.view != obj.view) {
                    self.changed.push(ObjectRef::from_obj(obj));
                }
            }
            Event::InitApply(_) => {}
            Event::InitDone => {
                self.filled = true;
                for gone in std::mem::take(&mut self.unseen).into_values() {
                    K::watched(&gone, ctx, true);
                }
                for object in std::mem::take(&mut self.changed).iter().filter_map(|r| store.get(r)) {
                    K::watched(&object, ctx, false);
                }
            }
        }
    }
}

/// Watches the Secrets and ConfigMaps in `scope` (names only) until `stop`, once for every controller:
/// each change reconciles again the resources that read the object.
pub async fn watch_inputs(ctx: Arc<Context>, scope: &Scope, stop: impl Future<Output = ()> + Send + 'static) {
    let secrets = names_of(scope.api::<PartialObjectMeta<Secret>>(&ctx.client)).map_ok(|secret| {
        let (namespace, name) = (secret.metadata.namespace.as_deref(), name_digest_of(&secret.metadata));
        wake_dependents::<IndividualEnrollment>(&ctx, namespace, |v| v.secrets.contains(&name));
        wake_dependents::<EnrollmentGroup>(&ctx, namespace, |v| v.secrets.contains(&name));
        wake_dependents::<ProvisioningService>(&ctx, namespace, |v| v.secrets.contains(&name));
    });
    let config_maps = names_of(scope.api::<PartialObjectMeta<ConfigMap>>(&ctx.client)).map_ok(|map| {
        let (namespace, name) = (map.metadata.namespace.as_deref(), name_digest_of(&map.metadata));
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

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use kube::runtime::reflector;
    use serde_json::json;

    use super::*;
    use crate::controller::context::Settings;

    fn context() -> Arc<Context> {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("URL"));
        Context::new(kube::Client::try_from(config).expect("client without a server"), Settings::default())
    }

    fn service(ready: &str) -> Cached<ProvisioningService> {
        let service: ProvisioningService = serde_json::from_value(json!({
            "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "ProvisioningService",
            "metadata": { "name": "dps", "namespace": "shop", "uid": "u1" },
            "spec": { "idScope": "0ne00000001", "connectionStringSecretRef": { "name": "s", "key": "k" }, "hubs": [] },
            "status": { "conditions": [{ "type": "Ready", "status": ready, "reason": "R", "message": "",
                                         "lastTransitionTime": "2026-11-29T00:00:00Z" }] },
        }))
        .expect("a service");
        Cached::of(&service)
    }

    fn enrollment() -> Cached<IndividualEnrollment> {
        let enrollment: IndividualEnrollment = serde_json::from_value(json!({
            "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "IndividualEnrollment",
            "metadata": { "name": "kiosk-7", "namespace": "shop" },
            "spec": { "provisioningServiceRef": { "name": "dps" }, "attestation": { "symmetricKey": { "secretName": "k" } } },
        }))
        .expect("an enrollment");
        Cached::of(&enrollment)
    }

    /// Applies `event` to the services' cache, then tells `wakes`, as the controller's watch does.
    fn apply(
        ctx: &Context,
        writer: &mut reflector::store::Writer<Cached<ProvisioningService>>,
        wakes: &mut DependentWakes<ProvisioningService>,
        event: Event<Cached<ProvisioningService>>,
    ) {
        let store = ctx.services.get().expect("cache set");
        let before = match &event {
            Event::Apply(o) | Event::InitApply(o) | Event::Delete(o) => store.get(&ObjectRef::from_obj(o)),
            Event::Init | Event::InitDone => None,
        };
        writer.apply_watcher_event(&event);
        wakes.applied(ctx, store, before.as_deref(), &event);
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_change_wakes_its_dependents_and_a_relist_only_for_services_changed_or_deleted_meanwhile() {
        let ctx = context();
        let (enrollments, mut enrollment_writer) = reflector::store();
        enrollment_writer.apply_watcher_event(&Event::Apply(enrollment()));
        let _ = ctx.enrollments.set(enrollments);
        let (services, mut writer) = reflector::store();
        let _ = ctx.services.set(services);
        let mut wakes = DependentWakes::default();
        let mut due = std::pin::pin!(IndividualEnrollment::timers(&ctx).due());
        let woken = async |due: &mut std::pin::Pin<&mut _>| {
            tokio::time::timeout(Duration::from_secs(60), StreamExt::next(due)).await.ok().flatten()
        };

        for event in [Event::Init, Event::InitApply(service("False")), Event::InitDone] {
            apply(&ctx, &mut writer, &mut wakes, event);
        }
        assert!(woken(&mut due).await.is_none(), "the first list wakes no one: every resource is reconciled after it");

        apply(&ctx, &mut writer, &mut wakes, Event::Apply(service("True")));
        let first = woken(&mut due).await.map(|r: ObjectRef<Cached<IndividualEnrollment>>| r.name);
        assert_eq!(first.as_deref(), Some("kiosk-7"), "the service becoming Ready wakes the enrollment naming it");

        for event in [Event::Init, Event::InitApply(service("True")), Event::InitDone] {
            apply(&ctx, &mut writer, &mut wakes, event);
        }
        assert!(woken(&mut due).await.is_none(), "a relist that finds the service unchanged wakes no one");

        apply(&ctx, &mut writer, &mut wakes, Event::Init);
        apply(&ctx, &mut writer, &mut wakes, Event::InitApply(service("False")));
        assert!(woken(&mut due).await.is_none(), "not before the relist is complete and cached");
        apply(&ctx, &mut writer, &mut wakes, Event::InitDone);
        assert_eq!(
            woken(&mut due).await.map(|r| r.name).as_deref(),
            Some("kiosk-7"),
            "a relist that finds it changed does"
        );

        for event in [Event::Init, Event::InitDone] {
            apply(&ctx, &mut writer, &mut wakes, event);
        }
        let gone = woken(&mut due).await.map(|r| r.name);
        assert_eq!(
            gone.as_deref(),
            Some("kiosk-7"),
            "so does one that no longer finds it: a deletion the watch missed"
        );
    }
}
