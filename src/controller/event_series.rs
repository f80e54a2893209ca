//! Which events were published lately, so a repeat becomes a count on the first event (an events.k8s.io
//! series) instead of a new object. Unlike kube-runtime's recorder, which keeps a full copy of every
//! event for six minutes and scans them all on each publish, this keeps a few bytes per event, purges at
//! most once a minute, and holds a bounded number: with 10,000 stalled objects each warning once, the
//! recorder's copies were the largest part of the operator's memory.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

/// A repeat within this long of the last occurrence joins its series (kube-runtime and client-go use the
/// same window).
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Most series remembered; past this, a repeat starts a new event instead of counting (still correct,
/// only less folded), so memory stays bounded however many objects misbehave at once.
pub const MAX_SERIES: usize = 4096;

/// How often expired series are dropped (not on every publish: that made publishing O(n)).
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// What makes two events the same occurrence: who reports, about which object, of what type and reason.
/// The note is not part of it, as with kube-runtime, so a reason whose note varies (a page number, an
/// error message) still folds into one series; the series shows the latest note.
#[derive(Hash)]
pub struct SeriesKey<'a> {
    /// `Normal` or `Warning`.
    pub type_: &'a str,
    /// The event's reason.
    pub reason: &'a str,
    /// The event's action.
    pub action: &'a str,
    /// The object's UID (or its name when it has none).
    pub regarding: &'a str,
}

impl SeriesKey<'_> {
    fn digest(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

/// The first event of a series: where it is, how many times it occurred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// Namespace of the Event object.
    pub namespace: String,
    /// Name of the Event object.
    pub name: String,
    /// Occurrences so far, the first included.
    pub count: i32,
    last: Instant,
}

/// The series published within [`SERIES_WINDOW`], bounded by [`MAX_SERIES`].
#[derive(Debug)]
pub struct RecentSeries {
    by_key: HashMap<u64, Series>,
    last_purge: Instant,
}

impl Default for RecentSeries {
    fn default() -> Self {
        RecentSeries { by_key: HashMap::new(), last_purge: Instant::now() }
    }
}

impl RecentSeries {
    /// Counts one more occurrence of `key` at `now` and returns its series, or None when the event is new
    /// (or its series expired): then the caller creates an Event and [`RecentSeries::started`] records it.
    pub fn repeat(&mut self, key: &SeriesKey, now: Instant) -> Option<Series> {
        self.purge(now);
        let series = self.by_key.get_mut(&key.digest())?;
        if now.duration_since(series.last) > SERIES_WINDOW {
            return None;
        }
        series.count += 1;
        series.last = now;
        Some(series.clone())
    }

    /// Records the Event just created for `key`; forgotten when the table is full.
    pub fn started(&mut self, key: &SeriesKey, namespace: String, name: String, now: Instant) {
        if self.by_key.len() >= MAX_SERIES {
            self.purge_expired(now);
            if self.by_key.len() >= MAX_SERIES {
                return;
            }
        }
        self.by_key.insert(key.digest(), Series { namespace, name, count: 1, last: now });
    }

    /// Forgets `key` (its Event was deleted, e.g. by the apiserver's TTL).
    pub fn forget(&mut self, key: &SeriesKey) {
        self.by_key.remove(&key.digest());
    }

    /// How many series are remembered.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn purge(&mut self, now: Instant) {
        if now.duration_since(self.last_purge) >= PURGE_EVERY {
            self.purge_expired(now);
        }
    }

    fn purge_expired(&mut self, now: Instant) {
        self.by_key.retain(|_, series| now.duration_since(series.last) <= SERIES_WINDOW);
        self.last_purge = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> SeriesKey<'_> {
        SeriesKey { type_: "Warning", reason, action: reason, regarding: "uid-1" }
    }

    #[test]
    fn a_repeat_within_the_window_counts_on_the_first_event() {
        let mut recent = RecentSeries::default();
        let start = Instant::now();
        assert_eq!(recent.repeat(&key("Stalled"), start), None);
        recent.started(&key("Stalled"), "ns".into(), "e.1".into(), start);
        let series = recent.repeat(&key("Stalled"), start + Duration::from_secs(10)).expect("a series");
        assert_eq!((series.name.as_str(), series.count), ("e.1", 2));
        assert_eq!(recent.repeat(&key("Stalled"), start + Duration::from_secs(20)).map(|s| s.count), Some(3));
        assert_eq!(recent.repeat(&key("Other"), start), None, "another reason is another event");
    }

    #[test]
    fn a_repeat_after_the_window_starts_a_new_event_and_expired_series_are_dropped() {
        let mut recent = RecentSeries::default();
        let start = Instant::now();
        recent.started(&key("Stalled"), "ns".into(), "e.1".into(), start);
        let later = start + SERIES_WINDOW + Duration::from_secs(1);
        assert_eq!(recent.repeat(&key("Stalled"), later), None);
        assert!(recent.is_empty(), "the purge ran: more than a minute had passed");
    }

    #[test]
    fn the_table_never_holds_more_than_its_bound() {
        let mut recent = RecentSeries::default();
        let now = Instant::now();
        let reasons: Vec<String> = (0..MAX_SERIES + 10).map(|i| format!("R{i}")).collect();
        for reason in &reasons {
            recent.started(&key(reason), "ns".into(), reason.clone(), now);
        }
        assert_eq!(recent.len(), MAX_SERIES);
        let last = reasons.last().expect("reasons");
        assert_eq!(recent.repeat(&key(last), now), None, "past the bound a repeat is a new event");
    }
}
