//! Parameters and launch plan of the multi-tensor optimiser kernels (mirrors of
//! kernels/params_optim_step.h): the per-launch table of tensors and its grid, a block per
//! fixed-size chunk of one tensor.
use super::params::LaunchDims;
use crate::error::{Error, Result};
use crate::tensor_ops::optim_step::{AdamHyper, SgdHyper};

/// Threads of every optim_step block (`VX_OPTIM_THREADS`).
pub const OPTIM_THREADS: u32 = 256;
/// Elements per chunk on the device: 64 per thread, so that a ~30M-parameter network gives
/// a few thousand blocks and a one-element bias costs one short block.
pub const OPTIM_CHUNK: u64 = 16_384;
/// The grid's x dimension limit.
const MAX_GRID_X: u64 = i32::MAX as u64;

/// One tensor of a multi-tensor launch (`OptimTensor`): addresses, 0 where unused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct OptimTensor {
    pub param: u64,
    pub grad: u64,
    pub state0: u64,
    pub state1: u64,
    pub n: u64,
    pub first_chunk: u64,
    pub decay: u32,
    pub pad_: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptimTableParams {
    pub chunk: u64,
    pub tensors: u32,
    pub chunks: u32,
}

/// The tensors of one multi-tensor launch, in the order given, each cut into chunks.
///
/// A block finds its tensor by a binary search over the entries' first chunks (about seven
/// steps for a network's ~100 tensors) rather than through a per-chunk index, whose size
/// would grow with the parameter count instead of the tensor count.
#[derive(Clone, Debug)]
pub struct OptimTable {
    chunk: u64,
    chunks: u64,
    entries: Vec<OptimTensor>,
}

/// Addresses of a tensor's buffers: `[param, grad, state0, state1]`, 0 where unused.
pub type OptimAddresses = [u64; 4];

impl OptimTable {
    /// An empty table cut into chunks of `chunk` elements (> 0; `OPTIM_CHUNK` on the device).
    pub fn new(chunk: u64) -> Self {
        Self {
            chunk: chunk.max(1),
            chunks: 0,
            entries: Vec::new(),
        }
    }

    /// Adds a tensor of `n` elements. Empty tensors get no entry: no block touches them.
    pub fn push(&mut self, [param, grad, state0, state1]: OptimAddresses, n: usize, decay: bool) {
        if n == 0 {
            return;
        }
        let n = n as u64;
        self.entries.push(OptimTensor {
            param,
            grad,
            state0,
            state1,
            n,
            first_chunk: self.chunks,
            decay: u32::from(decay),
            pad_: 0,
        });
        self.chunks += n.div_ceil(self.chunk);
    }

    /// True when no tensor has an element (nothing to launch).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[OptimTensor] {
        &self.entries
    }

    /// The table as f32 words, for an upload into a pool block.
    pub fn words(&self) -> &[f32] {
        bytemuck::cast_slice(&self.entries)
    }

    /// The kernels' view of the table; fails when the chunks do not fit in a grid.
    pub fn params(&self) -> Result<OptimTableParams> {
        if self.chunks > MAX_GRID_X || self.entries.len() > u32::MAX as usize {
            return Err(Error::shape(
                "optim_step",
                format!(
                    "{} chunks of {} elements over {} tensors exceed one launch",
                    self.chunks,
                    self.chunk,
                    self.entries.len()
                ),
            ));
        }
        Ok(OptimTableParams {
            chunk: self.chunk,
            tensors: self.entries.len() as u32,
            chunks: self.chunks as u32,
        })
    }

    /// A block per chunk.
    pub fn dims(&self) -> LaunchDims {
        LaunchDims::linear([self.chunks.max(1) as u32, 1, 1], OPTIM_THREADS)
    }

    /// The single block that adds the per-chunk partial sums.
    pub fn finish_dims() -> LaunchDims {
        LaunchDims::linear([1, 1, 1], OPTIM_THREADS)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdKernelParams {
    pub table: OptimTableParams,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: u32,
    pub pad_: u32,
}

impl SgdKernelParams {
    pub fn new(h: &SgdHyper, table: OptimTableParams) -> Self {
        Self {
            table,
            lr: h.lr,
            momentum: h.momentum,
            weight_decay: h.weight_decay,
            nesterov: h.nesterov,
            pad_: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamKernelParams {
    pub table: OptimTableParams,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub l2: f64,
    pub decoupled_decay: f64,
    pub bias_correction1: f64,
    pub bias_correction2: f64,
    pub lazy: u32,
    pub pad_: u32,
}

impl AdamKernelParams {
    pub fn new(h: &AdamHyper, table: OptimTableParams) -> Self {
        Self {
            table,
            lr: h.lr,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            l2: h.l2,
            decoupled_decay: h.decoupled_decay,
            bias_correction1: h.bias_correction1,
            bias_correction2: h.bias_correction2,
            lazy: h.lazy,
            pad_: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleKernelParams {
    pub table: OptimTableParams,
    /// The factor in f32, as the f32 CPU kernel of `UnaryOp::Scale` rounds it.
    pub factor: f32,
    pub pad_: u32,
}

impl ScaleKernelParams {
    pub fn new(factor: f64, table: OptimTableParams) -> Self {
        Self {
            table,
            factor: factor as f32,
            pad_: 0,
        }
    }
}

// SAFETY: plain #[repr(C)] data without pointers or padding, passed by value as kernel
// arguments whose C++ types have the same layout (checked by tests/cuda_harness_optim.rs).
unsafe impl cudarc::driver::DeviceRepr for OptimTableParams {}
unsafe impl cudarc::driver::DeviceRepr for SgdKernelParams {}
unsafe impl cudarc::driver::DeviceRepr for AdamKernelParams {}
unsafe impl cudarc::driver::DeviceRepr for ScaleKernelParams {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_tensors_and_skip_empty_ones() {
        let mut t = OptimTable::new(4);
        for (i, n) in [5, 0, 4, 1, 9].into_iter().enumerate() {
            t.push([i as u64 + 1, 0, 0, 0], n, i % 2 == 0);
        }
        let starts: Vec<(u64, u64, u64)> = t
            .entries()
            .iter()
            .map(|e| (e.param, e.n, e.first_chunk))
            .collect();
        assert_eq!(starts, [(1, 5, 0), (3, 4, 2), (4, 1, 3), (5, 9, 4)]);
        let p = t.params().unwrap();
        assert_eq!((p.chunk, p.tensors, p.chunks), (4, 4, 7));
        assert_eq!(t.dims().grid, [7, 1, 1]);
        assert_eq!(t.words().len(), 4 * 14);
        assert!(OptimTable::new(OPTIM_CHUNK).is_empty());
    }

    #[test]
    fn a_table_beyond_one_grid_is_an_error() {
        let mut t = OptimTable::new(1);
        t.push([1, 0, 0, 0], MAX_GRID_X as usize + 1, false);
        let err = t.params().unwrap_err().to_string();
        assert!(err.contains("exceed one launch"), "{err}");
    }
}
