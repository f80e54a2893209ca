//! ProvisioningService: checks both APIs with its credentials, keeps its Secrets while dependents need
//! them, and holds its finalizer until the last dependent is gone.

mod apply;
mod delete;

use std::sync::Arc;

use kube::Resource;

use super::cached::Cached;
use super::requeue::Action;
use super::{Context, Reconciled};
use crate::Result;
use crate::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};

impl Reconciled for ProvisioningService {
    const CONTROLLER: &'static str = "provisioningservice";

    async fn apply(obj: Arc<Self>, ctx: Arc<Context>, _: &super::finalizer::Finalizer<Self>) -> Result<Action> {
        apply::apply(&obj, &ctx).await
    }

    async fn cleanup(obj: Arc<Self>, ctx: Arc<Context>) -> Result<Action> {
        delete::cleanup(&obj, &ctx).await
    }

    /// Abandoned, the service stops keeping its Secrets: nothing will use them through it any more.
    async fn abandoned(obj: Arc<Self>, ctx: Arc<Context>) -> Result<()> {
        delete::release(&obj, &ctx).await
    }

    fn health(&self) -> Option<(&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], Option<i64>)> {
        self.status.as_ref().map(|s| (s.conditions.as_slice(), s.observed_generation))
    }

    fn timers(ctx: &Context) -> &super::requeue::Timers<Self> {
        &ctx.timers.services
    }

    fn cache(ctx: &Context) -> &std::sync::OnceLock<kube::runtime::reflector::Store<super::cached::Cached<Self>>> {
        &ctx.services
    }

    /// Every change (its status becoming Ready, above all) reconciles again the resources that name it,
    /// from this one watch instead of one per dependent kind.
    fn watched(cached: &Cached<Self>, ctx: &Context, _deleted: bool) {
        let namespace = cached.meta().namespace.as_deref();
        let name = super::cached::name_digest_of(cached.meta());
        super::triggers::wake_dependents::<IndividualEnrollment>(ctx, namespace, |v| v.service == name);
        super::triggers::wake_dependents::<EnrollmentGroup>(ctx, namespace, |v| v.service == name);
        super::triggers::wake_dependents::<DeviceDeprovision>(ctx, namespace, |v| v.service == name);
    }

    fn view(&self) -> super::cached::View {
        super::cached::View {
            secrets: super::references::service_secrets(self).iter().map(|s| super::cached::name_digest(s)).collect(),
            ready: is_ready(self),
            ..Default::default()
        }
    }
}

/// Whether the service's status says Ready (its credentials work against DPS and every hub).
pub(crate) fn is_ready(service: &ProvisioningService) -> bool {
    service.status.as_ref().is_some_and(|s| super::health::is_true(&s.conditions, super::health::READY))
}

/// Called when a resource that names a ProvisioningService is gone from the cluster: wakes that service
/// if it is being deleted, since it may have been waiting for this last dependent.
pub(crate) fn dependent_removed<K: Reconciled>(ctx: &Context, obj: &Cached<K>) {
    let namespace = obj.meta().namespace.as_deref();
    let Some(store) = ctx.services.get() else { return };
    // The cache keeps the service's name as a digest; a namespace holds few services.
    let named = |s: &Cached<ProvisioningService>| {
        s.meta().namespace.as_deref() == namespace && super::cached::name_digest_of(s.meta()) == obj.view.service
    };
    for service in store.state_filter(|s| named(s) && s.deleting()) {
        ProvisioningService::timers(ctx).set(&service, Some(std::time::Duration::ZERO));
    }
}
