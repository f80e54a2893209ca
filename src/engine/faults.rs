//! Fault injection, for testing clients against a service that fails: per API, a share of requests is
//! answered with an Azure-shaped error (500, 503, or 429 with `Retry-After`), delayed, or left without any
//! answer (the connection is closed), either before the request is applied or after it (the write happened,
//! the answer is lost). Off unless configured: at start (`--fault`, `--fault-seed`) or at run time through
//! the engine-only `PUT /engine/faults` on the DPS endpoint.
//!
//! The API, for tests in this repository and outside it:
//! - [`FaultPlan`] (rules plus a seed) is what `--fault` builds and `PUT /engine/faults` takes as JSON;
//! - [`Faults`] holds the plan and counts what was injected ([`FaultCounts`], `GET /engine/faults`); an
//!   in-process engine hands it out with [`super::RunningEngine::faults`];
//! - [`inject`] is the middleware; [`DropConnection`] marks a response the server must not send.
//!
//! Decisions are deterministic for a seed: the `n`-th request a rule applies to (counted from the last plan
//! change, over all APIs) draws the same number every run, so a run is replayed by sending the same requests in the
//! same order. Engine-only paths (`/engine/...`) are never faulted, so faults can always be switched off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult, ErrorKind, Flavor};
use super::{Shared, auth};

/// The API a fault rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Api {
    /// The DPS service API (enrollments, groups, registration states).
    #[serde(rename = "dps-service")]
    DpsService,
    /// The DPS device registration API (`/{idScope}/registrations/...`).
    #[serde(rename = "device-registration")]
    DeviceRegistration,
    /// Every hub's identity registry API.
    #[serde(rename = "hub-registry")]
    HubRegistry,
    /// All three.
    #[default]
    #[serde(rename = "*")]
    Any,
}

impl Api {
    /// The API a request to the DPS endpoint belongs to; `None` for engine-only paths, which are never
    /// faulted. Device registration paths are `/{idScope}/registrations/...`; the service API's
    /// registration states are `/registrations/...`.
    pub fn of_dps_path(path: &str) -> Option<Api> {
        let mut segments = path.trim_start_matches('/').split('/');
        match (segments.next(), segments.next()) {
            (Some("engine"), _) => None,
            (Some(scope), Some("registrations")) if scope != "registrations" => Some(Api::DeviceRegistration),
            _ => Some(Api::DpsService),
        }
    }

    fn covers(self, api: Api) -> bool {
        self == Api::Any || self == api
    }
}

fn default_status() -> u16 {
    503
}

/// One rule: what happens to requests of `api`. Of the outcomes error, drop before apply and drop after
/// apply, at most one happens to a request (one draw decides), so their rates add up to at most 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    /// The API (default `*`, all).
    #[serde(default)]
    pub api: Api,
    /// Share of requests answered with `status` before they are applied.
    #[serde(default)]
    pub error_rate: f64,
    /// The injected error status: 500, 503 (default) or 429.
    #[serde(default = "default_status")]
    pub status: u16,
    /// `Retry-After` on injected errors, in seconds (a 429 without it says 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// Delay added before every request of `api` is handled (or faulted), in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of requests whose connection is closed without an answer, before they are applied.
    #[serde(default)]
    pub drop_rate: f64,
    /// Share of requests that are applied, then their connection closed without an answer.
    #[serde(default)]
    pub drop_after_apply_rate: f64,
}

impl FaultRule {
    /// Checks the rates and the status.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [("errorRate", self.error_rate), ("dropRate", self.drop_rate)];
        for (name, rate) in rates.into_iter().chain([("dropAfterApplyRate", self.drop_after_apply_rate)]) {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be within 0 and 1, got {rate}"));
            }
        }
        if self.error_rate + self.drop_rate + self.drop_after_apply_rate > 1.0 + 1e-9 {
            return Err("errorRate + dropRate + dropAfterApplyRate must not exceed 1".into());
        }
        if ![429, 500, 503].contains(&self.status) {
            return Err(format!("status must be 429, 500 or 503, got {}", self.status));
        }
        Ok(())
    }

    /// Parses the `--fault` form: `KEY=VALUE` pairs separated by commas, keys named as in JSON, e.g.
    /// `api=hub-registry,errorRate=0.2,status=429,retryAfterSeconds=2`.
    pub fn parse_flag(text: &str) -> Result<FaultRule, String> {
        let mut fields = serde_json::Map::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got '{pair}'"))?;
            let value = match value.parse::<serde_json::Number>() {
                Ok(number) => serde_json::Value::Number(number),
                Err(_) => serde_json::Value::String(value.to_string()),
            };
            fields.insert(key.trim().to_string(), value);
        }
        let rule: FaultRule = serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| e.to_string())?;
        rule.validate()?;
        Ok(rule)
    }
}

