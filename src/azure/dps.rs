//! `DpsServiceClient`: the DPS service API (api-version 2021-10-01).

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::connection_string::ConnectionString;
use super::error::AzureError;
use super::http::{
    ClientOptions, Page, Request, Transport, base_url, build_client, bulk_chunks, path_segment, quote_etag,
};
use super::rate::{DPS_SERVICE_PER_MINUTE, RateBudget};
use super::sas::TokenCache;
use super::wire::{
    AttestationMechanism, BulkEnrollmentGroupOperation, BulkEnrollmentOperation, BulkEnrollmentOperationResult,
    BulkOperationMode, DeviceRegistrationState, EngineRefusal, EnrollmentGroup, IndividualEnrollment,
    QuerySpecification,
};

/// The service API version this client speaks.
pub const DPS_SERVICE_API_VERSION: &str = "2021-10-01";
/// Most items one DPS bulk call accepts.
pub const DPS_BULK_MAX: usize = 10;

/// Client of one DPS instance's service API.
#[derive(Debug, Clone)]
pub struct DpsServiceClient {
    transport: Transport,
    host_name: String,
}

impl DpsServiceClient {
    /// A client for the DPS named by a service connection string (token audience = its `HostName`).
    pub fn new(connection_string: &ConnectionString, options: ClientOptions) -> Result<Self, AzureError> {
        let tokens = Arc::new(TokenCache::from_connection_string(connection_string)?);
        let client = build_client(options.ca_certificate_pem.as_deref(), None, options.timeout)?;
        let base = base_url(options.endpoint.as_deref(), &connection_string.host_name)?;
        let rate = options.rate_budget.unwrap_or_else(|| Arc::new(RateBudget::new(DPS_SERVICE_PER_MINUTE)));
        Ok(DpsServiceClient {
            transport: Transport::new(client, base, DPS_SERVICE_API_VERSION, Some(tokens), options.retry, Some(rate)),
            host_name: connection_string.host_name.clone(),
        })
    }

    /// The DPS host name (token audience).
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// The base URL requests go to.
    pub fn endpoint(&self) -> &str {
        self.transport.base()
    }

    // ----- individual enrollments -----

    /// `GET /enrollments/{id}` (symmetric keys are not returned; see [`Self::enrollment_attestation`]).
    pub async fn get_enrollment(&self, registration_id: &str) -> Result<IndividualEnrollment, AzureError> {
        self.transport.get(enrollment_path(registration_id)).await
    }

    /// `PUT /enrollments/{id}` without If-Match: creates; an existing entry answers 409 (`Conflict`).
    pub async fn create_enrollment(
        &self,
        enrollment: &IndividualEnrollment,
    ) -> Result<IndividualEnrollment, AzureError> {
        self.put(enrollment_path(&enrollment.registration_id), enrollment, None).await
    }

    /// `PUT /enrollments/{id}` with `If-Match` (the etag, or `*` when `None`): replaces; stale etag -> 412.
    pub async fn update_enrollment(
        &self,
        enrollment: &IndividualEnrollment,
        if_match: Option<&str>,
    ) -> Result<IndividualEnrollment, AzureError> {
        self.put(enrollment_path(&enrollment.registration_id), enrollment, Some(if_match.unwrap_or("*"))).await
    }

    /// `DELETE /enrollments/{id}`, conditional when `if_match` is given; 404 counts as success.
    pub async fn delete_enrollment(&self, registration_id: &str, if_match: Option<&str>) -> Result<(), AzureError> {
        self.transport.delete(enrollment_path(registration_id), if_match).await
    }

    /// `POST /enrollments/{id}/attestationmechanism`: the attestation including symmetric keys.
    pub async fn enrollment_attestation(&self, registration_id: &str) -> Result<AttestationMechanism, AzureError> {
        let path = format!("{}/attestationmechanism", enrollment_path(registration_id));
        self.post_empty(path).await
    }

    /// One page of `POST /enrollments/query`.
    pub async fn query_enrollments(
        &self,
        query: &str,
        page_size: Option<u32>,
        continuation: Option<&str>,
    ) -> Result<Page<IndividualEnrollment>, AzureError> {
        let spec = QuerySpecification::new(query);
        self.transport.query_page("/enrollments/query".into(), Some(&spec), page_size, continuation).await
    }

    /// Every page of `POST /enrollments/query`.
    pub async fn query_all_enrollments(
        &self,
        query: &str,
        page_size: Option<u32>,
    ) -> Result<Vec<IndividualEnrollment>, AzureError> {
        let spec = QuerySpecification::new(query);
        self.transport.query_all("/enrollments/query".into(), Some(&spec), page_size).await
    }

    /// One `POST /enrollments` bulk call; more than [`DPS_BULK_MAX`] items is refused locally with a `Config`
    /// error. Use [`Self::bulk_enrollments_chunked`] for more.
    pub async fn bulk_enrollments(
        &self,
        mode: BulkOperationMode,
        enrollments: &[IndividualEnrollment],
    ) -> Result<BulkEnrollmentOperationResult, AzureError> {
        check_bulk_size(enrollments.len(), DPS_BULK_MAX)?;
        let body = BulkEnrollmentOperation { enrollments: enrollments.to_vec(), mode };
        self.bulk("/enrollments".into(), &body, enrollments.len()).await
    }

