//! `OptimStepKernel` for `Cuda` (kernels/optim_step.cu): every tensor of a step in one
//! launch. The table of tensor addresses goes up in one host-to-device copy into a pool
//! block (so a step allocates nothing new once the pool holds a block of its size).
use super::device::{Cuda, CudaStorage};
use super::kernel_call::call_kernel;
use super::params_optim_step::{
    AdamKernelParams, OptimTable, ScaleKernelParams, SgdKernelParams, OPTIM_CHUNK,
};
use crate::backend::BackendBase;
use crate::error::Result;
use crate::tensor_ops::optim_step::{
    check_adam_slots, check_sgd_slots, AdamHyper, AdamSlot, OptimStepKernel, SgdHyper, SgdSlot,
};
use cudarc::driver::{DevicePtr, DevicePtrMut};

impl Cuda {
    /// The device address of a buffer the kernel reads.
    fn read_address(&self, s: &CudaStorage) -> u64 {
        // No other stream exists and event tracking is off, so the guard records nothing
        // and the address stays valid for as long as `s` lives (past the launch that
        // uses it: the pool reuses a block only for work queued after that launch).
        let (ptr, _no_events) = s.block().device_ptr(self.stream());
        ptr
    }

    /// The device address of a buffer the kernel writes.
    fn write_address(&self, s: &mut CudaStorage) -> u64 {
        // As in `read_address`.
        let (ptr, _no_events) = s.block_mut().device_ptr_mut(self.stream());
        ptr
    }

    /// The table in a pool block (one host-to-device copy).
    fn upload_table(&self, table: &OptimTable) -> Result<CudaStorage> {
        self.upload(table.words())
    }
}

impl OptimStepKernel for Cuda {
    fn sgd_step_multi(
        &self,
        slots: &mut [SgdSlot<'_, CudaStorage>],
        hyper: SgdHyper,
    ) -> Result<()> {
        check_sgd_slots(slots, &hyper, CudaStorage::len)?;
        let mut table = OptimTable::new(OPTIM_CHUNK);
        for s in slots.iter_mut() {
            let buffer = s
                .momentum_buf
                .as_deref_mut()
                .map_or(0, |b| self.write_address(b));
            let addresses = [
                self.write_address(s.param),
                self.read_address(s.grad),
                buffer,
                0,
            ];
            table.push(addresses, s.param.len(), s.decay);
        }
        if table.is_empty() {
            return Ok(());
        }
        let p = SgdKernelParams::new(&hyper, table.params()?);
        let entries = self.upload_table(&table)?;
        call_kernel!(
            self,
            "optim_step",
            "sgd_step_multi",
            &table.dims(),
            [&p, entries.block()]
        )
    }

    fn adam_step_multi(
        &self,
        slots: &mut [AdamSlot<'_, CudaStorage>],
        hyper: AdamHyper,
    ) -> Result<()> {
        check_adam_slots(slots, CudaStorage::len)?;
        let mut table = OptimTable::new(OPTIM_CHUNK);
        for s in slots.iter_mut() {
            let addresses = [
                self.write_address(s.param),
                self.read_address(s.grad),
                self.write_address(s.m),
                self.write_address(s.v),
            ];
            table.push(addresses, s.param.len(), s.decay);
        }
        if table.is_empty() {
            return Ok(());
        }
        let p = AdamKernelParams::new(&hyper, table.params()?);
        let entries = self.upload_table(&table)?;
        call_kernel!(
            self,
            "optim_step",
            "adam_step_multi",
            &table.dims(),
            [&p, entries.block()]
        )
    }

    /// One launch for the per-chunk partial sums, one block that adds them, one read back.
    fn sum_squares_multi(&self, tensors: &[&CudaStorage]) -> Result<f64> {
        let mut table = OptimTable::new(OPTIM_CHUNK);
        for t in tensors {
            table.push([self.read_address(t), 0, 0, 0], t.len(), false);
        }
        if table.is_empty() {
            return Ok(0.0);
        }
        let p = table.params()?;
        let entries = self.upload_table(&table)?;
        let mut partial = self.alloc_f64(p.chunks as usize)?;
        call_kernel!(
            self,
            "optim_step",
            "sum_squares_partial",
            &table.dims(),
            [&p, entries.block(), partial.block_mut()]
        )?;
        let mut total = self.alloc_f64(1)?;
        call_kernel!(
            self,
            "optim_step",
            "sum_squares_finish",
            &OptimTable::finish_dims(),
            [&p, partial.block(), total.block_mut()]
        )?;
        Ok(self.download_pod::<f64>(&total)?[0])
    }

    fn scale_multi(&self, tensors: &mut [&mut CudaStorage], factor: f64) -> Result<()> {
        let mut table = OptimTable::new(OPTIM_CHUNK);
        for t in tensors.iter_mut() {
            table.push([self.write_address(t), 0, 0, 0], t.len(), false);
        }
        if table.is_empty() {
            return Ok(());
        }
        let p = ScaleKernelParams::new(factor, table.params()?);
        let entries = self.upload_table(&table)?;
        call_kernel!(
            self,
            "optim_step",
            "scale_multi",
            &table.dims(),
            [&p, entries.block()]
        )
    }
}
