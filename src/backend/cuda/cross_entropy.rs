//! `CrossEntropyKernel` for `Cuda` (kernels/cross_entropy.cu): one thread per row, the
//! loss as a device-side reduction. The kernels flag labels that are not class indices in
//! a one-element buffer; the launcher reads that flag once per call (the only host round
//! trip) and, when set, finds the first bad label on the host to report the CPU's error.
use super::block_sum::BlockSumPlan;
use super::device::{Cuda, CudaStorage};
use super::kernel_call::call_kernel;
use super::launch::elementwise;
use super::params_cross_entropy::CrossEntropyKernelParams;
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor_ops::CrossEntropyKernel;

fn check_lengths(
    logits: usize,
    labels: usize,
    weights: Option<usize>,
    classes: usize,
) -> Result<()> {
    if classes == 0 || logits != labels * classes || weights.is_some_and(|w| w != classes) {
        return Err(Error::shape(
            "cross_entropy",
            format!("{logits} logits, {labels} labels, {weights:?} weights for {classes} classes"),
        ));
    }
    Ok(())
}

impl Cuda {
    /// Ok unless the kernel set `bad`; then the CPU's error for the first bad label.
    fn check_labels(
        &self,
        op: &'static str,
        bad: &CudaStorage,
        labels: &CudaStorage,
        classes: usize,
    ) -> Result<()> {
        if self.download(bad)?.first() == Some(&0.0) {
            return Ok(());
        }
        let labels = self.download(labels)?;
        for (row, &label) in labels.iter().enumerate() {
            let v = label as f64;
            if !(v >= 0.0 && v < classes as f64 && v.fract() == 0.0) {
                return Err(Error::shape(
                    op,
                    format!("label {v} at row {row} is not a class index in 0..{classes}"),
                ));
            }
        }
        Err(Error::Backend {
            backend: "cuda",
            msg: format!("{op}: the kernel flagged a label the host finds valid"),
        })
    }
}

impl CrossEntropyKernel for Cuda {
    fn cross_entropy_forward(
        &self,
        logits: &CudaStorage,
        labels: &CudaStorage,
        class_weights: Option<&CudaStorage>,
        classes: usize,
    ) -> Result<(CudaStorage, CudaStorage)> {
        check_lengths(
            logits.len(),
            labels.len(),
            class_weights.map(|w| w.len()),
            classes,
        )?;
        let p = CrossEntropyKernelParams::new(labels.len(), classes, class_weights.is_some());
        let plan = BlockSumPlan::new(labels.len(), self.max_elementwise_blocks());
        // Two planes of f64 partials in an f32 pool block of twice the length.
        let mut partial = self.alloc(4 * plan.blocks as usize)?;
        let mut bad = self.zeros(1)?;
        // Without class weights the kernel does not read any (has_weights 0); the logits
        // stand in.
        call_kernel!(
            self,
            "cross_entropy",
            "cross_entropy_forward_partial",
            &plan.partial_dims,
            [
                &p,
                logits.block(),
                labels.block(),
                class_weights.unwrap_or(logits).block(),
                partial.block_mut(),
                bad.block_mut()
            ]
        )?;
        let mut loss = self.alloc(1)?;
        let mut total = self.alloc(1)?;
        call_kernel!(
            self,
            "cross_entropy",
            "cross_entropy_forward_finish",
            &plan.finish_dims,
            [
                &plan.blocks,
                partial.block(),
                loss.block_mut(),
                total.block_mut()
            ]
        )?;
        self.check_labels("cross_entropy", &bad, labels, classes)?;
        Ok((loss, total))
    }

    fn cross_entropy_backward(
        &self,
        logits: &CudaStorage,
        labels: &CudaStorage,
        class_weights: Option<&CudaStorage>,
        total_weight: &CudaStorage,
        dy: &CudaStorage,
        classes: usize,
    ) -> Result<CudaStorage> {
        check_lengths(
            logits.len(),
            labels.len(),
            class_weights.map(|w| w.len()),
            classes,
        )?;
        if total_weight.is_empty() || dy.is_empty() {
            return Err(Error::shape(
                "cross_entropy",
                "empty total weight or upstream gradient",
            ));
        }
        let p = CrossEntropyKernelParams::new(labels.len(), classes, class_weights.is_some());
        let mut dx = self.alloc(logits.len())?;
        if labels.is_empty() {
            return Ok(dx);
        }
        let mut bad = self.zeros(1)?;
        call_kernel!(
            self,
            "cross_entropy",
            "cross_entropy_backward",
            &elementwise(labels.len(), self.max_elementwise_blocks()),
            [
                &p,
                logits.block(),
                labels.block(),
                class_weights.unwrap_or(logits).block(),
                total_weight.block(),
                dy.block(),
                dx.block_mut(),
                bad.block_mut()
            ]
        )?;
        self.check_labels("cross_entropy", &bad, labels, classes)?;
        Ok(dx)
    }

    fn one_hot(&self, labels: &CudaStorage, classes: usize) -> Result<CudaStorage> {
        if classes == 0 {
            return Err(Error::shape("one_hot", "zero classes"));
        }
        let mut out = self.alloc(labels.len() * classes)?;
        if labels.is_empty() {
            return Ok(out);
        }
        let p = CrossEntropyKernelParams::new(labels.len(), classes, false);
        let mut bad = self.zeros(1)?;
        call_kernel!(
            self,
            "cross_entropy",
            "one_hot",
            &elementwise(labels.len(), self.max_elementwise_blocks()),
            [&p, labels.block(), out.block_mut(), bad.block_mut()]
        )?;
        self.check_labels("one_hot", &bad, labels, classes)?;
        Ok(out)
    }
}
