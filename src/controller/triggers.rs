//! What re-runs a resource when another object changes: the mappers the controllers give to `watches`.

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};

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
