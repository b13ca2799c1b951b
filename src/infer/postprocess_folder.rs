//! `voxseg postprocess`: a postprocessing spec applied to label maps already predicted
//! (nnU-Net's `apply_postprocessing`), so that steps chosen after prediction need no second
//! prediction. Each map is written under its own name into another folder, on its own
//! header; the input folder is never written to.
use super::Postprocess;
use crate::data::labels::LabelSpec;
use crate::data::nifti::write_label_map;
use crate::error::{Error, Result};
use crate::metrics::evaluate::{label_files, read_labels};
use std::path::{Path, PathBuf};

/// One label map cleaned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cleaned {
    pub case: String,
    pub written: PathBuf,
    /// Voxels whose label the steps changed.
    pub changed: usize,
}

/// The maps `postprocess_folder` would write from `pred` into `out` (`CASE.nii.gz` or
/// `CASE.nii`, as found), by case id.
pub fn planned_outputs(pred: &Path, out: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if same(pred, out) {
        return Err(Error::config(
            "out",
            format!(
                "{} is the folder of the predictions: write the postprocessed maps to another \
                 folder (inputs are never overwritten)",
                out.display()
            ),
        ));
    }
    let found = label_files(pred)?;
    if found.is_empty() {
        return Err(Error::data(
            pred.display().to_string(),
            "no label maps (CASE.nii.gz or CASE.nii) to postprocess",
        ));
    }
    Ok(found
        .into_iter()
        .map(|(case, input)| {
            let name = input.file_name().map(PathBuf::from).unwrap_or_default();
            (case, input, out.join(name))
        })
        .collect())
}

/// Applies `steps` to every label map in `pred` (values checked against `spec`, the
/// convention the steps were parsed for) and writes each into `out`, which must exist.
pub fn postprocess_folder(
    pred: &Path,
    out: &Path,
    steps: &Postprocess,
    spec: &LabelSpec,
) -> Result<Vec<Cleaned>> {
    planned_outputs(pred, out)?
        .into_iter()
        .map(|(case, input, written)| {
            let (values, header) = read_labels(
                &input,
                spec,
                "the label convention named for them",
                "; name the predictions' convention with --model RUN or --labels",
            )?;
            let mut classes: Vec<u8> = values
                .iter()
                .map(|&v| spec.class_of_value(v as f32).unwrap_or(0))
                .collect();
            steps.apply(&mut classes, header.dims);
            let cleaned = spec.to_file_values(&classes)?;
            let changed = values.iter().zip(&cleaned).filter(|(a, b)| a != b).count();
            write_label_map(&written, &header, &cleaned)?;
            Ok(Cleaned {
                case,
                written,
                changed,
            })
        })
        .collect()
}
