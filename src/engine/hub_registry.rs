//! The IoT Hub identity registry API: devices, bulk import, query.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::model::{Device, DeviceAuth, SymmetricKeys};
use super::{Hub, Shared, auth, storage, util};

/// A device as stored: the identity and its twin (tags, desired and reported properties).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredDevice {
    /// The identity.
    pub device: Device,
    /// `{tags, properties{desired, reported}}`.
    #[serde(default)]
    pub twin: Option<Value>,
    /// Twin version.
    #[serde(default)]
    pub twin_version: u64,
}

#[derive(Clone)]
struct HubState {
    shared: Arc<Shared>,
    idx: usize,
}

impl HubState {
    fn hub(&self) -> ApiResult<&Hub> {
        self.shared.hubs.get(self.idx).ok_or_else(|| ApiError::internal("unknown hub").hub())
    }
    fn guard(&self, uri: &Uri, headers: &HeaderMap) -> ApiResult<&Hub> {
        let hub = self.hub()?;
        auth::hub(hub, headers)?;
        util::require_api_version(uri).map_err(ApiError::hub)?;
        Ok(hub)
    }
}

/// Routes of hub number `idx` (0-based).
pub fn router(shared: Arc<Shared>, idx: usize) -> Router {
    Router::new()
        .route("/devices", post(bulk).get(list_devices))
        .route("/devices/query", post(query))
        .route("/devices/{id}", get(get_device).put(put_device).delete(delete_device))
        .with_state(HubState { shared, idx })
}

fn device_response(status: StatusCode, d: &Device) -> Response {
    let mut resp = (status, axum::Json(d)).into_response();
    if let Some(tag) = d.etag.as_deref().and_then(|t| HeaderValue::from_str(&format!("\"{t}\"")).ok()) {
        resp.headers_mut().insert("etag", tag);
    }
    resp
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Device {id} not found")).hub()
}

async fn get_device(
    State(st): State<HubState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let hub = st.guard(&uri, &headers)?;
    util::validate_device_id(&id).map_err(ApiError::hub)?;
    let host = hub.host_name.clone();
    let d: Option<StoredDevice> =
        st.shared.store.read(|c| storage::get_device(c, &host, &id)).map_err(ApiError::hub)?;
    let d = d.ok_or_else(|| not_found(&id))?;
    Ok(device_response(StatusCode::OK, &d.device))
}

/// Validates a submitted device and fills defaults (keys kept from `stored` or generated).
pub fn prepare_device(id: &str, mut d: Device, stored: Option<&Device>) -> ApiResult<Device> {
    if !d.device_id.is_empty() && d.device_id != id {
        return Err(ApiError::bad_request("the deviceId in the body does not match the path"));
    }
    d.device_id = id.to_string();
    let status = d.status.clone().unwrap_or_else(|| "enabled".into());
    if status != "enabled" && status != "disabled" {
        return Err(ApiError::bad_request(format!("invalid status '{status}'")));
    }
    if d.status_reason.as_deref().is_some_and(|r| r.chars().count() > 128) {
        return Err(ApiError::bad_request("statusReason is longer than 128 characters"));
    }
    let mut a = d.authentication.take().unwrap_or_default();
    let kind = a.kind.clone().unwrap_or_else(|| "sas".into());
    match kind.as_str() {
        "sas" => {
            let old = stored.and_then(|s| s.authentication.as_ref()).and_then(|a| a.symmetric_key.clone());
            let keys = a.symmetric_key.get_or_insert_with(SymmetricKeys::default);
            for k in [keys.primary_key.as_deref(), keys.secondary_key.as_deref()].into_iter().flatten() {
                util::validate_key(k)?;
            }
            if keys.primary_key.is_none() {
                keys.primary_key = old
                    .as_ref()
                    .and_then(|o| o.primary_key.clone())
                    .or_else(|| Some(util::b64(&util::random_bytes(32))));
            }
            if keys.secondary_key.is_none() {
                keys.secondary_key = old
                    .as_ref()
                    .and_then(|o| o.secondary_key.clone())
                    .or_else(|| Some(util::b64(&util::random_bytes(32))));
            }
            a.x509_thumbprint = None;
        }
        "selfSigned" => {
            let has = a.x509_thumbprint.as_ref().is_some_and(|t| t.primary_thumbprint.is_some());
            if !has {
                return Err(ApiError::bad_request(
                    "selfSigned authentication requires x509Thumbprint.primaryThumbprint",
                ));
            }
            a.symmetric_key = None;
        }
        "certificateAuthority" | "none" => {
            a.symmetric_key = None;
            a.x509_thumbprint = None;
        }
        other => return Err(ApiError::bad_request(format!("unknown authentication type '{other}'"))),
    }
    a.kind = Some(kind);
    d.authentication = Some(a);
    if let Some(c) = &d.capabilities
        && !c.get("iotEdge").is_none_or(Value::is_boolean)
    {
        return Err(ApiError::bad_request("capabilities.iotEdge must be a boolean"));
    }
    if d.capabilities.is_none() {
        d.capabilities = Some(json!({ "iotEdge": false }));
    }
    let now = util::now_utc();
    let never = "0001-01-01T00:00:00Z".to_string();
    d.generation_id = stored.and_then(|s| s.generation_id.clone()).or_else(|| Some(new_generation_id()));
    d.etag = Some(util::new_hub_etag());
    d.connection_state = Some("Disconnected".into());
    let status_changed = stored.is_none_or(|s| s.status.as_deref() != Some(status.as_str()));
    d.status_updated_time = if status_changed {
        Some(now)
    } else {
        stored.and_then(|s| s.status_updated_time.clone()).or(Some(never.clone()))
    };
    d.status = Some(status);
    d.connection_state_updated_time =
        stored.and_then(|s| s.connection_state_updated_time.clone()).or(Some(never.clone()));
    d.last_activity_time = stored.and_then(|s| s.last_activity_time.clone()).or(Some(never));
    d.cloud_to_device_message_count = Some(0);
    Ok(d)
}

