//! `EmuDevice`: the kernels of `kernels/*.cu`, compiled by g++ with the emulator of
//! `kernels/emu/` (every CUDA thread a fiber), called through FFI. Device memory is host memory
//! owned by [`EmuBuf`].

use super::{Arg, Elem, Gemm, GemmElem, LaunchCfg, Limits, RawBuf, Trans};
use crate::error::{Error, Result};
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Mutex;

extern "C" {
    fn aem_emu_launch(
        name: *const c_char,
        gx: c_uint,
        gy: c_uint,
        gz: c_uint,
        bx: c_uint,
        by: c_uint,
        bz: c_uint,
        dyn_smem_bytes: usize,
        args: *mut *mut c_void,
        sig: *const c_char,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn aem_emu_set_order(mode: c_int, seed: c_ulonglong);
    fn aem_emu_set_workers(n: c_uint);
    fn aem_emu_kernel_count() -> c_int;
    fn aem_emu_shipped_kernels() -> c_int;
    fn aem_emu_f32_to_bf16_bits(f: f32) -> u16;
    fn aem_emu_bf16_bits_to_f32(b: u16) -> f32;
}

/// The emulator's `__float2bfloat16_rn` (kernels/emu/cuda_bf16.h), as bits: for the check that
/// it equals `half::bf16::from_f32` on every float.
pub fn f32_to_bf16_bits(f: f32) -> u16 {
    // SAFETY: a pure function of its argument (no pointers, no state).
    unsafe { aem_emu_f32_to_bf16_bits(f) }
}

/// The emulator's `__bfloat162float` (kernels/emu/cuda_bf16.h).
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    // SAFETY: a pure function of its argument (no pointers, no state).
    unsafe { aem_emu_bf16_bits_to_f32(b) }
}

/// The order in which the emulator resumes the fibers of a block after a barrier or warp
/// operation. Any correct kernel gives the same result in every order; a missing barrier
/// usually does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FiberOrder {
    /// Thread-index order.
    Default,
    /// Reverse thread-index order.
    Reverse,
    /// A seeded shuffle.
    Seeded(u64),
}

// The emulator's order and worker settings are process-global; serialise launches that change
// them so concurrent tests cannot interleave a setting and a launch.
static EMU_LOCK: Mutex<()> = Mutex::new(());

/// The CPU emulator as an executor.
pub struct EmuDevice {
    order: FiberOrder,
    workers: u32,
    limits: Limits,
}

impl EmuDevice {
    /// Checks that the shipped kernels are registered (the object holding them was linked).
    pub fn new() -> Result<Self> {
        // SAFETY: both functions only read the registry built by static constructors.
        let (shipped, registered) = unsafe { (aem_emu_shipped_kernels(), aem_emu_kernel_count()) };
        if registered < shipped || shipped <= 0 {
            return Err(Error::Device {
                backend: "emu",
                message: format!("{registered} kernels registered, {shipped} shipped"),
            });
        }
        Ok(EmuDevice {
            order: FiberOrder::Default,
            workers: 0,
            limits: Limits::SM90,
        })
    }

    /// Sets the fiber resume order for this device's launches.
    pub fn with_order(mut self, order: FiberOrder) -> Self {
        self.order = order;
        self
    }

    /// Impersonates a device's launch limits (default [`Limits::SM90`]): every launch is
    /// checked against them as a GPU would check it.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits this emulator impersonates.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sets the number of OS workers (0 = one per core).
    pub fn with_workers(mut self, workers: u32) -> Self {
        self.workers = workers;
        self
    }

    pub fn name(&self) -> String {
        format!(
            "emu (as {}, order {:?}, workers {})",
            self.limits.arch(),
            self.order,
            self.workers
        )
    }

