//! Sliding-window inference over a whole (cropped, normalised) volume: overlapping
//! patches, each prediction weighted by a Gaussian that trusts patch centres more than
//! borders, optional mirroring over every flip combination (test-time augmentation).
//! The whole case stays on the backend: windows are cut, mirrored and stitched there
//! (tensor_ops::{pad, flip, stitch}); only the image goes up and the logits come down.
use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nn::{Ctx, Model};
use crate::tensor::Tensor;
use crate::tensor_ops::binary::add;
use crate::tensor_ops::concat::concat_channels;
use crate::tensor_ops::flip::flip3d;
use crate::tensor_ops::pad::pad3d;
use crate::tensor_ops::stitch::{accumulate_windows, divide_by_weights};
use crate::tensor_ops::unary::{unary, UnaryOp};

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
    /// Image value around an axis shorter than the patch: the preprocessing's
    /// `background_value`, which training's patches see beyond a case.
    pub pad_value: f32,
}

impl SlidingWindow {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.overlap) {
            return Err(Error::config(
                "overlap",
                format!("{} is not in [0, 1)", self.overlap),
            ));
        }
        if !self.pad_value.is_finite() {
            return Err(Error::config(
                "sliding window",
                format!("pad value {} is not finite", self.pad_value),
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

/// Window start positions along one axis, nnU-Net's `compute_steps_for_sliding_window`:
/// the fewest windows with a stride of at most patch * (1 - overlap), evenly spread from 0
/// to size - patch, rounded half to even as numpy rounds (so the same windows as nnU-Net's).
/// The stride is at least one voxel, where nnU-Net would repeat positions.
pub fn window_starts(size: usize, patch: usize, overlap: f64) -> Vec<usize> {
    if size <= patch {
        return vec![0];
    }
    let max_step = ((patch as f64) * (1.0 - overlap)).max(1.0);
    let n = ((size - patch) as f64 / max_step).ceil() as usize + 1;
    let step = (size - patch) as f64 / (n - 1) as f64;
    (0..n)
        .map(|i| (step * i as f64).round_ties_even() as usize)
        .collect()
}

/// Zero voxels before an axis of `size` in its window when the patch is larger: the image
/// is centred, the odd voxel of padding after it, as nnU-Net's `pad_nd_image` pads it and
/// as training sees such a case on average (overhanging the patch by a random amount on
/// each side), rather than pushed into one corner.
pub fn window_offset(size: usize, patch: usize) -> usize {
    patch.saturating_sub(size) / 2
}

/// The mirrorings of the input that are averaged, as flips of (d, h, w): with `tta` all 8
/// combinations, each weighing 1/8 (nnU-Net's test-time mirroring over its three axes).
pub fn mirrorings(tta: bool) -> Vec<[bool; 3]> {
    if tta {
        (0..8)
            .map(|m| [m & 4 != 0, m & 2 != 0, m & 1 != 0])
            .collect()
    } else {
        vec![[false; 3]]
    }
}

/// Gaussian importance map over a patch, sigma = patch / 8 per axis, peak 1, no zeros:
/// nnU-Net's `compute_gaussian`, but centred at (n - 1) / 2 on every axis, so symmetric
/// under mirroring, where nnU-Net centres an even axis on voxel n / 2.
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

/// Every window's first voxel, z slowest then y then x.
fn window_grid(dims: [usize; 3], patch: [usize; 3], overlap: f64) -> Vec<[usize; 3]> {
    let starts: Vec<Vec<usize>> = (0..3)
        .map(|a| window_starts(dims[a], patch[a], overlap))
        .collect();
    let mut windows = Vec::new();
    for &z in &starts[0] {
        for &y in &starts[1] {
            for &x in &starts[2] {
                windows.push([z, y, x]);
            }
        }
    }
    windows
}

/// The windows at `starts` cut out of `image [1, D, H, W, C]` as one batch
/// `[windows, pd, ph, pw, C]`, zero where a window reaches past the volume.
fn cut_windows<B: Backend>(
    image: &Tensor<B>,
    dims: [usize; 3],
    starts: &[[usize; 3]],
    patch: [usize; 3],
) -> Result<Tensor<B>> {
    let windows = starts
        .iter()
        .map(|s| {
            let before = s.map(|v| -(v as isize));
            let after = std::array::from_fn(|a| (s[a] + patch[a]) as isize - dims[a] as isize);
            pad3d(image, before, after, 0.0)
        })
        .collect::<Result<Vec<_>>>()?;
    if let [one] = windows.as_slice() {
        return Ok(one.clone());
    }
    // Windows of one batch lie one after another in memory: each seen as a single row,
    // joined along that row.
    let cells = windows[0].numel();
    let rows = windows
        .iter()
        .map(|w| w.reshape([1, cells]))
        .collect::<Result<Vec<_>>>()?;
    let joined = concat_channels(&rows.iter().collect::<Vec<_>>())?;
    let [_, _, _, _, c] = image.shape().ndhwc("predict")?;
    joined.reshape([starts.len(), patch[0], patch[1], patch[2], c])
}

/// Weighted average of the model's full-resolution logits over all windows: `[D, H, W, K]`
/// on the host. `image` is `[D, H, W, C]` (channels last). An axis shorter than the patch
/// is centred in a window padded with `opts.pad_value` ([`window_offset`]). Uploads the
/// image once and downloads the logits once; see [`predict_volume`].
pub fn predict_logits<B: Backend>(
    model: &mut Model<B>,
    backend: &B,
    image: &[f32],
    dims: [usize; 3],
    channels: usize,
    opts: &SlidingWindow,
) -> Result<Vec<f32>> {
    if image.len() != dims.iter().product::<usize>() * channels {
        return Err(Error::shape(
            "predict",
            format!(
                "image of {} values for dims {dims:?} x {channels} channels",
                image.len()
            ),
        ));
    }
    let image = Tensor::from_f32(backend, [1, dims[0], dims[1], dims[2], channels], image)?;
    predict_volume(model, &image, opts)?.to_vec_f32()
}

/// Sliding-window prediction on the backend: `image [1, D, H, W, C]` to the weighted
/// average of the model's logits, `[1, D, H, W, K]`. Windows are cut, mirrored, predicted
/// in batches of `opts.batch`, mirrored back and stitched on the backend; nothing returns
/// to the host.
pub fn predict_volume<B: Backend>(
    model: &mut Model<B>,
    image: &Tensor<B>,
    opts: &SlidingWindow,
) -> Result<Tensor<B>> {
    opts.validate()?;
    let [n, d, h, w, _] = image.shape().ndhwc("predict")?;
    if n != 1 {
        return Err(Error::shape(
            "predict",
            format!(
                "image {} holds {n} volumes; predict takes one",
                image.shape()
            ),
        ));
    }
    let be = image.backend();
    let patch = opts.patch;
    // Axes shorter than the patch are padded to it, the image centred, and cropped back.
    let dims = [d, h, w].map(|n| n as isize);
    let before = [0, 1, 2].map(|a| window_offset(dims[a] as usize, patch[a]) as isize);
    let after = [0, 1, 2].map(|a| (patch[a] as isize - dims[a] - before[a]).max(0));
    let padded = before != [0; 3] || after != [0; 3];
    let padded_image;
    let image = if padded {
        padded_image = pad3d(image, before, after, f64::from(opts.pad_value))?;
        &padded_image
    } else {
        image
    };
    let [_, d, h, w, _] = image.shape().ndhwc("predict")?;
    let dims = [d, h, w];
    let k = model.spec().out_channels();
    let weights = Tensor::from_f32(be, patch, &gaussian_weights(patch))?;
    let flips = mirrorings(opts.tta);
    let mut acc = Tensor::zeros(be, [1, d, h, w, k])?;
    let mut norm = Tensor::zeros(be, [1, d, h, w, 1])?;
    let ctx = Ctx::<B>::eval();
    for group in window_grid(dims, patch, opts.overlap).chunks(opts.batch) {
        let input = cut_windows(image, dims, group, patch)?;
        let want = [group.len(), patch[0], patch[1], patch[2], k];
        let mut summed: Option<Tensor<B>> = None;
        for &flip in &flips {
            let mirrored = flip.contains(&true);
            let x = if mirrored {
                flip3d(&input, flip)?
            } else {
                input.clone()
            };
            let outputs = model.forward(&Var::constant(x), &ctx)?;
            let logits = outputs[0].value();
            if logits.dims() != want {
                return Err(Error::shape(
                    "predict",
                    format!(
                        "model gave logits {} for {} windows of {patch:?}",
                        logits.shape(),
                        group.len()
                    ),
                ));
            }
            let logits = if mirrored {
                flip3d(logits, flip)?
            } else {
                logits.clone()
            };
            // A power-of-two share (1 or 1/8): exact, as the host's division was.
            let share = if flips.len() > 1 {
                unary(UnaryOp::Scale(1.0 / flips.len() as f64), &logits)?
            } else {
                logits
            };
            summed = Some(match summed {
                Some(s) => add(&s, &share)?,
                None => share,
            });
        }
        let summed = summed.expect("at least one mirroring");
        accumulate_windows(&mut acc, &mut norm, &summed, &weights, group)?;
    }
    let logits = divide_by_weights(acc, &norm)?;
    if padded {
        pad3d(&logits, before.map(|b| -b), after.map(|a| -a), 0.0)
    } else {
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::nn::fcn::FcnConfig;
    use crate::nn::ModelSpec;
    use crate::rng::Rng;

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

    /// The host stitching `predict_logits` did before it ran on the backend: windows cut,
    /// mirrored, downloaded and accumulated on the host. Kept here as the expected value;
    /// since then it centres an image smaller than the patch, as the backend does.
    mod host {
        use super::*;

        /// Copies a [D,H,W,C] box starting at `start` of size `size` out of `vol`, zero
        /// outside.
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
        fn flip_dhwc(src: &[f32], dims: [usize; 3], c: usize, axes: [bool; 3]) -> Vec<f32> {
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

        /// Axes shorter than the patch padded to it with `pad_value`, the image centred,
        /// predicted, and the padding cut off again.
        pub fn predict_logits(
            model: &mut Model<Cpu>,
            backend: &Cpu,
            image: &[f32],
            dims: [usize; 3],
            channels: usize,
            opts: &SlidingWindow,
        ) -> Vec<f32> {
            let k = model.spec().out_channels();
            let padded = [0, 1, 2].map(|a| dims[a].max(opts.patch[a]));
            let before = [0, 1, 2].map(|a| window_offset(dims[a], opts.patch[a]));
            let mut big = vec![opts.pad_value; padded.iter().product::<usize>() * channels];
            let mut out = vec![0.0; dims.iter().product::<usize>() * k];
            let voxels = |d: [usize; 3]| {
                (0..d[0]).flat_map(move |z| {
                    (0..d[1]).flat_map(move |y| (0..d[2]).map(move |x| [z, y, x]))
                })
            };
            let at = |d: [usize; 3], p: [usize; 3]| (p[0] * d[1] + p[1]) * d[2] + p[2];
            for (i, p) in voxels(dims).enumerate() {
                let q = at(padded, [0, 1, 2].map(|a| p[a] + before[a]));
                big[q * channels..(q + 1) * channels]
                    .copy_from_slice(&image[i * channels..(i + 1) * channels]);
            }
            let logits = predict_padded(model, backend, &big, padded, channels, opts);
            for (i, p) in voxels(dims).enumerate() {
                let q = at(padded, [0, 1, 2].map(|a| p[a] + before[a]));
                out[i * k..(i + 1) * k].copy_from_slice(&logits[q * k..(q + 1) * k]);
            }
            out
        }

        fn predict_padded(
            model: &mut Model<Cpu>,
            backend: &Cpu,
            image: &[f32],
            dims: [usize; 3],
            channels: usize,
            opts: &SlidingWindow,
        ) -> Vec<f32> {
            let k = model.spec().out_channels();
            let patch = opts.patch;
            let pvox: usize = patch.iter().product();
            let weights = gaussian_weights(patch);
            let windows = window_grid(dims, patch, opts.overlap);
            let flips = mirrorings(opts.tta);
            let total: usize = dims.iter().product();
            let mut acc = vec![0.0f32; total * k];
            let mut norm = vec![0.0f32; total];
            let ctx = Ctx::<Cpu>::eval();
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
                    let batch_input: Vec<f32> = input
                        .chunks(pvox * channels)
                        .flat_map(|p| flip_dhwc(p, patch, channels, *flip))
                        .collect();
                    let x = Tensor::from_f32(
                        backend,
                        [group.len(), patch[0], patch[1], patch[2], channels],
                        &batch_input,
                    )
                    .unwrap();
                    let outputs = model.forward(&Var::constant(x), &ctx).unwrap();
                    let logits = outputs[0].value().to_vec_f32().unwrap();
                    for (i, chunk) in logits.chunks(pvox * k).enumerate() {
                        let unflipped = flip_dhwc(chunk, patch, k, *flip);
                        for (s, v) in summed[i * pvox * k..(i + 1) * pvox * k]
                            .iter_mut()
                            .zip(unflipped)
                        {
                            *s += v / flips.len() as f32;
                        }
                    }
                }
                for (i, start) in group.iter().enumerate() {
                    for z in 0..patch[0].min(dims[0] - start[0]) {
                        for y in 0..patch[1].min(dims[1] - start[1]) {
                            for x in 0..patch[2].min(dims[2] - start[2]) {
                                let p = (z * patch[1] + y) * patch[2] + x;
                                let v = ((start[0] + z) * dims[1] + start[1] + y) * dims[2]
                                    + start[2]
                                    + x;
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
            acc
        }
    }

    fn small_fcn(b: &Cpu) -> Model<Cpu> {
        let spec = ModelSpec::Fcn(FcnConfig::of_sizes([2, 3], 4, 1, 1));
        Model::new(b, &spec, 11).unwrap()
    }

    #[test]
    fn backend_stitching_equals_the_host_stitching_bit_for_bit() {
        let b = Cpu::new();
        let mut model = small_fcn(&b);
        let mut rng = Rng::new(5);
        // (volume, patch, batch): overlapping windows in all three axes with a batch that
        // does not divide their count; a volume smaller than the patch on every axis; one
        // smaller on some axes only; non-cubic patches throughout.
        for (dims, patch, batch) in [
            ([9, 7, 11], [4, 6, 8], 3),
            ([3, 5, 3], [4, 6, 8], 2),
            ([10, 4, 6], [6, 6, 4], 2),
        ] {
            let image: Vec<f32> = (0..dims.iter().product::<usize>() * 2)
                .map(|_| rng.normal() as f32)
                .collect();
            for tta in [false, true] {
                let opts = SlidingWindow {
                    patch,
                    overlap: 0.5,
                    batch,
                    tta,
                    pad_value: -0.75,
                };
                let got = predict_logits(&mut model, &b, &image, dims, 2, &opts).unwrap();
                let want = host::predict_logits(&mut model, &b, &image, dims, 2, &opts);
                assert_eq!(got.len(), dims.iter().product::<usize>() * 3);
                assert!(want.iter().all(|v| v.is_finite()));
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same, "{dims:?} patch {patch:?} tta {tta}: logits differ");
            }
        }
    }

    #[test]
    fn bad_images_are_errors_naming_the_shapes() {
        let b = Cpu::new();
        let mut model = small_fcn(&b);
        let opts = SlidingWindow {
            patch: [4, 4, 4],
            overlap: 0.5,
            batch: 1,
            tta: false,
            pad_value: 0.0,
        };
        let err = predict_logits(&mut model, &b, &[0.0; 10], [2, 2, 2], 2, &opts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("predict") && err.contains("10 values"),
            "{err}"
        );
        let two = Tensor::zeros(&b, [2, 4, 4, 4, 2]).unwrap();
        let err = predict_volume(&mut model, &two, &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[2, 4, 4, 4, 2]"), "{err}");
    }
}
