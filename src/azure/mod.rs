//! The Azure wire format: SAS tokens, the DPS service client, the hub registry client, the device
//! registration client, and the shared HTTP layer (retries, Retry-After, rate budgets, bulk, paging).
//!
//! The operator talks only this wire format, to Azure or to the local engine.

pub mod connection_string;
pub mod device_registration;
pub mod dps;
pub mod engine_info;
pub mod error;
pub mod http;
pub mod hub;
pub mod operation;
pub mod rate;
pub mod retry;
pub mod sas;
pub mod secret;
pub mod wire;

pub use connection_string::{ConnectionString, ConnectionStringError, Credential};
pub use device_registration::{DeviceAuth, DeviceRegistrationClient, DeviceRegistrationOptions, RegistrationOutcome};
pub use dps::DpsServiceClient;
pub use engine_info::EngineInfo;
pub use error::{AzureError, ServiceError};
pub use http::{ClientOptions, Page};
pub use hub::HubRegistryClient;
pub use rate::{RateBudget, RateBudgets};
pub use retry::RetryPolicy;
pub use secret::Secret;
