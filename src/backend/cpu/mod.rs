//! The CPU backend: host vectors, kernels threaded with rayon. It is the numerical
//! reference for every CUDA kernel and runs in f32 (training) or f64 (gradient checks).
use crate::backend::{BackendBase, Element};
use crate::error::Result;
use std::marker::PhantomData;

#[derive(Clone, Copy, Default)]
pub struct CpuBackend<E: Element> {
    _e: PhantomData<E>,
}

/// The f32 CPU backend used for training and inference.
pub type Cpu = CpuBackend<f32>;
/// The f64 CPU backend used by gradient checks.
pub type Cpu64 = CpuBackend<f64>;

impl<E: Element> CpuBackend<E> {
    pub fn new() -> Self {
        Self { _e: PhantomData }
    }
}

impl<E: Element> std::fmt::Debug for CpuBackend<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}

impl<E: Element> BackendBase for CpuBackend<E> {
    type E = E;
    type Storage = Vec<E>;

    fn name(&self) -> String {
        format!(
            "cpu ({} threads, {})",
            rayon::current_num_threads(),
            E::NAME
        )
    }
    fn upload(&self, data: &[E]) -> Result<Vec<E>> {
        Ok(data.to_vec())
    }
    fn download(&self, storage: &Vec<E>) -> Result<Vec<E>> {
        Ok(storage.clone())
    }
    fn zeros(&self, len: usize) -> Result<Vec<E>> {
        Ok(vec![E::zero(); len])
    }
    fn copy(&self, storage: &Vec<E>) -> Result<Vec<E>> {
        Ok(storage.clone())
    }
    fn storage_len(storage: &Vec<E>) -> usize {
        storage.len()
    }
}

/// Elements per rayon task for simple element-wise loops: large enough to amortise
/// scheduling, small enough to split a 64^3x32 activation across threads.
pub const PAR_CHUNK: usize = 1 << 14;

/// Offset of cell (n, z, y, x, 0) in an NDHWC buffer with spatial size `dhw`.
pub(crate) fn ndhwc_offset(
    dhw: [usize; 3],
    c: usize,
    n: usize,
    z: usize,
    y: usize,
    x: usize,
) -> usize {
    (((n * dhw[0] + z) * dhw[1] + y) * dhw[2] + x) * c
}
