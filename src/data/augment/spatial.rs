//! The spatial half of augmentation: mirroring, rotation, scaling, translation and elastic
//! deformation composed into one map from patch voxels to source voxels, applied once to all
//! channels (trilinear) and the label (as nnU-Net does: each label's trilinear share, the
//! largest wins, `linear_label`) straight from the whole case grid, so a rotated patch is
//! filled with real data wherever the case has any (no empty corners).
//!
//! Positions are (x, y, z) in voxels. Patch voxel `i` has offset `o = i - (p - 1) / 2` from the
//! patch centre; its source position is `centre + shift + matrix * o + displacement[i]`.
use super::super::grid;
use crate::rng::Rng;
use std::ops::Range;

/// A read-only view of a case grid: channels and label, x fastest.
pub struct GridView<'a> {
    pub dims: [usize; 3],
    pub channels: Vec<&'a [f32]>,
    pub label: &'a [u8],
    /// Image value outside the grid (the label there is 0).
    pub background: f32,
}

/// A dense displacement field over the patch, 3 values (x, y, z) per voxel, x fastest.
#[derive(Clone, Debug, PartialEq)]
pub struct Displacement {
    pub field: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SpatialTransform {
    /// Row-major 3x3 matrix acting on offsets from the patch centre.
    pub matrix: [[f64; 3]; 3],
    /// Whole-voxel shift of the centre.
    pub shift: [f64; 3],
    pub displacement: Option<Displacement>,
}

fn matmul(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

impl SpatialTransform {
    pub fn identity() -> Self {
        Self {
            matrix: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            shift: [0.0; 3],
            displacement: None,
        }
    }

    /// Mirror the axes flagged in `mirror`, scale each axis by `scale`, then rotate by
    /// `angles` radians about x, then y, then z (right-handed); `shift` moves the centre.
    pub fn compose(mirror: [bool; 3], scale: [f64; 3], angles: [f64; 3], shift: [f64; 3]) -> Self {
        let m = |a: usize| if mirror[a] { -scale[a] } else { scale[a] };
        let mirror_scale = [[m(0), 0.0, 0.0], [0.0, m(1), 0.0], [0.0, 0.0, m(2)]];
        let (sx, cx) = angles[0].sin_cos();
        let (sy, cy) = angles[1].sin_cos();
        let (sz, cz) = angles[2].sin_cos();
        let rx = [[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]];
        let ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
        let rz = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]];
        Self {
            matrix: matmul(rz, matmul(ry, matmul(rx, mirror_scale))),
            shift,
            displacement: None,
        }
    }

    /// Source position of patch voxel 0 and, if the map is only whole-voxel mirroring and
    /// shifting, the per-axis direction (+1 / -1): then patches are copied, not interpolated.
    fn grid_aligned(&self, origin: [f64; 3]) -> Option<[isize; 3]> {
        if self.displacement.is_some() {
            return None;
        }
        let mut dir = [0isize; 3];
        for a in 0..3 {
            for b in 0..3 {
                let want_abs = if a == b { 1.0 } else { 0.0 };
                if (self.matrix[a][b].abs() - want_abs).abs() > 1e-12 {
                    return None;
                }
            }
            if (origin[a] - origin[a].round()).abs() > 1e-9 {
                return None;
            }
            dir[a] = if self.matrix[a][a] > 0.0 { 1 } else { -1 };
        }
        Some(dir)
    }
}

/// A smooth random displacement field over a patch: independent normal displacements (std
/// `magnitude` voxels) on a control grid every `control_spacing` voxels, interpolated
/// trilinearly to every patch voxel.
pub fn elastic_field(
    patch: [usize; 3],
    control_spacing: f64,
    magnitude: f64,
    rng: &mut Rng,
) -> Displacement {
    let coarse = patch.map(|p| ((p as f64 / control_spacing).ceil() as usize + 1).max(2));
    let values: Vec<f32> = (0..grid::voxels(coarse) * 3)
        .map(|_| (rng.normal() * magnitude) as f32)
        .collect();
    Displacement {
        field: grid::resample_linear(&values, coarse, 3, patch),
    }
}

