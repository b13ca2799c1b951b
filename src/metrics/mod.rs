//! Segmentation metrics: Dice, HD95, sensitivity, specificity, with the BraTS conventions.
