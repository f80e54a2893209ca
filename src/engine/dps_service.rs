//! The DPS service API: individual enrollments, enrollment groups, registration states.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::model::{Attestation, Entry, RegistrationState, SymmetricKeys, X509CertificateWithInfo, X509Certificates};
use super::storage::{self, GROUPS, INDIVIDUAL, REGISTRATIONS};
use super::{Shared, auth, certificate_uniqueness, certs, util};

/// Routes of the service API (mounted on the DPS listener).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/enrollments", post(bulk::<false>))
        .route("/enrollments/query", post(query::<false>))
        .route("/enrollments/{id}", get(get_entry::<false>).put(put_entry::<false>).delete(delete_entry::<false>))
        .route("/enrollments/{id}/attestationmechanism", post(attestation_mechanism::<false>))
        .route("/enrollmentGroups", post(bulk::<true>))
        .route("/enrollmentGroups/query", post(query::<true>))
        .route("/enrollmentGroups/{id}", get(get_entry::<true>).put(put_entry::<true>).delete(delete_entry::<true>))
        .route("/enrollmentGroups/{id}/attestationmechanism", post(attestation_mechanism::<true>))
        .route("/registrations/{id}", get(get_registration).delete(delete_registration))
        .route("/registrations/{id}/query", post(query_registrations))
        .with_state(shared)
}

fn table(group: bool) -> &'static str {
    if group { GROUPS } else { INDIVIDUAL }
}

fn key_of(group: bool, id: &str) -> ApiResult<String> {
    if group { util::group_key(id) } else { util::registration_key(id) }
}

fn what(group: bool) -> &'static str {
    if group { "enrollment group" } else { "individual enrollment" }
}

fn guard(shared: &Shared, uri: &Uri, headers: &HeaderMap) -> ApiResult<()> {
    auth::dps(shared, headers)?;
    util::require_api_version(uri)?;
    Ok(())
}

fn json_response<T: serde::Serialize>(status: StatusCode, value: &T, etag: Option<&str>) -> Response {
    let mut resp = (status, axum::Json(value)).into_response();
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
        resp.headers_mut().insert("etag", tag);
    }
    resp
}

/// Validates and normalises a submitted entry (everything that needs no stored state).
pub fn validate_entry(group: bool, key: &str, mut entry: Entry) -> ApiResult<Entry> {
    let body_id = if group { entry.enrollment_group_id.as_deref() } else { entry.registration_id.as_deref() };
    if let Some(b) = body_id
        && !b.eq_ignore_ascii_case(key)
    {
        return Err(ApiError::bad_request(format!("the {} ID in the body does not match the path", what(group))));
    }
    if group {
        entry.enrollment_group_id = Some(key.to_string());
        entry.registration_id = None;
        entry.device_id = None;
        entry.optional_device_information = None;
    } else {
        entry.registration_id = Some(key.to_string());
        entry.enrollment_group_id = None;
        if let Some(d) = entry.device_id.as_deref().filter(|d| !d.is_empty()) {
            util::validate_device_id(d)?;
        }
    }
    entry.registration_state = None;
    match entry.provisioning_status.as_deref() {
        None => entry.provisioning_status = Some("enabled".into()),
        Some("enabled" | "disabled") => {}
        Some(other) => return Err(ApiError::bad_request(format!("invalid provisioningStatus '{other}'"))),
    }
    if let Some(p) = entry.allocation_policy.as_deref()
        && !matches!(p, "hashed" | "geoLatency" | "static" | "custom")
    {
        return Err(ApiError::bad_request(format!("invalid allocationPolicy '{p}'")));
    }
    if let Some(c) = &entry.capabilities
        && !c.get("iotEdge").is_none_or(Value::is_boolean)
    {
        return Err(ApiError::bad_request("capabilities.iotEdge must be a boolean"));
    }
    let att = entry.attestation.take().ok_or_else(|| ApiError::bad_request("attestation is required"))?;
    entry.attestation = Some(validate_attestation(group, att)?);
    Ok(entry)
}