/// The rules in force and the seed of their draws. The first rule naming a request's API applies (put
/// specific rules before a `*` one); requests no rule names pass untouched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultPlan {
    /// The rules, in order.
    #[serde(default)]
    pub rules: Vec<FaultRule>,
    /// The seed of the draws.
    #[serde(default)]
    pub seed: u64,
}

impl FaultPlan {
    /// Checks every rule.
    pub fn validate(&self) -> Result<(), String> {
        self.rules.iter().enumerate().try_for_each(|(i, r)| r.validate().map_err(|e| format!("rule {i}: {e}")))
    }
}

/// What was injected since the plan was last set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultCounts {
    /// Requests a rule applied to.
    pub requests: u64,
    /// Requests answered with an injected error.
    pub errors: u64,
    /// Requests dropped before they were applied.
    pub drops_before_apply: u64,
    /// Requests applied, then dropped.
    pub drops_after_apply: u64,
    /// Requests delayed.
    pub delayed: u64,
}

/// `GET /engine/faults`: the plan and what it injected so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultStatus {
    /// The plan in force.
    #[serde(flatten)]
    pub plan: FaultPlan,
    /// What it injected.
    pub injected: FaultCounts,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled normally.
    Pass,
    /// Answered with this status (and `Retry-After` seconds) instead of being handled.
    Error {
        /// 429, 500 or 503.
        status: u16,
        /// `Retry-After`, in seconds.
        retry_after: Option<u64>,
    },
    /// The connection is closed without handling the request.
    DropBeforeApply,
    /// The request is handled, then the connection closed without the answer.
    DropAfterApply,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    drops_before_apply: AtomicU64,
    drops_after_apply: AtomicU64,
    delayed: AtomicU64,
}

/// The plan in force and its counters; shared by every endpoint.
#[derive(Default)]
pub struct Faults {
    plan: RwLock<FaultPlan>,
    draws: AtomicU64,
    counters: Counters,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").field("plan", &self.plan()).finish_non_exhaustive()
    }
}

impl Faults {
    /// Starts with `plan`.
    pub fn new(plan: FaultPlan) -> Self {
        Faults { plan: RwLock::new(plan), ..Faults::default() }
    }

    /// Replaces the plan; the draws start again from the seed and the counters from zero.
    pub fn set(&self, plan: FaultPlan) {
        let mut current = self.plan.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = plan;
        self.draws.store(0, Ordering::SeqCst);
        for counter in [
            &self.counters.requests,
            &self.counters.errors,
            &self.counters.drops_before_apply,
            &self.counters.drops_after_apply,
            &self.counters.delayed,
        ] {
            counter.store(0, Ordering::SeqCst);
        }
    }

    /// The plan in force.
    pub fn plan(&self) -> FaultPlan {
        self.plan.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// What was injected since the plan was set.
    pub fn counts(&self) -> FaultCounts {
        let c = &self.counters;
        FaultCounts {
            requests: c.requests.load(Ordering::SeqCst),
            errors: c.errors.load(Ordering::SeqCst),
            drops_before_apply: c.drops_before_apply.load(Ordering::SeqCst),
            drops_after_apply: c.drops_after_apply.load(Ordering::SeqCst),
            delayed: c.delayed.load(Ordering::SeqCst),
        }
    }

    /// Decides the fate of the next request of `api` (and counts it): the added latency and the outcome.
    pub fn decide(&self, api: Api) -> (Duration, Outcome) {
        let (rule, seed) = {
            let plan = self.plan.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            match plan.rules.iter().find(|r| r.api.covers(api)) {
                Some(rule) => (rule.clone(), plan.seed),
                None => return (Duration::ZERO, Outcome::Pass),
            }
        };
        let draw = unit_draw(seed, self.draws.fetch_add(1, Ordering::SeqCst));
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::SeqCst);
        let latency = Duration::from_millis(rule.latency_ms);
        if !latency.is_zero() {
            c.delayed.fetch_add(1, Ordering::SeqCst);
        }
        let outcome = if draw < rule.error_rate {
            c.errors.fetch_add(1, Ordering::SeqCst);
            let retry_after = rule.retry_after_seconds.or((rule.status == 429).then_some(1));
            Outcome::Error { status: rule.status, retry_after }
        } else if draw < rule.error_rate + rule.drop_rate {
            c.drops_before_apply.fetch_add(1, Ordering::SeqCst);
            Outcome::DropBeforeApply
        } else if draw < rule.error_rate + rule.drop_rate + rule.drop_after_apply_rate {
            c.drops_after_apply.fetch_add(1, Ordering::SeqCst);
            Outcome::DropAfterApply
        } else {
            Outcome::Pass
        };
        (latency, outcome)
    }
}

