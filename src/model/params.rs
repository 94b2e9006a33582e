//! Parameter layout: 16 tensors in one contiguous buffer (llm.c `ParameterTensors`).
//!
//! Every per-layer tensor is stored stacked over `L`, each layer's slice in the Hugging Face GPT-2
//! layout (`Conv1D` weights are input-major: `y = x · W + b` with `W: (in, out)`), so a checkpoint
//! writes each layer's slice as is under its HF name.

use std::ops::Range;

use super::GptConfig;

/// The 16 parameter tensors, in storage order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamId {
    /// (V, C): token embedding, tied with the output projection.
    Wte,
    /// (maxT, C): learned positions.
    Wpe,
    /// (L, C)
    Ln1W,
    /// (L, C)
    Ln1B,
    /// (L, C, 3C): q, k, v projection (HF `attn.c_attn`).
    QkvW,
    /// (L, 3C)
    QkvB,
    /// (L, C, C): attention output projection (HF `attn.c_proj`).
    AttProjW,
    /// (L, C)
    AttProjB,
    /// (L, C)
    Ln2W,
    /// (L, C)
    Ln2B,
    /// (L, C, 4C): MLP up projection (HF `mlp.c_fc`).
    FcW,
    /// (L, 4C)
    FcB,
    /// (L, 4C, C): MLP down projection (HF `mlp.c_proj`).
    FcProjW,
    /// (L, C)
    FcProjB,
    /// (C)
    LnfW,
    /// (C)
    LnfB,
}

/// Number of parameter tensors.
pub const NUM_PARAM_TENSORS: usize = 16;

impl ParamId {
    /// All tensors in storage order.
    pub const ALL: [ParamId; NUM_PARAM_TENSORS] = [
        ParamId::Wte,
        ParamId::Wpe,
        ParamId::Ln1W,
        ParamId::Ln1B,
        ParamId::QkvW,
        ParamId::QkvB,
        ParamId::AttProjW,
        ParamId::AttProjB,
        ParamId::Ln2W,
        ParamId::Ln2B,
        ParamId::FcW,
        ParamId::FcB,
        ParamId::FcProjW,
        ParamId::FcProjB,
        ParamId::LnfW,
        ParamId::LnfB,
    ];

    /// Hugging Face GPT-2 name; `{l}` is replaced by the layer index for per-layer tensors.
    pub fn hf_name(self) -> &'static str {
        match self {
            ParamId::Wte => "wte.weight",
            ParamId::Wpe => "wpe.weight",
            ParamId::Ln1W => "h.{l}.ln_1.weight",
            ParamId::Ln1B => "h.{l}.ln_1.bias",
            ParamId::QkvW => "h.{l}.attn.c_attn.weight",
            ParamId::QkvB => "h.{l}.attn.c_attn.bias",
            ParamId::AttProjW => "h.{l}.attn.c_proj.weight",
            ParamId::AttProjB => "h.{l}.attn.c_proj.bias",
            ParamId::Ln2W => "h.{l}.ln_2.weight",
            ParamId::Ln2B => "h.{l}.ln_2.bias",
            ParamId::FcW => "h.{l}.mlp.c_fc.weight",
            ParamId::FcB => "h.{l}.mlp.c_fc.bias",
            ParamId::FcProjW => "h.{l}.mlp.c_proj.weight",
            ParamId::FcProjB => "h.{l}.mlp.c_proj.bias",
            ParamId::LnfW => "ln_f.weight",
            ParamId::LnfB => "ln_f.bias",
        }
    }

    /// Whether the tensor is stacked over layers.
    pub fn per_layer(self) -> bool {
        !matches!(
            self,
            ParamId::Wte | ParamId::Wpe | ParamId::LnfW | ParamId::LnfB
        )
    }

    /// Whether AdamW applies weight decay (matrices and embeddings, not biases or norms).
    pub fn decays(self) -> bool {
        matches!(
            self,
            ParamId::Wte
                | ParamId::Wpe
                | ParamId::QkvW
                | ParamId::AttProjW
                | ParamId::FcW
                | ParamId::FcProjW
        )
    }

    /// Whether the tensor is a residual-stream output projection (init scaled by 1/sqrt(2L)).
    pub fn residual_proj(self) -> bool {
        matches!(self, ParamId::AttProjW | ParamId::FcProjW)
    }

    /// Storage index in [`ParamId::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Offsets and shapes of the parameter tensors for one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamLayout {
    /// Per-layer shape (HF shape) of each tensor, indexed by [`ParamId::index`].
    shapes: [Vec<usize>; NUM_PARAM_TENSORS],
    /// Start offset of each tensor (all layers) in the flat buffer.
    offsets: [usize; NUM_PARAM_TENSORS],
    /// L
    layers: usize,
    /// Total number of parameters.
    total: usize,
}

impl ParamLayout {
    /// Layout for a validated config (`cfg.validate()` guarantees no overflow).
    pub fn new(cfg: &GptConfig) -> Self {
        let (v, t, c, l) = (cfg.vocab, cfg.context, cfg.d_model, cfg.layers);
        let shapes: [Vec<usize>; NUM_PARAM_TENSORS] = [
            vec![v, c],
            vec![t, c],
            vec![c],
            vec![c],
            vec![c, 3 * c],
            vec![3 * c],
            vec![c, c],
            vec![c],
            vec![c],
            vec![c],
            vec![c, 4 * c],
            vec![4 * c],
            vec![4 * c, c],
            vec![c],
            vec![c],
            vec![c],
        ];
        let mut offsets = [0usize; NUM_PARAM_TENSORS];
        let mut total = 0usize;
        for id in ParamId::ALL {
            offsets[id.index()] = total;
            let n: usize = shapes[id.index()].iter().product();
            total += if id.per_layer() { n * l } else { n };
        }
        Self {
            shapes,
            offsets,
            layers: l,
            total,
        }
    }

    /// Total number of parameters.
    pub fn total(&self) -> usize {
        self.total
    }

    /// L
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Per-layer (HF) shape of a tensor.
    pub fn shape(&self, id: ParamId) -> &[usize] {
        &self.shapes[id.index()]
    }

    /// Elements of one layer's slice (or of the whole tensor if not per layer).
    pub fn numel(&self, id: ParamId) -> usize {
        self.shapes[id.index()].iter().product()
    }

    /// Range of the whole tensor (all layers) in the flat buffer.
    pub fn range(&self, id: ParamId) -> Range<usize> {
        let n = self.numel(id) * if id.per_layer() { self.layers } else { 1 };
        let o = self.offsets[id.index()];
        o..o + n
    }

    /// Range of layer `l` of a per-layer tensor (the whole tensor otherwise).
    pub fn layer_range(&self, id: ParamId, l: usize) -> Range<usize> {
        let n = self.numel(id);
        let o = self.offsets[id.index()] + if id.per_layer() { l * n } else { 0 };
        o..o + n
    }

    /// Every HF-named tensor: (name, shape, range in the flat buffer), in storage order.
    pub fn hf_tensors(&self) -> Vec<(String, Vec<usize>, Range<usize>)> {
        let mut out = Vec::new();
        for id in ParamId::ALL {
            if id.per_layer() {
                for l in 0..self.layers {
                    let name = id.hf_name().replace("{l}", &l.to_string());
                    out.push((name, self.shape(id).to_vec(), self.layer_range(id, l)));
                }
            } else {
                out.push((
                    id.hf_name().to_string(),
                    self.shape(id).to_vec(),
                    self.range(id),
                ));
            }
        }
        out
    }
}
