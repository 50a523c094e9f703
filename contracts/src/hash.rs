//! Content hashes: SHA-256 over the RFC 8785 (JCS) canonical JSON form of a document.

use sha2::{Digest, Sha256};

/// The canonical JSON text (RFC 8785) of a value.
pub fn canonical_json(value: &serde_json::Value) -> String {
    serde_json_canonicalizer::to_string(value).expect("a serde_json::Value always canonicalizes")
}

/// `sha256:<hex>` of the canonical JSON form; formatting and key order do not change it.
pub fn content_hash(value: &serde_json::Value) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(canonical_json(value).as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_number_spelling_do_not_change_the_hash() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b": 1.0, "a": [1, 2]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a":[1,2],"b":1}"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        let c: serde_json::Value = serde_json::from_str(r#"{"a":[2,1],"b":1}"#).unwrap();
        assert_ne!(content_hash(&a), content_hash(&c));
    }
}
