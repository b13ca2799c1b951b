//! Operations on regular 3D grids stored x fastest (the `Volume` layout): cropping, padding,
//! placing one grid inside another and resampling to new sizes. Sizes and positions are
//! (x, y, z). Values may be interleaved: `channels` numbers per voxel, channels fastest.

/// Number of voxels of a grid.
pub fn voxels(dims: [usize; 3]) -> usize {
    dims[0] * dims[1] * dims[2]
}

/// The position (x, y, z) of the voxel at `index` of a grid, written as error messages
/// show it: "(x=1, y=2, z=3)".
pub fn position_text(index: usize, dims: [usize; 3]) -> String {
    let (x, y, z) = (
        index % dims[0],
        index / dims[0] % dims[1],
        index / (dims[0] * dims[1]),
    );
    format!("(x={x}, y={y}, z={z})")
}

/// The block `[start, end)` of a grid.
pub fn crop<T: Copy>(data: &[T], dims: [usize; 3], start: [usize; 3], end: [usize; 3]) -> Vec<T> {
    crop_interleaved(data, dims, 1, start, end)
}

/// The block `[start, end)` of a grid with `per_voxel` values per voxel.
pub fn crop_interleaved<T: Copy>(
    data: &[T],
    dims: [usize; 3],
    per_voxel: usize,
    start: [usize; 3],
    end: [usize; 3],
) -> Vec<T> {
    debug_assert_eq!(data.len(), voxels(dims) * per_voxel);
    let row = (end[0] - start[0]) * per_voxel;
    let mut out = Vec::with_capacity(row * (end[1] - start[1]) * (end[2] - start[2]));
    for z in start[2]..end[2] {
        for y in start[1]..end[1] {
            let at = ((z * dims[1] + y) * dims[0] + start[0]) * per_voxel;
            out.extend_from_slice(&data[at..at + row]);
        }
    }
    out
}

/// Copies the whole grid `src` into `dst` with its first voxel at `at`; `src` must fit.
pub fn place<T: Copy>(
    src: &[T],
    src_dims: [usize; 3],
    dst: &mut [T],
    dst_dims: [usize; 3],
    at: [usize; 3],
) {
    place_interleaved(src, src_dims, 1, dst, dst_dims, at)
}

/// `place` for grids with `per_voxel` values per voxel.
pub fn place_interleaved<T: Copy>(
    src: &[T],
    src_dims: [usize; 3],
    per_voxel: usize,
    dst: &mut [T],
    dst_dims: [usize; 3],
    at: [usize; 3],
) {
    debug_assert!((0..3).all(|a| at[a] + src_dims[a] <= dst_dims[a]));
    let row = src_dims[0] * per_voxel;
    for z in 0..src_dims[2] {
        for y in 0..src_dims[1] {
            let s = (z * src_dims[1] + y) * row;
            let d = (((z + at[2]) * dst_dims[1] + y + at[1]) * dst_dims[0] + at[0]) * per_voxel;
            dst[d..d + row].copy_from_slice(&src[s..s + row]);
        }
    }
}

/// The grid enlarged to `new_dims` with `before` voxels of `fill` in front along each axis.
pub fn pad<T: Copy>(
    data: &[T],
    dims: [usize; 3],
    before: [usize; 3],
    new_dims: [usize; 3],
    fill: T,
) -> Vec<T> {
    let mut out = vec![fill; voxels(new_dims)];
    place(data, dims, &mut out, new_dims, before);
    out
}

/// Source position of each destination voxel centre along one axis when `n_src` voxels are
/// stretched over `n_dst` (voxel centres at i + 0.5, both grids covering the same extent).
fn source_positions(n_src: usize, n_dst: usize) -> impl Iterator<Item = f64> {
    let scale = n_src as f64 / n_dst as f64;
    let last = (n_src - 1) as f64;
    (0..n_dst).map(move |d| ((d as f64 + 0.5) * scale - 0.5).clamp(0.0, last))
}

/// Shape of a buffer seen along one axis: `outer` blocks of `n` slices of `inner` values.
fn axis_view(dims: [usize; 3], channels: usize, axis: usize) -> (usize, usize, usize) {
    let inner = channels * dims[..axis].iter().product::<usize>();
    let outer = dims[axis + 1..].iter().product::<usize>();
    (outer, dims[axis], inner)
}

