//! Request bodies of the DPS service API and the hub registry API, through the engine's validation.
#![no_main]

use dps_operator::engine::model::{Device, Entry};
use dps_operator::engine::{dps_service, hub_registry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = serde_json::from_slice::<Entry>(data) {
        let _ = dps_service::validate_entry(false, "dev-1", entry.clone());
        let _ = dps_service::validate_entry(true, "group-1", entry);
    }
    if let Ok(device) = serde_json::from_slice::<Device>(data) {
        let _ = hub_registry::prepare_device("dev-1", device, None);
    }
});
