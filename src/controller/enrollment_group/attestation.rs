//! The attestation an enrollment group sends to DPS: a group key from a Secret (or generated into an owned
//! one), signing certificates checked to be current CAs, or names of CA certificates registered in DPS.

use kube::ResourceExt;

use crate::api::EnrollmentGroup;
use crate::api::common::CertificateSource;
use crate::api::enrollment_group::{GroupAttestation, GroupX509Attestation};
use crate::azure::wire::{AttestationMechanism, AttestationType};
use crate::controller::certificate::Certificate;
use crate::controller::individual_enrollment::attestation::{self as entry, PRIMARY_KEY, Plan, SECONDARY_KEY};
use crate::controller::{Context, inputs, rotation};
use crate::{Error, Result};

/// What a group's attestation resolves to.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    /// Mechanism, generated-keys Secret and thumbprints, as for an individual enrollment.
    pub entry: Plan,
    /// The signing certificates' PEM sources in full (a source may append the CAs above the certificate,
    /// which the re-enrollment check uses as the chain it can see).
    pub chain_texts: Vec<String>,
}

/// Reads the attestation inputs of `group`.
pub async fn plan(ctx: &Context, group: &EnrollmentGroup) -> Result<GroupPlan> {
    let namespace = group.namespace().unwrap_or_default();
    match &group.spec.attestation {
        GroupAttestation::SymmetricKey(sym) => {
            let entry = match inputs::get_secret(&ctx.client, &namespace, &sym.secret_name).await? {
                Some(secret) => {
                    let Some(primary) = inputs::secret_value(&secret, PRIMARY_KEY) else {
                        return Err(Error::invalid(
                            "SecretKeyMissing",
                            format!("Secret {namespace}/{} has no key {PRIMARY_KEY:?}", sym.secret_name),
                        ));
                    };
                    let secondary = inputs::secret_value(&secret, SECONDARY_KEY);
                    entry::check_key(&primary, PRIMARY_KEY, &sym.secret_name)?;
                    if let Some(key) = &secondary {
                        entry::check_key(key, SECONDARY_KEY, &sym.secret_name)?;
                    }
                    let credentials = [Some(rotation::key_id(&primary)), secondary.as_ref().map(rotation::key_id)];
                    Plan {
                        mechanism: AttestationMechanism::symmetric_key(Some(primary), secondary),
                        generate_into: None,
                        thumbprints: Vec::new(),
                        credentials,
                    }
                }
                None if sym.generate => Plan {
                    mechanism: AttestationMechanism::symmetric_key(None, None),
                    generate_into: Some(sym.secret_name.clone()),
                    thumbprints: Vec::new(),
                    credentials: [None, None],
                },
                None => {
                    return Err(Error::invalid(
                        "SecretNotFound",
                        format!(
                            "Secret {namespace}/{} does not exist; create it with {PRIMARY_KEY} (and {SECONDARY_KEY}) or set generate: true",
                            sym.secret_name
                        ),
                    ));
                }
            };
            Ok(GroupPlan { entry, chain_texts: Vec::new() })
        }
        GroupAttestation::X509(GroupX509Attestation::SigningCertificates(pair)) => {
            let (primary, primary_text) =
                load(ctx, &namespace, &pair.primary, "the primary signing certificate").await?;
            let mut chain_texts = vec![primary_text];
            let secondary = match &pair.secondary {
                Some(source) => {
                    let (cert, text) = load(ctx, &namespace, source, "the secondary signing certificate").await?;
                    chain_texts.push(text);
                    Some(cert)
                }
                None => None,
            };
            let thumbprints =
                std::iter::once(&primary).chain(secondary.as_ref()).map(Certificate::sha1_thumbprint).collect();
            let credentials =
                [Some(rotation::certificate_id(&primary)), secondary.as_ref().map(rotation::certificate_id)];
            let mechanism =
                AttestationMechanism::x509_signing_certificate(primary.base64(), secondary.map(|c| c.base64()));
            Ok(GroupPlan { entry: Plan { mechanism, generate_into: None, thumbprints, credentials }, chain_texts })
        }
        GroupAttestation::X509(GroupX509Attestation::CaReferences(refs)) => Ok(GroupPlan {
            entry: Plan {
                mechanism: AttestationMechanism::x509_ca_reference(refs.primary.clone(), refs.secondary.clone()),
                generate_into: None,
                thumbprints: Vec::new(),
                credentials: [
                    Some(rotation::ca_reference_id(&refs.primary)),
                    refs.secondary.as_deref().map(rotation::ca_reference_id),
                ],
            },
            chain_texts: Vec::new(),
        }),
    }
}

/// Loads and checks one signing certificate: parseable, current, and a CA (DPS would take a leaf, but no
/// device certificate could then chain to it, so the group would admit nobody).
async fn load(ctx: &Context, namespace: &str, source: &CertificateSource, what: &str) -> Result<(Certificate, String)> {
    let text = inputs::certificate(&ctx.client, namespace, source).await?;
    let cert = Certificate::parse(&text, what)?;
    if !cert.is_ca {
        return Err(Error::invalid(
            "CertificateNotCA",
            format!(
                "{what} ({}) is not a CA certificate (basicConstraints cA is not true); a group needs the CA that signed its devices' certificates",
                cert.common_name.clone().unwrap_or_default()
            ),
        ));
    }
    Ok((cert, text))
}

/// Whether DPS's attestation (symmetric keys as read through attestationmechanism) differs from the plan.
pub fn differs(held: &AttestationMechanism, plan: &Plan) -> bool {
    let wanted = &plan.mechanism;
    if held.kind != wanted.kind {
        return true;
    }
    if wanted.kind != AttestationType::X509 {
        return entry::differs(held, plan);
    }
    let held_x = held.x509.clone().unwrap_or_default();
    let wanted_x = wanted.x509.clone().unwrap_or_default();
    if let Some(refs) = wanted_x.ca_references {
        return held_x.ca_references != Some(refs);
    }
    let held_certs = held_x.signing_certificates.unwrap_or_default();
    let held_thumbs: Vec<String> = [held_certs.primary, held_certs.secondary]
        .into_iter()
        .flatten()
        .filter_map(|c| c.info.and_then(|i| i.sha1_thumbprint))
        .map(|t| t.to_ascii_uppercase())
        .collect();
    held_thumbs != plan.thumbprints
}
