//! Bad input reaches a condition and an event that say what to fix, never a crash and never a secret:
//! expired certificates, changed immutable IDs, unknown services, two claims on one registration ID,
//! rejected credentials.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use dps_operator::api::{IndividualEnrollment, ProvisioningService};

use crate::support::certs::{TestCa, Validity};
use crate::support::device::{register, with_certificate};
use crate::support::operator::{Bed, SERVICE};

fn enrollment(name: &str, spec: serde_json::Value) -> IndividualEnrollment {
    serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "IndividualEnrollment",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("a valid IndividualEnrollment")
}

fn x509_from_config_map(service: &str, map: &str) -> serde_json::Value {
    json!({
        "provisioningServiceRef": { "name": service },
        "attestation": { "x509": { "clientCertificates": { "primary": { "configMapRef": { "name": map, "key": "tls.crt" } } } } },
    })
}

async fn config_map(bed: &Bed, name: &str, pem: &str) {
    let map: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name }, "data": { "tls.crt": pem }
    }))
    .expect("ConfigMap");
    bed.api::<ConfigMap>().create(&PostParams::default(), &map).await.expect("ConfigMap created");
}

/// The Ready condition's reason and message once the resource is Stalled.
pub(crate) async fn stalled_reason<K>(bed: &Bed, name: &str) -> (String, String)
where
    K: crate::support::Namespaced,
{
    let obj = bed.wait_condition::<K>(name, "Stalled", "True").await;
    let value = serde_json::to_value(&obj).expect("JSON");
    let conditions = value.pointer("/status/conditions").and_then(|c| c.as_array()).cloned().unwrap_or_default();
    let ready = conditions.iter().find(|c| c["type"] == "Ready").expect("Ready condition");
    assert_eq!(ready["status"], "False", "a stalled resource is not Ready");
    (ready["reason"].as_str().unwrap_or_default().into(), ready["message"].as_str().unwrap_or_default().into())
}

async fn warning_reasons(bed: &Bed, name: &str) -> Vec<String> {
    let events = bed.api::<Event>().list(&ListParams::default()).await.expect("events");
    events
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name) && e.type_.as_deref() == Some("Warning")
        })
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn x509_enrollment_from_a_config_map_admits_its_device_and_an_expired_certificate_stalls() {
    let bed = Bed::start("ienr-x509").await;
    let ca = TestCa::root("ienr-x509-root");
    let good = ca.leaf("camera-1");
    config_map(&bed, "camera-1-cert", &good.cert_pem).await;
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &enrollment("camera-1", x509_from_config_map(SERVICE, "camera-1-cert")))
        .await
        .expect("created");
    bed.wait_ready::<IndividualEnrollment>("camera-1").await;
    let registration = register(&bed.engine, "camera-1", with_certificate(&good)).await;
    assert!(!registration.hub().is_empty(), "the device was assigned a hub");

    let expired = ca.leaf_with("camera-2", Validity::Expired);
    config_map(&bed, "camera-2-cert", &expired.cert_pem).await;
    api.create(&PostParams::default(), &enrollment("camera-2", x509_from_config_map(SERVICE, "camera-2-cert")))
        .await
        .expect("created");
    let (reason, message) = stalled_reason::<IndividualEnrollment>(&bed, "camera-2").await;
    assert_eq!(reason, "CertificateExpired", "{message}");
    assert!(message.contains("validity"), "{message}");
    assert!(warning_reasons(&bed, "camera-2").await.contains(&"CertificateExpired".to_string()));
    assert!(bed.engine.dps().get_enrollment("camera-2").await.is_err_and(|e| e.is_not_found()), "nothing was sent");
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_certificate_whose_common_name_is_not_the_registration_id_stalls() {
    let bed = Bed::start("ienr-cn").await;
    let leaf = TestCa::root("ienr-cn-root").leaf("someone-else");
    config_map(&bed, "door-cert", &leaf.cert_pem).await;
    bed.api::<IndividualEnrollment>()
        .create(&PostParams::default(), &enrollment("door-1", x509_from_config_map(SERVICE, "door-cert")))
        .await
        .expect("created");
    let (reason, message) = stalled_reason::<IndividualEnrollment>(&bed, "door-1").await;
    assert_eq!(reason, "CertificateCommonNameMismatch", "{message}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn changing_the_registration_id_stalls_the_resource_and_leaves_the_entry_alone() {
    let bed = Bed::start("ienr-immutable").await;
    let spec = json!({
        "provisioningServiceRef": { "name": SERVICE },
        "registrationId": "valve-1",
        "attestation": { "symmetricKey": { "secretName": "valve-keys", "generate": true } },
    });
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &enrollment("valve", spec)).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>("valve").await;
    // Kubernetes 1.20 ignores the CRD's CEL rule, so the change reaches the controller.
    api.patch("valve", &PatchParams::default(), &Patch::Merge(json!({"spec": {"registrationId": "valve-2"}})))
        .await
        .expect("the apiserver accepts the change");
    let (reason, message) = stalled_reason::<IndividualEnrollment>(&bed, "valve").await;
    assert_eq!(reason, "ImmutableFieldChanged", "{message}");
    assert!(message.contains("valve-1") && message.contains("valve-2"), "{message}");
    let dps = bed.engine.dps();
    assert!(dps.get_enrollment("valve-1").await.is_ok(), "the bound entry stays");
    assert!(dps.get_enrollment("valve-2").await.is_err_and(|e| e.is_not_found()), "no second entry");
    bed.ns.delete().await;
}

