//! Leader election on a coordination.k8s.io Lease, so that of several replicas only one reconciles.
//!
//! The holder renews the Lease every `renew` seconds; another replica may take it once `duration`
//! seconds passed without renewal. The lease manager writes the Lease with server-side apply without
//! force, so two replicas can never both hold it: the second apply conflicts.
//!
//! Losing the lease is final for this process: the controllers are stopped and the process exits
//! non-zero so the Deployment restarts it as a follower. A renewal that fails (API unreachable) counts
//! as lost, because the replica can no longer prove it still holds the lease and another may take it.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::{Error, Result};

/// Where the Lease lives, who this replica is, and how long a holder keeps it without renewing.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's holder identity (the pod name, or host name and process id).
    pub identity: String,
    /// Seconds a holder keeps the lease after its last renewal.
    pub duration_seconds: u16,
    /// Seconds between renewals; less than `duration_seconds`.
    pub renew_seconds: u16,
}

impl LeaseConfig {
    /// The lease manager's grace: how long before expiry the holder renews.
    pub(crate) fn grace_seconds(&self) -> Result<u16> {
        if self.renew_seconds == 0 || self.renew_seconds >= self.duration_seconds {
            return Err(Error::invalid(
                "LeaseTiming",
                format!(
                    "the lease renewal period ({} s) must be positive and shorter than the lease duration ({} s)",
                    self.renew_seconds, self.duration_seconds
                ),
            ));
        }
        Ok(self.duration_seconds - self.renew_seconds)
    }
}

/// A held lease: renewed in the background until [`Leadership::release`] or until it is lost.
pub struct Leadership {
    manager: Arc<LeaseManager>,
    /// Taken by [`Leadership::release`], which waits for the renewal to stop before freeing the lease.
    renewer: std::sync::Mutex<Option<JoinHandle<()>>>,
    holding: watch::Receiver<bool>,
    config: LeaseConfig,
}

/// The identity of this replica when it has no pod name: host name and process id, unique per process.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "dps-operator".to_string());
    format!("{host}-{}", std::process::id())
}

/// Waits until this replica holds the lease, or `None` when `shutdown` resolves first.
pub async fn acquire(
    client: Client,
    config: LeaseConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Option<Leadership>> {
    let grace = config.grace_seconds()?;
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(config.duration_seconds.into())
        .with_grace(grace.into())
        .build()
        .await
        .map_err(lease_error)?;
    let manager = Arc::new(manager);
    let (tx, mut holding) = watch::channel(false);
    let renewer = tokio::spawn(renew(Arc::clone(&manager), tx));
    info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "waiting to lead");
    tokio::pin!(shutdown);
    tokio::select! {
        won = holding.wait_for(|held| *held) => {
            if won.is_err() {
                return Err(Error::LeaseLost(format!("could not acquire Lease {}/{}", config.namespace, config.name)));
            }
        }
        _ = &mut shutdown => {
            renewer.abort();
            return Ok(None);
        }
    }
    info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "leading: this replica holds the lease and reconciles");
    Ok(Some(Leadership { manager, renewer: std::sync::Mutex::new(Some(renewer)), holding, config }))
}

/// Keeps the lease renewed and publishes whether this replica holds it; ends (closing the channel) when
/// the lease is lost, as the process must not reconcile any more.
async fn renew(manager: Arc<LeaseManager>, tx: watch::Sender<bool>) {
    let mut retry = Duration::from_millis(500);
    loop {
        match manager.changed().await {
            Ok(true) => {
                retry = Duration::from_millis(500);
                let _ = tx.send(true);
            }
            Ok(false) => {
                warn!("another replica took the lease");
                let _ = tx.send(false);
                return;
            }
            Err(e) if *tx.borrow() => {
                warn!(error = %e, "cannot renew the lease; giving up leadership");
                let _ = tx.send(false);
                return;
            }
            Err(e) => {
                // Not holding yet: nothing to lose, keep trying to become the leader.
                warn!(error = %e, retry_in = ?retry, "cannot read the lease; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(10));
            }
        }
    }
}

impl Leadership {
    /// Resolves when this replica no longer holds the lease.
    pub async fn lost(&self) {
        let mut holding = self.holding.clone();
        let _ = holding.wait_for(|held| !*held).await;
    }

    /// Stops renewing and frees the lease so a follower takes over without waiting for it to expire.
    pub async fn release(&self) {
        let renewer = self.renewer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(renewer) = renewer {
            renewer.abort();
            let _ = renewer.await;
        }
        match self.manager.release().await {
            Ok(()) => info!(lease = %self.config.name, "released the lease"),
            Err(e) => warn!(error = %e, lease = %self.config.name, "could not release the lease; it expires by itself"),
        }
    }
}

fn lease_error(e: kube_lease_manager::LeaseManagerError) -> Error {
    match e {
        kube_lease_manager::LeaseManagerError::KubeError(e) => Error::Kube(e),
        other => Error::LeaseLost(other.to_string()),
    }
}
