//! Builds the kernels for both executors.
//!
//! - Always: the CPU emulator (`kernels/emu/`) and every shipped kernel (`kernels/*.cu`),
//!   compiled by g++ through the `cc` crate into `libaem_emu.a`, with a generated translation
//!   unit that registers each `extern "C" __global__` kernel found in the sources.
//! - With `nvcc` on PATH: a fatbin per module (sm_80, sm_90 + compute_90 PTX).
//! - Else with NVRTC available (`AEM_NVRTC_PYTHON`, or `.venv/bin/python` made by
//!   `.ci/install_nvrtc.sh`): cubins for sm_80/sm_90 and PTX via `tools/nvrtc_compile.py`.
//! - Always: each module's source, flattened (local includes inlined), for runtime NVRTC.
//!
//! Runtime load order on a GPU: fatbin → cubin for the device's sm_XY → PTX → NVRTC.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Kernel names declared `extern "C" __global__ void [LAUNCH_BOUNDS(..)] name(` in `src`.
fn kernel_names(src: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in src.match_indices("extern \"C\" __global__ void") {
        let rest = &src[i + "extern \"C\" __global__ void".len()..];
        for tok in rest.split_whitespace() {
            if tok.starts_with("AEM_LAUNCH_BOUNDS") || tok.starts_with("__launch_bounds__") {
                continue;
            }
            let name: String = tok
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.push(name);
            }
            break;
        }
    }
    names
}

/// One kernel parameter: its Rust field name and its Rust type in the generated launcher.
struct Param {
    name: String,
    ty: &'static str,
    /// How the field becomes an `Arg` (`self.x.arg()` for pointers, `Arg::I32(self.x)` …).
    to_arg: &'static str,
}

/// The parameter lists of the kernels in `src`, by kernel name, from each definition's
/// `name(...)`.
fn kernel_params(src: &str) -> Vec<(String, Vec<Param>)> {
    let mut out = Vec::new();
    for name in kernel_names(src) {
        let Some(at) = src.find(&format!("{name}(")) else {
            continue;
        };
        let rest = &src[at + name.len() + 1..];
        let list = param_list(src, &name, rest);
        let params = list
            .split(',')
            .map(|p| p.split_whitespace().collect::<Vec<_>>())
            .filter(|w| !w.is_empty())
            .map(|words| param(&name, &words))
            .collect();
        out.push((name, params));
    }
    out
}

/// The text of a kernel's parameter list (`rest` starts just after `name(`). A list written as
/// one call of a function-like macro defined in `src` (`AEM_POLICY_GRAD_PARAMS(__half, float, )`)
/// is expanded: the `#define`'s body (backslash-continued lines joined) with each formal
/// parameter replaced, as a whole word, by its argument.
fn param_list(src: &str, kernel: &str, rest: &str) -> String {
    let close = rest.find(')').unwrap_or_else(|| panic!("{kernel}: no ')'"));
    let head = rest.trim_start();
    let ident: String = head
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() || !head[ident.len()..].starts_with('(') {
        return rest[..close].to_string();
    }
    let args: Vec<&str> = head[ident.len() + 1..head.find(')').unwrap_or(head.len())]
        .split(',')
        .map(str::trim)
        .collect();
    let def = format!("#define {ident}(");
    let at = src
        .find(&def)
        .unwrap_or_else(|| panic!("{kernel}: parameter macro {ident} is not defined"));
    let after = &src[at + def.len()..];
    let formal_end = after.find(')').unwrap_or_else(|| panic!("{ident}: no ')'"));
    let formals: Vec<&str> = after[..formal_end].split(',').map(str::trim).collect();
    assert_eq!(
        formals.len(),
        args.len(),
        "{kernel}: {ident} takes {} arguments",
        formals.len()
    );
    let mut body = String::new();
    for line in after[formal_end + 1..].lines() {
        match line.trim_end().strip_suffix('\\') {
            Some(cont) => body.push_str(cont),
            None => {
                body.push_str(line);
                break;
            }
        }
        body.push(' ');
    }
    let mut out = String::new();
    let mut word = String::new();
    for c in body.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        match formals.iter().position(|f| *f == word) {
            Some(i) => out.push_str(args[i]),
            None => out.push_str(&word),
        }
        word.clear();
        out.push(c);
    }
    out
}

