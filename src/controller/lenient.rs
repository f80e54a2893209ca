//! Watches that survive a malformed object: objects are watched untyped and converted one by one, so an
//! object the Rust types cannot read (left by an older CRD version, or edited around the schema) is
//! reported on itself and in the log instead of stopping the watch for every other object.

use futures::{Stream, TryStreamExt};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;

use std::sync::Arc;
use std::time::Duration;

use super::Scope;
use super::cached::Cached;
use super::context::Context;
use super::events::EventType;

/// A store of the cached form of `K` and the stream of applied objects that feeds it, for
/// `Controller::for_stream`.
pub fn typed_watch<K>(
    client: &Client,
    scope: &Scope,
    ctx: Arc<Context>,
) -> (Store<Cached<K>>, impl Stream<Item = Result<Cached<K>, watcher::Error>> + Send + 'static)
where
    K: super::Reconciled,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match &scope.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let (reader, writer) = reflector::store();
    let timers = Arc::clone(&ctx);
    let reported = Arc::clone(&ctx);
    let typed = watcher(api, watch_config())
        .default_backoff()
        .map_ok(move |event| convert::<K>(event, &reported))
        .try_filter_map(|event| async move { Ok(event) });
    // The store sees every change; reconciles are started only by changes that call for one.
    // The first list goes to the operator's own timers, due at once: they hand it to the controller a few
    // dozen at a time (`requeue.rs`), where kube-runtime's scheduler would take all of it at once and keep
    // the memory it grew to.
    let first_listed = move |listed: Arc<Cached<K>>| K::timers(&timers).set(&listed, Some(Duration::ZERO));
    let counted = reader.clone();
    let mut dependents = super::triggers::DependentWakes::<K>::default();
    let changed = super::change_filter::reflect_changes(
        writer,
        reader.clone(),
        typed,
        |before: &Cached<K>, now: &Cached<K>| now.calls_for_reconcile(before),
        move |before, event| {
            count_stalled::<K>(&counted, before, event);
            dependents.applied(&ctx, &counted, before, event);
        },
    );
    (reader.clone(), stored_objects(changed, reader, first_listed))
}

/// The objects of a reflector's events, each passed on only once `store` holds it: the controller drops a
/// request for an object its store lacks, and the objects of a relist reach the store only when the list is
/// complete (kube-runtime swaps its buffer in at `InitDone`). A watch that fell too far behind relists; the
/// objects created meanwhile would then never be reconciled, and those changed meanwhile (a deletion) would
/// be reconciled from the copy before the change, so a relist's objects are passed on after `InitDone`,
/// read back from the store (only their references are kept until then). The objects of the first list
/// go to `first_listed` instead, as the store holds them, once it is filled.
fn stored_objects<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    store: Store<K>,
    mut first_listed: impl FnMut(Arc<K>) + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    use futures::StreamExt;
    events
        .scan((Vec::new(), false), move |(listed, filled), event| {
            let passed: Box<dyn Iterator<Item = Result<K, watcher::Error>> + Send> = match event {
                Ok(watcher::Event::Apply(obj)) => Box::new(std::iter::once(Ok(obj))),
                Ok(watcher::Event::InitApply(_)) if !*filled => Box::new(std::iter::empty()),
                Ok(watcher::Event::InitApply(obj)) => {
                    listed.push(ObjectRef::from_obj(&obj));
                    Box::new(std::iter::empty())
                }
                Ok(watcher::Event::Init) => {
                    listed.clear();
                    Box::new(std::iter::empty())
                }
                Ok(watcher::Event::InitDone) if !*filled => {
                    *filled = true;
                    store.state().into_iter().for_each(&mut first_listed);
                    Box::new(std::iter::empty())
                }
                Ok(watcher::Event::InitDone) => {
                    let store = store.clone();
                    let refs = std::mem::take(listed);
                    Box::new(refs.into_iter().filter_map(move |r| store.get(&r).map(|obj| Ok(K::clone(&obj)))))
                }
                Ok(watcher::Event::Delete(_)) => Box::new(std::iter::empty()),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            futures::future::ready(Some(futures::stream::iter(passed)))
        })
        .flatten()
}

