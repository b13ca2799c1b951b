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

/// What is wrong with each file of `case` on its own, file by file: unreadable files, NaN or
/// infinite voxels (with `NanPolicy::Error`) and label values outside the convention, each
/// in the words `load_case` uses. `load_case` stops at the first problem; this finds the
/// others of the same case, for `voxseg check`. Problems between files (their grids) need
/// every file readable and are `load_case`'s.
pub fn file_problems(
    dataset: &Dataset,
    case: &CaseFiles,
    modalities: &[usize],
    nan_policy: NanPolicy,
) -> Vec<Error> {
    let mut problems = Vec::new();
    let mut opened: Vec<&Path> = Vec::new();
    for image in modalities.iter().filter_map(|&m| case.images.get(m)) {
        if opened.contains(&image.path.as_path()) {
            continue;
        }
        opened.push(&image.path);
        let file = match NiftiFile::open(&image.path) {
            Ok(file) => file,
            Err(e) => {
                problems.push(in_case(&case.id, e));
                continue;
            }
        };
        let channels = modalities
            .iter()
            .filter_map(|&m| case.images.get(m))
            .filter(|i| i.path == image.path)
            .map(|i| i.channel.unwrap_or(0))
            .filter(|&c| c < file.header().channels);
        for channel in channels {
            let checked = file
                .channel(channel)
                .map_err(|e| in_case(&case.id, e))
                .and_then(|mut data| {
                    if nan_policy == NanPolicy::Error {
                        let dims = file.header().dims;
                        handle_non_finite(&case.id, &image.path, &mut data, dims, nan_policy)?;
                    }
                    Ok(())
                });
            if let Err(e) = checked {
                problems.push(e);
            }
        }
    }
    if let Some(path) = &case.label {
        let values = NiftiFile::open(path)
            .map_err(|e| in_case(&case.id, e))
            .and_then(|file| {
                let values = file.channel(0)?;
                Ok((values, file.header().dims))
            });
        match values {
            Err(e) => problems.push(e),
            Ok((values, dims)) => {
                if let Err(e) = dataset.label_spec.to_classes(&values, dims, &case.id, path) {
                    problems.push(e);
                }
            }
        }
    }
    problems
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
    match grid_difference(header, reference) {
        None => Ok(()),
        Some(what) => Err(Error::file(
            path,
            format!(
                "case {case}: {what} (the reference is {})",
                reference_path.display()
            ),
        )),
    }
}

/// What makes a volume's grid differ from its reference's, in words ("x and y axes are
/// mirrored; origin ... differs ..."), or None when they share the grid: the same size
/// and affines within `AFFINE_TOLERANCE`. Training and `check` hold a case's files to
/// its first modality's grid, evaluation a prediction to its reference label's.
pub fn grid_difference(pred: &NiftiHeaderInfo, truth: &NiftiHeaderInfo) -> Option<String> {
    let triple = |v: [f64; 3]| format!("{:.3}x{:.3}x{:.3}", v[0], v[1], v[2]);
    if pred.dims != truth.dims {
        let size = |d: [usize; 3]| format!("{}x{}x{}", d[0], d[1], d[2]);
        return Some(format!(
            "size {} differs from the reference's {}",
            size(pred.dims),
            size(truth.dims)
        ));
    }
    if pred.affine_distance(truth) <= AFFINE_TOLERANCE {
        return None;
    }
    let (a, b) = (pred.affine(), truth.affine());
    let column = |m: &[[f64; 4]; 4], j: usize| [m[0][j], m[1][j], m[2][j]];
    let norm = |v: [f64; 3]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let close = |u: [f64; 3], v: [f64; 3]| (0..3).all(|i| (u[i] - v[i]).abs() <= AFFINE_TOLERANCE);
    let mut what = Vec::new();
    let (sizes_a, sizes_b) = (
        [0, 1, 2].map(|j| norm(column(&a, j))),
        [0, 1, 2].map(|j| norm(column(&b, j))),
    );
    if !close(sizes_a, sizes_b) {
        what.push(format!(
            "voxel size {} mm differs from the reference's {} mm",
            triple(sizes_a),
            triple(sizes_b)
        ));
    }
    let direction = |m: &[[f64; 4]; 4], j: usize, size: f64| column(m, j).map(|v| v / size);
    let (mut mirrored, mut turned) = (Vec::new(), false);
    for (j, axis) in ["x", "y", "z"].into_iter().enumerate() {
        let (da, db) = (direction(&a, j, sizes_a[j]), direction(&b, j, sizes_b[j]));
        if close(da, db.map(|v| -v)) {
            mirrored.push(axis);
        } else if !close(da, db) {
            turned = true;
        }
    }
    if turned {
        what.push("the axes point in other directions (another orientation)".to_string());
    } else if !mirrored.is_empty() {
        let (last, rest) = mirrored.split_last().expect("not empty");
        let axes = if rest.is_empty() {
            format!("the {last} axis is")
        } else {
            format!("the {} and {last} axes are", rest.join(", "))
        };
        what.push(format!("{axes} mirrored"));
    }
    let (origin_a, origin_b) = ([a[0][3], a[1][3], a[2][3]], [b[0][3], b[1][3], b[2][3]]);
    if !close(origin_a, origin_b) {
        let point = |o: [f64; 3]| format!("({:.3}, {:.3}, {:.3})", o[0], o[1], o[2]);
        what.push(format!(
            "origin {} mm differs from the reference's {} mm",
            point(origin_a),
            point(origin_b)
        ));
    }
    if what.is_empty() {
        what.push(format!(
            "the affines differ by up to {:.4}",
            pred.affine_distance(truth)
        ));
    }
    Some(what.join("; "))
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
