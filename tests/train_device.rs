//! The trainer on the device path (`--backend emu|cuda`): the validity mask on the resident
//! logits, the device head with λ = 0 taking the host's α·A_base, the first update against the
//! CPU backend within an earned tolerance, a short run, resume bit for bit, and the backend
//! choice (`cuda` without a GPU is a one-line error; `auto` falls back to the CPU path).
//!
//! Tolerance rule for the model (as `tests/model_device.rs`, "earned"): with `ref` the CPU path
//! in f32 storage (`Gpt<f32>`, the exact mode) and `cpu16` the CPU backend (f16 storage), the
//! device path must satisfy `|dev − ref| ≤ 2·|cpu16 − ref| + ATOL`: its error may be at most twice
//! that of a plain implementation in the same precision.

mod common;
mod train_support;

use aem::cpu;
use aem::device::{Device, LaunchCfg};
use aem::env::{self, PromptConfig};
use aem::head::file::{GradDtype, GradOut};
use aem::head::launch::{self, Plan};
use aem::head::HeadInputs;
use aem::model::{load_checkpoint, AdamW, DeviceGpt, Gpt, GptConfig};
use aem::train::config::Backend;
use aem::train::metrics::read_jsonl;
use aem::train::policy::{open_backend, CpuLearner, DeviceBatch, DeviceLearner, Learner};
use aem::train::rollout::{self, Rollouts};
use aem::train::update::{self, alpha_of, masked_rows, pack, UpdateStats};
use aem::train::{train, RunOptions, TrainConfig};
use half::f16;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use train_support::strip;

/// Absolute slack of the rule. The device path differs from the f16 CPU path in the GEMMs' f32
/// summation order (k ≤ 4C = 64 products of O(1) values: |Δ| ≤ k·2⁻²⁴·Σ|terms| ≈ 4e-6 per
/// GEMM), the head's f32 (vs f64) accumulation over ≤ 1000 rows of ≤ 64 columns (≈ 1e-6
/// relative) and `α·A_base` rounded to f32 (2⁻²⁴ relative); loss and gradient norm are O(1),
/// so 1e-5 covers that with margin and is far below the f16 path's own error (printed).
const ATOL: f64 = 1e-5;

fn rule(what: &str, reference: f64, cpu16: f64, dev: f64) {
    let e16 = (cpu16 - reference).abs();
    let edev = (dev - reference).abs();
    eprintln!(
        "{what:>10}: ref {reference:.6e} cpu16 {cpu16:.6e} dev {dev:.6e} | |cpu16-ref| {e16:.2e} |dev-ref| {edev:.2e}"
    );
    assert!(
        edev <= 2.0 * e16 + ATOL,
        "{what}: device error {edev:e} > 2 x f16-path error {e16:e} + {ATOL:e}"
    );
}

/// The CPU backend's tiny config on `backend`.
fn tiny(backend: Backend) -> TrainConfig {
    let mut c = train_support::tiny("keyrooms-train", "keyrooms-hard");
    c.run.backend = backend;
    c
}

fn gpt_cfg() -> GptConfig {
    let level = env::level("keyrooms-train").unwrap();
    GptConfig {
        vocab: level.vocab().len(),
        context: 64,
        d_model: 16,
        layers: 1,
        heads: 2,
    }
}

/// Rollouts of a fresh f16 model (3 tasks × 4), and per-turn advantages `α·A_base` with α from
/// the sampling-time entropies (AEM on, λ = 1) and a synthetic, mixed-sign `A_base` (a random
/// policy rarely wins, which would leave GiGPO's advantages all zero).
fn batch(seed: u64) -> (Gpt<f16>, Rollouts, Vec<f64>, Vec<f64>) {
    let level = env::level("keyrooms-train").unwrap();
    let model = Gpt::<f16>::new(gpt_cfg(), seed).unwrap();
    let tasks: Vec<_> = (0..3)
        .map(|s| env::train_task(&level, s + 10 * seed).unwrap())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ro = rollout::collect(
        &model,
        &tasks,
        4,
        PromptConfig::default(),
        1.0,
        &mut rng,
        |_, _| {},
    )
    .unwrap();
    let al = alpha_of(&ro, &TrainConfig::default(), 1).unwrap();
    assert!(
        al.alpha.iter().any(|&a| (a - 1.0).abs() > 0.05),
        "α is trivial: {:?}",
        al.alpha
    );
    let base: Vec<f64> = (0..ro.turns.len())
        .map(|i| ((i * 37 % 11) as f64 - 5.0) / 5.0)
        .collect();
    let adv: Vec<f64> = base.iter().zip(&al.alpha).map(|(b, a)| b * a).collect();
    (model, ro, adv, al.alpha)
}

