//! A dataset's integrity check, like nnU-Net's `--verify_dataset_integrity`: every case is
//! read and validated as training would read it, and every case's problems are reported
//! (each file's, read on its own) rather than only the first one met.
use super::case::{read_case, NanPolicy};
use super::layout::{Dataset, Listing, MissingFile};
use super::orient::{majority, orientation, AxisMap};
use crate::error::few;
use rayon::prelude::*;
use std::path::Path;

/// What reading one case found.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseCheck {
    pub id: String,
    pub labelled: bool,
    /// Size along x, y, z, when the case could be read.
    pub dims: Option<[usize; 3]>,
    /// Voxel size in mm along x, y, z, when the case could be read.
    pub spacing: Option<[f64; 3]>,
    /// Where its voxel axes point (see [`orientation`]), when the case could be read.
    pub orientation: Option<String>,
    /// Why training would refuse the case: every missing file, and every problem of each
    /// file that exists, on its own and against the case's first readable image (grids).
    pub problems: Vec<String>,
    /// What does not stop training but is probably a mistake.
    pub warnings: Vec<String>,
}

/// Every case of a dataset, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetCheck {
    /// What the layout found wrong that is no one case's (a case id listed twice).
    pub listing: Vec<String>,
    pub cases: Vec<CaseCheck>,
}

impl DatasetCheck {
    /// How many cases have a problem.
    pub fn problems(&self) -> usize {
        self.cases.iter().filter(|c| !c.problems.is_empty()).count()
    }

    /// Whether training or prediction would refuse the dataset, or some of its cases.
    pub fn failed(&self) -> bool {
        self.problems() > 0 || !self.listing.is_empty()
    }

    /// The report: what the dataset holds, then one line per problem and per warning.
    pub fn report(&self, dataset: &Dataset, modalities: &[String]) -> String {
        let labelled = self.cases.iter().filter(|c| c.labelled).count();
        let mut out = format!(
            "{} dataset {}: modalities {}; label values {:?}; {} labelled case(s), {} without labels\n",
            dataset.layout,
            dataset.root.display(),
            modalities.join(", "),
            dataset.label_spec.file_values(),
            labelled,
            self.cases.len() - labelled,
        );
        let read: Vec<&CaseCheck> = self.cases.iter().filter(|c| c.dims.is_some()).collect();
        if !read.is_empty() {
            let range = |f: &dyn Fn(&CaseCheck) -> [f64; 3]| {
                let mut lo = [f64::INFINITY; 3];
                let mut hi = [f64::NEG_INFINITY; 3];
                for c in &read {
                    let v = f(c);
                    for a in 0..3 {
                        lo[a] = lo[a].min(v[a]);
                        hi[a] = hi[a].max(v[a]);
                    }
                }
                // Spacings come from the header's f32 pixdim: printed at f32 precision, 0.8
                // reads 0.8, not 0.800000011920929.
                let show = |v: [f64; 3]| {
                    let [x, y, z] = v.map(|a| a as f32);
                    format!("{x}x{y}x{z}")
                };
                if lo == hi {
                    show(lo)
                } else {
                    format!("{} to {}", show(lo), show(hi))
                }
            };
            out += &format!(
                "size (x, y, z) {}; spacing {} mm\n",
                range(&|c| c.dims.unwrap_or_default().map(|d| d as f64)),
                range(&|c| c.spacing.unwrap_or_default()),
            );
            let grids: Vec<(&str, &str, [f64; 3])> = read
                .iter()
                .filter_map(|c| Some((c.id.as_str(), c.orientation.as_deref()?, c.spacing?)))
                .collect();
            for w in grid_warnings(&grids, None) {
                out += &format!("warning: {w}\n");
            }
        }
        for p in &self.listing {
            out += &format!("problem: {p}\n");
        }
        for c in &self.cases {
            for p in &c.problems {
                out += &format!("problem: {p}\n");
            }
            for w in &c.warnings {
                out += &format!("warning: case {}: {w}\n", c.id);
            }
        }
        if !self.listing.is_empty() {
            out += &format!("{} problem(s) in the listing; ", self.listing.len());
        }
        out += &format!(
            "{} case(s) checked: {} readable, {} with a problem",
            self.cases.len(),
            self.cases.len() - self.problems(),
            self.problems()
        );
        out
    }
}

