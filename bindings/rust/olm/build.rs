//! The rpath for this crate's tests (link arguments do not propagate from olm-sys).
include!("../olm-sys/find_olm.rs");

fn main() {
    set_olm_rpath();
}
