//! Prediction: sliding-window inference with Gaussian weighting, test-time mirroring,
//! the conversions between volumes, tensors and probabilities, which cases `--split`
//! selects, `predict` on cases, and the postprocessing of label maps (connected
//! components), in prediction or on a folder of maps already written.
mod components;
pub mod postprocess;
pub mod postprocess_folder;
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
