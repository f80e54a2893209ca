//! `dps-operator engine-connection` prints a Secret and a ProvisioningService the apiserver accepts.

use std::process::Command;

use kube::api::{Api, DynamicObject};
use serde::Deserialize;

use dps_operator::api::ProvisioningService;
use dps_operator::api::common::CertificateSource;

use crate::support::engine::Engine;
use crate::support::{TestNamespace, client, ensure_crds, manifests};

#[tokio::test]
async fn engine_connection_manifests_are_accepted_and_point_at_the_engine() {
    let engine = Engine::start();
    let client = client().await;
    ensure_crds(&client).await;
    let ns = TestNamespace::create(&client, "connect").await;
    let output = Command::new(env!("CARGO_BIN_EXE_dps-operator"))
        .args(["engine-connection", "--name", "local-dps", "--engine-json"])
        .arg(engine.engine_json())
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let mut kinds = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let object = DynamicObject::deserialize(doc).expect("each document is an object");
        let kind = object.types.clone().expect("typed").kind;
        manifests::create(&client, &ns.name, &object)
            .await
            .unwrap_or_else(|err| panic!("the apiserver refused the {kind}: {err}"));
        kinds.push(kind);
    }
    assert_eq!(kinds, ["Secret", "ProvisioningService"]);
    let service =
        Api::<ProvisioningService>::namespaced(client.clone(), &ns.name).get("local-dps").await.expect("read");
    assert_eq!(service.spec.endpoint.as_deref(), Some(engine.info.provisioning_service.endpoint.as_str()));
    assert_eq!(service.spec.hubs.len(), engine.info.hubs.len());
    assert!(
        matches!(service.spec.ca_bundle, Some(CertificateSource::Pem(ref pem)) if pem.contains("BEGIN CERTIFICATE"))
    );
    ns.delete().await;
}
