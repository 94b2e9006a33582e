//! One launch path, two executors. The loss-head launcher (`head::launch`) is written once
//! against [`Device`]; [`Device::emu`] runs the real `.cu` kernels on the CPU through the
//! emulator, [`Device::cuda`] runs them on an NVIDIA GPU through cudarc.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod doctor;
pub mod emu;
pub mod limits;
#[cfg(feature = "cuda")]
pub mod nvrtc;

pub use limits::Limits;

use crate::error::{Error, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The kernel modules built from `kernels/*.cu` by build.rs.
pub mod modules {
    /// One `.cu` file: its kernels and the images a GPU can load.
    pub struct Module {
        pub name: &'static str,
        pub kernels: &'static [&'static str],
        /// The source with local includes inlined, for runtime NVRTC.
        pub source: &'static str,
        pub fatbin: Option<&'static [u8]>,
        /// (sm_XY, cubin)
        pub cubins: &'static [(&'static str, &'static [u8])],
        /// (compute_XY, PTX)
        pub ptx: &'static [(&'static str, &'static str)],
    }
    include!(concat!(env!("OUT_DIR"), "/aem_kernels.rs"));

    /// The module defining `kernel`.
    pub fn find(kernel: &str) -> Option<&'static Module> {
        MODULES.iter().find(|m| m.kernels.contains(&kernel))
    }
}

/// Mirror of `AemHeadParams` in `kernels/common.cuh` (12 × 4 bytes, passed by value).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct HeadParams {
    pub inv_temperature: f32,
    pub lambda: f32,
    pub delta: f32,
    pub clip_low: f32,
    pub clip_high: f32,
    pub dual_clip: f32,
    pub entropy_coef: f32,
    pub kl_coef: f32,
    pub grad_scale: f32,
    pub agg_mode: i32,
    pub agg_norm: f32,
    pub has_old_logp: i32,
}

const _: () = assert!(std::mem::size_of::<HeadParams>() == 48);

/// Plain-old-data element types that may live in device buffers.
#[cfg(feature = "cuda")]
pub trait Elem:
    bytemuck::Pod
    + Default
    + Send
    + Sync
    + 'static
    + cudarc::driver::DeviceRepr
    + cudarc::driver::ValidAsZeroBits
{
}
/// Plain-old-data element types that may live in device buffers.
#[cfg(not(feature = "cuda"))]
pub trait Elem: bytemuck::Pod + Default + Send + Sync + 'static {}
impl Elem for f32 {}
impl Elem for u32 {}
impl Elem for i32 {}
impl Elem for half::f16 {}
impl Elem for half::bf16 {}

/// A device buffer of `len` elements of `T`.
pub struct DevBuf<T: Elem> {
    inner: BufInner<T>,
    len: usize,
}

enum BufInner<T: Elem> {
    Emu(emu::EmuBuf<T>),
    #[cfg(feature = "cuda")]
    Cuda(cudarc::driver::CudaSlice<T>),
}

impl<T: Elem> DevBuf<T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The buffer as a kernel pointer argument.
    pub fn arg(&self) -> Arg<'_> {
        Arg::Buf(self.raw(0))
    }
    /// The buffer as a typed kernel pointer argument.
    pub fn ptr(&self) -> Ptr<'_, T> {
        Ptr {
            arg: self.arg(),
            _elem: std::marker::PhantomData,
        }
    }
    /// The buffer seen from element `offset` on (`offset ≤ len` checked by the view makers).
    fn raw(&self, offset: usize) -> RawBuf<'_> {
        let bytes = offset * std::mem::size_of::<T>();
        match &self.inner {
            BufInner::Emu(b) => RawBuf::Emu(b.ptr().wrapping_add(bytes)),
            #[cfg(feature = "cuda")]
            BufInner::Cuda(s) => RawBuf::Cuda(s, bytes as u64),
        }
    }

    /// Elements `range` of the buffer, as a kernel argument or a GEMM operand.
    pub fn view(&self, range: Range<usize>) -> Result<View<'_, T>> {
        check_range(range.clone(), self.len)?;
        Ok(View {
            buf: self,
            offset: range.start,
            len: range.end - range.start,
        })
    }

    /// The whole buffer as a [`View`].
    pub fn all(&self) -> View<'_, T> {
        View {
            buf: self,
            offset: 0,
            len: self.len,
        }
    }

    /// Elements `range` of the buffer, writable (a GEMM output).
    pub fn view_mut(&mut self, range: Range<usize>) -> Result<ViewMut<'_, T>> {
        check_range(range.clone(), self.len)?;
        Ok(ViewMut {
            offset: range.start,
            len: range.end - range.start,
            buf: self,
        })
    }

    /// The whole buffer as a [`ViewMut`].
    pub fn all_mut(&mut self) -> ViewMut<'_, T> {
        ViewMut {
            offset: 0,
            len: self.len,
            buf: self,
        }
    }
}

