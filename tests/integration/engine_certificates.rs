//! Certificate fidelity in the engine: a certificate sits in one enrollment entry only, and registration
//! checks validity periods, CA flags and signatures along the device's chain (so expiry revokes).

use dps_operator::azure::AzureError;
use dps_operator::azure::wire::{
    AttestationMechanism, BulkOperationMode, EnrollmentGroup, IndividualEnrollment, ProvisioningStatus,
};

use crate::support::certs::{TestCa, TestLeaf, Validity};
use crate::support::device::{Registration, register, with_certificate};
use crate::support::engine::Engine;

fn group(id: &str, primary: String, secondary: Option<String>) -> EnrollmentGroup {
    EnrollmentGroup {
        enrollment_group_id: id.into(),
        attestation: AttestationMechanism::x509_signing_certificate(primary, secondary),
        provisioning_status: Some(ProvisioningStatus::Enabled),
        ..EnrollmentGroup::default()
    }
}

fn individual(id: &str, certificate: String) -> IndividualEnrollment {
    IndividualEnrollment {
        registration_id: id.into(),
        attestation: AttestationMechanism::x509_client_certificate(certificate, None),
        ..IndividualEnrollment::default()
    }
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, AzureError>, what: &str) {
    match result {
        Err(AzureError::Conflict(detail)) => {
            assert!(detail.message.as_deref().is_some_and(|m| m.contains("certificate")), "{what}: {detail}")
        }
        other => panic!("{what}: expected 409, got {other:?}"),
    }
}

async fn assert_unauthorized_at_register(engine: &Engine, id: &str, leaf: &TestLeaf, what: &str) {
    let registration: Registration = register(engine, id, with_certificate(leaf)).await;
    assert!(registration.refused_at_register(), "{what}: expected 401 401002 at register, got {registration:?}");
}

#[tokio::test]
async fn a_certificate_already_in_an_individual_enrollment_or_a_group_is_refused_in_the_other_kind() {
    let engine = Engine::start();
    let dps = engine.dps();
    let root = TestCa::root("Shared Root");
    dps.create_enrollment_group(&group("root-group", root.cert_pem(), None)).await.expect("group");
    assert_conflict(dps.create_enrollment(&individual("shared-1", root.cert_pem())).await, "individual after group");

    let leaf = root.leaf("shared-2");
    dps.create_enrollment(&individual("shared-2", leaf.cert_pem.clone())).await.expect("individual");
    assert_conflict(
        dps.create_enrollment_group(&group("leaf-group", leaf.cert_pem.clone(), None)).await,
        "group after individual",
    );
    // The certificate may sit in a second individual enrollment no more than in a group.
    assert_conflict(dps.create_enrollment(&individual("shared-3", leaf.cert_pem.clone())).await, "second individual");
}

#[tokio::test]
async fn a_second_group_with_the_same_signing_certificate_is_refused_but_the_first_may_keep_it() {
    let engine = Engine::start();
    let dps = engine.dps();
    let root = TestCa::root("Root");
    let intermediate = root.intermediate("Line 7");
    let created = dps.create_enrollment_group(&group("line-7", intermediate.cert_pem(), None)).await.expect("group");
    assert_conflict(
        dps.create_enrollment_group(&group("line-7-again", intermediate.cert_pem(), None)).await,
        "primary",
    );
    assert_conflict(
        dps.create_enrollment_group(&group("line-7-backup", root.cert_pem(), Some(intermediate.cert_pem()))).await,
        "secondary",
    );
    // Updating the holder with its own certificate (and a new secondary) is fine.
    let update = group("line-7", intermediate.cert_pem(), Some(root.cert_pem()));
    dps.update_enrollment_group(&update, created.etag.as_deref()).await.expect("update keeps its own certificate");
    // Once the holder is gone, another group may take the certificate.
    dps.delete_enrollment_group("line-7", None).await.expect("deleted");
    dps.create_enrollment_group(&group("line-7-again", intermediate.cert_pem(), None)).await.expect("taken over");
}

