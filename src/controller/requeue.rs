//! Timed reconciles (resyncs, polls of a step in progress, retries after errors), kept by the operator
//! instead of kube-runtime's scheduler.
//!
//! Every resource waits for one: a Ready one for its resync, a failing one for its retry. kube-runtime's
//! scheduler keeps each as two copies of a reconcile request (a reference with four string fields, and
//! a reason), about 500 bytes with their strings; here each is one `namespace/name` string and a map
//! entry, about 110 bytes, which at 40,000 resources is some 15 MiB of the operator's memory. (Not a
//! pointer to the cached object: the cache replaces it at the status write that usually comes before the
//! timer is set, and the timer would keep the old copy alive.) The controller is told to await a change,
//! and the due resource comes back through `reconcile_on`.
//!
//! As with kube-runtime, the last reconcile decides: its answer (or its error's backoff) replaces whatever
//! was pending for the resource, and a resource reconciled before its timer is due gets a new one. What is
//! already due stays, though: a wake (a Secret or ProvisioningService changed) that arrives while the
//! resource's reconcile runs must not be replaced by that reconcile's answer, which may predate the change.
//!
//! Due resources are handed over a few dozen at a time: at most [`WAITING`] may wait in the controller's
//! queue for a free reconcile slot. kube-runtime's scheduler takes every request it is offered at once,
//! and its tables keep the size they grew to: fed the first list of 10,000 resources in one go, they held
//! some 5 MiB per controller for good. The first list comes through here for that reason (due at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::time::{DelayQueue, delay_queue};

use super::Reconciled;
use super::cached::Cached;
use super::triggers::Handoff;

/// What a reconcile asks for next: another one after a delay, or none until something changes.
/// (kube-runtime's `Action` does not tell its delay, and the operator keeps its timers itself.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `duration` unless a change comes first.
    pub const fn requeue(duration: Duration) -> Self {
        Action { after: Some(duration) }
    }

    /// Reconcile again only when something the resource depends on changes.
    pub const fn await_change() -> Self {
        Action { after: None }
    }

    /// The delay asked for, if any.
    pub const fn after(&self) -> Option<Duration> {
        self.after
    }
}

/// A resource by `namespace/name` (a namespace holds no `/`), and when it is due.
type Request = (Box<str>, Option<Duration>);

/// Most due resources handed to the controller and not yet started.
pub const WAITING: usize = 64;

/// How long a handed-over resource may take to start before it no longer counts as waiting (the
/// controller drops a request for a resource deleted meanwhile, so it never starts).
const START_WITHIN: Duration = Duration::from_secs(30);

/// The pending timed reconciles of one controller's resources.
pub struct Timers<K> {
    requests: Handoff<Request>,
    gate: Arc<Gate>,
    kind: std::marker::PhantomData<fn() -> K>,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers { requests: Handoff::default(), gate: Arc::default(), kind: std::marker::PhantomData }
    }
}

/// The due resources handed to the controller that have not started yet.
#[derive(Default)]
struct Gate {
    waiting: Mutex<HashMap<u64, Instant>>,
    room: Notify,
}

impl Gate {
    /// Whether another resource may be handed over (forgetting those that did not start in time).
    fn has_room(&self, now: Instant) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.retain(|_, since| now.duration_since(*since) < START_WITHIN);
        waiting.len() < WAITING
    }

    fn handed_over(&self, identity: u64, now: Instant) {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(identity, now);
    }

    fn started(&self, identity: u64) {
        if self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&identity).is_some() {
            self.room.notify_one();
        }
    }
}

impl<K: Reconciled> Timers<K> {
    /// Reconcile `object` again after `after`, replacing what was pending for it; `None` clears it.
    pub fn set(&self, object: &Cached<K>, after: Option<Duration>) {
        self.requests.send((object.key(), after));
    }

    /// Called as a reconcile of `object` starts: it no longer waits in the controller's queue.
    pub fn started(&self, object: &Cached<K>) {
        self.gate.started(crate::key_digest::of(&object.key()));
    }

    /// The resources as they fall due, for the one controller that runs per process (empty if taken
    /// before).
    pub fn due(&self) -> impl Stream<Item = ObjectRef<Cached<K>>> + Send + 'static {
        let gate = Arc::clone(&self.gate);
        futures::stream::unfold(self.requests.take().map(|rx| Pending::<K>::new(rx, gate)), |pending| async move {
            let mut pending = pending?;
            let due = pending.next().await?;
            Some((due, Some(pending)))
        })
    }
}

/// The timers of one controller, in the task that polls its trigger streams.
struct Pending<K> {
    requests: mpsc::UnboundedReceiver<Request>,
    queue: DelayQueue<Box<str>>,
    keys: HashMap<u64, delay_queue::Key>,
    gate: Arc<Gate>,
    kind: std::marker::PhantomData<fn() -> K>,
}

impl<K: Reconciled> Pending<K> {
    fn new(requests: mpsc::UnboundedReceiver<Request>, gate: Arc<Gate>) -> Self {
        Pending { requests, queue: DelayQueue::new(), keys: HashMap::new(), gate, kind: std::marker::PhantomData }
    }