fn new_generation_id() -> String {
    let b = util::random_bytes(8);
    format!("63{:016}", u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) % 10_000_000_000_000_000)
}

/// Creates or replaces a device with the registry's etag rules.
fn upsert(
    conn: &rusqlite::Connection,
    hub: &str,
    id: &str,
    device: Device,
    if_match: Option<&str>,
) -> ApiResult<Device> {
    let stored: Option<StoredDevice> = storage::get_device(conn, hub, id)?;
    match (&stored, if_match) {
        (Some(_), None) => return Err(ApiError::conflict(format!("Device {id} already exists"))),
        (Some(s), Some(m)) if !util::etag_matches(m, s.device.etag.as_deref().unwrap_or_default()) => {
            return Err(ApiError::precondition("the etag does not match"));
        }
        (None, Some(m)) if util::bare_etag(m) != "*" => {
            return Err(ApiError::not_found(format!("Device {id} not found")));
        }
        _ => {}
    }
    let device = prepare_device(id, device, stored.as_ref().map(|s| &s.device))?;
    let (twin, twin_version) = stored.map(|s| (s.twin, s.twin_version)).unwrap_or((None, 1));
    storage::put_device(conn, hub, id, &StoredDevice { device: device.clone(), twin, twin_version })?;
    Ok(device)
}

async fn put_device(
    State(st): State<HubState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let hub = st.guard(&uri, &headers)?.host_name.clone();
    util::validate_device_id(&id).map_err(ApiError::hub)?;
    let device: Device = util::read_json(&headers, body).await.map_err(ApiError::hub)?;
    // Validate before queueing the write (keys, status) so bad input never reaches storage.
    prepare_device(&id, device.clone(), None).map_err(ApiError::hub)?;
    let if_match = util::if_match(&headers);
    let saved = st
        .shared
        .store
        .write(move |c| upsert(c, &hub, &id, device, if_match.as_deref()))
        .await
        .map_err(ApiError::hub)?;
    Ok(device_response(StatusCode::OK, &saved))
}

