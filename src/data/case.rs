//! Loading one case: the selected modalities and the label, checked against each other.
use crate::data::labels::LabelSpec;
use crate::data::layout::{CaseFiles, Dataset, ImageFile, LayoutKind};
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
/// are taken from it. The error is the first problem [`read_case`] meets.
pub fn load_case(
    dataset: &Dataset,
    case: &CaseFiles,
    modalities: &[usize],
    nan_policy: NanPolicy,
) -> Result<(CaseData, NiftiHeaderInfo)> {
    let read = read_case(dataset, case, modalities, nan_policy, &[]);
    match read.loaded {
        Some(loaded) => Ok(loaded),
        None => Err(read
            .problems
            .into_iter()
            .next()
            .expect("a case that is not loaded has a problem")),
    }
}

/// What reading a case found: the case, when every file was read and fits the others, and
/// every problem met otherwise.
pub struct CaseRead {
    pub loaded: Option<(CaseData, NiftiHeaderInfo)>,
    pub problems: Vec<Error>,
}

/// Reads `case` as [`load_case`] does, but on past a problem, so that one run names every
/// problem of the case (for `voxseg check`): each file unreadable, on another grid than the
/// first readable image (or that image, when all the others share a grid it is off), with
/// NaN voxels (with `NanPolicy::Error`) or label values outside
/// the convention. Files in `skip` (known to be missing) are not read, and the case is then
/// not loaded.
pub fn read_case(
    dataset: &Dataset,
    case: &CaseFiles,
    modalities: &[usize],
    nan_policy: NanPolicy,
    skip: &[&Path],
) -> CaseRead {
    let failed = |problems| CaseRead {
        loaded: None,
        problems,
    };
    if modalities.is_empty() {
        return failed(vec![Error::data(
            format!("case {}", case.id),
            "no modality selected",
        )]);
    }
    let mut problems = Vec::new();
    // Each path once; None when it is skipped or unreadable (reported once).
    let mut files: Vec<(&Path, Option<NiftiFile>)> = Vec::new();
    let mut channels = Vec::with_capacity(modalities.len());
    let mut reference: Option<(NiftiHeaderInfo, &Path)> = None;
    // Files off the reference's grid (their problem's index, header, path), and how many are
    // on it: when every other file is off it, and all on one grid, the reference is the odd
    // one (see `blame_odd_reference`).
    let mut off_grid: Vec<(usize, NiftiHeaderInfo, &Path)> = Vec::new();
    let mut on_grid = 0usize;
    for &m in modalities {
        let Some(image) = case.images.get(m) else {
            problems.push(Error::data(
                format!("case {}", case.id),
                format!(
                    "modality index {m} is out of range (the dataset has {})",
                    dataset.modalities.len()
                ),
            ));
            continue;
        };
        let slot = match files.iter().position(|(p, _)| *p == image.path) {
            Some(i) => i,
            None => {
                let opened = if skip.contains(&image.path.as_path()) {
                    None
                } else {
                    match NiftiFile::open(&image.path)
                        .map_err(|e| in_case(&case.id, e))
                        .and_then(|file| fits_layout(dataset, case, image, file))
                    {
                        Ok(file) => Some(file),
                        Err(e) => {
                            problems.push(e);
                            None
                        }
                    }
                };
                if let Some(header) = opened.as_ref().map(NiftiFile::header) {
                    match &reference {
                        None => {
                            let mut grid = header.clone();
                            grid.channels = 1;
                            reference = Some((grid, &image.path));
                        }
                        Some((grid, first)) => {
                            match check_same_grid(&case.id, grid, first, header, &image.path) {
                                Ok(()) => on_grid += 1,
                                Err(e) => {
                                    off_grid.push((problems.len(), header.clone(), &image.path));
                                    problems.push(e);
                                }
                            }
                        }
                    }
                }
                files.push((&image.path, opened));
                files.len() - 1
            }
        };
        let Some(file) = &files[slot].1 else {
            continue;
        };
        let header = file.header();
        let volume = image_channel(case, image, header).and_then(|c| {
            let mut data = file.channel(c).map_err(|e| in_case(&case.id, e))?;
            handle_non_finite(&case.id, &image.path, &mut data, header.dims, nan_policy)?;
            Ok(Volume::new(header.dims, header.spacing, data))
        });
        match volume {
            Ok(volume) => channels.push(volume),
            Err(e) => problems.push(e),
        }
    }
    let (blame, others_grid) = reference
        .as_ref()
        .and_then(|(grid, path)| blame_odd_reference(&case.id, grid, path, &off_grid, on_grid))
        .unzip();
    // The others' grid holds the label to theirs when the reference is the odd one.
    let grid = match &others_grid {
        Some((header, path)) => Some((header, *path)),
        None => reference.as_ref().map(|(g, p)| (g, *p)),
    };
    if let Some(blame) = blame {
        let indices: Vec<usize> = off_grid.iter().map(|(i, _, _)| *i).collect();
        problems = std::iter::once(blame)
            .chain(
                std::mem::take(&mut problems)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !indices.contains(i))
                    .map(|(_, e)| e),
            )
            .collect();
    }
    let label = match &case.label {
        Some(path) if !skip.contains(&path.as_path()) => {
            let (label, errors) = read_label(&dataset.label_spec, &case.id, path, grid);
            problems.extend(errors);
            label
        }
        _ => None,
    };
    let skipped = files.iter().any(|(_, f)| f.is_none()) || case.label.is_some() && label.is_none();
    match reference {
        Some((grid, _)) if problems.is_empty() && !skipped => CaseRead {
            loaded: Some((
                CaseData {
                    id: case.id.clone(),
                    channels,
                    label,
                },
                grid,
            )),
            problems,
        },
        _ => failed(problems),
    }
}