    /// The next resource due once the controller has room for it, taking requests meanwhile; `None` once
    /// no one can send any more.
    async fn next(&mut self) -> Option<ObjectRef<Cached<K>>> {
        loop {
            let room = self.gate.has_room(Instant::now());
            let Pending { requests, queue, gate, .. } = self;
            // Requests first: a reconcile's answer and a wake sent together are settled (`set`) before
            // either is handed over.
            tokio::select! {
                biased;
                request = requests.recv() => {
                    let (object, after) = request?;
                    self.set(object, after);
                }
                Some(expired) = futures::future::poll_fn(|cx| queue.poll_expired(cx)), if room => {
                    let object = expired.into_inner();
                    let identity = crate::key_digest::of(&object);
                    self.keys.remove(&identity);
                    self.gate.handed_over(identity, Instant::now());
                    let (namespace, name) = object.split_once('/').unwrap_or_default();
                    return Some(ObjectRef::new(name).within(namespace));
                }
                () = gate.room.notified(), if !room => {}
                () = tokio::time::sleep(START_WITHIN), if !room => {}
            }
        }
    }

    fn set(&mut self, object: Box<str>, after: Option<Duration>) {
        let identity = crate::key_digest::of(&object);
        if let Some(key) = self.keys.get(&identity) {
            // Already due (a wake, or a retry waiting for room): the answer of a reconcile that started
            // before it may not have seen what it is due for, so it stays, and its own reconcile answers.
            if self.queue.deadline(key) <= Instant::now() {
                return;
            }
        }
        if let Some(key) = self.keys.remove(&identity) {
            self.queue.remove(&key);
        }
        if let Some(after) = after {
            self.keys.insert(identity, self.queue.insert(object, after));
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::api::IndividualEnrollment;

    fn cached(name: &str) -> Cached<IndividualEnrollment> {
        let enrollment: IndividualEnrollment = serde_json::from_value(json!({
            "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "IndividualEnrollment",
            "metadata": { "name": name, "namespace": "shop" },
            "spec": { "provisioningServiceRef": { "name": "dps" }, "attestation": { "symmetricKey": { "secretName": "k" } } },
        }))
        .expect("an enrollment");
        Cached::of(&enrollment)
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_reconcile_decides_when_a_resource_is_due_and_a_cleared_one_never_is() {
        let timers = Timers::<IndividualEnrollment>::default();
        let mut due = std::pin::pin!(timers.due());
        let started = tokio::time::Instant::now();
        timers.set(&cached("a"), Some(Duration::from_secs(600)));
        timers.set(&cached("b"), Some(Duration::from_secs(30)));
        timers.set(&cached("c"), Some(Duration::from_secs(5)));
        // "a" reconciled again meanwhile and failed: its retry replaces its resync.
        timers.set(&cached("a"), Some(Duration::from_secs(10)));
        // "c" reconciled again and now awaits a change.
        timers.set(&cached("c"), None);
        let first = due.next().await.expect("a is due");
        assert_eq!((first.name.as_str(), started.elapsed().as_secs()), ("a", 10));
        let second = due.next().await.expect("b is due");
        assert_eq!((second.name.as_str(), started.elapsed().as_secs()), ("b", 30));
        let none = tokio::time::timeout(Duration::from_secs(3600), due.next()).await;
        assert!(none.is_err(), "nothing else is due, not even a's old resync: {none:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn due_resources_are_handed_over_only_while_few_wait_to_start() {
        let timers = Timers::<IndividualEnrollment>::default();
        let mut due = std::pin::pin!(timers.due());
        for i in 0..WAITING + 2 {
            timers.set(&cached(&format!("e{i}")), Some(Duration::ZERO));
        }
        let mut handed = Vec::new();
        for _ in 0..WAITING {
            handed.push(due.next().await.expect("due"));
        }
        let held = tokio::time::timeout(Duration::from_secs(1), due.next()).await;
        assert!(held.is_err(), "{WAITING} wait to start: no more is handed over");
        timers.started(&cached(&handed[0].name));
        let next = tokio::time::timeout(Duration::from_secs(1), due.next()).await;
        assert!(next.is_ok(), "one started: one more goes");
        let started = Instant::now();
        due.next().await.expect("the last one goes once the others count as lost");
        assert!(started.elapsed() >= START_WITHIN - Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_that_arrives_while_the_resource_reconciles_is_not_replaced_by_that_reconciles_answer() {
        let timers = Timers::<IndividualEnrollment>::default();
        let mut due = std::pin::pin!(timers.due());
        let started = tokio::time::Instant::now();
        timers.set(&cached("a"), Some(Duration::from_secs(600)));
        // A Secret appears while "a" reconciles; then that reconcile, which read no Secret, fails.
        timers.set(&cached("a"), Some(Duration::ZERO));
        timers.set(&cached("a"), Some(Duration::from_secs(77)));
        let first = due.next().await.expect("a is due");
        assert_eq!((first.name.as_str(), started.elapsed().as_secs()), ("a", 0), "the wake stands");
        let none = tokio::time::timeout(Duration::from_secs(3600), due.next()).await;
        assert!(none.is_err(), "the woken reconcile sets what comes next, not the failure before it: {none:?}");
    }
}
