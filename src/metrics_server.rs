//! The HTTP endpoint beside the controllers: `/metrics` for Prometheus, `/healthz` (the process answers)
//! and `/readyz` (the controllers have started) for the kubelet's probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tracing::{info, warn};

use crate::metrics::{CONTENT_TYPE, Metrics};
use crate::{Error, Result};

/// Whether the operator is ready to serve: set once the controllers have started.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the operator ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`Readiness::set_ready`] was called.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct Shared {
    metrics: &'static Metrics,
    readiness: Readiness,
}

/// Binds `addr` and serves in the background; returns the bound address (port 0 picks a free one).
pub async fn serve(addr: SocketAddr, metrics: &'static Metrics, readiness: Readiness) -> Result<SocketAddr> {
    let io_error = |source| Error::Io { path: format!("metrics address {addr}"), source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(io_error)?;
    let bound = listener.local_addr().map_err(io_error)?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(Shared { metrics, readiness });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the metrics server stopped");
        }
    });
    info!(address = %bound, "serving metrics and health probes");
    Ok(bound)
}

async fn metrics_text(State(shared): State<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], shared.metrics.encode())
}

async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    if shared.readiness.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "controllers not started")
    }
}