#[tokio::test]
async fn bulk_create_refuses_each_item_whose_certificate_sits_in_another_entry() {
    let engine = Engine::start();
    let dps = engine.dps();
    let root = TestCa::root("Bulk Root");
    let taken = root.intermediate("Taken");
    let free = root.intermediate("Free");
    dps.create_enrollment_group(&group("holder", taken.cert_pem(), None)).await.expect("holder");
    let items = [
        group("bulk-taken", taken.cert_pem(), None),
        group("bulk-free", free.cert_pem(), None),
        group("bulk-free-twice", free.cert_pem(), None),
    ];
    let result = dps.bulk_enrollment_groups(BulkOperationMode::Create, &items).await.expect("bulk answered");
    assert!(!result.is_successful, "{result:?}");
    let mut refused: Vec<(String, i64)> = result
        .errors
        .iter()
        .map(|e| (e.enrollment_group_id.clone().unwrap_or_default(), e.error_code / 1000))
        .collect();
    refused.sort();
    assert_eq!(refused, [("bulk-free-twice".to_string(), 409), ("bulk-taken".to_string(), 409)], "{result:?}");
    dps.get_enrollment_group("bulk-free").await.expect("the item with a free certificate was created");

    let leaf = free.leaf("bulk-device");
    dps.create_enrollment(&individual("bulk-device", leaf.cert_pem.clone())).await.expect("individual");
    let result = dps
        .bulk_enrollments(BulkOperationMode::Update, &[individual("bulk-other", leaf.cert_pem.clone())])
        .await
        .expect("bulk answered");
    assert_eq!(result.errors.first().map(|e| e.error_code / 1000), Some(409), "{result:?}");
}

/// An engine with an enabled group on a valid root, and the root.
async fn engine_with_root_group(name: &str) -> (Engine, TestCa) {
    let engine = Engine::start();
    let root = TestCa::root(name);
    engine.dps().create_enrollment_group(&group("fleet", root.cert_pem(), None)).await.expect("group");
    (engine, root)
}

#[tokio::test]
async fn an_expired_leaf_is_refused_with_401_at_register() {
    let (engine, root) = engine_with_root_group("Expiry Root").await;
    let intermediate = root.intermediate("Intermediate");
    register(&engine, "valid-1", with_certificate(&intermediate.leaf("valid-1"))).await.hub();
    let expired = intermediate.leaf_with("expired-1", Validity::Expired);
    assert_unauthorized_at_register(&engine, "expired-1", &expired, "expired leaf").await;
}

#[tokio::test]
async fn a_leaf_that_is_not_valid_yet_is_refused_with_401_at_register() {
    let (engine, root) = engine_with_root_group("Early Root").await;
    let early = root.intermediate("Intermediate").leaf_with("early-1", Validity::NotYetValid);
    assert_unauthorized_at_register(&engine, "early-1", &early, "not-yet-valid leaf").await;
}

#[tokio::test]
async fn an_expired_intermediate_in_the_chain_is_refused_with_401_at_register() {
    let (engine, root) = engine_with_root_group("Stale Root").await;
    let under_stale = root.intermediate_with("Stale Intermediate", Validity::Expired).leaf("orphan-1");
    assert_unauthorized_at_register(&engine, "orphan-1", &under_stale, "expired intermediate").await;
}

#[tokio::test]
async fn a_device_certificate_used_as_an_issuer_is_refused_with_401_at_register() {
    let engine = Engine::start();
    let root = TestCa::root("Issuer Root");
    engine.dps().create_enrollment_group(&group("issuers", root.cert_pem(), None)).await.expect("group");
    // A stolen device key signing a made-up device: the chain verifies by signature, but the signer is no CA.
    let stolen = root.end_entity_as_issuer("gateway-1");
    let forged = stolen.leaf("forged-1");
    assert_unauthorized_at_register(&engine, "forged-1", &forged, "leaf used as an issuer").await;
}

#[tokio::test]
async fn a_chain_that_reaches_the_group_certificate_only_by_name_is_refused_with_401_at_register() {
    let engine = Engine::start();
    let root = TestCa::root("Name Root");
    let real = root.intermediate("Plant Intermediate");
    let impostor = TestCa::root("Plant Intermediate");
    engine.dps().create_enrollment_group(&group("plant", real.cert_pem(), None)).await.expect("group");
    register(&engine, "genuine-1", with_certificate(&real.leaf("genuine-1"))).await.hub();
    let fake = impostor.leaf("fake-1");
    assert_unauthorized_at_register(&engine, "fake-1", &fake, "issuer name without signature").await;
}

#[tokio::test]
async fn an_expired_group_certificate_refuses_its_devices_with_401_at_register() {
    let engine = Engine::start();
    let old_root = TestCa::root_with("Retired Root", Validity::Expired);
    let retired = group("retired", old_root.cert_pem(), None);
    engine
        .dps()
        .create_enrollment_group(&retired)
        .await
        .expect("an entry may hold an expired certificate (rollovers keep one)");
    // The device does not send the root, so only the group's own copy can be checked.
    let device = old_root.leaf("legacy-1");
    assert_unauthorized_at_register(&engine, "legacy-1", &device, "expired group certificate").await;
}

#[tokio::test]
async fn an_expired_individual_enrollment_certificate_refuses_its_device_with_401_at_register() {
    let engine = Engine::start();
    let expired = TestCa::root("Individual Root").leaf_with("solo-1", Validity::Expired);
    engine.dps().create_enrollment(&individual("solo-1", expired.cert_pem.clone())).await.expect("individual stored");
    assert_unauthorized_at_register(&engine, "solo-1", &expired, "expired individual certificate").await;
}
