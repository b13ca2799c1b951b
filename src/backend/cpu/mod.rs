//! The CPU backend: host vectors, kernels threaded with rayon. It is the numerical
//! reference for every CUDA kernel and runs in f32 (training) or f64 (gradient checks);
//! its f32 convolutions can multiply bf16 operands instead, on CPUs with AVX512-BF16.
use crate::backend::cuda::ConvPrecision;
use crate::backend::{BackendBase, Element};
use crate::error::Result;
use std::any::TypeId;
use std::marker::PhantomData;

#[derive(Clone, Copy, Default)]
pub struct CpuBackend<E: Element> {
    _e: PhantomData<E>,
    /// F32, or Bf16 where the CPU has the instructions and E is f32.
    conv_precision: ConvPrecision,
}

/// The f32 CPU backend used for training and inference.
pub type Cpu = CpuBackend<f32>;
/// The f64 CPU backend used by gradient checks.
pub type Cpu64 = CpuBackend<f64>;

impl<E: Element> CpuBackend<E> {
    pub fn new() -> Self {
        Self {
            _e: PhantomData,
            conv_precision: ConvPrecision::F32,
        }
    }

    /// This backend with its convolutions at `asked` where the CPU can: bf16 operands with
    /// f32 sums need f32 elements and AVX512-BF16, and no CPU has TF32 arithmetic. Returns,
    /// where it computes in f32 instead, why.
    pub fn with_conv_precision(self, asked: ConvPrecision) -> (Self, Option<String>) {
        let why_not = match asked {
            ConvPrecision::F32 => None,
            ConvPrecision::Tf32 => Some("tf32 is arithmetic of NVIDIA's tensor cores".to_string()),
            ConvPrecision::Bf16 if TypeId::of::<E>() != TypeId::of::<f32>() => {
                Some(format!("bf16 products serve f32 tensors, not {}", E::NAME))
            }
            ConvPrecision::Bf16 if !crate::tensor_ops::conv::bf16_products_available() => {
                Some("this CPU has no AVX512-BF16 instructions".to_string())
            }
            ConvPrecision::Bf16 => None,
        };
        let conv_precision = if why_not.is_some() {
            ConvPrecision::F32
        } else {
            asked
        };
        (
            Self {
                conv_precision,
                ..self
            },
            why_not
                .map(|why| format!("precision {asked} on the CPU: {why}; convolutions run in f32")),
        )
    }

    /// A backend with its convolutions at `precision` (None: `VOXSEG_CONV_PRECISION`, else
    /// f32, as a CUDA device takes it) where the CPU can; says so on stderr where it
    /// computes in f32 instead. Fails when the variable names no precision.
    pub fn at_precision(precision: Option<ConvPrecision>) -> Result<Self> {
        let asked = match precision {
            Some(p) => p,
            None => ConvPrecision::from_env()?.unwrap_or_default(),
        };
        let (cpu, note) = Self::new().with_conv_precision(asked);
        if let Some(note) = note {
            eprintln!("note: {note}");
        }
        Ok(cpu)
    }

    /// The arithmetic of this backend's convolutions: F32 or Bf16.
    pub fn conv_precision(&self) -> ConvPrecision {
        self.conv_precision
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
        let engine = crate::tensor_ops::conv::conv_engine_name::<E>(self.conv_precision);
        let convs = match self.conv_precision {
            ConvPrecision::F32 => format!("convolutions by {engine}"),
            p => format!("{p} convolutions by {engine}"),
        };
        format!(
            "cpu ({} threads, {}, {convs})",
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

/// `f(row, out_row)` over the rows of `row_len` elements of `out`, threaded in tasks of
/// whole rows, about PAR_CHUNK elements each: a task per row would be one per voxel where
/// rows are a few channels.
pub(crate) fn par_rows_mut<E: Send>(
    out: &mut [E],
    row_len: usize,
    f: impl Fn(usize, &mut [E]) + Sync,
) {
    use rayon::prelude::*;
    let row_len = row_len.max(1);
    let rows = (PAR_CHUNK / row_len).max(1);
    out.par_chunks_mut(rows * row_len)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (r, row) in chunk.chunks_exact_mut(row_len).enumerate() {
                f(task * rows + r, row);
            }
        });
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_ops::conv::{bf16_products_available, Conv3dKernel, ConvGeometry};

    #[test]
    fn conv_precision_falls_back_to_f32_with_the_reason() {
        let (cpu, note) = Cpu::new().with_conv_precision(ConvPrecision::Tf32);
        assert_eq!(cpu.conv_precision(), ConvPrecision::F32);
        assert!(note
            .unwrap()
            .contains("tf32 is arithmetic of NVIDIA's tensor cores"));
        let (cpu, note) = Cpu64::new().with_conv_precision(ConvPrecision::Bf16);
        assert_eq!(cpu.conv_precision(), ConvPrecision::F32);
        assert!(note.unwrap().contains("not f64"));
        let (cpu, note) = Cpu::new().with_conv_precision(ConvPrecision::Bf16);
        if bf16_products_available() {
            assert_eq!((cpu.conv_precision(), note), (ConvPrecision::Bf16, None));
            assert!(
                cpu.name().contains("bf16 convolutions by AVX512-BF16"),
                "{}",
                cpu.name()
            );
        } else {
            assert_eq!(cpu.conv_precision(), ConvPrecision::F32);
            assert!(note.unwrap().contains("no AVX512-BF16"));
        }
    }

    #[test]
    fn name_says_what_multiplies_the_convolutions() {
        let f64_name = Cpu64::new().name();
        assert!(
            f64_name.ends_with(" threads, f64, convolutions by gemm)"),
            "{f64_name}"
        );
        let f32_name = Cpu::new().name();
        #[cfg(target_arch = "x86_64")]
        let want = if is_x86_feature_detected!("avx512f") {
            "AVX-512"
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            "AVX2"
        } else {
            "gemm"
        };
        #[cfg(not(target_arch = "x86_64"))]
        let want = "gemm";
        assert!(
            f32_name.ends_with(&format!(" threads, f32, convolutions by {want})")),
            "{f32_name}"
        );
    }

    /// At bf16 the backend's convolution multiplies rounded operands: within bf16's error of
    /// the f32 result, and not equal to it.
    #[test]
    fn a_bf16_backend_convolves_rounded_operands() {
        let (bf16, _) = Cpu::new().with_conv_precision(ConvPrecision::Bf16);
        if bf16.conv_precision() != ConvPrecision::Bf16 {
            eprintln!("no AVX512-BF16 on this CPU: the bf16 convolutions are not exercised");
            return;
        }
        let g = ConvGeometry {
            n: 1,
            input: [6, 5, 4],
            cin: 24,
            output: [6, 5, 4],
            cout: 16,
            kernel: [3, 3, 3],
            stride: [1, 1, 1],
            pad_before: [1, 1, 1],
        };
        let mut rng = crate::rng::Rng::new(3);
        let mut values = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
                .collect()
        };
        let x = values(g.n * g.input_voxels() * g.cin);
        let w = values(g.kernel_volume() * g.cin * g.cout);
        let exact = Cpu::new().conv3d_forward(&x, &w, None, &g).unwrap();
        let rounded = bf16.conv3d_forward(&x, &w, None, &g).unwrap();
        let scale = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = exact
            .iter()
            .zip(&rounded)
            .fold(0f32, |m, (e, r)| m.max((e - r).abs()));
        assert!(worst > 0.0, "bf16 gave the f32 result exactly");
        assert!(
            worst < 2e-2 * scale,
            "worst {worst} against a scale of {scale}"
        );
    }
}
