//! What one loss-head computation returns to the host, whichever executor ran it.

use half::f16;

/// The dtype of the gradient output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GradDtype {
    F16,
    #[default]
    F32,
}

/// The head's results in the file's dtypes.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadResult {
    /// logp, entropy, lse, token_loss: (T) f32
    pub logp: Vec<f32>,
    pub entropy: Vec<f32>,
    pub lse: Vec<f32>,
    pub token_loss: Vec<f32>,
    /// resp_surprisal, resp_mean_entropy, alpha, adv: (R) f32
    pub resp_surprisal: Vec<f32>,
    pub resp_mean_entropy: Vec<f32>,
    pub alpha: Vec<f32>,
    pub adv: Vec<f32>,
    /// The scalar loss.
    pub loss: f32,
    /// dlogits: (T, V) in the requested dtype.
    pub dlogits: GradOut,
}

/// The gradient in its output dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum GradOut {
    F16(Vec<f16>),
    F32(Vec<f32>),
}
