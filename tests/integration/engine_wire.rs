//! Wire details checked with raw HTTPS requests: SAS authentication as Azure does it, Azure-shaped errors
//! for bad input, and bulk limits the typed client would refuse to send.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::engine::Engine;
use crate::support::raw::{dps_token, dps_url, https_client, token, unix_time};

async fn assert_azure_error(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let header = response.headers().get("x-ms-error-code").map(|v| v.to_str().unwrap_or_default().to_string());
    let body: Value = response.json().await.expect("error body is JSON");
    assert!(body["errorCode"].is_i64(), "errorCode missing from {body}");
    assert!(body["trackingId"].is_string(), "trackingId missing from {body}");
    assert!(body["message"].is_string(), "message missing from {body}");
    assert!(header.is_some(), "x-ms-error-code header missing");
    body
}

#[tokio::test]
async fn sas_tokens_are_checked_like_azure() {
    let engine = Engine::start();
    let http = https_client(&engine);
    let cs = &engine.info.provisioning_service.connection_string;
    let url = dps_url(&engine, "/enrollments/nobody");
    let host = cs.host_name.as_str();
    let good = dps_token(&engine);
    let wrong_key_cs: dps_operator::azure::connection_string::ConnectionString = format!(
        "HostName={host};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=d3JvbmdrZXl3cm9uZ2tleQ=="
    )
    .parse()
    .expect("parses");
    let cases = [
        ("wrong key", token(&wrong_key_cs, host, Some("provisioningserviceowner"), unix_time(3600))),
        ("wrong policy", token(cs, host, Some("someotherpolicy"), unix_time(3600))),
        ("expired", token(cs, host, cs.policy.as_deref(), unix_time(-60))),
        (
            "another resource",
            token(cs, "another-dps.azure-devices-provisioning.net", cs.policy.as_deref(), unix_time(3600)),
        ),
        ("garbage", "SharedAccessSignature nonsense".to_string()),
    ];
    for (what, bad) in cases {
        let response = http.get(&url).header("Authorization", bad).send().await.expect("request is answered");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what} token was not refused");
        assert_azure_error(response, StatusCode::UNAUTHORIZED).await;
    }
    let none = http.get(&url).send().await.expect("answered");
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "a request without a token was not refused");
    let ok = http.get(&url).header("Authorization", good).send().await.expect("answered");
    assert_eq!(ok.status(), StatusCode::NOT_FOUND, "a good token reaches the handler");
}

#[tokio::test]
async fn hub_tokens_for_the_dps_host_are_refused() {
    let engine = Engine::start();
    let http = https_client(&engine);
    let hub = &engine.info.hubs[0];
    let dps = &engine.info.provisioning_service.connection_string;
    let url = format!("{}/devices/any?api-version=2021-04-12", hub.endpoint.trim_end_matches('/'));
    let wrong_audience = token(&hub.connection_string, &dps.host_name, Some("iothubowner"), unix_time(3600));
    let response = http.get(&url).header("Authorization", wrong_audience).send().await.expect("answered");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let error = response.headers().get("iothub-errorcode").map(|v| v.to_str().unwrap_or_default().to_string());
    assert!(error.is_some(), "hub errors carry iothub-errorcode");
}

#[tokio::test]
async fn bad_input_gets_azure_shaped_errors_and_never_a_crash() {
    let engine = Engine::start();
    let http = https_client(&engine);
    let auth = dps_token(&engine);
    let put = |path: &str, body: String| {
        http.put(dps_url(&engine, path))
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .body(body)
    };
    let symmetric = |id: &str| json!({"registrationId": id, "attestation": {"type": "symmetricKey"}}).to_string();

    let malformed = put("/enrollments/dev-1", "{\"registrationId\": ".into()).send().await.expect("answered");
    assert_azure_error(malformed, StatusCode::BAD_REQUEST).await;

    let huge = json!({"registrationId": "dev-1", "attestation": {"type": "symmetricKey"},
                      "initialTwin": {"tags": {"blob": "x".repeat(100 * 1024)}}});
    let too_large = put("/enrollments/dev-1", huge.to_string()).send().await.expect("answered");
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);

    for bad_id in ["dot-last.", "has space", "x".repeat(129).as_str(), "semi;colon"] {
        let encoded: String = url_escape(bad_id);
        let response = put(&format!("/enrollments/{encoded}"), symmetric(bad_id)).send().await.expect("answered");
        assert_azure_error(response, StatusCode::BAD_REQUEST).await;
    }

    let unknown_type = json!({"registrationId": "dev-2", "attestation": {"type": "retina"}});
    let response = put("/enrollments/dev-2", unknown_type.to_string()).send().await.expect("answered");
    assert_azure_error(response, StatusCode::BAD_REQUEST).await;

    let bad_cert = json!({"registrationId": "dev-3", "attestation": {"type": "x509",
        "x509": {"clientCertificates": {"primary": {"certificate": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----"}}}}});
    let response = put("/enrollments/dev-3", bad_cert.to_string()).send().await.expect("answered");
    assert_azure_error(response, StatusCode::BAD_REQUEST).await;

    let short_key = json!({"registrationId": "dev-4", "attestation": {"type": "symmetricKey",
        "symmetricKey": {"primaryKey": "c2hvcnQ=", "secondaryKey": "c2hvcnQ="}}});
    let response = put("/enrollments/dev-4", short_key.to_string()).send().await.expect("answered");
    assert_azure_error(response, StatusCode::BAD_REQUEST).await;

    let mismatched = put("/enrollments/dev-5", symmetric("dev-6")).send().await.expect("answered");
    assert_azure_error(mismatched, StatusCode::BAD_REQUEST).await;

    let no_version = http
        .get(format!("{}/enrollments/dev-1", engine.info.provisioning_service.endpoint))
        .header("Authorization", &auth)
        .send()
        .await
        .expect("answered");
    assert_eq!(no_version.status(), StatusCode::BAD_REQUEST, "api-version is required");

    // After all that, the engine still serves.
    let ok = put("/enrollments/dev-7", symmetric("dev-7")).send().await.expect("answered");
    assert!(ok.status().is_success(), "engine stopped serving after bad input: {}", ok.status());
}

fn url_escape(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn bulk_calls_over_the_limits_are_refused() {
    let engine = Engine::start();
    let http = https_client(&engine);
    let enrollments: Vec<Value> = (0..11)
        .map(|i| json!({"registrationId": format!("bulk-{i}"), "attestation": {"type": "symmetricKey"}}))
        .collect();
    let response = http
        .post(dps_url(&engine, "/enrollments"))
        .header("Authorization", dps_token(&engine))
        .json(&json!({"enrollments": enrollments, "mode": "create"}))
        .send()
        .await
        .expect("answered");
    assert_azure_error(response, StatusCode::BAD_REQUEST).await;

    let hub = &engine.info.hubs[0];
    let hub_token = token(&hub.connection_string, &hub.host_name, Some("iothubowner"), unix_time(3600));
    let devices: Vec<Value> = (0..101).map(|i| json!({"id": format!("d{i}"), "importMode": "create"})).collect();
    let response = http
        .post(format!("{}/devices?api-version=2021-04-12", hub.endpoint.trim_end_matches('/')))
        .header("Authorization", hub_token)
        .json(&devices)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
