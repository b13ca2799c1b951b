//! Harness wrappers for the spatial kernels (kernels/{pool,upsample,concat,pad,flip,ssim}.cu).
//! Each checks its geometry with the device launchers' checks (params_spatial) and that
//! every slice covers what the kernel indexes.
use super::{need, status, EmuResult};
use crate::backend::cuda::params::LaunchDims;
use crate::backend::cuda::params_spatial::{
    channel_counts, flip_count, linear_taps_len, nearest_factors, pad_counts, pool_counts,
    resample_counts, LinearTap, WindowAxisParams, WINDOW_MAX_TAPS,
};
use crate::tensor_ops::concat::ChannelRange;
use crate::tensor_ops::flip::Flip3dGeometry;
use crate::tensor_ops::pad::Pad3dGeometry;
use crate::tensor_ops::pool::Pool3dGeometry;
use crate::tensor_ops::upsample::Resample3dGeometry;
use std::ffi::c_int;

extern "C" {
    fn emu_max_pool3d_forward(
        d: *const LaunchDims,
        g: Pool3dGeometry,
        x: *const f32,
        y: *mut f32,
    ) -> c_int;
    fn emu_max_pool3d_argmax(
        d: *const LaunchDims,
        g: Pool3dGeometry,
        x: *const f32,
        winner: *mut u32,
    ) -> c_int;
    fn emu_max_pool3d_backward(
        d: *const LaunchDims,
        g: Pool3dGeometry,
        winner: *const u32,
        dy: *const f32,
        dx: *mut f32,
    ) -> c_int;
    fn emu_avg_pool3d_forward(
        d: *const LaunchDims,
        g: Pool3dGeometry,
        x: *const f32,
        y: *mut f32,
    ) -> c_int;
    fn emu_avg_pool3d_scale_gradient(
        d: *const LaunchDims,
        g: Pool3dGeometry,
        dy: *const f32,
        scaled: *mut f32,
    ) -> c_int;
    fn emu_avg_pool3d_backward(
        d: *const LaunchDims,
        g: Pool3dGeometry,
        scaled: *const f32,
        dx: *mut f32,
    ) -> c_int;
    fn emu_upsample_nearest3d_forward(
        d: *const LaunchDims,
        g: Resample3dGeometry,
        x: *const f32,
        y: *mut f32,
    ) -> c_int;
    fn emu_upsample_nearest3d_backward(
        d: *const LaunchDims,
        g: Resample3dGeometry,
        dy: *const f32,
        dx: *mut f32,
    ) -> c_int;
    fn emu_linear_taps_table(
        d: *const LaunchDims,
        g: Resample3dGeometry,
        table: *mut LinearTap,
    ) -> c_int;
    fn emu_upsample_trilinear3d_forward(
        d: *const LaunchDims,
        g: Resample3dGeometry,
        table: *const LinearTap,
        x: *const f32,
        y: *mut f32,
    ) -> c_int;
    fn emu_upsample_trilinear3d_backward(
        d: *const LaunchDims,
        g: Resample3dGeometry,
        table: *const LinearTap,
        dy: *const f32,
        dx: *mut f32,
    ) -> c_int;
    fn emu_channels_slice(
        d: *const LaunchDims,
        r: ChannelRange,
        x: *const f32,
        part: *mut f32,
    ) -> c_int;
    fn emu_channels_place(
        d: *const LaunchDims,
        r: ChannelRange,
        part: *const f32,
        out: *mut f32,
    ) -> c_int;
    fn emu_channels_embed(
        d: *const LaunchDims,
        r: ChannelRange,
        part: *const f32,
        out: *mut f32,
    ) -> c_int;
    fn emu_pad3d(
        d: *const LaunchDims,
        g: Pad3dGeometry,
        fill: f32,
        x: *const f32,
        y: *mut f32,
    ) -> c_int;
    fn emu_flip3d(d: *const LaunchDims, g: Flip3dGeometry, x: *const f32, y: *mut f32) -> c_int;
    fn emu_window_filter_axis(
        d: *const LaunchDims,
        p: WindowAxisParams,
        x: *const f32,
        y: *mut f32,
    ) -> c_int;
    fn emu_window_filter_axis_adjoint(
        d: *const LaunchDims,
        p: WindowAxisParams,
        dy: *const f32,
        dx: *mut f32,
    ) -> c_int;
}