/// The kernel on hand-made rows: invalid → −65504, ±inf → ±65504, NaN and finite values kept,
/// bits past V ignored, V = 70 (three mask words per row).
#[test]
fn mask_logits_kernel_matches_its_contract() {
    let dev = Device::emu().unwrap();
    let (n, v, w) = (3usize, 70usize, 3usize);
    let specials = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        65504.0,
        -65504.0,
        1.5,
        -0.0,
        1e-7,
    ];
    let logits: Vec<f16> = (0..n * v)
        .map(|i| f16::from_f32(specials[i % specials.len()] * if i % 3 == 0 { 1.0 } else { 0.5 }))
        .collect();
    let mask: Vec<u32> = vec![
        u32::MAX,
        u32::MAX,
        u32::MAX, // row 0: all valid
        0x5555_5555,
        0x0000_0001,
        0,
        0,
        0xffff_0000,
        0b11_0001, // row 2: tokens 64, 68, 69 valid in the third word
    ];
    let buf = dev.htod(&logits).unwrap();
    let m = dev.htod(&mask).unwrap();
    aem::device::kernels::MaskLogitsV1 {
        mask: m.ptr(),
        n: n as i32,
        v: v as i32,
        w: w as i32,
        logits: buf.ptr(),
    }
    .launch(
        &dev,
        LaunchCfg {
            grid: (n * v).div_ceil(64) as u32,
            block: 64,
            smem: 0,
        },
    )
    .unwrap();
    let got = dev.dtoh(&buf).unwrap();
    for r in 0..n {
        for c in 0..v {
            let x = logits[r * v + c];
            let valid = mask[r * w + c / 32] >> (c % 32) & 1 == 1;
            let want = if !valid {
                f16::from_f32(-65504.0)
            } else if x.to_f32().is_infinite() {
                f16::from_f32(65504.0f32.copysign(x.to_f32()))
            } else {
                x
            };
            assert_eq!(got[r * v + c].to_bits(), want.to_bits(), "row {r} col {c}");
        }
    }
}

/// On the model's logits: the device's masked f16 head input equals the CPU trainer's
/// `masked_rows` bit for bit on owned rows, and is the plain f16 rounding elsewhere.
#[test]
fn device_mask_equals_the_cpu_trainers_masked_logits() {
    let dev = Device::emu().unwrap();
    let (model, ro, adv, _) = batch(1);
    let idx: Vec<usize> = (0..ro.turns.len()).collect();
    let p = pack(&ro, &idx, &adv).unwrap();
    let v = model.config().vocab;
    let mut dm = DeviceGpt::from_cpu(&dev, &model).unwrap();
    let logits = dm.forward(&p.tokens, p.b, p.t).unwrap();
    dm.mask_logits(&DeviceBatch::new(&p, v).unwrap().mask)
        .unwrap();
    let got = dm.head_logits().unwrap();
    let mut want = Vec::new();
    masked_rows(&logits, v, &p.rows, &p.masks, &mut want);
    let bits = |x: &[f16]| x.iter().map(|h| h.to_bits()).collect::<Vec<_>>();
    let mut owned = vec![false; p.b * p.t];
    for (k, &r) in p.rows.iter().enumerate() {
        owned[r] = true;
        assert_eq!(
            bits(&got[r * v..(r + 1) * v]),
            bits(&want[k * v..(k + 1) * v]),
            "owned row {r}"
        );
    }
    for (r, _) in owned.iter().enumerate().filter(|(_, o)| !**o) {
        let plain: Vec<f16> = logits[r * v..(r + 1) * v]
            .iter()
            .map(|&x| f16::from_f32(x))
            .collect();
        assert_eq!(bits(&got[r * v..(r + 1) * v]), bits(&plain), "row {r}");
    }
}

