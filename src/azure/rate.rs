//! Per-host rate budgets: a token bucket refilled continuously to `per_minute` operations a minute, with
//! a smaller bucket inside it that caps what resyncs may read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::time::Instant;

/// Azure's published DPS service-operation quota per DPS instance.
pub const DPS_SERVICE_PER_MINUTE: u32 = 1_000;
/// Azure's published identity-registry quota per S1/S2 hub unit.
pub const HUB_REGISTRY_PER_MINUTE: u32 = 100;
/// DPS device registrations per DPS instance.
pub const DPS_DEVICE_PER_MINUTE: u32 = 1_000;

/// A token bucket holding at most `per_minute` tokens; each operation (each item of a bulk call) takes one.
#[derive(Debug)]
pub struct RateBudget {
    per_minute: u32,
    state: Mutex<Bucket>,
    /// The resync share: reads made inside [`as_resync`] take a token here too, so routine comparisons
    /// of in-sync resources never crowd out changes and revocations.
    resync: Option<Box<RateBudget>>,
}

tokio::task_local! {
    static RESYNC: ();
}

/// Runs `work` as a resync of an in-sync resource: its reads also draw on the resync share of every
/// budget they use. Writes never do (a resync that finds drift puts it back at full speed).
pub async fn as_resync<F: std::future::Future>(work: F) -> F::Output {
    RESYNC.scope((), work).await
}

fn in_resync() -> bool {
    RESYNC.try_with(|_| ()).is_ok()
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateBudget {
    /// A full bucket of `per_minute` (at least 1) operations.
    pub fn new(per_minute: u32) -> Self {
        Self::with_capacity(per_minute, per_minute)
    }

    /// A budget of `per_minute` of which resync reads may use at most `resync_percent` (1-100). Their
    /// bucket holds ten seconds of that share, so a burst of resyncs cannot borrow a whole minute at once.
    pub fn with_resync_share(per_minute: u32, resync_percent: u8) -> Self {
        let mut budget = Self::new(per_minute);
        let percent = u64::from(resync_percent.clamp(1, 100));
        if percent < 100 {
            let share = u32::try_from(u64::from(budget.per_minute) * percent / 100).unwrap_or(u32::MAX).max(1);
            budget.resync = Some(Box::new(Self::with_capacity(share, (share / 6).max(1))));
        }
        budget
    }

    fn with_capacity(per_minute: u32, capacity: u32) -> Self {
        let per_minute = per_minute.max(1);
        RateBudget {
            per_minute,
            state: Mutex::new(Bucket { tokens: f64::from(capacity.clamp(1, per_minute)), last: Instant::now() }),
            resync: None,
        }
    }

    /// The operations per minute resync reads may use (all of them when no share is set).
    pub fn resync_per_minute(&self) -> u32 {
        self.resync.as_ref().map_or(self.per_minute, |r| r.per_minute)
    }

    /// The configured operations per minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Takes `cost` tokens now if available; otherwise returns how long to wait until they will be.
    /// A cost above the bucket size is charged as a full bucket.
    pub fn try_acquire(&self, cost: u32) -> Result<(), Duration> {
        self.try_acquire_at(cost, Instant::now())
    }

    /// [`RateBudget::try_acquire`] as seen at `now`.
    pub fn try_acquire_at(&self, cost: u32, now: Instant) -> Result<(), Duration> {
        let cost = f64::from(cost.clamp(1, self.per_minute));
        let rate_per_sec = f64::from(self.per_minute) / 60.0;
        let mut bucket = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate_per_sec).min(f64::from(self.per_minute));
        bucket.last = bucket.last.max(now);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - bucket.tokens) / rate_per_sec))
        }
    }

    /// Waits until `cost` operations fit in the budget, then takes them; a read inside [`as_resync`]
    /// first waits for the resync share.
    pub async fn acquire(&self, cost: u32, read: bool) {
        let started = Instant::now();
        if let Some(resync) = self.resync.as_deref().filter(|_| read && in_resync()) {
            resync.wait_for(cost).await;
        }
        self.wait_for(cost).await;
        if let Some(metrics) = crate::metrics::global() {
            metrics.rate_budget_waited(started.elapsed());
        }
    }

    async fn wait_for(&self, cost: u32) {
        while let Err(wait) = self.try_acquire(cost) {
            tokio::time::sleep(wait.max(Duration::from_millis(5))).await;
        }
    }
}

