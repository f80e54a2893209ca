//! Test bed: a real control plane, a client, a fresh namespace per test, and waiting with deadlines.

pub mod certs;
pub mod control_plane;
pub mod device;
pub mod engine;
pub mod faults;
pub mod figures;
pub mod hostile_backend;
pub mod manifests;
pub mod namespace;
pub mod operator;
pub mod process;
pub mod raw;
pub mod secret_scan;

use std::future::Future;
use std::time::Duration;

pub use control_plane::{client, ensure_crds, kubeconfig_path, kubectl};
pub use namespace::TestNamespace;
pub use process::Lines;

/// A namespaced kind the tests read and write as typed objects: what `Api<K>` and reading its conditions
/// as JSON need.
pub trait Namespaced:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
{
}

/// Polls `check` until it returns `Some`, or fails the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < give_up, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
