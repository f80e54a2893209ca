//! Engine faults from tests: set a plan through the engine-only `/engine/faults`, read what it injected,
//! and count the writes that reached the engine's handlers (its request log), for idempotency checks.

use std::time::Duration;

use dps_operator::engine::faults::FaultCounts;
use serde_json::{Value, json};

use super::engine::Engine;
use super::operator::Operator;
use super::raw::{dps_token, https_client};

fn faults_url(engine: &Engine) -> String {
    format!("{}/engine/faults", engine.info.provisioning_service.endpoint.trim_end_matches('/'))
}

/// Replaces the engine's fault plan (`{"rules": [...], "seed": n}`); the counters start again.
pub async fn set(engine: &Engine, plan: &Value) {
    let answer = https_client(engine)
        .put(faults_url(engine))
        .header("Authorization", dps_token(engine))
        .json(plan)
        .send()
        .await
        .expect("the engine answers");
    assert!(answer.status().is_success(), "PUT /engine/faults: {}", answer.status());
}

/// No faults from now on.
pub async fn clear(engine: &Engine) {
    set(engine, &json!({ "rules": [] })).await;
}

/// What the plan injected since it was set.
pub async fn injected(engine: &Engine) -> FaultCounts {
    let answer = https_client(engine)
        .get(faults_url(engine))
        .header("Authorization", dps_token(engine))
        .send()
        .await
        .expect("the engine answers");
    let status: Value = answer.json().await.expect("JSON");
    serde_json::from_value(status["injected"].clone()).expect("fault counts")
}

/// A request that reached an engine handler and changed (or tried to change) something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// `PUT`, `POST` (bulk) or `DELETE`.
    pub method: String,
    /// The path, e.g. `/enrollments/x` or `/devices/y`.
    pub path: String,
    /// The answer's status (the client may not have seen it: a drop after apply).
    pub status: u16,
}

/// The writes in the engine's request log, oldest first (queries, which are POSTs, excluded). Devices'
/// registrations are left out: they are not backend calls of the operator.
pub fn writes(engine: &Engine) -> Vec<Write> {
    let log = super::process::strip_colours(&engine.log());
    log.lines()
        .filter(|line| line.contains(" request ") || line.ends_with(" request"))
        .filter_map(|line| {
            let field = |name: &str| {
                line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).map(str::to_string)
            };
            let (method, path) = (field("method")?, field("path")?);
            let status = field("status")?.parse().ok()?;
            let is_write = matches!(method.as_str(), "PUT" | "POST" | "DELETE");
            let excluded = path.ends_with("/query")
                || path.ends_with("/attestationmechanism")
                || path.contains("/registrations/") && path.ends_with("/register");
            (is_write && !excluded && !path.starts_with("/engine/")).then_some(Write { method, path, status })
        })
        .collect()
}

/// Successful writes to `path` with `method`.
pub fn count(writes: &[Write], method: &str, path: &str) -> usize {
    writes.iter().filter(|w| w.method == method && w.path == path && (200..300).contains(&w.status)).count()
}

/// The operator's reconciles so far (`controller_runtime_reconcile_total`, every controller and result).
pub async fn reconciles(operator: &Operator) -> u64 {
    let address = operator.metrics_address().await;
    let text =
        match tokio::time::timeout(Duration::from_secs(5), reqwest::get(format!("http://{address}/metrics"))).await {
            Ok(Ok(answer)) => answer.text().await.unwrap_or_default(),
            _ => String::new(),
        };
    text.lines()
        .filter(|l| l.starts_with("controller_runtime_reconcile_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
