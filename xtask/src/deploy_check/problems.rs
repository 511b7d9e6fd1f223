//! The problems a check finds, collected so that one run reports all of them.

use anyhow::bail;

/// Problems found by a check, reported together.
#[derive(Default)]
pub(super) struct Problems(Vec<String>);

impl Problems {
    /// Records the problem `what` describes unless `ok`.
    pub(super) fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    /// Fails with every problem recorded, one per line, if there are any.
    pub(super) fn finish(self) -> anyhow::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            bail!("\n  {}", self.0.join("\n  "))
        }
    }
}
