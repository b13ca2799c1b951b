//! Launchers for the element-wise and reduction kernels: `UnaryKernel`, `BinaryKernel` and
//! `ReduceKernel` for `Cuda`, plus counter-based random fills. Every launch is checked and
//! reported as `Error::Backend` naming the kernel; shapes are checked like the CPU does.
use super::device::{driver_error, Cuda, CudaStorage};
use super::launch::{column_sum, elementwise, ReducePlan};
use super::params::{BinaryParams, BroadcastParams, LaunchDims, UnaryParams, UniformParams};
use crate::error::{Error, Result};
use crate::tensor_ops::binary::check_tiling;
use crate::tensor_ops::reduce::Axis1;
use crate::tensor_ops::{BinaryKernel, BinaryOp, ReduceKernel, UnaryKernel, UnaryOp};
use cudarc::driver::{LaunchArgs, LaunchConfig, PushKernelArg};

fn config(d: &LaunchDims) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (d.grid[0], d.grid[1], d.grid[2]),
        block_dim: (d.block[0], d.block[1], d.block[2]),
        shared_mem_bytes: d.shared_bytes,
    }
}

/// Launches kernel `$name` of kernels/`$module`.cu on `$dims` with the arguments listed.
macro_rules! launch {
    ($cuda:expr, $module:literal, $name:literal, $dims:expr, [$($arg:expr),+ $(,)?]) => {{
        let f = $cuda.function($module, $name)?;
        let mut args = $cuda.stream().launch_builder(&f);
        $(args.arg($arg);)+
        $cuda.run($name, $dims, args)
    }};
}
pub(super) use launch;

impl Cuda {
    pub(super) fn run(
        &self,
        name: &str,
        dims: &LaunchDims,
        mut args: LaunchArgs<'_>,
    ) -> Result<()> {
        // SAFETY: each launcher passes the arguments in the kernel's order and types, with
        // buffers at least as long as its parameters make the kernel index.
        unsafe { args.launch(config(dims)) }.map_err(|e| driver_error(name, e))?;
        Ok(())
    }

    /// out[i] = `crate::rng::uniform_at(seed, stream, offset + i)`, bit for bit.
    pub fn uniform(&self, seed: u64, stream: u32, offset: u64, len: usize) -> Result<CudaStorage> {
        let mut out = self.alloc(len)?;
        if len > 0 {
            let p = UniformParams {
                seed,
                offset,
                n: len as u64,
                stream,
                pad_: 0,
            };
            let dims = elementwise(len, self.max_elementwise_blocks());
            launch!(self, "rng", "uniform_fill", &dims, [&p, out.block_mut()])?;
        }
        Ok(out)
    }

    /// Sums `x` over the middle of `v` into `out`: a thread per output where that suits the
    /// view, else the block reduction (one launch, or partials and a finish).
    fn sum_into(&self, x: &CudaStorage, v: Axis1, out: &mut CudaStorage) -> Result<()> {
        if let Some((p, dims)) = column_sum(v, self.max_elementwise_blocks()) {
            return launch!(
                self,
                "reduce",
                "sum_axis1_columns",
                &dims,
                [&p, x.block(), out.block_mut()]
            );
        }
        let plan = ReducePlan::new(v, self.target_blocks());
        if plan.splits() == 1 {
            return launch!(
                self,
                "reduce",
                "sum_axis1",
                &plan.first_dims,
                [&plan.first, x.block(), out.block_mut()]
            );
        }
        let mut partial = self.alloc_f64(plan.partial_len())?;
        launch!(
            self,
            "reduce",
            "sum_axis1_partial",
            &plan.first_dims,
            [&plan.first, x.block(), partial.block_mut()]
        )?;
        self.finish(&plan, &partial, out)
    }

    fn finish(
        &self,
        plan: &ReducePlan,
        partial: &CudaStorage,
        out: &mut CudaStorage,
    ) -> Result<()> {
        launch!(
            self,
            "reduce",
            "sum_axis1_finish",
            &plan.finish_dims,
            [&plan.finish, partial.block(), out.block_mut()]
        )
    }
}

impl UnaryKernel for Cuda {
    fn unary_forward(&self, op: UnaryOp, x: &CudaStorage) -> Result<CudaStorage> {
        let n = x.len();
        let mut y = self.alloc(n)?;
        if n > 0 {
            let p = UnaryParams::new(op, n);
            let dims = elementwise(n, self.max_elementwise_blocks());
            launch!(
                self,
                "unary",
                "unary_forward",
                &dims,
                [&p, x.block(), y.block_mut()]
            )?;
        }
        Ok(y)
    }

