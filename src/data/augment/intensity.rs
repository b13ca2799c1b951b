//! The intensity half of augmentation. Each function changes one channel of one patch in
//! place (x fastest, `dims` = (x, y, z)); none allocates per voxel.
use super::super::grid;
use crate::rng::philox4x32;

/// Cells of the tabulated inverse normal CDF used for noise.
const NORMAL_CELLS: usize = 4096;

/// The inverse normal CDF at the cell edges i / NORMAL_CELLS (the two infinite ends replaced by
/// the outer cells' midpoints), rescaled so that the noise it gives has variance exactly 1.
/// A normal is then one 16-bit uniform and a linear interpolation in this table: a Gaussian
/// truncated at about 3.4 sigma, several times cheaper than Box-Muller's log and sine.
fn normal_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        // The CDF by the trapezoid rule on a fine grid over [-8, 8], inverted by bisection.
        let steps = 1usize << 18;
        let h = 16.0 / steps as f64;
        let pdf = |x: f64| (-0.5 * x * x).exp();
        let mut cdf = Vec::with_capacity(steps + 1);
        cdf.push(0.0f64);
        for k in 0..steps {
            let x = -8.0 + k as f64 * h;
            let next = cdf[k] + 0.5 * h * (pdf(x) + pdf(x + h));
            cdf.push(next);
        }
        let total = cdf[steps];
        let quantile = |p: f64| {
            let target = p * total;
            let k = cdf.partition_point(|&c| c < target).clamp(1, steps);
            -8.0 + (k - 1) as f64 * h + h * (target - cdf[k - 1]) / (cdf[k] - cdf[k - 1])
        };
        let edge = 0.5 / NORMAL_CELLS as f64;
        let table: Vec<f64> = (0..=NORMAL_CELLS)
            .map(|i| quantile((i as f64 / NORMAL_CELLS as f64).clamp(edge, 1.0 - edge)))
            .collect();
        let var = (0..1usize << 16)
            .map(|u| normal_from_bits(u as u16, &table).powi(2))
            .sum::<f64>()
            / 65_536.0;
        table.iter().map(|&v| (v / var.sqrt()) as f32).collect()
    })
}

/// One normal from 16 random bits: the top 12 pick a cell, the low 4 a point inside it.
#[inline]
fn normal_from_bits<T>(bits: u16, table: &[T]) -> T
where
    T: Copy
        + From<f32>
        + std::ops::Add<Output = T>
        + std::ops::Sub<Output = T>
        + std::ops::Mul<Output = T>,
{
    let cell = (bits >> 4) as usize;
    let frac = T::from(((bits & 15) as f32 + 0.5) / 16.0);
    table[cell] + frac * (table[cell + 1] - table[cell])
}

/// Adds zero-mean Gaussian noise of standard deviation `std`. The noise of voxel i depends
/// only on (seed, i): eight normals per counter-based Philox call (see `normal_table`).
pub fn add_noise(values: &mut [f32], std: f32, seed: u64) {
    let key = [seed as u32, (seed >> 32) as u32];
    let table = normal_table();
    for (block, chunk) in values.chunks_mut(8).enumerate() {
        let w = philox4x32(
            [block as u32, (block as u64 >> 32) as u32, 0x0004_015E, 0],
            key,
        );
        let halves = w.iter().flat_map(|&x| [x as u16, (x >> 16) as u16]);
        for (v, bits) in chunk.iter_mut().zip(halves) {
            *v += std * normal_from_bits(bits, table);
        }
    }
}

/// Normalised Gaussian kernel of standard deviation `sigma`, as wide as nnU-Net's: 6 sigma + 0.5
/// taps rounded (half to even) to the nearest odd number, so about 3 sigma each side.
fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let width = 6.0 * sigma + 0.5;
    let rounded = width.round_ties_even();
    let taps = if rounded % 2.0 == 1.0 {
        rounded
    } else if width >= rounded {
        rounded + 1.0
    } else {
        rounded - 1.0
    };
    let radius = (taps as isize - 1) / 2;
    let raw: Vec<f64> = (-radius..=radius)
        .map(|t| (-(t * t) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|&v| (v / sum) as f32).collect()
}

