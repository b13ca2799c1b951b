//! Sliding-window inference over a whole (cropped, normalised) volume: overlapping
//! patches, each prediction weighted by a Gaussian that trusts patch centres more than
//! borders, optional mirroring over every flip combination (test-time augmentation).
use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nn::{Ctx, Model};
use crate::tensor::Tensor;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlidingWindow {
    /// Patch size (D, H, W).
    pub patch: [usize; 3],
    /// Fraction of a patch shared by neighbouring windows (nnU-Net: 0.5).
    pub overlap: f64,
    /// Windows per forward pass.
    pub batch: usize,
    /// Average over all 8 mirrorings of the input.
    pub tta: bool,
}

impl SlidingWindow {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.overlap) {
            return Err(Error::config(
                "overlap",
                format!("{} is not in [0, 1)", self.overlap),
            ));
        }
        if self.patch.contains(&0) || self.batch == 0 {
            return Err(Error::config(
                "sliding window",
                "patch sizes and batch must be positive",
            ));
        }
        Ok(())
    }
}

/// Window start positions along one axis: evenly spread from 0 to size - patch with a
/// stride of at most patch * (1 - overlap).
pub fn window_starts(size: usize, patch: usize, overlap: f64) -> Vec<usize> {
    if size <= patch {
        return vec![0];
    }
    let max_step = ((patch as f64) * (1.0 - overlap)).max(1.0);
    let n = ((size - patch) as f64 / max_step).ceil() as usize + 1;
    let span = (size - patch) as f64;
    (0..n)
        .map(|i| ((i as f64 * span / (n - 1) as f64).round()) as usize)
        .collect()
}

