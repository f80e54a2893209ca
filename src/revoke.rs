//! `dps-operator revoke`: incident response in one command. Creates the DeviceDeprovision for one
//! registration ID, follows it through its phases as the operator records them, and ends with the hub the
//! device had and how many registration attempts DPS has refused since. `--dry-run` prints the manifest
//! instead, for a GitOps repository.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};

use crate::api::common::{CertificateSource, ProvisioningServiceRef};
use crate::api::device_deprovision::{
    DeprovisionDeviceAction, DeprovisionPhase, DeviceDeprovisionStatus, EnrollmentGroupRef,
};
use crate::api::{DeviceDeprovision, DeviceDeprovisionSpec, ProvisioningService};
use crate::controller::backend::BackendCache;
use crate::controller::health;
use crate::{Error, Result};

/// The longest `reason` the DeviceDeprovision schema accepts (it becomes the hub device's `statusReason`).
const REASON_MAX: usize = 128;

/// Arguments of `dps-operator revoke`.
#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The device's registration ID (for X.509 group devices: the leaf certificate's CN).
    #[arg(long)]
    pub registration_id: String,
    /// The EnrollmentGroup (resource name, same namespace) the device was provisioned through, if known.
    #[arg(long)]
    pub group: Option<String>,
    /// The device's leaf certificate (PEM file): the blocking entry then names that very certificate.
    #[arg(long, value_name = "FILE")]
    pub leaf_certificate: Option<PathBuf>,
    /// Delete the device identity in its hub instead of disabling it.
    #[arg(long)]
    pub delete_device: bool,
    /// Why (recorded in the DeviceDeprovision and as the hub device's status reason; at most 128).
    #[arg(long)]
    pub reason: String,
    /// Namespace (default: the kubeconfig's; left out of a `--dry-run` manifest when not given).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The ProvisioningService (default: the only one in the namespace).
    #[arg(long)]
    pub provisioning_service: Option<String>,
    /// Give up after this long (e.g. `90s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the DeviceDeprovision manifest (YAML) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `revoke`.
pub async fn run(args: RevokeArgs) -> Result<()> {
    if args.dry_run {
        let service = args.provisioning_service.clone().ok_or_else(|| {
            Error::invalid("ProvisioningServiceRequired", "--dry-run needs --provisioning-service (nothing is read)")
        })?;
        let order = manifest(&args, args.namespace.as_deref(), &service)?;
        print!("{}", serde_yaml_ng::to_string(&order)?);
        return Ok(());
    }
    let client = Client::try_default().await.map_err(|e| Error::KubeConfig(e.to_string()))?;
    let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    let service = match &args.provisioning_service {
        Some(name) => name.clone(),
        None => only_service(&client, &namespace).await?,
    };
    let order = manifest(&args, Some(&namespace), &service)?;
    let name = order.name_any();
    let api = Api::<DeviceDeprovision>::namespaced(client.clone(), &namespace);
    let started = Instant::now();
    let mut shown = None;
    let from_version = match api.create(&PostParams::default(), &order).await {
        Ok(created) => {
            println!("devicedeprovision {namespace}/{name} created");
            // The watch starts after this version, so the phase the order was created in is shown here.
            judge(&created, &mut shown, started)?;
            created.resource_version().unwrap_or_default()
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Running the command again follows the order already given, if it is the same order.
            let held = api.get(&name).await?;
            if !held.spec.registration_id.eq_ignore_ascii_case(&args.registration_id) {
                return Err(Error::invalid(
                    "AlreadyExists",
                    format!("DeviceDeprovision {namespace}/{name} exists for another registration ID"),
                ));
            }
            println!("devicedeprovision {namespace}/{name} already exists; following it");
            "0".to_string()
        }
        Err(e) => return Err(e.into()),
    };
    let done = tokio::time::timeout(args.timeout, follow(&api, &name, &from_version, shown, started)).await;
    let status = match done {
        Ok(result) => result?,
        Err(_) => {
            let last = api.get_opt(&name).await.ok().flatten().and_then(|d| d.status);
            let why = last.as_ref().and_then(|s| s.message.clone()).unwrap_or_else(|| "no status yet".into());
            return Err(Error::waiting(
                "Timeout",
                format!("DeviceDeprovision {namespace}/{name} did not complete within {:?}: {why}", args.timeout),
            ));
        }
    };
    report(&client, &namespace, &service, &args.registration_id, &status).await;
    Ok(())
}

/// The DeviceDeprovision the arguments describe; `namespace` `None` leaves it out (GitOps tools set it).
pub fn manifest(args: &RevokeArgs, namespace: Option<&str>, service: &str) -> Result<DeviceDeprovision> {
    if args.reason.chars().count() > REASON_MAX {
        return Err(Error::invalid("ReasonTooLong", format!("--reason is at most {REASON_MAX} characters")));
    }
    if !crate::api::common::is_valid_registration_id(&args.registration_id) {
        return Err(Error::invalid(
            "InvalidRegistrationId",
            format!("{:?} is not a registration ID DPS accepts", args.registration_id),
        ));
    }
    let leaf_certificate = match &args.leaf_certificate {
        Some(path) => Some(CertificateSource::Pem(
            std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?,
        )),
        None => None,
    };
    let spec = DeviceDeprovisionSpec {
        provisioning_service_ref: ProvisioningServiceRef { name: service.to_string() },
        registration_id: args.registration_id.clone(),
        enrollment_group_ref: args.group.clone().map(|name| EnrollmentGroupRef { name }),
        leaf_certificate,
        device: if args.delete_device { DeprovisionDeviceAction::Delete } else { DeprovisionDeviceAction::Disable },
        reason: Some(args.reason.clone()),
        on_delete: Default::default(),
    };
    let mut order = DeviceDeprovision::new(&resource_name(&args.registration_id), spec);
    order.metadata.namespace = namespace.map(str::to_string);
    Ok(order)
}