/// Objects per page of a watch's initial list (kube's default is 500). Every page is read whole, as
/// untyped JSON, before its objects are converted; smaller pages keep that peak (and the connection
/// buffers and freed-but-kept heap it leaves behind) small, for a few more requests at start.
const LIST_PAGE_SIZE: u32 = 100;

/// The watch settings of the operator's own watches.
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE_SIZE)
}

/// Keeps the Stalled gauge in step with the watched objects' status, so alerts see what users see: from
/// each change against the cached copy it replaces, and counted afresh from the cache once a list is
/// complete (objects deleted while a watch was disconnected no longer count).
fn count_stalled<K: super::Reconciled>(
    store: &Store<Cached<K>>,
    before: Option<&Cached<K>>,
    event: &watcher::Event<Cached<K>>,
) {
    let Some(metrics) = crate::metrics::global() else { return };
    let kind = K::kind(&()).to_ascii_lowercase();
    let was = before.is_some_and(|b| b.view.stalled);
    match event {
        watcher::Event::Init => metrics.resources_relisted(&kind),
        watcher::Event::InitApply(_) => {}
        watcher::Event::InitDone => metrics.resources_stalled(&kind, store.state_filter(|c| c.view.stalled).len()),
        watcher::Event::Apply(obj) => metrics.resource_stalled_changed(&kind, was, obj.view.stalled),
        watcher::Event::Delete(_) => metrics.resource_stalled_changed(&kind, was, false),
    }
}

/// The event with its object in cached form, or `None` when the object does not read as `K` (reported,
/// then skipped).
fn convert<K>(event: watcher::Event<DynamicObject>, ctx: &Arc<Context>) -> Option<watcher::Event<Cached<K>>>
where
    K: super::Reconciled,
{
    let typed = |obj: DynamicObject| -> Option<K> { read::<K>(&obj).map_err(|e| report::<K>(ctx, obj, e)).ok() };
    let cached = |obj: DynamicObject| typed(obj).map(|object| Cached::of(&object));
    Some(match event {
        watcher::Event::Apply(obj) => watcher::Event::Apply(cached(obj)?),
        watcher::Event::InitApply(obj) => watcher::Event::InitApply(cached(obj)?),
        watcher::Event::Delete(obj) => watcher::Event::Delete(cached(obj)?),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    })
}

/// Reads a watched object as `K`.
pub fn read<K: DeserializeOwned>(obj: &DynamicObject) -> Result<K, serde_json::Error> {
    serde_json::to_value(obj).and_then(serde_json::from_value)
}

