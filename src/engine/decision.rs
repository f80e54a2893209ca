//! The DPS decision order, as pure functions.
//!
//! 1. An individual enrollment for the registration ID decides first: disabled refuses (whatever its
//!    attestation type, so a disabled symmetric-key entry blocks an X.509 device of the same ID), enabled
//!    provisions when the credential matches it (leaf certificate thumbprint or symmetric key) and refuses
//!    otherwise.
//! 2. Otherwise, for X.509, the enrollment group of the nearest certificate in the device's chain decides,
//!    walking up from the leaf: a group matches at a level when its signing certificate signed the
//!    certificate below (so the group certificate may be the next chain certificate or the issuer of the
//!    topmost one the device sent); every chain certificate must have signed the one below it.
//!    For symmetric keys, the group whose derived key (`HMAC-SHA256(groupKey, registrationId)`) verifies
//!    the token decides.
//! 3. The first match decides: enabled provisions, disabled refuses. No match refuses.
//!
//! X.509 chains are checked as a TLS client chain would be, so that expiry revokes: every certificate the
//! device presents must be inside its validity period, and every certificate that signs another (chain
//! certificate or the group's) must be a CA inside its validity period. A certificate sits in at most one
//! entry (the service API refuses a second), so at most one group matches at a level.

use super::certs;
use super::model::{DeviceAuth, Entry, SymmetricKeys, Thumbprints};
use super::sas::{self, SasToken};

/// What the device presented.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// A SAS token in the Authorization header.
    Sas(&'a SasToken),
    /// The TLS client certificate chain, leaf first, DER.
    X509(&'a [Vec<u8>]),
}

/// Which entry decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The individual enrollment of the registration ID.
    Individual,
    /// The enrollment group with this ID.
    Group(String),
}

/// The outcome.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Provision the device with the deciding entry's settings.
    Provision {
        /// Which entry.
        source: Source,
        /// The entry's settings.
        entry: Box<Entry>,
        /// The device identity's authentication in the hub.
        auth: DeviceAuth,
    },
    /// The deciding entry is disabled.
    Disabled {
        /// Which entry.
        source: Source,
        /// Why, for the refusal log.
        reason: String,
    },
    /// Nothing matched or the credential is wrong.
    Refused {
        /// Why, for the refusal log.
        reason: String,
    },
}

/// Decides for `registration_id` (lower-case) with the given credential, individual enrollment (if any) and
/// groups (with their IDs). `now` is unix seconds (token expiry).
pub fn decide(
    id_scope: &str,
    registration_id: &str,
    credential: Credential<'_>,
    individual: Option<&Entry>,
    groups: &[(String, Entry)],
    now: i64,
) -> Decision {
    if let Credential::Sas(token) = credential {
        let resource = format!("{id_scope}/registrations/{registration_id}");
        if let Err(e) = token.check_scope(&resource, Some("registration"), now) {
            return Decision::Refused { reason: e.to_string() };
        }
    }
    if let Credential::X509(chain) = credential
        && let Some((i, why)) =
            chain.iter().enumerate().find_map(|(i, der)| certs::check_validity(der, now).err().map(|w| (i, w)))
    {
        return Decision::Refused { reason: format!("client certificate {i}: {why}") };
    }
    if let Some(entry) = individual {
        return decide_individual(entry, credential);
    }
    match credential {
        Credential::Sas(token) => decide_symmetric_group(registration_id, token, groups),
        Credential::X509(chain) => decide_x509_group(chain, groups, now),
    }
}

