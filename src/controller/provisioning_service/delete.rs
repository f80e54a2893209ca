//! Cleanup: hold while any resource still refers to this service (it needs the credentials to finish its
//! own deletion order), then release the Secrets it kept.

use kube::ResourceExt;
use kube::api::Api;

use crate::api::provisioning_service::{ProvisioningService, ProvisioningServiceStatus};
use crate::controller::health::Health;
use crate::controller::requeue::Action;
use crate::controller::{Context, events, references, status};
use crate::{Error, Result};

pub(super) async fn cleanup(service: &ProvisioningService, ctx: &Context) -> Result<Action> {
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let dependents = references::dependents(&ctx.client, &namespace, &name).await?;
    if !dependents.is_empty() {
        let message = format!(
            "deletion waits for {} resource(s) that use this service to finish their own deletion: {}",
            dependents.len(),
            dependents.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
        let api = Api::<ProvisioningService>::namespaced(ctx.client.clone(), &namespace);
        let current = service.status.clone();
        let previous = current.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
        let next = ProvisioningServiceStatus {
            conditions: Health::progressing("DependentsExist", message.clone())
                .conditions(service.metadata.generation, &previous),
            observed_generation: service.metadata.generation,
            ..current.clone().unwrap_or_default()
        };
        status::write(&api, service, current.as_ref(), &next).await?;
        // An error keeps the finalizer; the dependents' controllers wake this as soon as one is gone.
        return Err(Error::waiting("DependentsExist", message));
    }
    release(service, ctx).await?;
    events::normal(ctx, service, "Released", "no resource uses this service any more; Secrets released".into()).await;
    Ok(Action::await_change())
}

/// Lets go of the Secrets and the cached clients (Kubernetes and memory only).
pub(super) async fn release(service: &ProvisioningService, ctx: &Context) -> Result<()> {
    let namespace = service.namespace().unwrap_or_default();
    references::release_secrets(&ctx.client, &namespace, service).await?;
    ctx.backends.forget(&namespace, &service.name_any());
    Ok(())
}
