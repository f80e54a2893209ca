//! What re-runs a resource when another object changes: the mappers the controllers give to `watches`.

use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

/// The resources in `store`, in the namespace of the changed object `changed`, that `refers(resource,
/// changed_name)` says refer to it.
pub fn referring<K, O>(store: &Store<K>, changed: &O, refers: impl Fn(&K, &str) -> bool) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
    O: Resource,
{
    let namespace = changed.meta().namespace.clone();
    let name = changed.meta().name.clone().unwrap_or_default();
    store
        .state()
        .into_iter()
        .filter(|k| k.meta().namespace == namespace && refers(k, &name))
        .map(|k| ObjectRef::from_obj(k.as_ref()))
        .collect()
}

/// The names of `K` objects as they change (metadata-only requests): enough to find who reads them, so
/// the operator never receives a Secret's data (or a large ConfigMap) through a watch. The objects a
/// reconcile needs it reads itself.
pub fn names_of<K>(
    api: kube::Api<PartialObjectMeta<K>>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watcher(api, super::lenient::watch_config()).default_backoff().touched_objects()
}
