//! Loading one case: the selected modalities and the label, checked against each other.
use crate::data::labels::LabelSpec;
use crate::data::layout::{CaseFiles, Dataset};
use crate::data::nifti::{NiftiFile, NiftiHeaderInfo};
use crate::data::volume::{CaseData, LabelVolume, Volume};
use crate::error::{Error, Result};
use std::path::Path;

/// Largest difference, in affine entries (mm for the translation), below which two files
/// count as sharing a grid: float noise from converters, not a different placement.
pub const AFFINE_TOLERANCE: f64 = 1e-3;

/// What to do with NaN or infinite voxels in an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NanPolicy {
    /// Refuse the case, naming the file and the count.
    #[default]
    Error,
    /// Replace them with 0 and print a warning with the count.
    ReplaceWithZero,
}

/// Loads the modalities `modalities` (indices into `dataset.modalities`, e.g. from
/// `Dataset::select_modalities`) of `case`, in that order, and its label mapped to
/// internal classes. Checks that every file has the same shape and affine as the first
/// selected image; the returned header is that image's grid (with one channel), the
/// reference for writing predictions. Each file is read once, however many channels
/// are taken from it.
pub fn load_case(
    dataset: &Dataset,
    case: &CaseFiles,
    modalities: &[usize],
    nan_policy: NanPolicy,
) -> Result<(CaseData, NiftiHeaderInfo)> {
    if modalities.is_empty() {
        return Err(Error::data(
            format!("case {}", case.id),
            "no modality selected",
        ));
    }
    let mut files: Vec<NiftiFile> = Vec::new();
    let mut channels = Vec::with_capacity(modalities.len());
    let mut reference: Option<(NiftiHeaderInfo, &Path)> = None;
    for &m in modalities {
        let image = case.images.get(m).ok_or_else(|| {
            Error::data(
                format!("case {}", case.id),
                format!(
                    "modality index {m} is out of range (the dataset has {})",
                    dataset.modalities.len()
                ),
            )
        })?;
        let slot = match files.iter().position(|f| f.path() == image.path) {
            Some(i) => i,
            None => {
                files.push(NiftiFile::open(&image.path).map_err(|e| in_case(&case.id, e))?);
                files.len() - 1
            }
        };
        let file = &files[slot];
        let header = file.header();
        let channel = match image.channel {
            None if header.channels != 1 => {
                return Err(Error::file(
                    &image.path,
                    format!(
                        "case {}: the {} image is 4D with {} channels; a 3D image was expected",
                        case.id, image.modality, header.channels
                    ),
                ))
            }
            None => 0,
            Some(c) => c,
        };
        match &reference {
            None => {
                let mut grid = header.clone();
                grid.channels = 1;
                reference = Some((grid, &image.path));
            }
            Some((grid, first)) => check_same_grid(&case.id, grid, first, header, &image.path)?,
        }
        let mut data = file.channel(channel).map_err(|e| in_case(&case.id, e))?;
        handle_non_finite(&case.id, &image.path, &mut data, header.dims, nan_policy)?;
        channels.push(Volume::new(header.dims, header.spacing, data));
    }
    let (grid, first) = reference.expect("at least one modality was loaded");
    let label = match &case.label {
        None => None,
        Some(path) => Some(load_label(
            &dataset.label_spec,
            &case.id,
            path,
            &grid,
            first,
        )?),
    };
    Ok((
        CaseData {
            id: case.id.clone(),
            channels,
            label,
        },
        grid,
    ))
}

/// The label map of case `case` at `path` as class indices, checked to be 3D and on the
/// images' grid (`grid`, read from `grid_path`).
pub fn load_label(
    spec: &LabelSpec,
    case: &str,
    path: &Path,
    grid: &NiftiHeaderInfo,
    grid_path: &Path,
) -> Result<LabelVolume> {
    let file = NiftiFile::open(path).map_err(|e| in_case(case, e))?;
    let header = file.header();
    if header.channels != 1 {
        return Err(Error::file(
            path,
            format!(
                "case {case}: the label is 4D with {} channels; a 3D label map was expected",
                header.channels
            ),
        ));
    }
    check_same_grid(case, grid, grid_path, header, path)?;
    let values = file.channel(0)?;
    Ok(LabelVolume {
        dims: header.dims,
        spacing: header.spacing,
        data: spec.to_classes(&values, header.dims, case, path)?,
    })
}

/// Adds the case to a file error, so a corrupt file names the case it belongs to.
fn in_case(case: &str, e: Error) -> Error {
    match e {
        Error::File { path, msg } => Error::File {
            path,
            msg: format!("case {case}: {msg}"),
        },
        other => other,
    }
}

fn check_same_grid(
    case: &str,
    reference: &NiftiHeaderInfo,
    reference_path: &Path,
    header: &NiftiHeaderInfo,
    path: &Path,
) -> Result<()> {
    let shape = |d: [usize; 3]| format!("{}x{}x{}", d[0], d[1], d[2]);
    if header.dims != reference.dims {
        return Err(Error::file(
            path,
            format!(
                "case {case}: shape {} differs from {} of {}",
                shape(header.dims),
                shape(reference.dims),
                reference_path.display()
            ),
        ));
    }
    let distance = header.affine_distance(reference);
    if distance > AFFINE_TOLERANCE {
        return Err(Error::file(
            path,
            format!(
                "case {case}: affine {} differs from {} of {} (largest difference {distance:.4})",
                brief_affine(header),
                brief_affine(reference),
                reference_path.display()
            ),
        ));
    }
    Ok(())
}

/// The top three rows of the affine, 3 decimals: enough to see what differs.
fn brief_affine(header: &NiftiHeaderInfo) -> String {
    let rows: Vec<String> = header.affine()[..3]
        .iter()
        .map(|r| format!("[{:.3} {:.3} {:.3} {:.3}]", r[0], r[1], r[2], r[3]))
        .collect();
    rows.join(" ")
}

fn handle_non_finite(
    case: &str,
    path: &Path,
    data: &mut [f32],
    dims: [usize; 3],
    policy: NanPolicy,
) -> Result<()> {
    let Some(first) = data.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    let count = data.iter().filter(|v| !v.is_finite()).count();
    let at = crate::data::grid::position_text(first, dims);
    match policy {
        NanPolicy::Error => Err(Error::file(
            path,
            format!(
                "case {case}: {count} NaN/Inf voxel(s), the first at {at}; pass \
                 --replace-nan (in a config, \"replace_nan\": true) to read them as 0"
            ),
        )),
        NanPolicy::ReplaceWithZero => {
            for v in data.iter_mut().filter(|v| !v.is_finite()) {
                *v = 0.0;
            }
            eprintln!(
                "warning: case {case}: {}: replaced {count} NaN/Inf voxel(s) with 0",
                path.display()
            );
            Ok(())
        }
    }
}
