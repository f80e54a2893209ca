//! What the IndividualEnrollment and EnrollmentGroup controllers do alike with the DPS entry they manage,
//! over the two kinds of entry (an individual enrollment, an enrollment group).

use std::future::Future;

use crate::Result;
use crate::azure::dps::DpsServiceClient;
use crate::azure::{AzureError, wire};

/// A kind of DPS entry, as the controllers read it back.
pub(crate) trait DpsEntry: Sized + Send + Sync {
    /// Reads the entry `id`.
    fn read<'a>(dps: &'a DpsServiceClient, id: &'a str) -> impl Future<Output = Result<Self, AzureError>> + Send + 'a;

    /// Reads the attestation of entry `id` through attestationmechanism, the only read that returns
    /// symmetric keys.
    fn read_attestation<'a>(
        dps: &'a DpsServiceClient,
        id: &'a str,
    ) -> impl Future<Output = Result<wire::AttestationMechanism, AzureError>> + Send + 'a;

    /// The attestation as the entry itself carries it (symmetric keys left out).
    fn attestation(&self) -> &wire::AttestationMechanism;
}

impl DpsEntry for wire::IndividualEnrollment {
    fn read<'a>(dps: &'a DpsServiceClient, id: &'a str) -> impl Future<Output = Result<Self, AzureError>> + Send + 'a {
        dps.get_enrollment(id)
    }

    fn read_attestation<'a>(
        dps: &'a DpsServiceClient,
        id: &'a str,
    ) -> impl Future<Output = Result<wire::AttestationMechanism, AzureError>> + Send + 'a {
        dps.enrollment_attestation(id)
    }

    fn attestation(&self) -> &wire::AttestationMechanism {
        &self.attestation
    }
}

impl DpsEntry for wire::EnrollmentGroup {
    fn read<'a>(dps: &'a DpsServiceClient, id: &'a str) -> impl Future<Output = Result<Self, AzureError>> + Send + 'a {
        dps.get_enrollment_group(id)
    }

    fn read_attestation<'a>(
        dps: &'a DpsServiceClient,
        id: &'a str,
    ) -> impl Future<Output = Result<wire::AttestationMechanism, AzureError>> + Send + 'a {
        dps.enrollment_group_attestation(id)
    }

    fn attestation(&self) -> &wire::AttestationMechanism {
        &self.attestation
    }
}

/// The attestation DPS holds for entry `id` of kind `kind`: symmetric keys come only through
/// attestationmechanism, the rest with the entry itself.
pub(crate) async fn held_attestation<E: DpsEntry>(
    dps: &DpsServiceClient,
    id: &str,
    held: &E,
    kind: wire::AttestationType,
) -> Result<wire::AttestationMechanism> {
    Ok(match kind {
        wire::AttestationType::SymmetricKey => E::read_attestation(dps, id).await?,
        _ => held.attestation().clone(),
    })
}

/// The entry a create refused with 409 finds, when it is exactly the one sent (`same` says so, given the
/// entry and the attestation DPS holds): the create reached DPS and only its answer was lost (the
/// connection dropped after the write), so the client's retry was refused. Anything else in its place was
/// created by someone else.
pub(crate) async fn lost_create<E: DpsEntry>(
    dps: &DpsServiceClient,
    id: &str,
    sent: &E,
    same: impl Fn(&E, &wire::AttestationMechanism) -> bool,
) -> Result<Option<E>> {
    let held = match E::read(dps, id).await {
        Ok(held) => held,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let attestation = held_attestation(dps, id, &held, sent.attestation().kind).await?;
    Ok(same(&held, &attestation).then_some(held))
}
