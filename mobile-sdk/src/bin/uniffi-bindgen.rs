//! The UniFFI bindings generator, built from this crate so its version always matches the
//! `uniffi` the library was built with. Used by `scripts/bindings.sh`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