/// Maps a C parameter (its words: qualifiers, type, `*`, name) to a typed Rust field.
fn param(kernel: &str, words: &[&str]) -> Param {
    let joined = words.join(" ");
    let raw_name = words
        .last()
        .unwrap_or_else(|| panic!("{kernel}: empty parameter"))
        .trim_start_matches('*');
    let ty: String = joined
        .replace("__restrict__", "")
        .replace("const", "")
        .trim_end_matches(raw_name)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let (ty, to_arg) = match ty.as_str() {
        "__half*" | "__half *" => ("Ptr<'a, half::f16>", "ptr"),
        "__nv_bfloat16*" | "__nv_bfloat16 *" => ("Ptr<'a, half::bf16>", "ptr"),
        "float*" | "float *" => ("Ptr<'a, f32>", "ptr"),
        "unsigned int*" | "unsigned*" | "unsigned int *" | "unsigned *" => ("Ptr<'a, u32>", "ptr"),
        "int*" | "int *" => ("Ptr<'a, i32>", "ptr"),
        "int" => ("i32", "I32"),
        "unsigned int" | "unsigned" => ("u32", "U32"),
        "float" => ("f32", "F32"),
        "AemHeadParams" => ("HeadParams", "Params"),
        other => panic!("{kernel}: parameter type {other:?} ({joined}) has no Rust mapping"),
    };
    let mut name = raw_name.to_ascii_lowercase();
    if name == "type" || name == "ref" || name == "in" {
        name.push('_');
    }
    Param { name, ty, to_arg }
}

