//! Runs bindgen over ffi/include/tbq.h, so the tests compare what C sees with the Rust crate.

use std::path::PathBuf;

fn main() {
    let header = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../include/tbq.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .allowlist_item("tbq.*|TBQ.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .generate()
        .expect("bindgen could not parse ffi/include/tbq.h (is libclang-dev installed?)");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("tbq_h.rs");
    bindings.write_to_file(out).unwrap();
}
