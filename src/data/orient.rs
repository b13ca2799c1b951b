//! Voxel-axis orientation: which world direction each voxel axis (x, y, z) points along, as
//! three RAS+ letters ("RAS", "LPS", "SRA", ...), and the permutation and flips that carry a
//! volume stored one way onto another. A dataset whose cases are stored in different
//! orientations is reoriented to one before training, and each prediction back to its
//! input's own orientation before it is written, so the written file sits on the input's grid.
use crate::data::nifti::NiftiHeaderInfo;
use crate::data::volume::{CaseData, LabelVolume, Volume};
use crate::error::{Error, Result};

/// The world axis (0 R-L, 1 A-P, 2 S-I) a letter names, and whether it is the positive end.
fn world_axis(letter: char) -> Option<(usize, bool)> {
    match letter {
        'R' => Some((0, true)),
        'L' => Some((0, false)),
        'A' => Some((1, true)),
        'P' => Some((1, false)),
        'S' => Some((2, true)),
        'I' => Some((2, false)),
        _ => None,
    }
}

/// The world direction each voxel axis (x, y, z) points along most closely, in RAS+ letters:
/// "RAS" for an identity affine, "LPS" for a DICOM-like one, "SRA" when the axes are permuted.
/// Computed as nibabel's `io_orientation` (5.x) does, so that the code is the one nibabel's
/// `aff2axcodes` (and the tools built on it) gives for oblique and sheared grids too: the
/// axes, scaled to unit length, are replaced by the closest orthogonal ones (a registration's
/// slight shear would otherwise decide ambiguous axes), then the axis closest to a world
/// axis is named first, each axis after the free world axis it is closest to.
pub fn orientation(affine: &[[f64; 4]; 4]) -> String {
    const LETTERS: [[char; 2]; 3] = [['R', 'L'], ['A', 'P'], ['S', 'I']];
    let r = closest_orthogonal(unit_axes(affine));
    let strength = |axis: usize| (0..3).map(|w| r[w][axis].abs()).fold(0.0, f64::max);
    // A stable sort: equally strong axes keep the order x, y, z, as in nibabel.
    let mut axes = [0, 1, 2];
    axes.sort_by(|&a, &b| strength(b).total_cmp(&strength(a)));
    let mut letters = [' '; 3];
    let mut world_free = [true; 3];
    for axis in axes {
        // Of equally close world axes the first, as numpy's argmax.
        let world = (0..3)
            .filter(|&w| world_free[w])
            .reduce(|best, w| {
                if r[w][axis].abs() > r[best][axis].abs() {
                    w
                } else {
                    best
                }
            })
            .expect("a world axis is free while a voxel axis is unnamed");
        letters[axis] = LETTERS[world][(r[world][axis] < 0.0) as usize];
        world_free[world] = false;
    }
    letters.iter().collect()
}

/// The 3x3 part of `affine` with each column (voxel axis) scaled to unit length; an axis of
/// length 0 points along its own world axis.
fn unit_axes(affine: &[[f64; 4]; 4]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for axis in 0..3 {
        let norm = (0..3).map(|w| affine[w][axis].powi(2)).sum::<f64>().sqrt();
        for (w, row) in m.iter_mut().enumerate() {
            row[axis] = if norm > 0.0 {
                affine[w][axis] / norm
            } else {
                (w == axis) as u8 as f64
            };
        }
    }
    m
}

/// The orthogonal matrix closest to `m` (the polar factor U V^T of its SVD, which nibabel
/// takes), by Newton's iteration X <- (X + X^-T) / 2; `m` itself when it is singular.
fn closest_orthogonal(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut x = m;
    for _ in 0..100 {
        // X^-T is the cofactor matrix over the determinant.
        let cofactor: [[f64; 3]; 3] = std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                let (i1, i2, j1, j2) = ((i + 1) % 3, (i + 2) % 3, (j + 1) % 3, (j + 2) % 3);
                x[i1][j1] * x[i2][j2] - x[i1][j2] * x[i2][j1]
            })
        });
        let det: f64 = (0..3).map(|j| x[0][j] * cofactor[0][j]).sum();
        if det.abs() < 1e-12 || !det.is_finite() {
            return m;
        }
        let mut change = 0.0f64;
        for i in 0..3 {
            for j in 0..3 {
                let next = 0.5 * (x[i][j] + cofactor[i][j] / det);
                change = change.max((next - x[i][j]).abs());
                x[i][j] = next;
            }
        }
        if change < 1e-15 {
            break;
        }
    }
    x
}

