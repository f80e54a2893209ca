//! `dps-operator audit`: compares what one ProvisioningService's DPS instance and linked hubs hold with
//! the resources in its namespace that name it. Reports DPS entries and hub devices that no resource owns
//! (Unowned), and resources whose entry is gone from DPS (Missing). Reads only; prints IDs, never secrets.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment};
use crate::controller::backend::{Backend, BackendCache};
use crate::{Error, Result};

/// Arguments of `dps-operator audit`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// The ProvisioningService whose DPS instance and hubs are audited.
    #[arg(long)]
    pub provisioning_service: String,
    /// Its namespace (default: the kubeconfig's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// A JSON array of findings.
    Json,
}

/// What a finding is about.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    /// A DPS individual enrollment.
    Enrollment,
    /// A DPS enrollment group.
    Group,
    /// A hub device identity.
    Device,
}

/// What is wrong.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Present outside Kubernetes, named by no resource.
    Unowned,
    /// Named by a resource, absent outside Kubernetes.
    Missing,
}

/// One row of the report.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Entry, group or device.
    pub kind: Kind,
    /// Registration ID, group ID or device ID.
    pub id: String,
    /// The hub host name, for devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// Unowned or Missing.
    pub finding: Verdict,
    /// `Kind/name` of the resource naming a missing entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// What the cluster's resources bind to. Registration and group IDs and hub host names are lower-cased
/// (DPS and DNS compare them case-insensitively); device IDs are case-sensitive in a hub and kept as they are.
#[derive(Default, Debug)]
pub struct Claims {
    /// Registration ID -> `Kind/name` of the resource bound to that individual enrollment.
    pub enrollments: BTreeMap<String, String>,
    /// Group ID -> `EnrollmentGroup/name`.
    pub groups: BTreeMap<String, String>,
    /// (hub, device ID) a DeviceDeprovision acted on.
    pub devices: BTreeSet<(String, String)>,
}

/// What the DPS instance and the hubs hold.
#[derive(Default, Debug)]
pub struct Holdings {
    /// Registration IDs of the individual enrollments.
    pub enrollments: Vec<String>,
    /// Group IDs.
    pub groups: Vec<String>,
    /// (registration or group ID, hub, device ID): devices DPS assigned, by the entry or group they came
    /// through.
    pub assigned: Vec<(String, String, String)>,
    /// (hub, device ID) of every device identity in the linked hubs.
    pub devices: Vec<(String, String)>,
}

/// Runs the audit and prints the report.
pub async fn run(args: AuditArgs) -> Result<()> {
    let client = Client::try_default().await.map_err(|e| Error::KubeConfig(e.to_string()))?;
    let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    let claims = claims(&client, &namespace, &args.provisioning_service).await?;
    let backend = BackendCache::for_command(&client, &namespace, &args.provisioning_service).await?;
    let holdings = holdings(&backend, &claims).await?;
    let findings = compare(&claims, &holdings);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
        Output::Table => print!("{}", table(&findings)),
    }
    Ok(())
}

/// The bound IDs of every resource in `namespace` naming the ProvisioningService `service`.
pub async fn claims(client: &Client, namespace: &str, service: &str) -> Result<Claims> {
    let params = ListParams::default();
    let mut claims = Claims::default();
    for e in Api::<IndividualEnrollment>::namespaced(client.clone(), namespace).list(&params).await? {
        if e.spec.provisioning_service_ref.name != service {
            continue;
        }
        if let Some(id) = e.status.as_ref().and_then(|s| s.registration_id.as_ref()) {
            claims.enrollments.insert(id.to_lowercase(), format!("IndividualEnrollment/{}", e.name_any()));
        }
    }
    for g in Api::<EnrollmentGroup>::namespaced(client.clone(), namespace).list(&params).await? {
        if g.spec.provisioning_service_ref.name != service {
            continue;
        }
        if let Some(id) = g.status.as_ref().and_then(|s| s.enrollment_group_id.as_ref()) {
            claims.groups.insert(id.to_lowercase(), format!("EnrollmentGroup/{}", g.name_any()));
        }
    }
    for d in Api::<DeviceDeprovision>::namespaced(client.clone(), namespace).list(&params).await? {
        if d.spec.provisioning_service_ref.name != service {
            continue;
        }
        let Some(status) = d.status.as_ref() else { continue };
        if let Some(entry) = &status.blocking_entry {
            claims
                .enrollments
                .entry(entry.registration_id.to_lowercase())
                .or_insert_with(|| format!("DeviceDeprovision/{}", d.name_any()));
        }
        if let (Some(hub), Some(device)) = (&status.assigned_hub, &status.device_id) {
            claims.devices.insert((hub.to_lowercase(), device.clone()));
        }
    }
    Ok(claims)
}

