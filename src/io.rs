//! Tensor files: reading named tensors from safetensors with dtype checks, and atomic writes
//! (a temporary file in the destination's directory, then a rename), so a crash never leaves a
//! half-written output.

use crate::error::{Error, Result};
use half::f16;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A tensor's dtype, shape and raw little-endian bytes.
type RawView<'a> = (Dtype, Vec<usize>, &'a [u8]);

/// A safetensors file read into memory.
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

/// One tensor read back: its values in row-major order and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<T> {
    pub data: Vec<T>,
    pub shape: Vec<usize>,
}

impl TensorFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // Parse once up front so a bad file is reported on open.
        SafeTensors::deserialize(&bytes).map_err(|e| Error::File {
            path: path.to_path_buf(),
            reason: format!("not a safetensors file: {e}"),
        })?;
        Ok(TensorFile {
            path: path.to_path_buf(),
            bytes,
        })
    }

    fn err(&self, reason: String) -> Error {
        Error::File {
            path: self.path.clone(),
            reason,
        }
    }

    fn view(&self, name: &str) -> Result<Option<RawView<'_>>> {
        let st = SafeTensors::deserialize(&self.bytes)
            .map_err(|e| self.err(format!("not a safetensors file: {e}")))?;
        match st.tensor(name) {
            Ok(t) => Ok(Some((t.dtype(), t.shape().to_vec(), t.data()))),
            Err(safetensors::SafeTensorError::TensorNotFound(_)) => Ok(None),
            Err(e) => Err(self.err(format!("tensor {name}: {e}"))),
        }
    }

    /// Whether the file holds a tensor of this name.
    pub fn has(&self, name: &str) -> Result<bool> {
        Ok(self.view(name)?.is_some())
    }

    fn required(&self, name: &str) -> Result<RawView<'_>> {
        self.view(name)?
            .ok_or_else(|| self.err(format!("missing tensor {name:?}")))
    }

    /// An F16 tensor.
    pub fn f16(&self, name: &str) -> Result<Tensor<f16>> {
        let (dt, shape, data) = self.required(name)?;
        if dt != Dtype::F16 {
            return Err(self.err(format!("tensor {name:?}: expected dtype F16, got {dt:?}")));
        }
        let data = data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect();
        Ok(Tensor { data, shape })
    }

    /// An F32 tensor, or `None` when absent.
    pub fn f32_opt(&self, name: &str) -> Result<Option<Tensor<f32>>> {
        let Some((dt, shape, data)) = self.view(name)? else {
            return Ok(None);
        };
        if dt != Dtype::F32 {
            return Err(self.err(format!("tensor {name:?}: expected dtype F32, got {dt:?}")));
        }
        let data = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Some(Tensor { data, shape }))
    }

    /// A required F32 tensor.
    pub fn f32(&self, name: &str) -> Result<Tensor<f32>> {
        self.f32_opt(name)?
            .ok_or_else(|| self.err(format!("missing tensor {name:?}")))
    }

    /// An integer tensor stored as U32, I32 or I64, converted to u32 (negative or too large
    /// values are an error naming the index).
    pub fn index_u32(&self, name: &str) -> Result<Tensor<u32>> {
        let (dt, shape, data) = self.required(name)?;
        let bad = |i: usize, v: i64| {
            self.err(format!(
                "tensor {name:?}[{i}] = {v} does not fit an unsigned 32-bit index"
            ))
        };
        let data: Vec<u32> = match dt {
            Dtype::U32 => data
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .enumerate()
                .map(|(i, b)| {
                    let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    u32::try_from(v).map_err(|_| bad(i, v.into()))
                })
                .collect::<Result<_>>()?,
            Dtype::I64 => data
                .chunks_exact(8)
                .enumerate()
                .map(|(i, b)| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    let v = i64::from_le_bytes(a);
                    u32::try_from(v).map_err(|_| bad(i, v))
                })
                .collect::<Result<_>>()?,
            other => {
                return Err(self.err(format!(
                    "tensor {name:?}: expected an integer dtype (U32, I32 or I64), got {other:?}"
                )))
            }
        };
        Ok(Tensor { data, shape })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A tensor to write (bytes are the host's, little-endian on every supported target).
pub enum OutTensor {
    F32(Vec<f32>, Vec<usize>),
    F16(Vec<f16>, Vec<usize>),
    U32(Vec<u32>, Vec<usize>),
    I64(Vec<i64>, Vec<usize>),
}

impl OutTensor {
    fn bytes(&self) -> Vec<u8> {
        match self {
            OutTensor::F32(v, _) => bytemuck::cast_slice(v).to_vec(),
            OutTensor::F16(v, _) => bytemuck::cast_slice(v).to_vec(),
            OutTensor::U32(v, _) => bytemuck::cast_slice(v).to_vec(),
            OutTensor::I64(v, _) => bytemuck::cast_slice(v).to_vec(),
        }
    }
    fn meta(&self) -> (Dtype, &[usize]) {
        match self {
            OutTensor::F32(_, s) => (Dtype::F32, s),
            OutTensor::F16(_, s) => (Dtype::F16, s),
            OutTensor::U32(_, s) => (Dtype::U32, s),
            OutTensor::I64(_, s) => (Dtype::I64, s),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    // tempfile creates 0600; an output file should be readable like any other (0644).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Serialises named tensors (little-endian, as safetensors requires) and writes them atomically.
pub fn write_tensors(
    path: &Path,
    tensors: &[(&str, OutTensor)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let bufs: Vec<Vec<u8>> = tensors.iter().map(|(_, t)| t.bytes()).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, t), buf) in tensors.iter().zip(&bufs) {
        let (dt, shape) = t.meta();
        let view = TensorView::new(dt, shape.to_vec(), buf).map_err(|e| Error::File {
            path: path.to_path_buf(),
            reason: format!("tensor {name:?}: {e}"),
        })?;
        views.push((*name, view));
    }
    let bytes = safetensors::serialize(views, metadata).map_err(|e| Error::File {
        path: path.to_path_buf(),
        reason: format!("serialise: {e}"),
    })?;
    write_atomic(path, &bytes)
}