/// Each axis's world axis and sign for a three-letter code naming each world axis once.
fn parse(code: &str) -> Result<[(usize, bool); 3]> {
    let bad = |why: &str| {
        Error::config(
            "orientation",
            format!(
                "{code:?} {why}: it must name each of R/L, A/P and S/I once, e.g. \"RAS\" or \
                 \"LPS\""
            ),
        )
    };
    let letters: Vec<char> = code.chars().collect();
    if letters.len() != 3 {
        return Err(bad("is not three letters"));
    }
    let mut axes = [(0, true); 3];
    for (axis, &letter) in letters.iter().enumerate() {
        axes[axis] = world_axis(letter.to_ascii_uppercase())
            .ok_or_else(|| bad(&format!("has {letter:?}")))?;
    }
    let mut seen = [false; 3];
    for (world, _) in axes {
        if std::mem::replace(&mut seen[world], true) {
            return Err(bad("names a world axis twice (an oblique grid?)"));
        }
    }
    Ok(axes)
}

/// Checks that `code` is a valid orientation, e.g. for a configuration.
pub fn check_orientation(code: &str) -> Result<()> {
    parse(code).map(|_| ())
}

/// The map from a volume stored in one orientation to the same volume stored in another:
/// voxel axis `t` of the result runs along source axis `source[t]`, backwards where
/// `flip[t]`. Volumes are x fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisMap {
    source: [usize; 3],
    flip: [bool; 3],
}

impl AxisMap {
    /// The map from orientation `from` to orientation `to` (codes as [`orientation`] gives).
    pub fn between(from: &str, to: &str) -> Result<Self> {
        let (from, to) = (parse(from)?, parse(to)?);
        let mut map = Self {
            source: [0, 1, 2],
            flip: [false; 3],
        };
        for (t, &(world, positive)) in to.iter().enumerate() {
            let s = from
                .iter()
                .position(|&(w, _)| w == world)
                .expect("both codes name every world axis once");
            map.source[t] = s;
            map.flip[t] = from[s].1 != positive;
        }
        Ok(map)
    }

    pub fn is_identity(&self) -> bool {
        self.source == [0, 1, 2] && self.flip == [false; 3]
    }

    /// The map back.
    pub fn inverse(&self) -> Self {
        let mut back = *self;
        for t in 0..3 {
            back.source[self.source[t]] = t;
            back.flip[self.source[t]] = self.flip[t];
        }
        back
    }

    /// Sizes (or spacings) of the result from the source's.
    pub fn axes<T: Copy>(&self, source: [T; 3]) -> [T; 3] {
        self.source.map(|s| source[s])
    }

    /// The source voxel that voxel `t` of the result comes from, for a source of `dims`.
    pub fn source_voxel(&self, t: [usize; 3], dims: [usize; 3]) -> [usize; 3] {
        let mut s = [0; 3];
        for ((&axis, &flip), &index) in self.source.iter().zip(&self.flip).zip(&t) {
            s[axis] = if flip { dims[axis] - 1 - index } else { index };
        }
        s
    }

    /// `data` (dims `dims`, `per_voxel` values per voxel, voxels x fastest) in the target
    /// orientation.
    pub fn apply<T: Copy>(&self, dims: [usize; 3], per_voxel: usize, data: &[T]) -> Vec<T> {
        debug_assert_eq!(data.len(), dims.iter().product::<usize>() * per_voxel);
        let out_dims = self.axes(dims);
        let mut out = Vec::with_capacity(data.len());
        for z in 0..out_dims[2] {
            for y in 0..out_dims[1] {
                for x in 0..out_dims[0] {
                    let [sx, sy, sz] = self.source_voxel([x, y, z], dims);
                    let at = ((sz * dims[1] + sy) * dims[0] + sx) * per_voxel;
                    out.extend_from_slice(&data[at..at + per_voxel]);
                }
            }
        }
        out
    }

    /// Every channel and the label of `case` in the target orientation.
    pub fn apply_case(&self, case: &CaseData) -> CaseData {
        let volume = |v: &Volume| {
            Volume::new(
                self.axes(v.dims),
                self.axes(v.spacing),
                self.apply(v.dims, 1, &v.data),
            )
        };
        let label = |l: &LabelVolume| {
            LabelVolume::new(
                self.axes(l.dims),
                self.axes(l.spacing),
                self.apply(l.dims, 1, &l.data),
            )
        };
        CaseData {
            id: case.id.clone(),
            channels: case.channels.iter().map(volume).collect(),
            label: case.label.as_ref().map(label),
        }
    }
}

