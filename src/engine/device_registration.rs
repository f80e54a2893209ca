//! The DPS device registration API: `PUT /{idScope}/registrations/{id}/register` and
//! `GET /{idScope}/registrations/{id}/operations/{operationId}`.
//!
//! The decision is taken and recorded synchronously in the PUT (see [`super::decision`]); the PUT answers
//! 202 `assigning` with `Retry-After`, and the first poll of the operation returns the outcome.
//! Refused attempts (no match, wrong credential, disabled entry) are counted per registration ID
//! (see [`super::refusals`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};

use super::decision::{self, Credential, Decision, Source};
use super::error::{ApiError, ApiResult};
use super::hub_registry::StoredDevice;
use super::model::{Device, DeviceAuth, Entry, RegistrationState};
use super::sas::SasToken;
use super::server::PeerChain;
use super::storage::{self, GROUPS, INDIVIDUAL, REGISTRATIONS};
use super::{Shared, certs, util};

/// Seconds a device is told to wait before polling.
pub const RETRY_AFTER_SECS: u32 = 1;
const MAX_OPERATIONS: usize = 200_000;

/// The outcome of one registration attempt, kept for polling.
#[derive(Debug, Clone)]
pub struct Operation {
    registration_id: String,
    /// Keys whose SAS may poll (empty: any scope-valid token), or the leaf certificate's SHA-256.
    keys: Vec<String>,
    leaf_sha256: Option<String>,
    body: Value,
}

/// Recent operations, oldest evicted first.
#[derive(Debug, Default)]
pub struct Operations {
    map: HashMap<String, Operation>,
    order: VecDeque<String>,
}

impl Operations {
    fn insert(&mut self, id: String, op: Operation) {
        if self.order.len() >= MAX_OPERATIONS
            && let Some(old) = self.order.pop_front()
        {
            self.map.remove(&old);
        }
        self.order.push_back(id.clone());
        self.map.insert(id, op);
    }
}

/// Routes of the device API (mounted on the DPS listener).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{scope}/registrations/{id}/register", put(register))
        .route("/{scope}/registrations/{id}/operations/{op}", get(operation))
        .with_state(shared)
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RegisterBody {
    #[serde(default)]
    registration_id: Option<String>,
    #[serde(default)]
    tpm: Option<Value>,
    #[serde(default)]
    payload: Option<Value>,
}

enum Presented {
    Sas(SasToken),
    X509(Arc<Vec<Vec<u8>>>),
}

fn presented(headers: &HeaderMap, peer: &PeerChain) -> ApiResult<Presented> {
    if let Some(h) = headers.get("authorization") {
        let v = h.to_str().map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        return SasToken::parse(v).map(Presented::Sas).map_err(|e| ApiError::unauthorized(e.to_string()));
    }
    match &peer.0 {
        Some(chain) if !chain.is_empty() => Ok(Presented::X509(chain.clone())),
        _ => Err(ApiError::unauthorized("no SAS token and no client certificate")),
    }
}

async fn refuse(s: &Shared, key: &str, reason: String) -> ApiError {
    let (k, r, at) = (key.to_string(), reason.clone(), util::now_utc());
    if let Err(e) = s.store.write(move |c| storage::record_refusal(c, &k, &r, &at)).await {
        tracing::warn!(error = %e, "cannot record a refusal");
    }
    ApiError::unauthorized(reason)
}

