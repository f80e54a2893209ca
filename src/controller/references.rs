//! Who refers to whom: the resources using a ProvisioningService, and the Secrets a ProvisioningService
//! needs, which the operator keeps (with a finalizer of its own) until the last dependent is finalized.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::status::FIELD_MANAGER;
use crate::Result;
use crate::api::common::CertificateSource;
use crate::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};

/// The finalizer the operator puts on credential Secrets while a ProvisioningService needs them.
pub const SECRET_FINALIZER: &str = "dps.iot-operator.dev/in-use";

/// `kind/name` of every resource in `namespace` that refers to the ProvisioningService `name`.
pub async fn dependents(client: &Client, namespace: &str, name: &str) -> Result<Vec<String>> {
    let params = ListParams::default();
    let mut found = Vec::new();
    for e in Api::<IndividualEnrollment>::namespaced(client.clone(), namespace).list(&params).await? {
        if e.spec.provisioning_service_ref.name == name {
            found.push(format!("IndividualEnrollment/{}", e.name_any()));
        }
    }
    for g in Api::<EnrollmentGroup>::namespaced(client.clone(), namespace).list(&params).await? {
        if g.spec.provisioning_service_ref.name == name {
            found.push(format!("EnrollmentGroup/{}", g.name_any()));
        }
    }
    for d in Api::<DeviceDeprovision>::namespaced(client.clone(), namespace).list(&params).await? {
        if d.spec.provisioning_service_ref.name == name {
            found.push(format!("DeviceDeprovision/{}", d.name_any()));
        }
    }
    Ok(found)
}

/// Names of the Secrets a ProvisioningService reads.
pub fn service_secrets(service: &ProvisioningService) -> Vec<String> {
    let spec = &service.spec;
    let mut names = vec![spec.connection_string_secret_ref.name.clone()];
    names.extend(spec.hubs.iter().map(|h| h.connection_string_secret_ref.name.clone()));
    if let Some(CertificateSource::SecretRef(selector)) = &spec.ca_bundle {
        names.push(selector.name.clone());
    }
    names.sort();
    names.dedup();
    names
}

/// Adds the in-use finalizer to each named Secret that exists and lacks it.
pub async fn protect_secrets(client: &Client, namespace: &str, names: &[String]) -> Result<()> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    for name in names {
        let Some(secret) = api.get_opt(name).await? else { continue };
        if secret.finalizers().iter().any(|f| f == SECRET_FINALIZER) || secret.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let mut finalizers = secret.finalizers().to_vec();
        finalizers.push(SECRET_FINALIZER.to_string());
        set_finalizers(&api, &secret, finalizers).await?;
    }
    Ok(())
}

/// Removes the in-use finalizer from each named Secret that no other live ProvisioningService in the
/// namespace still reads.
pub async fn release_secrets(client: &Client, namespace: &str, releasing: &ProvisioningService) -> Result<()> {
    let services =
        Api::<ProvisioningService>::namespaced(client.clone(), namespace).list(&ListParams::default()).await?;
    let still_needed: Vec<String> =
        services.iter().filter(|s| s.uid() != releasing.uid()).flat_map(service_secrets).collect();
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    for name in service_secrets(releasing) {
        if still_needed.contains(&name) {
            continue;
        }
        let Some(secret) = api.get_opt(&name).await? else { continue };
        if !secret.finalizers().iter().any(|f| f == SECRET_FINALIZER) {
            continue;
        }
        let finalizers = secret.finalizers().iter().filter(|f| *f != SECRET_FINALIZER).cloned().collect();
        set_finalizers(&api, &secret, finalizers).await?;
    }
    Ok(())
}

/// Replaces the finalizer list, guarded by the resourceVersion read (a concurrent change makes it fail
/// and the reconcile retries), so another controller's finalizer is never lost.
async fn set_finalizers(api: &Api<Secret>, secret: &Secret, finalizers: Vec<String>) -> Result<()> {
    let patch = json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": secret.resource_version() }
    });
    api.patch(
        &secret.name_any(),
        &PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() },
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
