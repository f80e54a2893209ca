//! Serde types of the wire JSON: camelCase, `None` fields omitted, unknown fields tolerated.
//!
//! Symmetric keys are [`Secret`](super::secret::Secret)s: they serialise to the real value but never show
//! in `Debug`. Top-level resources keep fields they do not know in `extra`, so a read-modify-write through an
//! older client does not drop what a newer service added.

pub mod dps;
pub mod hub;
pub mod registration;

pub use dps::*;
pub use hub::*;
pub use registration::*;

use serde::{Deserialize, Serialize};

/// Body of the query calls: `{"query":"SELECT * FROM enrollments"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuerySpecification {
    /// The query text.
    pub query: String,
}

impl QuerySpecification {
    /// Wraps a query.
    pub fn new(query: impl Into<String>) -> Self {
        QuerySpecification { query: query.into() }
    }
}

/// `capabilities`: `{"iotEdge": bool}` (DPS enrollments and hub devices).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCapabilities {
    /// Whether the device is an IoT Edge device.
    #[serde(default)]
    pub iot_edge: bool,
}

#[cfg(test)]
mod tests;
