//! A fresh namespace per test, so tests run in parallel without seeing each other's objects.

use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

/// A namespace created for one test; call [`TestNamespace::delete`] at the end of the test.
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates a namespace whose name starts with `prefix` and is unique in this run.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace is created");
        Self { name, client: client.clone() }
    }

    /// Deletes the namespace (the controller-manager removes what is in it).
    pub async fn delete(self) {
        let _ = Api::<Namespace>::all(self.client).delete(&self.name, &DeleteParams::default()).await;
    }
}
