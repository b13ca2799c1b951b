//! Inverted dropout: each element (or, spatially, each whole channel of an example) is kept
//! with probability 1 - p and scaled by 1 / (1 - p). The mask is a pure function of
//! (seed, stream, index) through `rng::uniform_at`, so it does not depend on threading, a
//! CUDA kernel draws the same one, and the backward regenerates it instead of saving it.
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::rng::uniform_at;
use crate::tensor::Tensor;
use crate::tensor_ops::Backend;

/// One dropout mask, laid out for the CUDA kernels too.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutParams {
    pub seed: u64,
    pub stream: u32,
    /// An element is kept when its uniform draw is `>=` this: the drop probability, in f32
    /// like the draws themselves.
    pub threshold: f32,
    /// `1 / (1 - p)`, applied to kept elements.
    pub scale: f64,
    /// Channels (the last axis); used by `spatial`.
    pub channels: usize,
    /// Elements per example (D * H * W * C); used by `spatial`.
    pub example_len: usize,
    /// One draw per (example, channel) at index `n * C + c`, shared by the channel's voxels
    /// (Keras SpatialDropout3D); otherwise one draw per element at its own index.
    pub spatial: bool,
}

impl DropoutParams {
    /// The random-number index that decides element `i`.
    pub fn mask_index(&self, i: usize) -> u64 {
        if self.spatial {
            ((i / self.example_len) * self.channels + i % self.channels) as u64
        } else {
            i as u64
        }
    }
    /// Whether the draw at mask index `index` keeps its element(s).
    pub fn keeps(&self, index: u64) -> bool {
        uniform_at(self.seed, self.stream, index) >= self.threshold
    }
}

pub trait DropoutKernel: BackendBase {
    /// `out[i] = x[i] * scale` where element `i` is kept, 0 elsewhere. Being linear with a
    /// fixed mask, this is the backward too (applied to the output's gradient).
    fn dropout_apply(&self, x: &Self::Storage, p: &DropoutParams) -> Result<Self::Storage>;
}

/// The mask is regenerated from its parameters; nothing else is saved.
struct DropoutBackward {
    params: DropoutParams,
}

impl<B: Backend> BackwardOp<B> for DropoutBackward {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let dx = grad.backend().dropout_apply(grad.storage(), &self.params)?;
        Ok(vec![Some(Tensor::from_storage(
            grad.backend(),
            grad.shape().clone(),
            dx,
        )?)])
    }
}

