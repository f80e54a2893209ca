//! The credential scanner behind the secret-hygiene checks: known key values (and their URL-encoded forms),
//! SAS signatures after `sig=`, key values after `SharedAccessKey=`, and whole SAS tokens. Engines and
//! operators of passing tests scan their logs with it when dropped, so the whole suite runs with the check.

/// A credential found where none may be: where, and the shape or key it matched (never the value).
#[derive(Debug, PartialEq, Eq)]
pub struct Hit {
    /// Which text (a log, the events, a kind's objects).
    pub what: String,
    /// The 1-based line.
    pub line: usize,
    /// What matched: a known key's index or a credential shape.
    pub matched: String,
}

/// Base64 runs of this length or more after `sig=` or `SharedAccessKey=` are credentials: an HMAC-SHA256
/// signature is 44 characters and the shortest key the engine accepts (16 bytes) 24.
pub const MIN_CREDENTIAL: usize = 20;

fn credential_run(rest: &str) -> usize {
    rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '%')).count()
}

/// Every credential in `text`: the `known` values (and their URL-encoded forms), signatures after `sig=`,
/// key values after `SharedAccessKey=`, and whole `SharedAccessSignature sr=` tokens.
pub fn secret_hits(what: &str, text: &str, known: &[String]) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut hit = |matched: String| hits.push(Hit { what: what.to_string(), line: index + 1, matched });
        for (n, key) in known.iter().enumerate() {
            let encoded = dps_operator::azure::sas::url_encode(key);
            if line.contains(key.as_str()) || line.contains(&encoded) {
                hit(format!("known key #{n}"));
            }
        }
        for marker in ["sig=", "SharedAccessKey="] {
            for (at, _) in line.match_indices(marker) {
                if credential_run(&line[at + marker.len()..]) >= MIN_CREDENTIAL {
                    hit(format!("a value after {marker}"));
                }
            }
        }
        if line.contains("SharedAccessSignature sr=") {
            hit("a SAS token".into());
        }
    }
    hits
}

/// Scans one log for `known` keys and credential shapes; prints the count and fails on any hit. Called when
/// an engine or an operator of a passing test is dropped, so the whole suite runs with the check.
pub fn assert_log_clean(what: &str, log: &str, known: &[String]) {
    let hits = secret_hits(what, log, known);
    if !hits.is_empty() {
        panic!("{what}: credentials logged ({} secret hits): {hits:#?}", hits.len());
    }
    println!("[hygiene] {what}: {} lines, {} known keys: 0 secret hits", log.lines().count(), known.len());
}
