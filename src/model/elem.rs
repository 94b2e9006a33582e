//! Storage element of parameters and saved activations: `f16` (production) or `f32` (exact).

use half::f16;
use half::slice::HalfFloatSliceExt;

/// A storage float: read into `f32` for compute, written back from `f32`.
pub trait Elem: Copy + Default + Send + Sync + bytemuck::Pod + std::fmt::Debug + 'static {
    /// The safetensors dtype of this storage type.
    const DTYPE: safetensors::Dtype;
    /// Rounds an `f32` to storage.
    fn from_f32(x: f32) -> Self;
    /// Widens to `f32` (exact).
    fn to_f32(self) -> f32;
    /// Widens a slice; `dst.len() == src.len()`.
    fn widen(src: &[Self], dst: &mut [f32]);
    /// Rounds a slice; `dst.len() == src.len()`.
    fn narrow(src: &[f32], dst: &mut [Self]);
}

impl Elem for f16 {
    const DTYPE: safetensors::Dtype = safetensors::Dtype::F16;
    #[inline]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[inline]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        src[..n].convert_to_f32_slice(&mut dst[..n]);
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        let n = src.len().min(dst.len());
        dst[..n].convert_from_f32_slice(&src[..n]);
    }
}

impl Elem for f32 {
    const DTYPE: safetensors::Dtype = safetensors::Dtype::F32;
    #[inline]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
    }
}