fn check_range(range: Range<usize>, len: usize) -> Result<()> {
    if range.start > range.end || range.end > len {
        return Err(Error::shape(
            "view",
            format!("a range within 0..{len}"),
            format!("{range:?}"),
        ));
    }
    Ok(())
}

/// Elements `offset..offset + len` of a device buffer, read-only.
#[derive(Clone, Copy)]
pub struct View<'a, T: Elem> {
    buf: &'a DevBuf<T>,
    offset: usize,
    len: usize,
}

impl<'a, T: Elem> View<'a, T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The window as a kernel pointer argument (its first element).
    pub fn arg(&self) -> Arg<'a> {
        Arg::Buf(self.buf.raw(self.offset))
    }
    /// The window as a typed kernel pointer argument.
    pub fn ptr(&self) -> Ptr<'a, T> {
        Ptr {
            arg: self.arg(),
            _elem: std::marker::PhantomData,
        }
    }
}

/// Elements `offset..offset + len` of a device buffer, writable.
pub struct ViewMut<'a, T: Elem> {
    buf: &'a mut DevBuf<T>,
    offset: usize,
    len: usize,
}

impl<T: Elem> ViewMut<'_, T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The window as a kernel pointer argument (its first element).
    pub fn arg(&self) -> Arg<'_> {
        Arg::Buf(self.buf.raw(self.offset))
    }
    /// The window as a typed kernel pointer argument.
    pub fn ptr(&self) -> Ptr<'_, T> {
        Ptr {
            arg: self.arg(),
            _elem: std::marker::PhantomData,
        }
    }
}

/// A borrowed window of `len` elements of `T` on a device, read-only: one of ours (`&DevBuf`, a
/// [`View`]) or the caller's — a cudarc `CudaSlice` / `CudaView` on the GPU, or host memory,
/// which is the emulator's device memory. No copy is made; the kernels read it in place. A
/// window of one executor launched on another is an error, not a crash.
#[derive(Clone, Copy)]
pub struct Slice<'a, T: Elem> {
    raw: RawBuf<'a>,
    len: usize,
    /// Whether the memory may also be written (it came from an owned buffer or a `&mut`): an
    /// in-place gradient needs it.
    writable: bool,
    _elem: std::marker::PhantomData<&'a [T]>,
}

/// A borrowed, writable window of `len` elements of `T` on a device (a gradient destination):
/// `&mut DevBuf`, or the caller's `&mut CudaSlice` / `CudaViewMut`, or `&mut [T]` host memory for
/// the emulator.
pub struct SliceMut<'a, T: Elem> {
    raw: RawBuf<'a>,
    len: usize,
    _elem: std::marker::PhantomData<&'a mut [T]>,
}

impl<'a, T: Elem> Slice<'a, T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Whether a kernel may write through it (in place).
    pub fn is_writable(&self) -> bool {
        self.writable
    }
    /// The window as a typed kernel pointer argument.
    pub fn ptr(&self) -> Ptr<'a, T> {
        Ptr {
            arg: Arg::Buf(self.raw),
            _elem: std::marker::PhantomData,
        }
    }
    /// Host memory as the emulator's device memory (read in place by its kernels; on a GPU
    /// launch it is refused as a buffer of another executor).
    pub fn host(data: &'a [T]) -> Self {
        Slice {
            raw: RawBuf::Emu(data.as_ptr().cast_mut().cast()),
            len: data.len(),
            writable: false,
            _elem: std::marker::PhantomData,
        }
    }
    /// A caller's cudarc slice, read in place on the device's stream.
    #[cfg(feature = "cuda")]
    pub fn cuda(s: &'a cudarc::driver::CudaSlice<T>) -> Self {
        Slice {
            raw: RawBuf::Cuda(s, 0),
            len: s.len(),
            writable: false,
            _elem: std::marker::PhantomData,
        }
    }
    /// A caller's cudarc view (a window of a `CudaSlice`), read in place.
    #[cfg(feature = "cuda")]
    pub fn cuda_view(s: &'a cudarc::driver::CudaView<'a, T>) -> Self {
        Slice {
            raw: RawBuf::Cuda(s, 0),
            len: s.len(),
            writable: false,
            _elem: std::marker::PhantomData,
        }
    }
}

