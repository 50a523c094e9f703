//! Table and column names that go into SQL text (PostgreSQL, QuestDB).

use crate::error::{Error, Result};

/// Names are quoted where they appear in SQL, and must be plain identifiers all the same: a
/// name comes from a manifest or the command line, never from a request, and this keeps any
/// of them from changing a statement's meaning.
pub fn check_identifier(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if !ok {
        return Err(Error::Identifier(name.to_string()));
    }
    Ok(())
}