/// Draw number `n` of `seed`, in `[0, 1)`: SplitMix64 of the pair, so each draw depends only on its number.
fn unit_draw(seed: u64, n: u64) -> f64 {
    let mut z = seed ^ n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Response extension: the server closes the connection instead of sending this response.
#[derive(Debug, Clone, Copy)]
pub struct DropConnection;

fn dropped() -> Response {
    let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
    response.extensions_mut().insert(DropConnection);
    response
}

/// Middleware state: the shared faults, the endpoint's API (`None`: the DPS endpoint, where the path tells
/// the service API from device registration) and its error shape.
#[derive(Clone, Debug)]
pub struct FaultLayer {
    /// The plan and counters.
    pub faults: Arc<Faults>,
    /// The endpoint's API, when it serves one only.
    pub api: Option<Api>,
    /// DPS or hub error shape.
    pub flavor: Flavor,
}

/// Applies the plan to a request: waits the rule's latency, then answers an error, drops the connection,
/// or handles the request (and drops the answer when so decided).
pub async fn inject(State(layer): State<FaultLayer>, request: Request, next: Next) -> Response {
    let Some(api) = layer.api.or_else(|| Api::of_dps_path(request.uri().path())) else {
        return next.run(request).await;
    };
    let (latency, outcome) = layer.faults.decide(api);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let log = |kind: &str| tracing::info!(?api, %method, %path, kind, "fault injected");
    match outcome {
        Outcome::Pass => next.run(request).await,
        Outcome::Error { status, retry_after } => {
            log("error");
            let kind = match status {
                429 => ErrorKind::Throttled,
                500 => ErrorKind::Internal,
                _ => ErrorKind::ServiceUnavailable,
            };
            let error = ApiError::new(kind, "injected fault: the service could not handle the request");
            let error = if layer.flavor == Flavor::Hub { error.hub() } else { error };
            let mut response = error.into_response();
            if let Some(seconds) = retry_after {
                response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
            }
            response
        }
        Outcome::DropBeforeApply => {
            log("drop-before-apply");
            dropped()
        }
        Outcome::DropAfterApply => {
            let answer = next.run(request).await;
            log("drop-after-apply");
            drop(answer);
            dropped()
        }
    }
}

/// Routes (mounted on the DPS listener): `GET`, `PUT` and `DELETE /engine/faults`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().route("/engine/faults", get(status).put(set).delete(clear)).with_state(shared)
}

fn status_of(faults: &Faults) -> axum::Json<FaultStatus> {
    axum::Json(FaultStatus { plan: faults.plan(), injected: faults.counts() })
}

async fn status(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult<axum::Json<FaultStatus>> {
    auth::dps(&s, &headers)?;
    Ok(status_of(&s.faults))
}

async fn set(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> ApiResult<axum::Json<FaultStatus>> {
    auth::dps(&s, &headers)?;
    let plan: FaultPlan =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("fault plan: {e}")))?;
    plan.validate().map_err(ApiError::bad_request)?;
    tracing::info!(rules = plan.rules.len(), seed = plan.seed, "fault plan set");
    s.faults.set(plan);
    Ok(status_of(&s.faults))
}

