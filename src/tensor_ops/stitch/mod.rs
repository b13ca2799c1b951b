//! Stitching window predictions into a whole volume on the backend (sliding-window
//! inference): each window's logits, weighted per cell, are added into an accumulator over
//! the volume together with the weights themselves, and the accumulator is divided by the
//! summed weights at the end. Inference only: nothing is recorded on the tape.
//!
//! Windows are added one after another in the order given, so overlapping windows sum in a
//! fixed order on every backend: results are deterministic, and the f32 results equal the
//! host loop `acc += w * logit; norm += w` bit for bit (no fused multiply-add).
mod cpu;

use crate::backend::BackendBase;
use crate::error::{check_len, Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

/// Where a batch of windows lands: `acc [1, D, H, W, K]`, `norm [1, D, H, W, 1]`, logits
/// `[windows, pd, ph, pw, K]`, weights `[pd, ph, pw]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StitchGeometry {
    /// D, H, W of the volume.
    pub volume: [usize; 3],
    /// D, H, W of a window.
    pub patch: [usize; 3],
    /// K: logits per voxel.
    pub channels: usize,
    /// First voxel of each window in the volume, in the order the windows are added; every
    /// start lies inside the volume (a window may reach past its far side).
    pub starts: Vec<[usize; 3]>,
}

impl StitchGeometry {
    /// The geometry of `accumulate_windows` on tensors of these shapes, or an error naming
    /// the op and the shapes.
    pub fn new(
        acc: &Shape,
        norm: &Shape,
        logits: &Shape,
        weights: &Shape,
        starts: &[[usize; 3]],
    ) -> Result<Self> {
        let op = "accumulate_windows";
        let shapes = || format!("acc {acc}, norm {norm}, logits {logits}, weights {weights}");
        let [one, d, h, w, channels] = acc.ndhwc(op)?;
        let [windows, pd, ph, pw, k] = logits.ndhwc(op)?;
        let volume = [d, h, w];
        let patch = [pd, ph, pw];
        let fits = one == 1
            && norm.dims() == [1, d, h, w, 1]
            && weights.dims() == patch
            && k == channels
            && windows == starts.len();
        if !fits {
            return Err(Error::shape(
                op,
                format!(
                    "{}: want acc [1, D, H, W, K], norm [1, D, H, W, 1], logits \
                     [{} windows, pd, ph, pw, K], weights [pd, ph, pw]",
                    shapes(),
                    starts.len()
                ),
            ));
        }
        if let Some(s) = starts.iter().find(|s| (0..3).any(|a| s[a] >= volume[a])) {
            return Err(Error::shape(
                op,
                format!(
                    "window start {s:?} lies outside the volume {volume:?} ({})",
                    shapes()
                ),
            ));
        }
        Ok(Self {
            volume,
            patch,
            channels,
            starts: starts.to_vec(),
        })
    }

    /// D, H, W of window `i`'s part inside the volume.
    pub fn extent(&self, i: usize) -> [usize; 3] {
        let s = self.starts[i];
        std::array::from_fn(|a| self.patch[a].min(self.volume[a] - s[a]))
    }

    /// Cells of one window.
    pub fn window_cells(&self) -> usize {
        self.patch.iter().product()
    }

    /// Voxels of the volume.
    pub fn voxels(&self) -> usize {
        self.volume.iter().product()
    }

    /// The storage-level check every backend makes before touching the buffers.
    pub fn check_lengths(
        &self,
        acc: usize,
        norm: usize,
        logits: usize,
        weights: usize,
    ) -> Result<()> {
        let op = "accumulate_windows";
        let k = self.channels;
        check_len(op, "acc", acc, self.voxels() * k)?;
        check_len(op, "norm", norm, self.voxels())?;
        check_len(
            op,
            "logits",
            logits,
            self.starts.len() * self.window_cells() * k,
        )?;
        check_len(op, "weights", weights, self.window_cells())
    }
}

/// The storage-level check of `divide_by_weights`: `acc` holds `channels` values per voxel
/// of `norm`.
pub fn check_divide_lengths(acc: usize, norm: usize, channels: usize) -> Result<()> {
    check_len("divide_by_weights", "acc", acc, norm * channels)
}

