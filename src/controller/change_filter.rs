//! Fills a controller's store from its watch, as kube's `reflector` does, and passes on only the objects
//! whose reconcile-worthy parts changed, as kube's `predicate_filter` does. The comparison is with the copy
//! the store held before the event, so the filter keeps no memory of its own: `predicate_filter` keeps an
//! entry per object next to the store (a map of digests and times, 2 MB at 10,000 objects of each kind).

use futures::{Stream, TryStreamExt, future};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{Lookup, Store};
use kube::runtime::watcher;

/// The events of `stream`, each applied to `writer` (whose reader is `store`) first; an applied object goes
/// on only when `changed` says it differs from the copy `store` held before in what calls for a reconcile
/// (or when the store held none).
/// Deletions and the list markers always go on. `applied` sees each event once the store holds it, with
/// the copy the store held of its object before (none for the list markers).
///
/// During a relist the store keeps the copies from before it until the list is complete, so a listed
/// object is compared with the last one seen before the watch broke off.
pub fn reflect_changes<K, S>(
    mut writer: Writer<K>,
    store: Store<K>,
    stream: S,
    changed: impl Fn(&K, &K) -> bool + Send + 'static,
    mut applied: impl FnMut(Option<&K>, &watcher::Event<K>) + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Lookup<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    stream
        .map_ok(move |event| {
            let (before, worthy) = match &event {
                watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                    let before = store.get(&obj.to_object_ref(()));
                    let worthy = before.as_ref().is_none_or(|before| changed(before, obj));
                    (before, worthy)
                }
                watcher::Event::Delete(obj) => (store.get(&obj.to_object_ref(())), true),
                watcher::Event::Init | watcher::Event::InitDone => (None, true),
            };
            writer.apply_watcher_event(&event);
            applied(before.as_deref(), &event);
            worthy.then_some(event)
        })
        .try_filter_map(|event| future::ready(Ok(event)))
}

#[cfg(test)]
mod tests {
    use futures::{StreamExt, stream};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector;

    use super::*;

    fn object(name: &str, uid: &str, worthy: &str) -> ConfigMap {
        let metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(uid.into()),
            labels: Some([("worthy".to_string(), worthy.to_string())].into()),
            ..ObjectMeta::default()
        };
        ConfigMap { metadata, ..ConfigMap::default() }
    }

    /// Whether the tests count the change as worthy: the UID or the `worthy` label changed.
    fn differ(before: &ConfigMap, now: &ConfigMap) -> bool {
        worthy(before) != worthy(now)
    }

    /// The digest of what the tests count as worthy: the UID and the `worthy` label.
    fn worthy(obj: &ConfigMap) -> u64 {
        let uid = obj.metadata.uid.as_deref().unwrap_or_default();
        crate::key_digest::of(&format!("{uid}/{}", obj.metadata.labels.as_ref().map_or("", |l| &l["worthy"])))
    }

    /// The names (with the label) of the events passed on, and what the store holds of `name` at the end.
    async fn passed(events: Vec<watcher::Event<ConfigMap>>) -> (Vec<String>, Store<ConfigMap>) {
        let (store, writer) = reflector::store();
        let out = reflect_changes(writer, store.clone(), stream::iter(events.into_iter().map(Ok)), differ, |_, _| {});
        let names = out
            .map(|event| match event.expect("no error") {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    format!(
                        "{}={}",
                        o.metadata.name.unwrap_or_default(),
                        o.metadata.labels.unwrap_or_default()["worthy"]
                    )
                }
                watcher::Event::Delete(o) => format!("-{}", o.metadata.name.unwrap_or_default()),
                watcher::Event::Init => "init".into(),
                watcher::Event::InitDone => "done".into(),
            })
            .collect()
            .await;
        (names, store)
    }

    #[tokio::test]
    async fn an_object_goes_on_when_its_worthy_parts_change_and_not_when_they_stay() {
        use watcher::Event::*;
        let (names, store) = passed(vec![
            Init,
            InitApply(object("a", "1", "x")),
            InitDone,
            Apply(object("a", "1", "x")),
            Apply(object("b", "2", "x")),
            Apply(object("a", "1", "y")),
            Apply(object("a", "1", "y")),
        ])
        .await;
        assert_eq!(names, ["init", "a=x", "done", "b=x", "a=y"]);
        let a = store.get(&reflector::ObjectRef::new("a").within("ns")).expect("stored");
        assert_eq!(a.metadata.labels.as_ref().map(|l| l["worthy"].as_str()), Some("y"), "every change is stored");
    }

    #[tokio::test]
    async fn an_object_recreated_under_the_same_name_goes_on() {
        use watcher::Event::*;
        let (names, _) = passed(vec![
            Apply(object("a", "1", "x")),
            Delete(object("a", "1", "x")),
            Apply(object("a", "2", "x")),
            Apply(object("a", "3", "x")),
        ])
        .await;
        assert_eq!(names, ["a=x", "-a", "a=x", "a=x"], "a new UID is a new object, deleted or not in between");
    }

    #[tokio::test]
    async fn a_relisted_object_is_compared_with_the_copy_from_before_the_relist() {
        use watcher::Event::*;
        let (names, _) = passed(vec![
            Apply(object("a", "1", "x")),
            Apply(object("b", "2", "x")),
            Init,
            InitApply(object("a", "1", "x")),
            InitApply(object("b", "2", "y")),
            InitDone,
        ])
        .await;
        assert_eq!(names, ["a=x", "b=x", "init", "b=y", "done"]);
    }

    #[tokio::test]
    async fn each_event_is_seen_once_the_store_holds_it_with_the_copy_held_before() {
        use std::sync::{Arc, Mutex};
        use watcher::Event::*;
        let (store, writer) = reflector::store();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (reader, log) = (store.clone(), Arc::clone(&seen));
        let label = |o: Option<&ConfigMap>| {
            o.map_or("none".to_string(), |o| o.metadata.labels.as_ref().map_or("", |l| &l["worthy"]).to_string())
        };
        let events = vec![Apply(object("a", "1", "x")), Apply(object("a", "1", "y")), Delete(object("a", "1", "y"))];
        let out =
            reflect_changes(writer, store, stream::iter(events.into_iter().map(Ok)), differ, move |before, event| {
                let (Apply(o) | Delete(o)) = event else { return };
                let held = reader.get(&reflector::ObjectRef::from_obj(o));
                log.lock().expect("not poisoned").push(format!("{}->{}", label(before), label(held.as_deref())));
            });
        out.for_each(|_| async {}).await;
        assert_eq!(*seen.lock().expect("not poisoned"), ["none->x", "x->y", "y->none"]);
    }
}
