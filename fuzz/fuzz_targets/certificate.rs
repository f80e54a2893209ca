//! Certificates as PEM/base64 text (Secrets, ConfigMaps, enrollment bodies) and as DER (TLS client chains).
#![no_main]

use dps_operator::controller::certificate::Certificate;
use dps_operator::engine::certs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = certs::info(data);
    let _ = certs::common_name(data);
    let _ = certs::check_issuer(data, 1_800_000_000);
    let _ = certs::signed_by(data, data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = certs::decode_certificate(text);
        let _ = Certificate::parse(text, "the fuzzed certificate");
    }
});