fn pool(g: &Pool3dGeometry) -> Result<(u64, u64), String> {
    let (i, o) = pool_counts("max/avg pool (harness)", g).map_err(|e| e.to_string())?;
    Ok((i as u64, o as u64))
}

pub fn max_pool3d_forward(
    d: &LaunchDims,
    g: Pool3dGeometry,
    x: &[f32],
    y: &mut [f32],
) -> EmuResult {
    let (n_in, n_out) = pool(&g)?;
    need("x", x.len(), n_in)?;
    need("y", y.len(), n_out)?;
    // SAFETY: the geometry's windows lie inside the input and the slices cover both sides.
    status(unsafe { emu_max_pool3d_forward(d, g, x.as_ptr(), y.as_mut_ptr()) })
}

/// Each window's first largest cell, as (z * H + y) * W + x within its sample.
pub fn max_pool3d_argmax(
    d: &LaunchDims,
    g: Pool3dGeometry,
    x: &[f32],
    winner: &mut [u32],
) -> EmuResult {
    let (n_in, n_out) = pool(&g)?;
    need("x", x.len(), n_in)?;
    need("winner", winner.len(), n_out)?;
    // SAFETY: as for the forward.
    status(unsafe { emu_max_pool3d_argmax(d, g, x.as_ptr(), winner.as_mut_ptr()) })
}

pub fn max_pool3d_backward(
    d: &LaunchDims,
    g: Pool3dGeometry,
    winner: &[u32],
    dy: &[f32],
    dx: &mut [f32],
) -> EmuResult {
    let (n_in, n_out) = pool(&g)?;
    need("winner", winner.len(), n_out)?;
    need("dy", dy.len(), n_out)?;
    need("dx", dx.len(), n_in)?;
    // SAFETY: the winners are only compared, never used as addresses; lengths checked.
    status(unsafe { emu_max_pool3d_backward(d, g, winner.as_ptr(), dy.as_ptr(), dx.as_mut_ptr()) })
}

pub fn avg_pool3d_forward(
    d: &LaunchDims,
    g: Pool3dGeometry,
    x: &[f32],
    y: &mut [f32],
) -> EmuResult {
    let (n_in, n_out) = pool(&g)?;
    need("x", x.len(), n_in)?;
    need("y", y.len(), n_out)?;
    // SAFETY: as for the max forward.
    status(unsafe { emu_avg_pool3d_forward(d, g, x.as_ptr(), y.as_mut_ptr()) })
}

/// Each window's gradient times 1 / (its real cells), per output element.
pub fn avg_pool3d_scale_gradient(
    d: &LaunchDims,
    g: Pool3dGeometry,
    dy: &[f32],
    scaled: &mut [f32],
) -> EmuResult {
    let (_, n_out) = pool(&g)?;
    need("dy", dy.len(), n_out)?;
    need("scaled", scaled.len(), n_out)?;
    // SAFETY: one element per output on both sides; lengths checked.
    status(unsafe { emu_avg_pool3d_scale_gradient(d, g, dy.as_ptr(), scaled.as_mut_ptr()) })
}

/// The gather of the scaled gradients into the input.
pub fn avg_pool3d_backward(
    d: &LaunchDims,
    g: Pool3dGeometry,
    scaled: &[f32],
    dx: &mut [f32],
) -> EmuResult {
    let (n_in, n_out) = pool(&g)?;
    need("scaled", scaled.len(), n_out)?;
    need("dx", dx.len(), n_in)?;
    // SAFETY: covering windows lie inside the output; lengths checked.
    status(unsafe { emu_avg_pool3d_backward(d, g, scaled.as_ptr(), dx.as_mut_ptr()) })
}

