//! Tiny trainer configs shared by the train_* tests (seconds at opt-level 1).
#![allow(dead_code)]

use aem::train::config::Backend;
use aem::train::metrics::{StepRecord, TIMING_FIELDS};
use aem::train::TrainConfig;

/// A config that trains in about a second: a 1-layer d=16 model, 2 tasks × 4 rollouts.
pub fn tiny(level: &str, ood: &str) -> TrainConfig {
    let mut c = TrainConfig::default();
    c.env.level = level.parse().unwrap();
    c.env.ood_level = ood.parse().unwrap();
    c.model.d_model = 16;
    c.model.layers = 1;
    c.model.heads = 2;
    c.model.context = 64;
    c.rollout.tasks = 2;
    c.rollout.rollouts = 4;
    c.run.steps = 4;
    c.run.eval_every = 2;
    c.run.eval_tasks = 8;
    c.run.checkpoint_every = 2;
    c.optim.lr = 1e-3;
    // The CPU path whatever the machine (the default `auto` would take a GPU when present).
    c.run.backend = Backend::Cpu;
    c
}

/// Metrics records as JSON without their wall-clock fields (which differ run to run), for
/// comparing two runs' metrics.
pub fn strip(recs: &[StepRecord]) -> Vec<serde_json::Value> {
    recs.iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap();
            for k in TIMING_FIELDS {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}
