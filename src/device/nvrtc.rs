//! Runtime compile of the embedded kernel sources: the last step of the module load order, the
//! only one a build made without nvcc and without NVRTC at build time has.
//!
//! cudarc panics when libnvrtc cannot be loaded, and NVRTC 13 does not find `cuda_fp16.h` on
//! its own; both are checked here first and reported as typed errors that say what to set.

use super::modules::Module;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

fn err(message: String) -> Error {
    Error::Device {
        backend: "nvrtc",
        message,
    }
}

/// What a runtime compile would use.
#[derive(Debug, Clone)]
pub struct Nvrtc {
    /// NVRTC's (major, minor) version.
    pub version: (i32, i32),
    /// The include directories passed to NVRTC (the first holds `cuda_fp16.h`).
    pub include: Vec<PathBuf>,
}

/// Whether libnvrtc can be loaded (by the names cudarc tries, through the loader's search path:
/// `LD_LIBRARY_PATH`, the system's library directories).
pub fn library_present() -> bool {
    // SAFETY: is_culib_present only tries to dlopen the NVRTC library by name.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The directories searched for `cuda_fp16.h`, in order: `AEM_CUDA_INCLUDE` (a path list),
/// `CUDA_HOME`/include, `CUDA_PATH`/include, `include` beside every `LD_LIBRARY_PATH` directory
/// that holds libnvrtc (the layout of the `nvidia-cuda-nvrtc` wheel and of a toolkit's
/// `lib64`), and `/usr/local/cuda/include`.
pub fn include_candidates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("AEM_CUDA_INCLUDE") {
        dirs.extend(std::env::split_paths(&v));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(v) = std::env::var_os(var) {
            dirs.push(PathBuf::from(v).join("include"));
        }
    }
    if let Some(v) = std::env::var_os("LD_LIBRARY_PATH") {
        for lib in std::env::split_paths(&v) {
            if holds_nvrtc(&lib) {
                if let Some(parent) = lib.parent() {
                    dirs.push(parent.join("include"));
                }
            }
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/include"));
    dirs
}

fn holds_nvrtc(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libnvrtc.so"))
    })
}

/// The include directories for the kernels: the first candidate holding `cuda_fp16.h`, and its
/// `cccl` subdirectory when there is one (the wheel ships the C++ core headers there).
pub fn include_dirs() -> Result<Vec<PathBuf>> {
    let cands = include_candidates();
    let found = cands.iter().find(|d| d.join("cuda_fp16.h").is_file());
    match found {
        Some(d) => {
            let mut dirs = vec![d.clone()];
            let cccl = d.join("cccl");
            if cccl.is_dir() {
                dirs.push(cccl);
            }
            Ok(dirs)
        }
        None => Err(err(format!(
            "cuda_fp16.h not found (searched {}); set AEM_CUDA_INCLUDE to the CUDA include \
             directory, or CUDA_HOME",
            cands
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// NVRTC's library and headers, or why a runtime compile cannot run.
pub fn probe() -> Result<Nvrtc> {
    if !library_present() {
        return Err(err(
            "libnvrtc cannot be loaded (not on LD_LIBRARY_PATH or the system library path); \
             install the CUDA toolkit or `pip install nvidia-cuda-nvrtc` and add its lib \
             directory to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above), so cudarc's lazy loader finds it;
    // nvrtcVersion writes two ints through the valid pointers passed.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| err(format!("nvrtcVersion: {e:?}")))?;
    Ok(Nvrtc {
        version: (major, minor),
        include: include_dirs()?,
    })
}

/// Compiles `module`'s embedded source to PTX for `compute_{cap}` (e.g. 90).
pub fn compile(module: &Module, cap: u32) -> Result<cudarc::nvrtc::Ptx> {
    let nv = probe()?;
    let opts = cudarc::nvrtc::CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{cap}"),
            "-std=c++17".into(),
        ],
        include_paths: nv.include.iter().map(|d| d.display().to_string()).collect(),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(module.source, opts).map_err(|e| {
        err(format!(
            "compiling {} for compute_{cap} (NVRTC {}.{}): {e:?}",
            module.name, nv.version.0, nv.version.1
        ))
    })
}