fn resample(g: &Resample3dGeometry) -> Result<(u64, u64), String> {
    let (i, o) = resample_counts("upsample (harness)", g).map_err(|e| e.to_string())?;
    Ok((i as u64, o as u64))
}

pub fn upsample_nearest3d_forward(
    d: &LaunchDims,
    g: Resample3dGeometry,
    x: &[f32],
    y: &mut [f32],
) -> EmuResult {
    let (n_in, n_out) = resample(&g)?;
    nearest_factors(&g).map_err(|e| e.to_string())?;
    need("x", x.len(), n_in)?;
    need("y", y.len(), n_out)?;
    // SAFETY: whole factors map every output cell into the input; lengths checked.
    status(unsafe { emu_upsample_nearest3d_forward(d, g, x.as_ptr(), y.as_mut_ptr()) })
}

pub fn upsample_nearest3d_backward(
    d: &LaunchDims,
    g: Resample3dGeometry,
    dy: &[f32],
    dx: &mut [f32],
) -> EmuResult {
    let (n_in, n_out) = resample(&g)?;
    nearest_factors(&g).map_err(|e| e.to_string())?;
    need("dy", dy.len(), n_out)?;
    need("dx", dx.len(), n_in)?;
    // SAFETY: as for the forward.
    status(unsafe { emu_upsample_nearest3d_backward(d, g, dy.as_ptr(), dx.as_mut_ptr()) })
}

/// Fills the trilinear tap table: one entry per output cell of D, then H, then W.
pub fn linear_taps_table(
    d: &LaunchDims,
    g: Resample3dGeometry,
    table: &mut [LinearTap],
) -> EmuResult {
    resample(&g)?;
    need("table", table.len(), linear_taps_len(&g) as u64)?;
    // SAFETY: the table holds an entry per output cell of each axis.
    status(unsafe { emu_linear_taps_table(d, g, table.as_mut_ptr()) })
}

/// A table the trilinear kernels can index with: long enough, every tap inside its axis.
fn check_table(g: &Resample3dGeometry, table: &[LinearTap]) -> EmuResult {
    need("table", table.len(), linear_taps_len(g) as u64)?;
    let mut start = 0;
    for a in 0..3 {
        let axis = &table[start..start + g.output[a]];
        if let Some(t) = axis.iter().find(|t| t.i0 as usize >= g.input[a]) {
            return Err(format!(
                "tap {t:?} outside axis {a} of {} cells",
                g.input[a]
            ));
        }
        start += g.output[a];
    }
    Ok(())
}

pub fn upsample_trilinear3d_forward(
    d: &LaunchDims,
    g: Resample3dGeometry,
    table: &[LinearTap],
    x: &[f32],
    y: &mut [f32],
) -> EmuResult {
    let (n_in, n_out) = resample(&g)?;
    check_table(&g, table)?;
    need("x", x.len(), n_in)?;
    need("y", y.len(), n_out)?;
    // SAFETY: every tap lies inside its axis; lengths checked.
    status(unsafe {
        emu_upsample_trilinear3d_forward(d, g, table.as_ptr(), x.as_ptr(), y.as_mut_ptr())
    })
}

pub fn upsample_trilinear3d_backward(
    d: &LaunchDims,
    g: Resample3dGeometry,
    table: &[LinearTap],
    dy: &[f32],
    dx: &mut [f32],
) -> EmuResult {
    let (n_in, n_out) = resample(&g)?;
    check_table(&g, table)?;
    need("dy", dy.len(), n_out)?;
    need("dx", dx.len(), n_in)?;
    // SAFETY: the gather reads output cells inside the table's axes; lengths checked.
    status(unsafe {
        emu_upsample_trilinear3d_backward(d, g, table.as_ptr(), dy.as_ptr(), dx.as_mut_ptr())
    })
}

