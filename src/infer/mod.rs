//! Prediction: sliding-window inference with Gaussian weighting, test-time mirroring,
//! the conversions between volumes, tensors and probabilities, and `predict` on cases.
pub mod predict;
pub mod sliding_window;
mod volume_io;

pub use predict::{PredictOptions, Predicted, Predictor};
pub use sliding_window::{predict_logits, predict_volume, SlidingWindow};
pub use volume_io::{interleave_channels, probabilities};
