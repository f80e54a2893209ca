//! What every reconcile shares: the kube client, the event publisher, backend clients per
//! ProvisioningService with their rate budgets, and per-object failure counts for backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kube::Client;
use kube::runtime::reflector::Store;

use super::backend::BackendCache;
use super::cached::Cached;
use super::events::EventPublisher;
use super::requeue::Timers;
use crate::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};

/// Shared state of the controllers.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The one event publisher (its memory of recent events, for series, lives here).
    pub events: EventPublisher,
    /// Backend clients per ProvisioningService, rebuilt when its spec or Secrets change.
    pub backends: BackendCache,
    /// Consecutive failures per object (by the digest of `kind/namespace/name`), for exponential backoff.
    failures: Mutex<HashMap<u64, u32>>,
    /// How often an in-sync resource is compared with DPS again (drift is reverted then).
    resync: Duration,
    /// Most reconciles each controller runs at once (0: unbounded).
    concurrency: u16,
    /// The IndividualEnrollment controller's cache, once it runs (lookups across enrollments without a
    /// list of the apiserver per reconcile; `cached.rs` says what it keeps).
    pub enrollments: OnceLock<Store<Cached<IndividualEnrollment>>>,
    /// The EnrollmentGroup controller's cache, once it runs.
    pub groups: OnceLock<Store<Cached<EnrollmentGroup>>>,
    /// The ProvisioningService controller's cache, once it runs.
    pub services: OnceLock<Store<Cached<ProvisioningService>>>,
    /// The DeviceDeprovision controller's cache, once it runs.
    pub deprovisions: OnceLock<Store<Cached<DeviceDeprovision>>>,
    /// The pending timed reconciles of each kind (`requeue.rs`).
    pub timers: KindTimers,
}

/// The pending timed reconciles of each kind.
#[derive(Default)]
pub struct KindTimers {
    /// IndividualEnrollments.
    pub enrollments: Timers<IndividualEnrollment>,
    /// EnrollmentGroups.
    pub groups: Timers<EnrollmentGroup>,
    /// ProvisioningServices.
    pub services: Timers<ProvisioningService>,
    /// DeviceDeprovisions.
    pub deprovisions: Timers<DeviceDeprovision>,
}

/// The default resync period.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(600);

/// The share of each rate budget resync reads may use unless `--resync-budget-percent` says otherwise.
pub const DEFAULT_RESYNC_BUDGET_PERCENT: u8 = 50;

/// Reconciles each controller runs at once unless `--concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// Shortest wait after a failed reconcile.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest wait after repeated failures.
const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// How the controllers run, from the `run` flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This replica's name in events (the pod name, when known).
    pub instance: Option<String>,
    /// How often an in-sync resource is compared with DPS again (jittered).
    pub resync: Duration,
    /// The share (percent) of each backend's rate budget that resync reads may use.
    pub resync_budget_percent: u8,
    /// Most reconciles each controller runs at once (0: unbounded).
    pub concurrency: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            instance: None,
            resync: DEFAULT_RESYNC,
            resync_budget_percent: DEFAULT_RESYNC_BUDGET_PERCENT,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl Context {
    /// A context reporting events as `dps-operator` from `settings.instance`, each controller running at
    /// most `settings.concurrency` reconciles at once so a burst of objects cannot exhaust the backends'
    /// rate budgets or the operator's memory.
    pub fn new(client: Client, settings: Settings) -> Arc<Self> {
        Arc::new(Context {
            events: EventPublisher::new(client.clone(), "dps-operator", settings.instance),
            backends: BackendCache::with_resync_share(settings.resync_budget_percent),
            client,
            failures: Mutex::new(HashMap::new()),
            resync: settings.resync,
            concurrency: settings.concurrency,
            enrollments: OnceLock::new(),
            groups: OnceLock::new(),
            services: OnceLock::new(),
            deprovisions: OnceLock::new(),
            timers: KindTimers::default(),
        })
    }

    /// The next resync delay: the period with ±10 % jitter, so resources created together do not all
    /// spend the rate budget in the same second.
    pub fn next_resync(&self) -> Duration {
        self.resync.mul_f64(0.9 + fastrand::f64() * 0.2)
    }

    /// The configuration every controller runs with.
    pub fn controller_config(&self) -> kube::runtime::controller::Config {
        controller_config(self.concurrency)
    }

    /// Records one more failure of `key` and returns how long to wait: `base * 2^n` capped, with up to
    /// 25% jitter so a burst of failures does not retry in lockstep.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let n = {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let n = failures.entry(crate::key_digest::of(key)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let exp = BACKOFF_BASE.saturating_mul(1u32 << n.saturating_sub(1).min(16));
        let delay = exp.min(BACKOFF_CAP);
        delay + delay.mul_f64(fastrand::f64() * 0.25)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&crate::key_digest::of(key));
    }
}

/// Longest a reconcile waits for another controller's cache to fill before it asks the apiserver.
const CACHE_WAIT: Duration = Duration::from_secs(10);

/// The cache in `cell` once it has been filled, or `None` if its controller is not running or it is not
/// filled within a few seconds (the caller then asks the apiserver: a slow watch must not stall work).
pub async fn filled_cache<K>(cell: &OnceLock<Store<K>>) -> Option<&Store<K>>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let store = cell.get()?;
    match tokio::time::timeout(CACHE_WAIT, store.wait_until_ready()).await {
        Ok(Ok(())) => Some(store),
        _ => {
            tracing::warn!(kind = std::any::type_name::<K>(), "a controller cache is not filled; asking the apiserver");
            None
        }
    }
}

/// A controller configuration running at most `concurrency` reconciles at once (0: unbounded).
pub fn controller_config(concurrency: u16) -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(concurrency)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Arc<Context> {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("URL"));
        Context::new(Client::try_from(config).expect("client without a server"), Settings::default())
    }

    #[tokio::test]
    async fn failures_are_counted_per_object_and_a_success_forgets_only_that_objects() {
        let ctx = context();
        let (a, b) = ("IndividualEnrollment/ns/a", "IndividualEnrollment/ns/b");
        // Jitter adds at most 25 %, so the n-th failure waits within [base * 2^(n-1), 1.25 * that].
        let within = |wait: Duration, failures: u32| {
            let exp = BACKOFF_BASE * (1 << (failures - 1));
            wait >= exp && wait <= exp.mul_f64(1.25)
        };
        assert!(within(ctx.next_backoff(a), 1));
        assert!(within(ctx.next_backoff(a), 2));
        assert!(within(ctx.next_backoff(a), 3));
        assert!(within(ctx.next_backoff(b), 1), "another object's failures are its own");
        ctx.reset_backoff(a);
        assert!(within(ctx.next_backoff(a), 1), "a success starts the count again");
        assert!(within(ctx.next_backoff(b), 2), "and leaves other objects' counts alone");
        assert_eq!(ctx.failures.lock().expect("not poisoned").len(), 2);
        ctx.reset_backoff(a);
        ctx.reset_backoff(b);
        assert!(ctx.failures.lock().expect("not poisoned").is_empty(), "forgotten objects leave no entry");
    }
}