#[tokio::test]
async fn an_enrollment_naming_an_unknown_provisioning_service_stalls() {
    let bed = Bed::start("ienr-unknown").await;
    let spec = json!({
        "provisioningServiceRef": { "name": "no-such-dps" },
        "attestation": { "symmetricKey": { "secretName": "lost-keys", "generate": true } },
    });
    bed.api::<IndividualEnrollment>()
        .create(&PostParams::default(), &enrollment("lost-1", spec))
        .await
        .expect("created");
    let (reason, message) = stalled_reason::<IndividualEnrollment>(&bed, "lost-1").await;
    assert_eq!(reason, "ProvisioningServiceNotFound");
    assert!(message.contains("no-such-dps"), "{message}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_second_enrollment_for_the_same_registration_id_is_refused() {
    let bed = Bed::start("ienr-twice").await;
    let spec = |secret: &str| {
        json!({
            "provisioningServiceRef": { "name": SERVICE },
            "registrationId": "shared-1",
            "attestation": { "symmetricKey": { "secretName": secret, "generate": true } },
        })
    };
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &enrollment("first", spec("first-keys"))).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>("first").await;
    api.create(&PostParams::default(), &enrollment("second", spec("second-keys"))).await.expect("created");
    let (reason, message) = stalled_reason::<IndividualEnrollment>(&bed, "second").await;
    assert_eq!(reason, "RegistrationIdConflict");
    assert!(message.contains("first"), "{message}");
    bed.wait_ready::<IndividualEnrollment>("first").await;
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_provisioning_service_with_a_wrong_key_stalls_with_credentials_rejected_and_no_secret_leaks() {
    let bed = Bed::start("dps-badkey").await;
    let mut wrong = bed.engine.info.provisioning_service.connection_string.clone();
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktISE=";
    wrong.credential = dps_operator::azure::Credential::Key(dps_operator::azure::Secret::new(wrong_key));
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "bad-credentials" },
        "stringData": { "dps": wrong.to_secret_string().expose() }
    }))
    .expect("Secret");
    bed.api::<Secret>().create(&PostParams::default(), &secret).await.expect("Secret");
    let mut service = bed.api::<ProvisioningService>().get(SERVICE).await.expect("service");
    service.metadata = kube::api::ObjectMeta { name: Some("bad-dps".into()), ..Default::default() };
    service.spec.connection_string_secret_ref.name = "bad-credentials".into();
    service.status = None;
    bed.api::<ProvisioningService>().create(&PostParams::default(), &service).await.expect("created");
    let (reason, message) = stalled_reason::<ProvisioningService>(&bed, "bad-dps").await;
    assert_eq!(reason, "CredentialsRejected", "{message}");

    // Neither key appears anywhere the operator writes.
    let good_key = match &bed.engine.info.provisioning_service.connection_string.credential {
        dps_operator::azure::Credential::Key(k) | dps_operator::azure::Credential::Signature(k) => {
            k.expose().to_string()
        }
    };
    let status =
        serde_json::to_string(&bed.api::<ProvisioningService>().get("bad-dps").await.expect("read")).expect("JSON");
    let events = serde_json::to_string(&bed.api::<Event>().list(&ListParams::default()).await.expect("events").items)
        .expect("JSON");
    let log = bed.operator.log();
    for (what, text) in [("status", &status), ("events", &events), ("operator log", &log)] {
        assert!(!text.contains(wrong_key) && !text.contains(&good_key), "a key appears in the {what}");
        assert!(!text.contains("SharedAccessSignature sr="), "a SAS token appears in the {what}");
    }
    bed.ns.delete().await;
}

