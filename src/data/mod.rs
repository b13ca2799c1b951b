//! Everything between files on disk and a batch of patches: NIfTI, dataset layouts,
//! preprocessing, augmentation, sampling, loading, the split and synthetic data.
pub mod case;
pub mod inspect;
pub mod labels;
pub mod layout;
pub mod nifti;
pub mod synth;
pub mod volume;

pub use volume::{CaseData, LabelVolume, Volume};
