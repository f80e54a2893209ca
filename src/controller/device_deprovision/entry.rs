//! The DPS entry that refuses a deprovisioned device: the device's own individual enrollment disabled, or
//! a disabled individual enrollment created for its registration ID (which DPS consults before any group).

use kube::ResourceExt;

use crate::api::DeviceDeprovision;
use crate::azure::DpsServiceClient;
use crate::azure::wire::{self, AttestationMechanism, AttestationType};
use crate::controller::certificate::Certificate;
use crate::controller::{Context, inputs};
use crate::{Error, Result};

/// The attestation of an entry the operator creates: the leaf certificate when given (so the entry names
/// the very certificate it refuses), else symmetric keys DPS generates and nobody ever reads.
pub(super) async fn mechanism(ctx: &Context, deprovision: &DeviceDeprovision) -> Result<AttestationMechanism> {
    let id = &deprovision.spec.registration_id;
    let Some(source) = &deprovision.spec.leaf_certificate else {
        return Ok(AttestationMechanism::symmetric_key(None, None));
    };
    let namespace = deprovision.namespace().unwrap_or_default();
    let text = inputs::certificate(&ctx.client, &namespace, source).await?;
    let cert = Certificate::parse(&text, "leafCertificate")?;
    if cert.is_ca {
        return Err(Error::invalid(
            "CertificateIsCa",
            "leafCertificate is a CA certificate; give the device's own certificate, or leave it out to block with a symmetric-key entry",
        ));
    }
    if !cert.common_name.as_deref().is_some_and(|cn| cn.eq_ignore_ascii_case(id)) {
        return Err(Error::invalid(
            "CertificateCommonNameMismatch",
            format!(
                "leafCertificate has common name {:?} but the registration ID is {id:?}; DPS takes the registration ID from the CN",
                cert.common_name.unwrap_or_default()
            ),
        ));
    }
    Ok(AttestationMechanism::x509_client_certificate(cert.base64(), None))
}

/// The wire name of an attestation type (`x509`, `symmetricKey`, ...), as recorded in status.
pub(super) fn type_name(kind: AttestationType) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The entry for `id`, `None` when DPS has none.
pub(super) async fn held(dps: &DpsServiceClient, id: &str) -> Result<Option<wire::IndividualEnrollment>> {
    match dps.get_enrollment(id).await {
        Ok(held) => Ok(Some(held)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Creates the disabled blocking entry; DPS generates any symmetric keys, which are never read back.
pub(super) async fn create_disabled(dps: &DpsServiceClient, id: &str, mechanism: AttestationMechanism) -> Result<()> {
    let entry = wire::IndividualEnrollment {
        registration_id: id.to_string(),
        attestation: mechanism,
        provisioning_status: Some(wire::ProvisioningStatus::Disabled),
        ..wire::IndividualEnrollment::default()
    };
    dps.create_enrollment(&entry).await?;
    Ok(())
}

/// Re-enables the device's own entry with its etag; `false` when it is already enabled or gone. Symmetric
/// keys are read through attestationmechanism and sent back unchanged.
pub(super) async fn enable(dps: &DpsServiceClient, id: &str) -> Result<bool> {
    let Some(mut held) = held(dps, id).await? else {
        return Ok(false);
    };
    if held.provisioning_status != Some(wire::ProvisioningStatus::Disabled) {
        return Ok(false);
    }
    if held.attestation.kind == AttestationType::SymmetricKey {
        held.attestation = dps.enrollment_attestation(id).await?;
    }
    held.provisioning_status = Some(wire::ProvisioningStatus::Enabled);
    held.registration_state = None;
    let etag = held.etag.clone();
    dps.update_enrollment(&held, etag.as_deref()).await?;
    Ok(true)
}
