//! `CudaDevice`: the kernels on an NVIDIA GPU through cudarc (driver API, one stream: the
//! context's default stream, or a stream the caller owns — [`CudaDevice::on_stream`]).
//!
//! Module load order per kernel module: fatbin → cubin for the device's `sm_XY` → PTX for a
//! `compute_XY` not above the device → NVRTC of the embedded source. Modules are cached.

use super::modules::{self, Module};
use super::{Arg, Elem, Gemm, GemmDtype, GemmElem, LaunchCfg, Limits, RawBuf, Trans};
use crate::error::{Error, Result};
use cudarc::cublas::{self, CudaBlas};
use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut,
    DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

// SAFETY: HeadParams is #[repr(C)], 12 four-byte fields, the layout of AemHeadParams
// (static_assert in kernels/common.cuh and a const assert in device/mod.rs).
unsafe impl DeviceRepr for super::HeadParams {}

fn drv(e: impl std::fmt::Display) -> Error {
    Error::Device {
        backend: "cuda",
        message: e.to_string(),
    }
}

/// A typed `CudaSlice` seen through its device pointer.
pub trait AnySlice {
    fn device_ptr_u64(&self, stream: &CudaStream) -> u64;
}

// One stream: ordering is by the stream, so the access event can be recorded at argument time
// (cudarc records it on `stream` when the guard drops).
impl<T> AnySlice for CudaSlice<T> {
    fn device_ptr_u64(&self, stream: &CudaStream) -> u64 {
        let (p, _record) = self.device_ptr(stream);
        p
    }
}
impl<T> AnySlice for CudaView<'_, T> {
    fn device_ptr_u64(&self, stream: &CudaStream) -> u64 {
        let (p, _record) = self.device_ptr(stream);
        p
    }
}
impl<T> AnySlice for CudaViewMut<'_, T> {
    fn device_ptr_u64(&self, stream: &CudaStream) -> u64 {
        let (p, _record) = self.device_ptr(stream);
        p
    }
}

/// A loaded kernel and what the driver says about it.
struct Func {
    f: CudaFunction,
    /// Static shared memory (bytes): `CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES`.
    static_smem: u32,
    /// Threads per block this compiled form allows (its registers can lower it).
    max_block: u32,
    /// Whether the dynamic-shared-memory opt-in attribute has been set (once, when a launch
    /// first needs more than the default 48 KiB).
    optin: AtomicBool,
}

/// One GPU.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    sm: (i32, i32),
    limits: Limits,
    /// Loaded modules and the image each came from ("cubin sm_90", "nvrtc compute_90", …).
    modules: Mutex<HashMap<&'static str, (Arc<CudaModule>, String)>>,
    functions: Mutex<HashMap<&'static str, Arc<Func>>>,
    /// cuBLAS on `stream`, created at the first GEMM.
    blas: Mutex<Option<Arc<CudaBlas>>>,
}

