//! Names a backend request for metrics: the HTTP method and the path with every ID replaced by `{id}`,
//! so a label can never carry a registration ID, device ID or group name.

/// Path segments that are part of the DPS and IoT Hub REST routes; anything else is an ID.
const ROUTE_WORDS: &[&str] = &[
    "enrollments",
    "enrollmentGroups",
    "registrations",
    "devices",
    "query",
    "register",
    "operations",
    "attestationmechanism",
    "twins",
    "modules",
    "statistics",
    "jobs",
    "configurations",
    "certificates",
];

/// `"GET /enrollments/{id}"` for a GET of `/enrollments/thermostat-1?x=y`.
pub fn operation_name(method: &str, path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut name = String::with_capacity(method.len() + path.len());
    name.push_str(method);
    name.push(' ');
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        name.push('/');
        name.push_str(ROUTE_WORDS.iter().find(|w| **w == segment).copied().unwrap_or("{id}"));
    }
    if !name.ends_with('/') && name.len() == method.len() + 1 {
        name.push('/');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::operation_name;

    #[test]
    fn ids_in_paths_become_placeholders() {
        assert_eq!(operation_name("GET", "/enrollments/thermostat-1"), "GET /enrollments/{id}");
        assert_eq!(operation_name("POST", "/enrollments/query"), "POST /enrollments/query");
        assert_eq!(operation_name("DELETE", "/devices/a%25b%3Fc?x=1"), "DELETE /devices/{id}");
        assert_eq!(operation_name("POST", "/registrations/g%2F1/query"), "POST /registrations/{id}/query");
        assert_eq!(
            operation_name("PUT", "/0ne0000ABCD/registrations/dev-1/register"),
            "PUT /{id}/registrations/{id}/register"
        );
        assert_eq!(operation_name("GET", ""), "GET /");
    }

    #[test]
    fn a_route_word_only_counts_as_a_whole_segment() {
        assert_eq!(operation_name("GET", "/devices/devices-1"), "GET /devices/{id}");
        assert_eq!(operation_name("GET", "/devices/query"), "GET /devices/query");
    }
}
