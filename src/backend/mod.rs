//! The backend seam. `BackendBase` is the small storage/device trait (allocate, copy in and
//! out); each op family in `tensor_ops` adds a kernel trait (`UnaryKernel`, `Conv3dKernel`,
//! ...) that every backend implements. `Backend` is all of them together: models, losses,
//! optimisers and the tape are written once against it.
pub mod cpu;
pub mod cuda;
pub mod device;

use crate::error::Result;

/// A float type the kernels run in: f32 for training, f64 for gradient checks.
pub trait Element:
    num_traits::Float
    + std::iter::Sum
    + Default
    + Send
    + Sync
    + std::fmt::Debug
    + std::fmt::Display
    + bytemuck::Pod
    + 'static
{
    const NAME: &'static str;
    fn of(v: f64) -> Self;
    fn as_f64(self) -> f64;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    fn of(v: f64) -> Self {
        v as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    fn of(v: f64) -> Self {
        v
    }
    fn as_f64(self) -> f64 {
        self
    }
}

pub trait BackendBase: Clone + Send + Sync + std::fmt::Debug + 'static {
    type E: Element;
    type Storage: Send + Sync + 'static;

    /// A human-readable description, e.g. "cpu (2 threads, f32, convolutions by AVX2)".
    fn name(&self) -> String;
    fn upload(&self, data: &[Self::E]) -> Result<Self::Storage>;
    fn download(&self, storage: &Self::Storage) -> Result<Vec<Self::E>>;
    fn zeros(&self, len: usize) -> Result<Self::Storage>;
    /// A new buffer with the same contents.
    fn copy(&self, storage: &Self::Storage) -> Result<Self::Storage>;
    fn storage_len(storage: &Self::Storage) -> usize;
    /// Waits for queued work (a no-op on the CPU).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    /// The most bytes this backend's buffers have held at once, where it counts them (a
    /// GPU's pool); None where it does not (the CPU).
    fn memory_peak_bytes(&self) -> Option<u64> {
        None
    }
}

pub use crate::tensor_ops::Backend;