impl CudaDevice {
    /// Opens device `ordinal`. Without a driver this is [`Error::NoDevice`], not a panic
    /// (cudarc panics on a missing library unless `is_culib_present` is checked first).
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: is_culib_present only tries to dlopen the driver library by name.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::NoDevice(
                "the CUDA driver library (libcuda.so) is not present".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::NoDevice(e.to_string()))?;
        Self::on_stream(ctx.default_stream())
    }

    /// The GPU of a stream the caller owns (its context shared): every upload, launch, GEMM and
    /// download of this device is enqueued on `stream`, in call order, so it is ordered after
    /// the caller's earlier work on that stream and before its later work, with no
    /// synchronisation of its own. Only the calls that hand results to the host wait for the
    /// stream: `dtoh` (and what is built on it: `DeviceHead::stats`, `check`, …) and
    /// [`Self::synchronize`].
    pub fn on_stream(stream: Arc<CudaStream>) -> Result<Self> {
        let ctx = stream.context().clone();
        let sm = ctx.compute_capability().map_err(drv)?;
        let attr = |a: sys::CUdevice_attribute| -> Result<u32> {
            let v = ctx.attribute(a).map_err(drv)?;
            u32::try_from(v).map_err(|_| drv(format!("device attribute {a:?} = {v}")))
        };
        use sys::CUdevice_attribute as A;
        let limits = Limits {
            sm: (
                u32::try_from(sm.0).map_err(drv)?,
                u32::try_from(sm.1).map_err(drv)?,
            ),
            max_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
            max_grid_x: attr(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X)?,
            smem_default: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)?,
            smem_optin: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?,
        };
        Ok(CudaDevice {
            ctx,
            stream,
            sm,
            limits,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            blas: Mutex::new(None),
        })
    }

    /// The stream every operation of this device is enqueued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn name(&self) -> String {
        let n = self.ctx.name().unwrap_or_else(|_| "?".into());
        format!("cuda: {n} (sm_{}{})", self.sm.0, self.sm.1)
    }

    /// The device's launch limits, from its attributes.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// `kernel`'s static shared memory, as the driver reports it for the loaded image.
    pub fn static_smem(&self, kernel: &'static str) -> Result<u32> {
        Ok(self.function(kernel)?.static_smem)
    }

    /// Which image `kernel`'s module was loaded from (loading it if needed): what `aem doctor`
    /// reports.
    pub fn loaded_from(&self, kernel: &'static str) -> Result<String> {
        self.function(kernel)?;
        let m = modules::find(kernel).ok_or_else(|| Error::KernelMissing {
            module: "(none)".into(),
            name: kernel.into(),
        })?;
        Ok(self
            .modules
            .lock()
            .map_err(|_| drv("module cache poisoned"))?
            .get(m.name)
            .map(|(_, from)| from.clone())
            .unwrap_or_default())
    }

    pub(super) fn htod<T: Elem>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        if data.is_empty() {
            return self.stream.alloc_zeros::<T>(1).map_err(drv);
        }
        self.stream.clone_htod(data).map_err(drv)
    }

    pub(super) fn zeros<T: Elem>(&self, len: usize) -> Result<CudaSlice<T>> {
        // cudarc rejects zero-length allocations; an empty buffer is never dereferenced.
        self.stream.alloc_zeros::<T>(len.max(1)).map_err(drv)
    }

    pub(super) fn write<T: Elem>(&self, dst: &mut CudaSlice<T>, data: &[T]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.stream.memcpy_htod(data, dst).map_err(drv)
    }

    pub(super) fn dtoh<T: Elem>(&self, src: &CudaSlice<T>) -> Result<Vec<T>> {
        let v = self.stream.clone_dtoh(src).map_err(drv)?;
        self.stream.synchronize().map_err(drv)?;
        Ok(v)
    }

    pub(super) fn copy<T: Elem>(&self, src: &CudaSlice<T>, dst: &mut CudaSlice<T>) -> Result<()> {
        self.stream.memcpy_dtod(src, dst).map_err(drv)
    }

    pub(super) fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(drv)
    }

    fn blas(&self) -> Result<Arc<CudaBlas>> {
        let mut slot = self
            .blas
            .lock()
            .map_err(|_| drv("cublas handle poisoned"))?;
        if let Some(b) = slot.as_ref() {
            return Ok(b.clone());
        }
        // SAFETY: is_culib_present only tries to dlopen the cuBLAS library by name (cudarc
        // panics on a missing library otherwise).
        if !unsafe { cublas::sys::is_culib_present() } {
            return Err(Error::NoDevice(
                "the cuBLAS library (libcublas.so) is not present".into(),
            ));
        }
        let b = Arc::new(CudaBlas::new(self.stream.clone()).map_err(drv)?);
        *slot = Some(b.clone());
        Ok(b)
    }

    /// `cublasGemmEx` with `CUBLAS_COMPUTE_32F` on (buffer, byte offset) operands.
    pub(super) fn gemm<A: GemmElem, C: GemmElem>(
        &self,
        g: &Gemm,
        a: (&CudaSlice<A>, usize),
        b: (&CudaSlice<A>, usize),
        c: (&mut CudaSlice<C>, usize),
    ) -> Result<()> {
        use cublas::sys::{cublasComputeType_t, cublasOperation_t, cudaDataType_t};
        let blas = self.blas()?;
        let op = |t: Trans| match t {
            Trans::N => cublasOperation_t::CUBLAS_OP_N,
            Trans::T => cublasOperation_t::CUBLAS_OP_T,
        };
        let dt = |d: GemmDtype| match d {
            GemmDtype::F16 => cudaDataType_t::CUDA_R_16F,
            GemmDtype::F32 => cudaDataType_t::CUDA_R_32F,
        };
        let i = |x: usize| i32::try_from(x).map_err(|_| drv("gemm size above 2^31"));
        let ptr = |s: &dyn AnySlice, off: usize| s.device_ptr_u64(&self.stream) + off as u64;
        let (pa, pb, pc) = (ptr(a.0, a.1), ptr(b.0, b.1), ptr(&*c.0, c.1));
        let (alpha, beta) = (g.alpha, g.beta);
        // SAFETY: Device::gemm ran Gemm::check, so every element op(A), op(B) and C touch lies
        // inside the windows, which lie inside live CudaSlices of the dtypes passed; alpha/beta
        // are host f32 values (pointer mode host, compute 32F); the handle is bound to
        // `self.stream`, the stream every other operation of this device uses.
        unsafe {
            cublas::result::gemm_ex(
                *blas.handle(),
                op(g.transa),
                op(g.transb),
                i(g.m)?,
                i(g.n)?,
                i(g.k)?,
                (&alpha as *const f32).cast(),
                pa as *const std::ffi::c_void,
                dt(A::DTYPE),
                i(g.lda)?,
                pb as *const std::ffi::c_void,
                dt(A::DTYPE),
                i(g.ldb)?,
                (&beta as *const f32).cast(),
                pc as *mut std::ffi::c_void,
                dt(C::DTYPE),
                i(g.ldc)?,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublas::sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(drv)
    }

    fn load(&self, m: &'static Module) -> Result<Arc<CudaModule>> {
        let mut cache = self
            .modules
            .lock()
            .map_err(|_| drv("module cache poisoned"))?;
        if let Some((module, _)) = cache.get(m.name) {
            return Ok(module.clone());
        }
        let sm = format!("sm_{}{}", self.sm.0, self.sm.1);
        let mut tried = Vec::new();
        let mut images: Vec<(String, cudarc::nvrtc::Ptx)> = Vec::new();
        if let Some(f) = m.fatbin {
            images.push(("fatbin".into(), cudarc::nvrtc::Ptx::from_binary(f.to_vec())));
        }
        if let Some((_, c)) = m.cubins.iter().find(|(a, _)| *a == sm) {
            images.push((
                format!("cubin {sm}"),
                cudarc::nvrtc::Ptx::from_binary(c.to_vec()),
            ));
        }
        let cap = self.sm.0 * 10 + self.sm.1;
        let mut ptx: Vec<_> = m
            .ptx
            .iter()
            .filter_map(|(a, p)| {
                let n: i32 = a.trim_start_matches("compute_").parse().ok()?;
                (n <= cap).then_some((n, p))
            })
            .collect();
        ptx.sort_by_key(|(n, _)| -n);
        for (n, p) in ptx {
            images.push((format!("ptx compute_{n}"), cudarc::nvrtc::Ptx::from_src(*p)));
        }
        for (what, image) in images {
            match self.ctx.load_module(image) {
                Ok(module) => return Ok(cache_module(&mut cache, m, module, what)),
                Err(e) => tried.push(format!("{what}: {e}")),
            }
        }
        // Last resort: compile the embedded source for this device (a typed error, not a panic,
        // when NVRTC or its headers are missing).
        let cap = u32::try_from(cap).map_err(drv)?;
        match super::nvrtc::compile(m, cap) {
            Ok(p) => match self.ctx.load_module(p) {
                Ok(module) => Ok(cache_module(
                    &mut cache,
                    m,
                    module,
                    format!("nvrtc compute_{cap}"),
                )),
                Err(e) => {
                    tried.push(format!("nvrtc: {e}"));
                    Err(drv(format!(
                        "cannot load module {}: {}",
                        m.name,
                        tried.join("; ")
                    )))
                }
            },
            Err(e) => {
                tried.push(e.to_string());
                Err(drv(format!(
                    "cannot load module {}: {}",
                    m.name,
                    tried.join("; ")
                )))
            }
        }
    }

    fn function(&self, kernel: &'static str) -> Result<Arc<Func>> {
        if let Some(f) = self
            .functions
            .lock()
            .map_err(|_| drv("function cache poisoned"))?
            .get(kernel)
        {
            return Ok(f.clone());
        }
        let m = modules::find(kernel).ok_or_else(|| Error::KernelMissing {
            module: "(none)".into(),
            name: kernel.into(),
        })?;
        let module = self.load(m)?;
        let f = module
            .load_function(kernel)
            .map_err(|_| Error::KernelMissing {
                module: m.name.into(),
                name: kernel.into(),
            })?;
        let attr = |v: std::result::Result<i32, _>, what: &str| -> Result<u32> {
            let v = v.map_err(drv)?;
            u32::try_from(v).map_err(|_| drv(format!("{kernel}: {what} = {v}")))
        };
        let func = Arc::new(Func {
            static_smem: attr(f.shared_size_bytes(), "static shared memory")?,
            max_block: attr(f.max_threads_per_block(), "max threads per block")?,
            optin: AtomicBool::new(false),
            f,
        });
        self.functions
            .lock()
            .map_err(|_| drv("function cache poisoned"))?
            .insert(kernel, func.clone());
        Ok(func)
    }

    pub(super) fn launch(&self, kernel: &'static str, cfg: LaunchCfg, args: &[Arg]) -> Result<()> {
        let func = self.function(kernel)?;
        let needs_optin = self
            .limits
            .check(kernel, cfg, func.static_smem, Some(func.max_block))?;
        if needs_optin && !func.optin.load(Ordering::Acquire) {
            // Above 48 KiB a block must opt in, and the attribute may be at most the opt-in
            // maximum less the static part (else CUDA_ERROR_INVALID_VALUE); `check` has
            // verified this launch fits under it.
            let max = self.limits.max_dyn_smem(func.static_smem);
            let max = i32::try_from(max).map_err(drv)?;
            func.f
                .set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    max,
                )
                .map_err(drv)?;
            func.optin.store(true, Ordering::Release);
        }
        let f = &func.f;
        // Argument values, then references to them in the builder (kernelParams semantics).
        let vals: Vec<Val> = args
            .iter()
            .map(|a| match *a {
                Arg::Buf(RawBuf::Cuda(s, off)) => {
                    Ok(Val::Ptr(s.device_ptr_u64(&self.stream) + off))
                }
                Arg::Buf(_) => Err(drv("a buffer of another executor")),
                Arg::Null => Ok(Val::Ptr(0)),
                Arg::I32(x) => Ok(Val::I32(x)),
                Arg::U32(x) => Ok(Val::U32(x)),
                Arg::F32(x) => Ok(Val::F32(x)),
                Arg::Params(p) => Ok(Val::Params(p)),
            })
            .collect::<Result<_>>()?;
        let mut b = self.stream.launch_builder(f);
        for v in &vals {
            match v {
                Val::Ptr(p) => b.arg(p),
                Val::I32(x) => b.arg(x),
                Val::U32(x) => b.arg(x),
                Val::F32(x) => b.arg(x),
                Val::Params(p) => b.arg(p),
            };
        }
        let lc = LaunchConfig {
            grid_dim: (cfg.grid, 1, 1),
            block_dim: (cfg.block, 1, 1),
            shared_mem_bytes: cfg.smem,
        };
        // SAFETY: the argument list matches the kernel's signature in kernels/loss_head.cu
        // (the launcher in head/launch.rs is the one place that builds it, and the emulator
        // checks the same list against the registered signature in every test); pointers are
        // live CudaSlices whose lengths the launcher checked; 64-bit values are CUdeviceptr.
        unsafe { b.launch(lc) }.map_err(drv)?;
        Ok(())
    }
}

enum Val {
    Ptr(u64),
    I32(i32),
    U32(u32),
    F32(f32),
    Params(super::HeadParams),
}

/// Records a loaded module and the image it came from.
fn cache_module(
    cache: &mut HashMap<&'static str, (Arc<CudaModule>, String)>,
    m: &'static Module,
    module: Arc<CudaModule>,
    from: String,
) -> Arc<CudaModule> {
    cache.insert(m.name, (module.clone(), from));
    module
}
