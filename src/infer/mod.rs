//! Prediction: sliding-window inference with Gaussian weighting, test-time mirroring.
pub mod sliding_window;

pub use sliding_window::{predict_logits, SlidingWindow};