    fn unary_backward(
        &self,
        op: UnaryOp,
        x: &CudaStorage,
        y: &CudaStorage,
        dy: &CudaStorage,
    ) -> Result<CudaStorage> {
        let n = dy.len();
        if x.len() != n || y.len() != n {
            return Err(Error::shape(
                "unary backward",
                format!("x {} / y {} / dy {n} elements", x.len(), y.len()),
            ));
        }
        let mut dx = self.alloc(n)?;
        if n > 0 {
            let p = UnaryParams::new(op, n);
            let dims = elementwise(n, self.max_elementwise_blocks());
            launch!(
                self,
                "unary",
                "unary_backward",
                &dims,
                [&p, x.block(), y.block(), dy.block(), dx.block_mut()]
            )?;
        }
        Ok(dx)
    }
}

impl BinaryKernel for Cuda {
    fn binary_forward(
        &self,
        op: BinaryOp,
        a: &CudaStorage,
        b: &CudaStorage,
    ) -> Result<CudaStorage> {
        check_tiling(a.len(), b.len())?;
        let n = a.len();
        let mut out = self.alloc(n)?;
        if n > 0 {
            let p = BinaryParams::new(op, n, b.len());
            let dims = elementwise(n, self.max_elementwise_blocks());
            launch!(
                self,
                "binary",
                "binary_forward",
                &dims,
                [&p, a.block(), b.block(), out.block_mut()]
            )?;
        }
        Ok(out)
    }

    fn binary_backward(
        &self,
        op: BinaryOp,
        a: &CudaStorage,
        b: &CudaStorage,
        dy: &CudaStorage,
        needs: [bool; 2],
    ) -> Result<(Option<CudaStorage>, Option<CudaStorage>)> {
        check_tiling(a.len(), b.len())?;
        let (n, nb) = (a.len(), b.len());
        if dy.len() != n {
            return Err(Error::shape(
                "binary backward",
                format!("dy of {} elements for a of {n}", dy.len()),
            ));
        }
        let p = BinaryParams::new(op, n, nb);
        let dims = elementwise(n, self.max_elementwise_blocks());
        let da = if needs[0] {
            let mut da = self.alloc(n)?;
            if n > 0 {
                launch!(
                    self,
                    "binary",
                    "binary_backward_a",
                    &dims,
                    [&p, a.block(), b.block(), dy.block(), da.block_mut()]
                )?;
            }
            Some(da)
        } else {
            None
        };
        let db = if !needs[1] {
            None
        } else if nb == n {
            let mut db = self.alloc(n)?;
            if n > 0 {
                launch!(
                    self,
                    "binary",
                    "binary_backward_b",
                    &dims,
                    [&p, a.block(), b.block(), dy.block(), db.block_mut()]
                )?;
            }
            Some(db)
        } else {
            // Column sums of dy * d(a op b)/db over the n / nb repeats of b.
            let view = Axis1 {
                outer: 1,
                mid: n / nb,
                inner: nb,
            };
            let plan = ReducePlan::new(view, self.target_blocks());
            let mut partial = self.alloc_f64(plan.partial_len())?;
            launch!(
                self,
                "binary",
                "binary_backward_b_partial",
                &plan.first_dims,
                [
                    &plan.first,
                    &p,
                    a.block(),
                    b.block(),
                    dy.block(),
                    partial.block_mut()
                ]
            )?;
            let mut db = self.alloc(nb)?;
            self.finish(&plan, &partial, &mut db)?;
            Some(db)
        };
        Ok((da, db))
    }
}

impl ReduceKernel for Cuda {
    fn sum_axis1(&self, x: &CudaStorage, v: Axis1) -> Result<CudaStorage> {
        if x.len() != v.numel() {
            return Err(Error::shape(
                "sum",
                format!("{} elements viewed as {v:?}", x.len()),
            ));
        }
        let mut out = self.alloc(v.outer * v.inner)?;
        if v.outer * v.inner > 0 {
            self.sum_into(x, v, &mut out)?;
        }
        Ok(out)
    }

    fn broadcast_axis1(&self, x: &CudaStorage, v: Axis1) -> Result<CudaStorage> {
        if x.len() != v.outer * v.inner {
            return Err(Error::shape(
                "broadcast",
                format!("{} elements for {v:?}", x.len()),
            ));
        }
        let n = v.numel();
        let mut out = self.alloc(n)?;
        if n > 0 {
            let p = BroadcastParams {
                outer: v.outer as u64,
                mid: v.mid as u64,
                inner: v.inner as u64,
            };
            let dims = elementwise(n, self.max_elementwise_blocks());
            launch!(
                self,
                "reduce",
                "broadcast_axis1",
                &dims,
                [&p, x.block(), out.block_mut()]
            )?;
        }
        Ok(out)
    }
}
