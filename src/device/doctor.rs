//! `aem doctor`: what a user with a GPU asks first. Which libraries load (and why not), which
//! device is there, which module images this build embeds, which one the device loads, and
//! whether the runtime compile (NVRTC) would work.

use super::modules::{Module, MODULES};
use super::Limits;

/// One module's embedded images and what this machine does with them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleReport {
    pub name: String,
    pub kernels: usize,
    pub fatbin: bool,
    /// `sm_XY` of each embedded cubin.
    pub cubins: Vec<String>,
    /// `compute_XY` of each embedded PTX.
    pub ptx: Vec<String>,
    /// Bytes of flattened source (for runtime NVRTC; always embedded).
    pub source_bytes: usize,
    /// The image the device loaded ("cubin sm_90", "nvrtc compute_90", …), or why none did.
    pub loads: Option<String>,
    /// The result of compiling the source with NVRTC for the device's (or sm_90's) arch.
    pub nvrtc_compile: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Whether the crate was built with the `cuda` feature.
    pub cuda_feature: bool,
    /// libcuda: "loaded" or why not.
    pub driver: String,
    /// libcublas: "present" or why not.
    pub cublas: String,
    /// GPU 0 ("NVIDIA H200 (sm_90)") or why there is none.
    pub device: String,
    /// GPU 0's launch limits.
    pub limits: Option<Limits>,
    /// libnvrtc: its version and include directories, or why a runtime compile cannot run.
    pub nvrtc: String,
    pub modules: Vec<ModuleReport>,
}

fn embedded(m: &Module) -> ModuleReport {
    ModuleReport {
        name: m.name.into(),
        kernels: m.kernels.len(),
        fatbin: m.fatbin.is_some(),
        cubins: m.cubins.iter().map(|(a, _)| a.to_string()).collect(),
        ptx: m.ptx.iter().map(|(a, _)| a.to_string()).collect(),
        source_bytes: m.source.len(),
        loads: None,
        nvrtc_compile: None,
    }
}

/// Builds the report. `compile`: also compile every module with NVRTC (a few seconds) when
/// NVRTC is present, for GPU 0's arch or, without one, for sm_90.
pub fn report(compile: bool) -> Report {
    let mut modules: Vec<ModuleReport> = MODULES.iter().map(embedded).collect();
    #[cfg(feature = "cuda")]
    {
        use super::cuda::CudaDevice;
        // SAFETY: both only try to dlopen the library by name.
        let (drv, blas) = unsafe {
            (
                cudarc::driver::sys::is_culib_present(),
                cudarc::cublas::sys::is_culib_present(),
            )
        };
        let driver = if drv {
            "libcuda loaded".to_string()
        } else {
            "libcuda not found (no NVIDIA driver on the library path)".to_string()
        };
        let cublas = if blas {
            "libcublas present".to_string()
        } else {
            "libcublas not found (the model's GEMMs on a GPU need it; the loss head does not)"
                .to_string()
        };
        let (device, limits, cap) = match CudaDevice::new(0) {
            Ok(d) => {
                for (r, m) in modules.iter_mut().zip(MODULES) {
                    r.loads = Some(match m.kernels.first() {
                        Some(k) => d.loaded_from(k).unwrap_or_else(|e| format!("fails: {e}")),
                        None => "no kernels".into(),
                    });
                }
                let l = d.limits();
                (d.name(), Some(l), l.sm.0 * 10 + l.sm.1)
            }
            Err(e) => (e.to_string(), None, 90),
        };
        let nvrtc = match super::nvrtc::probe() {
            Ok(nv) => {
                if compile {
                    for (r, m) in modules.iter_mut().zip(MODULES) {
                        r.nvrtc_compile = Some(match super::nvrtc::compile(m, cap) {
                            Ok(_) => format!("ok (compute_{cap})"),
                            Err(e) => format!("fails: {e}"),
                        });
                    }
                }
                format!(
                    "NVRTC {}.{}, headers from {}",
                    nv.version.0,
                    nv.version.1,
                    nv.include
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Err(e) => format!("unavailable: {e}"),
        };
        Report {
            cuda_feature: true,
            driver,
            cublas,
            device,
            limits,
            nvrtc,
            modules,
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = compile;
        let off = "built without the `cuda` feature".to_string();
        Report {
            cuda_feature: false,
            driver: off.clone(),
            cublas: off.clone(),
            device: off.clone(),
            limits: None,
            nvrtc: off,
            modules,
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "driver   {}", self.driver)?;
        writeln!(f, "cublas   {}", self.cublas)?;
        writeln!(f, "device   {}", self.device)?;
        if let Some(l) = &self.limits {
            writeln!(
                f,
                "limits   {}: {} threads/block, grid x ≤ {}, shared memory {} B default, {} B opt-in",
                l.arch(),
                l.max_block,
                l.max_grid_x,
                l.smem_default,
                l.smem_optin
            )?;
        }
        writeln!(f, "nvrtc    {}", self.nvrtc)?;
        writeln!(f, "modules (load order on a GPU: fatbin → cubin sm_XY → PTX compute_XY ≤ device → NVRTC of the source)")?;
        for m in &self.modules {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(" ")
                }
            };
            writeln!(
                f,
                "  {:<10} {} kernels; fatbin {}; cubin {}; ptx {}; source {} B",
                m.name,
                m.kernels,
                if m.fatbin { "yes" } else { "no" },
                list(&m.cubins),
                list(&m.ptx),
                m.source_bytes
            )?;
            if let Some(l) = &m.loads {
                writeln!(f, "             this device loads: {l}")?;
            }
            if let Some(c) = &m.nvrtc_compile {
                writeln!(f, "             runtime compile: {c}")?;
            }
        }
        Ok(())
    }
}
