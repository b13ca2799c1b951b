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

/// One map to clean: its case, where it is read from and where it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub case: String,
    pub input: PathBuf,
    pub output: PathBuf,
    /// The case's map with the other ending (`CASE.nii` beside `CASE.nii.gz`) in the output
    /// folder: an earlier output, which `evaluate` would find beside this one.
    pub other_ending: PathBuf,
}

/// The maps `postprocess_folder` would write from `pred` into `out` (`CASE.nii.gz` or
/// `CASE.nii`, as found), sorted by case.
pub fn planned_outputs(pred: &Path, out: &Path) -> Result<Vec<Planned>> {
    crate::data::out_dir::refuse_inside("--out", out, "--pred", pred)?;
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
            let gz = input.to_string_lossy().ends_with(".gz");
            let (name, other) = if gz {
                (format!("{case}.nii.gz"), format!("{case}.nii"))
            } else {
                (format!("{case}.nii"), format!("{case}.nii.gz"))
            };
            Planned {
                output: out.join(name),
                other_ending: out.join(other),
                case,
                input,
            }
        })
        .collect())
}

/// Applies `steps` to every map of `planned` (values checked against `spec`, the
/// convention the steps were parsed for) and writes each where it is planned, creating the
/// output folder. Every map is read and checked before the first is written, so a bad map
/// leaves no output behind; `written` hears of each map as it is written.
pub fn postprocess_folder(
    planned: &[Planned],
    steps: &Postprocess,
    spec: &LabelSpec,
    mut written: impl FnMut(&Cleaned),
) -> Result<Vec<Cleaned>> {
    let read = |input: &Path| {
        read_labels(
            input,
            spec,
            "the label convention named for them",
            "; name the predictions' convention with --model RUN or --labels",
        )
    };
    for p in planned {
        read(&p.input)?;
    }
    if let Some(dir) = planned.first().and_then(|p| p.output.parent()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    planned
        .iter()
        .map(|p| {
            let (values, header) = read(&p.input)?;
            let cleaned = steps.apply_to_file_values(spec, &values, header.dims)?;
            write_label_map(&p.output, &header, &cleaned)?;
            let done = Cleaned {
                case: p.case.clone(),
                written: p.output.clone(),
                changed: values.iter().zip(&cleaned).filter(|(a, b)| a != b).count(),
            };
            written(&done);
            Ok(done)
        })
        .collect()
}
