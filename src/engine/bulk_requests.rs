//! Engine-only endpoint (not part of Azure's API) on the DPS listener: the bulk requests the engine answered,
//! so tests can see how a client chunks a large bulk operation (DPS takes 10 entries per call, a hub 100
//! devices).
//!
//! - `GET /engine/bulk-requests?api-version=2021-10-01` ->
//!   `[{"host": "<DPS or hub host>", "path": "/enrollments" | "/enrollmentGroups" | "/devices", "items": n}]`,
//!   oldest first, the last [`MAX_KEPT`] only.
//!
//! Requires the DPS service SAS (`provisioningserviceowner`). Only bulk requests that passed the size and
//! format checks are listed (a refused one never reached the items); the list is not persisted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use serde::Serialize;

use super::error::ApiResult;
use super::{Shared, auth, util};

/// How many bulk requests are remembered.
pub const MAX_KEPT: usize = 10_000;

/// One answered bulk request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BulkRequest {
    /// The host it was sent to (the DPS host or a hub's).
    pub host: String,
    /// The collection: `/enrollments`, `/enrollmentGroups` or `/devices`.
    pub path: String,
    /// How many entries or devices it carried.
    pub items: usize,
}

/// Recent bulk requests, oldest dropped first.
#[derive(Debug, Default)]
pub struct BulkRequests(Mutex<VecDeque<BulkRequest>>);

impl BulkRequests {
    /// Records a bulk request of `items` entries sent to `host` `path`.
    pub fn record(&self, host: &str, path: &str, items: usize) {
        if let Ok(mut log) = self.0.lock() {
            if log.len() >= MAX_KEPT {
                log.pop_front();
            }
            log.push_back(BulkRequest { host: host.to_string(), path: path.to_string(), items });
        }
    }

    fn snapshot(&self) -> Vec<BulkRequest> {
        self.0.lock().map(|log| log.iter().cloned().collect()).unwrap_or_default()
    }
}

/// Routes (mounted on the DPS listener).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().route("/engine/bulk-requests", get(list)).with_state(shared)
}

async fn list(State(s): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> ApiResult<axum::Json<Vec<BulkRequest>>> {
    auth::dps(&s, &headers)?;
    util::require_api_version(&uri)?;
    Ok(axum::Json(s.bulk_requests.snapshot()))
}
