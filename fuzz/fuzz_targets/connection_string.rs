//! Connection strings from Secrets: parse without panicking; a parsed string writes back to an equal one.
#![no_main]

use dps_operator::azure::connection_string::ConnectionString;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(parsed) = text.parse::<ConnectionString>() {
        let again: ConnectionString = parsed.to_secret_string().expose().parse().expect("a written string parses");
        assert_eq!(again, parsed);
    }
});