/// Gaussian blur with a separate sigma (in voxels) per axis (x, y, z); borders reflect about the
/// edge voxel (d c b | a b c d), as nnU-Net pads. `scratch` is reused between calls.
pub fn gaussian_blur(
    values: &mut [f32],
    dims: [usize; 3],
    sigma: [f64; 3],
    scratch: &mut Vec<f32>,
) {
    scratch.resize(values.len(), 0.0);
    for (axis, &s) in sigma.iter().enumerate() {
        if s <= 0.0 || dims[axis] == 1 {
            continue;
        }
        let kernel = gaussian_kernel(s);
        blur_axis(values, scratch, dims, axis, &kernel);
        values.copy_from_slice(scratch);
    }
}

/// One 1D convolution pass along `axis`, `src` to `dst`.
fn blur_axis(src: &[f32], dst: &mut [f32], dims: [usize; 3], axis: usize, kernel: &[f32]) {
    let radius = (kernel.len() / 2) as isize;
    let n = dims[axis];
    // Reflection about both edges has period 2 (n - 1), so kernels longer than the axis fold
    // back again; axes of one voxel are never blurred.
    let period = 2 * (n as isize - 1);
    let reflect = |i: isize| {
        let m = i.rem_euclid(period);
        (if m >= n as isize { period - m } else { m }) as usize
    };
    if axis == 0 {
        for (s, d) in src.chunks(n).zip(dst.chunks_mut(n)) {
            for (i, out) in d.iter_mut().enumerate() {
                let i = i as isize;
                *out = if i >= radius && i + radius < n as isize {
                    let window = &s[(i - radius) as usize..=(i + radius) as usize];
                    window.iter().zip(kernel).map(|(&v, &k)| v * k).sum()
                } else {
                    kernel
                        .iter()
                        .enumerate()
                        .map(|(t, &k)| k * s[reflect(i + t as isize - radius)])
                        .sum()
                };
            }
        }
        return;
    }
    // Along y or z, whole rows are combined at once (contiguous, vectorisable).
    let inner: usize = dims[..axis].iter().product();
    let outer: usize = dims[axis + 1..].iter().product();
    for o in 0..outer {
        let block = o * n * inner;
        for i in 0..n {
            let out = &mut dst[block + i * inner..block + (i + 1) * inner];
            out.fill(0.0);
            for (t, &k) in kernel.iter().enumerate() {
                let j = reflect(i as isize + t as isize - radius);
                let row = &src[block + j * inner..block + (j + 1) * inner];
                for (d, &v) in out.iter_mut().zip(row) {
                    *d += k * v;
                }
            }
        }
    }
}

/// Multiplies every value by `factor`.
pub fn scale_brightness(values: &mut [f32], factor: f32) {
    values.iter_mut().for_each(|v| *v *= factor);
}

/// Mean, standard deviation, minimum and maximum in one pass. Blocks of 1024 values are summed
/// in eight f32 lanes (so the loop vectorises) and the block sums added in f64; the variance as
/// E[x^2] - mean^2 is accurate enough for normalised intensities.
struct Moments {
    mean: f32,
    std: f32,
    min: f32,
    max: f32,
}