async fn delete_device(
    State(st): State<HubState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let hub = st.guard(&uri, &headers)?.host_name.clone();
    util::validate_device_id(&id).map_err(ApiError::hub)?;
    let if_match = util::if_match(&headers)
        .ok_or_else(|| ApiError::precondition("the If-Match header (etag or *) is required").hub())?;
    st.shared
        .store
        .write(move |c| {
            let stored: Option<StoredDevice> = storage::get_device(c, &hub, &id)?;
            let stored = stored.ok_or_else(|| ApiError::not_found(format!("Device {id} not found")))?;
            if !util::etag_matches(&if_match, stored.device.etag.as_deref().unwrap_or_default()) {
                return Err(ApiError::precondition("the etag does not match"));
            }
            storage::delete_device(c, &hub, &id)?;
            Ok(())
        })
        .await
        .map_err(ApiError::hub)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// At most this many devices per bulk call.
pub const MAX_BULK: usize = 100;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImportDevice {
    id: String,
    #[serde(default, rename = "eTag")]
    e_tag: Option<String>,
    import_mode: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    status_reason: Option<String>,
    #[serde(default)]
    authentication: Option<DeviceAuth>,
    #[serde(default)]
    capabilities: Option<Value>,
    #[serde(default)]
    device_scope: Option<String>,
    #[serde(default)]
    parent_scopes: Option<Vec<String>>,
}

async fn bulk(State(st): State<HubState>, uri: Uri, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let hub = st.guard(&uri, &headers)?.host_name.clone();
    let mut items: Vec<ImportDevice> = util::read_json(&headers, body).await.map_err(ApiError::hub)?;
    if items.is_empty() || items.len() > MAX_BULK {
        return Err(ApiError::bad_request(format!("a bulk operation takes 1 to {MAX_BULK} devices")).hub());
    }
    st.shared.bulk_requests.record(&hub, "/devices", items.len());
    const MODES: [&str; 7] =
        ["create", "update", "updateIfMatchETag", "delete", "deleteIfMatchETag", "updateTwin", "updateTwinIfMatchETag"];
    // The Azure IoT SDKs send `Delete`, `Update`, ...: the mode is matched without regard to case.
    for item in &mut items {
        match MODES.iter().find(|m| m.eq_ignore_ascii_case(&item.import_mode)) {
            Some(mode) => item.import_mode = (*mode).to_string(),
            None => return Err(ApiError::bad_request(format!("invalid importMode '{}'", item.import_mode)).hub()),
        }
    }
    let errors = st
        .shared
        .store
        .write(move |c| {
            let mut errors = Vec::new();
            for item in items {
                let outcome = bulk_one(c, &hub, &item);
                if let Err(e) = outcome {
                    errors.push(json!({
                        "deviceId": item.id,
                        "errorCode": e.kind.hub_code(),
                        "errorStatus": e.message,
                        "operation": item.import_mode,
                    }));
                }
            }
            Ok(errors)
        })
        .await
        .map_err(ApiError::hub)?;
    // Azure answers 400 with the per-item result as soon as one item failed (the spec-generated clients accept
    // both 200 and 400 as a BulkRegistryOperationResult); 200 only when every item succeeded.
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    let body = json!({ "isSuccessful": errors.is_empty(), "errors": errors, "warnings": [] });
    Ok((status, axum::Json(body)).into_response())
}

fn bulk_one(c: &rusqlite::Connection, hub: &str, item: &ImportDevice) -> ApiResult<()> {
    util::validate_device_id(&item.id)?;
    let device = || Device {
        device_id: item.id.clone(),
        status: item.status.clone(),
        status_reason: item.status_reason.clone(),
        authentication: item.authentication.clone(),
        capabilities: item.capabilities.clone(),
        device_scope: item.device_scope.clone(),
        parent_scopes: item.parent_scopes.clone(),
        ..Default::default()
    };
    let etag = item.e_tag.clone().unwrap_or_else(|| "\"\"".into());
    // Bulk `update` modes only change existing devices: Azure reports the item as DeviceNotFound rather than
    // registering it (which would bring back a deleted device with new keys).
    let existing = || -> ApiResult<()> {
        let stored: Option<StoredDevice> = storage::get_device(c, hub, &item.id)?;
        stored.map(|_| ()).ok_or_else(|| not_found(&item.id))
    };
    match item.import_mode.as_str() {
        "create" => upsert(c, hub, &item.id, device(), None).map(|_| ()),
        "update" => existing().and_then(|()| upsert(c, hub, &item.id, device(), Some("*")).map(|_| ())),
        "updateIfMatchETag" => existing().and_then(|()| upsert(c, hub, &item.id, device(), Some(&etag)).map(|_| ())),
        "delete" | "deleteIfMatchETag" => {
            let stored: Option<StoredDevice> = storage::get_device(c, hub, &item.id)?;
            let stored = stored.ok_or_else(|| not_found(&item.id))?;
            if item.import_mode == "deleteIfMatchETag"
                && !util::etag_matches(&etag, stored.device.etag.as_deref().unwrap_or_default())
            {
                return Err(ApiError::precondition("the etag does not match"));
            }
            storage::delete_device(c, hub, &item.id).map(|_| ())
        }
        _ => existing(),
    }
}

#[derive(Deserialize)]
struct ListParams {
    top: Option<usize>,
}

/// `GET /devices?top=N`: up to N devices (default and at most 1000), as device objects.
async fn list_devices(
    State(st): State<HubState>,
    uri: Uri,
    headers: HeaderMap,
    axum::extract::Query(params): axum::extract::Query<ListParams>,
) -> ApiResult<Response> {
    let hub = st.guard(&uri, &headers)?.host_name.clone();
    let top = params.top.unwrap_or(1000).clamp(1, 1000);
    let (rows, _) =
        st.shared.store.read(|c| storage::device_page::<StoredDevice>(c, &hub, None, top)).map_err(ApiError::hub)?;
    let devices: Vec<Device> = rows.into_iter().map(|(_, d)| d.device).collect();
    Ok((StatusCode::OK, axum::Json(devices)).into_response())
}

/// The twin view of a device, as `SELECT * FROM devices` returns it.
pub fn twin_view(s: &StoredDevice) -> Value {
    let d = &s.device;
    let twin = s.twin.clone().unwrap_or_else(|| json!({}));
    let auth_type = d.authentication.as_ref().and_then(|a| a.kind.clone()).unwrap_or_else(|| "sas".into());
    let thumbs = d.authentication.as_ref().and_then(|a| a.x509_thumbprint.clone()).unwrap_or_default();
    json!({
        "deviceId": d.device_id,
        "etag": util::b64(format!("{}:{}", d.etag.as_deref().unwrap_or_default(), s.twin_version).as_bytes()),
        "deviceEtag": d.etag,
        "status": d.status,
        "statusReason": d.status_reason,
        "statusUpdateTime": d.status_updated_time,
        "connectionState": d.connection_state,
        "lastActivityTime": d.last_activity_time,
        "cloudToDeviceMessageCount": d.cloud_to_device_message_count,
        "authenticationType": auth_type,
        "x509Thumbprint": thumbs,
        "capabilities": d.capabilities.clone().unwrap_or_else(|| json!({"iotEdge": false})),
        "version": s.twin_version,
        "tags": twin.get("tags").cloned().unwrap_or_else(|| json!({})),
        "properties": {
            "desired": twin.pointer("/properties/desired").cloned().unwrap_or_else(|| json!({})),
            "reported": twin.pointer("/properties/reported").cloned().unwrap_or_else(|| json!({})),
        },
    })
}

/// One `field = value` (or `!=`) condition of a WHERE clause.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    path: Vec<String>,
    negate: bool,
    value: Value,
}