fn validate_attestation(group: bool, mut att: Attestation) -> ApiResult<Attestation> {
    match att.kind.as_str() {
        "symmetricKey" => {
            let keys = att.symmetric_key.get_or_insert_with(SymmetricKeys::default);
            for k in [keys.primary_key.as_deref(), keys.secondary_key.as_deref()].into_iter().flatten() {
                util::validate_key(k)?;
            }
            att.x509 = None;
            att.tpm = None;
        }
        "x509" => {
            let x = att.x509.as_mut().ok_or_else(|| ApiError::bad_request("x509 attestation requires 'x509'"))?;
            let (wanted, unwanted) = if group {
                (&mut x.signing_certificates, &x.client_certificates)
            } else {
                (&mut x.client_certificates, &x.signing_certificates)
            };
            if unwanted.is_some() {
                return Err(ApiError::bad_request(if group {
                    "enrollment groups take signingCertificates or caReferences, not clientCertificates"
                } else {
                    "individual enrollments take clientCertificates or caReferences, not signingCertificates"
                }));
            }
            match wanted {
                Some(certs) => {
                    if certs.primary.is_none() {
                        return Err(ApiError::bad_request("a primary certificate is required"));
                    }
                    normalise_certs(certs)?;
                }
                None if x.ca_references.is_some() => {}
                None => return Err(ApiError::bad_request("x509 attestation requires certificates or caReferences")),
            }
            att.symmetric_key = None;
            att.tpm = None;
        }
        "tpm" => {
            if group {
                return Err(ApiError::bad_request("enrollment groups do not support TPM attestation"));
            }
            let ek = att.tpm.as_ref().and_then(|t| t.get("endorsementKey")).and_then(Value::as_str);
            if ek.is_none_or(|k| util::b64_decode(k).is_none()) {
                return Err(ApiError::bad_request("tpm attestation requires a base64 endorsementKey"));
            }
            att.x509 = None;
            att.symmetric_key = None;
        }
        "none" => {}
        other => return Err(ApiError::bad_request(format!("unknown attestation type '{other}'"))),
    }
    Ok(att)
}

fn normalise_certs(certs: &mut X509Certificates) -> ApiResult<()> {
    for c in [certs.primary.as_mut(), certs.secondary.as_mut()].into_iter().flatten() {
        normalise_cert(c)?;
    }
    Ok(())
}

fn normalise_cert(c: &mut X509CertificateWithInfo) -> ApiResult<()> {
    match c.certificate.as_deref() {
        Some(text) => {
            let der = certs::decode_certificate(text)?;
            c.info = Some(certs::info(&der)?);
            c.certificate = Some(util::b64(&der));
        }
        // No certificate: an update echoing a read (which omits certificates); resolved against the stored one.
        None if c.info.is_some() => {}
        None => return Err(ApiError::bad_request("a certificate is required")),
    }
    Ok(())
}

/// Fills what the stored entry supplies: generated or kept keys, kept certificates, timestamps, etag.
fn merge_with_stored(mut entry: Entry, stored: Option<&Entry>) -> ApiResult<Entry> {
    let now = util::now_utc();
    let old_att = stored.and_then(|s| s.attestation.as_ref());
    if let Some(att) = entry.attestation.as_mut() {
        if att.kind == "symmetricKey" {
            let old = old_att.filter(|a| a.kind == "symmetricKey").and_then(|a| a.symmetric_key.clone());
            let keys = att.symmetric_key.get_or_insert_with(SymmetricKeys::default);
            if keys.primary_key.is_none() {
                keys.primary_key =
                    old.as_ref().and_then(|o| o.primary_key.clone()).or_else(|| Some(util::generate_key()));
            }
            if keys.secondary_key.is_none() {
                keys.secondary_key =
                    old.as_ref().and_then(|o| o.secondary_key.clone()).or_else(|| Some(util::generate_key()));
            }
        }
        if let Some(x) = att.x509.as_mut() {
            let old_x = old_att.and_then(|a| a.x509.as_ref());
            for (new, old) in [
                (x.client_certificates.as_mut(), old_x.and_then(|o| o.client_certificates.as_ref())),
                (x.signing_certificates.as_mut(), old_x.and_then(|o| o.signing_certificates.as_ref())),
            ] {
                let Some(new) = new else { continue };
                for c in [new.primary.as_mut(), new.secondary.as_mut()].into_iter().flatten() {
                    if c.certificate.is_some() {
                        continue;
                    }
                    let want = c.info.as_ref().map(|i| i.sha256_thumbprint.clone());
                    let found = old.into_iter().flat_map(|o| o.iter()).find(|oc| {
                        oc.info.as_ref().map(|i| i.sha256_thumbprint.clone()) == want && oc.certificate.is_some()
                    });
                    match found {
                        Some(oc) => *c = oc.clone(),
                        None => return Err(ApiError::bad_request("a certificate is required")),
                    }
                }
            }
        }
    }
    entry.created_date_time_utc = stored.and_then(|s| s.created_date_time_utc.clone()).or_else(|| Some(now.clone()));
    entry.last_updated_date_time_utc = Some(now);
    entry.etag = Some(util::new_dps_etag());
    Ok(entry)
}

