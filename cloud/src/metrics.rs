//! Counters for `/metrics`, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Responses by status class (index 1..=5 for 1xx..5xx).
    pub(crate) responses: [AtomicU64; 6],
    /// Long-polls waiting now.
    pub(crate) longpolls_waiting: AtomicU64,
    /// Desired-state responses with a body (changes delivered).
    pub(crate) desired_served: AtomicU64,
    /// Bundle bytes received.
    pub(crate) bundle_bytes_in: AtomicU64,
    /// Bundle bytes served.
    pub(crate) bundle_bytes_out: AtomicU64,
    /// Status reports received.
    pub(crate) status_reports: AtomicU64,
}

impl Metrics {
    /// Counts a response with `status`.
    pub(crate) fn response(&self, status: u16) {
        let class = usize::from(status / 100).min(5);
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the counters and the given gauges.
    pub(crate) fn render(
        &self,
        revision: u64,
        devices_registered: usize,
        devices_converged: usize,
    ) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP edgefn_http_responses_total HTTP responses by status class."
        );
        let _ = writeln!(out, "# TYPE edgefn_http_responses_total counter");
        for (i, c) in self.responses.iter().enumerate().skip(1) {
            let _ = writeln!(
                out,
                "edgefn_http_responses_total{{class=\"{i}xx\"}} {}",
                get(c)
            );
        }
        let gauges = [
            ("edgefn_revision", "The latest revision number.", revision),
            (
                "edgefn_devices_registered",
                "Registered devices.",
                devices_registered as u64,
            ),
            (
                "edgefn_devices_converged",
                "Devices whose last report matches their desired state.",
                devices_converged as u64,
            ),
            (
                "edgefn_longpolls_waiting",
                "Desired-state long-polls waiting now.",
                get(&self.longpolls_waiting),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let counters = [
            (
                "edgefn_desired_served_total",
                "Desired states sent to devices.",
                get(&self.desired_served),
            ),
            (
                "edgefn_bundle_bytes_received_total",
                "Bundle bytes uploaded.",
                get(&self.bundle_bytes_in),
            ),
            (
                "edgefn_bundle_bytes_served_total",
                "Bundle bytes downloaded.",
                get(&self.bundle_bytes_out),
            ),
            (
                "edgefn_status_reports_total",
                "Device status reports received.",
                get(&self.status_reports),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        out
    }
}