pub trait StitchKernel: BackendBase {
    /// For each window i in the order of `g.starts`, and each cell p of it inside the
    /// volume, at voxel v: `acc[v, k] += weights[p] * logits[i, p, k]` for every k, and
    /// `norm[v] += weights[p]`.
    fn accumulate_windows(
        &self,
        acc: &mut Self::Storage,
        norm: &mut Self::Storage,
        logits: &Self::Storage,
        weights: &Self::Storage,
        g: &StitchGeometry,
    ) -> Result<()>;
    /// `acc[v, k] /= norm[v]` for `channels` values per voxel.
    fn divide_by_weights(
        &self,
        acc: &mut Self::Storage,
        norm: &Self::Storage,
        channels: usize,
    ) -> Result<()>;
}

/// Adds a batch of weighted window predictions into `acc` and their weights into `norm`,
/// in place; see [`StitchKernel::accumulate_windows`].
pub fn accumulate_windows<B: Backend>(
    acc: &mut Tensor<B>,
    norm: &mut Tensor<B>,
    logits: &Tensor<B>,
    weights: &Tensor<B>,
    starts: &[[usize; 3]],
) -> Result<()> {
    let g = StitchGeometry::new(
        acc.shape(),
        norm.shape(),
        logits.shape(),
        weights.shape(),
        starts,
    )?;
    let be = acc.backend().clone();
    be.accumulate_windows(
        acc.storage_mut()?,
        norm.storage_mut()?,
        logits.storage(),
        weights.storage(),
        &g,
    )
}