/// Everything in the DPS instance and its linked hubs (all pages). Registration records are read only
/// for owned entries and groups: a device is owned through them, and an unowned entry's device is
/// reported as unowned whatever its record says.
pub async fn holdings(backend: &Backend, claims: &Claims) -> Result<Holdings> {
    let mut held = Holdings::default();
    for e in backend.dps.query_all_enrollments("SELECT * FROM enrollments", None).await? {
        if claims.enrollments.contains_key(&e.registration_id.to_lowercase()) {
            // DPS query results need not carry `registrationState`; the record itself is authoritative.
            match backend.dps.get_registration_state(&e.registration_id).await {
                Ok(state) => assigned(&mut held, &e.registration_id, &state),
                Err(err) if err.is_not_found() => {}
                Err(err) => return Err(err.into()),
            }
        }
        held.enrollments.push(e.registration_id);
    }
    for g in backend.dps.query_all_enrollment_groups("SELECT * FROM enrollmentGroups", None).await? {
        if claims.groups.contains_key(&g.enrollment_group_id.to_lowercase()) {
            for state in backend.dps.query_all_registration_states(&g.enrollment_group_id, None).await? {
                assigned(&mut held, &g.enrollment_group_id, &state);
            }
        }
        held.groups.push(g.enrollment_group_id);
    }
    for (host, hub) in &backend.hubs {
        for twin in hub.query_all_devices("SELECT * FROM devices", None).await? {
            if twin.module_id.is_none() {
                held.devices.push((host.clone(), twin.device_id));
            }
        }
    }
    Ok(held)
}

fn assigned(held: &mut Holdings, owner: &str, state: &crate::azure::wire::dps::DeviceRegistrationState) {
    if let (Some(hub), Some(device)) = (&state.assigned_hub, &state.device_id) {
        held.assigned.push((owner.to_string(), hub.clone(), device.clone()));
    }
}

/// The findings, sorted: unowned entries, groups and devices, and missing entries and groups.
pub fn compare(claims: &Claims, held: &Holdings) -> Vec<Finding> {
    let mut findings = Vec::new();
    let unowned = |kind, id: &str, hub: Option<&str>| Finding {
        kind,
        id: id.to_string(),
        hub: hub.map(str::to_string),
        finding: Verdict::Unowned,
        resource: None,
    };
    let held_enrollments: BTreeSet<String> = held.enrollments.iter().map(|id| id.to_lowercase()).collect();
    let held_groups: BTreeSet<String> = held.groups.iter().map(|id| id.to_lowercase()).collect();
    for id in &held.enrollments {
        if !claims.enrollments.contains_key(&id.to_lowercase()) {
            findings.push(unowned(Kind::Enrollment, id, None));
        }
    }
    for id in &held.groups {
        if !claims.groups.contains_key(&id.to_lowercase()) {
            findings.push(unowned(Kind::Group, id, None));
        }
    }
    // A device is owned through the entry or group DPS assigned it by, when that is owned.
    let mut owned_devices = claims.devices.clone();
    for (owner, hub, device) in &held.assigned {
        let owner = owner.to_lowercase();
        if claims.enrollments.contains_key(&owner) || claims.groups.contains_key(&owner) {
            owned_devices.insert((hub.to_lowercase(), device.clone()));
        }
    }
    for (hub, device) in &held.devices {
        if !owned_devices.contains(&(hub.to_lowercase(), device.clone())) {
            findings.push(unowned(Kind::Device, device, Some(hub)));
        }
    }
    let missing = |kind, id: &str, resource: &str| Finding {
        kind,
        id: id.to_string(),
        hub: None,
        finding: Verdict::Missing,
        resource: Some(resource.to_string()),
    };
    for (id, resource) in &claims.enrollments {
        if !held_enrollments.contains(id) {
            findings.push(missing(Kind::Enrollment, id, resource));
        }
    }
    for (id, resource) in &claims.groups {
        if !held_groups.contains(id) {
            findings.push(missing(Kind::Group, id, resource));
        }
    }
    findings.sort();
    findings
}

/// The report as aligned columns (a line saying so when there is nothing to report).
pub fn table(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "No findings: every entry, group and device is owned, and every resource's entry exists.\n".into();
    }
    let rows: Vec<[String; 5]> = findings
        .iter()
        .map(|f| {
            [
                format!("{:?}", f.kind).to_lowercase(),
                f.id.clone(),
                f.hub.clone().unwrap_or_else(|| "-".into()),
                format!("{:?}", f.finding),
                f.resource.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["KIND", "ID", "HUB", "FINDING", "RESOURCE"].map(String::from);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_owned_through_an_owned_entry_and_unowned_otherwise() {
        let mut claims = Claims::default();
        claims.enrollments.insert("dev-a".into(), "IndividualEnrollment/a".into());
        claims.enrollments.insert("dev-gone".into(), "IndividualEnrollment/gone".into());
        let held = Holdings {
            enrollments: vec!["Dev-A".into(), "stray".into()],
            groups: vec![],
            assigned: vec![("Dev-A".into(), "hub1.local".into(), "dev-a".into())],
            devices: vec![("hub1.local".into(), "dev-a".into()), ("hub1.local".into(), "loose".into())],
        };
        let found = compare(&claims, &held);
        let brief: Vec<(Kind, &str, Verdict)> = found.iter().map(|f| (f.kind, f.id.as_str(), f.finding)).collect();
        assert_eq!(
            brief,
            vec![
                (Kind::Enrollment, "dev-gone", Verdict::Missing),
                (Kind::Enrollment, "stray", Verdict::Unowned),
                (Kind::Device, "loose", Verdict::Unowned),
            ]
        );
        let text = table(&found);
        assert!(text.starts_with("KIND"), "{text}");
        assert!(text.contains("IndividualEnrollment/gone"), "{text}");
    }
}
