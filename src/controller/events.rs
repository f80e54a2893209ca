//! Events (events.k8s.io) for every step that changes something outside Kubernetes, through the one
//! shared recorder. Notes name the outside object (registration ID, hub), never a secret.

use kube::Resource;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use super::context::Context;

/// Publishes a Normal event on `obj`; a failure to publish is logged, never fatal.
pub async fn normal<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, reason: &str, note: String) {
    publish(ctx, obj, EventType::Normal, reason, note).await;
}

/// Publishes a Warning event on `obj`.
pub async fn warning<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, reason: &str, note: String) {
    publish(ctx, obj, EventType::Warning, reason, note).await;
}

async fn publish<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(note, 1000)),
        action: reason.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
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