/// The contract between trainer and kernels: the head's policy-update plan with the given
/// `A = α·A_base` (`DeviceHead::update`: no α on the device, one fused launch) gives the loss,
/// log-probs and dlogits of the host pipeline (`policy_loss` with α·A_base in f64), within the
/// head's parity rule (`tests/common`: twice a plain f32 implementation's error plus 16 f32 ulps
/// of the scale) — and, bit for bit, what the full head gives with λ = 0 (α ≡ 1).
#[test]
fn device_update_plan_reproduces_the_host_alpha_pipeline() {
    let dev = Device::emu().unwrap();
    let (mut model, ro, adv, alpha) = batch(2);
    let idx: Vec<usize> = (0..ro.turns.len()).collect();
    let p = pack(&ro, &idx, &adv).unwrap();
    let v = model.config().vocab;
    let logits = model.forward(&p.tokens, p.b, p.t).unwrap().to_vec();
    let mut head_logits = Vec::new();
    masked_rows(&logits, v, &p.rows, &p.masks, &mut head_logits);
    let mut tc = TrainConfig::default();
    tc.algo.entropy_coef = 0.01; // every term of the gradient
    let hcfg = update::head_config(&tc);
    assert_eq!(hcfg.lambda, 1.0);
    let adv32: Vec<f32> = p.adv.iter().map(|&a| a as f32).collect();
    let inp = HeadInputs {
        logits: aem::head::Logits::F16(&head_logits),
        vocab: v,
        targets: &p.targets,
        resp_start: &p.resp_start,
        resp_len: &p.resp_len,
        resp_group: &p.resp_group,
        n_groups: ro.n_groups,
        adv_base: &adv32,
        old_logp: Some(&p.old_logp),
        ref_logp: None,
    };
    // Host pipeline (the CPU learner's): α already in `p.adv`, f64 and f32 accumulation.
    let layout = aem::head::validate(&inp, &hcfg).unwrap();
    let ts64 = cpu::token_stats::<f64>(&inp, &hcfg);
    let l64 = cpu::policy_loss(&inp, &hcfg, &layout, &ts64, &p.adv);
    let mut g64 = vec![0.0f32; head_logits.len()];
    cpu::policy_grad(&inp, &hcfg, &ts64, &l64, &mut g64);
    let ts32 = cpu::token_stats::<f32>(&inp, &hcfg);
    let l32 = cpu::policy_loss(&inp, &hcfg, &layout, &ts32, &adv32);
    let mut g32 = vec![0.0f32; head_logits.len()];
    cpu::policy_grad(&inp, &hcfg, &ts32, &l32, &mut g32);

    // The update plan on device-resident logits, with the run's λ = 1 (unused by the plan).
    let mut logits_dev = dev.htod(&head_logits).unwrap();
    let mut dl_dev = dev.zeros::<f32>(head_logits.len()).unwrap();
    let got = launch::loss_head_update_resident(
        &dev,
        &mut logits_dev,
        &HeadInputs {
            logits: aem::head::Logits::F16(&[]),
            ..inp
        },
        &hcfg,
        (&mut dl_dev).into(),
        Plan::default().block,
    )
    .unwrap();
    let dl_update = dev.dtoh(&dl_dev).unwrap();
    // The full head with λ = 0 (α ≡ 1, adv = A exactly) computes the same numbers, bit for bit.
    let full = launch::loss_head(
        &dev,
        &inp,
        &aem::head::HeadConfig {
            lambda: 0.0,
            ..hcfg.clone()
        },
        GradDtype::F32,
        &Plan::default(),
    )
    .unwrap();
    let bits = |x: &[f32]| x.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
    assert!(full.alpha.iter().all(|&a| a == 1.0), "{:?}", full.alpha);
    assert_eq!(bits(&full.adv), bits(&adv32));
    assert_eq!(got.loss.to_bits(), full.loss.to_bits());
    assert_eq!(bits(&got.logp), bits(&full.logp));
    assert_eq!(bits(&got.token_loss), bits(&full.token_loss));
    let GradOut::F32(dl_full) = &full.dlogits else {
        panic!("f32 gradient expected")
    };
    assert_eq!(bits(&dl_update), bits(dl_full));
    // …whereas the full head with λ = 1 would rescale again (α twice): not the same.
    assert!(alpha.iter().any(|&a| (a - 1.0).abs() > 0.05));

    let f = |x: &[f32]| x.iter().map(|&y| f64::from(y)).collect::<Vec<_>>();
    let zmax = head_logits
        .iter()
        .filter(|x| x.to_f32() > -65504.0)
        .fold(0.0f64, |m, x| m.max(f64::from(x.to_f32()).abs()));
    let ctx = "trainer batch, update plan";
    common::within(
        "loss",
        &[f64::from(got.loss)],
        &[l64.loss],
        &[l32.loss.into()],
        0.0,
        ctx,
    );
    common::within("logp", &f(&got.logp), &ts64.logp, &f(&ts32.logp), zmax, ctx);
    let gmax = g64.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()));
    common::within("dlogits", &f(&dl_update), &f(&g64), &f(&g32), gmax, ctx);
    assert!(gmax > 1e-4, "trivial gradient");
}

