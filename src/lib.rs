//! dps-operator: declarative Azure IoT Hub DPS enrollments and crash-safe device deprovisioning.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod azure;
pub mod chart_crds;
pub mod cli;
pub mod controller;
pub mod device;
pub mod engine;
pub mod engine_connection;
pub mod error;
pub mod export;
pub mod key_digest;
pub mod leader;
pub mod metrics;
pub mod metrics_server;
pub mod naming;
pub mod operator;
pub mod revoke;
pub mod telemetry;

pub use error::{Error, Result};
