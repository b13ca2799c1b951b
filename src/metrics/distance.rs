//! Exact Euclidean distance transform and the 95th-percentile Hausdorff distance.
//!
//! The transform is separable (Saito; Felzenszwalb and Huttenlocher's lower envelope of
//! parabolas): the squared distance to the nearest feature voxel is a minimum over one axis
//! of the result over the previous axes, so three 1D passes give the exact answer in
//! O(voxels). Spacing enters as the positions of the parabolas, so anisotropic voxels are exact.
use rayon::prelude::*;

/// Squared distance in mm² from every voxel to the nearest voxel where `features` is true;
/// infinity everywhere when there is none. Volumes are x fastest, `dims` = [x, y, z].
pub fn squared_distance_transform(
    features: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Vec<f64> {
    let [nx, ny, nz] = dims;
    let slice = nx * ny;
    debug_assert_eq!(features.len(), slice * nz);
    let mut dist: Vec<f64> = features
        .iter()
        .map(|&f| if f { 0.0 } else { f64::INFINITY })
        .collect();
    if slice == 0 || nz == 0 {
        return dist;
    }
    // x and y passes stay inside one z slice, so slices run in parallel.
    dist.par_chunks_mut(slice).for_each(|plane| {
        let mut pass = LinePass::new(nx.max(ny));
        for row in plane.chunks_mut(nx) {
            pass.run(row, spacing[0]);
        }
        let mut column = vec![0.0; ny];
        for x in 0..nx {
            for (y, c) in column.iter_mut().enumerate() {
                *c = plane[y * nx + x];
            }
            pass.run(&mut column, spacing[1]);
            for (y, c) in column.iter().enumerate() {
                plane[y * nx + x] = *c;
            }
        }
    });
    if nz == 1 {
        return dist;
    }
    // The z pass writes z-fastest columns in parallel, then the result is transposed back.
    let mut columns = vec![0.0; dist.len()];
    columns.par_chunks_mut(nz).enumerate().for_each_init(
        || LinePass::new(nz),
        |pass, (xy, column)| {
            for (z, c) in column.iter_mut().enumerate() {
                *c = dist[z * slice + xy];
            }
            pass.run(column, spacing[2]);
        },
    );
    dist.par_chunks_mut(slice)
        .enumerate()
        .for_each(|(z, plane)| {
            for (xy, d) in plane.iter_mut().enumerate() {
                *d = columns[xy * nz + z];
            }
        });
    dist
}

/// Scratch space for the 1D transform of one line.
struct LinePass {
    /// Indices of the parabolas on the lower envelope.
    vertices: Vec<usize>,
    /// Where each envelope parabola starts to be the lowest (in mm).
    starts: Vec<f64>,
    out: Vec<f64>,
}

impl LinePass {
    fn new(capacity: usize) -> Self {
        Self {
            vertices: Vec::with_capacity(capacity),
            starts: Vec::with_capacity(capacity),
            out: Vec::with_capacity(capacity),
        }
    }

    /// Replaces `line[p]` by min over q of (step·(p − q))² + line[q].
    fn run(&mut self, line: &mut [f64], step: f64) {
        self.vertices.clear();
        self.starts.clear();
        for (q, &fq) in line.iter().enumerate() {
            if !fq.is_finite() {
                continue;
            }
            let xq = q as f64 * step;
            loop {
                let Some(&r) = self.vertices.last() else {
                    self.vertices.push(q);
                    self.starts.push(f64::NEG_INFINITY);
                    break;
                };
                let xr = r as f64 * step;
                let cross = ((fq + xq * xq) - (line[r] + xr * xr)) / (2.0 * (xq - xr));
                if cross <= *self.starts.last().expect("starts parallels vertices") {
                    self.vertices.pop();
                    self.starts.pop();
                } else {
                    self.vertices.push(q);
                    self.starts.push(cross);
                    break;
                }
            }
        }
        if self.vertices.is_empty() {
            return;
        }
        self.out.clear();
        let mut k = 0;
        for p in 0..line.len() {
            let xp = p as f64 * step;
            while k + 1 < self.vertices.len() && self.starts[k + 1] < xp {
                k += 1;
            }
            let v = self.vertices[k];
            let dx = xp - v as f64 * step;
            self.out.push(dx * dx + line[v]);
        }
        line.copy_from_slice(&self.out);
    }
}

/// Surface voxels: foreground voxels with a 6-connected background neighbour or on the
/// volume's edge (as MedPy's `mask XOR erosion(mask)` with a zero border).
pub fn boundary(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = dims;
    let slice = nx * ny;
    let mut out = vec![false; mask.len()];
    if slice == 0 {
        return out;
    }
    out.par_chunks_mut(slice)
        .enumerate()
        .for_each(|(z, plane)| {
            for y in 0..ny {
                for x in 0..nx {
                    let i = z * slice + y * nx + x;
                    if !mask[i] {
                        continue;
                    }
                    let on_edge =
                        x == 0 || y == 0 || z == 0 || x + 1 == nx || y + 1 == ny || z + 1 == nz;
                    plane[y * nx + x] = on_edge
                        || !mask[i - 1]
                        || !mask[i + 1]
                        || !mask[i - nx]
                        || !mask[i + nx]
                        || !mask[i - slice]
                        || !mask[i + slice];
                }
            }
        });
    out
}

/// Smallest box [lo, hi) per axis holding every true voxel, or None when there is none.
fn bounding_box(mask: &[bool], dims: [usize; 3]) -> Option<([usize; 3], [usize; 3])> {
    let [nx, ny, _] = dims;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0; 3];
    for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
        let p = [i % nx, (i / nx) % ny, i / (nx * ny)];
        for a in 0..3 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a] + 1);
        }
    }
    (lo[0] != usize::MAX).then_some((lo, hi))
}

