//! Text checked and compared on the hot path: a record's bytes as UTF-8, and equality of
//! short strings without a library call.
//!
//! Every JSON record is checked to be UTF-8 before it is decoded; the standard library's check
//! took 7 % of a replay, `simdutf8`'s vector check a fraction of that.
//!
//! Channel, dimension and producer names and key values are compared several times per event,
//! nearly all shorter than 17 bytes. `==` on strings calls libc's `memcmp`, whose call and
//! length dispatch cost more than the comparison itself at these sizes (5 % of the engine's
//! time); two overlapping word loads compare any string of 4 to 16 bytes.

/// `bytes` as a `str` when they are UTF-8. A record that is not is checked again by the
/// standard library, whose error says where (the vector check only says whether).
#[inline]
pub fn utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(_) => std::str::from_utf8(bytes),
    }
}

/// Whether `a` and `b` hold the same bytes.
#[inline(always)]
pub fn same(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// Whether `a` and `b` are equal.
#[inline(always)]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=7 => {
            let word = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"));
            (word(a, 0) ^ word(b, 0)) | (word(a, n - 4) ^ word(b, n - 4)) == 0
        }
        8..=16 => {
            let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
            (word(a, 0) ^ word(b, 0)) | (word(a, n - 8) ^ word(b, n - 8)) == 0
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::{same, utf8};

    proptest::proptest! {
        /// The vector check takes and refuses what the standard library does, with its error,
        /// on bytes of every kind: ASCII, multi-byte characters, and cut or stray bytes.
        #[test]
        fn utf8_agrees_with_the_standard_library(parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just(b"{\"seq\":1}".to_vec()),
                proptest::strategy::Just("é€😀".as_bytes().to_vec()),
                proptest::collection::vec(proptest::num::u8::ANY, 0..4),
            ],
            0..24,
        )) {
            let bytes = parts.concat();
            let ours = utf8(&bytes).map_err(|e| e.to_string());
            let std = std::str::from_utf8(&bytes).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(ours, std);
        }
    }

    #[test]
    fn agrees_with_string_equality_for_every_length_and_position() {
        let base: String = (0..40u8).map(|i| (b'a' + i % 26) as char).collect();
        for n in 0..=40 {
            let a = &base[..n];
            assert!(same(a, a));
            assert!(!same(a, &base[..n.saturating_sub(1)]) || n == 0);
            for at in 0..n {
                let mut other = a.as_bytes().to_vec();
                other[at] = b'Z';
                let other = String::from_utf8(other).unwrap();
                assert!(!same(a, &other), "length {n}, byte {at}");
            }
        }
    }
}
