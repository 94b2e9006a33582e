//! KV-cache sampling under a validity mask, over either model path: what rollouts and
//! evaluation need of a policy.

use rand_chacha::ChaCha8Rng;

use super::TrainError;
use crate::model::sample::MaskFn;
use crate::model::{DeviceGpt, Elem, Gpt, GptConfig, SampleParams, Samples};

/// A device-path error, as a trainer error.
pub fn device_err(e: crate::Error) -> TrainError {
    TrainError::Device(e)
}

/// KV-cache sampling under a validity mask.
pub trait Sampler {
    /// The model's config.
    fn gpt_config(&self) -> &GptConfig;

    /// Samples `params.max_new` tokens after prompts (B, P); see [`Gpt::sample`].
    fn sample_masked(
        &self,
        prompts: &[u32],
        b: usize,
        p: usize,
        params: &SampleParams,
        rng: &mut ChaCha8Rng,
        mask: Option<&mut MaskFn>,
    ) -> Result<Samples, TrainError>;
}

/// Both model paths sample through the same `sample` (a shared loop over their decode steps);
/// only the error type differs.
macro_rules! sampler_via_sample {
    ($ty:ty, $err:expr $(, $gen:ident: $bound:path)?) => {
        impl<$($gen: $bound)?> Sampler for $ty {
            fn gpt_config(&self) -> &GptConfig {
                self.config()
            }

            fn sample_masked(
                &self,
                prompts: &[u32],
                b: usize,
                p: usize,
                params: &SampleParams,
                rng: &mut ChaCha8Rng,
                mask: Option<&mut MaskFn>,
            ) -> Result<Samples, TrainError> {
                self.sample(prompts, b, p, params, rng, mask).map_err($err)
            }
        }
    };
}

sampler_via_sample!(Gpt<E>, TrainError::from, E: Elem);
sampler_via_sample!(DeviceGpt<'_>, device_err);
