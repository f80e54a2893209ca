//! The engine's IoT Hub identity registry API through our own client, over HTTPS.

use dps_operator::azure::error::AzureError;
use dps_operator::azure::wire::{BulkItemOutcome, Device, DeviceStatus, ExportImportDevice, ImportMode};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::engine::Engine;
use crate::support::raw::bulk_request_sizes;
use crate::support::raw::{https_client, token, unix_time};

fn device(id: &str) -> Device {
    Device { device_id: id.into(), ..Device::default() }
}

#[tokio::test]
async fn hub_device_create_update_delete_honours_etags() {
    let engine = Engine::start();
    let hub = engine.hub(0);
    let created = hub.create_device(&device("pump-1")).await.expect("created");
    let etag = created.etag.clone().expect("etag");
    let keys = created.authentication.as_ref().and_then(|a| a.symmetric_key.as_ref());
    assert!(keys.and_then(|k| k.primary_key.as_ref()).is_some(), "SAS keys are generated when omitted");
    assert!(created.generation_id.is_some());

    let again = hub.create_device(&device("pump-1")).await;
    assert!(
        matches!(&again, Err(AzureError::Conflict(e)) if e.code.as_deref() == Some("DeviceAlreadyExists")),
        "{again:?}"
    );

    let mut disabled = created.clone();
    disabled.status = Some(DeviceStatus::Disabled);
    disabled.status_reason = Some("stolen".into());
    let stale = hub.update_device(&disabled, Some("\"stale\"")).await;
    assert!(matches!(stale, Err(AzureError::PreconditionFailed(_))), "{stale:?}");
    let updated = hub.update_device(&disabled, Some(&etag)).await.expect("updated");
    assert_eq!(updated.status, Some(DeviceStatus::Disabled));
    assert_eq!(updated.status_reason.as_deref(), Some("stolen"));

    let wrong_etag = hub.delete_device("pump-1", Some("\"stale\"")).await;
    assert!(matches!(wrong_etag, Err(AzureError::PreconditionFailed(_))), "{wrong_etag:?}");
    hub.delete_device("pump-1", None).await.expect("deleted with *");
    let gone = hub.get_device("pump-1").await;
    assert!(matches!(&gone, Err(AzureError::NotFound(e)) if e.code.as_deref() == Some("DeviceNotFound")), "{gone:?}");
}

#[tokio::test]
async fn hub_bulk_goes_a_hundred_at_a_time_and_query_pages() {
    let engine = Engine::start();
    let hub = engine.hub(1);
    let devices: Vec<_> =
        (0..150).map(|i| ExportImportDevice::new(format!("meter-{i:03}"), ImportMode::Create)).collect();
    let result = hub.bulk_chunked(&devices).await.expect("bulk create");
    assert!(result.is_successful, "{result:?}");
    let host = engine.info.hubs[1].host_name.clone();
    assert_eq!(bulk_request_sizes(&engine, &host, "/devices").await, [100, 50], "150 devices go a hundred at a time");

    let first = hub.query_devices("SELECT * FROM devices", Some(60), None).await.expect("first page");
    assert_eq!(first.items.len(), 60);
    assert!(first.continuation.is_some());
    let all = hub.query_all_devices("SELECT * FROM devices", Some(60)).await.expect("all pages");
    assert_eq!(all.len(), 150);

    let delete: Vec<_> =
        (0..150).map(|i| ExportImportDevice::new(format!("meter-{i:03}"), ImportMode::Delete)).collect();
    assert!(hub.bulk_chunked(&delete).await.expect("bulk delete").is_successful);
    assert_eq!(bulk_request_sizes(&engine, &host, "/devices").await, [100, 50, 100, 50]);
    assert!(hub.query_all_devices("SELECT * FROM devices", None).await.expect("query").is_empty());
}

#[tokio::test]
async fn hubs_are_separate_registries() {
    let engine = Engine::start();
    engine.hub(0).create_device(&device("only-in-hub-1")).await.expect("created in hub 1");
    let other = engine.hub(1).get_device("only-in-hub-1").await;
    assert!(matches!(other, Err(AzureError::NotFound(_))), "{other:?}");
}

/// A raw bulk `POST /devices` to hub `index`, answered as (status, JSON body).
async fn raw_bulk(engine: &Engine, index: usize, items: Value) -> (StatusCode, Value) {
    let hub = &engine.info.hubs[index];
    let cs = &hub.connection_string;
    let auth = token(cs, &cs.host_name, cs.policy.as_deref(), unix_time(3600));
    let url = format!("{}/devices?api-version=2021-04-12", hub.endpoint.trim_end_matches('/'));
    let response =
        https_client(engine).post(url).header("Authorization", auth).json(&items).send().await.expect("answered");
    let status = response.status();
    (status, response.json().await.expect("bulk answers JSON"))
}

#[tokio::test]
async fn bulk_disable_of_a_deleted_device_does_not_recreate_it() {
    let engine = Engine::start();
    let hub = engine.hub(0);
    for id in ["gone-1", "gone-2"] {
        hub.create_device(&device(id)).await.expect("created");
        hub.delete_device(id, None).await.expect("deleted");
    }
    let mut disable = ExportImportDevice::new("gone-1", ImportMode::Update);
    disable.status = Some(DeviceStatus::Disabled);
    let mut disable_if_match = ExportImportDevice::new("gone-2", ImportMode::UpdateIfMatchETag);
    disable_if_match.status = Some(DeviceStatus::Disabled);
    disable_if_match.e_tag = Some("*".into());
    let result = hub.bulk(&[disable, disable_if_match]).await.expect("a failed item is a per-device result");
    assert!(!result.is_successful, "{result:?}");
    for id in ["gone-1", "gone-2"] {
        assert_eq!(result.outcome(id), BulkItemOutcome::DeviceNotFound, "{result:?}");
        let again = hub.get_device(id).await;
        assert!(matches!(again, Err(AzureError::NotFound(_))), "bulk update recreated {id}: {again:?}");
    }
}

