//! A function's output as shown to the user, by `edgefn dev`, `edgefn test` and `edgefn invoke`:
//! the language shim's own traceback frames left out, and paths inside an installed bundle
//! written as the project's.

/// `text` with the paths of a function's installed bundle (`…/bundles/<sha256>/x.js`, or
/// `/fn/x.js` in a container) written as the project's (`functions/greeter/x.js`), so that an
/// error points at the file the user edits.
pub(crate) fn project_paths(text: &str, function_path: Option<&str>) -> String {
    let Some(dir) = function_path else {
        return text.to_owned();
    };
    let dir = dir.trim_end_matches('/');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("/bundles/") {
        let after = &rest[at + "/bundles/".len()..];
        let digest_ok = after.len() > 64
            && after.as_bytes()[..64].iter().all(u8::is_ascii_hexdigit)
            && after.as_bytes()[64] == b'/';
        if !digest_ok {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
            continue;
        }
        // The path starts after the last space, quote or bracket before `/bundles/`.
        let start = rest[..at]
            .rfind(|c: char| c.is_whitespace() || "\"'(<[".contains(c))
            .map_or(0, |i| i + 1);
        out.push_str(&rest[..start]);
        out.push_str(dir);
        out.push('/');
        rest = &after[65..];
    }
    out.push_str(rest);
    out.replace(" /fn/", &format!(" {dir}/"))
        .replace("\"/fn/", &format!("\"{dir}/"))
        .replace("(/fn/", &format!("({dir}/"))
}

/// Whether a traceback line is a frame of the language shim or of node's own internals (not the
/// user's code): python's shim is compiled as `edgefn-shim.py`, node's runs in `[eval]`.
pub(crate) fn is_shim_frame(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("File \"edgefn-shim.py\"")
        || (l.starts_with("at ") && (l.contains("[eval]") || l.contains("(node:")))
}

#[cfg(test)]
mod tests {
    use super::{is_shim_frame, project_paths};

    #[test]
    fn shim_frames_are_recognised() {
        assert!(is_shim_frame(
            "  File \"edgefn-shim.py\", line 120, in _serve"
        ));
        assert!(is_shim_frame(
            "    at serve (eval at <anonymous> ([eval]:1:91), <anonymous>:150:20)"
        ));
        assert!(!is_shim_frame("  File \"/fn/main.py\", line 4, in handle"));
        assert!(is_shim_frame("    at Socket.emit (node:events:524:28)"));
        assert!(!is_shim_frame(
            "    at exports.handler (functions/greeter/index.js:2:31)"
        ));
    }

    #[test]
    fn bundle_paths_become_the_projects() {
        let d = "a".repeat(64);
        let line = format!(
            "TypeError: x is not a function\n    at exports.handler (/tmp/p/.edgefn/dev/agents/gw-01/bundles/{d}/index.js:11:3)"
        );
        assert_eq!(
            project_paths(&line, Some("functions/greeter")),
            "TypeError: x is not a function\n    at exports.handler (functions/greeter/index.js:11:3)"
        );
        assert_eq!(
            project_paths("File \"/fn/main.py\", line 4", Some("functions/f")),
            "File \"functions/f/main.py\", line 4"
        );
        assert_eq!(
            project_paths("/bundles/short/x", Some("f")),
            "/bundles/short/x"
        );
        assert_eq!(project_paths("nothing", None), "nothing");
    }
}
