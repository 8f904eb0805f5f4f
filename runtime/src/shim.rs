//! The language shims, shipped inside the binary, and the command line that starts an instance
//! of each runtime.
//!
//! A shim reaches its interpreter through the environment (`EDGEFN_SHIM`), run by a one-line
//! bootstrap (`python3 -B -c …`, `node -e …`) that takes it out of the environment first: nothing
//! is written to disk, it works unchanged in a read-only container, and `ps` shows a short
//! command line that names the function, not kilobytes of shim source.

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

/// The variable that carries a shim's source to its bootstrap.
pub(crate) const SHIM_VAR: &str = "EDGEFN_SHIM";

/// Runs the python shim from [`SHIM_VAR`], removed from the environment first (the handler and
/// its children do not see it); tracebacks name the shim `edgefn-shim.py`.
const PYTHON_BOOT: &str =
    "import os; exec(compile(os.environ.pop('EDGEFN_SHIM'), 'edgefn-shim.py', 'exec'))";
/// The same for node.
const NODE_BOOT: &str =
    "const s = process.env.EDGEFN_SHIM; delete process.env.EDGEFN_SHIM; eval(s)";

/// How an instance starts: its program, arguments and the environment it adds.
pub(crate) type CommandLine = (PathBuf, Vec<String>, Vec<(String, String)>);

/// The program, arguments and extra environment that start one instance; `bundle` is where the
/// bundle is seen (its real folder for a process, `/fn` in a container). The last argument of a
/// shim's command line is the function's name, so that `ps` names it.
pub(crate) fn command_line(
    spec: &FunctionSpec,
    interpreters: &Interpreters,
    bundle: &Path,
) -> Result<CommandLine, String> {
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
                PYTHON_BOOT.into(),
                entry()?,
                mode.into(),
                spec.binding.function.clone(),
            ],
            vec![(SHIM_VAR.into(), PYTHON_SHIM.into())],
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
                    NODE_BOOT.into(),
                    "--".into(),
                    entry()?,
                    mode.into(),
                    spec.binding.function.clone(),
                ],
                vec![(SHIM_VAR.into(), NODE_SHIM.into())],
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
            Ok((program, args.to_vec(), Vec::new()))
        }
    }
}
