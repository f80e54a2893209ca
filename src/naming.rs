//! Kubernetes object names derived from DPS IDs, for the resources the CLI writes (`revoke`, `export`).

use sha2::{Digest, Sha256};

/// The longest DNS-1123 label.
const LABEL_MAX: usize = 63;

/// A DNS-1123 label for the DPS ID `id`: `prefix` and the ID lower-cased, other characters as `-`. DPS
/// compares IDs case-insensitively, so `Dev-1` and `dev-1` get one name; when characters had to be
/// replaced or the ID cut, a hash of the lower-cased ID keeps IDs that would otherwise collide (`a.b`,
/// `a_b`) apart.
pub fn dns_label(prefix: &str, id: &str) -> String {
    let lower = id.to_ascii_lowercase();
    let cleaned: String = lower.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let cleaned = cleaned.trim_matches('-');
    let base = format!("{prefix}{cleaned}");
    if cleaned == lower && !base.is_empty() && base.len() <= LABEL_MAX {
        return base;
    }
    let digest = Sha256::digest(lower.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let keep = LABEL_MAX - hash.len() - 1;
    let head = base.get(..keep.min(base.len())).unwrap_or(&base).trim_matches('-');
    if head.is_empty() { format!("id-{hash}") } else { format!("{head}-{hash}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_and_distinct_for_distinct_ids() {
        assert_eq!(dns_label("revoke-", "vending-0001"), "revoke-vending-0001");
        assert_eq!(dns_label("revoke-", "Vending-0001"), "revoke-vending-0001");
        assert_eq!(dns_label("", "kiosk-1"), "kiosk-1");
        let dotted = dns_label("revoke-", "a.b");
        let underscored = dns_label("revoke-", "a_b");
        assert_ne!(dotted, underscored);
        assert!(dotted.starts_with("revoke-a-b-"), "{dotted}");
        let long = dns_label("revoke-", &"x".repeat(128));
        assert!(long.len() <= 63, "{long}");
        for name in [dotted, underscored, long, dns_label("revoke-", "-:x:-"), dns_label("", "::-")] {
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{name}");
            assert!(!name.ends_with('-') && !name.starts_with('-') && !name.is_empty(), "{name}");
        }
    }
}
