//! Prediction: sliding-window inference with Gaussian weighting, test-time mirroring,
//! the conversions between volumes, tensors and probabilities, which cases `--split`
//! selects, and `predict` on cases.
mod components;
pub mod postprocess;
pub mod predict;
pub mod select;
pub mod sliding_window;
mod volume_io;

#[cfg(test)]
mod nnunet_reference_tests;

pub use postprocess::{Postprocess, Predicts};
pub use predict::{OutputFiles, PredictOptions, Predicted, Predictor};
pub use select::{select_cases, PredictSplit};
pub use sliding_window::{predict_logits, predict_volume, SlidingWindow};
pub use volume_io::{interleave_channels, probabilities};