/// Budgets shared by every client of the same host (so two resources naming one DPS share its quota).
#[derive(Debug)]
pub struct RateBudgets {
    by_host: Mutex<HashMap<String, Arc<RateBudget>>>,
    resync_percent: u8,
}

impl Default for RateBudgets {
    fn default() -> Self {
        Self::with_resync_share(100)
    }
}

impl RateBudgets {
    /// An empty registry whose resyncs may use the whole of each budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry whose budgets let resync reads use at most `resync_percent` of each.
    pub fn with_resync_share(resync_percent: u8) -> Self {
        RateBudgets { by_host: Mutex::new(HashMap::new()), resync_percent }
    }

    /// The budget of `host` (case-insensitive), created with `per_minute` on first use; a later call with a
    /// different `per_minute` replaces it.
    pub fn for_host(&self, host: &str, per_minute: u32) -> Arc<RateBudget> {
        let mut map = self.by_host.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let make = || Arc::new(RateBudget::with_resync_share(per_minute, self.resync_percent));
        let entry = map.entry(host.to_ascii_lowercase()).or_insert_with(make);
        if entry.per_minute() != per_minute.max(1) {
            *entry = make();
        }
        Arc::clone(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_drains_then_refills() {
        let budget = RateBudget::new(60); // one a second
        let t0 = Instant::now();
        assert!(budget.try_acquire_at(50, t0).is_ok());
        assert!(budget.try_acquire_at(10, t0).is_ok());
        let wait = budget.try_acquire_at(2, t0).expect_err("empty");
        assert!(wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2), "{wait:?}");
        assert!(budget.try_acquire_at(2, t0 + Duration::from_secs(2)).is_ok());
        // Oversized costs are charged as a full bucket, so they eventually pass.
        assert!(budget.try_acquire_at(500, t0 + Duration::from_secs(70)).is_ok());
        assert!(budget.try_acquire_at(1, t0 + Duration::from_secs(70)).is_err());
    }

    #[tokio::test]
    async fn resync_reads_wait_for_their_share_while_other_calls_do_not() {
        // 600 a minute, 10 % for resyncs: 60 a minute, a bucket of 10.
        let budget = RateBudget::with_resync_share(600, 10);
        assert_eq!(budget.resync_per_minute(), 60);
        let share = budget.resync.as_deref().expect("a resync share");
        as_resync(async {
            for _ in 0..10 {
                budget.acquire(1, true).await;
            }
        })
        .await;
        assert!(share.try_acquire(1).is_err(), "ten resync reads used the share's bucket");
        // Writes inside a resync, and reads outside one, pass on the main budget alone.
        let quick = tokio::time::timeout(Duration::from_millis(200), async {
            as_resync(budget.acquire(1, false)).await;
            budget.acquire(1, true).await;
        });
        assert!(quick.await.is_ok(), "only resync reads wait for the share");
        let slow = tokio::time::timeout(Duration::from_millis(200), as_resync(budget.acquire(1, true)));
        assert!(slow.await.is_err(), "an eleventh resync read waits for the share to refill");
    }

    #[test]
    fn registry_shares_per_host() {
        let budgets = RateBudgets::new();
        let a = budgets.for_host("Dps.Example.net", 1000);
        let b = budgets.for_host("dps.example.net", 1000);
        assert!(Arc::ptr_eq(&a, &b));
        let c = budgets.for_host("dps.example.net", 10);
        assert_eq!(c.per_minute(), 10);
    }
}
