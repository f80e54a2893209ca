//! DeviceDeprovision: the two-step unprovisioning of one device. DPS is made to refuse it first (its own
//! individual enrollment disabled, or a disabled one created for its registration ID), then its hub
//! identity is disabled or deleted. Deleting the resource keeps the block (`Retain`) or undoes exactly
//! what the status says was done (`Reinstate`).

mod apply;
mod delete;
mod drift;
mod entry;

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;

use super::health::Health;
use super::requeue::Action;
use super::{Context, Reconciled, events, status};
use crate::Result;
use crate::api::device_deprovision::{DeprovisionPhase, DeviceDeprovisionStatus};
use crate::api::{DeviceDeprovision, IndividualEnrollment};

impl Reconciled for DeviceDeprovision {
    const CONTROLLER: &'static str = "devicedeprovision";

    async fn apply(obj: Arc<Self>, ctx: Arc<Context>, _: &super::finalizer::Finalizer<Self>) -> Result<Action> {
        apply::apply(&obj, &ctx).await
    }

    fn provisioning_service(&self) -> Option<&str> {
        Some(&self.spec.provisioning_service_ref.name)
    }

    async fn cleanup(obj: Arc<Self>, ctx: Arc<Context>) -> Result<Action> {
        delete::cleanup(&obj, &ctx).await
    }

    fn registration_id(&self) -> Option<String> {
        Some(self.spec.registration_id.clone())
    }

    fn health(&self) -> Option<(&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], Option<i64>)> {
        self.status.as_ref().map(|s| (s.conditions.as_slice(), s.observed_generation))
    }

    /// The enrollments for the registration ID learn that an order for it came, changed or went (they
    /// block, or stop blocking, the device).
    fn watched(cached: &super::cached::Cached<Self>, ctx: &Context, deleted: bool) {
        if deleted {
            super::provisioning_service::dependent_removed(ctx, cached);
        }
        let id = cached.view.id;
        super::triggers::wake_dependents::<IndividualEnrollment>(
            ctx,
            kube::Resource::meta(cached).namespace.as_deref(),
            |v| v.id == id,
        );
    }

    fn timers(ctx: &Context) -> &super::requeue::Timers<Self> {
        &ctx.timers.deprovisions
    }

    fn cache(ctx: &Context) -> &std::sync::OnceLock<kube::runtime::reflector::Store<super::cached::Cached<Self>>> {
        &ctx.deprovisions
    }

    fn view(&self) -> super::cached::View {
        super::cached::View::of(&self.spec.provisioning_service_ref.name, &self.spec.registration_id, &[], &[])
    }
}

/// The status being built by one reconcile, and the last version written, so each step's record is one
/// patch and an unchanged status none.
struct Progress<'a> {
    ctx: &'a Context,
    obj: &'a DeviceDeprovision,
    api: Api<DeviceDeprovision>,
    written: Option<DeviceDeprovisionStatus>,
    status: DeviceDeprovisionStatus,
}

impl<'a> Progress<'a> {
    fn new(ctx: &'a Context, obj: &'a DeviceDeprovision) -> Self {
        let api = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
        let written = obj.status.clone();
        let status = written.clone().unwrap_or_default();
        Progress { ctx, obj, api, written, status }
    }

    /// Moves to `phase` with `message`, announcing a change of phase with an event.
    async fn enter(&mut self, phase: DeprovisionPhase, message: String) {
        let changed = self.status.phase != phase;
        self.status.phase = phase;
        self.status.message = Some(message.clone());
        if changed {
            match phase {
                DeprovisionPhase::Failed => events::warning(self.ctx, self.obj, "Failed", message).await,
                other => events::normal(self.ctx, self.obj, phase_name(other), message).await,
            }
        }
    }

    /// Records a completed step with Reconciling conditions.
    async fn save_progressing(&mut self) -> Result<()> {
        let message = self.status.message.clone().unwrap_or_else(|| "deprovisioning".into());
        self.save(&Health::progressing("Deprovisioning", message)).await
    }

    async fn save(&mut self, health: &Health) -> Result<()> {
        let previous = self.status.conditions.clone();
        self.status.conditions = health.conditions(self.obj.metadata.generation, &previous);
        // kstatus (Flux) and the Argo CD check compare this with metadata.generation at every phase.
        self.status.observed_generation = self.obj.metadata.generation;
        status::write(&self.api, self.obj, self.written.as_ref(), &self.status).await?;
        self.written = Some(self.status.clone());
        Ok(())
    }
}

fn phase_name(phase: DeprovisionPhase) -> &'static str {
    match phase {
        DeprovisionPhase::Pending => "Pending",
        DeprovisionPhase::Revoking => "Revoking",
        DeprovisionPhase::Revoked => "Revoked",
        DeprovisionPhase::Deregistering => "Deregistering",
        DeprovisionPhase::Completed => "Completed",
        DeprovisionPhase::Failed => "Failed",
    }
}
