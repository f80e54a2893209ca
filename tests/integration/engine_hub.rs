//! The engine's IoT Hub identity registry API through our own client, over HTTPS.

use dps_operator::azure::error::AzureError;
use dps_operator::azure::wire::{Device, DeviceStatus, ExportImportDevice, ImportMode};

use crate::support::engine::Engine;
use crate::support::raw::bulk_request_sizes;

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
