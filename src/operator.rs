//! The `run` subcommand: connect to the cluster and serve the custom resources.

use kube::{Client, Discovery};
use tracing::info;

use crate::{Error, Result, api, controller, metrics, metrics_server};

/// Options of `dps-operator run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Serve only this namespace (default: every namespace).
    #[arg(long, env = "DPS_OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Seconds between comparisons of an in-sync resource with DPS (drift is reverted then); jittered ±10 %.
    #[arg(long, env = "DPS_OPERATOR_RESYNC_SECONDS", default_value_t = 600)]
    pub resync_seconds: u64,
    /// This replica's name in events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (port 0 picks a free port, logged at start).
    #[arg(long, env = "DPS_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
}

/// Connects to the cluster, checks the CRDs are installed, and reconciles until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<()> {
    let readiness = metrics_server::Readiness::default();
    metrics_server::serve(args.metrics_addr, metrics::install(), readiness.clone()).await?;
    let client = Client::try_default().await.map_err(|e| Error::KubeConfig(e.to_string()))?;
    check_crds_installed(&client).await?;
    info!(
        namespace = args.watch_namespace.as_deref().unwrap_or("*"),
        "dps-operator connected; CRDs present; waiting for work"
    );
    let resync = std::time::Duration::from_secs(args.resync_seconds.max(1));
    let ctx = controller::Context::with_resync(client, args.instance, resync);
    let scope = controller::Scope { namespace: args.watch_namespace };
    readiness.set_ready();
    controller::run(ctx, scope, shutdown_signal()).await;
    info!("shutting down");
    Ok(())
}

async fn check_crds_installed(client: &Client) -> Result<()> {
    let discovery = Discovery::new(client.clone()).filter(&[api::GROUP]).run().await?;
    let served: Vec<String> =
        discovery.groups().flat_map(|g| g.recommended_resources()).map(|(ar, _)| ar.kind).collect();
    let missing: Vec<&str> = ["ProvisioningService", "IndividualEnrollment", "EnrollmentGroup", "DeviceDeprovision"]
        .into_iter()
        .filter(|kind| !served.iter().any(|s| s == kind))
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(Error::CrdsMissing(missing.join(", "))) }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