impl<'a, T: Elem> SliceMut<'a, T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The window as a typed kernel pointer argument.
    pub fn ptr(&self) -> Ptr<'_, T> {
        Ptr {
            arg: Arg::Buf(self.raw),
            _elem: std::marker::PhantomData,
        }
    }
    /// The same memory, read-only and writable (for an in-place update, the logits argument).
    pub fn as_slice(&self) -> Slice<'_, T> {
        Slice {
            raw: self.raw,
            len: self.len,
            writable: true,
            _elem: std::marker::PhantomData,
        }
    }
    /// Host memory as the emulator's device memory, written in place by its kernels.
    pub fn host(data: &'a mut [T]) -> Self {
        SliceMut {
            raw: RawBuf::Emu(data.as_mut_ptr().cast()),
            len: data.len(),
            _elem: std::marker::PhantomData,
        }
    }
    /// A caller's cudarc slice, written in place on the device's stream.
    #[cfg(feature = "cuda")]
    pub fn cuda(s: &'a mut cudarc::driver::CudaSlice<T>) -> Self {
        let len = s.len();
        SliceMut {
            raw: RawBuf::Cuda(s, 0),
            len,
            _elem: std::marker::PhantomData,
        }
    }
    /// A caller's mutable cudarc view, written in place.
    #[cfg(feature = "cuda")]
    pub fn cuda_view(s: &'a mut cudarc::driver::CudaViewMut<'a, T>) -> Self {
        let len = s.len();
        SliceMut {
            raw: RawBuf::Cuda(s, 0),
            len,
            _elem: std::marker::PhantomData,
        }
    }
}

impl<'a, T: Elem> From<&'a DevBuf<T>> for Slice<'a, T> {
    /// An owned buffer: its memory is ours, so an in-place update may write it (the launcher
    /// has always allowed `GradDst::InPlace` over a `&DevBuf`).
    fn from(b: &'a DevBuf<T>) -> Self {
        Slice {
            raw: b.raw(0),
            len: b.len,
            writable: true,
            _elem: std::marker::PhantomData,
        }
    }
}

impl<'a, T: Elem> From<&'a mut DevBuf<T>> for Slice<'a, T> {
    fn from(b: &'a mut DevBuf<T>) -> Self {
        Slice::from(&*b)
    }
}

impl<'a, T: Elem> From<View<'a, T>> for Slice<'a, T> {
    fn from(v: View<'a, T>) -> Self {
        Slice {
            raw: v.buf.raw(v.offset),
            len: v.len,
            writable: true,
            _elem: std::marker::PhantomData,
        }
    }
}

impl<'a, T: Elem> From<&'a mut DevBuf<T>> for SliceMut<'a, T> {
    fn from(b: &'a mut DevBuf<T>) -> Self {
        SliceMut {
            raw: b.raw(0),
            len: b.len,
            _elem: std::marker::PhantomData,
        }
    }
}

impl<'a, T: Elem> From<ViewMut<'a, T>> for SliceMut<'a, T> {
    fn from(v: ViewMut<'a, T>) -> Self {
        SliceMut {
            raw: v.buf.raw(v.offset),
            len: v.len,
            _elem: std::marker::PhantomData,
        }
    }
}

/// Whether a GEMM operand is used as stored or transposed (cuBLAS `CUBLAS_OP_N` / `_T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trans {
    N,
    T,
}

