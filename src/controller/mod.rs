//! The controllers: one module per kind, split by phase (apply, delete), sharing the context, kstatus
//! health, the status writer, events and the backend cache.
//!
//! `reconcile` does one thing for every kind: the finalizer's state (`finalizer.rs`) dispatching to the
//! kind's idempotent apply or cleanup. Every step outside Kubernetes is recorded in status before the
//! next one starts, so a restarted operator resumes where it stopped and never undoes a revocation.

pub mod abandon;
pub mod backend;
pub mod cached;
pub mod certificate;
pub mod change_filter;
pub mod context;
pub mod deletion_steps;
pub mod device_deprovision;
pub(crate) mod dps_entry;
pub mod enrollment_group;
pub mod event_series;
pub mod events;
pub mod failpoint;
pub mod finalizer;
pub mod health;
pub mod hub_device;
pub mod hub_revocation;
pub mod individual_enrollment;
pub mod inputs;
pub mod lenient;
pub mod ownership;
pub mod provisioning_service;
pub mod references;
pub mod requeue;
pub mod rotation;
pub mod settings;
pub mod status;
pub mod triggers;
pub mod validation;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, info, warn};

pub use context::Context;
use requeue::Action;

use crate::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};
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

    /// Whether `apply` adds the finalizer itself, together with the record of the entry it is about to
    /// create ([`finalizer::Finalizer::ensure`] before its first write outside). Otherwise the finalizer
    /// is in place before `apply` starts.
    const FINALIZER_WITH_CLAIM: bool = false;

    /// Brings the outside world to the spec.
    fn apply(
        obj: Arc<Self>,
        ctx: Arc<Context>,
        finalizer: &finalizer::Finalizer<Self>,
    ) -> impl Future<Output = Result<Action>> + Send;

    /// Runs the deletion order; the finalizer is released when this returns `Ok`.
    fn cleanup(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action>> + Send;

    /// Kubernetes-only housekeeping when a person abandons the resource (never a DPS or hub call).
    fn abandoned(_obj: Arc<Self>, _ctx: Arc<Context>) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// The ProvisioningService the object names, if it uses one.
    fn provisioning_service(&self) -> Option<&str> {
        None
    }

    /// The DPS registration ID the object stands for, recorded on its reconcile span.
    fn registration_id(&self) -> Option<String> {
        None
    }

    /// The object's kstatus conditions and the generation they describe.
    fn health(&self) -> Option<(&[Condition], Option<i64>)>;

    /// What the controllers' caches keep of the object for lookups across resources.
    fn view(&self) -> cached::View;

    /// The pending timed reconciles of the kind's resources.
    fn timers(ctx: &Context) -> &requeue::Timers<Self>;

    /// The kind's controller cache, once its controller runs.
    fn cache(ctx: &Context) -> &std::sync::OnceLock<kube::runtime::reflector::Store<cached::Cached<Self>>>;

    /// Called with each object its controller's watch sees (`deleted` when it is gone), once the cache
    /// holds the change: wakes the resources of other kinds that depend on it. (Not before: a woken
    /// resource reads the cache, and would find the copy from before the change.)
    fn watched(cached: &cached::Cached<Self>, ctx: &Context, deleted: bool) {
        if deleted {
            provisioning_service::dependent_removed(ctx, cached);
        }
    }
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

/// The one top-level action: the finalizer's state dispatching to apply and cleanup, for the object as
/// the apiserver holds it now.
pub async fn reconcile<K: Reconciled>(
    cached: Arc<cached::Cached<K>>,
    ctx: Arc<Context>,
) -> Result<kube::runtime::controller::Action> {
    let key = object_key(cached.as_ref());
    let span = tracing::info_span!(
        "reconcile",
        controller = K::CONTROLLER,
        object = %key,
        registration_id = tracing::field::Empty
    );
    K::timers(&ctx).started(&cached);
    let deleting = cached.deleting();
    let metrics = crate::metrics::global();
    if let Some(metrics) = metrics {
        metrics.reconcile_started(K::CONTROLLER, &key, deleting);
    }
    let started = std::time::Instant::now();
    let result = dispatch(Arc::clone(&cached), Arc::clone(&ctx), &key).instrument(span).await;
    if let Some(metrics) = metrics {
        let outcome = result.as_ref().map(|_| ()).map_err(Error::reason);
        metrics.reconcile_finished(K::CONTROLLER, &key, deleting, started.elapsed(), outcome);
    }
    // The operator times the next reconcile itself (`requeue.rs`); a failure is timed by `error_policy`.
    let next = result?;
    K::timers(&ctx).set(&cached, next.after());
    Ok(kube::runtime::controller::Action::await_change())
}

async fn dispatch<K: Reconciled>(cached: Arc<cached::Cached<K>>, ctx: Arc<Context>, key: &str) -> Result<Action> {
    let Some(namespace) = cached.namespace() else {
        // The kinds are namespaced; a cluster-scoped copy can only come from a broken CRD.
        warn!(object = %key, "ignoring an object without a namespace");
        return Ok(Action::await_change());
    };
    let api = Api::<K>::namespaced(ctx.client.clone(), &namespace);
    // The cache keeps no objects (`cached.rs`): every reconcile reads its own, so it also never acts on
    // a copy that lags the operator's own last status write.
    let Some(obj) = api.get_opt(&cached.name_any()).await?.map(Arc::new) else {
        return Ok(Action::await_change());
    };
    if let Some(id) = obj.registration_id() {
        tracing::Span::current().record("registration_id", id);
    }
    if let Some(reason) = abandon::requested(obj.as_ref()) {
        K::abandoned(Arc::clone(&obj), Arc::clone(&ctx)).await?;
        abandon::release(&api, obj.as_ref(), &reason, &ctx).await?;
        return Ok(Action::await_change());
    }
    let resync = settled(obj.as_ref());
    let work = run_phase(api, obj, ctx.clone());
    let result = if resync { crate::azure::rate::as_resync(work).await } else { work.await };
    if result.is_ok() {
        ctx.reset_backoff(key);
    }
    result
}

/// Apply or cleanup, by the finalizer's state (every combination matched): a deleting resource with our
/// finalizer runs its deletion order and is then released; a live one is applied with the finalizer in
/// place before its first write outside.
async fn run_phase<K: Reconciled>(api: Api<K>, obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let finalizer = finalizer::Finalizer::of(api, obj.as_ref());
    let deleting = obj.meta().deletion_timestamp.is_some();
    match (deleting, finalizer.is_present()) {
        (true, false) => Ok(Action::await_change()),
        (true, true) => {
            let action = K::cleanup(Arc::clone(&obj), ctx).await?;
            finalizer.release(obj.as_ref()).await?;
            Ok(action)
        }
        (false, present) => {
            if !present && !K::FINALIZER_WITH_CLAIM {
                finalizer.ensure(obj.as_ref(), None).await?;
            }
            let result = K::apply(Arc::clone(&obj), ctx, &finalizer).await;
            // A kind that adds its finalizer with its claim may stop before claiming (waiting for its
            // service, or refused): the finalizer goes on anyway, so a deletion always passes cleanup.
            finalizer.ensure(obj.as_ref(), None).await?;
            result
        }
    }
}

/// Per-object exponential backoff with jitter; the service's Retry-After when it gave one.
pub fn error_policy<K: Reconciled>(
    obj: Arc<cached::Cached<K>>,
    err: &Error,
    ctx: Arc<Context>,
) -> kube::runtime::controller::Action {
    let key = object_key(obj.as_ref());
    let wait = ctx.next_backoff(&key);
    let wait = retry_after(err).map_or(wait, |asked| asked.max(wait));
    warn!(controller = K::CONTROLLER, object = %key, reason = err.reason(), error = %err, retry_in = ?wait, "reconcile failed");
    K::timers(&ctx).set(&obj, Some(wait));
    kube::runtime::controller::Action::await_change()
}

fn retry_after(err: &Error) -> Option<std::time::Duration> {
    match err {
        Error::Azure(e) => e.retry_after(),
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
            controller::<ProvisioningService>(Arc::clone(&ctx), &scope, stop()),
            controller::<IndividualEnrollment>(Arc::clone(&ctx), &scope, stop()),
            controller::<DeviceDeprovision>(Arc::clone(&ctx), &scope, stop()),
            controller::<EnrollmentGroup>(Arc::clone(&ctx), &scope, stop()),
            triggers::watch_inputs(Arc::clone(&ctx), &scope, stop()),
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

/// The controller of `K`, run until `stop`: its own watch (`lenient::typed_watch`) starts a reconcile for
/// each change worth one, and everything else comes due through its timers (`requeue.rs`): retries,
/// resyncs and polls, and the wakes from other objects (`triggers.rs`): the Secrets and ConfigMaps a
/// resource reads, from one watch of each for every controller; the ProvisioningService it names, from
/// that kind's own watch; for an IndividualEnrollment, the DeviceDeprovisions of its registration ID; for a
/// ProvisioningService being deleted, its last dependent going (so this controller does not watch every
/// dependent a second time, and a burst of enrollments never re-checks a live service's credentials).
async fn controller<K: Reconciled>(
    ctx: Arc<Context>,
    scope: &Scope,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (store, stream) = lenient::typed_watch::<K>(&ctx.client, scope, ctx.clone());
    let main = kube::runtime::Controller::for_stream(stream, store);
    let _ = K::cache(&ctx).set(main.store());
    main.reconcile_on(K::timers(&ctx).due())
        .with_config(ctx.controller_config())
        .graceful_shutdown_on(stop)
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|r| async move { log_result(K::CONTROLLER, r) })
        .await;
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
