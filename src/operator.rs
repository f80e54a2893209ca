//! The `run` subcommand: connect to the cluster and serve the custom resources.

use std::sync::Arc;

use kube::{Client, Discovery};
use tracing::info;

use crate::{Error, Result, api, controller, leader, metrics, metrics_server};

/// Options of `dps-operator run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Serve only this namespace (default: every namespace).
    #[arg(long, env = "DPS_OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Seconds between comparisons of an in-sync resource with DPS (drift is reverted then); jittered ±10 %.
    #[arg(long, env = "DPS_OPERATOR_RESYNC_SECONDS", default_value_t = 600)]
    pub resync_seconds: u64,
    /// The share (percent, 1-100) of each DPS and hub rate budget that resyncs of in-sync resources may
    /// spend on reads; changes, drift put back and revocations are never held by it.
    #[arg(long, env = "DPS_OPERATOR_RESYNC_BUDGET_PERCENT", default_value_t = controller::context::DEFAULT_RESYNC_BUDGET_PERCENT,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub resync_budget_percent: u8,
    /// This replica's name in events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (port 0 picks a free port, logged at start).
    #[arg(long, env = "DPS_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Most reconciles each controller runs at once (0: unbounded).
    #[arg(long, env = "DPS_OPERATOR_CONCURRENCY", default_value_t = controller::context::DEFAULT_CONCURRENCY)]
    pub concurrency: u16,
    /// Reconcile only while holding the leader Lease (default: on in a cluster, where POD_NAMESPACE is set).
    #[arg(long, env = "DPS_OPERATOR_LEADER_ELECTION", num_args = 0..=1, default_missing_value = "true")]
    pub leader_election: Option<bool>,
    /// The leader Lease's name.
    #[arg(long, default_value = "dps-operator")]
    pub lease_name: String,
    /// The leader Lease's namespace (default: POD_NAMESPACE, else the watched namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Seconds the leader keeps the Lease without renewing; a follower takes over after that.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u16,
    /// Seconds between the leader's renewals (shorter than the lease duration).
    #[arg(long, default_value_t = 5)]
    pub lease_renew_seconds: u16,
}

impl RunArgs {
    /// The leader Lease to hold before reconciling, or `None` when leader election is off.
    pub fn lease(&self) -> Result<Option<leader::LeaseConfig>> {
        let enabled = self.leader_election.unwrap_or(self.lease_namespace.is_some());
        if !enabled {
            return Ok(None);
        }
        let namespace = self.lease_namespace.clone().or_else(|| self.watch_namespace.clone()).ok_or_else(|| {
            Error::invalid("LeaseNamespaceUnknown", "leader election needs --lease-namespace (or POD_NAMESPACE)")
        })?;
        let config = leader::LeaseConfig {
            name: self.lease_name.clone(),
            namespace,
            identity: self.instance.clone().unwrap_or_else(leader::default_identity),
            duration_seconds: self.lease_duration_seconds,
            renew_seconds: self.lease_renew_seconds,
        };
        config.grace_seconds()?;
        Ok(Some(config))
    }
}

/// Connects to the cluster, checks the CRDs are installed, and reconciles until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<()> {
    let shutdown = listen_for_shutdown();
    let readiness = metrics_server::Readiness::default();
    metrics_server::serve(args.metrics_addr, metrics::install(), readiness.clone()).await?;
    let connect = async {
        let client = Client::try_default().await.map_err(|e| Error::KubeConfig(e.to_string()))?;
        check_crds_installed(&client).await?;
        Ok::<_, Error>(client)
    };
    let client = tokio::select! {
        connected = connect => connected?,
        _ = stopped(shutdown.clone()) => {
            info!("shutting down before connecting");
            return Ok(());
        }
    };
    info!(
        namespace = args.watch_namespace.as_deref().unwrap_or("*"),
        "dps-operator connected; CRDs present; waiting for work"
    );
    let resync = std::time::Duration::from_secs(args.resync_seconds.max(1));
    let lease = args.lease()?;
    let settings = controller::context::Settings {
        instance: args.instance,
        resync,
        resync_budget_percent: args.resync_budget_percent,
        concurrency: args.concurrency,
    };
    let ctx = controller::Context::new(client.clone(), settings);
    let scope = controller::Scope { namespace: args.watch_namespace };
    let Some(lease) = lease else {
        readiness.set_ready();
        controller::run(ctx, scope, stopped(shutdown)).await;
        info!("shutting down");
        return Ok(());
    };
    let Some(leadership) = leader::acquire(client, lease, stopped(shutdown.clone())).await? else {
        info!("shutting down before leading");
        return Ok(());
    };
    let leadership = Arc::new(leadership);
    let (lost_tx, mut lost_rx) = tokio::sync::oneshot::channel();
    let watcher = Arc::clone(&leadership);
    let stop = async move {
        tokio::select! {
            _ = stopped(shutdown) => {}
            _ = watcher.lost() => { let _ = lost_tx.send(()); }
        }
    };
    readiness.set_ready();
    controller::run(ctx, scope, stop).await;
    if lost_rx.try_recv().is_ok() {
        // Exiting non-zero lets the Deployment restart this replica, which then waits as a follower.
        return Err(Error::LeaseLost("this replica no longer holds the lease; stopped reconciling".into()));
    }
    info!("shutting down");
    leadership.release().await;
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

/// Starts listening for SIGINT and SIGTERM now, so one that arrives while the operator is still starting
/// (connecting, checking the CRDs) means a clean stop rather than the default "terminate at once". The
/// receiver turns `true` once a signal came; [`stopped`] waits for that, however late it is asked.
fn listen_for_shutdown() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Creating the streams installs the handlers, before anything is awaited.
        let (term, interrupt) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
        tokio::spawn(async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = interrupt.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            let _ = tx.send(true);
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    rx
}

/// Resolves once [`listen_for_shutdown`] saw a signal (at once if it already has).
async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|signalled| *signalled).await;
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> RunArgs {
        Cmd::try_parse_from(std::iter::once("run").chain(args.iter().copied())).expect("parses").run
    }

    #[test]
    fn the_concurrency_flag_bounds_every_controllers_reconciles() {
        let args = parse(&["--concurrency", "2"]);
        let config = controller::context::controller_config(args.concurrency);
        assert!(format!("{config:?}").contains("concurrency: 2"), "{config:?}");
        let default = parse(&[]).concurrency;
        assert_eq!(default, controller::context::DEFAULT_CONCURRENCY);
        assert!(format!("{:?}", controller::context::controller_config(default)).contains("concurrency: 16"));
    }

    #[test]
    fn leader_election_holds_a_lease_in_the_given_namespace_when_asked() {
        let lease = parse(&["--leader-election", "--lease-namespace", "ops", "--instance", "pod-1"])
            .lease()
            .expect("valid")
            .expect("leader election on");
        assert_eq!((lease.name.as_str(), lease.namespace.as_str()), ("dps-operator", "ops"));
        assert_eq!(lease.identity, "pod-1");
        assert_eq!((lease.duration_seconds, lease.renew_seconds), (15, 5));
        let off = parse(&["--leader-election=false", "--lease-namespace", "ops"]).lease().expect("valid");
        assert!(off.is_none(), "explicitly off");
        let watched = parse(&["--leader-election", "--watch-namespace", "team"]).lease().expect("valid");
        assert_eq!(watched.map(|l| l.namespace).as_deref(), Some("team"), "the watched namespace by default");
        let slow = parse(&["--leader-election", "--watch-namespace", "t", "--lease-renew-seconds", "15"]);
        assert!(slow.lease().is_err(), "renewing no faster than the lease expires is refused");
    }
}
