//! Tensor files: reading named tensors from safetensors with dtype checks, and atomic writes
//! (a temporary file in the destination's directory, then a rename), so a crash never leaves a
//! half-written output.

use crate::error::{Error, Result};
use half::{bf16, f16};
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

/// Refuses a path that exists but is not a regular file (a FIFO, a device, a directory, a
/// socket): reading one could block forever, writing over one would replace it.
fn require_regular(path: &Path, md: &std::fs::Metadata, role: &str) -> Result<()> {
    if md.is_file() {
        return Ok(());
    }
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        "a directory"
    } else {
        special_kind(&ft)
    };
    Err(Error::File {
        path: path.to_path_buf(),
        reason: format!("{role} is {kind}, not a regular file: refused"),
    })
}

#[cfg(unix)]
fn special_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

/// Reads a whole input file, refusing anything but a regular file (checked before opening, so a
/// FIFO never blocks, and again on the opened handle).
pub fn read_input(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    require_regular(path, &std::fs::metadata(path).map_err(io)?, "input")?;
    let mut f = std::fs::File::open(path).map_err(io)?;
    require_regular(path, &f.metadata().map_err(io)?, "input")?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// [`read_input`] as UTF-8 text.
pub fn read_input_text(path: &Path) -> Result<String> {
    String::from_utf8(read_input(path)?).map_err(|e| Error::File {
        path: path.to_path_buf(),
        reason: format!("not UTF-8 text: {e}"),
    })
}

/// Checks that `output` may be written: if it exists it must be a regular file, and it must not
/// be the same file as any of `inputs` (writing would destroy the data being read).
pub fn check_output(output: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(md) = std::fs::metadata(output) else {
        return Ok(()); // absent (or unreadable: the write reports why)
    };
    require_regular(output, &md, "output")?;
    for input in inputs {
        if let Ok(imd) = std::fs::metadata(input) {
            if same_file(&md, &imd) {
                return Err(Error::File {
                    path: output.to_path_buf(),
                    reason: format!(
                        "output is the same file as the input {}: refused",
                        input.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    false
}

impl TensorFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = read_input(path)?;
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
        match self.half(name)? {
            Half::F16(t) => Ok(t),
            Half::Bf16(_) => {
                Err(self.err(format!("tensor {name:?}: expected dtype F16, got BF16")))
            }
        }
    }

    /// A 16-bit float tensor, F16 or BF16.
    pub fn half(&self, name: &str) -> Result<Half> {
        let (dt, shape, data) = self.required(name)?;
        let words = data
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]));
        match dt {
            Dtype::F16 => Ok(Half::F16(Tensor {
                data: words.map(f16::from_bits).collect(),
                shape,
            })),
            Dtype::BF16 => Ok(Half::Bf16(Tensor {
                data: words.map(bf16::from_bits).collect(),
                shape,
            })),
            other => Err(self.err(format!(
                "tensor {name:?}: expected dtype F16 or BF16, got {other:?}"
            ))),
        }
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

/// A 16-bit float tensor as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Half {
    F16(Tensor<f16>),
    Bf16(Tensor<bf16>),
}

/// A tensor to write (bytes are the host's, little-endian on every supported target).
#[derive(Debug, Clone, PartialEq)]
pub enum OutTensor {
    F32(Vec<f32>, Vec<usize>),
    F16(Vec<f16>, Vec<usize>),
    Bf16(Vec<bf16>, Vec<usize>),
    U32(Vec<u32>, Vec<usize>),
    I64(Vec<i64>, Vec<usize>),
}

impl OutTensor {
    fn bytes(&self) -> Vec<u8> {
        match self {
            OutTensor::F32(v, _) => bytemuck::cast_slice(v).to_vec(),
            OutTensor::F16(v, _) => bytemuck::cast_slice(v).to_vec(),
            OutTensor::Bf16(v, _) => bytemuck::cast_slice(v).to_vec(),
            OutTensor::U32(v, _) => bytemuck::cast_slice(v).to_vec(),
            OutTensor::I64(v, _) => bytemuck::cast_slice(v).to_vec(),
        }
    }
    fn meta(&self) -> (Dtype, &[usize]) {
        match self {
            OutTensor::F32(_, s) => (Dtype::F32, s),
            OutTensor::F16(_, s) => (Dtype::F16, s),
            OutTensor::Bf16(_, s) => (Dtype::BF16, s),
            OutTensor::U32(_, s) => (Dtype::U32, s),
            OutTensor::I64(_, s) => (Dtype::I64, s),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the
/// directory (so the rename survives a power cut). A `path` that exists and is not a regular
/// file is refused (never replaced).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    check_output(path, &[])?;
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
    sync_dir(&dir);
    Ok(())
}

/// Best-effort fsync of a directory (makes a rename or a new file durable; not every file system
/// supports it, so failures are ignored).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
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
