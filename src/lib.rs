//! aem: the AEM loss head (placeholder while the crate is being laid out).
pub mod model;