async fn register(
    State(s): State<Arc<Shared>>,
    Path((scope, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    peer: Option<axum::Extension<PeerChain>>,
    body: Body,
) -> ApiResult<Response> {
    util::require_api_version(&uri)?;
    let key = util::registration_key(&id)?;
    let req: Option<RegisterBody> = util::read_json(&headers, body).await?;
    let req = req.unwrap_or_default();
    if req.registration_id.as_deref().is_some_and(|b| !b.eq_ignore_ascii_case(&key)) {
        return Err(ApiError::bad_request("the registrationId in the body does not match the path"));
    }
    if !scope.eq_ignore_ascii_case(&s.id_scope) {
        return Err(refuse(&s, &key, format!("unknown ID scope '{scope}'")).await);
    }
    if req.tpm.is_some() {
        return Err(refuse(&s, &key, "TPM attestation is not supported by the engine".into()).await);
    }
    let _ = req.payload;
    let peer = peer.map(|p| p.0).unwrap_or_default();
    let cred = match presented(&headers, &peer) {
        Ok(c) => c,
        Err(e) => return Err(refuse(&s, &key, e.message).await),
    };
    if let Presented::X509(chain) = &cred {
        let cn = chain.first().and_then(|leaf| certs::common_name(leaf));
        if !cn.as_deref().is_some_and(|cn| cn.eq_ignore_ascii_case(&key)) {
            return Err(
                refuse(&s, &key, "the client certificate's common name is not the registration ID".into()).await
            );
        }
    }
    let (individual, groups) = s.store.read(|c| {
        let ind: Option<Entry> = storage::get(c, INDIVIDUAL, &key)?;
        let groups: Vec<(String, Entry)> = storage::all(c, GROUPS)?;
        Ok((ind, groups))
    })?;
    let credential = match &cred {
        Presented::Sas(t) => Credential::Sas(t),
        Presented::X509(chain) => Credential::X509(chain),
    };
    let decision = decision::decide(&s.id_scope, &key, credential, individual.as_ref(), &groups, util::unix_now());
    let leaf_sha256 = match &cred {
        Presented::X509(chain) => chain.first().map(|l| certs::sha256_thumbprint(l)),
        Presented::Sas(_) => None,
    };
    let operation_id = format!("4.{}.{}", util::hex(&util::random_bytes(8)), util::new_uuid());
    let (body, keys) = match decision {
        Decision::Refused { reason } => return Err(refuse(&s, &key, reason).await),
        Decision::Disabled { source, reason } => {
            let _ = refuse(&s, &key, reason).await;
            // Azure's disabled result carries no errorCode (the Java SDK had to stop reading one) and names
            // the group only inside the attestation object, as an assigned result does.
            let mut state = json!({
                "registrationId": key,
                "status": "disabled",
                "lastUpdatedDateTimeUtc": util::now_utc(),
            });
            if let (Source::Group(g), Some(obj)) = (&source, state.as_object_mut()) {
                obj.insert(attestation_field(leaf_sha256.is_some()).into(), json!({ "enrollmentGroupId": g }));
            }
            (json!({ "operationId": operation_id, "status": "disabled", "registrationState": state }), Vec::new())
        }
        Decision::Provision { source, entry, auth } => {
            let keys: Vec<String> = auth
                .symmetric_key
                .as_ref()
                .map(|k| [k.primary_key.clone(), k.secondary_key.clone()].into_iter().flatten().collect())
                .unwrap_or_default();
            let state = provision(&s, &key, source.clone(), *entry, auth).await?;
            let mut state_json = serde_json::to_value(&state)?;
            if let (Source::Group(g), Some(obj)) = (&source, state_json.as_object_mut()) {
                obj.insert(attestation_field(leaf_sha256.is_some()).into(), json!({ "enrollmentGroupId": g }));
            }
            let status = state.status.clone();
            (json!({ "operationId": operation_id, "status": status, "registrationState": state_json }), keys)
        }
    };
    if let Ok(mut ops) = s.operations.lock() {
        ops.insert(operation_id.clone(), Operation { registration_id: key.clone(), keys, leaf_sha256, body });
    }
    let mut resp = (StatusCode::ACCEPTED, axum::Json(json!({ "operationId": operation_id, "status": "assigning" })))
        .into_response();
    resp.headers_mut().insert("retry-after", HeaderValue::from(RETRY_AFTER_SECS));
    Ok(resp)
}

/// The registration result's attestation object, which carries `enrollmentGroupId` for group devices.
fn attestation_field(x509: bool) -> &'static str {
    if x509 { "x509" } else { "symmetricKey" }
}

fn resolve_hubs(s: &Shared, entry: &mut Entry) {
    let resolve = |h: &String| {
        s.hubs
            .iter()
            .find(|hub| {
                hub.host_name.eq_ignore_ascii_case(h)
                    || hub.name.eq_ignore_ascii_case(h)
                    || h.to_ascii_lowercase().starts_with(&format!("{}.", hub.name.to_ascii_lowercase()))
            })
            .map(|hub| hub.host_name.clone())
            .unwrap_or_else(|| h.clone())
    };
    if let Some(list) = entry.iot_hubs.as_mut() {
        *list = list.iter().map(resolve).collect();
    }
    if let Some(h) = entry.iot_hub_host_name.as_mut() {
        *h = resolve(h);
    }
}

async fn provision(
    s: &Arc<Shared>,
    key: &str,
    source: Source,
    mut entry: Entry,
    auth: DeviceAuth,
) -> ApiResult<RegistrationState> {
    resolve_hubs(s, &mut entry);
    let hubs = s.hub_hosts();
    let device_id = match source {
        Source::Individual => entry.device_id.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| key.to_string()),
        Source::Group(_) => key.to_string(),
    };
    let group = match &source {
        Source::Group(g) => Some(g.clone()),
        Source::Individual => None,
    };
    let key = key.to_string();
    s.store
        .write(move |c| {
            let previous: Option<RegistrationState> = storage::get(c, REGISTRATIONS, &key)?;
            let now = util::now_utc();
            let prev_hub = previous.as_ref().and_then(|p| p.assigned_hub.clone());
            let created = previous.as_ref().and_then(|p| p.created_date_time_utc.clone()).or(Some(now.clone()));
            let Some(hub) = decision::allocate(&entry, &key, &hubs, prev_hub.as_deref()) else {
                let state = RegistrationState {
                    registration_id: key.clone(),
                    created_date_time_utc: created,
                    status: "failed".into(),
                    error_code: Some(400_207),
                    error_message: Some("no linked IoT hub matches the enrollment's allocation".into()),
                    last_updated_date_time_utc: Some(now),
                    etag: Some(util::new_dps_etag()),
                    ..Default::default()
                };
                storage::put_registration(c, &key, group.as_deref(), &state)?;
                return Ok(state);
            };
            let stored: Option<StoredDevice> = storage::get_device(c, &hub, &device_id)?;
            let existed_in_hub = stored.is_some();
            let stored_device = match stored {
                Some(mut sd) => {
                    sd.device.authentication = Some(auth);
                    sd.device.capabilities = Some(json!({ "iotEdge": entry.iot_edge() }));
                    sd.device.etag = Some(util::new_hub_etag());
                    sd
                }
                None => {
                    let now = util::now_utc();
                    let never = "0001-01-01T00:00:00Z".to_string();
                    StoredDevice {
                        device: Device {
                            device_id: device_id.clone(),
                            generation_id: Some(format!("63{}", &util::hex(&util::random_bytes(8))[..14])),
                            etag: Some(util::new_hub_etag()),
                            connection_state: Some("Disconnected".into()),
                            status: Some("enabled".into()),
                            status_reason: None,
                            connection_state_updated_time: Some(never.clone()),
                            status_updated_time: Some(now),
                            last_activity_time: Some(never),
                            cloud_to_device_message_count: Some(0),
                            authentication: Some(auth),
                            capabilities: Some(json!({ "iotEdge": entry.iot_edge() })),
                            device_scope: None,
                            parent_scopes: None,
                        },
                        twin: entry.initial_twin.clone(),
                        twin_version: 1,
                    }
                }
            };
            storage::put_device(c, &hub, &device_id, &stored_device)?;
            let substatus = match &prev_hub {
                Some(p) if *p != hub => {
                    if entry.reprovision_policy.is_none_or(|r| r.migrate_device_data) {
                        "deviceDataMigrated"
                    } else {
                        "deviceDataReset"
                    }
                }
                // Since api-version 2019-04-15 a device that already exists in the hub it is assigned to is
                // "reprovisionedToInitialAssignment"; "initialAssignment" is for a first assignment only.
                _ if existed_in_hub => "reprovisionedToInitialAssignment",
                _ => "initialAssignment",
            };
            let state = RegistrationState {
                registration_id: key.clone(),
                created_date_time_utc: created,
                assigned_hub: Some(hub),
                device_id: Some(device_id),
                status: "assigned".into(),
                substatus: Some(substatus.into()),
                error_code: None,
                error_message: None,
                last_updated_date_time_utc: Some(now),
                etag: Some(util::new_dps_etag()),
                payload: None,
            };
            storage::put_registration(c, &key, group.as_deref(), &state)?;
            Ok(state)
        })
        .await
}

