//! Keys, connection strings and SAS tokens never reach logs or error messages.

use dps_operator::azure::secret::Secret;
use dps_operator::azure::wire::{AttestationMechanism, IndividualEnrollment, ProvisioningStatus};

use crate::support::device::{register, with_key};
use crate::support::engine::Engine;
use crate::support::raw::{dps_token, dps_url, https_client};

const DEVICE_KEY: &str = "U2VjcmV0RGV2aWNlS2V5U2VjcmV0RGV2aWNlS2V5U2VjcmV0RGV2aWNlS2V5MTI=";

#[tokio::test]
async fn no_key_token_or_connection_string_appears_in_engine_logs_or_errors() {
    let engine = Engine::start();
    let dps = engine.dps();
    let enrollment = IndividualEnrollment {
        registration_id: "secretive-1".into(),
        attestation: AttestationMechanism::symmetric_key(
            Some(Secret::new(DEVICE_KEY.to_string())),
            Some(Secret::new(DEVICE_KEY.to_string())),
        ),
        ..IndividualEnrollment::default()
    };
    let created = dps.create_enrollment(&enrollment).await.expect("enrolled");
    register(&engine, "secretive-1", with_key(DEVICE_KEY)).await.hub();
    let mut disabled = enrollment.clone();
    disabled.provisioning_status = Some(ProvisioningStatus::Disabled);
    dps.update_enrollment(&disabled, created.etag.as_deref()).await.expect("disabled");
    assert!(register(&engine, "secretive-1", with_key(DEVICE_KEY)).await.disabled());
    let wrong_key = "V3JvbmdXcm9uZ1dyb25nV3JvbmdXcm9uZ1dyb25nV3JvbmdXcm9uZ1dyb25nMTI=";
    // A disabled entry decides whatever the credential (the revocation procedure relies on it).
    assert!(register(&engine, "secretive-1", with_key(wrong_key)).await.disabled());

    // A refused token's error message must not echo the token.
    let token = dps_token(&engine);
    let bad_token = token.replace("se=", "se=1");
    let response = https_client(&engine)
        .get(dps_url(&engine, "/enrollments/secretive-1"))
        .header("Authorization", &bad_token)
        .send()
        .await
        .expect("answered");
    let body = response.text().await.expect("body");

    let mut secrets: Vec<String> = vec![DEVICE_KEY.into(), wrong_key.into(), token.clone()];
    let signature = token.split("sig=").nth(1).and_then(|s| s.split('&').next()).expect("token has a signature");
    secrets.push(signature.into());
    let keys = std::iter::once(&engine.info.provisioning_service.connection_string)
        .chain(engine.info.hubs.iter().map(|h| &h.connection_string));
    for cs in keys {
        secrets.push(cs.to_secret_string().expose().to_string());
        let full = cs.to_secret_string().expose().to_string();
        let key = full.split("SharedAccessKey=").nth(1).expect("connection string has a key").to_string();
        secrets.push(key);
    }
    let log = engine.log();
    assert!(log.len() > 200, "the engine logged almost nothing; this test would prove nothing:\n{log}");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret appears in the engine log");
        assert!(!body.contains(secret.as_str()), "a secret appears in an error body");
    }
}