/// The shape of one GEMM with cuBLAS semantics: column-major storage,
/// `C (m×n) = alpha·op(A) (m×k) · op(B) (k×n) + beta·C`, where a stored matrix's element
/// `(i, j)` is at `i + j·ld`. `A` is stored `m×k` (`N`) or `k×m` (`T`), `B` is `k×n` or `n×k`.
/// With `beta == 0`, `C` is not read. Compute is f32 for every element type.
///
/// Row-major habits: a row-major `(r, c)` matrix is a column-major `c×r` matrix with `ld = c`,
/// so row-major `Y = X·W` is the column-major `Yᵀ = Wᵀ·Xᵀ` (swap operands, keep transposes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    pub transa: Trans,
    pub transb: Trans,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub lda: usize,
    pub ldb: usize,
    pub beta: f32,
    pub ldc: usize,
}

/// Element types of GEMM operands: f16 (inputs f16 → output f16 or f32) and f32 (all f32),
/// the combinations `cublasGemmEx` accepts with `CUBLAS_COMPUTE_32F`.
pub trait GemmElem: Elem {
    const DTYPE: GemmDtype;
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
}

/// The element type of a GEMM operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmDtype {
    F16,
    F32,
}

impl GemmElem for f32 {
    const DTYPE: GemmDtype = GemmDtype::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl GemmElem for half::f16 {
    const DTYPE: GemmDtype = GemmDtype::F16;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
}

impl Gemm {
    /// Checks the shape as cuBLAS would (`ld ≥ rows`, sizes in `i32`) and that every element the
    /// product touches lies inside its window.
    pub fn check(&self, a_len: usize, b_len: usize, c_len: usize) -> Result<()> {
        let i32_of = |arg: &'static str, x: usize| {
            i32::try_from(x).map_err(|_| Error::shape(arg, "below 2^31", x))
        };
        for (arg, x) in [
            ("gemm m", self.m),
            ("gemm n", self.n),
            ("gemm k", self.k),
            ("gemm lda", self.lda),
            ("gemm ldb", self.ldb),
            ("gemm ldc", self.ldc),
        ] {
            i32_of(arg, x)?;
        }
        let (ra, ca) = match self.transa {
            Trans::N => (self.m, self.k),
            Trans::T => (self.k, self.m),
        };
        let (rb, cb) = match self.transb {
            Trans::N => (self.k, self.n),
            Trans::T => (self.n, self.k),
        };
        // Extent of a stored (rows, cols) matrix: the last element touched plus one.
        let extent = |rows: usize, cols: usize, ld: usize| -> Result<usize> {
            if rows == 0 || cols == 0 {
                return Ok(0);
            }
            (cols - 1)
                .checked_mul(ld)
                .and_then(|x| x.checked_add(rows))
                .ok_or_else(|| Error::shape("gemm", "a size below 2^64", "overflow"))
        };
        for (arg, rows, cols, ld, len) in [
            ("gemm A", ra, ca, self.lda, a_len),
            ("gemm B", rb, cb, self.ldb, b_len),
            ("gemm C", self.m, self.n, self.ldc, c_len),
        ] {
            if ld < rows.max(1) {
                return Err(Error::shape(
                    arg,
                    format!("leading dimension >= {}", rows.max(1)),
                    ld,
                ));
            }
            // A and B are read only when the product is not empty.
            let used = arg == "gemm C" || (self.m > 0 && self.n > 0 && self.k > 0);
            let need = extent(rows, cols, ld)?;
            if used && need > len {
                return Err(Error::shape(
                    arg,
                    format!("{need} elements ({rows}x{cols}, ld {ld})"),
                    format!("{len}"),
                ));
            }
        }
        Ok(())
    }
}

/// A type-erased buffer reference.
#[derive(Clone, Copy)]
pub enum RawBuf<'a> {
    Emu(*mut u8),
    /// A CUDA buffer and a byte offset into it.
    #[cfg(feature = "cuda")]
    Cuda(&'a dyn cuda::AnySlice, u64),
    #[doc(hidden)]
    _Phantom(std::marker::PhantomData<&'a ()>),
}

/// A typed kernel pointer argument: a buffer (or view) of `T`, or null for an optional input.
/// The generated launchers ([`kernels`]) take these, so a buffer of the wrong element type does
/// not compile.
#[derive(Clone, Copy)]
pub struct Ptr<'a, T: Elem> {
    arg: Arg<'a>,
    _elem: std::marker::PhantomData<T>,
}

impl<'a, T: Elem> Ptr<'a, T> {
    /// A null pointer (an absent optional input).
    pub fn null() -> Self {
        Ptr {
            arg: Arg::Null,
            _elem: std::marker::PhantomData,
        }
    }

