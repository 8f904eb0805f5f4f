//! Which desired states this device accepts, when its configuration lists `trustedKeys`: only
//! one signed by one of those keys for this device, the revision served and the state's digest
//! (see `edgefn_schema::signing`), and not older than the newest revision it accepted. The
//! check runs before anything is downloaded; a refused state leaves the running release alone.

use edgefn_schema::api::DesiredResponse;
use edgefn_schema::signing::{PublicKey, statement};

/// The keys this device trusts, and its name (signed into every statement).
#[derive(Debug, Clone, Default)]
pub(crate) struct Trust {
    /// The device's name.
    pub(crate) device: String,
    /// The trusted keys; empty: every desired state is accepted, signed or not.
    pub(crate) keys: Vec<PublicKey>,
}

impl Trust {
    /// Whether states are checked at all.
    pub(crate) fn checks(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Why `desired` is refused, or `None` when it is accepted. `accepted` is the newest
    /// revision this device accepted so far.
    ///
    /// The digest checked is recomputed from the state received, not taken from the answer's
    /// `digest` field: a changed byte of the state itself is caught.
    pub(crate) fn refusal(
        &self,
        desired: &DesiredResponse,
        accepted: Option<u64>,
    ) -> Option<String> {
        if !self.checks() {
            return None;
        }
        let revision = desired.revision;
        let Some(sig) = &desired.signature else {
            return Some(format!(
                "refused revision {revision}: its desired state is not signed, and this agent trusts only signed ones (trustedKeys); apply it with `edgefn apply --sign-key FILE`"
            ));
        };
        let key = match sig.key.parse::<PublicKey>() {
            Ok(k) if self.keys.contains(&k) => k,
            Ok(k) => {
                return Some(format!(
                    "refused revision {revision}: it is signed by {k}, which is not in this agent's trustedKeys; sign with a trusted key, or add its public key to trustedKeys"
                ));
            }
            Err(e) => return Some(format!("refused revision {revision}: its signing key: {e}")),
        };
        if desired.state.device != self.device {
            return Some(format!(
                "refused revision {revision}: the desired state served is device `{}`'s, not this device's (`{}`)",
                desired.state.device, self.device
            ));
        }
        let digest = desired.state.digest();
        let message = statement(&desired.state.project, &self.device, revision, &digest);
        if !key.verifies(&message, &sig.signature) {
            return Some(format!(
                "refused revision {revision}: its signature does not match this device, this revision and the desired state received (digest {}): the state was changed after it was signed, or the signature is another device's or revision's",
                &digest[..12]
            ));
        }
        if let Some(newest) = accepted.filter(|n| revision < *n) {
            return Some(format!(
                "refused revision {revision}: it is older than revision {newest}, which this device already accepted (a replayed state); apply a new signed revision"
            ));
        }
        None
    }
}