fn update_with(l: &mut dyn Learner, ro: &Rollouts, adv: &[f64]) -> UpdateStats {
    let tc = TrainConfig::default();
    let hcfg = update::head_config(&tc);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    update::ppo_update(
        l,
        ro,
        &(0..ro.turns.len()).collect::<Vec<_>>(),
        adv,
        &hcfg,
        1,
        1,
        1e-3,
        &mut rng,
    )
    .unwrap()
}

/// The first update of a run (one PPO step on the same rollouts and α·A_base): loss and gradient
/// norm on the device obey the rule against the f32-storage CPU path, with the CPU backend
/// (f16) as the plain implementation.
fn first_update_matches_cpu(dev: &Device) {
    let (m16, ro, adv, _) = batch(3);
    let ocfg = aem::model::AdamWConfig {
        grad_clip: Some(1.0),
        beta2: 0.99,
        ..aem::model::AdamWConfig::default()
    };
    let p32: Vec<f32> = m16.params().iter().map(|x| x.to_f32()).collect();
    let m32 = Gpt::<f32>::from_params(*m16.config(), p32).unwrap();
    let mut reference = CpuLearner {
        optim: AdamW::new(ocfg, &m32).unwrap(),
        model: m32,
    };
    let mut cpu16 = CpuLearner {
        optim: AdamW::new(ocfg, &m16).unwrap(),
        model: m16.clone(),
    };
    let mut dm = DeviceGpt::from_cpu(dev, &m16).unwrap();
    dm.init_optim(ocfg).unwrap();
    let mut device = DeviceLearner { model: dm };
    let r = update_with(&mut reference, &ro, &adv);
    let c = update_with(&mut cpu16, &ro, &adv);
    let d = update_with(&mut device, &ro, &adv);
    assert_eq!(d.opt_steps, 1);
    assert!(r.loss.abs() > 1e-3 && r.grad_norm > 1e-3, "trivial: {r:?}");
    rule("loss", r.loss, c.loss, d.loss);
    rule("grad norm", r.grad_norm, c.grad_norm, d.grad_norm);
    rule("approx kl", r.approx_kl, c.approx_kl, d.approx_kl);
    assert_eq!(d.clip_frac, c.clip_frac);
    assert_eq!(d.positions, c.positions);
}

#[test]
fn emu_first_update_matches_cpu_backend() {
    first_update_matches_cpu(&Device::emu().unwrap());
}

/// Without a GPU this prints why it skips; with `AEM_REQUIRE_CUDA=1` a skip is a failure.
#[test]
fn gpu_first_update_matches_cpu_backend() {
    match Device::cuda(0) {
        Ok(dev) => {
            eprintln!("running on {}", dev.name());
            first_update_matches_cpu(&dev);
        }
        Err(e) => {
            if std::env::var("AEM_REQUIRE_CUDA").is_ok_and(|v| v == "1") {
                panic!("AEM_REQUIRE_CUDA=1 but no GPU: {e}");
            }
            eprintln!("SKIPPED (no GPU: {e}); set AEM_REQUIRE_CUDA=1 to make this a failure");
        }
    }
}

