//! Passes on only the objects whose reconcile-worthy parts changed since they were last passed on, as
//! kube's `predicate_filter` does, remembering each object by 64-bit digests instead of a copy of its
//! name, namespace and UID: with tens of thousands of watched objects those copies cost more memory than
//! the rest of the filter.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::time::{Duration, Instant};

use futures::{Stream, TryStreamExt, future};
use kube::Resource;
use kube::runtime::watcher;

/// How long an object's last passed-on state is remembered, as kube's default: an object seen again after
/// that is passed on whatever it holds, so nothing is filtered on a memory older than this.
const MEMORY: Duration = Duration::from_secs(3600);

/// What the filter remembers of one object: the digest of its worthy parts when last passed on, and when.
struct Seen {
    worthy: u64,
    at: Instant,
}

/// The events of `stream` whose applied object's `worthy` digest differs from the one last passed on for
/// the same object (same namespace, name and UID), or that was not passed on within the last hour; events
/// without an object pass. `None` from `worthy` passes the object on unconditionally.
pub fn changed<K, S>(
    stream: S,
    worthy: impl Fn(&K) -> Option<u64> + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Send,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut filter = Filter::default();
    stream.try_filter(move |event| {
        future::ready(match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                filter.passes(obj, worthy(obj), Instant::now())
            }
            watcher::Event::Delete(_) | watcher::Event::Init | watcher::Event::InitDone => true,
        })
    })
}

#[derive(Default)]
struct Filter {
    seen: HashMap<u64, Seen>,
    last_swept: Option<Instant>,
}

impl Filter {
    /// Whether `obj`, whose worthy parts digest to `worthy`, goes on at `now`; remembers it if so.
    fn passes<K: Resource>(&mut self, obj: &K, worthy: Option<u64>, now: Instant) -> bool {
        let Some(worthy) = worthy else { return true };
        // Entries of deleted objects are dropped once they are older than the memory; sweeping now and
        // then, not on every object, keeps that cheap (freshness is checked per entry below anyway).
        if self.last_swept.is_none_or(|swept| now.duration_since(swept) >= MEMORY) {
            self.seen.retain(|_, seen| now.duration_since(seen.at) < MEMORY);
            self.last_swept = Some(now);
        }
        let meta = obj.meta();
        let identity =
            BuildHasherDefault::<DefaultHasher>::default().hash_one((&meta.namespace, &meta.name, &meta.uid));
        match self.seen.entry(identity) {
            Entry::Occupied(mut entry) => {
                let changed = entry.get().worthy != worthy || now.duration_since(entry.get().at) >= MEMORY;
                entry.insert(Seen { worthy, at: now });
                changed
            }
            Entry::Vacant(entry) => {
                entry.insert(Seen { worthy, at: now });
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn object(name: &str, uid: &str) -> ConfigMap {
        let metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(uid.into()),
            ..ObjectMeta::default()
        };
        ConfigMap { metadata, ..ConfigMap::default() }
    }

    #[test]
    fn an_object_goes_on_when_its_worthy_parts_change_and_not_when_they_stay() {
        let mut filter = Filter::default();
        let now = Instant::now();
        let a = object("a", "1");
        assert!(filter.passes(&a, Some(7), now), "first sight");
        assert!(!filter.passes(&a, Some(7), now), "nothing worthy changed");
        assert!(filter.passes(&object("b", "2"), Some(7), now), "another object is remembered on its own");
        assert!(filter.passes(&a, Some(8), now), "a worthy change");
        assert!(!filter.passes(&a, Some(8), now));
        assert!(filter.passes(&a, None, now), "no digest: always on");
    }

    #[test]
    fn an_object_recreated_under_the_same_name_goes_on() {
        let mut filter = Filter::default();
        let now = Instant::now();
        assert!(filter.passes(&object("a", "1"), Some(7), now));
        assert!(filter.passes(&object("a", "2"), Some(7), now), "a new UID is a new object");
    }

    #[test]
    fn an_object_not_passed_on_within_the_memory_goes_on_and_old_entries_are_dropped() {
        let mut filter = Filter::default();
        let start = Instant::now();
        let a = object("a", "1");
        assert!(filter.passes(&a, Some(7), start));
        assert!(filter.passes(&object("gone", "2"), Some(7), start));
        let later = start + MEMORY + Duration::from_secs(1);
        assert!(filter.passes(&a, Some(7), later), "the memory of it expired");
        assert_eq!(filter.seen.len(), 1, "the deleted object's entry is swept");
    }
}