/// When the reference (a case's first image) is off the grid that every other image of the
/// case shares (two or more of them), the problem is the reference's: one error on it, and
/// the others' grid (a header and its file) to hold the label to.
fn blame_odd_reference<'a>(
    case: &str,
    reference: &NiftiHeaderInfo,
    reference_path: &Path,
    off_grid: &[(usize, NiftiHeaderInfo, &'a Path)],
    on_grid: usize,
) -> Option<(Error, (NiftiHeaderInfo, &'a Path))> {
    let [(_, first, first_path), rest @ ..] = off_grid else {
        return None;
    };
    if on_grid > 0
        || rest.is_empty()
        || rest
            .iter()
            .any(|(_, h, _)| grid_difference(h, first).is_some())
    {
        return None;
    }
    let what = grid_difference(reference, first)?;
    let error = Error::file(
        reference_path,
        format!(
            "case {case}: {what} (the case's other {} images share one grid, e.g. {})",
            off_grid.len(),
            first_path.display()
        ),
    );
    Some((error, (first.clone(), *first_path)))
}

/// `file`, unless its layout says otherwise: an MSD 4D image (one `image` names a channel
/// of) holds exactly the modalities its dataset.json declares, in order; one with more or
/// fewer is not the image described. (`predict --input` gives an MSD model's modalities as
/// 3D files: those name no channel.)
fn fits_layout(
    dataset: &Dataset,
    case: &CaseFiles,
    image: &ImageFile,
    file: NiftiFile,
) -> Result<NiftiFile> {
    let channels = file.header().channels;
    let four_d = image.channel.is_some();
    if dataset.layout == LayoutKind::Msd && four_d && channels != dataset.modalities.len() {
        return Err(Error::file(
            file.path(),
            format!(
                "case {}: {channels} channels, dataset.json declares {} modalities",
                case.id,
                dataset.modalities.len()
            ),
        ));
    }
    Ok(file)
}

/// The channel of `header`'s file that holds `image`: a 3D image's only one, or the one the
/// layout names in a 4D file.
fn image_channel(case: &CaseFiles, image: &ImageFile, header: &NiftiHeaderInfo) -> Result<usize> {
    match image.channel {
        None if header.channels != 1 => Err(Error::file(
            &image.path,
            format!(
                "case {}: the {} image is 4D with {} channels; a 3D image was expected",
                case.id, image.modality, header.channels
            ),
        )),
        None => Ok(0),
        Some(c) => Ok(c),
    }
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
    match read_label(spec, case, path, Some((grid, grid_path))) {
        (Some(label), _) => Ok(label),
        (None, errors) => Err(errors
            .into_iter()
            .next()
            .expect("a label that is not read has a problem")),
    }
}

/// [`load_label`] on past a problem: the label when it is fine, and every problem found
/// (unreadable, 4D, off the images' grid when one is known, values outside the convention).
fn read_label(
    spec: &LabelSpec,
    case: &str,
    path: &Path,
    grid: Option<(&NiftiHeaderInfo, &Path)>,
) -> (Option<LabelVolume>, Vec<Error>) {
    let file = match NiftiFile::open(path) {
        Ok(file) => file,
        Err(e) => return (None, vec![in_case(case, e)]),
    };
    let header = file.header();
    if header.channels != 1 {
        let e = Error::file(
            path,
            format!(
                "case {case}: the label is 4D with {} channels; a 3D label map was expected",
                header.channels
            ),
        );
        return (None, vec![e]);
    }
    let mut problems = Vec::new();
    if let Some((grid, grid_path)) = grid {
        if let Err(e) = check_same_grid(case, grid, grid_path, header, path) {
            problems.push(e);
        }
    }
    let classes = file
        .channel(0)
        .and_then(|values| spec.to_classes(&values, header.dims, case, path));
    match classes {
        Ok(data) if problems.is_empty() => (
            Some(LabelVolume {
                dims: header.dims,
                spacing: header.spacing,
                data,
            }),
            problems,
        ),
        Ok(_) => (None, problems),
        Err(e) => {
            problems.push(e);
            (None, problems)
        }
    }
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
    let close = |u: [f64; 3], v: [f64; 3]| (0..3).all(|i| (u[i] - v[i]).abs() <= AFFINE_TOLERANCE);
    // The voxel size voxseg resamples and measures with is pixdim's, which a file may
    // state apart from its affine: compared on its own.
    if !close(pred.spacing, truth.spacing) {
        return Some(format!(
            "voxel size {} mm (pixdim) differs from the reference's {} mm",
            triple(pred.spacing),
            triple(truth.spacing)
        ));
    }
    if pred.affine_distance(truth) <= AFFINE_TOLERANCE {
        return None;
    }
    let (a, b) = (pred.affine(), truth.affine());
    let column = |m: &[[f64; 4]; 4], j: usize| [m[0][j], m[1][j], m[2][j]];
    let norm = |v: [f64; 3]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
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