/// Fills `images` (channel-major: one patch per channel, x fastest) and `label` with the
/// transformed patch centred at `centre`. `patch` is (x, y, z).
pub fn extract(
    src: &GridView,
    centre: [f64; 3],
    transform: &SpatialTransform,
    patch: [usize; 3],
    images: &mut [f32],
    label: &mut [u8],
) {
    let plane = grid::voxels(patch);
    debug_assert_eq!(images.len(), plane * src.channels.len());
    debug_assert_eq!(label.len(), plane);
    let half = patch.map(|p| (p as f64 - 1.0) / 2.0);
    let m = &transform.matrix;
    let origin: [f64; 3] = [0, 1, 2]
        .map(|a| centre[a] + transform.shift[a] - (0..3).map(|b| m[a][b] * half[b]).sum::<f64>());
    match transform.grid_aligned(origin) {
        Some(dir) => copy_aligned(
            src,
            origin.map(|v| v.round() as isize),
            dir,
            patch,
            images,
            label,
        ),
        None => interpolate(src, origin, transform, patch, images, label),
    }
}

/// Whole-voxel copy, row by row, with mirrored axes read backwards.
fn copy_aligned(
    src: &GridView,
    origin: [isize; 3],
    dir: [isize; 3],
    patch: [usize; 3],
    images: &mut [f32],
    label: &mut [u8],
) {
    let [nx, ny, nz] = src.dims.map(|d| d as isize);
    let [pw, ph, pd] = patch;
    let plane = pw * ph * pd;
    // Patch x positions whose source x lies inside the grid: [lo, hi).
    let sx = |i: usize| origin[0] + dir[0] * i as isize;
    let inside = |i: usize| (0..nx).contains(&sx(i));
    let lo = (0..pw).find(|&i| inside(i)).unwrap_or(pw);
    let hi = (lo..pw).find(|&i| !inside(i)).unwrap_or(pw);
    for k in 0..pd {
        let z = origin[2] + dir[2] * k as isize;
        for j in 0..ph {
            let y = origin[1] + dir[1] * j as isize;
            let out = (k * ph + j) * pw;
            let lrow = &mut label[out..out + pw];
            if !(0..nz).contains(&z) || !(0..ny).contains(&y) || lo == hi {
                lrow.fill(0);
                for c in 0..src.channels.len() {
                    images[c * plane + out..c * plane + out + pw].fill(src.background);
                }
                continue;
            }
            let row = ((z * ny + y) * nx) as usize;
            // Source span of patch positions lo..hi, in increasing source order.
            let (a, b) = if dir[0] > 0 {
                (sx(lo) as usize, sx(hi - 1) as usize + 1)
            } else {
                (sx(hi - 1) as usize, sx(lo) as usize + 1)
            };
            copy_row(lrow, &src.label[row + a..row + b], lo, hi, dir[0] < 0, 0u8);
            for (c, ch) in src.channels.iter().enumerate() {
                let dst = &mut images[c * plane + out..c * plane + out + pw];
                copy_row(
                    dst,
                    &ch[row + a..row + b],
                    lo,
                    hi,
                    dir[0] < 0,
                    src.background,
                );
            }
        }
    }
}

/// Fills `dst[lo..hi]` from `from` (backwards when `reversed`) and the rest with `fill`.
fn copy_row<T: Copy>(dst: &mut [T], from: &[T], lo: usize, hi: usize, reversed: bool, fill: T) {
    dst[..lo].fill(fill);
    dst[hi..].fill(fill);
    if reversed {
        for (d, &s) in dst[lo..hi].iter_mut().zip(from.iter().rev()) {
            *d = s;
        }
    } else {
        dst[lo..hi].copy_from_slice(from);
    }
}

/// Tile size (x, y, z) of the interpolation loop.
const TILE: [usize; 3] = [32, 16, 16];

/// Distance from the grid border (voxels) inside which a row's points take the unchecked path;
/// far larger than the f32 rounding of the coordinates.
const MARGIN: f64 = 1e-3;