/// The weighted average: `acc [1, D, H, W, K]` divided voxel by voxel by
/// `norm [1, D, H, W, 1]`, in `acc`'s buffer. A voxel no window covered has weight 0 and
/// comes out NaN.
pub fn divide_by_weights<B: Backend>(mut acc: Tensor<B>, norm: &Tensor<B>) -> Result<Tensor<B>> {
    let [one, d, h, w, k] = acc.shape().ndhwc("divide_by_weights")?;
    if one != 1 || norm.dims() != [1, d, h, w, 1] {
        return Err(Error::shape(
            "divide_by_weights",
            format!(
                "acc {} and norm {}: want [1, D, H, W, K] and [1, D, H, W, 1]",
                acc.shape(),
                norm.shape()
            ),
        ));
    }
    let be = acc.backend().clone();
    be.divide_by_weights(acc.storage_mut()?, norm.storage(), k)?;
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::{Cpu, Cpu64};
    use crate::rng::Rng;

    fn tensor(shape: impl Into<Shape>, data: &[f32]) -> Tensor<Cpu> {
        Tensor::from_host(&Cpu::new(), shape, data).unwrap()
    }

    /// The stitching as a plain loop over windows, cells and channels.
    fn naive(
        acc: &mut [f64],
        norm: &mut [f64],
        logits: &[f64],
        weights: &[f64],
        g: &StitchGeometry,
    ) {
        let ([d, h, w], [pd, ph, pw], k) = (g.volume, g.patch, g.channels);
        for (i, s) in g.starts.iter().enumerate() {
            for z in 0..pd {
                for y in 0..ph {
                    for x in 0..pw {
                        let (vz, vy, vx) = (s[0] + z, s[1] + y, s[2] + x);
                        if vz >= d || vy >= h || vx >= w {
                            continue;
                        }
                        let p = (z * ph + y) * pw + x;
                        let v = (vz * h + vy) * w + vx;
                        norm[v] += weights[p];
                        for c in 0..k {
                            acc[v * k + c] += weights[p] * logits[(i * pd * ph * pw + p) * k + c];
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn two_overlapping_windows_on_a_line() {
        // Volume 1x1x5, K = 1, windows of 3 at x = 0 and x = 2 share voxel 2.
        let mut acc = tensor([1, 1, 1, 5, 1], &[0.0; 5]);
        let mut norm = tensor([1, 1, 1, 5, 1], &[0.0; 5]);
        let logits = tensor([2, 1, 1, 3, 1], &[1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
        let weights = tensor([1, 1, 3], &[0.5, 1.0, 0.25]);
        accumulate_windows(
            &mut acc,
            &mut norm,
            &logits,
            &weights,
            &[[0, 0, 0], [0, 0, 2]],
        )
        .unwrap();
        assert_eq!(acc.to_vec().unwrap(), vec![0.5, 2.0, 0.75 + 5.0, 20.0, 7.5]);
        assert_eq!(norm.to_vec().unwrap(), vec![0.5, 1.0, 0.75, 1.0, 0.25]);
        let avg = divide_by_weights(acc, &norm).unwrap();
        assert_eq!(
            avg.to_vec().unwrap(),
            vec![1.0, 2.0, 5.75 / 0.75, 20.0, 30.0]
        );
    }

    #[test]
    fn clipped_overlapping_windows_match_the_naive_loop_in_f64() {
        let b = Cpu64::new();
        let mut rng = Rng::new(3);
        let (volume, patch, k) = ([5, 4, 7], [3, 5, 4], 3);
        // Overlapping windows, one reaching past every far side, one past the H side only.
        let starts = [[0, 0, 0], [2, 0, 3], [4, 3, 6], [1, 2, 1]];
        let voxels: usize = volume.iter().product();
        let cells: usize = patch.iter().product();
        let mut draw =
            |n: usize| -> Vec<f64> { (0..n).map(|_| rng.uniform_range(-2.0, 2.0)).collect() };
        let acc0 = draw(voxels * k);
        let norm0: Vec<f64> = draw(voxels).iter().map(|v| v.abs()).collect();
        let logits = draw(starts.len() * cells * k);
        let weights: Vec<f64> = draw(cells).iter().map(|v| v.abs() + 0.1).collect();
        let [d, h, w] = volume;
        let mut acc = Tensor::from_host(&b, [1, d, h, w, k], &acc0).unwrap();
        let mut norm = Tensor::from_host(&b, [1, d, h, w, 1], &norm0).unwrap();
        let lt = Tensor::from_host(&b, [starts.len(), patch[0], patch[1], patch[2], k], &logits)
            .unwrap();
        let wt = Tensor::from_host(&b, patch, &weights).unwrap();
        accumulate_windows(&mut acc, &mut norm, &lt, &wt, &starts).unwrap();
        let g = StitchGeometry::new(acc.shape(), norm.shape(), lt.shape(), wt.shape(), &starts)
            .unwrap();
        assert_eq!(g.extent(2), [1, 1, 1]);
        assert_eq!(g.extent(3), [3, 2, 4]);
        let (mut want_acc, mut want_norm) = (acc0.clone(), norm0.clone());
        naive(&mut want_acc, &mut want_norm, &logits, &weights, &g);
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        assert!(close(&acc.to_vec().unwrap(), &want_acc));
        assert!(close(&norm.to_vec().unwrap(), &want_norm));
        // Every voxel some window covered has gained weight; the rest kept theirs.
        let got_norm = norm.to_vec().unwrap();
        assert!(got_norm.iter().zip(&norm0).any(|(a, b)| a != b));
        let avg = divide_by_weights(acc, &norm).unwrap().to_vec().unwrap();
        for v in 0..voxels {
            for c in 0..k {
                let want = want_acc[v * k + c] / want_norm[v];
                assert!((avg[v * k + c] - want).abs() < 1e-12 * want.abs().max(1.0));
            }
        }
    }

    #[test]
    fn bad_shapes_and_starts_are_errors_naming_the_op_and_shapes() {
        let mut acc = tensor([1, 2, 2, 2, 3], &[0.0; 24]);
        let mut norm = tensor([1, 2, 2, 2, 1], &[0.0; 8]);
        let logits = tensor([1, 2, 2, 2, 3], &[0.0; 24]);
        let weights = tensor([2, 2, 2], &[1.0; 8]);
        let err = accumulate_windows(&mut acc, &mut norm, &logits, &weights, &[[0, 2, 0]])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("accumulate_windows") && err.contains("[0, 2, 0]"),
            "{err}"
        );
        let two = accumulate_windows(&mut acc, &mut norm, &logits, &weights, &[[0; 3], [0; 3]])
            .unwrap_err()
            .to_string();
        assert!(
            two.contains("accumulate_windows") && two.contains("logits [1, 2, 2, 2, 3]"),
            "{two}"
        );
        let k2 = tensor([1, 2, 2, 2, 2], &[0.0; 16]);
        let wrong_k = accumulate_windows(&mut acc, &mut norm, &k2, &weights, &[[0; 3]])
            .unwrap_err()
            .to_string();
        assert!(wrong_k.contains("[1, 2, 2, 2, 2]"), "{wrong_k}");
        let flat = tensor([2, 2, 2, 1], &[0.0; 8]);
        let div = divide_by_weights(acc, &flat).unwrap_err().to_string();
        assert!(
            div.contains("divide_by_weights") && div.contains("[2, 2, 2, 1]"),
            "{div}"
        );
    }
}
