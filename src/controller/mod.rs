//! The controllers: one module per kind, split by phase (apply, delete), sharing the context, kstatus
//! health, the status writer, events and the backend cache.
//!
//! `reconcile` does one thing for every kind: kube-runtime's `finalizer()` dispatching Apply and Cleanup
//! to the kind's idempotent functions. Every step outside Kubernetes is recorded in status before the
//! next one starts, so a restarted operator resumes where it stopped and never undoes a revocation.

pub mod abandon;
pub mod backend;
pub mod certificate;
pub mod change_filter;
pub mod context;
pub mod deletion_steps;
pub mod device_deprovision;
pub mod enrollment_group;
pub mod event_series;
pub mod events;
pub mod failpoint;
pub mod health;
pub mod hub_device;
pub mod hub_revocation;
pub mod individual_enrollment;
pub mod inputs;
pub mod lenient;
pub mod ownership;
pub mod provisioning_service;
pub mod references;
pub mod rotation;
pub mod settings;
pub mod status;
pub mod triggers;
pub mod validation;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, info, warn};

pub use context::Context;

use crate::{Error, Result};

/// The finalizer every kind carries while the operator has work to do on deletion.
pub const FINALIZER: &str = "dps.iot-operator.dev/finalizer";

/// A kind the operator reconciles: idempotent apply and cleanup.
pub trait Reconciled:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The controller's name in logs and metrics.
    const CONTROLLER: &'static str;

    /// Brings the outside world to the spec (the finalizer is already in place).
    fn apply(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action>> + Send;

    /// Runs the deletion order; the finalizer is released when this returns `Ok`.
    fn cleanup(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action>> + Send;

    /// Kubernetes-only housekeeping when a person abandons the resource (never a DPS or hub call).
    fn abandoned(_obj: Arc<Self>, _ctx: Arc<Context>) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// The DPS registration ID the object stands for, recorded on its reconcile span.
    fn registration_id(&self) -> Option<String> {
        None
    }

    /// The object's kstatus conditions and the generation they describe.
    fn health(&self) -> Option<(&[Condition], Option<i64>)>;
}

/// Whether `obj` is Ready at its current generation and not being deleted: a reconcile of it can only be
/// a resync (or a change to something it reads), so its reads spend the resync share of the budgets.
pub(crate) fn settled<K: Reconciled>(obj: &K) -> bool {
    let meta = obj.meta();
    meta.deletion_timestamp.is_none()
        && obj.health().is_some_and(|(conditions, observed)| {
            observed == meta.generation && health::is_true(conditions, health::READY)
        })
}

/// The one top-level action: the finalizer helper dispatching to apply and cleanup.
pub async fn reconcile<K: Reconciled>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let key = object_key(obj.as_ref());
    let span = tracing::info_span!(
        "reconcile",
        controller = K::CONTROLLER,
        object = %key,
        registration_id = tracing::field::Empty
    );
    if let Some(id) = obj.registration_id() {
        span.record("registration_id", id);
    }
    let deleting = obj.meta().deletion_timestamp.is_some();
    let metrics = crate::metrics::global();
    if let Some(metrics) = metrics {
        metrics.reconcile_started(K::CONTROLLER, &key, deleting);
    }
    let started = std::time::Instant::now();
    let result = dispatch(obj, ctx, &key).instrument(span).await;
    if let Some(metrics) = metrics {
        let outcome = result.as_ref().map(|_| ()).map_err(Error::reason);
        metrics.reconcile_finished(K::CONTROLLER, &key, deleting, started.elapsed(), outcome);
    }
    result
}

async fn dispatch<K: Reconciled>(obj: Arc<K>, ctx: Arc<Context>, key: &str) -> Result<Action> {
    let Some(namespace) = obj.namespace() else {
        // The kinds are namespaced; a cluster-scoped copy can only come from a broken CRD.
        warn!(object = %key, "ignoring an object without a namespace");
        return Ok(Action::await_change());
    };
    let api = Api::<K>::namespaced(ctx.client.clone(), &namespace);
    // The watch cache can lag our own status writes when another object's event (a Secret, say) starts
    // this run; what status records (bound IDs, ownership, deletion steps) must then be read fresh, or a
    // stale copy would refuse our own entry as someone else's and overwrite the newer status. A copy at
    // the version we last wrote or read is current, and spares the apiserver a read per reconcile.
    let obj = if status::cache_is_current(obj.as_ref()) {
        obj
    } else {
        match api.get_opt(&obj.name_any()).await {
            Ok(Some(fresh)) => {
                status::remember(&fresh);
                Arc::new(fresh)
            }
            Ok(None) => {
                status::forget(obj.uid().as_deref());
                return Ok(Action::await_change());
            }
            Err(e) => return Err(e.into()),
        }
    };
    if let Some(reason) = abandon::requested(obj.as_ref()) {
        // The cache drops managed fields, and they name who asked: read the apiserver's copy.
        let Some(obj) = api.get_opt(&obj.name_any()).await?.map(Arc::new) else {
            return Ok(Action::await_change());
        };
        K::abandoned(Arc::clone(&obj), Arc::clone(&ctx)).await?;
        abandon::release(&api, obj.as_ref(), &reason, &ctx).await?;
        return Ok(Action::await_change());
    }
    let resync = settled(obj.as_ref());
    let deleting = obj.meta().deletion_timestamp.is_some();
    let uid = obj.uid();
    let work = finalizer(&api, FINALIZER, obj, |event| {
        let ctx = Arc::clone(&ctx);
        async move {
            match event {
                Event::Apply(obj) => K::apply(obj, ctx).await,
                Event::Cleanup(obj) => K::cleanup(obj, ctx).await,
            }
        }
    });
    let result = if resync { crate::azure::rate::as_resync(work).await } else { work.await };
    let result = finalizer_outcome(result, key);
    if deleting && result.is_ok() {
        status::forget(uid.as_deref());
    }
    if result.is_ok() {
        ctx.reset_backoff(key);
    }
    result
}