/// The label of corners outside the grid in `linear_label`: a label of its own (nnU-Net's
/// padding label, -1), which gives background where it wins.
const OUTSIDE: i16 = -1;

/// The label nnU-Net's linear segmentation sampling (batchgeneratorsv2's SpatialTransform,
/// `mode_seg` bilinear, padding label -1) gives a point whose trilinear corners (x fastest)
/// carry `corners` and whose fractional position in its cell is `w`: each label scores its
/// corners' weights, times 1000, rounded to f16 (so that near ties become ties, as there);
/// the highest score wins, a tie going to `nearest` (the label of the nearest corner, halves
/// rounded to even) where it is among the tied, else to the lowest label. Where the
/// corners agree, which is almost everywhere, that is their label.
fn linear_label(corners: &[i16; 8], w: [f32; 3], nearest: i16) -> u8 {
    let first = corners[0];
    if corners.iter().all(|&c| c == first) {
        return first.max(0) as u8;
    }
    let mut scores: [(i16, f32); 8] = [(0, 0.0); 8];
    let mut n = 0;
    for (corner, &l) in corners.iter().enumerate() {
        let weight: f32 = (0..3)
            .map(|a| {
                if (corner >> a) & 1 == 1 {
                    w[a]
                } else {
                    1.0 - w[a]
                }
            })
            .product();
        match scores[..n].iter_mut().find(|(label, _)| *label == l) {
            Some((_, score)) => *score += 1000.0 * weight,
            None => {
                scores[n] = (l, 1000.0 * weight);
                n += 1;
            }
        }
    }
    let scores = &mut scores[..n];
    for (_, score) in scores.iter_mut() {
        *score = half::f16::from_f32(*score).to_f32();
    }
    let best = scores.iter().map(|&(_, s)| s).fold(f32::MIN, f32::max);
    let winner = if scores.iter().any(|&(l, s)| l == nearest && s == best) {
        nearest
    } else {
        scores
            .iter()
            .filter(|&&(_, s)| s == best)
            .map(|&(l, _)| l)
            .min()
            .unwrap_or(OUTSIDE)
    };
    winner.max(0) as u8
}

/// The corner (0 or 1) along an axis nearest to a point `w` into its cell, halves to the
/// even voxel of `floor` (nnU-Net's nearest sampling rounds as `nearbyint` does).
#[inline]
fn nearest_offset(floor: i32, w: f32) -> i32 {
    if w == 0.5 {
        floor.rem_euclid(2)
    } else {
        (w > 0.5) as i32
    }
}

/// `linear_label` of a point `w` into the cell whose low corner is `floor`, its corners
/// (x fastest) carrying `corners`, the nearest taken from among them.
#[inline]
fn cell_label(corners: &[i16; 8], floor: [i32; 3], w: [f32; 3]) -> u8 {
    let near = (0..3)
        .map(|a| nearest_offset(floor[a], w[a]) << a)
        .sum::<i32>();
    linear_label(corners, w, corners[near as usize])
}

/// Floor as an integer, exact, without the libm call `f32::floor` becomes on baseline x86-64.
#[inline]
fn floor_i32(v: f32) -> i32 {
    let t = v as i32;
    t - ((t as f32) > v) as i32
}

/// The positions i in `range` whose source point `start + step * i` has all eight trilinear
/// corners inside the grid (at least `MARGIN` from its faces), as one run.
fn interior_run(
    start: [f32; 3],
    step: [f32; 3],
    last: [i32; 3],
    range: Range<usize>,
) -> Range<usize> {
    let empty = range.start..range.start;
    let (mut lo, mut hi) = (range.start as f64, range.end as f64);
    for a in 0..3 {
        let (s, d) = (start[a] as f64, step[a] as f64);
        let (min, max) = (MARGIN, last[a] as f64 - MARGIN);
        if max < min {
            return empty;
        }
        if d.abs() < 1e-12 {
            if s < min || s > max {
                return empty;
            }
            continue;
        }
        let (at_min, at_max) = ((min - s) / d, (max - s) / d);
        let (first, final_) = if d > 0.0 {
            (at_min, at_max)
        } else {
            (at_max, at_min)
        };
        lo = lo.max(first.ceil());
        hi = hi.min(final_.floor() + 1.0);
    }
    if hi <= lo {
        empty
    } else {
        lo as usize..hi as usize
    }
}

