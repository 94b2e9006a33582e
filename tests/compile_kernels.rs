//! The NVRTC compile check: every shipped kernel compiles for sm_80 and sm_90 with no warning,
//! zero spill bytes and registers within the budget below (NVRTC 13.0.x from PyPI, installed by
//! `.ci/install_nvrtc.sh`; no GPU needed). Without NVRTC the test prints why it skips; with
//! `AEM_REQUIRE_NVRTC=1` (CI) a skip is a failure.

use std::path::PathBuf;
use std::process::Command;

/// Register budget per kernel (sm_80 and sm_90). Block-per-row kernels are launched with up
/// to 1024 threads, which caps them at 64 registers; the budgets below leave no headroom for a
/// change that would halve occupancy unnoticed.
const BUDGETS: &[(&str, u64)] = &[
    ("token_stats_f16_v1", 32),
    ("token_stats_bf16_v1", 32),
    ("token_stats_f16_v2", 32),
    ("token_stats_bf16_v2", 32),
    ("token_stats_f16_v3", 32),
    ("token_stats_bf16_v3", 32),
    ("resp_stats_v1", 32),
    ("aem_alpha_v1", 32),
    ("loss_head_fwd_f16_v1", 32),
    ("loss_head_fwd_bf16_v1", 32),
    ("policy_grad_f16_f16_v1", 32),
    ("policy_grad_f16_bf16_v1", 32),
    ("policy_grad_f16_f32_v1", 32),
    ("policy_grad_bf16_f16_v1", 32),
    ("policy_grad_bf16_bf16_v1", 32),
    ("policy_grad_bf16_f32_v1", 32),
    ("loss_head_fused_f16_f16_v1", 64),
    ("loss_head_fused_f16_bf16_v1", 64),
    ("loss_head_fused_f16_f32_v1", 64),
    ("loss_head_fused_bf16_f16_v1", 64),
    ("loss_head_fused_bf16_bf16_v1", 64),
    ("loss_head_fused_bf16_f32_v1", 64),
    ("loss_reduce_v1", 32),
    // kernels/gpt.cu (thread-per-item; the attention kernels keep a query's loops in registers)
    ("encoder_fwd_v1", 32),
    ("encoder_bwd_wte_v1", 32),
    ("encoder_bwd_wpe_v1", 32),
    ("layernorm_fwd_v1", 32),
    ("layernorm_bwd_v1", 32),
    ("layernorm_bwd_params_v1", 32),
    ("bias_add_cast_v1", 32),
    ("bias_grad_v1", 32),
    ("gelu_fwd_v1", 32),
    ("gelu_bwd_v1", 32),
    ("residual_fwd_v1", 32),
    ("cast_f16_f32_v1", 32),
    ("cast_f32_f16_v1", 32),
    ("fill_f32_v1", 32),
    ("mask_logits_v1", 32),
    ("attention_fwd_v1", 64),
    ("attention_bwd_q_v1", 64),
    ("attention_bwd_kv_v1", 64),
    ("kv_append_v1", 32),
    ("attention_decode_v1", 48),
    ("adamw_v1", 32),
    ("sumsq_v1", 32),
];

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("AEM_NVRTC_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    venv.exists().then_some(venv)
}

fn skip(why: &str) {
    if std::env::var("AEM_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
        panic!("AEM_REQUIRE_NVRTC=1 but {why}");
    }
    eprintln!("compile_kernels: SKIPPED ({why}); run `bash .ci/install_nvrtc.sh` to enable");
}

#[test]
fn kernels_compile_clean_for_sm80_and_sm90() {
    let Some(py) = python() else {
        return skip("no NVRTC python environment (.venv)");
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(root.join("kernels"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    let out = Command::new(&py)
        .arg(root.join("tools/nvrtc_compile.py"))
        .args(["--arch", "sm_80", "--arch", "sm_90", "--out"])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .args(&sources)
        .current_dir(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    match out.status.code() {
        Some(0) => {}
        Some(2) => return skip(&format!("NVRTC not loadable: {}", stderr.trim())),
        c => panic!(
            "NVRTC compile check failed ({c:?}): warnings, spills or errors\n{stdout}\n{stderr}"
        ),
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["ok"], true);
    let mut seen = 0;
    for m in aem::device::modules::MODULES {
        for arch in ["sm_80", "sm_90"] {
            let a = &report["files"][m.name]["archs"][arch];
            for log in ["cubin_log", "ptx_log"] {
                let text = a[log].as_str().unwrap_or("").to_lowercase();
                assert!(
                    !text.contains("warning"),
                    "{}/{arch}: warning in {log}:\n{text}",
                    m.name
                );
            }
            for k in m.kernels {
                let info = &a["kernels"][*k];
                assert!(info.is_object(), "{k} missing from the {arch} report");
                let regs = info["registers"].as_u64().unwrap();
                let budget = BUDGETS
                    .iter()
                    .find(|(n, _)| n == k)
                    .unwrap_or_else(|| panic!("{k}: add a register budget to BUDGETS"))
                    .1;
                assert!(
                    regs <= budget,
                    "{k} on {arch}: {regs} registers > budget {budget}"
                );
                assert_eq!(info["spill_stores_bytes"], 0, "{k} on {arch} spills");
                assert_eq!(info["spill_loads_bytes"], 0, "{k} on {arch} spills");
                assert_eq!(
                    info["stack_frame_bytes"], 0,
                    "{k} on {arch} uses a stack frame"
                );
                // The emulator takes its launch decisions from this table (device::limits).
                let smem = info["smem_bytes"].as_u64().unwrap();
                let table = aem::device::limits::static_smem(k).unwrap();
                assert_eq!(
                    smem,
                    u64::from(table),
                    "{k} on {arch}: ptxas reports {smem} B of static shared memory, \
                     device::limits::STATIC_SMEM says {table}"
                );
                seen += 1;
            }
        }
    }
    assert_eq!(
        seen,
        2 * BUDGETS.len(),
        "every budgeted kernel must be shipped"
    );
}
