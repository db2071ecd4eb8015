//! `run_cli`: the operator tool `quantshift-state` (src/cli/) inside the extension module, so
//! the Python package's console script and `python -m quantshift_core` run the same code as
//! the Rust binary, with no separate executable to install.

use std::ffi::OsString;

use pyo3::prelude::*;

/// Runs `quantshift-state` with `args` (`args[0]` is the program name) and returns its exit
/// code. Output goes straight to the process's stdout and stderr (file descriptors 1 and 2).
///
/// The GIL is released meanwhile and signals are not blocked (unlike the other calls, see
/// `detach.rs`): the caller decides what SIGINT does (`__main__.py` restores the default, as
/// in the native binary), and `watch` installs its own handler to end cleanly on Ctrl-C.
#[pyfunction]
pub fn run_cli(py: Python<'_>, args: Vec<OsString>) -> i32 {
    py.detach(|| crate::cli::main_with_args(args))
}
