//! Everything between files on disk and a batch of patches: NIfTI, dataset layouts,
//! preprocessing, augmentation, sampling, loading, the split and synthetic data.
pub mod augment;
pub mod cache;
pub mod case;
pub mod check;
pub mod grid;
pub mod inspect;
pub mod labels;
pub mod layout;
pub mod loader;
pub mod nifti;
pub mod orient;
pub mod out_dir;
pub mod phantom;
pub mod preprocess;
pub mod sampler;
pub mod split;
pub mod synth;
pub mod volume;

#[cfg(test)]
mod nnunet_reference_tests;

pub use volume::{CaseData, LabelVolume, Volume};
