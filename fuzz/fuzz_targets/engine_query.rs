//! The engine's query strings, paths and hub query language.
#![no_main]

use axum::http::Uri;
use dps_operator::engine::{hub_registry, util};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = util::form_pairs(text);
    let _ = hub_registry::parse_query(text);
    let _ = util::registration_key(text);
    let _ = util::validate_device_id(text);
    if let Ok(uri) = text.parse::<Uri>() {
        let _ = util::require_api_version(&uri);
        let _ = util::normalize_path(&uri);
    }
});
