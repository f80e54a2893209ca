//! Apply: protect the credential Secrets, check the DPS service API and every hub with a cheap read, and
//! say Ready or what to fix.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use tracing::info;

use crate::api::provisioning_service::{LinkedHubStatus, ProvisioningService, ProvisioningServiceStatus};
use crate::azure::AzureError;
use crate::controller::health::{self, Health};
use crate::controller::requeue::Action;
use crate::controller::{Context, events, references, status};
use crate::{Error, Result};

/// How often a Ready service is checked again (credentials expire, hubs get unlinked).
const RECHECK: Duration = Duration::from_secs(300);
/// An ID no entry or device has; reading it proves the credentials without touching real data.
const PROBE_ID: &str = "dps-operator-credential-check";

pub(super) async fn apply(service: &ProvisioningService, ctx: &Context) -> Result<Action> {
    let namespace = service.namespace().unwrap_or_default();
    let api = Api::<ProvisioningService>::namespaced(ctx.client.clone(), &namespace);
    let current = service.status.clone();
    let previous = current.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let mut next = ProvisioningServiceStatus {
        observed_generation: service.metadata.generation,
        hub_count: Some(i32::try_from(service.spec.hubs.len()).unwrap_or(i32::MAX)),
        ..Default::default()
    };
    let outcome = check(service, ctx, &namespace, &mut next).await;
    let health = match &outcome {
        Ok(()) => Health::ready("Connected", "the DPS service API and every linked hub answered"),
        Err(e) => Health::from_error(e),
    };
    next.conditions = health.conditions(service.metadata.generation, &previous);
    let was_ready = current.as_ref().is_some_and(|s| crate::controller::health::is_true(&s.conditions, "Ready"));
    status::write(&api, service, current.as_ref(), &next).await?;
    match outcome {
        Ok(()) => {
            if !was_ready {
                info!(service = %service.name_any(), "provisioning service ready");
                events::normal(ctx, service, "Connected", "DPS and every linked hub answered".into()).await;
            }
            Ok(Action::requeue(RECHECK))
        }
        Err(e) => {
            // Once per generation: a service retried with backoff does not repeat its warning each time.
            let generation = service.metadata.generation;
            if !current
                .as_ref()
                .is_some_and(|s| health::already_stalled(&s.conditions, s.observed_generation, generation))
            {
                events::warning(ctx, service, health.reason(), health.message().to_string()).await;
            }
            Err(e)
        }
    }
}

async fn check(
    service: &ProvisioningService,
    ctx: &Context,
    namespace: &str,
    next: &mut ProvisioningServiceStatus,
) -> Result<()> {
    references::protect_secrets(&ctx.client, namespace, &references::service_secrets(service)).await?;
    let backend = ctx.backends.resolve(&ctx.client, service).await?;
    next.service_host_name = Some(backend.dps.host_name().to_string());
    probe(backend.dps.get_enrollment(PROBE_ID).await).map_err(|e| describe("the DPS service API", e))?;
    let mut failed = None;
    for hub in &service.spec.hubs {
        let answer = match backend.hub(&hub.host_name) {
            Ok(client) => {
                probe(client.get_device(PROBE_ID).await).map_err(|e| describe(&format!("hub {}", hub.host_name), e))
            }
            Err(e) => Err(e),
        };
        let message = answer.as_ref().err().map(ToString::to_string);
        next.hubs.push(LinkedHubStatus { host_name: hub.host_name.clone(), reachable: answer.is_ok(), message });
        if let Err(e) = answer {
            failed.get_or_insert(e);
        }
    }
    failed.map_or(Ok(()), Err)
}

/// A 404 for the probe ID means the call was authorised: the credentials work. Only the service's own 404
/// counts, one that carries its error code (DPS 404201, hub DeviceNotFound): a proxy or web server at a wrong
/// endpoint answers 404 to anything, and taking that for Ready would hide the mistake until the first write.
fn probe<T>(answer: std::result::Result<T, AzureError>) -> std::result::Result<(), AzureError> {
    match answer {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() && e.service().is_some_and(|d| d.code.is_some()) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Says which API failed; rejected credentials stall the resource, outages are retried.
fn describe(what: &str, err: AzureError) -> Error {
    match err {
        AzureError::Unauthorized(_) => Error::invalid(
            "CredentialsRejected",
            format!("{what} rejected the credentials ({err}); check the connection string Secret"),
        ),
        AzureError::Transport { .. } => {
            Error::waiting("Unreachable", format!("{what} is unreachable ({err}); check the endpoint and CA bundle"))
        }
        AzureError::NotFound(_) => Error::invalid(
            "EndpointNotRecognized",
            format!("{what} answered {err} without the service's error code; check the endpoint"),
        ),
        other => Error::Azure(other),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, StatusCode};

    use super::*;

    fn not_found(body: &str) -> std::result::Result<(), AzureError> {
        Err(AzureError::from_response(StatusCode::NOT_FOUND, &HeaderMap::new(), body.as_bytes()))
    }

    #[test]
    fn only_the_services_own_404_proves_the_credentials() {
        assert!(probe(not_found(r#"{"errorCode":404201,"trackingId":"t","message":"no such resource"}"#)).is_ok());
        assert!(probe(not_found(r#"{"Message":"ErrorCode:DeviceNotFound;no such device"}"#)).is_ok());
        let html = probe(not_found("<html><h1>Not Found</h1></html>")).expect_err("a web server's 404");
        assert_eq!(describe("the DPS service API", html).reason(), "EndpointNotRecognized");
        assert!(probe(not_found("")).is_err(), "an empty 404 proves nothing");
    }
}
