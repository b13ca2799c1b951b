//! The training loop: planning, the run directory, checkpoints, validation.
pub mod checkpoint;
pub mod plan;