/// The order's name: `revoke-` and the registration ID as a DNS label (see [`crate::naming::dns_label`]),
/// so one device gets one order and running the command again finds it.
pub fn resource_name(registration_id: &str) -> String {
    crate::naming::dns_label("revoke-", registration_id)
}

async fn only_service(client: &Client, namespace: &str) -> Result<String> {
    let services =
        Api::<ProvisioningService>::namespaced(client.clone(), namespace).list(&ListParams::default()).await?;
    match services.items.as_slice() {
        [one] => Ok(one.name_any()),
        [] => Err(Error::invalid("ProvisioningServiceNotFound", format!("no ProvisioningService in {namespace}"))),
        many => Err(Error::invalid(
            "ProvisioningServiceAmbiguous",
            format!(
                "{} ProvisioningServices in {namespace} ({}); choose one with --provisioning-service",
                many.len(),
                many.iter().map(ResourceExt::name_any).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// Watches the order from `version` (every status write is one event, so no phase is missed), printing
/// each phase when it first appears; the final status once Completed, an error once Stalled.
async fn follow(
    api: &Api<DeviceDeprovision>,
    name: &str,
    version: &str,
    mut shown: Option<DeprovisionPhase>,
    started: Instant,
) -> Result<DeviceDeprovisionStatus> {
    let mut version = version.to_string();
    let params = WatchParams::default().fields(&format!("metadata.name={name}"));
    loop {
        let mut events = api.watch(&params, &version).await?.boxed();
        while let Some(event) = events.try_next().await? {
            let order = match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => o,
                WatchEvent::Deleted(_) => {
                    return Err(Error::invalid("Deleted", format!("DeviceDeprovision {name} was deleted")));
                }
                WatchEvent::Bookmark(b) => {
                    version = b.metadata.resource_version;
                    continue;
                }
                // 410 Gone: the version is too old to watch from; start again from the current object.
                WatchEvent::Error(e) if e.code == 410 => {
                    version = "0".into();
                    break;
                }
                WatchEvent::Error(e) => return Err(kube::Error::Api(e).into()),
            };
            version = order.resource_version().unwrap_or_default();
            if let Some(status) = judge(&order, &mut shown, started)? {
                return Ok(status);
            }
        }
    }
}

/// Prints a newly seen phase; `Some` once the order is complete, an error when it is stalled.
fn judge(
    order: &DeviceDeprovision,
    shown: &mut Option<DeprovisionPhase>,
    started: Instant,
) -> Result<Option<DeviceDeprovisionStatus>> {
    let status = order.status.clone().unwrap_or_default();
    if shown.is_none_or(|s| s != status.phase) {
        let message = status.message.as_deref().unwrap_or("");
        let line =
            format!("{:>7.1}s  {:<13}  {message}", started.elapsed().as_secs_f64(), format!("{:?}", status.phase));
        println!("{}", line.trim_end());
        *shown = Some(status.phase);
    }
    let current = status.observed_generation.is_some() && status.observed_generation == order.metadata.generation;
    if !current {
        return Ok(None);
    }
    let active = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_ && c.status == "True");
    if let Some(stalled) = active(health::STALLED) {
        return Err(Error::invalid("Stalled", format!("{}: {}", stalled.reason, stalled.message)));
    }
    if status.phase == DeprovisionPhase::Completed && active(health::READY).is_some() {
        return Ok(Some(status));
    }
    Ok(None)
}

/// The hub the device had, and the refused attempts the DPS instance reports (only the local engine
/// counts them; Azure reports none). The order is complete whatever this finds, so it only warns.
async fn report(
    client: &Client,
    namespace: &str,
    service: &str,
    registration_id: &str,
    status: &DeviceDeprovisionStatus,
) {
    match (&status.assigned_hub, &status.device_id) {
        (Some(hub), Some(device)) => println!("assigned hub: {hub} (device {device})"),
        _ => println!("assigned hub: none (the device never registered)"),
    }
    let refusal = async {
        let held = Api::<ProvisioningService>::namespaced(client.clone(), namespace).get(service).await?;
        let backend = BackendCache::with_resync_share(100).resolve(client, &held).await?;
        Ok::<_, Error>(backend.dps.engine_refusal(registration_id).await?)
    };
    match refusal.await {
        Ok(Some(r)) => println!("refused attempts: {} (last: {} at {})", r.attempts, r.last_reason, r.last_attempt_utc),
        Ok(None) => println!("refused attempts: none reported"),
        Err(e) => eprintln!("refused attempts: not available ({e})"),
    }
}

/// `90s`, `5m`, `1h30m` (jiff's friendly format) or ISO 8601 (`PT5M`).
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let parsed: jiff::SignedDuration = text.parse().map_err(|e| format!("not a duration ({e}); try 90s or 5m"))?;
    Duration::try_from(parsed).map_err(|_| "the timeout must be positive".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_friendly_form() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("soon").is_err());
    }
}
