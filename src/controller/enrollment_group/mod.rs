//! EnrollmentGroup: a DPS group kept in sync with etags, its registered devices counted, the enabled
//! groups above it in the certificate chain reported, and its devices revoked in order on deletion.

mod apply;
pub mod attestation;
pub mod chain;
mod delete;

use std::sync::Arc;

use kube::ResourceExt;

pub use apply::RE_ENROLLMENT_RISK;

use super::cached::View;
use super::requeue::Action;
use super::{Context, Reconciled};
use crate::Result;
use crate::api::EnrollmentGroup;
use crate::api::common::CertificateSource;
use crate::api::enrollment_group::{GroupAttestation, GroupX509Attestation};

impl Reconciled for EnrollmentGroup {
    const CONTROLLER: &'static str = "enrollmentgroup";

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

    fn health(&self) -> Option<(&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], Option<i64>)> {
        self.status.as_ref().map(|s| (s.conditions.as_slice(), s.observed_generation))
    }

    fn timers(ctx: &Context) -> &super::requeue::Timers<Self> {
        &ctx.timers.groups
    }

    fn cache(ctx: &Context) -> &std::sync::OnceLock<kube::runtime::reflector::Store<super::cached::Cached<Self>>> {
        &ctx.groups
    }

    fn view(&self) -> View {
        View::of(
            &self.spec.provisioning_service_ref.name,
            &group_id(self),
            &reads(self, "Secret"),
            &reads(self, "ConfigMap"),
        )
    }
}

/// The group ID: `spec.enrollmentGroupId`, else the resource's name.
pub fn group_id(group: &EnrollmentGroup) -> String {
    group.spec.enrollment_group_id.clone().unwrap_or_else(|| group.name_any())
}

/// The Secrets or ConfigMaps (`kind`) a group reads.
fn reads(group: &EnrollmentGroup, kind: &str) -> Vec<String> {
    let mut names = Vec::new();
    match &group.spec.attestation {
        GroupAttestation::X509(GroupX509Attestation::SigningCertificates(pair)) => {
            for source in std::iter::once(&pair.primary).chain(pair.secondary.as_ref()) {
                match (source, kind) {
                    (CertificateSource::SecretRef(k), "Secret") | (CertificateSource::ConfigMapRef(k), "ConfigMap") => {
                        names.push(k.name.clone())
                    }
                    _ => {}
                }
            }
        }
        GroupAttestation::SymmetricKey(s) if kind == "Secret" => names.push(s.secret_name.clone()),
        _ => {}
    }
    names
}