    /// Bulk over any number of enrollments, in calls of [`DPS_BULK_MAX`]; results merged in order. Stops at
    /// the first call that fails outright.
    pub async fn bulk_enrollments_chunked(
        &self,
        mode: BulkOperationMode,
        enrollments: &[IndividualEnrollment],
    ) -> Result<BulkEnrollmentOperationResult, AzureError> {
        let mut results = Vec::new();
        for chunk in bulk_chunks(enrollments, DPS_BULK_MAX) {
            results.push(self.bulk_enrollments(mode, chunk).await?);
        }
        Ok(BulkEnrollmentOperationResult::merge(results))
    }

    // ----- enrollment groups -----

    /// `GET /enrollmentGroups/{id}`.
    pub async fn get_enrollment_group(&self, group_id: &str) -> Result<EnrollmentGroup, AzureError> {
        self.transport.get(group_path(group_id)).await
    }

    /// `PUT /enrollmentGroups/{id}` without If-Match: creates; existing -> 409.
    pub async fn create_enrollment_group(&self, group: &EnrollmentGroup) -> Result<EnrollmentGroup, AzureError> {
        self.put(group_path(&group.enrollment_group_id), group, None).await
    }

    /// `PUT /enrollmentGroups/{id}` with `If-Match` (etag, or `*` when `None`).
    pub async fn update_enrollment_group(
        &self,
        group: &EnrollmentGroup,
        if_match: Option<&str>,
    ) -> Result<EnrollmentGroup, AzureError> {
        self.put(group_path(&group.enrollment_group_id), group, Some(if_match.unwrap_or("*"))).await
    }

    /// `DELETE /enrollmentGroups/{id}`, conditional when `if_match` is given; 404 counts as success.
    pub async fn delete_enrollment_group(&self, group_id: &str, if_match: Option<&str>) -> Result<(), AzureError> {
        self.transport.delete(group_path(group_id), if_match).await
    }

    /// `POST /enrollmentGroups/{id}/attestationmechanism`: the attestation including symmetric keys.
    pub async fn enrollment_group_attestation(&self, group_id: &str) -> Result<AttestationMechanism, AzureError> {
        self.post_empty(format!("{}/attestationmechanism", group_path(group_id))).await
    }

    /// One page of `POST /enrollmentGroups/query`.
    pub async fn query_enrollment_groups(
        &self,
        query: &str,
        page_size: Option<u32>,
        continuation: Option<&str>,
    ) -> Result<Page<EnrollmentGroup>, AzureError> {
        let spec = QuerySpecification::new(query);
        self.transport.query_page("/enrollmentGroups/query".into(), Some(&spec), page_size, continuation).await
    }

    /// Every page of `POST /enrollmentGroups/query`.
    pub async fn query_all_enrollment_groups(
        &self,
        query: &str,
        page_size: Option<u32>,
    ) -> Result<Vec<EnrollmentGroup>, AzureError> {
        let spec = QuerySpecification::new(query);
        self.transport.query_all("/enrollmentGroups/query".into(), Some(&spec), page_size).await
    }

    /// One `POST /enrollmentGroups` bulk call of at most [`DPS_BULK_MAX`] groups.
    pub async fn bulk_enrollment_groups(
        &self,
        mode: BulkOperationMode,
        groups: &[EnrollmentGroup],
    ) -> Result<BulkEnrollmentOperationResult, AzureError> {
        check_bulk_size(groups.len(), DPS_BULK_MAX)?;
        let body = BulkEnrollmentGroupOperation { enrollment_groups: groups.to_vec(), mode };
        self.bulk("/enrollmentGroups".into(), &body, groups.len()).await
    }

    /// Bulk over any number of groups, in calls of [`DPS_BULK_MAX`]; results merged in order.
    pub async fn bulk_enrollment_groups_chunked(
        &self,
        mode: BulkOperationMode,
        groups: &[EnrollmentGroup],
    ) -> Result<BulkEnrollmentOperationResult, AzureError> {
        let mut results = Vec::new();
        for chunk in bulk_chunks(groups, DPS_BULK_MAX) {
            results.push(self.bulk_enrollment_groups(mode, chunk).await?);
        }
        Ok(BulkEnrollmentOperationResult::merge(results))
    }

    // ----- registration states -----

    /// `GET /registrations/{id}`.
    pub async fn get_registration_state(&self, registration_id: &str) -> Result<DeviceRegistrationState, AzureError> {
        self.transport.get(registration_path(registration_id)).await
    }

    /// `DELETE /registrations/{id}`, conditional when `if_match` is given; 404 counts as success.
    pub async fn delete_registration_state(
        &self,
        registration_id: &str,
        if_match: Option<&str>,
    ) -> Result<(), AzureError> {
        self.transport.delete(registration_path(registration_id), if_match).await
    }