/// Linear interpolation along one axis.
fn resample_axis_linear(
    data: &[f32],
    dims: [usize; 3],
    channels: usize,
    axis: usize,
    n_new: usize,
) -> Vec<f32> {
    let (outer, n, inner) = axis_view(dims, channels, axis);
    let taps: Vec<(usize, usize, f32)> = source_positions(n, n_new)
        .map(|s| {
            let i0 = s.floor() as usize;
            (i0, (i0 + 1).min(n - 1), (s - i0 as f64) as f32)
        })
        .collect();
    let mut out = vec![0.0f32; outer * n_new * inner];
    if inner == 1 {
        // Along x of a single-channel grid: one value per tap, no inner slices.
        for (src, dst) in data.chunks_exact(n).zip(out.chunks_exact_mut(n_new)) {
            for (v, &(i0, i1, w)) in dst.iter_mut().zip(&taps) {
                *v = src[i0] + w * (src[i1] - src[i0]);
            }
        }
        return out;
    }
    for o in 0..outer {
        let src = &data[o * n * inner..(o + 1) * n * inner];
        let dst = &mut out[o * n_new * inner..(o + 1) * n_new * inner];
        for (d, &(i0, i1, w)) in taps.iter().enumerate() {
            let a = &src[i0 * inner..(i0 + 1) * inner];
            let b = &src[i1 * inner..(i1 + 1) * inner];
            for ((v, &x0), &x1) in dst[d * inner..(d + 1) * inner].iter_mut().zip(a).zip(b) {
                *v = x0 + w * (x1 - x0);
            }
        }
    }
    out
}

/// Trilinear resampling of an interleaved grid to `new_dims` (separable: one axis at a time).
pub fn resample_linear(
    data: &[f32],
    dims: [usize; 3],
    channels: usize,
    new_dims: [usize; 3],
) -> Vec<f32> {
    debug_assert_eq!(data.len(), voxels(dims) * channels);
    let mut cur = data.to_vec();
    let mut cur_dims = dims;
    for axis in 0..3 {
        if cur_dims[axis] != new_dims[axis] {
            cur = resample_axis_linear(&cur, cur_dims, channels, axis, new_dims[axis]);
            cur_dims[axis] = new_dims[axis];
        }
    }
    cur
}

/// Nearest-neighbour resampling (labels, masks) to `new_dims`.
pub fn resample_nearest<T: Copy>(data: &[T], dims: [usize; 3], new_dims: [usize; 3]) -> Vec<T> {
    debug_assert_eq!(data.len(), voxels(dims));
    let near: Vec<Vec<usize>> = (0..3)
        .map(|a| {
            source_positions(dims[a], new_dims[a])
                .map(|s| (s + 0.5).floor() as usize)
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(voxels(new_dims));
    for &z in &near[2] {
        for &y in &near[1] {
            let row = (z * dims[1] + y) * dims[0];
            out.extend(near[0].iter().map(|&x| data[row + x]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_then_place_restores_the_block() {
        let dims = [4, 3, 2];
        let data: Vec<u16> = (0..24).collect();
        let block = crop(&data, dims, [1, 1, 0], [3, 3, 2]);
        assert_eq!(block, vec![5, 6, 9, 10, 17, 18, 21, 22]);
        let mut back = vec![0u16; 24];
        place(&block, [2, 2, 2], &mut back, dims, [1, 1, 0]);
        for (i, (&b, &d)) in back.iter().zip(&data).enumerate() {
            let (x, y) = (i % 4, (i / 4) % 3);
            let inside = (1..3).contains(&x) && (1..3).contains(&y);
            assert_eq!(b, if inside { d } else { 0 }, "voxel {i}");
        }
    }

    #[test]
    fn linear_resampling_keeps_a_ramp_and_nearest_keeps_values() {
        // A ramp along x stays a ramp (in voxel-centre coordinates) after doubling.
        let data: Vec<f32> = (0..4).map(|x| x as f32).collect();
        let up = resample_linear(&data, [4, 1, 1], 1, [8, 1, 1]);
        let expect = [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0];
        for (u, e) in up.iter().zip(expect) {
            assert!((u - e).abs() < 1e-6, "{up:?}");
        }
        let labels = [0u8, 1, 2, 3];
        assert_eq!(resample_nearest(&labels, [4, 1, 1], [2, 1, 1]), vec![1, 3]);
        assert_eq!(
            resample_nearest(&labels, [4, 1, 1], [8, 1, 1]),
            vec![0, 0, 1, 1, 2, 2, 3, 3]
        );
        // Interleaved channels are interpolated independently.
        let two = [0.0f32, 10.0, 2.0, 30.0];
        assert_eq!(
            resample_linear(&two, [1, 2, 1], 2, [1, 1, 1]),
            vec![1.0, 20.0]
        );
    }
}
