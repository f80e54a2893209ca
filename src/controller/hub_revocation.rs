//! The hub half of revoking many devices at once: hub bulk `POST /devices`, at most 100 items a call, each
//! call charged item by item against the hub's rate budget by the client.
//!
//! A bulk update item replaces the whole identity, so disabling must send the device's authentication
//! and capabilities back. For devices a group provisioned those are what DPS wrote at registration,
//! derived from the group ([`ProvisionedIdentity`]): 10,000 devices then cost 100 registry calls. Otherwise
//! each device is read first and written back with `updateIfMatchETag`, so a change made in between fails
//! the item instead of being overwritten.

use crate::azure::hub::HUB_BULK_MAX;
use crate::azure::sas::derive_device_key;
use crate::azure::secret::Secret;
use crate::azure::wire::{
    self, AuthenticationMechanism, AuthenticationType, BulkItemOutcome, DeviceCapabilities, DeviceStatus,
    ExportImportDevice, ImportMode, SymmetricKey,
};
use crate::azure::{AzureError, HubRegistryClient};
use crate::{Error, Result};

/// What to do with each device.
#[derive(Debug, Clone, Copy)]
pub enum Revocation<'a> {
    /// Set `status: disabled` with a reason, reading each identity first.
    Disable,
    /// Set `status: disabled` with a reason, writing back the identity DPS gave the device.
    DisableAsProvisioned(&'a ProvisionedIdentity),
    /// Remove the identity.
    Delete,
}

/// A device registered through a group: its hub device ID and the registration ID its keys derive from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDevice {
    /// The device ID in the hub.
    pub device_id: String,
    /// The DPS registration ID.
    pub registration_id: String,
}

/// The identity DPS writes into the hub for a device of one enrollment group: per-device keys derived from
/// the group's keys (symmetric key), or CA authentication (X.509), and the group's capabilities. Writing
/// it back while disabling is what the device's next registration would write anyway; a device whose
/// group keys were rolled since it registered gets the keys of the current group keys, which it needs to
/// register again in any case. Keys stay in redacting types.
#[derive(Debug, Clone)]
pub struct ProvisionedIdentity {
    keys: Option<(Option<Secret>, Option<Secret>)>,
    capabilities: Option<DeviceCapabilities>,
}

impl ProvisionedIdentity {
    /// The identity of `group`'s devices, when its attestation (with symmetric keys filled in) says it.
    pub fn of_group(group: &wire::EnrollmentGroup) -> Option<Self> {
        let keys = match group.attestation.kind {
            wire::AttestationType::SymmetricKey => {
                let keys = group.attestation.symmetric_key.as_ref()?;
                if keys.primary_key.is_none() && keys.secondary_key.is_none() {
                    return None;
                }
                Some((keys.primary_key.clone(), keys.secondary_key.clone()))
            }
            wire::AttestationType::X509 => None,
            _ => return None,
        };
        Some(ProvisionedIdentity { keys, capabilities: group.capabilities })
    }

    fn authentication(&self, registration_id: &str) -> Result<AuthenticationMechanism> {
        let Some((primary, secondary)) = &self.keys else {
            return Ok(AuthenticationMechanism {
                kind: Some(AuthenticationType::CertificateAuthority),
                ..Default::default()
            });
        };
        let derive = |key: &Option<Secret>| -> Result<Option<Secret>> {
            key.as_ref()
                .map(|k| derive_device_key(k.expose(), registration_id))
                .transpose()
                .map_err(|e| Error::from(AzureError::from(e)))
        };
        Ok(AuthenticationMechanism {
            kind: Some(AuthenticationType::Sas),
            symmetric_key: Some(SymmetricKey { primary_key: derive(primary)?, secondary_key: derive(secondary)? }),
            x509_thumbprint: None,
        })
    }
}

/// Counts of one revocation run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Devices this run disabled or deleted.
    pub changed: usize,
    /// Devices already disabled or absent.
    pub already: usize,
}

/// Disables or deletes `devices` in `hub`, in bulk calls of at most [`HUB_BULK_MAX`]. Any item that fails
/// for another reason than a missing device fails the whole run (the caller retries; every item is
/// idempotent).
pub async fn revoke(
    hub: &HubRegistryClient,
    devices: &[GroupDevice],
    how: Revocation<'_>,
    reason: &str,
) -> Result<Revoked> {
    let mut total = Revoked::default();
    for chunk in devices.chunks(HUB_BULK_MAX) {
        let (items, absent) = match how {
            Revocation::Delete => {
                (chunk.iter().map(|d| ExportImportDevice::new(d.device_id.clone(), ImportMode::Delete)).collect(), 0)
            }
            Revocation::Disable => disable_items(hub, chunk, reason).await?,
            Revocation::DisableAsProvisioned(identity) => (provisioned_items(identity, chunk, reason)?, 0),
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

/// The `update` items disabling every device of `chunk` with the identity DPS gave it, without reading
/// (`update` never creates: a device deleted meanwhile comes back as `DeviceNotFound`).
fn provisioned_items(
    identity: &ProvisionedIdentity,
    chunk: &[GroupDevice],
    reason: &str,
) -> Result<Vec<ExportImportDevice>> {
    chunk
        .iter()
        .map(|device| {
            let mut item = ExportImportDevice::new(device.device_id.clone(), ImportMode::Update);
            item.status = Some(DeviceStatus::Disabled);
            item.status_reason = Some(status_reason(reason));
            item.authentication = Some(identity.authentication(&device.registration_id)?);
            item.capabilities = identity.capabilities;
            Ok(item)
        })
        .collect()
}

fn status_reason(reason: &str) -> String {
    reason.chars().take(128).collect()
}

/// The `updateIfMatchETag` items disabling the enabled devices of `chunk`, and how many were already
/// disabled or missing.
async fn disable_items(
    hub: &HubRegistryClient,
    chunk: &[GroupDevice],
    reason: &str,
) -> Result<(Vec<ExportImportDevice>, usize)> {
    let mut items = Vec::new();
    let mut already = 0;
    for GroupDevice { device_id: id, .. } in chunk {
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
        item.status_reason = Some(status_reason(reason));
        item.authentication = device.authentication;
        item.capabilities = device.capabilities;
        item.device_scope = device.device_scope;
        item.parent_scopes = device.parent_scopes;
        items.push(item);
    }
    Ok((items, already))
}