/// Parses `SELECT * FROM devices [WHERE a = 'x' [AND b != 'y' ...]]`.
pub fn parse_query(q: &str) -> ApiResult<Vec<Condition>> {
    let bad = || {
        ApiError::bad_request(format!(
            "unsupported query '{q}': the engine supports SELECT * FROM devices [WHERE field = 'value' [AND ...]]"
        ))
    };
    let words: Vec<&str> = q.split_whitespace().collect();
    let head: Vec<String> = words.iter().take(4).map(|w| w.to_ascii_lowercase()).collect();
    if head != ["select", "*", "from", "devices"] {
        return Err(bad());
    }
    let rest = &words[4..];
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    if !rest[0].eq_ignore_ascii_case("where") {
        return Err(bad());
    }
    let clause = rest[1..].join(" ");
    let mut conds = Vec::new();
    for part in split_and(&clause) {
        let (lhs, rhs, negate) = if let Some((l, r)) = part.split_once("!=") {
            (l, r, true)
        } else if let Some((l, r)) = part.split_once("<>") {
            (l, r, true)
        } else if let Some((l, r)) = part.split_once('=') {
            (l, r, false)
        } else {
            return Err(bad());
        };
        let lhs = lhs.trim();
        let rhs = rhs.trim();
        if lhs.is_empty() || !lhs.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '$') {
            return Err(bad());
        }
        let value = if (rhs.starts_with('\'') && rhs.ends_with('\'') || rhs.starts_with('"') && rhs.ends_with('"'))
            && rhs.len() >= 2
        {
            Value::String(rhs[1..rhs.len() - 1].to_string())
        } else if rhs.eq_ignore_ascii_case("true") {
            Value::Bool(true)
        } else if rhs.eq_ignore_ascii_case("false") {
            Value::Bool(false)
        } else if let Ok(n) = rhs.parse::<i64>() {
            json!(n)
        } else {
            return Err(bad());
        };
        conds.push(Condition { path: lhs.split('.').map(str::to_string).collect(), negate, value });
    }
    Ok(conds)
}

fn split_and(clause: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = Vec::new();
    for w in clause.split_whitespace() {
        if w.eq_ignore_ascii_case("and") {
            parts.push(current.join(" "));
            current.clear();
        } else {
            current.push(w);
        }
    }
    parts.push(current.join(" "));
    parts
}