async fn clear(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult<axum::Json<FaultStatus>> {
    auth::dps(&s, &headers)?;
    s.faults.set(FaultPlan::default());
    Ok(status_of(&s.faults))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(error_rate: f64, drop_rate: f64, drop_after_apply_rate: f64) -> FaultRule {
        FaultRule {
            api: Api::Any,
            error_rate,
            status: 503,
            retry_after_seconds: None,
            latency_ms: 0,
            drop_rate,
            drop_after_apply_rate,
        }
    }

    fn outcomes(faults: &Faults, n: usize) -> Vec<Outcome> {
        (0..n).map(|_| faults.decide(Api::HubRegistry).1).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_and_another_seed_others() {
        let plan = FaultPlan { rules: vec![rule(0.2, 0.1, 0.1)], seed: 42 };
        let faults = Faults::new(plan.clone());
        let first = outcomes(&faults, 200);
        faults.set(plan.clone());
        assert_eq!(outcomes(&faults, 200), first, "setting the plan again replays the draws");
        faults.set(FaultPlan { seed: 43, ..plan });
        assert_ne!(outcomes(&faults, 200), first);
    }

    #[test]
    fn rates_are_honoured_and_counted() {
        let faults = Faults::new(FaultPlan { rules: vec![rule(0.2, 0.1, 0.1)], seed: 7 });
        let _ = outcomes(&faults, 10_000);
        let counts = faults.counts();
        assert_eq!(counts.requests, 10_000);
        let near = |n: u64, rate: f64| (n as f64 - 10_000.0 * rate).abs() < 10_000.0 * 0.02;
        assert!(near(counts.errors, 0.2), "{counts:?}");
        assert!(near(counts.drops_before_apply, 0.1), "{counts:?}");
        assert!(near(counts.drops_after_apply, 0.1), "{counts:?}");
    }

    #[test]
    fn the_first_rule_naming_the_api_applies_and_other_apis_pass() {
        let mut hub = rule(1.0, 0.0, 0.0);
        hub.api = Api::HubRegistry;
        let faults = Faults::new(FaultPlan { rules: vec![hub, rule(0.0, 1.0, 0.0)], seed: 1 });
        assert!(matches!(faults.decide(Api::HubRegistry).1, Outcome::Error { status: 503, .. }));
        assert_eq!(faults.decide(Api::DpsService).1, Outcome::DropBeforeApply);
        faults
            .set(FaultPlan { rules: vec![FaultRule { api: Api::DeviceRegistration, ..rule(1.0, 0.0, 0.0) }], seed: 1 });
        assert_eq!(faults.decide(Api::DpsService).1, Outcome::Pass);
        assert_eq!(faults.counts().requests, 0, "a request no rule names is not counted");
    }

    #[test]
    fn a_429_says_when_to_retry() {
        let faults = Faults::new(FaultPlan { rules: vec![FaultRule { status: 429, ..rule(1.0, 0.0, 0.0) }], seed: 0 });
        assert_eq!(faults.decide(Api::DpsService).1, Outcome::Error { status: 429, retry_after: Some(1) });
    }

    #[test]
    fn dps_paths_name_their_api_and_engine_paths_none() {
        assert_eq!(Api::of_dps_path("/0ne00000001/registrations/dev-1/register"), Some(Api::DeviceRegistration));
        assert_eq!(Api::of_dps_path("/0ne00000001/registrations/dev-1/operations/x"), Some(Api::DeviceRegistration));
        assert_eq!(Api::of_dps_path("/registrations/dev-1"), Some(Api::DpsService));
        assert_eq!(Api::of_dps_path("/enrollments/e"), Some(Api::DpsService));
        assert_eq!(Api::of_dps_path("/engine/faults"), None);
    }

    #[test]
    fn the_flag_form_reads_like_the_json_and_is_checked() {
        let parsed =
            FaultRule::parse_flag("api=hub-registry,errorRate=0.2,status=429,retryAfterSeconds=2,latencyMs=50")
                .expect("parses");
        assert_eq!(parsed.api, Api::HubRegistry);
        assert_eq!((parsed.error_rate, parsed.status, parsed.retry_after_seconds), (0.2, 429, Some(2)));
        assert_eq!(parsed.latency_ms, 50);
        assert_eq!(FaultRule::parse_flag("dropAfterApplyRate=1").expect("parses").api, Api::Any);
        for bad in ["errorRate=1.5", "status=404", "errorRate=0.6,dropRate=0.6", "api=nothing", "typo=1", "x"] {
            assert!(FaultRule::parse_flag(bad).is_err(), "{bad} is refused");
        }
    }
}