impl<B: Backend> Var<B> {
    /// Inverted dropout with drop probability `p` in [0, 1). Always applies (the caller skips
    /// it in eval). With `spatial` the input must be NDHWC and whole channels are dropped.
    pub fn dropout(&self, p: f64, seed: u64, stream: u32, spatial: bool) -> Result<Var<B>> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::shape(
                "dropout",
                format!(
                    "drop probability must be in [0, 1), got {p} (input {})",
                    self.shape()
                ),
            ));
        }
        let channels = self.shape().last();
        let example_len = if spatial {
            let [_, d, h, w, c] = self.shape().ndhwc("dropout")?;
            d * h * w * c
        } else {
            self.value().numel()
        };
        let params = DropoutParams {
            seed,
            stream,
            threshold: p as f32,
            scale: 1.0 / (1.0 - p),
            channels,
            example_len,
            spatial,
        };
        let be = self.backend();
        let y = be.dropout_apply(self.value().storage(), &params)?;
        let y = Tensor::from_storage(be, self.shape().clone(), y)?;
        Ok(Var::from_op("dropout", y, &[self], || DropoutBackward {
            params,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{check_gradients, LeafId, Tape};
    use crate::backend::cpu::{Cpu, Cpu64};

    fn ramp(shape: &[usize]) -> Tensor<Cpu> {
        let len: usize = shape.iter().product();
        let data: Vec<f32> = (0..len).map(|i| 1.0 + (i % 7) as f32).collect();
        Tensor::from_host(&Cpu::new(), shape, &data).unwrap()
    }

    #[test]
    fn keeps_a_binomial_fraction_and_scales_kept_values() {
        let n = 100_000;
        let p = 0.3;
        let x = ramp(&[n]);
        let y = Var::constant(x.clone()).dropout(p, 42, 0, false).unwrap();
        let (xs, ys) = (x.to_vec().unwrap(), y.value().to_vec().unwrap());
        let mut kept = 0usize;
        for (i, (&a, &b)) in xs.iter().zip(&ys).enumerate() {
            let keep = uniform_at(42, 0, i as u64) >= 0.3f32;
            if keep {
                kept += 1;
                assert!(
                    (b - a / 0.7).abs() <= 1e-6 * b.abs(),
                    "element {i}: {b} vs {a}/0.7"
                );
            } else {
                assert_eq!(b, 0.0, "element {i}");
            }
        }
        // Binomial(1e5, 0.7): standard deviation sqrt(1e5 * 0.21) ~ 145; allow 5 of them.
        let sd = (n as f64 * 0.7 * 0.3).sqrt();
        assert!(
            (kept as f64 - 0.7 * n as f64).abs() < 5.0 * sd,
            "kept {kept} of {n}"
        );
    }

    #[test]
    fn spatial_dropout_drops_whole_channels() {
        let (n, s, c) = (3, 4 * 5 * 6, 8);
        let x = ramp(&[n, 4, 5, 6, c]);
        let y = Var::constant(x.clone()).dropout(0.5, 7, 3, true).unwrap();
        let (xs, ys) = (x.to_vec().unwrap(), y.value().to_vec().unwrap());
        let mut dropped = 0;
        for ex in 0..n {
            for ch in 0..c {
                let keep = uniform_at(7, 3, (ex * c + ch) as u64) >= 0.5f32;
                dropped += usize::from(!keep);
                for v in 0..s {
                    let i = (ex * s + v) * c + ch;
                    let want = if keep { xs[i] * 2.0 } else { 0.0 };
                    assert_eq!(ys[i], want, "example {ex} channel {ch} voxel {v}");
                }
            }
        }
        assert!(dropped > 0 && dropped < n * c, "dropped {dropped} channels");
    }

    #[test]
    fn same_seed_same_mask_other_stream_or_seed_other_mask() {
        let x = Var::constant(ramp(&[2, 3, 4, 5, 6]));
        let mask = |seed, stream, spatial| -> Vec<bool> {
            let y = x.dropout(0.4, seed, stream, spatial).unwrap();
            y.value()
                .to_vec()
                .unwrap()
                .iter()
                .map(|&v| v != 0.0)
                .collect()
        };
        for spatial in [false, true] {
            let a = mask(5, 1, spatial);
            assert_eq!(a, mask(5, 1, spatial));
            assert_ne!(a, mask(5, 2, spatial));
            assert_ne!(a, mask(6, 1, spatial));
        }
    }

    #[test]
    fn gradient_is_the_scaled_mask() {
        let b = Cpu64::new();
        let data: Vec<f64> = (0..2 * 3 * 2 * 5 * 3)
            .map(|i| 0.5 + (i as f64 * 0.37).sin())
            .collect();
        let x = Tensor::from_host(&b, [2, 3, 2, 5, 3], &data).unwrap();
        for spatial in [false, true] {
            let tape = Tape::new();
            let id = LeafId::fresh();
            let v = tape.leaf(x.clone(), id);
            let y = v.dropout(0.3, 11, 2, spatial).unwrap();
            let grads = tape.backward(&y.sum().unwrap()).unwrap();
            let g = grads.get(id).unwrap().to_vec().unwrap();
            let p = DropoutParams {
                seed: 11,
                stream: 2,
                threshold: 0.3,
                scale: 1.0 / 0.7,
                channels: 3,
                example_len: 90,
                spatial,
            };
            for (i, g) in g.iter().enumerate() {
                let want = if p.keeps(p.mask_index(i)) {
                    1.0 / 0.7
                } else {
                    0.0
                };
                assert_eq!(*g, want, "spatial {spatial} element {i}");
            }
            // Central differences, eps 1e-6, tolerance 1e-6 relative.
            check_gradients(
                std::slice::from_ref(&x),
                |v| v[0].dropout(0.3, 11, 2, spatial)?.square()?.sum(),
                1e-6,
                1e-6,
                1000,
            )
            .unwrap();
        }
    }

    #[test]
    fn bad_probability_or_rank_is_an_error() {
        let x = Var::constant(ramp(&[4, 3]));
        for p in [1.0, -0.1, f64::NAN, 1.5] {
            let err = x.dropout(p, 0, 0, false).unwrap_err().to_string();
            assert!(
                err.contains("dropout") && err.contains("[4, 3]"),
                "{p}: {err}"
            );
        }
        let err = x.dropout(0.5, 0, 0, true).unwrap_err().to_string();
        assert!(err.contains("dropout") && err.contains("rank 5"), "{err}");
    }
}
