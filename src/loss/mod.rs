//! Training losses built on the tape: cross-entropy, BCE, Dice, Dice+CE, MSE, MAE, SSIM.