    /// One page of `POST /registrations/{groupId}/query`: the devices registered through a group.
    pub async fn query_registration_states(
        &self,
        group_id: &str,
        page_size: Option<u32>,
        continuation: Option<&str>,
    ) -> Result<Page<DeviceRegistrationState>, AzureError> {
        let path = format!("{}/query", registration_path(group_id));
        self.transport.query_page(path, None, page_size, continuation).await
    }

    /// Every page of `POST /registrations/{groupId}/query`.
    pub async fn query_all_registration_states(
        &self,
        group_id: &str,
        page_size: Option<u32>,
    ) -> Result<Vec<DeviceRegistrationState>, AzureError> {
        self.transport.query_all(format!("{}/query", registration_path(group_id)), None, page_size).await
    }

    // ----- local engine only -----

    /// `GET /engine/refusals/{id}`: the refused registration attempts the local engine counted for `id`.
    /// `None` when it counted none, or when the service is not the engine (Azure has no such resource and
    /// answers 404).
    pub async fn engine_refusal(&self, registration_id: &str) -> Result<Option<EngineRefusal>, AzureError> {
        match self.transport.get(format!("/engine/refusals/{}", path_segment(registration_id))).await {
            Ok(refusal) => Ok(Some(refusal)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    // ----- helpers -----

    async fn put<T: Serialize + DeserializeOwned>(
        &self,
        path: String,
        body: &T,
        if_match: Option<&str>,
    ) -> Result<T, AzureError> {
        let mut request = Request::new(Method::PUT, path).json(body)?;
        if let Some(etag) = if_match {
            request = request.header("If-Match", quote_etag(etag));
        }
        self.transport.send(&request).await?.json()
    }

    async fn post_empty<T: DeserializeOwned>(&self, path: String) -> Result<T, AzureError> {
        let mut request = Request::new(Method::POST, path);
        request.body = Some(Vec::new());
        self.transport.send(&request).await?.json()
    }

    async fn bulk(
        &self,
        path: String,
        body: &impl Serialize,
        items: usize,
    ) -> Result<BulkEnrollmentOperationResult, AzureError> {
        if items == 0 {
            return Ok(BulkEnrollmentOperationResult { is_successful: true, errors: Vec::new() });
        }
        let request = Request::new(Method::POST, path).json(body)?.cost(items);
        bulk_answer(self.transport.send_raw(&request).await?)
    }
}

/// A bulk answer: 200 with the result, or a 400 whose body is still a per-item result.
pub(crate) fn bulk_answer<T: DeserializeOwned>(answer: super::http::Answer) -> Result<T, AzureError> {
    if answer.status.is_success() {
        return answer.json();
    }
    if answer.status == StatusCode::BAD_REQUEST
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&answer.body)
        && value.get("isSuccessful").is_some()
        && let Ok(result) = serde_json::from_value(value)
    {
        return Ok(result);
    }
    Err(AzureError::from_response(answer.status, &answer.headers, &answer.body))
}

/// Refuses bulk inputs larger than the service accepts.
pub(crate) fn check_bulk_size(len: usize, max: usize) -> Result<(), AzureError> {
    if len > max {
        return Err(AzureError::Config(format!(
            "a bulk call takes at most {max} items, got {len}; use the chunked helper"
        )));
    }
    Ok(())
}

fn enrollment_path(registration_id: &str) -> String {
    format!("/enrollments/{}", path_segment(registration_id))
}

fn group_path(group_id: &str) -> String {
    format!("/enrollmentGroups/{}", path_segment(group_id))
}

fn registration_path(id: &str) -> String {
    format!("/registrations/{}", path_segment(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::wire::BulkEnrollmentOperationError;

    #[test]
    fn bulk_size_is_checked_and_results_merge() {
        assert!(check_bulk_size(10, DPS_BULK_MAX).is_ok());
        assert!(matches!(check_bulk_size(11, DPS_BULK_MAX), Err(AzureError::Config(_))));
        let err = |id: &str| BulkEnrollmentOperationError {
            registration_id: Some(id.into()),
            error_code: 409201,
            ..Default::default()
        };
        let merged = BulkEnrollmentOperationResult::merge([
            BulkEnrollmentOperationResult { is_successful: true, errors: vec![] },
            BulkEnrollmentOperationResult { is_successful: false, errors: vec![err("a")] },
            BulkEnrollmentOperationResult { is_successful: false, errors: vec![err("b")] },
        ]);
        assert!(!merged.is_successful);
        assert_eq!(merged.errors.iter().filter_map(BulkEnrollmentOperationError::id).collect::<Vec<_>>(), ["a", "b"]);
        assert!(BulkEnrollmentOperationResult::merge([]).is_successful);
    }

    #[test]
    fn paths_escape_ids() {
        assert_eq!(enrollment_path("dev 1"), "/enrollments/dev%201");
        assert_eq!(group_path("g/1"), "/enrollmentGroups/g%2F1");
        assert_eq!(registration_path("r"), "/registrations/r");
    }
}
