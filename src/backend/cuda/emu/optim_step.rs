//! Harness entry points of kernels/optim_step.cu: the same tables as on the device, built
//! from host slices (the addresses are host pointers), so the kernels' chunking and
//! table search run as they do on a GPU. `chunk` is the table's chunk size (the device
//! uses `OPTIM_CHUNK`; tests also use small ones to cross many chunk boundaries).
use super::{status, EmuResult};
use crate::backend::cuda::params::LaunchDims;
use crate::backend::cuda::params_optim_step::{
    AdamKernelParams, OptimTable, OptimTableParams, OptimTensor, ScaleKernelParams, SgdKernelParams,
};
use crate::tensor_ops::optim_step::{
    check_adam_slots, check_sgd_slots, AdamHyper, AdamSlot, SgdHyper, SgdSlot,
};
use std::ffi::c_int;

extern "C" {
    fn emu_sgd_step_multi(
        d: *const LaunchDims,
        p: SgdKernelParams,
        table: *const OptimTensor,
    ) -> c_int;
    fn emu_adam_step_multi(
        d: *const LaunchDims,
        p: AdamKernelParams,
        table: *const OptimTensor,
    ) -> c_int;
    fn emu_scale_multi(
        d: *const LaunchDims,
        p: ScaleKernelParams,
        table: *const OptimTensor,
    ) -> c_int;
    fn emu_sum_squares_partial(
        d: *const LaunchDims,
        p: OptimTableParams,
        table: *const OptimTensor,
        partial: *mut f64,
    ) -> c_int;
    fn emu_sum_squares_finish(
        d: *const LaunchDims,
        p: OptimTableParams,
        partial: *const f64,
        total: *mut f64,
    ) -> c_int;
}

fn read(s: &[f32]) -> u64 {
    s.as_ptr() as u64
}

fn write(s: &mut [f32]) -> u64 {
    s.as_mut_ptr() as u64
}

/// `sgd_step_multi` over the slots (each slice exactly the tensor's length).
pub fn sgd(slots: &mut [SgdSlot<'_, [f32]>], hyper: SgdHyper, chunk: u64) -> EmuResult {
    check_sgd_slots(slots, &hyper, <[f32]>::len).map_err(|e| e.to_string())?;
    let mut table = OptimTable::new(chunk);
    for s in slots.iter_mut() {
        let buffer = s.momentum_buf.as_deref_mut().map_or(0, write);
        table.push(
            [write(s.param), read(s.grad), buffer, 0],
            s.param.len(),
            s.decay,
        );
    }
    if table.is_empty() {
        return Ok(());
    }
    let p = SgdKernelParams::new(&hyper, table.params().map_err(|e| e.to_string())?);
    // SAFETY: the table holds the slots' pointers with their checked lengths, and the
    // slots stay borrowed for the call.
    status(unsafe { emu_sgd_step_multi(&table.dims(), p, table.entries().as_ptr()) })
}

/// `adam_step_multi` over the slots (each slice exactly the tensor's length).
pub fn adam(slots: &mut [AdamSlot<'_, [f32]>], hyper: AdamHyper, chunk: u64) -> EmuResult {
    check_adam_slots(slots, <[f32]>::len).map_err(|e| e.to_string())?;
    let mut table = OptimTable::new(chunk);
    for s in slots.iter_mut() {
        table.push(
            [write(s.param), read(s.grad), write(s.m), write(s.v)],
            s.param.len(),
            s.decay,
        );
    }
    if table.is_empty() {
        return Ok(());
    }
    let p = AdamKernelParams::new(&hyper, table.params().map_err(|e| e.to_string())?);
    // SAFETY: as in `sgd`.
    status(unsafe { emu_adam_step_multi(&table.dims(), p, table.entries().as_ptr()) })
}

/// `scale_multi`: every tensor times `factor` (in f32), in place.
pub fn scale(tensors: &mut [&mut [f32]], factor: f64, chunk: u64) -> EmuResult {
    let mut table = OptimTable::new(chunk);
    for t in tensors.iter_mut() {
        table.push([write(t), 0, 0, 0], t.len(), false);
    }
    if table.is_empty() {
        return Ok(());
    }
    let p = ScaleKernelParams::new(factor, table.params().map_err(|e| e.to_string())?);
    // SAFETY: as in `sgd`.
    status(unsafe { emu_scale_multi(&table.dims(), p, table.entries().as_ptr()) })
}

/// `sum_squares_partial` then `sum_squares_finish`: the sum of the squares of every
/// element, as the device computes it.
pub fn sum_squares(tensors: &[&[f32]], chunk: u64) -> Result<f64, String> {
    let mut table = OptimTable::new(chunk);
    for t in tensors {
        table.push([read(t), 0, 0, 0], t.len(), false);
    }
    if table.is_empty() {
        return Ok(0.0);
    }
    let p = table.params().map_err(|e| e.to_string())?;
    let mut partial = vec![f64::NAN; p.chunks as usize];
    let mut total = [f64::NAN];
    // SAFETY: the table holds the tensors' pointers and lengths; `partial` has one entry
    // per chunk (the grid) and `total` one.
    status(unsafe {
        emu_sum_squares_partial(
            &table.dims(),
            p,
            table.entries().as_ptr(),
            partial.as_mut_ptr(),
        )
    })?;
    // SAFETY: the finish reads `p.chunks` partials and writes one total.
    status(unsafe {
        emu_sum_squares_finish(
            &OptimTable::finish_dims(),
            p,
            partial.as_ptr(),
            total.as_mut_ptr(),
        )
    })?;
    Ok(total[0])
}