/// `case`, read with `header`, in orientation `target`, and the map that took it there
/// (its inverse takes a prediction back); None where the case is already so stored, or
/// without a target.
pub fn reorient(
    case: &CaseData,
    header: &NiftiHeaderInfo,
    target: Option<&str>,
) -> Result<Option<(CaseData, AxisMap)>> {
    let Some(target) = target else {
        return Ok(None);
    };
    let stored = orientation(&header.affine());
    let map = AxisMap::between(&stored, target)
        .map_err(|e| Error::data(case.id.as_str(), format!("cannot reorient it: {e}")))?;
    Ok((!map.is_identity()).then(|| (map.apply_case(case), map)))
}

/// The orientation to train in: `requested` if given, else the most common of `codes`, the
/// orientations of the training and validation cases (the same cases for every fold of a
/// cross-validation, so every fold trains in the same orientation). Recorded with the
/// model even where every case agrees, so that prediction brings any input stored
/// otherwise to it.
pub fn training_orientation(codes: &[String], requested: Option<&str>) -> Option<String> {
    requested.map(str::to_string).or_else(|| majority(codes))
}

/// The orientation most of `codes` share (the alphabetically first of them on a tie, so the
/// order of the codes does not matter); None for no codes.
pub fn majority(codes: &[String]) -> Option<String> {
    let mut best: Option<(&String, usize)> = None;
    for code in codes {
        let count = codes.iter().filter(|c| *c == code).count();
        let better = best.is_none_or(|(b, n)| count > n || (count == n && code < b));
        if better {
            best = Some((code, count));
        }
    }
    best.map(|(code, _)| code.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// An affine whose voxel axis a points along world direction `code[a]`, `spacing` apart.
    fn affine(code: &str, spacing: [f64; 3]) -> [[f64; 4]; 4] {
        let mut a = [[0.0; 4]; 4];
        for (axis, (world, positive)) in parse(code).unwrap().into_iter().enumerate() {
            a[world][axis] = if positive {
                spacing[axis]
            } else {
                -spacing[axis]
            };
            a[world][3] = 10.0 * (world as f64 + 1.0);
        }
        a[3][3] = 1.0;
        a
    }

    fn world(affine: &[[f64; 4]; 4], v: [usize; 3]) -> [f64; 3] {
        [0, 1, 2].map(|w| (0..3).map(|a| affine[w][a] * v[a] as f64).sum::<f64>() + affine[w][3])
    }

    #[test]
    fn codes_are_read_from_affines_and_checked() {
        for code in ["RAS", "LPS", "SRA", "PIL", "ASR"] {
            assert_eq!(orientation(&affine(code, [1.0, 2.0, 3.0])), code);
        }
        assert!(check_orientation("ras").is_ok());
        for bad in ["RA", "RAX", "RRS", "RASP"] {
            let e = check_orientation(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("R/L"), "{e}");
        }
        assert_eq!(
            majority(&["LPS".into(), "RAS".into(), "RAS".into()]),
            Some("RAS".to_string())
        );
        assert_eq!(
            majority(&["RAS".into(), "LPS".into()]),
            Some("LPS".to_string()),
            "a tie goes to the alphabetically first"
        );
        assert_eq!(majority(&[]), None);
        // An oblique grid (45 degrees about z, then about x): each world axis still goes to
        // one voxel axis, where the largest component of each column alone would say "ASS".
        let h = std::f64::consts::FRAC_1_SQRT_2;
        let oblique = [
            [h, -0.5, 0.5, 0.0],
            [h, 0.5, -0.5, 0.0],
            [0.0, h, h, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let code = orientation(&oblique);
        assert!(check_orientation(&code).is_ok(), "{code}");
        // A strongly oblique grid with a slight shear, as nibabel 5.4 names it: the shear is
        // dropped first (naming the axes as they are gave "SAL").
        let sheared = [
            [0.592, 0.6152, -0.7102, 0.0],
            [-0.5587, 1.4575, -0.1807, 0.0],
            [0.4401, 0.9655, 0.7035, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(orientation(&sheared), "RAS");
        // Degenerate affines still get a valid code: an axis of length 0 points along its
        // own world axis, and two axes alike (no orthogonal matrix is closest) are named as
        // they are.
        let mut flat = affine("LPS", [1.0, 2.0, 3.0]);
        flat[2][2] = 0.0;
        assert_eq!(orientation(&flat), "LPS");
        let mut twins = affine("RAS", [1.0; 3]);
        (twins[0][1], twins[1][1]) = (1.0, 0.0);
        assert_eq!(orientation(&twins), "RAS");
    }

    /// Stepping along each axis of the reoriented volume moves toward that axis's letter in
    /// world space, and every voxel keeps its world position.
    #[test]
    fn reoriented_axes_point_where_the_target_code_says() {
        let dims = [4, 3, 5];
        let spacing = [1.0, 2.0, 3.0];
        for from in ["RAS", "LPS", "SRA", "PIL", "IRP", "ALI"] {
            for to in ["RAS", "LPS", "ASL", "SPR"] {
                let map = AxisMap::between(from, to).unwrap();
                let a = affine(from, spacing);
                let out_dims = map.axes(dims);
                let targets = parse(to).unwrap();
                for t in [[0, 0, 0], [1, 1, 1], out_dims.map(|d| d - 2)] {
                    let here = world(&a, map.source_voxel(t, dims));
                    for (axis, &(w, positive)) in targets.iter().enumerate() {
                        let mut next = t;
                        next[axis] += 1;
                        let there = world(&a, map.source_voxel(next, dims));
                        let step = there[w] - here[w];
                        assert_eq!(step > 0.0, positive, "{from}->{to} axis {axis}");
                        assert_eq!(step.abs(), map.axes(spacing)[axis], "{from}->{to}");
                    }
                }
                assert_eq!(map.inverse().axes(out_dims), dims);
                assert!(
                    AxisMap::between(from, from).unwrap().is_identity(),
                    "{from}"
                );
                assert_eq!(map.inverse(), AxisMap::between(to, from).unwrap());
            }
        }
    }

    #[test]
    fn training_takes_the_most_common_orientation_and_reorients_what_differs() {
        let codes = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let chosen = |all: &[&str], requested| training_orientation(&codes(all), requested);
        assert_eq!(chosen(&["LPS", "LPS"], None).as_deref(), Some("LPS"));
        assert_eq!(chosen(&[], None), None);
        assert_eq!(chosen(&["RAS", "LPS", "RAS"], None).as_deref(), Some("RAS"));
        assert_eq!(chosen(&["RAS", "LPS"], None).as_deref(), Some("LPS"));
        assert_eq!(chosen(&["LPS"], Some("RAS")).as_deref(), Some("RAS"));
        let header = NiftiHeaderInfo::new([3, 2, 1], [1.0, 1.0, 1.0]);
        let case = CaseData {
            id: "c".into(),
            channels: vec![Volume::new(
                [3, 2, 1],
                [1.0, 2.0, 3.0],
                (0..6).map(|v| v as f32).collect(),
            )],
            label: Some(LabelVolume::new(
                [3, 2, 1],
                [1.0, 2.0, 3.0],
                (0..6).collect(),
            )),
        };
        assert!(reorient(&case, &header, Some("RAS")).unwrap().is_none());
        assert!(reorient(&case, &header, None).unwrap().is_none());
        let (swapped, map) = reorient(&case, &header, Some("ARS")).unwrap().unwrap();
        assert_eq!(map, AxisMap::between("RAS", "ARS").unwrap());
        assert_eq!(swapped.channels[0].dims, [2, 3, 1]);
        assert_eq!(swapped.channels[0].spacing, [2.0, 1.0, 3.0]);
        assert_eq!(swapped.label.unwrap().data, vec![0, 3, 1, 4, 2, 5]);
        let e = reorient(&case, &header, Some("RRS"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("case c") || e.contains("c:"), "{e}");
    }

    #[test]
    fn volumes_go_there_and_back_unchanged() {
        let mut rng = Rng::new(4);
        let dims = [3, 4, 2];
        let k = 2;
        let data: Vec<f32> = (0..24 * k).map(|_| rng.uniform() as f32).collect();
        let map = AxisMap::between("LPS", "SRA").unwrap();
        let there = map.apply(dims, k, &data);
        assert_ne!(there, data);
        assert_eq!(map.inverse().apply(map.axes(dims), k, &there), data);
        // A known case: RAS to LAS reverses x.
        let flip_x = AxisMap::between("RAS", "LAS").unwrap();
        let ramp: Vec<u8> = (0..6).collect();
        assert_eq!(flip_x.apply([3, 2, 1], 1, &ramp), vec![2, 1, 0, 5, 4, 3]);
        // RAS to ARS swaps x and y.
        let swap = AxisMap::between("RAS", "ARS").unwrap();
        assert_eq!(swap.axes([3, 2, 1]), [2, 3, 1]);
        assert_eq!(swap.apply([3, 2, 1], 1, &ramp), vec![0, 3, 1, 4, 2, 5]);
    }
}