fn moments(values: &[f32]) -> Moments {
    const LANES: usize = 8;
    let (mut sum, mut sq) = (0.0f64, 0.0f64);
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    for block in values.chunks(1024) {
        let mut s = [0.0f32; LANES];
        let mut q = [0.0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let tail = chunks.remainder();
        for c in chunks {
            let c: &[f32; LANES] = c.try_into().expect("chunks_exact gives full chunks");
            for l in 0..LANES {
                s[l] += c[l];
                q[l] += c[l] * c[l];
                lo[l] = lo[l].min(c[l]);
                hi[l] = hi[l].max(c[l]);
            }
        }
        for &v in tail {
            s[0] += v;
            q[0] += v * v;
            lo[0] = lo[0].min(v);
            hi[0] = hi[0].max(v);
        }
        sum += s.iter().map(|&x| x as f64).sum::<f64>();
        sq += q.iter().map(|&x| x as f64).sum::<f64>();
    }
    let n = values.len().max(1) as f64;
    let mean = sum / n;
    let var = (sq / n - mean * mean).max(0.0);
    Moments {
        mean: mean as f32,
        std: var.sqrt() as f32,
        min: lo.iter().copied().fold(f32::INFINITY, f32::min),
        max: hi.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    }
}

/// Stretches values about their mean by `factor`, then clips to the original range.
pub fn adjust_contrast(values: &mut [f32], factor: f32) {
    let m = moments(values);
    values
        .iter_mut()
        .for_each(|v| *v = ((*v - m.mean) * factor + m.mean).clamp(m.min, m.max));
}

/// Simulates a coarser scan: nearest-neighbour downsampling by `zoom` (< 1) then trilinear
/// upsampling back to `dims` (nnU-Net's "nearest-exact" and trilinear, voxel centres
/// aligned); axis `keep`, if any, keeps its resolution (the slice axis of an anisotropic
/// patch, already the coarse one).
pub fn simulate_low_resolution(
    values: &mut [f32],
    dims: [usize; 3],
    zoom: f64,
    keep: Option<usize>,
) {
    // Half to even, as nnU-Net's Python round(): 9 voxels at zoom 0.5 become 4, not 5.
    let mut coarse = dims.map(|d| ((d as f64 * zoom).round_ties_even() as usize).max(1));
    if let Some(axis) = keep {
        coarse[axis] = dims[axis];
    }
    if coarse == dims {
        return;
    }
    let down = grid::resample_nearest(values, dims, coarse);
    values.copy_from_slice(&grid::resample_linear(&down, coarse, 1, dims));
}

/// Entries of the tabulated power curve over [0, 1].
const GAMMA_TABLE: usize = 16_384;

/// Gamma on values rescaled to [0, 1] (x -> x^gamma), mapped back to the original range, then
/// shifted and scaled to keep the original mean and std. `inverted` applies it to -x (so it
/// bends the bright end). The power curve is tabulated and interpolated linearly.
pub fn gamma(values: &mut [f32], gamma: f64, inverted: bool) {
    // Three passes over the channel (it is memory-bound): statistics, curve, restoring affine.
    let sign = if inverted { -1.0f32 } else { 1.0 };
    let before = moments(values);
    let (lo, hi) = if inverted {
        (-before.max, -before.min)
    } else {
        (before.min, before.max)
    };
    let range = hi - lo;
    if range <= 0.0 {
        return;
    }
    let table: Vec<f32> = (0..=GAMMA_TABLE)
        .map(|i| (i as f64 / GAMMA_TABLE as f64).powf(gamma) as f32)
        .collect();
    let to_index = GAMMA_TABLE as f32 / range;
    let (mut sum, mut sq) = (0.0f64, 0.0f64);
    for block in values.chunks_mut(1024) {
        let (mut s, mut q) = (0.0f32, 0.0f32);
        for v in block.iter_mut() {
            let pos = ((sign * *v - lo) * to_index).clamp(0.0, GAMMA_TABLE as f32);
            // Through i32: a single conversion instruction, unlike f32 -> usize.
            let i = (pos as i32 as usize).min(GAMMA_TABLE - 1);
            let t = table[i] + (pos - i as f32) * (table[i + 1] - table[i]);
            *v = t;
            s += t;
            q += t * t;
        }
        sum += s as f64;
        sq += q as f64;
    }
    let n = values.len() as f64;
    let mean_t = sum / n;
    let std_t = (sq / n - mean_t * mean_t).max(0.0).sqrt() as f32;
    // Back to the original mean and std of sign * v, then to the original sign.
    let (mean, std) = (sign * before.mean, before.std);
    let scale = std / (std_t + 1e-8);
    let shift = mean - mean_t as f32 * scale;
    values
        .iter_mut()
        .for_each(|v| *v = sign * (*v * scale + shift));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_has_the_requested_std_and_depends_only_on_the_seed() {
        let mut a = vec![1.0f32; 40_001];
        add_noise(&mut a, 0.5, 9);
        let Moments {
            mean: m, std: s, ..
        } = moments(&a);
        assert!(
            (m - 1.0).abs() < 0.01 && (s - 0.5).abs() < 0.01,
            "mean {m} std {s}"
        );
        // Shaped like a Gaussian: about 68.3% within one sigma, 95.4% within two.
        let within = |k: f32| {
            a.iter().filter(|&&v| (v - 1.0).abs() < k * 0.5).count() as f64 / a.len() as f64
        };
        assert!((within(1.0) - 0.683).abs() < 0.01 && (within(2.0) - 0.954).abs() < 0.005);
        let mut b = vec![1.0f32; 40_001];
        add_noise(&mut b, 0.5, 9);
        assert_eq!(a, b);
        add_noise(&mut b, 0.5, 10);
        assert_ne!(a, b);
    }

    #[test]
    fn blur_keeps_constants_and_the_mass_of_an_impulse() {
        let dims = [9, 8, 7];
        let mut flat = vec![2.0f32; grid::voxels(dims)];
        let mut scratch = Vec::new();
        gaussian_blur(&mut flat, dims, [0.8, 0.6, 1.0], &mut scratch);
        assert!(flat.iter().all(|&v| (v - 2.0).abs() < 1e-5));
        let mut impulse = vec![0.0f32; grid::voxels(dims)];
        let centre = (3 * 8 + 4) * 9 + 4;
        impulse[centre] = 1.0;
        gaussian_blur(&mut impulse, dims, [0.8, 0.8, 0.8], &mut scratch);
        let sum: f32 = impulse.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        assert!(impulse[centre] < 0.5 && impulse[centre] > impulse[centre + 1]);
        assert!(
            (impulse[centre + 1] - impulse[centre - 1]).abs() < 1e-7,
            "symmetric"
        );
    }

    #[test]
    fn contrast_brightness_gamma_and_low_res_behave() {
        let ramp: Vec<f32> = (0..100).map(|v| v as f32 / 10.0).collect();
        let mut c = ramp.clone();
        adjust_contrast(&mut c, 1.2);
        let mc = moments(&c);
        assert_eq!((mc.min, mc.max), (0.0, 9.9));
        assert!((c[60] - ((6.0 - 4.95) * 1.2 + 4.95)).abs() < 1e-5);
        let mut b = ramp.clone();
        scale_brightness(&mut b, 0.5);
        assert_eq!(b[10], 0.5);
        for inverted in [false, true] {
            let mut g = ramp.clone();
            gamma(&mut g, 1.5, inverted);
            let (a, b) = (moments(&ramp), moments(&g));
            let (m0, s0, m1, s1) = (a.mean, a.std, b.mean, b.std);
            assert!(
                (m0 - m1).abs() < 1e-4 && (s0 - s1).abs() < 1e-4,
                "stats kept"
            );
            assert!(g.windows(2).all(|w| w[0] < w[1]), "monotone");
            // x^1.5 is convex: the middle falls below the straight line; inverted, above it.
            let mid_below = g[50] < ramp[50];
            assert_eq!(mid_below, !inverted);
        }
        let dims = [8, 8, 1];
        let mut img: Vec<f32> = (0..64).map(|i| (i % 8) as f32).collect();
        simulate_low_resolution(&mut img, dims, 0.5, None);
        assert!(img.iter().all(|&v| (0.0..=7.0).contains(&v)));
        assert_ne!(img, (0..64).map(|i| (i % 8) as f32).collect::<Vec<_>>());
        // Kept at its resolution, an axis keeps its detail: a volume that varies only along
        // x comes back exactly when x is kept, and blurred when it is not.
        let dims = [8, 6, 4];
        let along_x: Vec<f32> = (0..8 * 6 * 4).map(|i| ((i % 8) * (i % 8)) as f32).collect();
        let mut kept = along_x.clone();
        simulate_low_resolution(&mut kept, dims, 0.5, Some(0));
        assert_eq!(kept, along_x);
        let mut all = along_x.clone();
        simulate_low_resolution(&mut all, dims, 0.5, None);
        assert_ne!(all, along_x);
    }
}