fn decide_individual(entry: &Entry, credential: Credential<'_>) -> Decision {
    if !entry.enabled() {
        return Decision::Disabled { source: Source::Individual, reason: "individual enrollment is disabled".into() };
    }
    let att = entry.attestation.clone().unwrap_or_default();
    let refused = |reason: &str| Decision::Refused { reason: reason.to_string() };
    match (att.kind.as_str(), credential) {
        ("symmetricKey", Credential::Sas(token)) => {
            let keys = att.symmetric_key.unwrap_or_default();
            let ok = [keys.primary_key.as_deref(), keys.secondary_key.as_deref()]
                .into_iter()
                .flatten()
                .any(|k| token.signed_with(k));
            if !ok {
                return refused("the SAS token does not verify with the individual enrollment's keys");
            }
            provision(Source::Individual, entry, sas_auth(keys.primary_key, keys.secondary_key))
        }
        ("x509", Credential::X509(chain)) => {
            let Some(leaf) = chain.first() else { return refused("no client certificate") };
            let client = att.x509.and_then(|x| x.client_certificates).unwrap_or_default();
            let stored: Vec<Vec<u8>> = client
                .iter()
                .filter_map(|c| c.certificate.as_deref())
                .filter_map(|c| certs::decode_certificate(c).ok())
                .collect();
            if !stored.iter().any(|der| der == leaf) {
                return refused("the client certificate does not match the individual enrollment's certificates");
            }
            let mut thumbs = stored.iter().map(|d| certs::sha1_thumbprint(d));
            let auth = DeviceAuth {
                kind: Some("selfSigned".into()),
                symmetric_key: None,
                x509_thumbprint: Some(Thumbprints {
                    primary_thumbprint: thumbs.next(),
                    secondary_thumbprint: thumbs.next(),
                }),
            };
            provision(Source::Individual, entry, auth)
        }
        (kind, _) => Decision::Refused {
            reason: format!("the credential does not match the individual enrollment's attestation type '{kind}'"),
        },
    }
}

fn decide_symmetric_group(registration_id: &str, token: &SasToken, groups: &[(String, Entry)]) -> Decision {
    for (id, group) in groups {
        let Some(att) = group.attestation.as_ref().filter(|a| a.kind == "symmetricKey") else { continue };
        let keys = att.symmetric_key.clone().unwrap_or_default();
        let primary = keys.primary_key.as_deref().and_then(|k| sas::derive_device_key(k, registration_id));
        let secondary = keys.secondary_key.as_deref().and_then(|k| sas::derive_device_key(k, registration_id));
        let ok = [primary.as_deref(), secondary.as_deref()].into_iter().flatten().any(|k| token.signed_with(k));
        if ok {
            return group_outcome(id, group, sas_auth(primary, secondary));
        }
    }
    Decision::Refused { reason: "no individual enrollment or enrollment group matches the SAS token".into() }
}

fn decide_x509_group(chain: &[Vec<u8>], groups: &[(String, Entry)], now: i64) -> Decision {
    let signers: Vec<(&String, &Entry, Vec<Vec<u8>>)> = groups
        .iter()
        .filter_map(|(id, g)| {
            let att = g.attestation.as_ref().filter(|a| a.kind == "x509")?;
            let signing = att.x509.as_ref()?.signing_certificates.as_ref()?;
            let ders: Vec<Vec<u8>> = signing
                .iter()
                .filter_map(|c| c.certificate.as_deref())
                .filter_map(|c| certs::decode_certificate(c).ok())
                .collect();
            Some((id, g, ders))
        })
        .collect();
    let Some(mut child) = chain.first() else {
        return Decision::Refused { reason: "no client certificate".into() };
    };
    let mut level = 1;
    loop {
        let parent = chain.get(level);
        if let Some(p) = parent {
            if !certs::signed_by(child, p) {
                return Decision::Refused {
                    reason: format!("chain certificate {level} did not sign the certificate below it"),
                };
            }
            if let Err(why) = certs::check_issuer(p, now) {
                return Decision::Refused { reason: format!("chain certificate {level}: {why}") };
            }
        }
        let matched = signers.iter().find_map(|(id, g, ders)| {
            let signing: Vec<&Vec<u8>> = ders.iter().filter(|d| certs::signed_by(child, d)).collect();
            (!signing.is_empty()).then_some((id, g, signing))
        });
        if let Some((id, group, signing)) = matched {
            // A rollover keeps an expiring certificate next to its successor, which may share its key: one
            // usable certificate is enough.
            let checks: Vec<Result<(), String>> = signing.iter().map(|d| certs::check_issuer(d, now)).collect();
            if !checks.iter().any(Result::is_ok) {
                let why = checks.into_iter().find_map(Result::err).unwrap_or_default();
                return Decision::Refused { reason: format!("enrollment group '{id}' certificate: {why}") };
            }
            let auth =
                DeviceAuth { kind: Some("certificateAuthority".into()), symmetric_key: None, x509_thumbprint: None };
            return group_outcome(id, group, auth);
        }
        match parent {
            Some(p) if p != child => {
                child = p;
                level += 1;
            }
            _ => break,
        }
    }
    Decision::Refused { reason: "no individual enrollment or enrollment group matches the certificate chain".into() }
}