async fn operation(
    State(s): State<Arc<Shared>>,
    Path((scope, id, op)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    peer: Option<axum::Extension<PeerChain>>,
) -> ApiResult<Response> {
    util::require_api_version(&uri)?;
    let key = util::registration_key(&id)?;
    if !scope.eq_ignore_ascii_case(&s.id_scope) {
        return Err(ApiError::unauthorized(format!("unknown ID scope '{scope}'")));
    }
    let record = s.operations.lock().ok().and_then(|ops| ops.map.get(&op).cloned());
    let record = record
        .filter(|r| r.registration_id == key)
        .ok_or_else(|| ApiError::not_found(format!("operation '{op}' not found")))?;
    let peer = peer.map(|p| p.0).unwrap_or_default();
    match presented(&headers, &peer)? {
        Presented::Sas(t) => {
            let resource = format!("{}/registrations/{key}", s.id_scope);
            t.check_scope(&resource, Some("registration"), util::unix_now())
                .map_err(|e| ApiError::unauthorized(e.to_string()))?;
            if !record.keys.is_empty() && !record.keys.iter().any(|k| t.signed_with(k)) {
                return Err(ApiError::unauthorized("the SAS token does not verify"));
            }
        }
        Presented::X509(chain) => {
            let leaf = chain.first().map(|l| certs::sha256_thumbprint(l));
            if record.leaf_sha256.is_some() && leaf != record.leaf_sha256 {
                return Err(ApiError::unauthorized("the client certificate differs from the registering one"));
            }
        }
    }
    Ok((StatusCode::OK, axum::Json(record.body)).into_response())
}
