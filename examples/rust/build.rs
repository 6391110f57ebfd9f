//! The rpath for this binary (link arguments do not propagate from olm-sys).
include!("../../bindings/rust/olm-sys/find_olm.rs");

fn main() {
    set_olm_rpath();
}
