//! IndividualEnrollment: one device's DPS entry, created and updated with etags, and revoked in order
//! when the resource is deleted.

pub(crate) mod apply;
pub mod attestation;
pub(crate) mod delete;

use std::sync::Arc;

use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

pub use apply::BLOCKED;
pub(crate) use apply::ready_backend;
pub(crate) use delete::{disable_entry, service_backend};

use super::cached::View;
use super::cached::{id_digest, name_digest};
use super::requeue::Action;
use super::{Context, Reconciled};
use crate::Result;
use crate::api::common::CertificateSource;
use crate::api::individual_enrollment::IndividualAttestation;
use crate::api::{DeviceDeprovision, IndividualEnrollment};

impl Reconciled for IndividualEnrollment {
    const CONTROLLER: &'static str = "individualenrollment";

    const FINALIZER_WITH_CLAIM: bool = true;

    async fn apply(obj: Arc<Self>, ctx: Arc<Context>, finalizer: &super::finalizer::Finalizer<Self>) -> Result<Action> {
        apply::apply(&obj, &ctx, finalizer).await
    }

    fn provisioning_service(&self) -> Option<&str> {
        Some(&self.spec.provisioning_service_ref.name)
    }

    async fn cleanup(obj: Arc<Self>, ctx: Arc<Context>) -> Result<Action> {
        delete::cleanup(&obj, &ctx).await
    }

    fn registration_id(&self) -> Option<String> {
        Some(registration_id(self))
    }

    fn health(&self) -> Option<(&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], Option<i64>)> {
        self.status.as_ref().map(|s| (s.conditions.as_slice(), s.observed_generation))
    }

    fn timers(ctx: &Context) -> &super::requeue::Timers<Self> {
        &ctx.timers.enrollments
    }

    fn cache(ctx: &Context) -> &std::sync::OnceLock<kube::runtime::reflector::Store<super::cached::Cached<Self>>> {
        &ctx.enrollments
    }

    fn view(&self) -> View {
        View::of(
            &self.spec.provisioning_service_ref.name,
            &registration_id(self),
            &reads(self, "Secret"),
            &reads(self, "ConfigMap"),
        )
    }
}

/// The registration ID: `spec.registrationId`, else the resource's name.
pub fn registration_id(enrollment: &IndividualEnrollment) -> String {
    enrollment.spec.registration_id.clone().unwrap_or_else(|| enrollment.metadata.name.clone().unwrap_or_default())
}

/// Where to look for DeviceDeprovisions.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// The DeviceDeprovision controller's cache (a list of the apiserver if it is not running).
    Cached,
    /// A list of the apiserver.
    Fresh,
}

/// Set on an IndividualEnrollment when a DeviceDeprovision that relied on its entry is deleted with `Retain`:
/// the block outlives the order (the value names it) until a person removes the annotation.
pub const RETAINED_REVOCATION_ANNOTATION: &str = "dps.iot-operator.dev/retained-revocation";

/// The name of a DeviceDeprovision in force for `id` on the same ProvisioningService, or of a retained one
/// recorded on the enrollment, if any.
pub(crate) async fn blocking_deprovision(
    ctx: &Context,
    enrollment: &IndividualEnrollment,
    id: &str,
    freshness: Freshness,
) -> Result<Option<String>> {
    let namespace = enrollment.namespace().unwrap_or_default();
    let retained = |e: &IndividualEnrollment| {
        e.annotations()
            .get(RETAINED_REVOCATION_ANNOTATION)
            .map(|d| format!("{d} (retained: remove annotation {RETAINED_REVOCATION_ANNOTATION} to lift it)"))
    };
    if let Some(d) = retained(enrollment) {
        return Ok(Some(d));
    }
    let service = enrollment.spec.provisioning_service_ref.name.as_str();
    let blocks = |d: &DeviceDeprovision| {
        d.namespace().as_deref() == Some(namespace.as_str())
            && d.spec.registration_id.eq_ignore_ascii_case(id)
            && d.spec.provisioning_service_ref.name == service
    };
    if freshness == Freshness::Cached
        && let Some(store) = super::context::filled_cache(&ctx.deprovisions).await
    {
        let (id, service) = (id_digest(id), name_digest(service));
        let blocking = store.find(|d| {
            d.meta().namespace.as_deref() == Some(namespace.as_str()) && d.view.id == id && d.view.service == service
        });
        return Ok(blocking.map(|d| d.name_any()));
    }
    let list =
        Api::<DeviceDeprovision>::namespaced(ctx.client.clone(), &namespace).list(&ListParams::default()).await?;
    if let Some(d) = list.into_iter().find(|d| blocks(d)) {
        return Ok(Some(d.name_any()));
    }
    // The order may have been deleted with Retain a moment ago, after marking the enrollment: read it afresh.
    let fresh =
        Api::<IndividualEnrollment>::namespaced(ctx.client.clone(), &namespace).get_opt(&enrollment.name_any()).await?;
    Ok(fresh.as_ref().and_then(retained))
}

/// The Secrets and ConfigMaps an enrollment reads.
fn reads(enrollment: &IndividualEnrollment, kind: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut source = |s: &CertificateSource| match (s, kind) {
        (CertificateSource::SecretRef(k), "Secret") | (CertificateSource::ConfigMapRef(k), "ConfigMap") => {
            names.push(k.name.clone())
        }
        _ => {}
    };
    match &enrollment.spec.attestation {
        IndividualAttestation::X509(x) => {
            source(&x.client_certificates.primary);
            if let Some(s) = &x.client_certificates.secondary {
                source(s);
            }
        }
        IndividualAttestation::SymmetricKey(s) if kind == "Secret" => names.push(s.secret_name.clone()),
        _ => {}
    }
    names
}
