//! Against an engine that pushes back like an Azure quota (429 + Retry-After), our client retries after the
//! time it is told, and every call ends with its real answer.

use dps_operator::azure::error::AzureError;
use reqwest::StatusCode;

use crate::support::engine::{Engine, free_port};
use crate::support::raw::{dps_token, dps_url, https_client};

fn throttled_so_far(engine: &Engine) -> usize {
    engine.log().matches("throttled: answered 429").count()
}

#[tokio::test]
async fn client_waits_for_retry_after_when_throttled_and_gets_the_real_answer() {
    // One request a second per endpoint, no burst.
    let engine = Engine::start_with(free_port(), &["--throttle-per-minute", "60"]);
    let http = https_client(&engine);
    let url = dps_url(&engine, "/enrollments/nobody");
    let mut pushed_back = None;
    for _ in 0..5 {
        let response = http.get(&url).header("Authorization", dps_token(&engine)).send().await.expect("answered");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            pushed_back = Some(response);
            break;
        }
    }
    let response = pushed_back.expect("five requests at once exceed one a second");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!(retry_after >= 1);
    assert!(response.headers().contains_key("x-ms-error-code"));

    let before = throttled_so_far(&engine);
    let dps = engine.dps();
    let calls = 4;
    for i in 0..calls {
        let answer = dps.get_enrollment(&format!("nobody-{i}")).await;
        assert!(matches!(answer, Err(AzureError::NotFound(_))), "call {i} ended with {answer:?}");
    }
    let throttled = throttled_so_far(&engine) - before;
    // Waiting as told means at most one 429 per call; retrying sooner would collect more.
    assert!(throttled <= calls, "{throttled} requests were throttled for {calls} calls");
    assert!(throttled >= 1, "the client was never throttled, so this test proved nothing");
}
