//! Compiles ffi/tests/abi_test.c with the system C compiler against ffi/include/tbq.h and the
//! libtbq.a cargo built for this test run, then runs it over the golden vectors.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The staticlib cargo built beside this test binary (`target/<profile>/deps/libtbq-<hash>.a`),
/// the newest if several.
fn staticlib() -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::read_dir(&deps)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("libtbq-") && name.ends_with(".a")
        })
        .max_by_key(|p| p.metadata().unwrap().modified().unwrap())
        .unwrap_or_else(|| panic!("no libtbq-*.a in {}", deps.display()))
}

#[test]
fn c_program_passes_against_header_and_staticlib() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::temp_dir().join(format!("tbq-abi-test-{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(root.join("ffi/include"))
        .arg(root.join("ffi/tests/abi_test.c"))
        .arg(staticlib())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(status.success(), "compiling abi_test.c failed");
    let out = Command::new(&exe)
        .arg(root.join("tests/data/golden"))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&exe);
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "abi_test failed: {stdout}");
    assert!(stdout.contains(" passed, 0 failed"));
}
