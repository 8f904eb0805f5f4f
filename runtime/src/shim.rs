//! The language shims, shipped inside the binary, and the command line that starts an instance
//! of each runtime.
//!
//! The shims are passed to the interpreter on its command line (`python3 -B -c`, `node -e`), so
//! nothing is written to disk and they work unchanged in a read-only container.

use std::path::{Path, PathBuf};

use edgefn_schema::{Mode, Runtime};

use crate::function::FunctionSpec;

/// The python3 shim (`runtime/shim/python.py`).
pub const PYTHON_SHIM: &str = include_str!("../shim/python.py");
/// The node shim (`runtime/shim/node.js`).
pub const NODE_SHIM: &str = include_str!("../shim/node.js");

/// Interpreters used for the `python3` and `node` runtimes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreters {
    /// Python 3 (default `/usr/bin/python3`; a container sees only `/usr`, `/etc` and the bundle).
    pub python3: PathBuf,
    /// Node.js (default `/usr/bin/node`).
    pub node: PathBuf,
}

impl Default for Interpreters {
    fn default() -> Self {
        Interpreters {
            python3: PathBuf::from("/usr/bin/python3"),
            node: PathBuf::from("/usr/bin/node"),
        }
    }
}

/// The program and arguments that start one instance; `bundle` is where the bundle is seen
/// (its real folder for a process, `/fn` in a container).
pub(crate) fn command_line(
    spec: &FunctionSpec,
    interpreters: &Interpreters,
    bundle: &Path,
) -> Result<(PathBuf, Vec<String>), String> {
    let mode = match spec.binding.mode {
        Mode::Triggered => "triggered",
        Mode::Continuous => "continuous",
    };
    let entry = || match spec.handler.argv().as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "the {} handler must be a single entry point, not an argv list",
            spec.runtime
        )),
    };
    match spec.runtime {
        Runtime::Python3 => Ok((
            interpreters.python3.clone(),
            vec![
                "-B".into(),
                "-c".into(),
                PYTHON_SHIM.into(),
                entry()?,
                mode.into(),
            ],
        )),
        Runtime::Node => {
            // The V8 heap limit is the effective memory limit of a node instance: three quarters
            // of the memory limit leaves room for code, buffers and the runtime itself.
            let heap_mib = ((spec.binding.memory_bytes / 4 * 3) >> 20).max(16);
            Ok((
                interpreters.node.clone(),
                vec![
                    format!("--max-old-space-size={heap_mib}"),
                    "-e".into(),
                    NODE_SHIM.into(),
                    "--".into(),
                    entry()?,
                    mode.into(),
                ],
            ))
        }
        Runtime::Exec => {
            let argv = spec.handler.argv();
            let Some((program, args)) = argv.split_first() else {
                return Err("the exec handler is empty".into());
            };
            let program = Path::new(program);
            let program = if program.is_relative() && program.components().count() > 1 {
                bundle.join(program)
            } else {
                program.to_path_buf()
            };
            Ok((program, args.to_vec()))
        }
    }
}