fn report<K: Resource<DynamicType = ()>>(ctx: &Arc<Context>, obj: DynamicObject, err: serde_json::Error) {
    let kind = K::kind(&());
    warn!(kind = %kind, namespace = obj.namespace().unwrap_or_default(), name = %obj.name_any(), error = %err, "skipping an object that does not match the schema");
    let mut reference = obj.object_ref(&ApiResource::erase::<K>(&()));
    reference.kind = Some(kind.to_string());
    let ctx = ctx.clone();
    let note = format!("the operator cannot read this {kind}: {err}; fix or recreate it");
    tokio::spawn(async move {
        if let Err(e) = ctx.events.publish(EventType::Warning, "MalformedObject", "Read", note, &reference).await {
            warn!(error = %e, "could not publish an event");
        }
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::IndividualEnrollment;
    use crate::controller::cached::reconcile_worthy;

    fn object(spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "IndividualEnrollment",
            "metadata": { "name": "e", "namespace": "n" }, "spec": spec,
        }))
        .expect("dynamic object")
    }

    #[test]
    fn the_operators_own_finalizer_and_created_record_start_no_reconcile_but_a_persons_changes_do() {
        let spec = json!({
            "provisioningServiceRef": { "name": "p" },
            "attestation": { "tpm": { "endorsementKey": "A".repeat(64) } },
        });
        let fresh: IndividualEnrollment = read(&object(spec)).expect("typed");
        let mut claimed = fresh.clone();
        claimed.metadata.finalizers = Some(vec![crate::controller::FINALIZER.to_string()]);
        claimed.metadata.annotations =
            Some([(crate::controller::ownership::CREATED_ANNOTATION.to_string(), "e".to_string())].into());
        assert_eq!(reconcile_worthy(&fresh), reconcile_worthy(&claimed));
        let mut adopted = claimed.clone();
        adopted.annotations_mut().insert(crate::controller::ownership::ADOPT_ANNOTATION.into(), "true".into());
        assert_ne!(reconcile_worthy(&claimed), reconcile_worthy(&adopted));
        let mut other = claimed.clone();
        other.finalizers_mut().push("example.com/other".into());
        assert_ne!(reconcile_worthy(&claimed), reconcile_worthy(&other));
        let mut deleting = claimed.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_ne!(reconcile_worthy(&claimed), reconcile_worthy(&deleting));
    }

    fn config_map(name: &str, version: &str) -> k8s_openapi::api::core::v1::ConfigMap {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": name, "namespace": "n", "resourceVersion": version },
        }))
        .expect("ConfigMap")
    }

    #[tokio::test]
    async fn after_a_relist_each_object_reaches_the_controller_only_once_the_store_holds_that_version() {
        use futures::StreamExt;
        let events = vec![
            watcher::Event::Init,
            watcher::Event::InitApply(config_map("a", "1")),
            watcher::Event::InitDone,
            // The watch fell behind: a relist finds "b" created and "a" changed meanwhile.
            watcher::Event::Init,
            watcher::Event::InitApply(config_map("b", "2")),
            watcher::Event::InitApply(config_map("a", "3")),
            watcher::Event::InitDone,
            watcher::Event::Apply(config_map("b", "4")),
        ];
        let (reader, writer) = reflector::store();
        let reflected = reflector::reflector(writer, futures::stream::iter(events.into_iter().map(Ok)));
        let first = Arc::new(std::sync::Mutex::new(Vec::new()));
        let listed = Arc::clone(&first);
        let first_listed = move |obj: Arc<k8s_openapi::api::core::v1::ConfigMap>| {
            listed.lock().expect("not poisoned").push(obj.name_any());
        };
        let mut passed = std::pin::pin!(stored_objects(reflected, reader.clone(), first_listed));
        let mut seen = Vec::new();
        while let Some(obj) = passed.next().await {
            let obj = obj.expect("no error");
            let version = format!("{}@{}", obj.name_any(), obj.resource_version().unwrap_or_default());
            let stored = reader.get(&ObjectRef::from_obj(&obj)).expect("the store holds what the controller gets");
            assert_eq!(stored.resource_version(), obj.resource_version(), "the store holds {version}");
            seen.push(version);
        }
        // The first list goes to the timers (the controller waits for its store to be filled once).
        assert_eq!(*first.lock().expect("not poisoned"), ["a"]);
        assert_eq!(seen, ["b@2", "a@3", "b@4"]);
    }

    #[tokio::test]
    async fn a_malformed_object_is_skipped_and_a_good_one_passes() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("URL"));
        let client = Client::try_from(config).expect("client without a server");
        let ctx = Context::new(client, super::super::context::Settings::default());
        let good = object(json!({
            "provisioningServiceRef": { "name": "p" },
            "attestation": { "tpm": { "endorsementKey": "A".repeat(64) } },
        }));
        let bad = object(json!({ "provisioningServiceRef": { "name": "p" } }));
        let kept = convert::<IndividualEnrollment>(watcher::Event::Apply(good), &ctx);
        assert!(matches!(kept, Some(watcher::Event::Apply(e)) if e.name_any() == "e"));
        assert!(convert::<IndividualEnrollment>(watcher::Event::InitApply(bad.clone()), &ctx).is_none());
        assert!(convert::<IndividualEnrollment>(watcher::Event::Delete(bad), &ctx).is_none());
        assert!(matches!(
            convert::<IndividualEnrollment>(watcher::Event::InitDone, &ctx),
            Some(watcher::Event::InitDone)
        ));
    }
}
