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

impl<E: Elem> Sampler for Gpt<E> {
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
        Ok(self.sample(prompts, b, p, params, rng, mask)?)
    }
}

impl Sampler for DeviceGpt<'_> {
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
        self.sample(prompts, b, p, params, rng, mask)
            .map_err(device_err)
    }
}