/// A spacing for messages, without f32 noise.
fn show_spacing(s: [f64; 3]) -> String {
    let mm = |v: f64| format!("{}", (v * 1000.0).round() / 1000.0);
    format!("{}x{}x{}", mm(s[0]), mm(s[1]), mm(s[2]))
}

/// How the line of [`grid_warnings`] about orientations starts.
pub const ORIENTATIONS_DIFFER: &str = "cases differ in orientation";

/// One-line warnings when `cases` (id, orientation, spacing x, y, z as stored) differ in
/// orientation (training reorients them to one), or in spacing by more than 10% on an axis
/// once they share an orientation, `frame` (the one training uses; the most common without
/// one): unless asked, voxseg does not resample, so such cases reach the network on
/// different grids. None when they agree.
pub fn grid_warnings(stored: &[(&str, &str, [f64; 3])], frame: Option<&str>) -> Vec<String> {
    let codes: Vec<String> = stored.iter().map(|c| c.1.to_string()).collect();
    let frame = frame.map(str::to_string).or_else(|| majority(&codes));
    // Spacings in one orientation, as training sees them (a code that cannot be mapped,
    // an oblique grid, keeps its own axes).
    let cases: Vec<(&str, &str, [f64; 3])> = stored
        .iter()
        .map(|&(id, code, spacing)| {
            let map = frame.as_deref().map(|to| AxisMap::between(code, to));
            match map {
                Some(Ok(map)) => (id, code, map.axes(spacing)),
                _ => (id, code, spacing),
            }
        })
        .collect();
    let cases = &cases[..];
    let mut out = Vec::new();
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for &(id, code, _) in cases {
        match groups.iter_mut().find(|(c, _)| *c == code) {
            Some((_, ids)) => ids.push(id),
            None => groups.push((code, vec![id])),
        }
    }
    if groups.len() > 1 {
        groups.sort_by_key(|(_, ids)| std::cmp::Reverse(ids.len()));
        let listed = groups
            .iter()
            .map(|(code, ids)| format!("{} {code} ({})", ids.len(), few(ids)))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(format!(
            "{ORIENTATIONS_DIFFER} (voxel axes x, y, z point along): {listed}; training \
             reorients every case to one orientation, the most common unless \
             \"preprocess\": {{\"orientation\": \"RAS\"}} in a --config file names one \
             (docs/CONFIG.md), and prediction writes each result back in its input's \
             orientation"
        ));
    }
    // By voxel volume, then axis by axis, so that the pair named does not depend on the
    // cases' order.
    let key = |s: [f64; 3]| [s.iter().product::<f64>(), s[0], s[1], s[2]];
    let order = |a: &&(&str, &str, [f64; 3]), b: &&(&str, &str, [f64; 3])| {
        let (ka, kb) = (key(a.2), key(b.2));
        (0..4)
            .map(|i| ka[i].total_cmp(&kb[i]))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    let finest = cases.iter().min_by(order);
    let coarsest = cases.iter().max_by(order);
    let differs = (0..3).any(|a| {
        let lo = cases.iter().map(|c| c.2[a]).fold(f64::INFINITY, f64::min);
        let hi = cases.iter().map(|c| c.2[a]).fold(0.0, f64::max);
        hi > 1.1 * lo
    });
    if let (true, Some(finest), Some(coarsest)) = (differs, finest, coarsest) {
        let with = |s: [f64; 3]| {
            let ids: Vec<&str> = cases.iter().filter(|c| c.2 == s).map(|c| c.0).collect();
            format!("{} mm ({})", show_spacing(s), few(&ids))
        };
        let axes = match &frame {
            Some(code) if codes.iter().any(|c| c != code) => format!(" (axes as in {code})"),
            _ => String::new(),
        };
        out.push(format!(
            "voxel spacings differ by more than 10% across cases{axes}, from {} to {}; the \
             network sees each case on its own grid: set \"preprocess\": {{\"target_spacing\": \
             [x, y, z]}} in a --config file to resample them to one spacing (docs/CONFIG.md)",
            with(finest.2),
            with(coarsest.2)
        ));
    }
    out
}

/// Reads every case (labelled and unlabelled) with the modalities `modalities` (indices into
/// `dataset.modalities`), as training and prediction read them with the NaN policy `nan`:
/// the listing's problems, missing files (every one, of the selected modalities and the
/// labels), unreadable files,
/// shape and affine mismatches, label values outside the layout's convention and (with
/// `NanPolicy::Error`) NaN or infinite voxels are problems; an empty label map or an image
/// that is constant is a warning. With `NanPolicy::ReplaceWithZero` the loader warns of
/// replaced voxels on stderr, as it does in training.
pub fn check_dataset(listing: &Listing, modalities: &[usize], nan: NanPolicy) -> DatasetCheck {
    let dataset = &listing.dataset;
    let all: Vec<_> = dataset.cases.iter().chain(&dataset.test_cases).collect();
    let cases = all
        .par_iter()
        .map(|files| {
            let mut check = CaseCheck {
                id: files.id.clone(),
                labelled: files.label.is_some(),
                dims: None,
                spacing: None,
                orientation: None,
                problems: Vec::new(),
                warnings: Vec::new(),
            };
            let missing: Vec<&MissingFile> = listing.missing_for(&files.id, modalities).collect();
            let skip: Vec<&Path> = missing.iter().map(|m| m.path.as_path()).collect();
            // Every file that exists is read, whatever is wrong with the others, so that
            // one run names every problem of the case.
            let read = read_case(dataset, files, modalities, nan, &skip);
            let listed = listing
                .problems
                .iter()
                .filter(|p| p.case.as_deref() == Some(files.id.as_str()));
            check.problems = listed
                .map(|p| p.to_error())
                .chain(missing.iter().map(|m| m.to_error()))
                .chain(read.problems)
                .map(|e| e.to_string())
                .collect();
            if let Some((case, header)) = read.loaded {
                check.dims = Some(case.dims());
                check.spacing = Some(case.spacing());
                check.orientation = Some(orientation(&header.affine()));
                for (volume, &m) in case.channels.iter().zip(modalities) {
                    if let Some(first) = volume.constant_value() {
                        check.warnings.push(format!(
                            "the {} image is constant ({first})",
                            dataset.modalities[m]
                        ));
                    }
                }
                if let Some(label) = &case.label {
                    if label.data.iter().all(|&c| c == 0) {
                        check
                            .warnings
                            .push("the label map has no foreground".into());
                    }
                }
            }
            check
        })
        .collect();
    let listing = listing
        .problems
        .iter()
        .filter(|p| p.case.is_none())
        .map(|p| p.to_error().to_string())
        .collect();
    DatasetCheck { listing, cases }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::layout::list;
    use crate::data::nifti::{write_label_map, NiftiFile, NiftiHeaderInfo};
    use crate::data::synth::{write_dataset, SynthLayout, SynthOptions, SynthStorage};

    #[test]
    fn every_bad_case_is_reported_and_good_ones_pass() {
        let dir = std::env::temp_dir().join(format!("voxseg-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_dataset(&SynthOptions {
            out: dir.clone(),
            cases: 4,
            size: [16, 16, 16],
            seed: 1,
            layout: SynthLayout::Brats2021,
            storage: SynthStorage::Int16,
        })
        .unwrap();
        let listing = list(&dir).unwrap();
        let dataset = listing.dataset.clone();
        let modalities = dataset.all_modalities();
        let clean = check_dataset(&listing, &modalities, NanPolicy::Error);
        assert_eq!(clean.cases.len(), 4);
        assert_eq!(clean.problems(), 0);
        assert!(clean.cases.iter().all(|c| c.dims == Some([16, 16, 16])));

        // Case 1: a label value BraTS 2021 does not use. Case 2: a truncated image and the
        // same bad label value. Case 3: an empty label map (a warning only).
        let label_of = |i: usize| dataset.cases[i].label.clone().unwrap();
        let grid = |i: usize| NiftiFile::open(&label_of(i)).unwrap().header().clone();
        let mut bad = vec![0u8; 16 * 16 * 16];
        bad[5] = 3;
        write_label_map(&label_of(1), &grid(1), &bad).unwrap();
        write_label_map(&label_of(2), &grid(2), &bad).unwrap();
        let image = dataset.cases[2].images[0].path.clone();
        let bytes = std::fs::read(&image).unwrap();
        std::fs::write(&image, &bytes[..bytes.len() / 2]).unwrap();
        write_label_map(&label_of(3), &grid(3), &vec![0u8; 16 * 16 * 16]).unwrap();

        let checked = check_dataset(&listing, &modalities, NanPolicy::Error);
        assert_eq!(checked.problems(), 2, "{:?}", checked.cases);
        let problems = |i: usize| checked.cases[i].problems.clone();
        assert_eq!(problems(1).len(), 1, "{:?}", problems(1));
        assert!(
            problems(1)[0].contains("label value 3 at (x=5, y=0, z=0)"),
            "{:?}",
            problems(1)
        );
        // Both of case 2's problems, the truncated image first (in file order).
        assert_eq!(problems(2).len(), 2, "{:?}", problems(2));
        assert!(
            problems(2)[0].contains(&image.display().to_string())
                && problems(2)[0].contains(&dataset.cases[2].id),
            "{:?}",
            problems(2)
        );
        assert!(
            problems(2)[1].contains("label value 3 at (x=5, y=0, z=0)"),
            "{:?}",
            problems(2)
        );
        assert!(problems(0).is_empty() && problems(3).is_empty());
        assert_eq!(
            checked.cases[3].warnings,
            vec!["the label map has no foreground"]
        );
        let names: Vec<String> = dataset.modalities.clone();
        let report = checked.report(&dataset, &names);
        assert!(
            report.ends_with("4 case(s) checked: 2 readable, 2 with a problem"),
            "{report}"
        );
        assert_eq!(report.matches("problem: ").count(), 3, "{report}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nan_voxels_are_a_problem_unless_replaced_as_train_replace_nan_does() {
        use crate::data::nifti::{write_nifti, VoxelData};
        let dir = std::env::temp_dir().join(format!("voxseg-check-nan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_dataset(&SynthOptions {
            out: dir.clone(),
            cases: 2,
            size: [16, 16, 16],
            seed: 2,
            layout: SynthLayout::Brats2021,
            storage: SynthStorage::Float32,
        })
        .unwrap();
        let listing = list(&dir).unwrap();
        let image = listing.dataset.cases[1].images[0].path.clone();
        let file = NiftiFile::open(&image).unwrap();
        let mut voxels = file.channel(0).unwrap();
        voxels[7] = f32::NAN;
        let header = file.header().clone();
        write_nifti(&image, &header, 1, VoxelData::Float32(&voxels), (1.0, 0.0)).unwrap();
        let modalities = listing.dataset.all_modalities();
        let strict = check_dataset(&listing, &modalities, NanPolicy::Error);
        assert_eq!(strict.problems(), 1, "{:?}", strict.cases);
        let problems = &strict.cases[1].problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("1 NaN/Inf voxel(s)"), "{problems:?}");
        let replaced = check_dataset(&listing, &modalities, NanPolicy::ReplaceWithZero);
        assert_eq!(replaced.problems(), 0, "{:?}", replaced.cases);
        assert_eq!(replaced.cases[1].dims, Some([16, 16, 16]));
        // A second modality truncated too: both problems, the NaN first (met first).
        let t2 = listing.dataset.cases[1].images[2].path.clone();
        let bytes = std::fs::read(&t2).unwrap();
        std::fs::write(&t2, &bytes[..bytes.len() / 2]).unwrap();
        let both = check_dataset(&listing, &modalities, NanPolicy::Error);
        let problems = &both.cases[1].problems;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("1 NaN/Inf voxel(s)"), "{problems:?}");
        assert!(
            problems[1].starts_with(&t2.display().to_string()),
            "{problems:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_a_nan_and_every_grid_mismatch_are_all_reported() {
        use crate::data::nifti::{write_nifti, VoxelData};
        let dir = std::env::temp_dir().join(format!("voxseg-check-all-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_dataset(&SynthOptions {
            out: dir.clone(),
            cases: 2,
            size: [16, 16, 16],
            seed: 3,
            layout: SynthLayout::Brats2021,
            storage: SynthStorage::Float32,
        })
        .unwrap();
        let listing = list(&dir).unwrap();
        let case = |i: usize| listing.dataset.cases[i].clone();
        let rewrite = |path: &std::path::Path,
                       edit: &dyn Fn(&mut NiftiHeaderInfo, &mut Vec<f32>)| {
            let file = NiftiFile::open(path).unwrap();
            let (mut header, mut voxels) = (file.header().clone(), file.channel(0).unwrap());
            edit(&mut header, &mut voxels);
            write_nifti(path, &header, 1, VoxelData::Float32(&voxels), (1.0, 0.0)).unwrap();
        };
        let smaller = |h: &mut NiftiHeaderInfo, v: &mut Vec<f32>| {
            h.dims = [14, 16, 16];
            v.truncate(14 * 16 * 16);
        };
        // Case 0: no flair, a NaN in t1ce, t2 14x16x16, the label 20 mm off.
        std::fs::remove_file(&case(0).images[3].path).unwrap();
        rewrite(&case(0).images[1].path, &|_, v| v[3] = f32::NAN);
        rewrite(&case(0).images[2].path, &smaller);
        let seg = case(0).label.unwrap();
        let file = NiftiFile::open(&seg).unwrap();
        let mut shifted = file.header().clone();
        shifted.srow[0][3] += 20.0;
        let values: Vec<u8> = file.channel(0).unwrap().iter().map(|&v| v as u8).collect();
        write_label_map(&seg, &shifted, &values).unwrap();
        // Case 1: t2 14x16x16 and flair 20 mm off.
        rewrite(&case(1).images[2].path, &smaller);
        rewrite(&case(1).images[3].path, &|h, _| h.srow[1][3] -= 20.0);

        let listing = list(&dir).unwrap();
        let checked = check_dataset(&listing, &[0, 1, 2, 3], NanPolicy::Error);
        let problems = &checked.cases[0].problems;
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].contains("missing flair image file"),
            "{problems:?}"
        );
        assert!(problems[1].contains("1 NaN/Inf voxel(s)"), "{problems:?}");
        assert!(
            problems[2].contains("_t2.nii.gz: case")
                && problems[2].contains("size 14x16x16 differs from the reference's 16x16x16"),
            "{problems:?}"
        );
        assert!(
            problems[3].contains("_seg.nii.gz: case") && problems[3].contains("origin ("),
            "{problems:?}"
        );
        let problems = &checked.cases[1].problems;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("_t2.nii.gz: case") && problems[0].contains("size 14x16x16"));
        assert!(
            problems[1].contains("_flair.nii.gz: case") && problems[1].contains("origin ("),
            "{problems:?}"
        );
        // With --replace-nan the NaN is no longer a problem; the grids still are.
        let replaced = check_dataset(&listing, &[0, 1, 2, 3], NanPolicy::ReplaceWithZero);
        assert_eq!(
            replaced.cases[0].problems.len(),
            3,
            "{:?}",
            replaced.cases[0]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn msd_ids_listed_twice_and_extra_channels_are_reported() {
        use crate::data::nifti::{write_nifti, VoxelData};
        let dir = std::env::temp_dir().join(format!("voxseg-check-msd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_dataset(&SynthOptions {
            out: dir.clone(),
            cases: 3,
            size: [8, 8, 8],
            seed: 4,
            layout: SynthLayout::Msd,
            storage: SynthStorage::Float32,
        })
        .unwrap();
        let json_path = dir.join("dataset.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
        let training = json["training"].as_array().unwrap().clone();
        let first = training[0]["image"].as_str().unwrap().to_string();
        json["training"]
            .as_array_mut()
            .unwrap()
            .push(training[1].clone());
        json["test"] = serde_json::json!([first]);
        std::fs::write(&json_path, json.to_string()).unwrap();
        // Case 2's image holds 6 channels where dataset.json declares 4 modalities.
        let listing = list(&dir).unwrap();
        let image = listing.dataset.cases[2].images[0].path.clone();
        let file = NiftiFile::open(&image).unwrap();
        let mut voxels: Vec<f32> = (0..4).flat_map(|c| file.channel(c).unwrap()).collect();
        voxels.extend(file.channel(0).unwrap());
        voxels.extend(file.channel(1).unwrap());
        let mut header = file.header().clone();
        header.channels = 1;
        write_nifti(&image, &header, 6, VoxelData::Float32(&voxels), (1.0, 0.0)).unwrap();

        let listing = list(&dir).unwrap();
        let ids: Vec<String> = listing.dataset.cases.iter().map(|c| c.id.clone()).collect();
        let checked = check_dataset(&listing, &[0, 1, 2, 3], NanPolicy::Error);
        let twice = |id: &str| format!("{}: case id '{id}' appears twice", json_path.display());
        assert_eq!(checked.listing, vec![twice(&ids[0]), twice(&ids[1])]);
        assert!(checked.failed());
        assert_eq!(checked.problems(), 1, "{:?}", checked.cases);
        let problems = &checked.cases[2].problems;
        assert_eq!(
            problems,
            &vec![format!(
                "{}: case {}: 6 channels, dataset.json declares 4 modalities",
                image.display(),
                ids[2]
            )]
        );
        let err = listing.require_all().unwrap_err().to_string();
        assert!(
            err.contains("2 problems") && err.contains(&twice(&ids[0])),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_brats_image_as_both_nii_gz_and_nii_is_refused_and_the_rest_checked() {
        let dir = std::env::temp_dir().join(format!("voxseg-check-twice-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_dataset(&SynthOptions {
            out: dir.clone(),
            cases: 2,
            size: [8, 8, 8],
            seed: 5,
            layout: SynthLayout::Brats2021,
            storage: SynthStorage::Int16,
        })
        .unwrap();
        let listing = list(&dir).unwrap();
        let gz = listing.dataset.cases[1].images[2].path.clone();
        let nii = gz.with_extension("").with_extension("nii");
        let file = NiftiFile::open(&gz).unwrap();
        let values = vec![0u8; 512];
        write_label_map(&nii, file.header(), &values).unwrap();
        let listing = list(&dir).unwrap();
        assert_eq!(listing.dataset.cases[1].images[2].path, gz);
        let checked = check_dataset(&listing, &[0, 1, 2, 3], NanPolicy::Error);
        assert_eq!(
            checked.cases[1].problems,
            vec![format!(
                "{}: case {}: both this file and {} exist; remove the one that is not meant",
                nii.display(),
                listing.dataset.cases[1].id,
                gz.display()
            )]
        );
        assert!(checked.cases[0].problems.is_empty());
        assert!(listing
            .require_all()
            .unwrap_err()
            .to_string()
            .contains("both this file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mixed_orientations_and_spacings_are_named_in_one_line_each() {
        let mut affine = [[0.0; 4]; 4];
        (affine[0][0], affine[1][1], affine[2][2]) = (1.0, 1.0, 5.0);
        assert_eq!(orientation(&affine), "RAS");
        let mut swapped = [[0.0; 4]; 4];
        // x along superior, z along right, y along posterior.
        (swapped[2][0], swapped[1][1], swapped[0][2]) = (1.0, -1.0, 5.0);
        assert_eq!(orientation(&swapped), "SPR");
        let same = [
            ("a", "RAS", [1.0, 1.0, 5.0]),
            ("b", "RAS", [1.05, 1.0, 5.0]),
        ];
        assert!(grid_warnings(&same, None).is_empty());
        // c stores the same grid with x and z swapped: once reoriented its voxels are the
        // others', so only the orientation is named.
        let mixed = [
            ("a", "RAS", [1.0, 1.0, 5.0]),
            ("b", "RAS", [1.0, 1.0, 5.0]),
            ("c", "SAR", [5.0, 1.0, 1.0]),
        ];
        let w = grid_warnings(&mixed, None);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("orientation") && w[0].contains("2 RAS (a, b), 1 SAR (c)"));
        // d's voxels are coarser along y, as the others' axes run.
        let coarser = [
            ("a", "RAS", [1.0, 1.0, 5.0]),
            ("b", "RAS", [1.0, 1.0, 5.0]),
            ("d", "SAR", [5.0, 2.0, 1.0]),
        ];
        let w = grid_warnings(&coarser, None);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[1].contains("(axes as in RAS), from 1x1x5 mm (a, b) to 1x2x5 mm (d)"),
            "{}",
            w[1]
        );
        assert!(w[1].contains("target_spacing"));
        assert!(w.iter().all(|l| !l.contains('\n')));
    }
}
