//! Fault injection over real HTTPS: injected errors are Azure-shaped and write nothing, a drop closes the
//! connection without an answer (before or after the write), and `/engine/faults` itself is never faulted.

mod engine_common;

use dps_operator::engine::faults::{FaultCounts, FaultPlan, FaultRule};
use dps_operator::engine::{self, EngineConfig, EngineInfo};
use engine_common as common;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn rule(api: &str, fields: Value) -> Value {
    let mut rule = json!({ "api": api });
    if let (Some(rule), Some(fields)) = (rule.as_object_mut(), fields.as_object()) {
        rule.extend(fields.clone());
    }
    rule
}

async fn set_faults(c: &reqwest::Client, info: &EngineInfo, plan: Value) -> reqwest::Response {
    c.put(format!("{}/engine/faults", info.provisioning_service.endpoint))
        .header("authorization", common::service_token(info))
        .json(&plan)
        .send()
        .await
        .expect("the fault endpoint answers")
}

async fn injected(c: &reqwest::Client, info: &EngineInfo) -> FaultCounts {
    let status: Value = c
        .get(format!("{}/engine/faults", info.provisioning_service.endpoint))
        .header("authorization", common::service_token(info))
        .send()
        .await
        .expect("the fault endpoint answers")
        .json()
        .await
        .expect("JSON");
    serde_json::from_value(status["injected"].clone()).expect("counts")
}

async fn put_enrollment(c: &reqwest::Client, info: &EngineInfo, id: &str) -> reqwest::Result<reqwest::Response> {
    c.put(format!("{}/enrollments/{id}?api-version=2021-10-01", info.provisioning_service.endpoint))
        .header("authorization", common::service_token(info))
        .json(&json!({ "attestation": { "type": "symmetricKey" } }))
        .send()
        .await
}

async fn enrollment_status(c: &reqwest::Client, info: &EngineInfo, id: &str) -> StatusCode {
    c.get(format!("{}/enrollments/{id}?api-version=2021-10-01", info.provisioning_service.endpoint))
        .header("authorization", common::service_token(info))
        .send()
        .await
        .expect("answered")
        .status()
}

#[tokio::test]
async fn injected_errors_are_azure_shaped_with_retry_after_and_write_nothing() {
    let (engine, _dir) = common::start_engine("faults-errors").await;
    let c = common::client(&engine.info, None);
    let info = &engine.info;
    let plan = json!({ "rules": [
        rule("hub-registry", json!({ "errorRate": 1.0, "status": 503, "retryAfterSeconds": 2 })),
        rule("dps-service", json!({ "errorRate": 1.0, "status": 429 })),
    ], "seed": 42 });
    assert_eq!(set_faults(&c, info, plan).await.status(), StatusCode::OK);

    let r = put_enrollment(&c, info, "never-written").await.expect("answered");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(r.headers().get("x-ms-error-code").and_then(|v| v.to_str().ok()), Some("429001"));

    let hub = c
        .put(format!("{}/devices/never-written?api-version=2021-04-12", info.hubs[0].endpoint))
        .header("authorization", common::hub_token(info, 0))
        .json(&json!({ "deviceId": "never-written" }))
        .send()
        .await
        .expect("answered");
    assert_eq!(hub.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hub.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("2"));
    assert_eq!(hub.headers().get("iothub-errorcode").and_then(|v| v.to_str().ok()), Some("ServiceUnavailable"));
    let counts = injected(&c, info).await;
    assert_eq!((counts.requests, counts.errors), (2, 2), "{counts:?}");

    assert_eq!(set_faults(&c, info, json!({ "rules": [] })).await.status(), StatusCode::OK);
    assert_eq!(enrollment_status(&c, info, "never-written").await, StatusCode::NOT_FOUND, "the error came first");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_drop_before_apply_closes_the_connection_unanswered_and_writes_nothing() {
    let (engine, _dir) = common::start_engine("faults-drop").await;
    let c = common::client(&engine.info, None);
    let info = &engine.info;
    set_faults(&c, info, json!({ "rules": [rule("*", json!({ "dropRate": 1.0 }))] })).await;
    let dropped = put_enrollment(&c, info, "dropped-before").await;
    let error = format!("{:?}", dropped.expect_err("no answer at all, not even an error status"));
    assert!(error.contains("UnexpectedEof"), "the connection closed before any answer: {error}");
    assert!(injected(&c, info).await.drops_before_apply >= 1, "the drop is counted");
    c.delete(format!("{}/engine/faults", info.provisioning_service.endpoint))
        .header("authorization", common::service_token(info))
        .send()
        .await
        .expect("clearing is never faulted");
    assert_eq!(enrollment_status(&c, info, "dropped-before").await, StatusCode::NOT_FOUND);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_drop_after_apply_loses_the_answer_but_keeps_the_write() {
    let (engine, _dir) = common::start_engine("faults-drop-after").await;
    let c = common::client(&engine.info, None);
    let info = &engine.info;
    set_faults(&c, info, json!({ "rules": [rule("dps-service", json!({ "dropAfterApplyRate": 1.0 }))] })).await;
    let dropped = put_enrollment(&c, info, "dropped-after").await;
    let error = format!("{:?}", dropped.expect_err("no answer at all"));
    assert!(error.contains("UnexpectedEof"), "the connection closed before any answer: {error}");
    set_faults(&c, info, json!({ "rules": [] })).await;
    assert_eq!(enrollment_status(&c, info, "dropped-after").await, StatusCode::OK, "the write happened");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_plan_given_at_start_applies_from_the_first_request_a_bad_plan_is_refused_and_the_handle_replaces_it() {
    let dir = common::temp_dir("faults-start");
    let mut config = EngineConfig::new(&dir);
    config.listen = ([127, 0, 0, 1], 0).into();
    config.hubs = vec!["h1".into()];
    let rule = FaultRule::parse_flag("api=dps-service,errorRate=1,status=500").expect("rule");
    config.faults = FaultPlan { rules: vec![rule], seed: 1 };
    let engine = engine::start(config).await.expect("starts");
    let c = common::client(&engine.info, None);
    let r = put_enrollment(&c, &engine.info, "x").await.expect("answered");
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bad = set_faults(&c, &engine.info, json!({ "rules": [{ "errorRate": 0.9, "dropRate": 0.9 }] })).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let typo = set_faults(&c, &engine.info, json!({ "rules": [{ "eror": 1 }] })).await;
    assert_eq!(typo.status(), StatusCode::BAD_REQUEST, "unknown fields are refused, not ignored");
    let anonymous = c.get(format!("{}/engine/faults", engine.info.provisioning_service.endpoint)).send().await;
    assert_eq!(anonymous.expect("answered").status(), StatusCode::UNAUTHORIZED);
    engine.faults().set(FaultPlan::default());
    let r = put_enrollment(&c, &engine.info, "x").await.expect("answered");
    assert_eq!(r.status(), StatusCode::OK, "the in-process handle switched the faults off");
    assert_eq!(engine.faults().counts().requests, 0, "the counters start again with the plan");
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
