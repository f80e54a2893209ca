//! Events (events.k8s.io) for every step that changes something outside Kubernetes, through the one
//! shared recorder. Notes name the outside object (registration ID, hub), never a secret.

use kube::Resource;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use super::context::Context;

/// Publishes a Normal event on `obj`; a failure to publish is logged, never fatal.
pub async fn normal<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, reason: &str, note: String) {
    publish(ctx, obj, EventType::Normal, reason, reason, note).await;
}

/// Publishes a Normal event on `obj` whose `action` differs from its reason. The recorder folds events of
/// the same reason and action into one series (keeping the first note), so a step whose note must stay
/// readable each time it happens gets an action of its own.
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
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(note, 1000)),
        action: action.to_string(),
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
