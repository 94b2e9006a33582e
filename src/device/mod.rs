//! One launch path, two executors. The loss-head launcher (`head::launch`) is written once
//! against [`Device`]; [`Device::emu`] runs the real `.cu` kernels on the CPU through the
//! emulator, [`Device::cuda`] runs them on an NVIDIA GPU through cudarc.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod emu;

use crate::error::{Error, Result};

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
        Arg::Buf(self.raw())
    }
    fn raw(&self) -> RawBuf<'_> {
        match &self.inner {
            BufInner::Emu(b) => RawBuf::Emu(b.ptr()),
            #[cfg(feature = "cuda")]
            BufInner::Cuda(s) => RawBuf::Cuda(s),
        }
    }
}

/// A type-erased buffer reference.
#[derive(Clone, Copy)]
pub enum RawBuf<'a> {
    Emu(*mut u8),
    #[cfg(feature = "cuda")]
    Cuda(&'a dyn cuda::AnySlice),
    #[doc(hidden)]
    _Phantom(std::marker::PhantomData<&'a ()>),
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

/// Which executor a [`Device`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Emu,
    Cuda,
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

    pub fn kind(&self) -> Kind {
        match self {
            Device::Emu(_) => Kind::Emu,
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => Kind::Cuda,
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

    /// Largest dynamic shared memory per block the device allows (bytes).
    pub fn max_dyn_smem(&self) -> u32 {
        match self {
            Device::Emu(_) => emu::MAX_DYN_SMEM,
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => d.max_dyn_smem(),
        }
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
            Device::Emu(d) => d.launch(kernel, cfg, args),
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => d.launch(kernel, cfg, args),
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
