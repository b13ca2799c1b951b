//! Harness entry point of kernels/matmul.cu.
use super::{need, status, EmuResult};
use crate::backend::cuda::params::LaunchDims;
use crate::backend::cuda::params_matmul::MatmulKernelParams;
use std::ffi::c_int;

extern "C" {
    fn emu_matmul_tiled(
        d: *const LaunchDims,
        p: MatmulKernelParams,
        a: *const f32,
        b: *const f32,
        bias: *const f32,
        c: *mut f32,
    ) -> c_int;
}

/// Writes `d.grid[2]` stacked partial products of `m * n` (the product for one split).
pub fn tiled(
    d: &LaunchDims,
    p: MatmulKernelParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
) -> EmuResult {
    let splits = d.grid[2] as u64;
    if splits == 0 || p.k_per_split == 0 || (splits - 1).saturating_mul(p.k_per_split) >= p.k.max(1)
    {
        return Err(format!("{p:?} with grid {:?}: empty k slices", d.grid));
    }
    need("a", a.len(), p.m * p.k)?;
    need("b", b.len(), p.k * p.n)?;
    let bias = match bias {
        Some(v) if p.has_bias != 0 => {
            need("bias", v.len(), p.n)?;
            v.as_ptr()
        }
        None if p.has_bias == 0 => std::ptr::null(),
        _ => return Err("bias and has_bias disagree".into()),
    };
    need("c", c.len(), splits * p.m * p.n)?;
    // SAFETY: lengths checked against the params above; an absent bias is not read.
    status(unsafe { emu_matmul_tiled(d, p, a.as_ptr(), b.as_ptr(), bias, c.as_mut_ptr()) })
}
