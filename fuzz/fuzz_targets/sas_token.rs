//! SAS tokens as the client reads them and as the engine reads an Authorization header.
#![no_main]

use dps_operator::azure::sas;
use dps_operator::engine::sas::SasToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = sas::parse_token(text);
    let _ = sas::decode_key(text);
    let _ = sas::derive_device_key(text, "dev-1");
    if let Ok(token) = SasToken::parse(text) {
        let _ = token.verify("0ne00/registrations/dev-1", Some("registration"), &[text], 0);
    }
});
