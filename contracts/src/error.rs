//! Errors that point at the place in a document that is wrong.

use std::fmt;

/// One problem in a document: where (file, line, JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// File the document came from (or a label such as `<stdin>`).
    pub file: String,
    /// 1-based line in the source text, when it could be located.
    pub line: Option<usize>,
    /// JSON pointer inside the document (`/window/size`), empty for the root.
    pub pointer: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        let pointer = if self.pointer.is_empty() { "/" } else { &self.pointer };
        write!(f, ": at {pointer}: {}", self.message)
    }
}

/// A document that could not be read or does not satisfy its contract.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// The file could not be read. The cause is in the message and deliberately not a
    /// `source`: error chains printed whole (`{:#}`) said it twice.
    #[error("{file}: cannot read: {cause}")]
    Io {
        /// The file.
        file: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// One or more problems inside the document.
    #[error("{}", render(.0))]
    Invalid(Vec<Issue>),
}

fn render(issues: &[Issue]) -> String {
    let lines: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    lines.join("\n")
}

impl ContractError {
    /// The issues of an invalid document (empty for I/O errors).
    pub fn issues(&self) -> &[Issue] {
        match self {
            ContractError::Invalid(issues) => issues,
            ContractError::Io { .. } => &[],
        }
    }
}
