//! ProvisioningService: checks both APIs with its credentials, keeps its Secrets while dependents need
//! them, and holds its finalizer until the last dependent is gone.

mod apply;
mod delete;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::{Context, Reconciled, Scope};
use crate::Result;
use crate::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};

impl Reconciled for ProvisioningService {
    const CONTROLLER: &'static str = "provisioningservice";

    async fn apply(obj: Arc<Self>, ctx: Arc<Context>) -> Result<Action> {
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
}

/// The ProvisioningService controller: its own objects, the Secrets they read, and the dependents whose
/// disappearance lets a deletion finish.
pub async fn controller(
    ctx: Arc<Context>,
    scope: &Scope,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let config = watcher::Config::default();
    let (store, stream) = super::lenient::typed_watch::<ProvisioningService>(&client, scope, ctx.clone());
    let main = Controller::for_stream(stream, store);
    let _ = ctx.services.set(main.store());
    let store = main.store();
    let by_secret = move |secret: PartialObjectMeta<Secret>| {
        super::triggers::referring(&store, &secret, |s, name| {
            super::references::service_secrets(s).iter().any(|n| n == name)
        })
    };
    // Dependents matter only to a service being deleted (it waits for them); a burst of enrollments must
    // not re-check the credentials of a live service once per enrollment.
    let (s1, s2, s3) = (main.store(), main.store(), main.store());
    main.watches_stream(super::triggers::names_of(scope.api::<PartialObjectMeta<Secret>>(&client)), by_secret)
        .watches(scope.api::<IndividualEnrollment>(&client), config.clone(), move |e| {
            deleting_service(&s1, &e, &e.spec.provisioning_service_ref.name)
        })
        .watches(scope.api::<EnrollmentGroup>(&client), config.clone(), move |g| {
            deleting_service(&s2, &g, &g.spec.provisioning_service_ref.name)
        })
        .watches(scope.api::<DeviceDeprovision>(&client), config, move |d| {
            deleting_service(&s3, &d, &d.spec.provisioning_service_ref.name)
        })
        .with_config(ctx.controller_config())
        .graceful_shutdown_on(stop)
        .run(super::reconcile::<ProvisioningService>, super::error_policy::<ProvisioningService>, ctx)
        .for_each(|r| async move { super::log_result(ProvisioningService::CONTROLLER, r) })
        .await;
}

/// The ProvisioningService `name` in `obj`'s namespace, if it is being deleted.
fn deleting_service<K: kube::Resource>(
    store: &Store<ProvisioningService>,
    obj: &K,
    name: &str,
) -> Option<ObjectRef<ProvisioningService>> {
    let ns = obj.meta().namespace.clone()?;
    let service = ObjectRef::new(name).within(&ns);
    store.get(&service)?.metadata.deletion_timestamp.is_some().then_some(service)
}