    /// The buffer, or null when absent.
    pub fn opt(buf: Option<&'a DevBuf<T>>) -> Self {
        buf.map_or_else(Self::null, DevBuf::ptr)
    }

    /// The untyped argument.
    pub fn arg(&self) -> Arg<'a> {
        self.arg
    }
}

/// Typed launchers generated by build.rs, one struct per kernel (`kernels::TokenStatsF16V2`…):
/// fields named and typed as the kernel's parameters, in its order.
///
/// Every argument is named, and a buffer of the wrong element type does not compile:
///
/// ```
/// use aem::device::{kernels, HeadParams, Ptr};
/// fn reduce<'a>(tl: Ptr<'a, f32>, rr: Ptr<'a, i32>, rl: Ptr<'a, u32>, loss: Ptr<'a, f32>) -> kernels::LossReduceV1<'a> {
///     kernels::LossReduceV1 { token_loss: tl, row_resp: rr, resp_len: rl, t: 4, loss, p: HeadParams::default() }
/// }
/// ```
///
/// ```compile_fail
/// use aem::device::{kernels, HeadParams, Ptr};
/// // row_resp (i32) and resp_len (u32) swapped:
/// fn reduce<'a>(tl: Ptr<'a, f32>, rr: Ptr<'a, i32>, rl: Ptr<'a, u32>, loss: Ptr<'a, f32>) -> kernels::LossReduceV1<'a> {
///     kernels::LossReduceV1 { token_loss: tl, row_resp: rl, resp_len: rr, t: 4, loss, p: HeadParams::default() }
/// }
/// ```
#[allow(clippy::too_many_arguments, missing_docs)]
pub mod kernels {
    use super::{Arg, Device, HeadParams, LaunchCfg, Ptr};
    use crate::error::Result;
    include!(concat!(env!("OUT_DIR"), "/aem_launchers.rs"));
}

/// One kernel argument, in the kernel signature's order.
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    Buf(RawBuf<'a>),
    /// A null pointer (an optional input that is absent).
    Null,
    I32(i32),
    U32(u32),
    F32(f32),
    Params(HeadParams),
}

impl Arg<'_> {
    /// The emulator's signature character for this argument.
    fn sig(&self) -> u8 {
        match self {
            Arg::Buf(_) | Arg::Null => b'p',
            Arg::I32(_) => b'i',
            Arg::U32(_) => b'u',
            Arg::F32(_) => b'f',
            Arg::Params(_) => b's',
        }
    }
}

/// Grid and block sizes (x only: every kernel here is 1-D) and dynamic shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchCfg {
    pub grid: u32,
    pub block: u32,
    pub smem: u32,
}

/// Where a computation runs: the one backend choice of `aem head`, `aem model`, `aem train`,
/// `aem eval`, the trainer's `run.backend` and the library (and, as [`Device::backend`], which
/// executor a device is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// GPU 0 when one opens, else the CPU path.
    #[default]
    Auto,
    /// The CPU path: the loss head's reference (f64), the model's `Gpt<f16>`.
    Cpu,
    /// The CUDA kernels on the CPU emulator (checks the launch code; slower than `cpu`).
    Emu,
    /// The CUDA kernels on GPU 0.
    Cuda,
}

