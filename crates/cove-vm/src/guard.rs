//! Puts `cove_net::guard` (no link-local addresses, so no cloud metadata, for any process
//! running as a VMM identity) in place while the VMM starts, and waits for it before the guest
//! runs. Only under root, where QEMU and passt drop to those identities; a host where it
//! cannot be applied (no `nft`, no CAP_NET_ADMIN) still runs VMs, with a warning in the
//! supervisor's log, and `cove doctor` says the protection is missing.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Child;

/// How long `nft` may take (it takes ~20 ms).
const TIMEOUT: Duration = Duration::from_secs(10);

/// `nft` applying the table.
pub struct Pending(Child);

/// Starts applying the table; `None` when `nft` cannot be started (said in the log).
pub async fn start() -> Option<Pending> {
    let mut cmd = tokio::process::Command::from(cove_net::guard::apply_command());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot run nft ({e}): guests may reach link-local addresses");
            return None;
        }
    };
    let text = cove_net::guard::ruleset(cove_backend::RunAs::all());
    if let Some(mut stdin) = child.stdin.take()
        && let Err(e) = stdin.write_all(text.as_bytes()).await
    {
        tracing::warn!("cannot hand nft its rules ({e}): guests may reach link-local addresses");
    }
    Some(Pending(child))
}

impl Pending {
    /// Waits until the table is in place (or says in the log why it is not).
    pub async fn applied(self) {
        match tokio::time::timeout(TIMEOUT, self.0.wait_with_output()).await {
            Ok(Ok(out)) if out.status.success() => tracing::debug!("link-local guard in place"),
            Ok(Ok(out)) => tracing::warn!(
                "nft refused the link-local guard ({}): guests may reach link-local addresses",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Ok(Err(e)) => tracing::warn!("nft failed ({e}): guests may reach link-local addresses"),
            Err(_) => tracing::warn!(
                "nft did not finish within {TIMEOUT:?}: guests may reach link-local addresses"
            ),
        }
    }
}
