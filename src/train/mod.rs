//! The training loop: planning, the run directory, checkpoints, validation.
pub mod card;
pub mod checkpoint;
pub mod config;
pub mod lock;
pub mod plan;
pub mod run;

pub use card::ModelCard;
pub use config::TrainConfig;
pub use run::{train, RunDir, RunOptions, TrainSummary};
