//! Links libolm for olm-sys and for every crate that depends on it.
//!
//! Cargo passes `rustc-link-search`/`rustc-link-lib` on to dependents, but not link arguments
//! such as an rpath. It does put build-script search paths that lie inside `target/` on the
//! loader path of `cargo run` and `cargo test`, so libolm is linked from symlinks in OUT_DIR:
//! a binary crate that depends on `olm` then runs under Cargo with no build script of its own.
//! (libolm finds its private LibTorch libraries through `$ORIGIN/libolm0/...`, linked here too.)
//! A binary run without Cargo finds libolm on the system path (the Debian packages), through
//! an rpath of its own (`.cargo/config.toml`, see the README), or with `LD_LIBRARY_PATH`.
//! `cargo:libdir` gives direct dependents' build scripts `DEP_OLM_LIBDIR`.
include!("find_olm.rs");

use std::path::Path;

fn link_dir(lib_dir: &str) -> std::path::PathBuf {
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("libolm");
    std::fs::create_dir_all(&out).expect("cannot create OUT_DIR/libolm");
    let entries = std::fs::read_dir(lib_dir)
        .unwrap_or_else(|e| panic!("cannot read libolm's directory {lib_dir}: {e}"));
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // libolm.so, libolm.so.0, libolm.so.0.1.0 and the private directory libolm0/.
        let private_dir = name.starts_with("libolm") && name[6..].chars().all(|c| c.is_ascii_digit())
            && name.len() > 6;
        if name.starts_with("libolm.so") || private_dir {
            let link = out.join(&*name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(entry.path(), &link)
                .unwrap_or_else(|e| panic!("cannot link {}: {e}", link.display()));
        }
    }
    out
}

fn main() {
    let lib_dir = olm_lib_dir();
    let links = link_dir(&lib_dir);
    println!("cargo:rustc-link-search=native={}", links.display());
    println!("cargo:rustc-link-lib=dylib=olm");
    println!("cargo:libdir={lib_dir}");
    set_olm_rpath();
}
