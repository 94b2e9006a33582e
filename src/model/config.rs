//! Model configuration.

use super::{ModelError, Result};

/// GPT-2 hyperparameters. `Default` is sized for 2 CPU cores (~0.1M parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptConfig {
    /// V: vocabulary size (HF `vocab_size`).
    pub vocab: usize,
    /// maxT: maximum sequence length (HF `n_positions`).
    pub context: usize,
    /// C: channels (HF `n_embd`).
    pub d_model: usize,
    /// L: transformer blocks (HF `n_layer`).
    pub layers: usize,
    /// NH: attention heads (HF `n_head`).
    pub heads: usize,
}

impl Default for GptConfig {
    fn default() -> Self {
        Self {
            vocab: 64,
            context: 64,
            d_model: 64,
            layers: 2,
            heads: 4,
        }
    }
}

impl GptConfig {
    /// Checks the config: all sizes positive, `heads` divides `d_model`, sizes fit in memory
    /// arithmetic (`4·C`, `3·C`, `V·C` …) without overflow and token ids fit in `u32`.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("vocab", self.vocab),
            ("context", self.context),
            ("d_model", self.d_model),
            ("layers", self.layers),
            ("heads", self.heads),
        ] {
            if v == 0 {
                return Err(ModelError::ZeroDim { field });
            }
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return Err(ModelError::HeadsDontDivide {
                d_model: self.d_model,
                heads: self.heads,
            });
        }
        if u32::try_from(self.vocab).is_err() {
            return Err(ModelError::Overflow {
                what: "vocab (token ids are u32)",
            });
        }
        // The largest products used for buffer sizes; checked once here, so layout code can
        // multiply freely afterwards.
        let per_layer = self
            .d_model
            .checked_mul(self.d_model)
            .and_then(|cc| cc.checked_mul(12))
            .and_then(|w| w.checked_add(self.d_model.checked_mul(13)?));
        let total = per_layer
            .and_then(|p| p.checked_mul(self.layers))
            .and_then(|p| p.checked_add(self.vocab.checked_mul(self.d_model)?))
            .and_then(|p| p.checked_add(self.context.checked_mul(self.d_model)?))
            .and_then(|p| p.checked_mul(4)); // bytes of f32 masters
        if total.is_none() {
            return Err(ModelError::Overflow {
                what: "parameter count",
            });
        }
        // Parameters (E = f16) plus f32 gradients and three f32 AdamW tensors: 18 bytes each.
        let params = super::params::ParamLayout::new(self).total();
        crate::mem::check(
            || {
                format!(
                    "a model with vocab {}, context {}, d_model {}, layers {} ({params} parameters)",
                    self.vocab, self.context, self.d_model, self.layers
                )
            },
            crate::mem::product(&[params, 18]),
        )?;
        Ok(())
    }

    /// Estimated bytes of activations, logits and their gradients for a forward + backward over
    /// `rows` token positions of sequences up to `t` long (f32 everywhere, an upper bound of
    /// what either path allocates); `None` on overflow.
    pub fn activation_bytes(&self, rows: usize, t: usize) -> Option<u128> {
        let per_layer = crate::mem::product(&[self.d_model, 20])?
            .checked_add(crate::mem::product(&[self.heads, t])?)?;
        let per_row = per_layer
            .checked_mul(self.layers as u128)?
            .checked_add(crate::mem::product(&[self.vocab, 3])?)?;
        per_row.checked_mul(rows as u128)?.checked_mul(4)
    }

    /// Checks [`Self::activation_bytes`] against the memory budget.
    pub fn check_activations(
        &self,
        what: impl FnOnce() -> String,
        rows: usize,
        t: usize,
    ) -> Result<()> {
        crate::mem::check(what, self.activation_bytes(rows, t))?;
        Ok(())
    }

    /// hs: channels per head.
    pub fn head_size(&self) -> usize {
        self.d_model / self.heads.max(1)
    }
}

/// Checks (B, T) and tokens against a config; returns B·T. Shared by every backend.
pub(crate) fn check_tokens(
    cfg: &GptConfig,
    op: &'static str,
    tokens: &[u32],
    b: usize,
    t: usize,
) -> Result<usize> {
    if b == 0 {
        return Err(ModelError::ZeroDim { field: "batch" });
    }
    if t == 0 {
        return Err(ModelError::ZeroDim {
            field: "sequence length",
        });
    }
    if t > cfg.context {
        return Err(ModelError::TooLong {
            op,
            t,
            context: cfg.context,
        });
    }
    let bt = b.checked_mul(t).ok_or(ModelError::Overflow { what: op })?;
    // The largest activation: max(V, 4C, NH·T) per token, times L (+1 spare).
    let widest = cfg.vocab.max(4 * cfg.d_model).max(cfg.heads * t);
    bt.checked_mul(widest)
        .and_then(|n| n.checked_mul(cfg.layers + 1))
        .and_then(|n| n.checked_mul(4))
        .ok_or(ModelError::Overflow { what: op })?;
    if tokens.len() != bt {
        return Err(ModelError::Shape {
            op,
            expected: bt,
            got: tokens.len(),
        });
    }
    if let Some(&bad) = tokens
        .iter()
        .find(|&&x| usize::try_from(x).map_or(true, |x| x >= cfg.vocab))
    {
        return Err(ModelError::Token {
            token: bad,
            vocab: cfg.vocab,
        });
    }
    Ok(bt)
}
