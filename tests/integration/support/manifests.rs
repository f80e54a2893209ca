//! Creating arbitrary manifests (any kind the apiserver serves) in a test namespace.

use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::pinned_kind;

/// Creates `object` in namespace `ns`, finding its resource through discovery.
pub async fn create(client: &Client, ns: &str, object: &DynamicObject) -> Result<DynamicObject, kube::Error> {
    let types = object.types.clone().expect("manifest has apiVersion and kind");
    let (group, version) = types.api_version.rsplit_once('/').unwrap_or(("", types.api_version.as_str()));
    let (resource, _) = pinned_kind(client, &GroupVersionKind::gvk(group, version, &types.kind)).await?;
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource).create(&PostParams::default(), object).await
}