fn channels(r: &ChannelRange) -> Result<(u64, u64), String> {
    let (full, part) = channel_counts("channels (harness)", r).map_err(|e| e.to_string())?;
    Ok((full as u64, part as u64))
}

pub fn channels_slice(d: &LaunchDims, r: ChannelRange, x: &[f32], part: &mut [f32]) -> EmuResult {
    let (full, width) = channels(&r)?;
    need("x", x.len(), full)?;
    need("part", part.len(), width)?;
    // SAFETY: a channel range inside the rows; lengths checked.
    status(unsafe { emu_channels_slice(d, r, x.as_ptr(), part.as_mut_ptr()) })
}

/// Writes only the range's channels of `out`.
pub fn channels_place(d: &LaunchDims, r: ChannelRange, part: &[f32], out: &mut [f32]) -> EmuResult {
    let (full, width) = channels(&r)?;
    need("part", part.len(), width)?;
    need("out", out.len(), full)?;
    // SAFETY: as for the slice.
    status(unsafe { emu_channels_place(d, r, part.as_ptr(), out.as_mut_ptr()) })
}

pub fn channels_embed(d: &LaunchDims, r: ChannelRange, part: &[f32], out: &mut [f32]) -> EmuResult {
    let (full, width) = channels(&r)?;
    need("part", part.len(), width)?;
    need("out", out.len(), full)?;
    // SAFETY: as for the slice.
    status(unsafe { emu_channels_embed(d, r, part.as_ptr(), out.as_mut_ptr()) })
}

pub fn pad3d(d: &LaunchDims, g: Pad3dGeometry, fill: f32, x: &[f32], y: &mut [f32]) -> EmuResult {
    let (n_in, n_out) = pad_counts(&g).map_err(|e| e.to_string())?;
    need("x", x.len(), n_in as u64)?;
    need("y", y.len(), n_out as u64)?;
    // SAFETY: reads are bounds-checked against the input size in the kernel; lengths checked.
    status(unsafe { emu_pad3d(d, g, fill, x.as_ptr(), y.as_mut_ptr()) })
}

pub fn flip3d(d: &LaunchDims, g: Flip3dGeometry, x: &[f32], y: &mut [f32]) -> EmuResult {
    let n = flip_count(&g).map_err(|e| e.to_string())? as u64;
    need("x", x.len(), n)?;
    need("y", y.len(), n)?;
    // SAFETY: a mirrored index stays inside its axis; lengths checked.
    status(unsafe { emu_flip3d(d, g, x.as_ptr(), y.as_mut_ptr()) })
}

fn window(p: &WindowAxisParams) -> EmuResult {
    if p.k == 0 || p.k as usize > WINDOW_MAX_TAPS || p.k > p.len {
        return Err(format!("{} taps along an axis of {}", p.k, p.len));
    }
    if p.input_len() > u32::MAX as usize {
        return Err(format!("{p:?} exceeds 32-bit indices"));
    }
    Ok(())
}

pub fn window_filter_axis(
    d: &LaunchDims,
    p: WindowAxisParams,
    x: &[f32],
    y: &mut [f32],
) -> EmuResult {
    window(&p)?;
    need("x", x.len(), p.input_len() as u64)?;
    need("y", y.len(), p.output_len() as u64)?;
    // SAFETY: 1 <= k <= len and the slices cover both views.
    status(unsafe { emu_window_filter_axis(d, p, x.as_ptr(), y.as_mut_ptr()) })
}

pub fn window_filter_axis_adjoint(
    d: &LaunchDims,
    p: WindowAxisParams,
    dy: &[f32],
    dx: &mut [f32],
) -> EmuResult {
    window(&p)?;
    need("dy", dy.len(), p.output_len() as u64)?;
    need("dx", dx.len(), p.input_len() as u64)?;
    // SAFETY: as for the forward.
    status(unsafe { emu_window_filter_axis_adjoint(d, p, dy.as_ptr(), dx.as_mut_ptr()) })
}
