//! Prediction: sliding-window inference with Gaussian weighting, test-time mirroring.