/// Maps the finalizer helper's result to ours. A reconcile queued before the object vanished re-runs the
/// idempotent cleanup and then finds no object to release: the deletion is complete, not failed (it must
/// not count as an error, stay "in progress" in the metrics, or be retried).
fn finalizer_outcome(result: Result<Action, kube::runtime::finalizer::Error<Error>>, key: &str) -> Result<Action> {
    match result {
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status))) if status.is_not_found() => {
            debug!(object = %key, "already deleted");
            Ok(Action::await_change())
        }
        other => other.map_err(|e| Error::Finalizer(Box::new(e))),
    }
}

/// Per-object exponential backoff with jitter; the service's Retry-After when it gave one.
pub fn error_policy<K: Reconciled>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(obj.as_ref());
    let wait = ctx.next_backoff(&key);
    let wait = retry_after(err).map_or(wait, |asked| asked.max(wait));
    warn!(controller = K::CONTROLLER, object = %key, reason = err.reason(), error = %err, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

fn retry_after(err: &Error) -> Option<std::time::Duration> {
    match err {
        Error::Azure(e) => e.retry_after(),
        Error::Finalizer(inner) => match inner.as_ref() {
            kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                retry_after(e)
            }
            _ => None,
        },
        _ => None,
    }
}

/// `Kind/namespace/name`, the key of per-object state.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Which namespaces the operator serves.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// One namespace, or every namespace when `None`.
    pub namespace: Option<String>,
}

impl Scope {
    /// An `Api` for `K` over the served namespaces.
    pub fn api<K>(&self, client: &kube::Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// Runs every controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stop = move || {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    };
    let stopped = stop();
    let controllers = async {
        tokio::join!(
            provisioning_service::controller(Arc::clone(&ctx), &scope, stop()),
            individual_enrollment::controller(Arc::clone(&ctx), &scope, stop()),
            device_deprovision::controller(Arc::clone(&ctx), &scope, stop()),
            enrollment_group::controller(Arc::clone(&ctx), &scope, stop()),
        )
    };
    tokio::spawn(async move {
        shutdown.await;
        info!("stopping the controllers");
        let _ = tx.send(true);
    });
    // In-flight reconciles may finish their current step, but a call hanging on an unreachable backend
    // must not hold the process: every step is idempotent and resumes on the next start.
    let grace = async move {
        stopped.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = controllers => {}
        _ = grace => warn!(grace = ?SHUTDOWN_GRACE, "controllers still busy after the grace period; exiting anyway"),
    }
}

/// How long in-flight reconciles get to finish after SIGTERM.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Logs each reconcile result of a controller stream.
pub(crate) fn log_result<T: Debug, E: std::fmt::Display>(controller: &'static str, result: Result<T, E>) {
    match result {
        Ok(_) => {}
        Err(e) => tracing::debug!(controller, error = %e, "controller event"),
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;
    use kube::runtime::finalizer::Error as FinalizerError;

    use super::*;

    #[test]
    fn releasing_the_finalizer_of_an_object_already_gone_completes_the_deletion() {
        let gone = kube::Error::Api(Box::new(Status::failure("not found", "NotFound").with_code(404)));
        let outcome = finalizer_outcome(Err(FinalizerError::RemoveFinalizer(gone)), "IndividualEnrollment/ns/a");
        assert!(outcome.is_ok(), "{outcome:?}");
    }

    #[test]
    fn other_finalizer_failures_stay_errors() {
        let refused = kube::Error::Api(Box::new(Status::failure("conflict", "Conflict").with_code(409)));
        let outcome = finalizer_outcome(Err(FinalizerError::RemoveFinalizer(refused)), "IndividualEnrollment/ns/a");
        assert_eq!(outcome.map_err(|e| e.reason()).err(), Some("Finalizer"));
        let gone = kube::Error::Api(Box::new(Status::failure("not found", "NotFound").with_code(404)));
        let outcome = finalizer_outcome(Err(FinalizerError::AddFinalizer(gone)), "IndividualEnrollment/ns/a");
        assert!(outcome.is_err());
    }
}
