//! Values written for people: how long ago something happened.

/// How long ago `ms` (milliseconds since the epoch) was, in the largest whole unit: `42s ago`.
pub(crate) fn ago(ms: u64) -> String {
    let now = edgefn_os::time::now_ms();
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}