#[tokio::test]
async fn tpm_and_inline_or_secret_certificates_reach_dps_as_written() {
    let bed = Bed::start("ienr-kinds").await;
    let api = bed.api::<IndividualEnrollment>();
    let endorsement_key = format!("AToAAQALAAMAsgAgg3GXZ0SEs{}", "A".repeat(63));
    let tpm = json!({ "provisioningServiceRef": { "name": SERVICE }, "attestation": { "tpm": { "endorsementKey": endorsement_key } } });
    api.create(&PostParams::default(), &enrollment("tpm-1", tpm)).await.expect("created");

    let ca = TestCa::root("ienr-kinds-root");
    let (primary, secondary) = (ca.leaf("lamp-1"), ca.leaf("lamp-1"));
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "lamp-1-tls" },
        "stringData": { "tls.crt": secondary.cert_pem }
    }))
    .expect("Secret");
    bed.api::<Secret>().create(&PostParams::default(), &secret).await.expect("Secret");
    let x509 = json!({
        "provisioningServiceRef": { "name": SERVICE },
        "attestation": { "x509": { "clientCertificates": {
            "primary": { "pem": primary.cert_pem },
            "secondary": { "secretRef": { "name": "lamp-1-tls", "key": "tls.crt" } },
        } } },
    });
    api.create(&PostParams::default(), &enrollment("lamp-1", x509)).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>("tpm-1").await;
    bed.wait_ready::<IndividualEnrollment>("lamp-1").await;

    let dps = bed.engine.dps();
    let held = dps.get_enrollment("tpm-1").await.expect("TPM entry");
    assert_eq!(held.attestation.tpm.map(|t| t.endorsement_key), Some(endorsement_key));
    for leaf in [&primary, &secondary] {
        let registration = register(&bed.engine, "lamp-1", with_certificate(leaf)).await;
        assert!(!registration.hub().is_empty(), "both certificates admit the device");
    }
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_device_in_a_hub_the_service_does_not_list_stalls_deletion_until_the_hub_is_added() {
    let bed = Bed::start("ienr-hub").await;
    let second = bed.engine.info.hubs[1].host_name.clone();
    let spec = json!({
        "provisioningServiceRef": { "name": SERVICE },
        "attestation": { "symmetricKey": { "secretName": "far-keys", "generate": true } },
        "allocationPolicy": "Static",
        "iotHubs": [second],
    });
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &enrollment("far-1", spec)).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>("far-1").await;
    let secret = bed.api::<Secret>().get("far-keys").await.expect("keys");
    let key = String::from_utf8(secret.data.expect("data")["primaryKey"].0.clone()).expect("UTF-8");
    let registration = register(&bed.engine, "far-1", crate::support::device::with_key(&key)).await;
    assert_eq!(registration.hub(), second);

    // Unlink the second hub from the ProvisioningService, then delete the enrollment.
    let services = bed.api::<ProvisioningService>();
    let all_hubs = services.get(SERVICE).await.expect("service").spec.hubs;
    let first_only: Vec<_> = all_hubs.iter().filter(|h| h.host_name != second).cloned().collect();
    let set_hubs = |hubs: &Vec<dps_operator::api::provisioning_service::LinkedHub>| {
        Patch::Merge(json!({ "spec": { "hubs": serde_json::to_value(hubs).expect("JSON") } }))
    };
    services.patch(SERVICE, &PatchParams::default(), &set_hubs(&first_only)).await.expect("hub removed");
    bed.wait_ready::<ProvisioningService>(SERVICE).await;
    api.delete("far-1", &kube::api::DeleteParams::default()).await.expect("delete accepted");
    let (reason, message) = stalled_reason::<IndividualEnrollment>(&bed, "far-1").await;
    assert_eq!(reason, "HubNotLinked", "{message}");
    assert!(message.contains(&second), "{message}");
    assert!(
        register(&bed.engine, "far-1", crate::support::device::with_key(&key)).await.disabled(),
        "already revoked at DPS"
    );

    services.patch(SERVICE, &PatchParams::default(), &set_hubs(&all_hubs)).await.expect("hub added back");
    bed.wait_gone::<IndividualEnrollment>("far-1").await;
    let device = bed.engine.hub(1).get_device("far-1").await.expect("device kept");
    assert_eq!(device.status, Some(dps_operator::azure::wire::DeviceStatus::Disabled));
    bed.ns.delete().await;
}