/// `token_stats_f16_v2` → `TokenStatsF16V2`.
fn camel(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Typed launchers: one struct per kernel whose fields are its parameters, by name, in the
/// signature's order and with the signature's element types, so a swapped or mistyped argument
/// is a compile error (or visibly named), not a wrong number.
fn launchers(modules: &[(String, PathBuf)]) -> String {
    let mut rs =
        String::from("// generated by build.rs from the kernels' signatures: do not edit\n");
    for (module, path) in modules {
        let src = fs::read_to_string(path).expect("read kernel source");
        for (name, params) in kernel_params(&src) {
            let lt = if params.iter().any(|p| p.to_arg == "ptr") {
                "<'a>"
            } else {
                ""
            };
            writeln!(
                rs,
                "/// Launches `{name}` (`kernels/{module}.cu`; its header documents every parameter)."
            )
            .unwrap();
            writeln!(rs, "pub struct {}{lt} {{", camel(&name)).unwrap();
            for p in &params {
                writeln!(rs, "    pub {}: {},", p.name, p.ty).unwrap();
            }
            writeln!(rs, "}}").unwrap();
            writeln!(rs, "impl{lt} {}{lt} {{", camel(&name)).unwrap();
            writeln!(rs, "    /// The kernel's name in module `{module}`.").unwrap();
            writeln!(rs, "    pub const NAME: &'static str = {name:?};").unwrap();
            writeln!(
                rs,
                "    /// Launches the kernel with these arguments on `dev`."
            )
            .unwrap();
            writeln!(
                rs,
                "    pub fn launch(&self, dev: &Device, cfg: LaunchCfg) -> Result<()> {{"
            )
            .unwrap();
            rs.push_str("        dev.launch(Self::NAME, cfg, &[");
            for p in &params {
                match p.to_arg {
                    "ptr" => write!(rs, "self.{}.arg(), ", p.name).unwrap(),
                    k => write!(rs, "Arg::{k}(self.{}), ", p.name).unwrap(),
                }
            }
            rs.push_str("])\n    }\n}\n");
        }
    }
    rs
}

/// The source with `#include "local.cuh"` replaced by the file's text (once each).
fn flatten(path: &Path, dir: &Path, seen: &mut Vec<PathBuf>) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("#include \"") {
            let inc = rest.trim_end_matches('"');
            let p = dir.join(inc);
            if !seen.contains(&p) {
                seen.push(p.clone());
                out.push_str(&flatten(&p, dir, seen));
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn nvrtc_python(root: &Path) -> Option<PathBuf> {
    if let Ok(p) = env::var("AEM_NVRTC_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = root.join(".venv/bin/python");
    venv.exists().then_some(venv)
}

fn which(cmd: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kdir = root.join("kernels");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=tools/nvrtc_compile.py");
    println!("cargo:rerun-if-env-changed=AEM_NVRTC_PYTHON");
    println!("cargo:rerun-if-env-changed=AEM_EMU_ASAN");
    println!("cargo:rerun-if-env-changed=PATH");

    let mut modules: Vec<(String, PathBuf)> = fs::read_dir(&kdir)
        .expect("kernels/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().to_string(), p))
        .collect();
    modules.sort();
    for entry in fs::read_dir(&kdir).into_iter().flatten().flatten() {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    for entry in fs::read_dir(kdir.join("emu"))
        .into_iter()
        .flatten()
        .flatten()
    {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }

    // ---- emulator: one translation unit including every kernel, plus the runtime
    let mut tu = String::from("// generated by build.rs\n#include \"cuda_emu.h\"\n");
    let mut all = Vec::new();
    for (name, path) in &modules {
        let src = fs::read_to_string(path).expect("read kernel source");
        writeln!(tu, "#include \"{}\"", path.display()).unwrap();
        for k in kernel_names(&src) {
            all.push((name.clone(), k));
        }
    }
    tu.push_str("#include \"emu_register.h\"\n");
    for (_, k) in &all {
        writeln!(tu, "AEM_EMU_KERNEL({k});").unwrap();
    }
    // Referenced from Rust so the linker keeps this object and its registrations.
    writeln!(
        tu,
        "extern \"C\" int aem_emu_shipped_kernels(void) {{ return {}; }}",
        all.len()
    )
    .unwrap();
    let tu_path = out.join("aem_emu_kernels.cpp");
    fs::write(&tu_path, tu).expect("write emulator TU");

    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .define("AEM_EMU", None)
        .include(kdir.join("emu"))
        .include(&kdir)
        .file(kdir.join("emu/emu_runtime.cpp"))
        .file(&tu_path);
    // AEM_EMU_ASAN=1: the emulator and kernels under AddressSanitizer. The Rust binary is not
    // instrumented, so the runtime is linked here and must be preloaded when running
    // (`.ci/asan_parity` shows how).
    let asan = env::var("AEM_EMU_ASAN").is_ok_and(|v| v == "1");
    if asan {
        b.flag("-fsanitize=address").flag("-fno-omit-frame-pointer");
    }
    b.compile("aem_emu");
    if asan {
        println!("cargo:rustc-link-lib=dylib=asan");
    }
    println!("cargo:rustc-link-lib=pthread");

    // ---- GPU images
    let gpu_dir = out.join("gpu");
    fs::create_dir_all(&gpu_dir).expect("create gpu dir");
    let nvcc = which("nvcc");
    let py = if nvcc.is_none() {
        nvrtc_python(&root)
    } else {
        None
    };
    let mut rs = String::from("// generated by build.rs\npub const MODULES: &[Module] = &[\n");
    for (name, path) in &modules {
        let mut seen = Vec::new();
        let flat = flatten(path, &kdir, &mut seen);
        let flat_path = gpu_dir.join(format!("{name}.flat.cu"));
        fs::write(&flat_path, &flat).expect("write flattened source");

        let mut fatbin = None;
        if let Some(nvcc) = &nvcc {
            let f = gpu_dir.join(format!("{name}.fatbin"));
            let st = Command::new(nvcc)
                .args(["-fatbin", "-std=c++17", "-O3"])
                .args(["-gencode", "arch=compute_80,code=sm_80"])
                .args(["-gencode", "arch=compute_90,code=sm_90"])
                .args(["-gencode", "arch=compute_90,code=compute_90"])
                .arg("-I")
                .arg(&kdir)
                .arg("-o")
                .arg(&f)
                .arg(path)
                .status();
            match st {
                Ok(s) if s.success() => fatbin = Some(f),
                other => println!("cargo:warning=nvcc failed for {name}: {other:?}; falling back"),
            }
        }
        let mut cubins = Vec::new();
        let mut ptx = Vec::new();
        if let Some(py) = &py {
            let dir = gpu_dir.join("nvrtc");
            let st = Command::new(py)
                .arg(root.join("tools/nvrtc_compile.py"))
                .args(["--arch", "sm_80", "--arch", "sm_90", "--out"])
                .arg(&dir)
                .arg(path)
                .output();
            match st {
                Ok(o) if o.status.success() => {
                    for arch in ["80", "90"] {
                        cubins.push((
                            format!("sm_{arch}"),
                            dir.join(format!("{name}.sm_{arch}.cubin")),
                        ));
                        ptx.push((
                            format!("compute_{arch}"),
                            dir.join(format!("{name}.compute_{arch}.ptx")),
                        ));
                    }
                }
                Ok(o) => println!(
                    "cargo:warning=NVRTC build of {name} skipped (exit {:?}): {}",
                    o.status.code(),
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ),
                Err(e) => println!("cargo:warning=NVRTC build of {name} skipped: {e}"),
            }
        }
        let kernels: Vec<String> = all
            .iter()
            .filter(|(m, _)| m == name)
            .map(|(_, k)| format!("{k:?}"))
            .collect();
        writeln!(
            rs,
            "    Module {{\n        name: {name:?},\n        kernels: &[{}],",
            kernels.join(", ")
        )
        .unwrap();
        writeln!(
            rs,
            "        source: include_str!({:?}),",
            flat_path.display().to_string()
        )
        .unwrap();
        match &fatbin {
            Some(f) => writeln!(
                rs,
                "        fatbin: Some(include_bytes!({:?})),",
                f.display().to_string()
            )
            .unwrap(),
            None => writeln!(rs, "        fatbin: None,").unwrap(),
        }
        rs.push_str("        cubins: &[");
        for (arch, p) in &cubins {
            write!(
                rs,
                "({arch:?}, include_bytes!({:?})), ",
                p.display().to_string()
            )
            .unwrap();
        }
        rs.push_str("],\n        ptx: &[");
        for (arch, p) in &ptx {
            write!(
                rs,
                "({arch:?}, include_str!({:?})), ",
                p.display().to_string()
            )
            .unwrap();
        }
        rs.push_str("],\n    },\n");
    }
    rs.push_str("];\n");
    fs::write(out.join("aem_kernels.rs"), rs).expect("write aem_kernels.rs");
    fs::write(out.join("aem_launchers.rs"), launchers(&modules)).expect("write aem_launchers.rs");
}
