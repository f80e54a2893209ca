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
    /// The resource or something it refers to needs a person's change (a missing Secret, a bad
    /// certificate, a changed immutable field): the resource is Stalled until then.
    #[error("{message}")]
    Invalid {
        /// PascalCase condition reason, for example `SecretNotFound`.
        reason: &'static str,
        /// What to fix, naming the object concerned; never a secret.
        message: String,
    },
    /// Waiting for another resource (a ProvisioningService becoming Ready, dependents finishing): retried.
    #[error("{message}")]
    Waiting {
        /// PascalCase condition reason, for example `ProvisioningServiceNotReady`.
        reason: &'static str,
        /// What is awaited.
        message: String,
    },
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] kube::Error),
    /// A status write did not finish in time.
    #[error("status write timed out after {0:?}")]
    StatusTimeout(std::time::Duration),
    /// This replica lost (or never got) the leader Lease: it must stop reconciling.
    #[error("leader election: {0}")]
    LeaseLost(String),
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
            Error::Invalid { reason, .. } | Error::Waiting { reason, .. } => reason,
            Error::Finalizer(_) => "Finalizer",
            Error::StatusTimeout(_) => "StatusTimeout",
            Error::LeaseLost(_) => "LeaseLost",
        }
    }
}

impl Error {
    /// An error that only a person can resolve (stalls the resource).
    pub fn invalid(reason: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid { reason, message: message.into() }
    }

    /// A wait for another resource (retried).
    pub fn waiting(reason: &'static str, message: impl Into<String>) -> Self {
        Error::Waiting { reason, message: message.into() }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