/// Reads one mapped point for all channels and the label.
struct PointSampler<'a, 'b> {
    src: &'a GridView<'b>,
    nx: usize,
    ny: usize,
    nxy: usize,
    last: [i32; 3],
    plane: usize,
}

impl PointSampler<'_, '_> {
    /// A point whose trilinear corners are all inside the grid (so x, y, z >= 0 and
    /// truncation is the floor).
    #[inline]
    fn interior(&self, [x, y, z]: [f32; 3], o: usize, images: &mut [f32], label: &mut [u8]) {
        let (nx, nxy) = (self.nx, self.nxy);
        let (ix, iy, iz) = (x as i32 as usize, y as i32 as usize, z as i32 as usize);
        let (wx, wy, wz) = (x - ix as f32, y - iy as f32, z - iz as f32);
        let base = (iz * self.ny + iy) * nx + ix;
        let src = self.src.label;
        let corners: [i16; 8] = std::array::from_fn(|c| {
            let at = base + (c & 1) + ((c >> 1) & 1) * nx + (c >> 2) * nxy;
            src[at] as i16
        });
        let floor = [ix, iy, iz].map(|v| v as i32);
        label[o] = cell_label(&corners, floor, [wx, wy, wz]);
        for (c, ch) in self.src.channels.iter().enumerate() {
            // One bounds check for the 2x2x2 neighbourhood.
            let cell = &ch[base..base + nxy + nx + 2];
            let lerp = |a: f32, b: f32, t: f32| a + t * (b - a);
            let x00 = lerp(cell[0], cell[1], wx);
            let x10 = lerp(cell[nx], cell[nx + 1], wx);
            let x01 = lerp(cell[nxy], cell[nxy + 1], wx);
            let x11 = lerp(cell[nxy + nx], cell[nxy + nx + 1], wx);
            images[c * self.plane + o] = lerp(lerp(x00, x10, wy), lerp(x01, x11, wy), wz);
        }
    }

    /// Any point: corners outside the grid count as background, and carry their own label
    /// (`OUTSIDE`, background where it wins).
    fn checked(&self, [x, y, z]: [f32; 3], o: usize, images: &mut [f32], label: &mut [u8]) {
        let (nx, ny, last, bg) = (self.nx, self.ny, self.last, self.src.background);
        let (ix, iy, iz) = (floor_i32(x), floor_i32(y), floor_i32(z));
        let w = [x - ix as f32, y - iy as f32, z - iz as f32];
        let in_grid = |v: i32, a: usize| v >= 0 && v <= last[a];
        let label_at = |p: [i32; 3]| {
            if (0..3).all(|a| in_grid(p[a], a)) {
                self.src.label[(p[2] as usize * ny + p[1] as usize) * nx + p[0] as usize] as i16
            } else {
                OUTSIDE
            }
        };
        let corners: [i16; 8] = std::array::from_fn(|c| {
            label_at([
                ix + (c & 1) as i32,
                iy + ((c >> 1) & 1) as i32,
                iz + (c >> 2) as i32,
            ])
        });
        label[o] = cell_label(&corners, [ix, iy, iz], w);
        let far = [ix, iy, iz].iter().zip(last).any(|(&v, l)| v < -1 || v > l);
        for (c, ch) in self.src.channels.iter().enumerate() {
            let mut acc = 0.0f32;
            if !far {
                for corner in 0..8usize {
                    let off = [corner & 1, (corner >> 1) & 1, corner >> 2];
                    let p = [ix + off[0] as i32, iy + off[1] as i32, iz + off[2] as i32];
                    let weight: f32 = (0..3)
                        .map(|a| if off[a] == 1 { w[a] } else { 1.0 - w[a] })
                        .product();
                    let value = if (0..3).all(|a| in_grid(p[a], a)) {
                        ch[(p[2] as usize * ny + p[1] as usize) * nx + p[0] as usize]
                    } else {
                        bg
                    };
                    acc += weight * value;
                }
            } else {
                acc = bg;
            }
            images[c * self.plane + o] = acc;
        }
    }
}