/// Whether an `If-Match` value allows writing over `stored` (a quoted etag, `"…"`): only `*` or that exact
/// quoted etag. A bare or weak form does not match, so a client that loses the quotes is caught here rather
/// than against Azure.
fn if_match_holds(if_match: &str, stored: &str) -> bool {
    let want = if_match.trim();
    want == "*" || want == stored
}

/// Create-or-update with Azure's etag rules, on the writer connection.
fn upsert(
    conn: &rusqlite::Connection,
    group: bool,
    key: &str,
    entry: Entry,
    if_match: Option<&str>,
    create_only: bool,
) -> ApiResult<Entry> {
    let stored: Option<Entry> = storage::get(conn, table(group), key)?;
    match (&stored, if_match) {
        (Some(_), None) => {
            return Err(ApiError::conflict(format!("the {} '{key}' already exists", what(group))));
        }
        (Some(s), Some(m)) if !if_match_holds(m, s.etag.as_deref().unwrap_or_default()) => {
            return Err(ApiError::precondition("the etag does not match"));
        }
        (Some(_), Some(_)) if create_only => {
            return Err(ApiError::conflict(format!("the {} '{key}' already exists", what(group))));
        }
        (None, Some(m)) if m.trim() != "*" => {
            return Err(ApiError::precondition(format!("the {} '{key}' does not exist", what(group))));
        }
        _ => {}
    }
    let entry = merge_with_stored(entry, stored.as_ref())?;
    certificate_uniqueness::check(conn, group, key, &entry)?;
    storage::put(conn, table(group), key, &entry)?;
    Ok(entry)
}

async fn get_entry<const G: bool>(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    guard(&s, &uri, &headers)?;
    let key = key_of(G, &id)?;
    let (entry, reg) = s.store.read(|c| {
        let e: Option<Entry> = storage::get(c, table(G), &key)?;
        let r: Option<Value> = if G { None } else { storage::get(c, REGISTRATIONS, &key)? };
        Ok((e, r))
    })?;
    let mut entry =
        entry.ok_or_else(|| ApiError::not_found(format!("{} '{key}' not found", what(G))))?.for_output(false);
    entry.registration_state = reg;
    Ok(json_response(StatusCode::OK, &entry, entry.etag.as_deref()))
}

async fn put_entry<const G: bool>(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    guard(&s, &uri, &headers)?;
    let key = key_of(G, &id)?;
    let entry: Entry = util::read_json(&headers, body).await?;
    let entry = validate_entry(G, &key, entry)?;
    let if_match = util::if_match(&headers);
    let saved = s.store.write(move |c| upsert(c, G, &key, entry, if_match.as_deref(), false)).await?;
    Ok(json_response(StatusCode::OK, &saved, saved.etag.as_deref()))
}

