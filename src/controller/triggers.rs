//! What re-runs a resource when another object changes: the mappers the controllers give to `watches`.

use std::sync::Mutex;

use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;

/// The resources in `store`, in the namespace of the changed object `changed`, that `refers(resource,
/// digest of changed's name)` says refer to it (the caches keep names as digests: `cached::View`).
pub fn referring<K, O>(store: &Store<K>, changed: &O, refers: impl Fn(&K, u64) -> bool) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
    O: Resource,
{
    let namespace = changed.meta().namespace.clone();
    let name = super::cached::name_digest(changed.meta().name.as_deref().unwrap_or_default());
    store
        .state()
        .into_iter()
        .filter(|k| k.meta().namespace == namespace && refers(k, name))
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

/// Resources to reconcile again, sent by another controller's watch to the one controller that reconciles
/// them (`Controller::reconcile_on`): a dependency seen changing once, by its own controller's watch, instead
/// of a second watch of every object of that kind.
pub struct Wakes<K: Resource>(Handoff<ObjectRef<K>>);

impl<K: Resource> Default for Wakes<K> {
    fn default() -> Self {
        Self(Handoff::default())
    }
}

impl<K: Resource + 'static> Wakes<K> {
    /// Asks for `object` to be reconciled again.
    pub fn wake(&self, object: ObjectRef<K>) {
        self.0.send(object);
    }

    /// The wake-ups, for the one controller that runs per process (empty if taken before).
    pub fn take(&self) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static
    where
        K::DynamicType: Send,
    {
        futures::stream::unfold(self.0.take(), |rx| async move {
            let mut rx = rx?;
            let next = rx.recv().await?;
            Some((next, Some(rx)))
        })
    }
}
