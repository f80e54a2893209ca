//! Prometheus metrics of the operator, named like controller-runtime's so its dashboards work.
//!
//! One process-wide registry, installed by `dps-operator run` only: the Azure clients are shared with the
//! engine and the CLI, which never install it, so every hook is a no-op there. Labels are bounded: a
//! controller name, a fixed result or reason, an operation template and a status code; never an object
//! name, a registration ID or an error message.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// Installs the process-wide metrics (once; later calls return the same).
pub fn install() -> &'static Metrics {
    GLOBAL.get_or_init(Metrics::new)
}

/// The process-wide metrics, when installed.
pub fn global() -> Option<&'static Metrics> {
    GLOBAL.get()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// controller-runtime's reconcile-time buckets (pkg/internal/controller/metrics/metrics.go), so quantiles on
/// existing dashboards compare like with like.
const RECONCILE_BUCKETS: [f64; 40] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5,
    1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0,
];

fn reconcile_histogram() -> Histogram {
    Histogram::new(RECONCILE_BUCKETS)
}

/// 5 ms doubling to about 80 s: one HTTP call, or one wait for the rate budget.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The registry and every metric family.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_time: Histograms<ControllerLabels>,
    backend_calls: Family<CallLabels, Counter>,
    backend_time: Histograms<OperationLabels>,
    rate_wait: Histogram,
    deletions: Family<ControllerLabels, Gauge>,
    /// Objects being cleaned up (digests of their keys), by controller; only their count leaves the process.
    deleting: Mutex<HashMap<&'static str, HashSet<u64>>>,
    stalled: Family<KindLabels, Gauge>,
    lists: Family<KindLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry (tests; the operator uses [`install`]).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        // Counters get `_total` appended when encoded.
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller and reason",
            reconcile_errors.clone(),
        );
        let reconcile_time: Histograms<ControllerLabels> = Family::new_with_constructor(reconcile_histogram);
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            reconcile_time.clone(),
        );
        let backend_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "dps_operator_backend_requests",
            "HTTP requests to DPS and IoT Hub by operation and status code (\"error\" when no answer came)",
            backend_calls.clone(),
        );
        let backend_time: Histograms<OperationLabels> = Family::new_with_constructor(seconds_histogram);
        registry.register(
            "dps_operator_backend_request_duration_seconds",
            "Length of one HTTP request to DPS or IoT Hub by operation",
            backend_time.clone(),
        );
        let rate_wait = seconds_histogram();
        registry.register(
            "dps_operator_rate_budget_wait_seconds",
            "Time spent waiting for the operations-per-minute budget before a request",
            rate_wait.clone(),
        );
        let deletions = Family::<ControllerLabels, Gauge>::default();
        registry.register(
            "dps_operator_deletions_in_progress",
            "Resources with a deletionTimestamp whose cleanup has not finished, per controller",
            deletions.clone(),
        );
        let stalled = Family::<KindLabels, Gauge>::default();
        registry.register(
            "dps_operator_resources_stalled",
            "Resources whose status has Stalled=True (a person must change something), per kind",
            stalled.clone(),
        );
        let lists = Family::<KindLabels, Counter>::default();
        registry.register(
            "dps_operator_watch_lists",
            "Full lists of a kind by the operator's watches: one at start, then one each time a watch fell too far behind",
            lists.clone(),
        );
        Metrics {
            lists,
            registry,
            reconciles,
            reconcile_errors,
            reconcile_time,
            backend_calls,
            backend_time,
            rate_wait,
            deletions,
            deleting: Mutex::new(HashMap::new()),
            stalled,
        }
    }

    /// Records a reconcile that started on `key`; `deleting` when the object has a deletionTimestamp.
    pub fn reconcile_started(&self, controller: &'static str, key: &str, deleting: bool) {
        if deleting {
            self.track_deletion(controller, key, true);
        }
    }

    /// Records a finished reconcile: `Err(reason)` with the error's fixed reason.
    pub fn reconcile_finished(
        &self,
        controller: &'static str,
        key: &str,
        deleting: bool,
        elapsed: Duration,
        outcome: Result<(), &'static str>,
    ) {
        let result = if outcome.is_ok() { "success" } else { "error" };
        self.reconciles.get_or_create(&ReconcileLabels { controller, result }).inc();
        if let Err(reason) = outcome {
            self.reconcile_errors.get_or_create(&ErrorLabels { controller, reason }).inc();
        }
        self.reconcile_time.get_or_create(&ControllerLabels { controller }).observe(elapsed.as_secs_f64());
        // A successful cleanup released the finalizer; a failed one is still in progress.
        if deleting && outcome.is_ok() {
            self.track_deletion(controller, key, false);
        }
    }

    fn track_deletion(&self, controller: &'static str, key: &str, in_progress: bool) {
        let mut deleting = self.deleting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let keys = deleting.entry(controller).or_default();
        let key = crate::key_digest::of(key);
        if in_progress {
            keys.insert(key);
        } else {
            keys.remove(&key);
        }
        let count = i64::try_from(keys.len()).unwrap_or(i64::MAX);
        self.deletions.get_or_create(&ControllerLabels { controller }).set(count);
    }

    /// Records that a watched object of `kind` (lower case) was Stalled (`was`) and now is (`is`), as its
    /// status says (a deleted one is not).
    pub fn resource_stalled_changed(&self, kind: &str, was: bool, is: bool) {
        let gauge = self.stalled.get_or_create(&KindLabels { kind: kind.to_owned() });
        match (was, is) {
            (false, true) => {
                gauge.inc();
            }
            (true, false) => {
                gauge.dec();
            }
            _ => {}
        }
    }

    /// Sets the number of Stalled objects of `kind`, counted once a watch's list is complete.
    pub fn resources_stalled(&self, kind: &str, count: usize) {
        self.stalled.get_or_create(&KindLabels { kind: kind.to_owned() }).set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts a full list of `kind` by a watch (at start, and each time one fell too far behind).
    pub fn resources_relisted(&self, kind: &str) {
        self.lists.get_or_create(&KindLabels { kind: kind.to_owned() }).inc();
    }

    /// Records one HTTP request to a backend: `operation` is a template (see
    /// [`crate::azure::operation::operation_name`]), `status` the answer's code or `None` when none came.
    pub fn backend_call(&self, operation: String, status: Option<u16>, elapsed: Duration) {
        let status = status.map_or_else(|| "error".to_owned(), |code| code.to_string());
        self.backend_time
            .get_or_create(&OperationLabels { operation: operation.clone() })
            .observe(elapsed.as_secs_f64());
        self.backend_calls.get_or_create(&CallLabels { operation, status }).inc();
    }

    /// Records how long a request waited for the rate budget (zero when it did not).
    pub fn rate_budget_waited(&self, waited: Duration) {
        self.rate_wait.observe(waited.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_controller_result_and_reason() {
        let metrics = Metrics::new();
        let second = Duration::from_secs(1);
        metrics.reconcile_finished("individualenrollment", "IndividualEnrollment/ns/a", false, second, Ok(()));
        metrics.reconcile_finished(
            "individualenrollment",
            "IndividualEnrollment/ns/a",
            false,
            second,
            Err("Throttled"),
        );
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"controller_runtime_reconcile_total{controller="individualenrollment",result="success"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"controller_runtime_reconcile_total{controller="individualenrollment",result="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"controller_runtime_reconcile_errors_total{controller="individualenrollment",reason="Throttled"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"controller_runtime_reconcile_time_seconds_count{controller="individualenrollment"} 2"#),
            "{text}"
        );
        assert!(!text.contains("ns/a"), "{text}");
    }

    #[test]
    fn deletions_in_progress_count_objects_until_their_cleanup_succeeds() {
        let metrics = Metrics::new();
        let gauge = |m: &Metrics| {
            let text = m.encode();
            text.lines()
                .find(|l| l.starts_with(r#"dps_operator_deletions_in_progress{controller="devicedeprovision"}"#))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<i64>().ok())
        };
        let tick = Duration::from_millis(3);
        metrics.reconcile_started("devicedeprovision", "a", true);
        metrics.reconcile_started("devicedeprovision", "b", true);
        metrics.reconcile_finished("devicedeprovision", "a", true, tick, Err("BackendUnavailable"));
        assert_eq!(gauge(&metrics), Some(2));
        metrics.reconcile_started("devicedeprovision", "a", true);
        metrics.reconcile_finished("devicedeprovision", "a", true, tick, Ok(()));
        assert_eq!(gauge(&metrics), Some(1));
    }

    #[test]
    fn stalled_resources_are_counted_per_kind_as_their_status_changes_and_afresh_after_a_list() {
        let metrics = Metrics::new();
        let series = r#"dps_operator_resources_stalled{kind="enrollmentgroup"} "#;
        let gauge = |m: &Metrics| m.encode().lines().find_map(|l| l.strip_prefix(series)?.parse::<i64>().ok());
        metrics.resource_stalled_changed("enrollmentgroup", false, true);
        metrics.resource_stalled_changed("enrollmentgroup", true, true);
        metrics.resource_stalled_changed("enrollmentgroup", false, true);
        assert_eq!(gauge(&metrics), Some(2));
        metrics.resource_stalled_changed("enrollmentgroup", true, false);
        assert_eq!(gauge(&metrics), Some(1));
        metrics.resource_stalled_changed("enrollmentgroup", false, false);
        assert_eq!(gauge(&metrics), Some(1));
        metrics.resources_relisted("enrollmentgroup");
        metrics.resources_stalled("enrollmentgroup", 0);
        assert_eq!(gauge(&metrics), Some(0));
        assert!(metrics.encode().contains(r#"dps_operator_watch_lists_total{kind="enrollmentgroup"} 1"#));
    }

    #[test]
    fn backend_calls_without_an_answer_are_labelled_error() {
        let metrics = Metrics::new();
        metrics.backend_call("GET /enrollments/{id}".into(), Some(404), Duration::from_millis(2));
        metrics.backend_call("GET /enrollments/{id}".into(), None, Duration::from_millis(2));
        let text = metrics.encode();
        assert!(
            text.contains(r#"dps_operator_backend_requests_total{operation="GET /enrollments/{id}",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dps_operator_backend_requests_total{operation="GET /enrollments/{id}",status="error"} 1"#),
            "{text}"
        );
    }
}
