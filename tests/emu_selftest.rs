//! The emulator's own test kernels (`kernels/test/`, not shipped): barriers, warp operations,
//! shared and dynamic shared memory, atomics, half conversions, errors instead of hangs (skipped
//! barriers, mixed warp operations, deadlock, trap), a missing barrier exposed by the reversed
//! fiber order — and, in the AddressSanitizer build, a planted out-of-bounds write reported.

use std::process::Command;

fn selftest(asan: bool) {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(format!("{root}/kernels/test/emu_selftest.sh"))
        .env("OUT_DIR", dir.path());
    if asan {
        cmd.env("ASAN", "1");
    }
    let out = cmd.output().expect("run bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "emulator selftest failed (asan = {asan})"
    );
    assert!(text.contains("0 failed"), "selftest summary missing");
    if asan {
        assert!(
            text.contains("OK: ASan reported the out-of-bounds write"),
            "ASan did not catch the planted OOB write"
        );
    }
}

#[test]
fn emulator_selftest() {
    selftest(false);
}

#[test]
fn emulator_selftest_under_address_sanitizer_catches_out_of_bounds() {
    selftest(true);
}