/// Both backends sample the same tokens from the same initial model and RNG (the draw is on the
/// host from logits that agree to f32 rounding; a different token would need a uniform within
/// ~1e-6 of a CDF boundary), and the imitation step (logits to the host and back) agrees.
#[test]
fn emu_samples_like_cpu() {
    let dev = Device::emu().unwrap();
    let (m16, ro, _, _) = batch(4);
    let dm = DeviceGpt::from_cpu(&dev, &m16).unwrap();
    let level = env::level("keyrooms-train").unwrap();
    let tasks: Vec<_> = (0..3)
        .map(|s| env::train_task(&level, s + 40).unwrap())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let rd = rollout::collect(
        &dm,
        &tasks,
        4,
        PromptConfig::default(),
        1.0,
        &mut rng,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(rd.turns.len(), ro.turns.len());
    for (a, b) in rd.turns.iter().zip(&ro.turns) {
        assert_eq!(a.response, b.response);
        assert_eq!(a.masks, b.masks);
        for (x, y) in a.logp.iter().zip(&b.logp) {
            assert!((x - y).abs() < 1e-4, "logp {x} vs {y}");
        }
    }
}

fn finite_fields(r: &aem::train::metrics::StepRecord, keys: &[&str]) {
    let v = serde_json::to_value(r).unwrap();
    for key in keys {
        let x = v[key].as_f64().unwrap_or(f64::NAN);
        assert!(x.is_finite(), "step {}: {key} = {x}", r.step);
    }
}

/// A short run on the emulator (imitation warm-up, two minibatches): finite metrics, a complete
/// run directory, and `emu` recorded in its config and summary.
#[test]
fn emu_short_run_is_finite_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut cfg = tiny(Backend::Emu);
    cfg.run.steps = 2;
    cfg.run.eval_every = 1;
    cfg.warmup.steps = 1;
    cfg.warmup.episodes = 4;
    cfg.optim.minibatches = 2;
    let s = train(
        cfg.clone(),
        &RunOptions {
            out: Some(out.clone()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!((s.steps_done, s.total_steps), (3, 3));
    assert_eq!(s.backend, Backend::Emu);
    for f in [
        "config.toml",
        "metrics.jsonl",
        "checkpoint.safetensors",
        "success.png",
        "entropy.png",
        "aem.png",
        "summary.json",
    ] {
        let p = out.join(f);
        assert!(
            p.is_file() && p.metadata().unwrap().len() > 0,
            "{f} missing"
        );
    }
    assert_eq!(
        TrainConfig::from_toml_file(&out.join("config.toml")).unwrap(),
        cfg
    );
    let recs = read_jsonl(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(
        recs.iter().map(|r| r.phase.as_str()).collect::<Vec<_>>(),
        ["init", "imitation", "rl", "rl"]
    );
    finite_fields(&recs[1], &["loss", "grad_norm", "update_s"]);
    for r in &recs[2..] {
        finite_fields(
            r,
            &[
                "train_success",
                "entropy",
                "surprisal",
                "alpha_mean",
                "alpha_min",
                "alpha_max",
                "guard_frac",
                "loss",
                "clip_frac",
                "approx_kl",
                "grad_norm",
                "heldout_success",
                "heldout_greedy",
                "sample_s",
                "update_s",
            ],
        );
        assert!((r.alpha_mean.unwrap() - 1.0).abs() < 1e-9);
    }
    // The checkpoint is the CPU format: the CPU path loads it and evaluates it.
    let ck = load_checkpoint::<f16>(&out.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.step, 3);
    let rows = aem::train::eval::eval_checkpoint(
        &cfg,
        &out.join("checkpoint.safetensors"),
        4,
        0,
        None,
        |_, _, _| {},
    )
    .unwrap();
    assert_eq!(rows.len(), 6);
}

/// `--resume` on the emulator continues bit for bit: parameters, AdamW state, RNG, metrics.
#[test]
fn emu_resume_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny(Backend::Emu);
    cfg.run.steps = 3;
    cfg.run.eval_every = 0;
    cfg.run.checkpoint_every = 100;
    cfg.optim.minibatches = 2;
    let a = dir.path().join("straight");
    let b = dir.path().join("split");
    let run = |out: &std::path::Path, until: Option<u64>| {
        train(
            cfg.clone(),
            &RunOptions {
                out: Some(out.to_path_buf()),
                until,
                ..RunOptions::default()
            },
        )
        .unwrap()
    };
    run(&a, None);
    assert_eq!(run(&b, Some(1)).steps_done, 1);
    let s = train(
        TrainConfig::default(),
        &RunOptions {
            resume: Some(b.clone()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!((s.steps_done, s.backend), (3, Backend::Emu));
    let ca = load_checkpoint::<f16>(&a.join("checkpoint.safetensors")).unwrap();
    let cb = load_checkpoint::<f16>(&b.join("checkpoint.safetensors")).unwrap();
    let bits = |x: &[f16]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(ca.model.params()) == bits(cb.model.params()),
        "parameters differ"
    );
    assert!(ca.optim == cb.optim, "optimizer state differs");
    assert_eq!(ca.rng, cb.rng);
    assert_eq!(ca.step, cb.step);
    assert_eq!(
        strip(&read_jsonl(&a.join("metrics.jsonl")).unwrap()),
        strip(&read_jsonl(&b.join("metrics.jsonl")).unwrap())
    );
}

/// `cuda` without a GPU: a one-line error naming the reason, from the library and from
/// `aem train`; `auto` then resolves to the CPU path and the run records `cpu`.
#[test]
fn cuda_without_a_gpu_is_a_one_line_error_and_auto_falls_back() {
    let why = match Device::cuda(0) {
        Ok(d) => {
            eprintln!("SKIPPED: a GPU is present ({}); nothing to check", d.name());
            let o = open_backend(Backend::Auto).unwrap();
            assert_eq!(o.backend, Backend::Cuda);
            return;
        }
        Err(e) => e.to_string(),
    };
    let e = train(tiny(Backend::Cuda), &RunOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(e, format!("backend cuda: {why}"));
    assert_eq!(e.lines().count(), 1);

    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_aem"))
        .args(["train", "--backend", "cuda", "--quiet"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("aem: error: backend cuda: "), "{err}");
    assert!(
        !dir.path().join("runs").exists(),
        "a run directory was made"
    );

    let opened = open_backend(Backend::Auto).unwrap();
    assert_eq!(opened.backend, Backend::Cpu);
    assert!(opened.device.is_none());
    assert!(opened.note.unwrap().contains(&why));
    let out = dir.path().join("auto");
    let mut cfg = tiny(Backend::Auto);
    cfg.run.steps = 1;
    cfg.run.eval_tasks = 2;
    let s = train(
        cfg,
        &RunOptions {
            out: Some(out.clone()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(s.backend, Backend::Cpu);
    let back = TrainConfig::from_toml_file(&out.join("config.toml")).unwrap();
    assert_eq!(back.run.backend, Backend::Cpu);
}

/// Checkpoints are the CPU format on every backend: a run started on `cpu` continues on `emu`
/// (`--resume DIR --backend emu`, which the run's config then records), and `aem eval` reads it
/// on `emu`.
#[test]
fn resume_and_eval_across_backends() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut cfg = tiny(Backend::Cpu);
    cfg.run.steps = 2;
    cfg.run.eval_every = 0;
    let s = train(
        cfg,
        &RunOptions {
            out: Some(out.clone()),
            until: Some(1),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!((s.steps_done, s.backend), (1, Backend::Cpu));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_aem"))
        .args(["train", "--resume", "run", "--backend", "emu", "--quiet"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("backend emu | iterations 2/2"), "{err}");
    let back = TrainConfig::from_toml_file(&out.join("config.toml")).unwrap();
    assert_eq!(back.run.backend, Backend::Emu);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_aem"))
        .args([
            "eval",
            "--checkpoint",
            "run",
            "--tasks",
            "3",
            "--backend",
            "emu",
            "--quiet",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 7);
}
