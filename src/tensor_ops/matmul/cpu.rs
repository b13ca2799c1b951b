use super::{MatmulKernel, MatmulParams};
use crate::backend::cpu::CpuBackend;
use crate::backend::Element;
use crate::error::{Error, Result};
use gemm::Parallelism;

/// Products with at least this many multiply-adds are split across threads.
const THREADED_MACS: usize = 1 << 18;

impl<E: Element> MatmulKernel for CpuBackend<E> {
    fn matmul(
        &self,
        a: &Vec<E>,
        b: &Vec<E>,
        bias: Option<&Vec<E>>,
        p: &MatmulParams,
    ) -> Result<Vec<E>> {
        let (m, n, k) = (p.m, p.n, p.k);
        let lens = [
            ("a", a.len(), m * k),
            ("b", b.len(), k * n),
            ("bias", bias.map_or(n, |b| b.len()), n),
        ];
        for (what, len, want) in lens {
            if len != want {
                return Err(Error::shape(
                    "matmul",
                    format!("{what} has {len} elements, expected {want} for {p:?}"),
                ));
            }
        }
        let mut c = match bias {
            Some(bias) => bias.repeat(m),
            None => vec![E::zero(); m * n],
        };
        if m * n * k == 0 {
            return Ok(c);
        }
        // Strides of op(a) [m, k] and op(b) [k, n] as (row, column) steps in elements.
        let (a_rs, a_cs) = if p.trans_a { (1, m) } else { (k, 1) };
        let (b_rs, b_cs) = if p.trans_b { (1, k) } else { (n, 1) };
        let parallelism = if m * n * k >= THREADED_MACS {
            Parallelism::Rayon(rayon::current_num_threads())
        } else {
            Parallelism::None
        };
        // SAFETY: the lengths were checked above, so every (row, column) the strides reach
        // lies inside `a`, `b` and `c`; `c` does not alias the inputs. `E` is f32 or f64,
        // both of which gemm supports. gemm computes c = alpha c + beta a b; alpha is only
        // read when `read_dst` (the bias rows are there).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                bias.is_some(),
                a.as_ptr(),
                a_cs as isize,
                a_rs as isize,
                b.as_ptr(),
                b_cs as isize,
                b_rs as isize,
                E::one(),
                E::one(),
                false,
                false,
                false,
                parallelism,
            );
        }
        Ok(c)
    }
}