/// Trilinear (images) and linear (label, `linear_label`) sampling along the mapped
/// coordinates, row by row: along a patch row the source position advances by the matrix's
/// first column, so the part of a row that is well inside the grid is found once and sampled
/// without checks. Coordinates are f32 (exact to about 1e-5 voxels at these sizes).
fn interpolate(
    src: &GridView,
    origin: [f64; 3],
    transform: &SpatialTransform,
    patch: [usize; 3],
    images: &mut [f32],
    label: &mut [u8],
) {
    let [nx, ny, _] = src.dims;
    let [pw, ph, pd] = patch;
    let sampler = PointSampler {
        src,
        nx,
        ny,
        nxy: nx * ny,
        last: src.dims.map(|d| d as i32 - 1),
        plane: pw * ph * pd,
    };
    let m = &transform.matrix;
    let step = [0, 1, 2].map(|a| m[a][0] as f32);
    let displacement = transform.displacement.as_ref().map(|d| d.field.as_slice());
    // Tiles of the patch, so a rotated tile's source neighbourhood stays in cache.
    let tiles = |n: usize, t: usize| (0..n).step_by(t).map(move |a| a..(a + t).min(n));
    for (tk, tj, ti) in tiles(pd, TILE[2])
        .flat_map(|tk| tiles(ph, TILE[1]).map(move |tj| (tk.clone(), tj)))
        .flat_map(|(tk, tj)| tiles(pw, TILE[0]).map(move |ti| (tk.clone(), tj.clone(), ti)))
    {
        for k in tk {
            for j in tj.clone() {
                let row_start =
                    [0, 1, 2].map(|a| (origin[a] + m[a][1] * j as f64 + m[a][2] * k as f64) as f32);
                let out_row = (k * ph + j) * pw;
                let point = |i: usize| {
                    let t = i as f32;
                    let mut p = [0, 1, 2].map(|a| row_start[a] + step[a] * t);
                    if let Some(d) = displacement {
                        let o = (out_row + i) * 3;
                        p = [p[0] + d[o], p[1] + d[o + 1], p[2] + d[o + 2]];
                    }
                    p
                };
                // A displaced row is not linear: every point is checked.
                let run = match displacement {
                    None => interior_run(row_start, step, sampler.last, ti.clone()),
                    Some(_) => ti.start..ti.start,
                };
                for i in (ti.start..run.start).chain(run.end..ti.end) {
                    sampler.checked(point(i), out_row + i, images, label);
                }
                for i in run {
                    sampler.interior(point(i), out_row + i, images, label);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::FRAC_PI_2;

    /// A 9x9x9 grid with value x + 10 y + 100 z, label (x + y + z) % 4.
    fn pattern() -> (Vec<f32>, Vec<u8>) {
        let mut img = Vec::new();
        let mut lab = Vec::new();
        for z in 0..9 {
            for y in 0..9 {
                for x in 0..9 {
                    img.push((x + 10 * y + 100 * z) as f32);
                    lab.push(((x + y + z) % 4) as u8);
                }
            }
        }
        (img, lab)
    }

    fn run(t: &SpatialTransform, centre: [f64; 3], patch: [usize; 3]) -> (Vec<f32>, Vec<u8>) {
        let (img, lab) = pattern();
        let view = GridView {
            dims: [9, 9, 9],
            channels: vec![&img],
            label: &lab,
            background: -1.0,
        };
        let mut out = vec![0.0; grid::voxels(patch)];
        let mut out_label = vec![0; grid::voxels(patch)];
        extract(&view, centre, t, patch, &mut out, &mut out_label);
        (out, out_label)
    }

    /// A label wins by its share of the eight corners (rounded to f16, so near ties are
    /// ties); a tie goes to the nearest corner's label where it is tied, else to the lowest;
    /// corners outside the grid win as background.
    #[test]
    fn labels_take_the_largest_trilinear_share() {
        let o = OUTSIDE;
        assert_eq!(linear_label(&[3; 8], [0.2, 0.9, 0.5], 3), 3);
        // Split along x: 2 at x0, 5 at x1; the larger share wins whatever the nearest says.
        let split = [2, 5, 2, 5, 2, 5, 2, 5];
        assert_eq!(linear_label(&split, [0.4, 0.3, 0.7], 5), 2);
        assert_eq!(linear_label(&split, [0.6, 0.3, 0.7], 2), 5);
        // Halfway (and within f16's rounding of it), the nearest corner decides.
        assert_eq!(linear_label(&split, [0.5, 0.3, 0.7], 5), 5);
        assert_eq!(linear_label(&split, [0.5, 0.3, 0.7], 2), 2);
        assert_eq!(linear_label(&split, [0.50004, 0.3, 0.7], 2), 2);
        // 1 and 4 share the low z face, 7 has the high one: 7 wins with half, and at a third
        // of the way up all three tie, the nearest deciding where it is one of them, else
        // the lowest.
        let three = [1, 1, 4, 4, 7, 7, 7, 7];
        assert_eq!(linear_label(&three, [0.3, 0.5, 0.5], 4), 7);
        let third = [0.3, 0.5, 1.0 / 3.0];
        assert_eq!(linear_label(&three, third, 4), 4);
        assert_eq!(linear_label(&three, third, 7), 7);
        assert_eq!(linear_label(&three, third, 9), 1);
        // Mostly outside the grid: background, though the one inside corner is a label.
        let edge = [o, o, o, o, o, o, o, 6];
        assert_eq!(linear_label(&edge, [0.5, 0.5, 0.5], 6), 0);
        assert_eq!(linear_label(&edge, [0.9, 0.9, 0.9], 6), 6);
        // Halves round to the even voxel.
        assert_eq!((nearest_offset(4, 0.5), nearest_offset(5, 0.5)), (0, 1));
        assert_eq!((nearest_offset(-3, 0.5), nearest_offset(4, 0.49)), (1, 0));
    }

    #[test]
    fn identity_is_the_exact_crop_with_background_outside() {
        // Patch 4x3x2 starting at (1, 2, 3): centre = start + (p - 1) / 2.
        let (img, lab) = run(&SpatialTransform::identity(), [2.5, 3.0, 3.5], [4, 3, 2]);
        let (src, src_lab) = pattern();
        assert_eq!(img, grid::crop(&src, [9; 3], [1, 2, 3], [5, 5, 5]));
        assert_eq!(lab, grid::crop(&src_lab, [9; 3], [1, 2, 3], [5, 5, 5]));
        // A patch hanging over the low x edge: background image, label 0 there.
        let (img, lab) = run(&SpatialTransform::identity(), [0.5, 4.0, 4.0], [4, 1, 1]);
        assert_eq!(img, vec![-1.0, 440.0, 441.0, 442.0]);
        assert_eq!(lab[0], 0);
    }

    #[test]
    fn mirroring_reverses_an_axis_and_twice_is_identity() {
        let centre = [4.0, 4.0, 4.0];
        let patch = [5, 5, 5];
        let (plain, plain_lab) = run(&SpatialTransform::identity(), centre, patch);
        let (flipped, _) = run(
            &SpatialTransform::compose([false, true, false], [1.0; 3], [0.0; 3], [0.0; 3]),
            centre,
            patch,
        );
        for k in 0..5 {
            for j in 0..5 {
                for i in 0..5 {
                    assert_eq!(flipped[(k * 5 + j) * 5 + i], plain[(k * 5 + 4 - j) * 5 + i]);
                }
            }
        }
        // Mirroring an extracted patch again gives the identity patch back.
        let (back, back_lab) = {
            let view = GridView {
                dims: patch,
                channels: vec![&flipped],
                label: &plain_lab,
                background: -1.0,
            };
            let mut out = vec![0.0; 125];
            let mut lab = vec![0; 125];
            let t = SpatialTransform::compose([false, true, false], [1.0; 3], [0.0; 3], [0.0; 3]);
            extract(&view, [2.0; 3], &t, patch, &mut out, &mut lab);
            (out, lab)
        };
        assert_eq!(back, plain);
        // The label went through one mirror only here, so it is the flipped label.
        assert_eq!(back_lab[1], plain_lab[4 * 5 + 1]);
    }

    #[test]
    fn rotation_by_90_degrees_about_z_is_a_known_permutation() {
        // Rotating by +90 deg about z maps offset (ox, oy, oz) to source offset (-oy, ox, oz).
        let t = SpatialTransform::compose([false; 3], [1.0; 3], [0.0, 0.0, FRAC_PI_2], [0.0; 3]);
        let (img, lab) = run(&t, [4.0; 3], [5, 5, 3]);
        for k in 0..3 {
            for j in 0..5 {
                for i in 0..5 {
                    let (ox, oy, oz) = (i as i32 - 2, j as i32 - 2, k as i32 - 1);
                    let (x, y, z) = (4 - oy, 4 + ox, 4 + oz);
                    let o = (k * 5 + j) * 5 + i;
                    let want = (x + 10 * y + 100 * z) as f32;
                    assert!(
                        (img[o] - want).abs() < 1e-3,
                        "at {i},{j},{k}: {} vs {want}",
                        img[o]
                    );
                    assert_eq!(lab[o], ((x + y + z) % 4) as u8);
                }
            }
        }
    }

    #[test]
    fn unchecked_interior_runs_match_checking_every_point() {
        // A rotated, scaled patch that hangs over two faces of the grid.
        let t =
            SpatialTransform::compose([true, false, false], [1.2; 3], [0.4, -0.3, 0.7], [0.0; 3]);
        let patch = [7, 6, 5];
        let centre = [1.5, 6.0, 4.0];
        let (img, lab) = run(&t, centre, patch);
        let (src, src_lab) = pattern();
        let view = GridView {
            dims: [9, 9, 9],
            channels: vec![&src],
            label: &src_lab,
            background: -1.0,
        };
        let sampler = PointSampler {
            src: &view,
            nx: 9,
            ny: 9,
            nxy: 81,
            last: [8; 3],
            plane: grid::voxels(patch),
        };
        let mut want = vec![0.0; grid::voxels(patch)];
        let mut want_lab = vec![0; grid::voxels(patch)];
        let half = patch.map(|p| (p as f64 - 1.0) / 2.0);
        for o in 0..grid::voxels(patch) {
            let i = [o % 7, (o / 7) % 6, o / 42];
            let p = [0, 1, 2].map(|a| {
                (centre[a]
                    + (0..3)
                        .map(|b| t.matrix[a][b] * (i[b] as f64 - half[b]))
                        .sum::<f64>()) as f32
            });
            sampler.checked(p, o, &mut want, &mut want_lab);
        }
        assert_eq!(lab, want_lab);
        for (a, b) in img.iter().zip(&want) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        assert!(
            img.contains(&-1.0) && img.iter().any(|&v| v > 0.0),
            "covers both cases"
        );
    }

    #[test]
    fn rotated_and_deformed_labels_keep_only_input_values() {
        let mut rng = Rng::new(3);
        let mut t = SpatialTransform::compose(
            [true, false, true],
            [1.3; 3],
            [0.3, -0.4, 0.5],
            [1.0, 0.0, -2.0],
        );
        t.displacement = Some(elastic_field([6, 6, 6], 3.0, 1.5, &mut rng));
        let (img, lab) = run(&t, [4.0; 3], [6, 6, 6]);
        assert!(lab.iter().all(|&v| v < 4));
        assert!(img
            .iter()
            .all(|v| v.is_finite() && (-1.0..=888.0).contains(v)));
        // A scale of 0.5 samples half-voxel steps: a linear ramp stays linear.
        let half = SpatialTransform::compose([false; 3], [0.5; 3], [0.0; 3], [0.0; 3]);
        let (img, _) = run(&half, [4.0; 3], [3, 1, 1]);
        assert_eq!(img, vec![443.5, 444.0, 444.5]);
    }
}
