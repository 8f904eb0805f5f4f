//! Values written for people: how long ago something happened, how long something lasts.

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

/// A duration of `ms` milliseconds in the manifest's own units, largest first: `10m`, `1h30m`,
/// `45s`, `1m500ms`, `0s`.
pub(crate) fn duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    let units = [(3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")];
    let mut rest = ms;
    let mut out = String::new();
    for (size, unit) in units {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_the_manifest_writes_them() {
        for (ms, text) in [
            (0, "0s"),
            (500, "500ms"),
            (45_000, "45s"),
            (600_000, "10m"),
            (5_400_000, "1h30m"),
            (60_500, "1m500ms"),
        ] {
            assert_eq!(super::duration(ms), text);
        }
    }
}
