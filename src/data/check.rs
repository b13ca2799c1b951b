//! A dataset's integrity check, like nnU-Net's `--verify_dataset_integrity`: every case is
//! read and validated as training would read it, and every case's problems are reported
//! (each file's, read on its own) rather than only the first one met.
use super::case::{file_problems, load_case, NanPolicy};
use super::layout::{Dataset, Listing};
use super::orient::{majority, orientation, AxisMap};
use crate::error::few;
use rayon::prelude::*;

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
    /// Why training would refuse the case: every problem of each file on its own, and the
    /// first between files (grids) where each file is readable.
    pub problems: Vec<String>,
    /// What does not stop training but is probably a mistake.
    pub warnings: Vec<String>,
}

/// Every case of a dataset, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetCheck {
    pub cases: Vec<CaseCheck>,
}

impl DatasetCheck {
    pub fn problems(&self) -> usize {
        self.cases.iter().filter(|c| !c.problems.is_empty()).count()
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
        for c in &self.cases {
            for p in &c.problems {
                out += &format!("problem: {p}\n");
            }
            for w in &c.warnings {
                out += &format!("warning: case {}: {w}\n", c.id);
            }
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
/// missing files (every one, of the selected modalities and the labels), unreadable files,
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
            let missing: Vec<String> = listing
                .missing_for(&files.id, modalities)
                .map(|m| m.to_error().to_string())
                .collect();
            if !missing.is_empty() {
                check.problems = missing;
                return check;
            }
            match load_case(dataset, files, modalities, nan) {
                // load_case stops at the first problem: each file is also read on its own,
                // so that one run names all of them.
                Err(e) => {
                    let first = e.to_string();
                    check.problems = file_problems(dataset, files, modalities, nan)
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    if !check.problems.contains(&first) {
                        check.problems.insert(0, first);
                    }
                }
                Ok((case, header)) => {
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
            }
            check
        })
        .collect();
    DatasetCheck { cases }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::layout::list;
    use crate::data::nifti::{write_label_map, NiftiFile};
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
        // Both of case 2's problems, the truncated image first (load_case met it first).
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