#[tokio::test]
async fn hub_bulk_answers_400_with_per_device_errors_when_an_item_fails() {
    let engine = Engine::start();
    let (status, body) = raw_bulk(&engine, 0, json!([{ "id": "fresh", "importMode": "create" }])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["isSuccessful"], true, "{body}");

    let items = json!([
        { "id": "fresh", "importMode": "delete" },
        { "id": "never-there", "importMode": "delete" },
        { "id": "fresh-2", "importMode": "create" },
    ]);
    let (status, body) = raw_bulk(&engine, 0, items).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["isSuccessful"], false, "{body}");
    assert!(body["warnings"].is_array(), "{body}");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "only the missing device failed: {body}");
    assert_eq!(errors[0]["deviceId"], "never-there");
    assert_eq!(errors[0]["errorCode"], "DeviceNotFound");
    assert!(errors[0]["errorStatus"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
    let hub = engine.hub(0);
    assert!(hub.get_device("fresh").await.is_err_and(|e| e.is_not_found()), "the good delete still happened");
    hub.get_device("fresh-2").await.expect("the good create still happened");
}

#[tokio::test]
async fn bulk_delete_reports_missing_devices_per_device_and_deletes_the_rest() {
    let engine = Engine::start();
    let hub = engine.hub(1);
    hub.create_device(&device("present")).await.expect("created");
    hub.create_device(&device("locked")).await.expect("created");
    let mut stale = ExportImportDevice::new("locked", ImportMode::DeleteIfMatchETag);
    stale.e_tag = Some("\"stale\"".into());
    let items = [
        ExportImportDevice::new("present", ImportMode::Delete),
        ExportImportDevice::new("absent", ImportMode::Delete),
        stale,
    ];
    let result = hub.bulk_chunked(&items).await.expect("a 400 bulk answer is a per-device result, not a failed call");
    assert!(!result.is_successful);
    assert_eq!(result.outcome("present"), BulkItemOutcome::Done);
    assert_eq!(result.outcome("absent"), BulkItemOutcome::DeviceNotFound);
    assert!(
        matches!(result.outcome("locked"), BulkItemOutcome::Failed(e) if e.error_code.to_string() == "PreconditionFailed"),
        "{result:?}"
    );
    assert!(hub.get_device("present").await.is_err_and(|e| e.is_not_found()));
    hub.get_device("locked").await.expect("a stale etag keeps the device");
}

#[tokio::test]
async fn hub_errors_put_a_json_document_in_message_and_device_not_found_keeps_the_older_form() {
    let engine = Engine::start();
    let hub = &engine.info.hubs[0];
    let cs = &hub.connection_string;
    let auth = token(cs, &cs.host_name, cs.policy.as_deref(), unix_time(3600));
    let url = format!("{}/devices/twice?api-version=2021-04-12", hub.endpoint.trim_end_matches('/'));
    let http = https_client(&engine);
    let put = || http.put(&url).header("Authorization", &auth).json(&json!({ "deviceId": "twice" })).send();
    assert_eq!(put().await.expect("answered").status(), StatusCode::OK);
    let conflict = put().await.expect("answered");
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let header = conflict.headers().get("iothub-errorcode").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header.as_deref(), Some("DeviceAlreadyExists"));
    let body: Value = conflict.json().await.expect("JSON body");
    let message = body["Message"].as_str().expect("Message is a string");
    let inner: Value = serde_json::from_str(message).unwrap_or_else(|e| panic!("Message is not JSON ({e}): {body}"));
    assert_eq!(inner["errorCode"], 409_001, "{inner}");
    assert!(inner["trackingId"].as_str().is_some_and(|t| t.contains("-TimeStamp:")), "{inner}");
    assert!(inner["message"].as_str().is_some_and(|m| m.contains("twice")), "{inner}");
    assert!(inner["timestampUtc"].as_str().is_some_and(|t| t.ends_with('Z')), "{inner}");

    let missing = format!("{}/devices/nobody?api-version=2021-04-12", hub.endpoint.trim_end_matches('/'));
    let not_found = http.get(missing).header("Authorization", &auth).send().await.expect("answered");
    assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
    let body: Value = not_found.json().await.expect("JSON body");
    assert!(body["Message"].as_str().is_some_and(|m| m.starts_with("ErrorCode:DeviceNotFound;")), "{body}");
    assert!(body["ExceptionMessage"].as_str().is_some_and(|m| m.starts_with("Tracking ID:")), "{body}");

    // Our client reads both forms: the code, the service's text and its tracking ID.
    let client = engine.hub(0);
    let again = client.create_device(&device("twice")).await;
    let Err(AzureError::Conflict(detail)) = again else { panic!("expected a conflict: {again:?}") };
    assert_eq!(detail.code.as_deref(), Some("DeviceAlreadyExists"));
    assert!(detail.message.as_deref().is_some_and(|m| !m.starts_with('{')), "{detail:?}");
    assert!(detail.tracking_id.is_some(), "{detail:?}");
    let gone = client.get_device("nobody").await;
    let Err(AzureError::NotFound(detail)) = gone else { panic!("expected not found: {gone:?}") };
    assert_eq!(detail.code.as_deref(), Some("DeviceNotFound"));
    assert!(detail.tracking_id.is_some(), "{detail:?}");
}
