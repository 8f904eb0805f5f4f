//! The container sandbox's helper process: the runtime starts this program (or any binary that
//! calls [`edgefn_runtime::sandbox_helper_main_if_requested`] first thing in `main`) to create a
//! container from a single-threaded process, outside the tokio runtime.

fn main() {
    edgefn_runtime::sandbox_helper_main_if_requested();
    std::process::exit(2);
}
