//! Retry backoff, in one place: how long the long-poll and the MQTT link wait after a failure
//! (the schedule itself is `edgefn_os::backoff::Backoff`: exponential, capped, with jitter).

use std::time::Duration;

use edgefn_os::backoff::Backoff;

/// The long-poll of the desired state, and downloads: 1 s doubling to 60 s. A whole fleet
/// shares the control plane, so it backs off further than the link.
pub(crate) const POLL: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// The MQTT link: brokers come back quickly, so at most ~8 s between attempts.
pub(crate) const LINK: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
