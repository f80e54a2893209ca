//! The hub half of revoking many devices at once: hub bulk `POST /devices`, at most 100 items a call, each
//! call charged item by item against the hub's rate budget by the client.
//!
//! Disabling reads each device first: a bulk `updateIfMatchETag` item replaces the whole identity, so it
//! must carry the device's own authentication, capabilities and scopes back, and the etag makes a change
//! made in between fail the item instead of being overwritten.

use crate::azure::HubRegistryClient;
use crate::azure::hub::HUB_BULK_MAX;
use crate::azure::wire::{BulkItemOutcome, DeviceStatus, ExportImportDevice, ImportMode};
use crate::{Error, Result};

/// What to do with each device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// Set `status: disabled` with a reason.
    Disable,
    /// Remove the identity.
    Delete,
}

/// Counts of one revocation run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Devices this run disabled or deleted.
    pub changed: usize,
    /// Devices already disabled or absent.
    pub already: usize,
}

/// Disables or deletes `device_ids` in `hub`, in bulk calls of at most [`HUB_BULK_MAX`]. Any item that fails
/// for another reason than a missing device fails the whole run (the caller retries; every item is
/// idempotent).
pub async fn revoke(hub: &HubRegistryClient, device_ids: &[String], how: Revocation, reason: &str) -> Result<Revoked> {
    let mut total = Revoked::default();
    for chunk in device_ids.chunks(HUB_BULK_MAX) {
        let (items, absent) = match how {
            Revocation::Delete => {
                (chunk.iter().map(|id| ExportImportDevice::new(id.clone(), ImportMode::Delete)).collect(), 0)
            }
            Revocation::Disable => disable_items(hub, chunk, reason).await?,
        };
        total.already += absent;
        let items: Vec<ExportImportDevice> = items;
        let result = hub.bulk(&items).await?;
        for item in &items {
            match result.outcome(&item.id) {
                BulkItemOutcome::Done => total.changed += 1,
                BulkItemOutcome::DeviceNotFound => total.already += 1,
                BulkItemOutcome::Failed(e) => {
                    return Err(Error::waiting(
                        "HubBulkItemFailed",
                        format!(
                            "hub {} refused the bulk item for device {}: {} {}",
                            hub.host_name(),
                            e.device_id,
                            e.error_code,
                            e.error_status.clone().unwrap_or_default()
                        ),
                    ));
                }
            }
        }
    }
    Ok(total)
}

/// The `updateIfMatchETag` items disabling the enabled devices of `chunk`, and how many were already
/// disabled or missing.
async fn disable_items(
    hub: &HubRegistryClient,
    chunk: &[String],
    reason: &str,
) -> Result<(Vec<ExportImportDevice>, usize)> {
    let mut items = Vec::new();
    let mut already = 0;
    for id in chunk {
        let device = match hub.get_device(id).await {
            Ok(device) => device,
            Err(e) if e.is_not_found() => {
                already += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if device.status == Some(DeviceStatus::Disabled) {
            already += 1;
            continue;
        }
        let mut item = ExportImportDevice::new(device.device_id, ImportMode::UpdateIfMatchETag);
        item.e_tag = device.etag;
        item.status = Some(DeviceStatus::Disabled);
        item.status_reason = Some(reason.chars().take(128).collect());
        item.authentication = device.authentication;
        item.capabilities = device.capabilities;
        item.device_scope = device.device_scope;
        item.parent_scopes = device.parent_scopes;
        items.push(item);
    }
    Ok((items, already))
}