async fn delete_entry<const G: bool>(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    guard(&s, &uri, &headers)?;
    let key = key_of(G, &id)?;
    let if_match = util::if_match(&headers);
    s.store
        .write(move |c| {
            let stored: Option<Entry> = storage::get(c, table(G), &key)?;
            let stored = stored.ok_or_else(|| ApiError::not_found(format!("{} '{key}' not found", what(G))))?;
            if let Some(m) = if_match.as_deref()
                && !if_match_holds(m, stored.etag.as_deref().unwrap_or_default())
            {
                return Err(ApiError::precondition("the etag does not match"));
            }
            storage::delete(c, table(G), &key)?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn attestation_mechanism<const G: bool>(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    guard(&s, &uri, &headers)?;
    let key = key_of(G, &id)?;
    let entry: Option<Entry> = s.store.read(|c| storage::get(c, table(G), &key))?;
    let entry = entry.ok_or_else(|| ApiError::not_found(format!("{} '{key}' not found", what(G))))?;
    Ok(json_response(StatusCode::OK, &entry.attestation.unwrap_or_default(), None))
}

#[derive(Deserialize)]
struct QuerySpec {
    #[serde(default)]
    query: Option<String>,
}

fn paged_response<T: serde::Serialize>(items: &[T], last: Option<&str>, more: bool, item_type: &str) -> Response {
    let mut resp = (StatusCode::OK, axum::Json(items)).into_response();
    let h = resp.headers_mut();
    h.insert("x-ms-item-type", HeaderValue::from_str(item_type).unwrap_or(HeaderValue::from_static("JSON")));
    if more && let Some(v) = last.and_then(|l| HeaderValue::from_str(&util::continuation_token(l)).ok()) {
        h.insert("x-ms-continuation", v);
    }
    resp
}

async fn query<const G: bool>(
    State(s): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    guard(&s, &uri, &headers)?;
    let spec: Option<QuerySpec> = util::read_json(&headers, body).await?;
    let q = spec.and_then(|s| s.query).unwrap_or_else(|| "SELECT *".into());
    if !q.trim().to_ascii_uppercase().starts_with("SELECT") {
        return Err(ApiError::bad_request("the query must start with SELECT"));
    }
    let limit = util::page_size(&headers)?;
    let after = util::continuation(&headers)?;
    let (rows, more) = s.store.read(|c| storage::page::<Entry>(c, table(G), after.as_deref(), limit))?;
    let last = rows.last().map(|(k, _)| k.clone());
    let items: Vec<Entry> = rows.into_iter().map(|(_, e)| e.for_output(false)).collect();
    Ok(paged_response(&items, last.as_deref(), more, if G { "EnrollmentGroup" } else { "Enrollment" }))
}

#[derive(Deserialize)]
struct BulkRequest {
    #[serde(default, rename = "enrollments")]
    enrollments: Option<Vec<Value>>,
    #[serde(default, rename = "enrollmentGroups")]
    groups: Option<Vec<Value>>,
    mode: String,
}

/// A validated bulk item: key, entry, etag; or why it was refused.
type Prepared = Result<(String, Entry, Option<String>), ApiError>;

/// At most this many entries per bulk call.
pub const MAX_BULK: usize = 10;

async fn bulk<const G: bool>(
    State(s): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    guard(&s, &uri, &headers)?;
    let req: BulkRequest = util::read_json(&headers, body).await?;
    let items = if G { req.groups } else { req.enrollments }.ok_or_else(|| {
        ApiError::bad_request(if G { "enrollmentGroups is required" } else { "enrollments is required" })
    })?;
    if items.is_empty() || items.len() > MAX_BULK {
        return Err(ApiError::bad_request(format!("a bulk operation takes 1 to {MAX_BULK} entries")));
    }
    let mode = req.mode;
    if !matches!(mode.as_str(), "create" | "update" | "updateIfMatchETag" | "delete") {
        return Err(ApiError::bad_request(format!("invalid bulk mode '{mode}'")));
    }
    s.bulk_requests.record(&s.dps_host, if G { "/enrollmentGroups" } else { "/enrollments" }, items.len());
    let id_field = if G { "enrollmentGroupId" } else { "registrationId" };
    // An invalid or missing ID fails the whole request: Azure's per-item errors always name a valid ID (the
    // C# service client throws on an invalid one in the error list).
    let mut keyed = Vec::with_capacity(items.len());
    for item in items {
        let raw_id = item.get(id_field).and_then(Value::as_str).unwrap_or_default().to_string();
        let key = key_of(G, &raw_id)?;
        keyed.push((raw_id, key, item));
    }
    // Validate outside the writer; keep per-item failures.
    let mut prepared: Vec<(String, Prepared)> = Vec::new();
    for (raw_id, key, item) in keyed {
        let res = (|| {
            let etag = item.get("etag").and_then(Value::as_str).map(str::to_string);
            if mode == "delete" {
                return Ok((key, Entry::default(), etag));
            }
            let entry: Entry =
                serde_json::from_value(item).map_err(|e| ApiError::bad_request(format!("invalid entry: {e}")))?;
            Ok((key.clone(), validate_entry(G, &key, entry)?, etag))
        })();
        prepared.push((raw_id, res));
    }
    let result = s
        .store
        .write(move |c| {
            let mut errors = Vec::new();
            for (raw_id, res) in prepared {
                let outcome = res.and_then(|(key, entry, etag)| match mode.as_str() {
                    "create" => upsert(c, G, &key, entry, None, true).map(|_| ()),
                    "update" => upsert(c, G, &key, entry, Some("*"), false).map(|_| ()),
                    "updateIfMatchETag" => {
                        upsert(c, G, &key, entry, Some(etag.as_deref().unwrap_or("\"\"")), false).map(|_| ())
                    }
                    _ => {
                        let stored: Option<Entry> = storage::get(c, table(G), &key)?;
                        match stored {
                            None => Err(ApiError::not_found(format!("{} '{key}' not found", what(G)))),
                            Some(st)
                                if etag
                                    .as_deref()
                                    .is_some_and(|e| !if_match_holds(e, st.etag.as_deref().unwrap_or_default())) =>
                            {
                                Err(ApiError::precondition("the etag does not match"))
                            }
                            Some(_) => storage::delete(c, table(G), &key).map(|_| ()),
                        }
                    }
                });
                if let Err(e) = outcome {
                    errors.push(serde_json::json!({
                        id_field: raw_id,
                        "errorCode": e.kind.dps_code(),
                        "errorStatus": e.message,
                    }));
                }
            }
            Ok(serde_json::json!({ "isSuccessful": errors.is_empty(), "errors": errors }))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &result, None))
}

async fn get_registration(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    guard(&s, &uri, &headers)?;
    let key = util::registration_key(&id)?;
    let reg: Option<RegistrationState> = s.store.read(|c| storage::get(c, REGISTRATIONS, &key))?;
    let reg = reg.ok_or_else(|| ApiError::not_found(format!("registration '{key}' not found")))?;
    Ok(json_response(StatusCode::OK, &reg, reg.etag.as_deref()))
}

async fn delete_registration(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    guard(&s, &uri, &headers)?;
    let key = util::registration_key(&id)?;
    let if_match = util::if_match(&headers);
    s.store
        .write(move |c| {
            let reg: Option<RegistrationState> = storage::get(c, REGISTRATIONS, &key)?;
            let reg = reg.ok_or_else(|| ApiError::not_found(format!("registration '{key}' not found")))?;
            if let Some(m) = if_match.as_deref()
                && !if_match_holds(m, reg.etag.as_deref().unwrap_or_default())
            {
                return Err(ApiError::precondition("the etag does not match"));
            }
            storage::delete(c, REGISTRATIONS, &key)?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn query_registrations(
    State(s): State<Arc<Shared>>,
    Path(group): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    guard(&s, &uri, &headers)?;
    let group = util::group_key(&group)?;
    let _ = util::read_body(&headers, body).await?;
    let limit = util::page_size(&headers)?;
    let after = util::continuation(&headers)?;
    let (rows, more) =
        s.store.read(|c| storage::group_registrations::<RegistrationState>(c, &group, after.as_deref(), limit))?;
    let last = rows.last().map(|(k, _)| k.clone());
    let items: Vec<RegistrationState> = rows.into_iter().map(|(_, r)| r).collect();
    Ok(paged_response(&items, last.as_deref(), more, "DeviceRegistration"))
}