fn group_outcome(id: &str, group: &Entry, auth: DeviceAuth) -> Decision {
    let source = Source::Group(id.to_string());
    if group.enabled() {
        provision(source, group, auth)
    } else {
        Decision::Disabled { source, reason: format!("enrollment group '{id}' is disabled") }
    }
}

fn provision(source: Source, entry: &Entry, auth: DeviceAuth) -> Decision {
    Decision::Provision { source, entry: Box::new(entry.clone()), auth }
}

fn sas_auth(primary: Option<String>, secondary: Option<String>) -> DeviceAuth {
    DeviceAuth {
        kind: Some("sas".into()),
        symmetric_key: Some(SymmetricKeys { primary_key: primary, secondary_key: secondary }),
        x509_thumbprint: None,
    }
}

/// Picks the hub for a provisioned device: `static` takes the single listed hub, `hashed` (and every other
/// policy) a stable hash of the registration ID over the listed hubs or all hubs. With
/// `updateHubAssignment=false` a previous assignment that is still a known hub is kept.
pub fn allocate(entry: &Entry, registration_id: &str, all_hubs: &[String], previous: Option<&str>) -> Option<String> {
    if !entry.update_hub_assignment()
        && let Some(prev) = previous.filter(|p| all_hubs.iter().any(|h| h == p))
    {
        return Some(prev.to_string());
    }
    let mut listed: Vec<String> = entry.iot_hubs.clone().unwrap_or_default();
    if listed.is_empty()
        && let Some(h) = &entry.iot_hub_host_name
    {
        listed.push(h.clone());
    }
    let candidates: Vec<String> = if listed.is_empty() {
        all_hubs.to_vec()
    } else {
        listed.into_iter().filter(|h| all_hubs.contains(h)).collect()
    };
    if candidates.is_empty() {
        return None;
    }
    if entry.allocation_policy.as_deref() == Some("static") {
        return candidates.first().cloned();
    }
    let idx = (crate::engine::util::fnv1a(registration_id) % candidates.len() as u64) as usize;
    candidates.get(idx).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::{Attestation, X509Attestation, X509CertificateWithInfo, X509Certificates};
    use crate::engine::util;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    /// 2026-01-01, inside rcgen's default validity period (1975 to 4096).
    const NOW: i64 = 1_767_225_600;

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        der: Vec<u8>,
    }

    fn ca(name: &str, parent: Option<&Ca>) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let cert = match parent {
            None => params.self_signed(&key).expect("self-signed"),
            Some(p) => params.signed_by(&key, &Issuer::from_params(&p.params, &p.key)).expect("signed"),
        };
        Ca { der: cert.der().to_vec(), params, key }
    }

    fn leaf(cn: &str, parent: &Ca) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        params.signed_by(&key, &Issuer::from_params(&parent.params, &parent.key)).expect("signed").der().to_vec()
    }

    fn x509_entry(der: &[u8], signing: bool, enabled: bool) -> Entry {
        let certs = X509Certificates {
            primary: Some(X509CertificateWithInfo { certificate: Some(util::b64(der)), info: None }),
            secondary: None,
        };
        let x509 = if signing {
            X509Attestation { signing_certificates: Some(certs), ..Default::default() }
        } else {
            X509Attestation { client_certificates: Some(certs), ..Default::default() }
        };
        Entry {
            attestation: Some(Attestation { kind: "x509".into(), x509: Some(x509), ..Default::default() }),
            provisioning_status: Some(if enabled { "enabled" } else { "disabled" }.into()),
            ..Default::default()
        }
    }

    fn sym_entry(key: &str, enabled: bool) -> Entry {
        Entry {
            attestation: Some(Attestation {
                kind: "symmetricKey".into(),
                symmetric_key: Some(SymmetricKeys { primary_key: Some(key.into()), secondary_key: None }),
                ..Default::default()
            }),
            provisioning_status: Some(if enabled { "enabled" } else { "disabled" }.into()),
            ..Default::default()
        }
    }

    fn is_provision(d: &Decision, want: &Source) -> bool {
        matches!(d, Decision::Provision { source, .. } if source == want)
    }

    fn is_disabled(d: &Decision, want: &Source) -> bool {
        matches!(d, Decision::Disabled { source, .. } if source == want)
    }

    #[test]
    fn x509_decision_order() {
        let root = ca("root", None);
        let int = ca("intermediate", Some(&root));
        let dev = leaf("dev-1", &int);
        let chain = vec![dev.clone(), int.der.clone()];
        let cred = Credential::X509(&chain);
        let root_on = ("root-group".to_string(), x509_entry(&root.der, true, true));
        let int_off = ("int-group".to_string(), x509_entry(&int.der, true, false));
        let int_on = ("int-group".to_string(), x509_entry(&int.der, true, true));

        // The root group alone admits the device (root not sent in the chain).
        let d = decide("s", "dev-1", cred, None, std::slice::from_ref(&root_on), NOW);
        assert!(is_provision(&d, &Source::Group("root-group".into())), "{d:?}");
        // A disabled intermediate group blocks even though the root group is enabled.
        let d = decide("s", "dev-1", cred, None, &[root_on.clone(), int_off.clone()], NOW);
        assert!(is_disabled(&d, &Source::Group("int-group".into())), "{d:?}");
        // Deleting the disabled intermediate group re-admits through the root group.
        let d = decide("s", "dev-1", cred, None, std::slice::from_ref(&root_on), NOW);
        assert!(is_provision(&d, &Source::Group("root-group".into())));
        // The nearest enabled group decides.
        let d = decide("s", "dev-1", cred, None, &[root_on.clone(), int_on.clone()], NOW);
        assert!(is_provision(&d, &Source::Group("int-group".into())));
        // A disabled individual enrollment (leaf certificate) blocks an enabled group.
        let ind_off = x509_entry(&dev, false, false);
        let d = decide("s", "dev-1", cred, Some(&ind_off), &[root_on.clone(), int_on.clone()], NOW);
        assert!(is_disabled(&d, &Source::Individual));
        // So does a disabled symmetric-key individual enrollment with throw-away keys.
        let ind_sym_off = sym_entry(&util::generate_key(), false);
        let d = decide("s", "dev-1", cred, Some(&ind_sym_off), std::slice::from_ref(&root_on), NOW);
        assert!(is_disabled(&d, &Source::Individual));
        // An enabled individual enrollment with the leaf provisions as selfSigned.
        let ind_on = x509_entry(&dev, false, true);
        match decide("s", "dev-1", cred, Some(&ind_on), &[], NOW) {
            Decision::Provision { source: Source::Individual, auth, .. } => {
                assert_eq!(auth.kind.as_deref(), Some("selfSigned"));
                let tp = auth.x509_thumbprint.and_then(|t| t.primary_thumbprint);
                assert_eq!(tp, Some(certs::sha1_thumbprint(&dev)));
            }
            other => panic!("{other:?}"),
        }
        // A different certificate does not match the individual enrollment.
        let other_leaf = leaf("dev-1", &int);
        let d = decide("s", "dev-1", Credential::X509(&[other_leaf]), Some(&ind_on), &[], NOW);
        assert!(matches!(d, Decision::Refused { .. }));
        // No entries: refused.
        let d = decide("s", "dev-1", cred, None, &[], NOW);
        assert!(matches!(d, Decision::Refused { .. }));
    }

    #[test]
    fn forged_chain_is_refused() {
        let root = ca("root", None);
        let int = ca("intermediate", Some(&root));
        let stranger = ca("intermediate", None);
        // The device claims `int` as its issuer but was signed by a stranger with the same name.
        let dev = leaf("dev-2", &stranger);
        let chain = vec![dev, int.der.clone()];
        let groups = vec![("int-group".to_string(), x509_entry(&int.der, true, true))];
        let d = decide("s", "dev-2", Credential::X509(&chain), None, &groups, NOW);
        assert!(matches!(d, Decision::Refused { .. }), "{d:?}");
    }

    fn x509_group(primary: &[u8], secondary: &[u8]) -> Entry {
        let mut entry = x509_entry(primary, true, true);
        if let Some(x) = entry.attestation.as_mut().and_then(|a| a.x509.as_mut())
            && let Some(certs) = x.signing_certificates.as_mut()
        {
            certs.secondary = Some(X509CertificateWithInfo { certificate: Some(util::b64(secondary)), info: None });
        }
        entry
    }

    #[test]
    fn expired_or_non_ca_signers_refuse_and_a_valid_renewal_of_the_same_key_admits() {
        let root = ca("root", None);
        let mut old = root.params.clone();
        old.not_before = rcgen::date_time_ymd(2020, 1, 1);
        old.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let expired_root = old.self_signed(&root.key).expect("re-issued").der().to_vec();
        let dev = leaf("dev-5", &root);
        let cred = Credential::X509(std::slice::from_ref(&dev));
        let refused = |d: &Decision| matches!(d, Decision::Refused { .. });

        let only_expired = ("g".to_string(), x509_entry(&expired_root, true, true));
        assert!(refused(&decide("s", "dev-5", cred, None, std::slice::from_ref(&only_expired), NOW)));
        // During a rollover the group holds the expired certificate and its renewal (same key): admitted.
        let rollover = ("g".to_string(), x509_group(&expired_root, &root.der));
        let d = decide("s", "dev-5", cred, None, std::slice::from_ref(&rollover), NOW);
        assert!(is_provision(&d, &Source::Group("g".into())), "{d:?}");
        // The same chain is refused once it is presented after its certificates expired.
        let d = decide("s", "dev-5", cred, None, std::slice::from_ref(&rollover), 4_200_000_000_000);
        assert!(refused(&d), "{d:?}");

        // An end-entity certificate signing another: refused although every signature verifies.
        let mut not_ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        not_ca.distinguished_name.push(DnType::CommonName, "gateway");
        not_ca.is_ca = IsCa::ExplicitNoCa;
        let not_ca_key = KeyPair::generate().expect("key");
        let not_ca_der = not_ca
            .signed_by(&not_ca_key, &Issuer::from_params(&root.params, &root.key))
            .expect("signed")
            .der()
            .to_vec();
        let forger = Ca { params: not_ca, key: not_ca_key, der: not_ca_der };
        let chain = vec![leaf("dev-6", &forger), forger.der.clone()];
        let group = ("root".to_string(), x509_entry(&root.der, true, true));
        let d = decide("s", "dev-6", Credential::X509(&chain), None, std::slice::from_ref(&group), NOW);
        assert!(refused(&d), "{d:?}");
    }

    #[test]
    fn symmetric_key_groups_and_failures() {
        let gkey = util::generate_key();
        let group = ("g".to_string(), sym_entry(&gkey, true));
        let dkey = sas::derive_device_key(&gkey, "dev-3").expect("derive");
        let now = 100;
        let token = SasToken::parse(&sas::make_token("sc/registrations/dev-3", &dkey, Some("registration"), now + 60))
            .expect("token");
        let d = decide("sc", "dev-3", Credential::Sas(&token), None, std::slice::from_ref(&group), now);
        match &d {
            Decision::Provision { source: Source::Group(g), auth, .. } => {
                assert_eq!(g, "g");
                assert_eq!(auth.symmetric_key.as_ref().and_then(|k| k.primary_key.clone()), Some(dkey.clone()));
            }
            other => panic!("{other:?}"),
        }
        // Disabled individual with throw-away keys blocks the group device.
        let ind = sym_entry(&util::generate_key(), false);
        assert!(is_disabled(
            &decide("sc", "dev-3", Credential::Sas(&token), Some(&ind), std::slice::from_ref(&group), now),
            &Source::Individual
        ));
        // Enabled individual with other keys: refused (individual decides).
        let ind = sym_entry(&util::generate_key(), true);
        assert!(matches!(
            decide("sc", "dev-3", Credential::Sas(&token), Some(&ind), std::slice::from_ref(&group), now),
            Decision::Refused { .. }
        ));
        // Expired, other resource, other policy, wrong key.
        assert!(matches!(
            decide("sc", "dev-3", Credential::Sas(&token), None, std::slice::from_ref(&group), now + 61),
            Decision::Refused { .. }
        ));
        assert!(matches!(
            decide("sc", "dev-4", Credential::Sas(&token), None, std::slice::from_ref(&group), now),
            Decision::Refused { .. }
        ));
        let wrong_policy =
            SasToken::parse(&sas::make_token("sc/registrations/dev-3", &dkey, Some("owner"), now + 60)).expect("token");
        assert!(matches!(
            decide("sc", "dev-3", Credential::Sas(&wrong_policy), None, std::slice::from_ref(&group), now),
            Decision::Refused { .. }
        ));
        let wrong_key =
            SasToken::parse(&sas::make_token("sc/registrations/dev-3", &gkey, Some("registration"), now + 60))
                .expect("token");
        assert!(matches!(
            decide("sc", "dev-3", Credential::Sas(&wrong_key), None, std::slice::from_ref(&group), now),
            Decision::Refused { .. }
        ));
        // Disabled group refuses.
        let off = ("g".to_string(), sym_entry(&gkey, false));
        assert!(is_disabled(
            &decide("sc", "dev-3", Credential::Sas(&token), None, &[off], now),
            &Source::Group("g".into())
        ));
    }

    #[test]
    fn allocation() {
        let hubs = vec!["127.0.0.2".to_string(), "127.0.0.3".to_string()];
        let e = Entry::default();
        let a = allocate(&e, "dev", &hubs, None);
        assert_eq!(a, allocate(&e, "dev", &hubs, None));
        assert!(a.is_some());
        let st = Entry {
            allocation_policy: Some("static".into()),
            iot_hubs: Some(vec!["127.0.0.3".into()]),
            ..Default::default()
        };
        assert_eq!(allocate(&st, "dev", &hubs, None).as_deref(), Some("127.0.0.3"));
        let keep = Entry {
            reprovision_policy: Some(crate::engine::model::ReprovisionPolicy {
                update_hub_assignment: false,
                migrate_device_data: true,
            }),
            ..st.clone()
        };
        assert_eq!(allocate(&keep, "dev", &hubs, Some("127.0.0.2")).as_deref(), Some("127.0.0.2"));
        assert_eq!(allocate(&st, "dev", &hubs, Some("127.0.0.2")).as_deref(), Some("127.0.0.3"));
    }
}
