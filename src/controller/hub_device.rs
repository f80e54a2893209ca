//! The hub half of revocation: disable or delete one device identity, idempotently (a missing device is
//! already revoked), with etags so a concurrent change is never overwritten blindly.

use crate::Result;
use crate::azure::wire::DeviceStatus;
use crate::azure::{AzureError, HubRegistryClient};

/// What happened to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubOutcome {
    /// It was enabled and is now disabled (or deleted).
    Changed,
    /// It was already disabled, or does not exist.
    AlreadyDone,
}

/// Disables `device_id` with `reason` as its statusReason.
pub async fn disable(hub: &HubRegistryClient, device_id: &str, reason: &str) -> Result<HubOutcome> {
    let mut device = match hub.get_device(device_id).await {
        Ok(device) => device,
        Err(e) if e.is_not_found() => return Ok(HubOutcome::AlreadyDone),
        Err(e) => return Err(e.into()),
    };
    if device.status == Some(DeviceStatus::Disabled) {
        return Ok(HubOutcome::AlreadyDone);
    }
    device.status = Some(DeviceStatus::Disabled);
    device.status_reason = Some(reason.chars().take(128).collect());
    let etag = device.etag.clone();
    match hub.update_device(&device, etag.as_deref()).await {
        Ok(_) => Ok(HubOutcome::Changed),
        // Deleted between the read and the write: nothing left to disable.
        Err(e) if e.is_not_found() => Ok(HubOutcome::AlreadyDone),
        Err(e) => Err(e.into()),
    }
}

/// Re-enables `device_id` (undoing a revocation explicitly asked for); a missing device stays missing.
pub async fn enable(hub: &HubRegistryClient, device_id: &str) -> Result<HubOutcome> {
    let mut device = match hub.get_device(device_id).await {
        Ok(device) => device,
        Err(e) if e.is_not_found() => return Ok(HubOutcome::AlreadyDone),
        Err(e) => return Err(e.into()),
    };
    if device.status != Some(DeviceStatus::Disabled) {
        return Ok(HubOutcome::AlreadyDone);
    }
    device.status = Some(DeviceStatus::Enabled);
    device.status_reason = None;
    let etag = device.etag.clone();
    hub.update_device(&device, etag.as_deref()).await?;
    Ok(HubOutcome::Changed)
}

/// Deletes `device_id`; 404 is success.
pub async fn delete(hub: &HubRegistryClient, device_id: &str) -> Result<HubOutcome> {
    match hub.get_device(device_id).await {
        Err(e) if e.is_not_found() => return Ok(HubOutcome::AlreadyDone),
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    match hub.delete_device(device_id, Some("*")).await {
        Ok(()) => Ok(HubOutcome::Changed),
        Err(AzureError::NotFound(_)) => Ok(HubOutcome::AlreadyDone),
        Err(e) => Err(e.into()),
    }
}
