//! The crate's one error type.

/// Everything that can go wrong in the operator, each variant with a fixed `reason()` for metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot load Kubernetes configuration: {0}")]
    KubeConfig(String),
    /// Serialising YAML failed.
    #[error("YAML serialisation failed: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// Serialising JSON failed.
    #[error("JSON serialisation failed: {0}")]
    Json(#[from] serde_json::Error),
    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A DPS, hub or device-registration call failed.
    #[error("{0}")]
    Azure(#[from] crate::azure::AzureError),
    /// DPS decided against a device registration (failed or disabled).
    #[error("registration refused: {0}")]
    RegistrationRefused(String),
    /// The local engine failed to start or run.
    #[error("engine: {0}")]
    Engine(String),
    /// The CRDs this operator serves are not installed in the cluster.
    #[error("custom resource definitions missing from the cluster: {0}")]
    CrdsMissing(String),
}

impl Error {
    /// A short, fixed label for metrics and events (bounded cardinality).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
            Error::KubeConfig(_) => "KubeConfig",
            Error::Yaml(_) => "Yaml",
            Error::Json(_) => "Json",
            Error::Io { .. } => "Io",
            Error::CrdsMissing(_) => "CrdsMissing",
            Error::Azure(e) => e.reason(),
            Error::RegistrationRefused(_) => "RegistrationRefused",
            Error::Engine(_) => "Engine",
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
