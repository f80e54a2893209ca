//! `HubRegistryClient`: the IoT Hub identity registry (api-version 2021-04-12).

use std::sync::Arc;

use reqwest::Method;

use super::connection_string::ConnectionString;
use super::dps::{bulk_answer, check_bulk_size};
use super::error::AzureError;
use super::http::{
    ClientOptions, Page, Request, Transport, base_url, build_client, bulk_chunks, path_segment, quote_etag,
};
use super::rate::{HUB_REGISTRY_PER_MINUTE, RateBudget};
use super::sas::TokenCache;
use super::wire::{BulkRegistryOperationResult, Device, ExportImportDevice, QuerySpecification, Twin};

/// The registry API version this client speaks.
pub const HUB_API_VERSION: &str = "2021-04-12";
/// Most devices one bulk registry call accepts.
pub const HUB_BULK_MAX: usize = 100;

/// Client of one IoT hub's identity registry.
#[derive(Debug, Clone)]
pub struct HubRegistryClient {
    transport: Transport,
    host_name: String,
}

impl HubRegistryClient {
    /// A client for the hub named by a service connection string (token audience = its `HostName`).
    pub fn new(connection_string: &ConnectionString, options: ClientOptions) -> Result<Self, AzureError> {
        let tokens = Arc::new(TokenCache::from_connection_string(connection_string)?);
        let client = build_client(options.ca_certificate_pem.as_deref(), None, options.timeout)?;
        let base = base_url(options.endpoint.as_deref(), &connection_string.host_name)?;
        let rate = options.rate_budget.unwrap_or_else(|| Arc::new(RateBudget::new(HUB_REGISTRY_PER_MINUTE)));
        Ok(HubRegistryClient {
            transport: Transport::new(client, base, HUB_API_VERSION, Some(tokens), options.retry, Some(rate)),
            host_name: connection_string.host_name.clone(),
        })
    }

    /// The hub host name (token audience; what DPS reports as `assignedHub`).
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// The base URL requests go to.
    pub fn endpoint(&self) -> &str {
        self.transport.base()
    }

    /// `GET /devices/{id}`.
    pub async fn get_device(&self, device_id: &str) -> Result<Device, AzureError> {
        self.transport.get(device_path(device_id)).await
    }

    /// `PUT /devices/{id}` without If-Match: creates; an existing device answers 409 (`DeviceAlreadyExists`).
    pub async fn create_device(&self, device: &Device) -> Result<Device, AzureError> {
        let request = Request::new(Method::PUT, device_path(&device.device_id)).json(device)?;
        self.transport.send(&request).await?.json()
    }

    /// `PUT /devices/{id}` with `If-Match` (the etag, or `*` when `None`). PUT replaces every updatable field:
    /// send the whole device as read.
    pub async fn update_device(&self, device: &Device, if_match: Option<&str>) -> Result<Device, AzureError> {
        let request = Request::new(Method::PUT, device_path(&device.device_id))
            .json(device)?
            .header("If-Match", quote_etag(if_match.unwrap_or("*")));
        self.transport.send(&request).await?.json()
    }

    /// `DELETE /devices/{id}` with `If-Match` (the etag, or `*` when `None`); 404 counts as success.
    pub async fn delete_device(&self, device_id: &str, if_match: Option<&str>) -> Result<(), AzureError> {
        self.transport.delete(device_path(device_id), Some(if_match.unwrap_or("*"))).await
    }

    /// One bulk `POST /devices` of at most [`HUB_BULK_MAX`] items (each item counts against the budget). The hub
    /// answers 400 when any item failed; that answer is still `Ok`, with per-device results
    /// ([`BulkRegistryOperationResult::outcome`]) telling a missing device from other failures.
    pub async fn bulk(&self, devices: &[ExportImportDevice]) -> Result<BulkRegistryOperationResult, AzureError> {
        check_bulk_size(devices.len(), HUB_BULK_MAX)?;
        if devices.is_empty() {
            return Ok(BulkRegistryOperationResult { is_successful: true, ..Default::default() });
        }
        let request = Request::new(Method::POST, "/devices".into()).json(&devices)?.cost(devices.len());
        bulk_answer(self.transport.send_raw(&request).await?)
    }

    /// Bulk over any number of items, in calls of [`HUB_BULK_MAX`]; results merged in order.
    pub async fn bulk_chunked(
        &self,
        devices: &[ExportImportDevice],
    ) -> Result<BulkRegistryOperationResult, AzureError> {
        let mut results = Vec::new();
        for chunk in bulk_chunks(devices, HUB_BULK_MAX) {
            results.push(self.bulk(chunk).await?);
        }
        Ok(BulkRegistryOperationResult::merge(results))
    }

    /// One page of `POST /devices/query` (e.g. `SELECT * FROM devices`).
    pub async fn query_devices(
        &self,
        query: &str,
        page_size: Option<u32>,
        continuation: Option<&str>,
    ) -> Result<Page<Twin>, AzureError> {
        let spec = QuerySpecification::new(query);
        self.transport.query_page("/devices/query".into(), Some(&spec), page_size, continuation).await
    }

    /// Every page of `POST /devices/query`.
    pub async fn query_all_devices(&self, query: &str, page_size: Option<u32>) -> Result<Vec<Twin>, AzureError> {
        let spec = QuerySpecification::new(query);
        self.transport.query_all("/devices/query".into(), Some(&spec), page_size).await
    }
}

fn device_path(device_id: &str) -> String {
    format!("/devices/{}", path_segment(device_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::wire::{BulkItemOutcome, DeviceRegistryOperationError, ErrorCodeValue};

    #[test]
    fn device_paths_escape_special_characters() {
        assert_eq!(device_path("a%b?c"), "/devices/a%25b%3Fc");
        assert_eq!(device_path("dev:1@x"), "/devices/dev:1@x");
    }

    #[test]
    fn bulk_outcomes_tell_a_missing_device_from_other_failures() {
        let error = |id: &str, code: ErrorCodeValue| DeviceRegistryOperationError {
            device_id: id.into(),
            error_code: code,
            error_status: None,
            module_id: None,
            operation: None,
        };
        let result = BulkRegistryOperationResult {
            is_successful: false,
            errors: vec![
                error("by-name", ErrorCodeValue::Name("DeviceNotFound".into())),
                error("by-number", ErrorCodeValue::Number(404_001)),
                error("stale", ErrorCodeValue::Name("PreconditionFailed".into())),
            ],
            warnings: vec![],
        };
        assert_eq!(result.outcome("by-name"), BulkItemOutcome::DeviceNotFound);
        assert_eq!(result.outcome("by-number"), BulkItemOutcome::DeviceNotFound);
        assert!(matches!(result.outcome("stale"), BulkItemOutcome::Failed(e) if e.device_id == "stale"));
        assert_eq!(result.outcome("fine"), BulkItemOutcome::Done);
    }

    #[test]
    fn bulk_results_merge() {
        let failed = BulkRegistryOperationResult {
            is_successful: false,
            errors: vec![DeviceRegistryOperationError {
                device_id: "d1".into(),
                error_code: ErrorCodeValue::Name("DeviceNotFound".into()),
                error_status: None,
                module_id: None,
                operation: None,
            }],
            warnings: vec![],
        };
        let ok = BulkRegistryOperationResult { is_successful: true, ..Default::default() };
        let merged = BulkRegistryOperationResult::merge([ok, failed]);
        assert!(!merged.is_successful);
        assert_eq!(merged.errors.len(), 1);
        assert!(check_bulk_size(101, HUB_BULK_MAX).is_err());
    }
}
