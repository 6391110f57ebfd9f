// Shared by the build scripts of olm-sys, olm and the example (include!d): where libolm is.
// OLM_LIB_DIR wins; otherwise pkg-config (olm.pc, or olm-uninstalled.pc in a build tree).
fn olm_lib_dir() -> String {
    println!("cargo:rerun-if-env-changed=OLM_LIB_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    if let Ok(dir) = std::env::var("OLM_LIB_DIR") {
        if !dir.is_empty() {
            return dir;
        }
    }
    let output = std::process::Command::new("pkg-config")
        .args(["--variable=libdir", "olm"])
        .output()
        .expect("cannot run pkg-config; set OLM_LIB_DIR to the directory holding libolm.so");
    if !output.status.success() {
        panic!(
            "pkg-config cannot find olm ({}); set PKG_CONFIG_PATH or OLM_LIB_DIR",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).expect("pkg-config output is not UTF-8").trim().to_string()
}

// Link arguments only reach the package's own targets, so every package with binaries or
// tests that load libolm sets the rpath itself.
fn set_olm_rpath() {
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", olm_lib_dir());
}