impl Backend {
    /// The value in configs and on the command line (serde's and clap's name; a test holds
    /// them equal), as a `&'static str` for errors and messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Cpu => "cpu",
            Backend::Emu => "emu",
            Backend::Cuda => "cuda",
        }
    }

    /// Opens the backend: `cpu` needs nothing, `emu` starts the emulator, `cuda` GPU 0 (a
    /// typed error naming the reason when there is none), and `auto` GPU 0 when one opens, else
    /// the CPU path (saying why).
    pub fn open(self) -> Result<Opened> {
        let (backend, device, note) = match self {
            Backend::Cpu => (self, None, None),
            Backend::Emu => (self, Some(Device::emu()?), None),
            Backend::Cuda => (self, Some(Device::cuda(0)?), None),
            Backend::Auto => match Device::cuda(0) {
                Ok(d) => (Backend::Cuda, Some(d), None),
                Err(e) => (Backend::Cpu, None, Some(format!("auto: {e}"))),
            },
        };
        Ok(Opened {
            backend,
            device,
            note,
        })
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend resolved and opened: `auto` became `cpu` or `cuda`.
pub struct Opened {
    /// The backend that runs (never `Auto`).
    pub backend: Backend,
    /// The device of `emu` and `cuda`; None for `cpu`.
    pub device: Option<Device>,
    /// Why `auto` chose the CPU path (no usable GPU), for the user.
    pub note: Option<String>,
}

/// An executor of the kernels.
pub enum Device {
    Emu(emu::EmuDevice),
    #[cfg(feature = "cuda")]
    Cuda(cuda::CudaDevice),
}

impl Device {
    /// The CPU emulator (always available).
    pub fn emu() -> Result<Self> {
        Ok(Device::Emu(emu::EmuDevice::new()?))
    }

    /// The GPU of a caller's cudarc stream (its context shared; every operation enqueued on
    /// that stream, see [`cuda::CudaDevice::on_stream`]).
    #[cfg(feature = "cuda")]
    pub fn cuda_on_stream(stream: std::sync::Arc<cudarc::driver::CudaStream>) -> Result<Self> {
        Ok(Device::Cuda(cuda::CudaDevice::on_stream(stream)?))
    }

    /// The CUDA device `ordinal`; a typed [`Error::NoDevice`] when no driver or device exists.
    pub fn cuda(ordinal: usize) -> Result<Self> {
        #[cfg(feature = "cuda")]
        {
            Ok(Device::Cuda(cuda::CudaDevice::new(ordinal)?))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = ordinal;
            Err(Error::NoDevice("built without the `cuda` feature".into()))
        }
    }

    /// Which executor this is: [`Backend::Emu`] or [`Backend::Cuda`].
    pub fn backend(&self) -> Backend {
        match self {
            Device::Emu(_) => Backend::Emu,
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => Backend::Cuda,
        }
    }

    /// Human-readable name (`emu (2 workers)`, `cuda: NVIDIA H100 …`).
    pub fn name(&self) -> String {
        match self {
            Device::Emu(d) => d.name(),
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => d.name(),
        }
    }

    /// What the device allows one launch: the GPU's attributes, or the table the emulator
    /// impersonates ([`Limits::SM90`] unless set with [`emu::EmuDevice::with_limits`]).
    pub fn limits(&self) -> Limits {
        match self {
            Device::Emu(d) => d.limits(),
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => d.limits(),
        }
    }

    /// `kernel`'s static shared memory (bytes): the driver's figure on a GPU, the table
    /// [`limits::STATIC_SMEM`] on the emulator.
    pub fn static_smem(&self, kernel: &'static str) -> Result<u32> {
        match self {
            Device::Emu(_) => limits::static_smem(kernel),
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => d.static_smem(kernel),
        }
    }

    /// The most dynamic shared memory one launch of `kernel` may use (bytes): the device's
    /// opt-in maximum less the kernel's static shared memory.
    pub fn max_dyn_smem(&self, kernel: &'static str) -> Result<u32> {
        Ok(self.limits().max_dyn_smem(self.static_smem(kernel)?))
    }

    /// Copies host data to a new device buffer.
    pub fn htod<T: Elem>(&self, data: &[T]) -> Result<DevBuf<T>> {
        let inner = match self {
            Device::Emu(_) => BufInner::Emu(emu::EmuBuf::from_slice(data)?),
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => BufInner::Cuda(d.htod(data)?),
        };
        Ok(DevBuf {
            inner,
            len: data.len(),
        })
    }

    /// A new zeroed buffer.
    pub fn zeros<T: Elem>(&self, len: usize) -> Result<DevBuf<T>> {
        let inner = match self {
            Device::Emu(_) => BufInner::Emu(emu::EmuBuf::zeros(len)?),
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => BufInner::Cuda(d.zeros(len)?),
        };
        Ok(DevBuf { inner, len })
    }

    /// Overwrites a buffer with host data of the same length.
    pub fn write<T: Elem>(&self, buf: &mut DevBuf<T>, data: &[T]) -> Result<()> {
        if data.len() != buf.len {
            return Err(Error::shape(
                "write",
                format!("({})", buf.len),
                format!("({})", data.len()),
            ));
        }
        match (&mut buf.inner, self) {
            (BufInner::Emu(b), Device::Emu(_)) => {
                b.write(data);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            (BufInner::Cuda(s), Device::Cuda(d)) => d.write(s, data),
            #[allow(unreachable_patterns)]
            _ => Err(foreign()),
        }
    }

    /// Copies a device buffer back to the host.
    pub fn dtoh<T: Elem>(&self, buf: &DevBuf<T>) -> Result<Vec<T>> {
        match (&buf.inner, self) {
            (BufInner::Emu(b), Device::Emu(_)) => Ok(b.to_vec()),
            #[cfg(feature = "cuda")]
            (BufInner::Cuda(s), Device::Cuda(d)) => {
                // Empty buffers are allocated with one element (cudarc rejects zero lengths).
                let mut v = d.dtoh(s)?;
                v.truncate(buf.len);
                Ok(v)
            }
            #[allow(unreachable_patterns)]
            _ => Err(foreign()),
        }
    }

    /// Copies `src` into `dst` on the device (same length); used to measure device bandwidth.
    pub fn copy<T: Elem>(&self, src: &DevBuf<T>, dst: &mut DevBuf<T>) -> Result<()> {
        if src.len != dst.len {
            return Err(Error::shape(
                "copy",
                format!("({})", dst.len),
                format!("({})", src.len),
            ));
        }
        match (&src.inner, &mut dst.inner, self) {
            (BufInner::Emu(a), BufInner::Emu(b), Device::Emu(_)) => {
                b.write(&a.to_vec());
                Ok(())
            }
            #[cfg(feature = "cuda")]
            (BufInner::Cuda(a), BufInner::Cuda(b), Device::Cuda(d)) => d.copy(a, b),
            #[allow(unreachable_patterns)]
            _ => Err(foreign()),
        }
    }

    /// Launches `kernel` (looked up in the modules build.rs made) with `args` in signature order.
    pub fn launch(&self, kernel: &'static str, cfg: LaunchCfg, args: &[Arg]) -> Result<()> {
        if cfg.grid == 0 {
            return Ok(()); // nothing to do (e.g. R = 0); CUDA rejects empty grids
        }
        match self {
            Device::Emu(d) => {
                // The decision a GPU with this table takes (the CUDA executor checks the same
                // way, with the driver's figures).
                d.limits()
                    .check(kernel, cfg, limits::static_smem(kernel)?, None)?;
                d.launch(kernel, cfg, args)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => d.launch(kernel, cfg, args),
        }
    }

    /// One GEMM with cuBLAS semantics (see [`Gemm`]): `cublasGemmEx` with f32 compute on a GPU,
    /// an f32 CPU GEMM on the emulator. Inputs f16 → output f16 or f32; inputs f32 → output f32.
    pub fn gemm<A: GemmElem, C: GemmElem>(
        &self,
        g: &Gemm,
        a: View<'_, A>,
        b: View<'_, A>,
        c: ViewMut<'_, C>,
    ) -> Result<()> {
        if A::DTYPE == GemmDtype::F32 && C::DTYPE == GemmDtype::F16 {
            return Err(Error::shape("gemm C", "f32 for f32 inputs", "f16"));
        }
        g.check(a.len, b.len, c.len)?;
        if g.m == 0 || g.n == 0 {
            return Ok(()); // cuBLAS returns at once
        }
        match (&a.buf.inner, &b.buf.inner, &mut c.buf.inner, self) {
            (BufInner::Emu(ab), BufInner::Emu(bb), BufInner::Emu(cb), Device::Emu(_)) => {
                emu::gemm(g, (ab, a.offset), (bb, b.offset), (cb, c.offset));
                Ok(())
            }
            #[cfg(feature = "cuda")]
            (BufInner::Cuda(ab), BufInner::Cuda(bb), BufInner::Cuda(cb), Device::Cuda(d)) => d
                .gemm::<A, C>(
                    g,
                    (ab, a.offset * std::mem::size_of::<A>()),
                    (bb, b.offset * std::mem::size_of::<A>()),
                    (cb, c.offset * std::mem::size_of::<C>()),
                ),
            #[allow(unreachable_patterns)]
            _ => Err(foreign()),
        }
    }

    /// Waits for all launched work.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Emu(_) => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => d.synchronize(),
        }
    }
}

fn foreign() -> Error {
    Error::Device {
        backend: "device",
        message: "buffer belongs to another executor".into(),
    }
}
