//! Links libolm and sets the rpath so test binaries run without LD_LIBRARY_PATH.
include!("find_olm.rs");

fn main() {
    let lib_dir = olm_lib_dir();
    println!("cargo:rustc-link-search=native={lib_dir}");
    println!("cargo:rustc-link-lib=dylib=olm");
    set_olm_rpath();
}
