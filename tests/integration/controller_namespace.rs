//! `kubectl delete namespace` with enrollments, a group, a deprovision, their Secrets and the
//! ProvisioningService in it completes, and in the right order: every resource revokes its devices before
//! the service and its Secrets go.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use dps_operator::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};
use dps_operator::azure::wire::DeviceStatus;
use dps_operator::controller::references::SECRET_FINALIZER;

use crate::support::device::{Registration, register, with_group_key, with_key};
use crate::support::eventually;
use crate::support::operator::{Bed, SERVICE};

#[tokio::test]
async fn deleting_the_namespace_revokes_every_device_before_the_service_and_its_secrets_go() {
    let bed = Bed::start("ns-delete").await;
    // The service's Secrets are kept by the operator while the service needs them.
    let credentials = bed.api::<Secret>().get(&format!("{SERVICE}-credentials")).await.expect("credentials");
    assert!(credentials.metadata.finalizers.unwrap_or_default().iter().any(|f| f == SECRET_FINALIZER));

    let mut devices = Vec::new();
    for name in ["ns-dev-1", "ns-dev-2"] {
        let enrollment: IndividualEnrollment = serde_json::from_value(json!({
            "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "IndividualEnrollment",
            "metadata": { "name": name },
            "spec": {
                "provisioningServiceRef": { "name": SERVICE },
                "attestation": { "symmetricKey": { "secretName": format!("{name}-keys"), "generate": true } },
            }
        }))
        .expect("IndividualEnrollment");
        bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment).await.expect("created");
        bed.wait_ready::<IndividualEnrollment>(name).await;
        let secret = bed.api::<Secret>().get(&format!("{name}-keys")).await.expect("keys");
        let key = String::from_utf8(secret.data.expect("data")["primaryKey"].0.clone()).expect("UTF-8");
        let Registration::Assigned { hub, device_id } = register(&bed.engine, name, with_key(&key)).await else {
            panic!("{name} was refused");
        };
        devices.push((name, key, hub, device_id));
    }

    // A group with two devices, one of which a DeviceDeprovision blocks.
    let group: EnrollmentGroup = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "EnrollmentGroup",
        "metadata": { "name": "ns-fleet" },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "symmetricKey": { "secretName": "ns-fleet-keys", "generate": true } },
        }
    }))
    .expect("EnrollmentGroup");
    bed.api::<EnrollmentGroup>().create(&PostParams::default(), &group).await.expect("created");
    bed.wait_ready::<EnrollmentGroup>("ns-fleet").await;
    let secret = bed.api::<Secret>().get("ns-fleet-keys").await.expect("group keys");
    let group_key = String::from_utf8(secret.data.expect("data")["primaryKey"].0.clone()).expect("UTF-8");
    let mut group_devices = Vec::new();
    for id in ["ns-fleet-1", "ns-fleet-2"] {
        let Registration::Assigned { hub, device_id } = register(&bed.engine, id, with_group_key(&group_key)).await
        else {
            panic!("{id} was refused");
        };
        group_devices.push((id, hub, device_id));
    }
    let deprovision: DeviceDeprovision = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "DeviceDeprovision",
        "metadata": { "name": "ns-fleet-1-stolen" },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "registrationId": "ns-fleet-1",
            "enrollmentGroupRef": { "name": "ns-fleet" },
            "reason": "stolen",
        }
    }))
    .expect("DeviceDeprovision");
    bed.api::<DeviceDeprovision>().create(&PostParams::default(), &deprovision).await.expect("created");
    bed.wait_ready::<DeviceDeprovision>("ns-fleet-1-stolen").await;

    // While enrollments use it, the service cannot go.
    bed.api::<ProvisioningService>().delete(SERVICE, &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_condition::<ProvisioningService>(SERVICE, "Reconciling", "True").await;
    assert!(bed.api::<ProvisioningService>().get_opt(SERVICE).await.expect("read").is_some());

    let namespaces = Api::<Namespace>::all(bed.client.clone());
    namespaces.delete(&bed.ns.name, &DeleteParams::default()).await.expect("namespace delete accepted");
    let name = bed.ns.name.clone();
    eventually("the namespace to be deleted", Duration::from_secs(120), || {
        let namespaces = namespaces.clone();
        let name = name.clone();
        async move { matches!(namespaces.get_opt(&name).await, Ok(None)).then_some(()) }
    })
    .await;

    let dps = bed.engine.dps();
    for (name, key, hub, device_id) in devices {
        assert!(dps.get_enrollment(name).await.is_err_and(|e| e.is_not_found()), "{name}: entry deleted");
        let index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub).expect("known hub");
        let device = bed.engine.hub(index).get_device(&device_id).await.expect("device kept");
        assert_eq!(device.status, Some(DeviceStatus::Disabled), "{name}: hub device disabled");
        assert!(register(&bed.engine, name, with_key(&key)).await.refused_at_register(), "{name} is refused");
    }
    // The group's devices are disabled in their hubs; the deprovision's blocking entry stays (Retain), so the
    // blocked device stays refused even if a group for it came back.
    for (id, hub, device_id) in group_devices {
        let index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub).expect("known hub");
        let device = bed.engine.hub(index).get_device(&device_id).await.expect("device kept");
        assert_eq!(device.status, Some(DeviceStatus::Disabled), "{id}: hub device disabled");
    }
    let blocking = dps.get_enrollment("ns-fleet-1").await.expect("the blocking entry outlives the namespace");
    assert_eq!(blocking.provisioning_status, Some(dps_operator::azure::wire::ProvisioningStatus::Disabled));
    assert!(dps.get_enrollment_group("ns-fleet").await.is_err_and(|e| e.is_not_found()), "the group is deleted");
}
