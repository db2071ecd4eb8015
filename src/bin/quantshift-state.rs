//! `quantshift-state`, the operator tool; its code is the library's `cli` module, shared with
//! the Python entry point (`python -m quantshift_core`, the `quantshift-state` console script).

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = quantshift_core::cli::main_with_args(std::env::args_os().collect());
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