    pub(super) fn launch(&self, kernel: &str, cfg: LaunchCfg, args: &[Arg]) -> Result<()> {
        let err = |message: String| Error::Device {
            backend: "emu",
            message,
        };
        let name = CString::new(kernel).map_err(|_| err(format!("bad kernel name {kernel:?}")))?;
        let sig: Vec<u8> = args.iter().map(Arg::sig).chain([0]).collect();
        // Each argument value lives in `vals`; `ptrs[i]` points at `vals[i]` (kernelParams).
        let mut vals: Vec<ArgVal> = args
            .iter()
            .map(|a| match *a {
                Arg::Buf(RawBuf::Emu(p)) => Ok(ArgVal::Ptr(p.cast())),
                Arg::Buf(_) => Err(err("a buffer of another executor".into())),
                Arg::Null => Ok(ArgVal::Ptr(std::ptr::null_mut())),
                Arg::I32(x) => Ok(ArgVal::I32(x)),
                Arg::U32(x) => Ok(ArgVal::U32(x)),
                Arg::F32(x) => Ok(ArgVal::F32(x)),
                Arg::Params(p) => Ok(ArgVal::Params(p)),
            })
            .collect::<Result<_>>()?;
        let mut ptrs: Vec<*mut c_void> = vals.iter_mut().map(ArgVal::as_ptr).collect();
        let mut msg = vec![0 as c_char; 512];
        let (mode, seed) = match self.order {
            FiberOrder::Default => (0, 0),
            FiberOrder::Reverse => (1, 0),
            FiberOrder::Seeded(s) => (2, s),
        };
        let _guard = EMU_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: `name` and `sig` are NUL-terminated; `ptrs` has one entry per signature char,
        // each pointing at a live value of the kernel parameter's type (the signature is checked
        // by the emulator against the registered kernel); buffer pointers come from live
        // `EmuBuf`s or from host slices borrowed for the duration of this call
        // (`Slice::host` / `SliceMut::host`; the launch runs to completion before it returns),
        // whose lengths the launcher checked against the kernel's shapes, and kernels write
        // only through the `SliceMut`/owned ones; `msg` has the length passed.
        let rc = unsafe {
            aem_emu_set_order(mode, seed);
            aem_emu_set_workers(self.workers);
            aem_emu_launch(
                name.as_ptr(),
                cfg.grid,
                1,
                1,
                cfg.block,
                1,
                1,
                cfg.smem as usize,
                ptrs.as_mut_ptr(),
                sig.as_ptr().cast(),
                msg.as_mut_ptr(),
                msg.len(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            // SAFETY: the emulator NUL-terminates the message within `msg.len()` bytes.
            let text = unsafe { CStr::from_ptr(msg.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            if text.contains("unknown kernel") {
                return Err(Error::KernelMissing {
                    module: "emu".into(),
                    name: kernel.into(),
                });
            }
            Err(err(text))
        }
    }
}

enum ArgVal {
    Ptr(*mut c_void),
    I32(i32),
    U32(u32),
    F32(f32),
    Params(super::HeadParams),
}

impl ArgVal {
    fn as_ptr(&mut self) -> *mut c_void {
        match self {
            ArgVal::Ptr(p) => (p as *mut *mut c_void).cast(),
            ArgVal::I32(x) => (x as *mut i32).cast(),
            ArgVal::U32(x) => (x as *mut u32).cast(),
            ArgVal::F32(x) => (x as *mut f32).cast(),
            ArgVal::Params(x) => (x as *mut super::HeadParams).cast(),
        }
    }
}

/// Emulator "device memory": a heap allocation owned here and written only by kernels
/// (through raw pointers) and by [`EmuBuf::write`]; never borrowed as a Rust slice across a
/// launch.
pub struct EmuBuf<T: Elem> {
    ptr: NonNull<T>,
    len: usize,
    _own: PhantomData<T>,
}

// SAFETY: EmuBuf owns its allocation like a Box<[T]> of Send + Sync elements.
unsafe impl<T: Elem> Send for EmuBuf<T> {}
// SAFETY: shared access only reads (to_vec) or hands out the pointer for a launch.
unsafe impl<T: Elem> Sync for EmuBuf<T> {}

impl<T: Elem> EmuBuf<T> {
    pub fn zeros(len: usize) -> Result<Self> {
        Self::from_vec(vec![T::default(); len])
    }

    pub fn from_slice(data: &[T]) -> Result<Self> {
        Self::from_vec(data.to_vec())
    }

    fn from_vec(v: Vec<T>) -> Result<Self> {
        let len = v.len();
        let b: Box<[T]> = v.into_boxed_slice();
        // Box::into_raw never returns null; an empty box gives a dangling, aligned pointer.
        let raw = Box::into_raw(b) as *mut T;
        let ptr = NonNull::new(raw).ok_or_else(|| Error::Device {
            backend: "emu",
            message: "allocation failed".into(),
        })?;
        Ok(EmuBuf {
            ptr,
            len,
            _own: PhantomData,
        })
    }

    pub(super) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr().cast()
    }

    pub(super) fn to_vec(&self) -> Vec<T> {
        // SAFETY: ptr/len describe the live allocation made in from_vec; no launch is running
        // (launches are synchronous), so nothing writes it concurrently.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }.to_vec()
    }

    /// The buffer as a slice. Launches are synchronous and take their buffers by the caller's
    /// borrow, so no kernel writes the buffer while this shared borrow lives.
    pub(super) fn as_slice(&self) -> &[T] {
        // SAFETY: ptr/len describe the live allocation made in from_vec (see above).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The buffer as a mutable slice (`&mut self` excludes launches reading it).
    pub(super) fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: ptr/len describe the live allocation made in from_vec; the borrow is unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    pub(super) fn write(&mut self, data: &[T]) {
        // SAFETY: lengths are equal (checked by Device::write); `&mut self` excludes launches.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
            .copy_from_slice(&data[..self.len]);
    }
}

impl<T: Elem> Drop for EmuBuf<T> {
    fn drop(&mut self) {
        // SAFETY: reconstitutes the Box<[T]> leaked in from_vec, exactly once.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            )));
        }
    }
}

/// Strides (row, column) of `op(X)` for a column-major stored matrix with leading dimension `ld`.
fn op_strides(t: Trans, ld: usize) -> (isize, isize) {
    // `ld` fits in i32 (checked by Gemm::check), so the casts are lossless.
    let ld = ld as isize;
    match t {
        Trans::N => (1, ld),
        Trans::T => (ld, 1),
    }
}

/// The emulator's GEMM: cuBLAS semantics (see [`Gemm`]) on the CPU. The windows of A and B are
/// widened to f32 (exact for f16), `matrixmultiply::sgemm` computes in f32, and only the `m×n`
/// elements of C the product defines are written back (rounded to nearest even for f16), so
/// the padding rows of a leading dimension `ldc > m` keep their values, as on the GPU. With
/// `beta == 0`, C is not read (a NaN there does not propagate).
/// The caller ran `Gemm::check` (dimensions, leading dimensions, extents within the windows).
pub(super) fn gemm<A: GemmElem, C: GemmElem>(
    g: &Gemm,
    a: (&EmuBuf<A>, usize),
    b: (&EmuBuf<A>, usize),
    c: (&mut EmuBuf<C>, usize),
) {
    let (m, n, k) = (g.m, g.n, g.k);
    let ext = |rows: usize, cols: usize, ld: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (cols - 1) * ld + rows
        }
    };
    let (ra, ca) = if g.transa == Trans::N { (m, k) } else { (k, m) };
    let (rb, cb) = if g.transb == Trans::N { (k, n) } else { (n, k) };
    let cw = &mut c.0.as_mut_slice()[c.1..c.1 + ext(m, n, g.ldc)];
    let mut cf = vec![0.0f32; cw.len()];
    if g.beta != 0.0 {
        cf.iter_mut()
            .zip(cw.iter())
            .for_each(|(d, s)| *d = s.to_f32());
    }
    if k > 0 {
        let widen = |x: &[A]| x.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
        let af = widen(&a.0.as_slice()[a.1..a.1 + ext(ra, ca, g.lda)]);
        let bf = widen(&b.0.as_slice()[b.1..b.1 + ext(rb, cb, g.ldb)]);
        let (rsa, csa) = op_strides(g.transa, g.lda);
        let (rsb, csb) = op_strides(g.transb, g.ldb);
        // SAFETY: with the strides of op_strides, op(A)(i, p) for i < m, p < k is
        // af[i·rsa + p·csa] ≤ ext(ra, ca, lda) − 1 = af.len() − 1, likewise for op(B) and bf,
        // and C(i, j) is cf[i + j·ldc] < ext(m, n, ldc) = cf.len(); cf is a unique Vec.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                g.alpha,
                af.as_ptr(),
                rsa,
                csa,
                bf.as_ptr(),
                rsb,
                csb,
                g.beta,
                cf.as_mut_ptr(),
                1,
                g.ldc as isize, // < 2^31 (Gemm::check)
            );
        }
    } else {
        cf.iter_mut().for_each(|x| *x *= g.beta);
    }
    for j in 0..n {
        let col = j * g.ldc;
        for (d, &s) in cw[col..col + m].iter_mut().zip(&cf[col..col + m]) {
            *d = C::from_f32(s);
        }
    }
}
