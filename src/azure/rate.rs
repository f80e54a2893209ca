//! Per-host rate budgets: a token bucket refilled continuously to `per_minute` operations a minute.

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
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateBudget {
    /// A full bucket of `per_minute` (at least 1) operations.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        RateBudget { per_minute, state: Mutex::new(Bucket { tokens: f64::from(per_minute), last: Instant::now() }) }
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

    /// Waits until `cost` operations fit in the budget, then takes them.
    pub async fn acquire(&self, cost: u32) {
        let started = Instant::now();
        while let Err(wait) = self.try_acquire(cost) {
            tokio::time::sleep(wait.max(Duration::from_millis(5))).await;
        }
        if let Some(metrics) = crate::metrics::global() {
            metrics.rate_budget_waited(started.elapsed());
        }
    }
}

/// Budgets shared by every client of the same host (so two resources naming one DPS share its quota).
#[derive(Debug, Default)]
pub struct RateBudgets {
    by_host: Mutex<HashMap<String, Arc<RateBudget>>>,
}

impl RateBudgets {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The budget of `host` (case-insensitive), created with `per_minute` on first use; a later call with a
    /// different `per_minute` replaces it.
    pub fn for_host(&self, host: &str, per_minute: u32) -> Arc<RateBudget> {
        let mut map = self.by_host.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = map.entry(host.to_ascii_lowercase()).or_insert_with(|| Arc::new(RateBudget::new(per_minute)));
        if entry.per_minute() != per_minute.max(1) {
            *entry = Arc::new(RateBudget::new(per_minute));
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
