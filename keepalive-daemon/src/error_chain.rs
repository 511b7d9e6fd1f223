//! An error followed by its causes, `error: cause: cause`, the form anyhow's `{:#}`
//! prints: library errors are thiserror enums, and where a library module logs one or
//! keeps it as text, the operator reads the same line as when it was an anyhow chain.
//! Hand-written (a few lines): anyhow formats chains only of its own `anyhow::Error`,
//! which library modules do not return, and no error crate in the tree offers it for
//! `dyn Error`.

use std::{error::Error, fmt};

/// Displays `0` then, for each `source()`, `": "` and the source.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn prints_every_cause_like_anyhow_alternate() {
        let e = Outer {
            source: std::io::Error::other("inner"),
        };
        assert_eq!(Chain(&e).to_string(), "outer: inner");
        assert_eq!(
            Chain(&e).to_string(),
            format!("{:#}", anyhow::Error::from(e))
        );
    }
}
