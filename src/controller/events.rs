//! Events (events.k8s.io) for every step that changes something outside Kubernetes, through the one
//! shared publisher. Notes name the outside object (registration ID, hub), never a secret.

use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use tracing::warn;

use super::context::Context;
use super::event_series::{RecentSeries, SeriesKey};

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something changed as asked.
    Normal,
    /// Something needs a person's attention.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Publishes events as one reporting controller and instance, folding repeats into series with a small,
/// bounded memory of recent events (see `event_series`).
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<RecentSeries>,
}

impl EventPublisher {
    /// A publisher reporting as `controller` from `instance` (the controller's name when unknown).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        let instance = instance.unwrap_or_else(|| controller.to_string());
        EventPublisher { client, controller: controller.to_string(), instance, recent: Mutex::default() }
    }

    /// Creates an event on `regarding`, or counts a repeat on the series of the same reason.
    pub async fn publish(
        &self,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_string());
        let identity = regarding.uid.as_deref().or(regarding.name.as_deref()).unwrap_or_default();
        let key = SeriesKey { type_: type_.as_str(), reason, action, regarding: identity };
        let note = truncate(note, 1000);
        let now = jiff::Timestamp::now();
        let repeat = self.recent().repeat(&key, Instant::now());
        if let Some(series) = repeat {
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &series.namespace);
            let count = EventSeries { count: series.count, last_observed_time: MicroTime(now) };
            let patch = json!({ "series": count, "note": note });
            match api.patch(&series.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(()),
                // The apiserver dropped it (events live an hour by default): start a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => self.recent().forget(&key),
                Err(e) => return Err(e),
            }
        }
        let name = format!("{}.{:x}", regarding.name.as_deref().unwrap_or(&self.controller), now.as_nanosecond());
        let event = K8sEvent {
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: Some(note),
            metadata: ObjectMeta {
                namespace: Some(namespace.clone()),
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(type_.as_str().to_string()),
            ..K8sEvent::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &event).await?;
        self.recent().started(&key, namespace, name, Instant::now());
        Ok(())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentSeries> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Publishes a Normal event on `obj`; a failure to publish is logged, never fatal.
pub async fn normal<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, reason: &str, note: String) {
    publish(ctx, obj, EventType::Normal, reason, reason, note).await;
}

/// Publishes a Normal event on `obj` whose `action` differs from its reason. Events of the same reason and
/// action fold into one series (showing only the latest note), so a step that must stay visible as its
/// own event each time it happens gets an action of its own.
pub async fn normal_step<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    reason: &str,
    action: &str,
    note: String,
) {
    publish(ctx, obj, EventType::Normal, reason, action, note).await;
}

/// Publishes a Warning event on `obj`.
pub async fn warning<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, reason: &str, note: String) {
    publish(ctx, obj, EventType::Warning, reason, reason, note).await;
}

async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    if let Err(e) = ctx.events.publish(type_, reason, action, note, &obj.object_ref(&())).await {
        warn!(reason, error = %e, "could not publish an event");
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
