//! `aem doctor`: reports instead of panicking when the driver or NVRTC is missing, lists the
//! embedded images, and, with the NVRTC wheel on the library path (`.ci/install_nvrtc.sh`),
//! compiles every module's embedded source at run time — the fallback a build without cubins
//! depends on, exercised here without a GPU.

use std::path::PathBuf;
use std::process::Command;

fn doctor(
    ld_library_path: Option<&PathBuf>,
    json: &std::path::Path,
) -> (String, serde_json::Value) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aem"));
    c.arg("doctor").arg("--json").arg(json);
    // Only the library path under test: nothing inherited can supply libnvrtc.
    c.env_remove("LD_LIBRARY_PATH")
        .env_remove("AEM_CUDA_INCLUDE")
        .env_remove("CUDA_HOME")
        .env_remove("CUDA_PATH");
    if let Some(p) = ld_library_path {
        c.env("LD_LIBRARY_PATH", p);
    }
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "aem doctor failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    (stdout, v)
}

fn wheel_lib() -> Option<PathBuf> {
    let site = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let py = std::fs::read_dir(&site).ok()?.flatten().next()?.path();
    let lib = py.join("site-packages/nvidia/cu13/lib");
    lib.join("libnvrtc.so.13").exists().then_some(lib)
}

#[test]
fn doctor_reports_every_module_and_why_nothing_loads_without_a_driver() {
    let dir = tempfile::tempdir().unwrap();
    let (text, v) = doctor(None, &dir.path().join("d.json"));
    let modules = v["modules"].as_array().unwrap();
    let names: Vec<_> = modules
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        aem::device::modules::MODULES
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
    );
    for m in modules {
        assert!(
            m["source_bytes"].as_u64().unwrap() > 0,
            "{m}: the source is always embedded"
        );
    }
    if v["device"].as_str().unwrap().contains("no CUDA device") {
        assert!(v["limits"].is_null());
        assert!(text.contains("device   no CUDA device"), "{text}");
    }
    // Without libnvrtc on the path (and none installed system-wide here) the runtime compile
    // is reported unavailable with what to set — not a panic.
    if v["nvrtc"].as_str().unwrap().starts_with("unavailable") {
        assert!(
            v["nvrtc"].as_str().unwrap().contains("LD_LIBRARY_PATH"),
            "{}",
            v["nvrtc"]
        );
        assert!(modules.iter().all(|m| m["nvrtc_compile"].is_null()));
    }
}

#[test]
fn doctor_compiles_every_embedded_source_with_the_nvrtc_wheel() {
    let Some(lib) = wheel_lib() else {
        if std::env::var("AEM_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
            panic!("AEM_REQUIRE_NVRTC=1 but no NVRTC wheel in .venv");
        }
        eprintln!("cli_doctor: SKIPPED (no NVRTC wheel in .venv; run `bash .ci/install_nvrtc.sh`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (text, v) = doctor(Some(&lib), &dir.path().join("d.json"));
    let nv = v["nvrtc"].as_str().unwrap();
    assert!(nv.starts_with("NVRTC 13."), "{nv}");
    // The headers were found from the library's location alone (the wheel's layout).
    assert!(nv.contains("nvidia/cu13/include"), "{nv}");
    for m in v["modules"].as_array().unwrap() {
        let c = m["nvrtc_compile"].as_str().unwrap_or("missing");
        assert!(c.starts_with("ok"), "{}: {c}\n{text}", m["name"]);
    }
}