fn crop(mask: &[bool], dims: [usize; 3], lo: [usize; 3], hi: [usize; 3]) -> Vec<bool> {
    let mut out = Vec::with_capacity((0..3).map(|a| hi[a] - lo[a]).product());
    for z in lo[2]..hi[2] {
        for y in lo[1]..hi[1] {
            let row = (z * dims[1] + y) * dims[0];
            out.extend_from_slice(&mask[row + lo[0]..row + hi[0]]);
        }
    }
    out
}

/// Distances in mm from each surface voxel of `from` to the nearest surface voxel of `to`.
fn directed_surface_distances(
    from: &[bool],
    to: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Vec<f64> {
    let dist = squared_distance_transform(to, dims, spacing);
    from.iter()
        .zip(&dist)
        .filter(|(&f, _)| f)
        .map(|(_, d)| d.sqrt())
        .collect()
}

/// The 95th percentile of the pooled symmetric surface distances in mm (MedPy's `hd95`,
/// as nnU-Net and the BraTS tools use), or None when either mask is empty.
pub fn hd95(a: &[bool], b: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Option<f64> {
    let surface_a = boundary(a, dims);
    let surface_b = boundary(b, dims);
    let (lo_a, hi_a) = bounding_box(&surface_a, dims)?;
    let (lo_b, hi_b) = bounding_box(&surface_b, dims)?;
    // Every surface voxel lies in the union box, and lines outside it hold no feature, so
    // the transform on the cropped grid is exact there.
    let lo: [usize; 3] = std::array::from_fn(|k| lo_a[k].min(lo_b[k]));
    let hi: [usize; 3] = std::array::from_fn(|k| hi_a[k].max(hi_b[k]));
    let sub: [usize; 3] = std::array::from_fn(|k| hi[k] - lo[k]);
    let surface_a = crop(&surface_a, dims, lo, hi);
    let surface_b = crop(&surface_b, dims, lo, hi);
    let mut pooled = directed_surface_distances(&surface_a, &surface_b, sub, spacing);
    pooled.extend(directed_surface_distances(
        &surface_b, &surface_a, sub, spacing,
    ));
    Some(percentile(&mut pooled, 95.0))
}

/// The `q`-th percentile with linear interpolation between order statistics (NumPy's
/// default), reordering `values`. `values` must not be empty.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let rank = q / 100.0 * (values.len() - 1) as f64;
    let below = rank.floor() as usize;
    let above = (below + 1).min(values.len() - 1);
    values[below] + (rank - below as f64) * (values[above] - values[below])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn coords(i: usize, dims: [usize; 3]) -> [usize; 3] {
        [
            i % dims[0],
            (i / dims[0]) % dims[1],
            i / (dims[0] * dims[1]),
        ]
    }

    fn brute_squared(features: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
        (0..features.len())
            .map(|i| {
                let p = coords(i, dims);
                features
                    .iter()
                    .enumerate()
                    .filter(|(_, &f)| f)
                    .map(|(j, _)| {
                        let q = coords(j, dims);
                        (0..3)
                            .map(|a| ((p[a] as f64 - q[a] as f64) * spacing[a]).powi(2))
                            .sum::<f64>()
                    })
                    .fold(f64::INFINITY, f64::min)
            })
            .collect()
    }

    fn random_mask(rng: &mut Rng, n: usize, p: f64) -> Vec<bool> {
        (0..n).map(|_| rng.bernoulli(p)).collect()
    }

    fn cube(dims: [usize; 3], lo: [usize; 3], side: usize) -> Vec<bool> {
        (0..dims.iter().product())
            .map(|i| {
                let c = coords(i, dims);
                (0..3).all(|a| c[a] >= lo[a] && c[a] < lo[a] + side)
            })
            .collect()
    }

    #[test]
    fn transform_equals_brute_force_on_random_masks() {
        let mut rng = Rng::new(7);
        let cases = [
            ([7, 5, 6], [1.0, 1.0, 1.0], 0.05),
            ([6, 8, 5], [1.0, 1.0, 2.5], 0.1),
            ([9, 4, 7], [0.7, 1.3, 2.0], 0.02),
            ([5, 6, 1], [1.0, 0.5, 3.0], 0.2),
            ([1, 1, 9], [1.0, 1.0, 1.5], 0.2),
        ];
        for (dims, spacing, p) in cases {
            for _ in 0..3 {
                let mask = random_mask(&mut rng, dims.iter().product(), p);
                let fast = squared_distance_transform(&mask, dims, spacing);
                let slow = brute_squared(&mask, dims, spacing);
                for (i, (f, s)) in fast.iter().zip(&slow).enumerate() {
                    if s.is_infinite() {
                        assert!(f.is_infinite(), "voxel {i}: {f} vs inf");
                    } else {
                        assert!((f - s).abs() <= 1e-12 * s.max(1.0), "voxel {i}: {f} vs {s}");
                    }
                }
            }
        }
    }

    #[test]
    fn transform_of_no_features_is_infinite() {
        let d = squared_distance_transform(&[false; 24], [2, 3, 4], [1.0; 3]);
        assert!(d.iter().all(|v| v.is_infinite()));
    }

    #[test]
    fn boundary_of_a_cube_is_its_shell_and_edge_voxels_count() {
        let dims = [6, 6, 6];
        let b = boundary(&cube(dims, [1, 1, 1], 4), dims);
        assert_eq!(b.iter().filter(|&&v| v).count(), 64 - 8);
        // (2, 2, 2) is inside the shell, (2, 2, 1) on it.
        assert!(!b[(2 * 6 + 2) * 6 + 2] && b[(6 + 2) * 6 + 2]);
        // A full volume is surface only on its outer shell.
        let full = boundary(&[true; 27], [3, 3, 3]);
        assert_eq!(full.iter().filter(|&&v| v).count(), 26);
        assert!(!full[13]);
    }

    #[test]
    fn single_voxels_shifted_are_the_shift_apart() {
        let dims = [5, 5, 8];
        let mut a = vec![false; 200];
        let mut b = vec![false; 200];
        a[(2 * 5 + 2) * 5 + 2] = true;
        b[(5 * 5 + 2) * 5 + 2] = true;
        assert_eq!(hd95(&a, &b, dims, [1.0, 1.0, 1.0]), Some(3.0));
        assert_eq!(hd95(&a, &b, dims, [1.0, 1.0, 2.5]), Some(7.5));
        assert_eq!(hd95(&a, &a, dims, [1.0, 1.0, 2.5]), Some(0.0));
    }

    #[test]
    fn cubes_offset_along_an_axis() {
        let dims = [10, 8, 10];
        // Side 4 shifted by 2 along x: the pooled distances are 48 zeros, 32 ones and 32 twos.
        let a = cube(dims, [1, 2, 3], 4);
        let b = cube(dims, [3, 2, 3], 4);
        assert_eq!(hd95(&a, &b, dims, [1.0; 3]), Some(2.0));
        // Shifted by 1 along z with 2.5 mm slices: the z faces are 2.5 mm apart, the inner
        // far face is 1 mm from the side walls; pooled 72 zeros, 8 ones and 32 at 2.5 mm.
        let b = cube(dims, [1, 2, 4], 4);
        assert_eq!(hd95(&a, &b, dims, [1.0, 1.0, 2.5]), Some(2.5));
        // Disjoint 2-voxel cubes 3 apart along z: half the distances are 2 slices, half 3.
        let a = cube(dims, [4, 4, 1], 2);
        let b = cube(dims, [4, 4, 4], 2);
        assert_eq!(hd95(&a, &b, dims, [1.0, 1.0, 2.5]), Some(7.5));
    }

    #[test]
    fn voxel_inside_a_cube_is_the_corner_distance_at_the_95th_percentile() {
        let dims = [5, 5, 5];
        let b = cube(dims, [1, 1, 1], 3);
        let a: Vec<bool> = (0..125).map(|i| i == (2 * 5 + 2) * 5 + 2).collect();
        let got = hd95(&a, &b, dims, [1.0; 3]).unwrap();
        assert!((got - 3f64.sqrt()).abs() < 1e-12, "{got}");
        let got = hd95(&a, &b, dims, [1.0, 1.0, 2.5]).unwrap();
        assert!((got - 8.25f64.sqrt()).abs() < 1e-12, "{got}");
    }

    #[test]
    fn hd95_equals_brute_force_surface_distances() {
        let mut rng = Rng::new(11);
        let dims = [7, 6, 5];
        let spacing = [0.9, 1.2, 2.0];
        for _ in 0..4 {
            let a = random_mask(&mut rng, 210, 0.3);
            let b = random_mask(&mut rng, 210, 0.3);
            let (sa, sb) = (boundary(&a, dims), boundary(&b, dims));
            let (da, db) = (
                brute_squared(&sb, dims, spacing),
                brute_squared(&sa, dims, spacing),
            );
            let mut pooled: Vec<f64> = (0..210)
                .filter(|&i| sa[i])
                .map(|i| da[i].sqrt())
                .chain((0..210).filter(|&i| sb[i]).map(|i| db[i].sqrt()))
                .collect();
            let want = percentile(&mut pooled, 95.0);
            let got = hd95(&a, &b, dims, spacing).unwrap();
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
    }

    #[test]
    fn empty_mask_has_no_hd95() {
        let dims = [4, 4, 4];
        let a = cube(dims, [1, 1, 1], 2);
        assert_eq!(hd95(&a, &[false; 64], dims, [1.0; 3]), None);
        assert_eq!(hd95(&[false; 64], &a, dims, [1.0; 3]), None);
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        // numpy.percentile([4, 1, 3, 2, 10], 95) = 8.8
        let got = percentile(&mut [4.0, 1.0, 3.0, 2.0, 10.0], 95.0);
        assert!((got - 8.8).abs() < 1e-12, "{got}");
        assert_eq!(percentile(&mut [5.0], 95.0), 5.0);
        assert_eq!(percentile(&mut [1.0, 2.0, 3.0], 50.0), 2.0);
    }
}
