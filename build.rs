//! Link settings of the C shared library (the cdylib built with the `ffi` feature):
//! its SONAME `libquantshift_core.so.MAJOR`, and a linker version script that exports only
//! `quantshift_*` symbols, so Rust's and its dependencies' symbols never clash with the
//! host's (rustc already hides most; the script makes it the library's own rule).
//!
//! Neither applies to the Python extension module (`--features python`, built by maturin
//! as a cdylib too): it must export `PyInit_*` and is loaded by path, not by SONAME.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let python = env::var_os("CARGO_FEATURE_PYTHON").is_some();
    let ffi = env::var_os("CARGO_FEATURE_FFI").is_some();
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if python || !ffi || !linux {
        return;
    }
    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libquantshift_core.so.{major}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = out_dir.join("quantshift_core.map");
    fs::write(&script, "{\n  global: quantshift_*;\n  local: *;\n};\n")
        .expect("write the linker version script");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        script.display()
    );
}