/// Gaussian importance map over a patch, sigma = patch / 8 per axis, peak 1, no zeros.
pub fn gaussian_weights(patch: [usize; 3]) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f64> {
        let c = (n as f64 - 1.0) / 2.0;
        let sigma = (n as f64 / 8.0).max(1e-3);
        (0..n)
            .map(|i| (-((i as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp())
            .collect()
    };
    let (wd, wh, ww) = (axis(patch[0]), axis(patch[1]), axis(patch[2]));
    let mut out = Vec::with_capacity(patch.iter().product());
    for a in &wd {
        for b in &wh {
            for c in &ww {
                out.push((a * b * c) as f32);
            }
        }
    }
    let min_positive = out
        .iter()
        .copied()
        .filter(|&v| v > 0.0)
        .fold(f32::INFINITY, f32::min);
    for v in &mut out {
        *v = v.max(min_positive);
    }
    out
}

/// Copies a [D,H,W,C] box starting at `start` of size `size` out of `vol`, zero outside.
fn extract(
    vol: &[f32],
    dims: [usize; 3],
    c: usize,
    start: [usize; 3],
    size: [usize; 3],
    out: &mut [f32],
) {
    for z in 0..size[0] {
        for y in 0..size[1] {
            let dst = ((z * size[1] + y) * size[2]) * c;
            let (sz, sy) = (start[0] + z, start[1] + y);
            let row = &mut out[dst..dst + size[2] * c];
            if sz >= dims[0] || sy >= dims[1] {
                row.fill(0.0);
                continue;
            }
            let avail = dims[2].saturating_sub(start[2]).min(size[2]);
            let src = ((sz * dims[1] + sy) * dims[2] + start[2]) * c;
            row[..avail * c].copy_from_slice(&vol[src..src + avail * c]);
            row[avail * c..].fill(0.0);
        }
    }
}

/// Mirrors a [D,H,W,C] buffer along the chosen spatial axes.
pub fn flip_dhwc(src: &[f32], dims: [usize; 3], c: usize, axes: [bool; 3]) -> Vec<f32> {
    let mut out = vec![0.0; src.len()];
    for z in 0..dims[0] {
        let sz = if axes[0] { dims[0] - 1 - z } else { z };
        for y in 0..dims[1] {
            let sy = if axes[1] { dims[1] - 1 - y } else { y };
            for x in 0..dims[2] {
                let sx = if axes[2] { dims[2] - 1 - x } else { x };
                let d = ((z * dims[1] + y) * dims[2] + x) * c;
                let s = ((sz * dims[1] + sy) * dims[2] + sx) * c;
                out[d..d + c].copy_from_slice(&src[s..s + c]);
            }
        }
    }
    out
}

/// Weighted average of the model's full-resolution logits over all windows: `[D, H, W, K]`.
/// `image` is `[D, H, W, C]` (channels last). Volumes smaller than the patch are zero-padded.
pub fn predict_logits<B: Backend>(
    model: &mut Model<B>,
    backend: &B,
    image: &[f32],
    dims: [usize; 3],
    channels: usize,
    opts: &SlidingWindow,
) -> Result<Vec<f32>> {
    opts.validate()?;
    if image.len() != dims.iter().product::<usize>() * channels {
        return Err(Error::shape(
            "predict",
            format!(
                "image of {} values for dims {dims:?} x {channels} channels",
                image.len()
            ),
        ));
    }
    let k = model.spec().out_channels();
    let patch = opts.patch;
    let pvox: usize = patch.iter().product();
    let weights = gaussian_weights(patch);
    let starts: Vec<Vec<usize>> = (0..3)
        .map(|a| window_starts(dims[a], patch[a], opts.overlap))
        .collect();
    let mut windows = Vec::new();
    for &z in &starts[0] {
        for &y in &starts[1] {
            for &x in &starts[2] {
                windows.push([z, y, x]);
            }
        }
    }
    let flips: Vec<[bool; 3]> = if opts.tta {
        (0..8)
            .map(|m| [m & 4 != 0, m & 2 != 0, m & 1 != 0])
            .collect()
    } else {
        vec![[false; 3]]
    };
    let total: usize = dims.iter().product();
    let mut acc = vec![0.0f32; total * k];
    let mut norm = vec![0.0f32; total];
    let ctx = Ctx::<B>::eval();
    for group in windows.chunks(opts.batch) {
        let mut input = vec![0.0f32; group.len() * pvox * channels];
        for (i, start) in group.iter().enumerate() {
            extract(
                image,
                dims,
                channels,
                *start,
                patch,
                &mut input[i * pvox * channels..(i + 1) * pvox * channels],
            );
        }
        let mut summed = vec![0.0f32; group.len() * pvox * k];
        for flip in &flips {
            let batch_input: Vec<f32> = if flip.iter().any(|&f| f) {
                input
                    .chunks(pvox * channels)
                    .flat_map(|p| flip_dhwc(p, patch, channels, *flip))
                    .collect()
            } else {
                input.clone()
            };
            let x = Tensor::from_f32(
                backend,
                [group.len(), patch[0], patch[1], patch[2], channels],
                &batch_input,
            )?;
            let outputs = model.forward(&Var::constant(x), &ctx)?;
            let logits = outputs[0].value().to_vec_f32()?;
            if logits.len() != summed.len() {
                return Err(Error::shape(
                    "predict",
                    format!(
                        "model gave {} logits for {} windows of {patch:?}",
                        logits.len(),
                        group.len()
                    ),
                ));
            }
            for (i, chunk) in logits.chunks(pvox * k).enumerate() {
                let unflipped = if flip.iter().any(|&f| f) {
                    flip_dhwc(chunk, patch, k, *flip)
                } else {
                    chunk.to_vec()
                };
                for (s, v) in summed[i * pvox * k..(i + 1) * pvox * k]
                    .iter_mut()
                    .zip(unflipped)
                {
                    *s += v / flips.len() as f32;
                }
            }
        }
        for (i, start) in group.iter().enumerate() {
            for z in 0..patch[0].min(dims[0] - start[0].min(dims[0])) {
                for y in 0..patch[1].min(dims[1] - start[1].min(dims[1])) {
                    for x in 0..patch[2].min(dims[2] - start[2].min(dims[2])) {
                        let p = (z * patch[1] + y) * patch[2] + x;
                        let v = ((start[0] + z) * dims[1] + start[1] + y) * dims[2] + start[2] + x;
                        let w = weights[p];
                        norm[v] += w;
                        let src = &summed[(i * pvox + p) * k..(i * pvox + p + 1) * k];
                        for (a, s) in acc[v * k..(v + 1) * k].iter_mut().zip(src) {
                            *a += w * s;
                        }
                    }
                }
            }
        }
    }
    for (v, n) in norm.iter().enumerate() {
        for a in &mut acc[v * k..(v + 1) * k] {
            *a /= n;
        }
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_cover_the_axis() {
        assert_eq!(window_starts(10, 16, 0.5), vec![0]);
        assert_eq!(window_starts(16, 16, 0.5), vec![0]);
        assert_eq!(window_starts(40, 16, 0.5), vec![0, 8, 16, 24]);
        let s = window_starts(37, 16, 0.5);
        assert_eq!((s[0], *s.last().unwrap()), (0, 21));
        assert!(s.windows(2).all(|w| w[1] - w[0] <= 8));
    }

    #[test]
    fn gaussian_peaks_in_the_centre_and_has_no_zeros() {
        let g = gaussian_weights([9, 9, 9]);
        let centre = g[(4 * 9 + 4) * 9 + 4];
        assert!((centre - 1.0).abs() < 1e-6);
        assert!(g.iter().all(|&v| v > 0.0 && v <= centre));
        assert!(g[0] < 0.01);
    }

    #[test]
    fn flip_twice_is_identity() {
        let v: Vec<f32> = (0..2 * 3 * 4 * 2).map(|i| i as f32).collect();
        let f = flip_dhwc(&v, [2, 3, 4], 2, [true, false, true]);
        assert_ne!(f, v);
        assert_eq!(f[0..2], [v[(3 * 4 + 3) * 2], v[(3 * 4 + 3) * 2 + 1]]);
        assert_eq!(flip_dhwc(&f, [2, 3, 4], 2, [true, false, true]), v);
    }
}
