//! `CudaDevice`: the kernels on an NVIDIA GPU through cudarc (driver API, one stream).
//!
//! Module load order per kernel module: fatbin → cubin for the device's `sm_XY` → PTX for a
//! `compute_XY` not above the device → NVRTC of the embedded source. Modules are cached.

use super::modules::{self, Module};
use super::{Arg, Elem, Gemm, GemmDtype, GemmElem, LaunchCfg, RawBuf, Trans};
use crate::error::{Error, Result};
use cudarc::cublas::{self, CudaBlas};
use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    LaunchConfig, PushKernelArg,
};
use std::collections::HashMap;
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

impl<T> AnySlice for CudaSlice<T> {
    fn device_ptr_u64(&self, stream: &CudaStream) -> u64 {
        // One stream: ordering is by the stream, so the read event can be recorded now.
        let (p, _record) = self.device_ptr(stream);
        p
    }
}

/// One GPU.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    sm: (i32, i32),
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
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
        let sm = ctx.compute_capability().map_err(drv)?;
        let stream = ctx.default_stream();
        Ok(CudaDevice {
            ctx,
            stream,
            sm,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            blas: Mutex::new(None),
        })
    }

    pub fn name(&self) -> String {
        let n = self.ctx.name().unwrap_or_else(|_| "?".into());
        format!("cuda: {n} (sm_{}{})", self.sm.0, self.sm.1)
    }

    pub fn max_dyn_smem(&self) -> u32 {
        self.ctx
            .attribute(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .ok()
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(48 * 1024)
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
        if let Some(module) = cache.get(m.name) {
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
                Ok(module) => {
                    cache.insert(m.name, module.clone());
                    return Ok(module);
                }
                Err(e) => tried.push(format!("{what}: {e}")),
            }
        }
        // Last resort: compile the embedded source for this device.
        let opts = cudarc::nvrtc::CompileOptions {
            options: vec![
                format!("--gpu-architecture=compute_{cap}"),
                "-std=c++17".into(),
            ],
            include_paths: std::env::var("AEM_CUDA_INCLUDE").into_iter().collect(),
            ..Default::default()
        };
        match cudarc::nvrtc::compile_ptx_with_opts(m.source, opts) {
            Ok(p) => {
                let module = self.ctx.load_module(p).map_err(drv)?;
                cache.insert(m.name, module.clone());
                Ok(module)
            }
            Err(e) => {
                tried.push(format!("nvrtc: {e:?}"));
                Err(drv(format!(
                    "cannot load module {}: {}",
                    m.name,
                    tried.join("; ")
                )))
            }
        }
    }

    fn function(&self, kernel: &'static str) -> Result<CudaFunction> {
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
        // Allow the device's full dynamic shared memory (the row cache of the fused kernel).
        let max = i32::try_from(self.max_dyn_smem()).unwrap_or(48 * 1024);
        f.set_attribute(
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            max,
        )
        .map_err(drv)?;
        self.functions
            .lock()
            .map_err(|_| drv("function cache poisoned"))?
            .insert(kernel, f.clone());
        Ok(f)
    }

    pub(super) fn launch(&self, kernel: &'static str, cfg: LaunchCfg, args: &[Arg]) -> Result<()> {
        let f = self.function(kernel)?;
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
        let mut b = self.stream.launch_builder(&f);
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