/// Whether a twin view satisfies every condition. As in IoT Hub, property names match without regard to case
/// while values (strings included) compare exactly: `status = 'Disabled'` does not find disabled devices.
pub fn matches(view: &Value, conds: &[Condition]) -> bool {
    conds.iter().all(|c| {
        let mut v = view;
        for p in &c.path {
            match property(v, p) {
                Some(next) => v = next,
                None => return c.negate,
            }
        }
        (v == &c.value) != c.negate
    })
}

/// The member `name` of an object, matched exactly first and then without regard to case.
fn property<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    let map = object.as_object()?;
    map.get(name).or_else(|| {
        let wanted = name.to_lowercase();
        map.iter().find(|(k, _)| k.to_lowercase() == wanted).map(|(_, v)| v)
    })
}

#[derive(Deserialize)]
struct QueryBody {
    query: String,
}

async fn query(State(st): State<HubState>, uri: Uri, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let hub = st.guard(&uri, &headers)?.host_name.clone();
    let q: QueryBody = util::read_json(&headers, body).await.map_err(ApiError::hub)?;
    let conds = parse_query(&q.query).map_err(ApiError::hub)?;
    let limit = util::page_size(&headers).map_err(ApiError::hub)?;
    let mut after = util::continuation(&headers).map_err(ApiError::hub)?;
    let mut items = Vec::new();
    let mut more = false;
    let mut last_key: Option<String> = None;
    'outer: loop {
        let (rows, raw_more) = st
            .shared
            .store
            .read(|c| storage::device_page::<StoredDevice>(c, &hub, after.as_deref(), 500))
            .map_err(ApiError::hub)?;
        let n = rows.len();
        for (i, (k, d)) in rows.into_iter().enumerate() {
            let view = twin_view(&d);
            if matches(&view, &conds) {
                items.push(view);
                last_key = Some(k.clone());
                if items.len() == limit {
                    more = raw_more || i + 1 < n;
                    break 'outer;
                }
            }
            after = Some(k);
        }
        if !raw_more {
            break;
        }
    }
    let mut resp = (StatusCode::OK, axum::Json(items)).into_response();
    let h = resp.headers_mut();
    h.insert("x-ms-item-type", HeaderValue::from_static("twin"));
    if more && let Some(v) = last_key.and_then(|l| HeaderValue::from_str(&util::continuation_token(&l)).ok()) {
        h.insert("x-ms-continuation", v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_and_matching() {
        assert!(parse_query("SELECT * FROM devices").is_ok_and(|c| c.is_empty()));
        let c = parse_query("select * from devices where status = 'disabled' AND capabilities.iotEdge = true")
            .expect("parses");
        assert_eq!(c.len(), 2);
        let view = json!({"status": "disabled", "capabilities": {"iotEdge": true}});
        assert!(matches(&view, &c));
        let view = json!({"status": "enabled", "capabilities": {"iotEdge": true}});
        assert!(!matches(&view, &c));
        let c = parse_query("SELECT * FROM devices WHERE status != 'disabled'").expect("parses");
        assert!(matches(&view, &c));
        for bad in [
            "SELECT deviceId FROM devices",
            "DROP devices",
            "SELECT * FROM devices WHERE x ~ 1",
            "SELECT * FROM devices WHERE a = b",
        ] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_property_names_ignore_case_but_string_values_compare_exactly() {
        let view = json!({"status": "disabled", "tags": {"Site": "Berlin"}});
        let found = |q: &str| matches(&view, &parse_query(q).expect("parses"));
        assert!(found("SELECT * FROM devices WHERE Status = 'disabled'"));
        assert!(found("SELECT * FROM devices WHERE tags.site = 'Berlin'"));
        assert!(!found("SELECT * FROM devices WHERE status = 'Disabled'"));
        assert!(!found("SELECT * FROM devices WHERE tags.Site = 'berlin'"));
        assert!(found("SELECT * FROM devices WHERE STATUS != 'Disabled'"));
    }

    #[test]
    fn device_preparation() {
        let d = prepare_device("dev", Device::default(), None).expect("prepares");
        assert_eq!(d.status.as_deref(), Some("enabled"));
        let keys = d.authentication.and_then(|a| a.symmetric_key).expect("keys");
        assert!(keys.primary_key.is_some() && keys.secondary_key.is_some());
        let bad = Device { status: Some("paused".into()), ..Default::default() };
        assert!(prepare_device("dev", bad, None).is_err());
        let other = Device { device_id: "x".into(), ..Default::default() };
        assert!(prepare_device("dev", other, None).is_err());
    }
}
