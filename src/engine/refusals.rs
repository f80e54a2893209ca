//! Engine-only endpoint (not part of Azure's API) on the DPS listener: refused registration attempts.
//!
//! - `GET /engine/refusals?api-version=2021-10-01` -> `[{"registrationId","attempts","lastReason","lastAttemptUtc"}]`
//! - `GET /engine/refusals/{registrationId}?api-version=2021-10-01` -> one record, or 404.
//!
//! Both require the DPS service SAS (`provisioningserviceowner`). A refusal is any registration attempt
//! the engine did not provision: no matching entry, a wrong or expired credential, or a disabled entry.
//! Registration IDs are lower-case.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::routing::get;

use super::error::{ApiError, ApiResult};
use super::storage::{self, Refusal};
use super::{Shared, auth, util};

/// Routes (mounted on the DPS listener).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().route("/engine/refusals", get(list)).route("/engine/refusals/{id}", get(one)).with_state(shared)
}

async fn list(State(s): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> ApiResult<axum::Json<Vec<Refusal>>> {
    auth::dps(&s, &headers)?;
    util::require_api_version(&uri)?;
    Ok(axum::Json(s.store.read(|c| storage::refusals(c, None))?))
}

async fn one(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Refusal>> {
    auth::dps(&s, &headers)?;
    util::require_api_version(&uri)?;
    let key = util::registration_key(&id)?;
    let found = s.store.read(|c| storage::refusals(c, Some(&key)))?;
    found.into_iter().next().map(axum::Json).ok_or_else(|| ApiError::not_found(format!("no refusals for '{key}'")))
}