#[tokio::test]
async fn an_entry_that_already_exists_is_refused_with_conflict_until_the_resource_adopts_it() {
    let bed = Bed::start("ienr-adopt").await;
    let dps = bed.engine.dps();
    let existing = dps_operator::azure::wire::IndividualEnrollment {
        registration_id: "legacy-1".into(),
        attestation: dps_operator::azure::wire::AttestationMechanism::symmetric_key(None, None),
        ..Default::default()
    };
    let before = dps.create_enrollment(&existing).await.expect("entry made outside Kubernetes");
    let spec = json!({
        "provisioningServiceRef": { "name": SERVICE },
        "provisioningStatus": "Disabled",
        "attestation": { "symmetricKey": { "secretName": "legacy-keys", "generate": true } },
    });
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &enrollment("legacy-1", spec)).await.expect("created");
    let (reason, message) = stalled_reason::<IndividualEnrollment>(&bed, "legacy-1").await;
    assert_eq!(reason, "Conflict", "{message}");
    assert!(message.contains("dps.iot-operator.dev/adopt"), "{message}");
    let untouched = dps.get_enrollment("legacy-1").await.expect("entry");
    assert_eq!(untouched.etag, before.etag, "nothing was written to an entry we do not own");

    let adopt = json!({"metadata": {"annotations": {"dps.iot-operator.dev/adopt": "true"}}});
    api.patch("legacy-1", &PatchParams::default(), &Patch::Merge(adopt)).await.expect("annotated");
    let ready = bed.wait_ready::<IndividualEnrollment>("legacy-1").await;
    let status = ready.status.expect("status");
    assert_eq!(status.ownership, Some(dps_operator::api::individual_enrollment::EntryOwnership::Adopted));
    let adopted = dps.get_enrollment("legacy-1").await.expect("entry");
    assert_eq!(adopted.provisioning_status, Some(dps_operator::azure::wire::ProvisioningStatus::Disabled));
    let keys = bed.api::<Secret>().get("legacy-keys").await.expect("the entry's keys were written to the Secret");
    assert!(keys.data.expect("data").contains_key("primaryKey"));
    bed.ns.delete().await;
}

#[tokio::test]
async fn an_x509_registration_id_longer_than_64_characters_stalls_as_the_crd_rule_says() {
    let bed = Bed::start("ienr-long").await;
    let long_id = format!("cam-{}", "x".repeat(61));
    assert_eq!(long_id.len(), 65);
    let leaf = TestCa::root("ienr-long-root").leaf("cam-short");
    config_map(&bed, "long-cert", &leaf.cert_pem).await;
    let mut spec = x509_from_config_map(SERVICE, "long-cert");
    spec["registrationId"] = json!(long_id);
    bed.api::<IndividualEnrollment>()
        .create(&PostParams::default(), &enrollment("long-1", spec))
        .await
        .expect("created");
    let (reason, message) = stalled_reason::<IndividualEnrollment>(&bed, "long-1").await;
    assert_eq!(reason, "InvalidRegistrationId", "{message}");
    assert!(message.contains("64"), "{message}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn an_x509_enrollment_with_a_registration_id_longer_than_64_characters_can_still_be_disabled() {
    // As on Kubernetes 1.20, where the CRD's CEL rule is dropped: the entry exists with a 70-character ID.
    let bed = Bed::start("ienr-long-off").await;
    let long_id = "z".repeat(70);
    let leaf = TestCa::root("ienr-long-off-root").leaf(&long_id);
    config_map(&bed, "long-cert", &leaf.cert_pem).await;
    let mut spec = x509_from_config_map(SERVICE, "long-cert");
    spec["registrationId"] = json!(long_id);
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &enrollment("long-1", spec)).await.expect("created");
    let (reason, message) = stalled_reason::<IndividualEnrollment>(&bed, "long-1").await;
    assert_eq!(reason, "InvalidRegistrationId", "{message}");

    // Disabling is a revocation step: no device registers through a disabled entry, so the CN limit is moot.
    let disable = json!({ "spec": { "provisioningStatus": "Disabled" } });
    api.patch("long-1", &PatchParams::default(), &Patch::Merge(&disable)).await.expect("disabled");
    bed.wait_ready::<IndividualEnrollment>("long-1").await;
    let entry = bed.engine.dps().get_enrollment(&long_id).await.expect("the disabled entry is in DPS");
    assert_eq!(entry.provisioning_status, Some(dps_operator::azure::wire::ProvisioningStatus::Disabled));
    bed.ns.delete().await;
}
