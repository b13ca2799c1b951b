//! Matrix products: `matmul` of two matrices and `dense` (a fully connected layer over the
//! last axis of any tensor, with an optional bias). The kernel takes transpose flags, so
//! the backward multiplies by transposed operands without making transposed copies.
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::reduce::{sum_axis1, Axis1};
use crate::tensor_ops::Backend;

/// One product `c[m, n] = op(a)[m, k] op(b)[k, n]`, laid out for the CUDA kernels too.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulParams {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// `a` is stored row-major as `[k, m]` and used transposed (else stored `[m, k]`).
    pub trans_a: bool,
    /// `b` is stored row-major as `[n, k]` and used transposed (else stored `[k, n]`).
    pub trans_b: bool,
}

pub trait MatmulKernel: BackendBase {
    /// `c = op(a) op(b)`, row-major `[m, n]`, plus `bias[n]` on every row when given.
    fn matmul(
        &self,
        a: &Self::Storage,
        b: &Self::Storage,
        bias: Option<&Self::Storage>,
        p: &MatmulParams,
    ) -> Result<Self::Storage>;
}

fn product<B: Backend>(
    a: &Tensor<B>,
    b: &Tensor<B>,
    bias: Option<&Tensor<B>>,
    p: MatmulParams,
    out: Shape,
) -> Result<Tensor<B>> {
    let be = a.backend();
    let c = be.matmul(a.storage(), b.storage(), bias.map(|t| t.storage()), &p)?;
    Tensor::from_storage(be, out, c)
}

/// Saves both operands: each one's gradient is the output's gradient times the other.
struct MatmulBackward<B: Backend> {
    a: Tensor<B>,
    b: Tensor<B>,
}

impl<B: Backend> BackwardOp<B> for MatmulBackward<B> {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let (m, k, n) = (self.a.dims()[0], self.a.dims()[1], self.b.dims()[1]);
        // dA = dC B^T: [m, n] x [n, k].
        let da = needs[0]
            .then(|| {
                let p = MatmulParams {
                    m,
                    n: k,
                    k: n,
                    trans_a: false,
                    trans_b: true,
                };
                product(grad, &self.b, None, p, self.a.shape().clone())
            })
            .transpose()?;
        // dB = A^T dC: [k, m] x [m, n].
        let db = needs[1]
            .then(|| {
                let p = MatmulParams {
                    m: k,
                    n,
                    k: m,
                    trans_a: true,
                    trans_b: false,
                };
                product(&self.a, grad, None, p, self.b.shape().clone())
            })
            .transpose()?;
        Ok(vec![da, db])
    }
}

/// Saves the input and the weight; the bias gradient needs neither.
struct DenseBackward<B: Backend> {
    x: Tensor<B>,
    w: Tensor<B>,
    has_bias: bool,
}

impl<B: Backend> BackwardOp<B> for DenseBackward<B> {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let (inp, out) = (self.w.dims()[0], self.w.dims()[1]);
        let rows = self.x.numel() / inp.max(1);
        // dX = dY W^T: [rows, out] x [out, in].
        let dx = needs[0]
            .then(|| {
                let p = MatmulParams {
                    m: rows,
                    n: inp,
                    k: out,
                    trans_a: false,
                    trans_b: true,
                };
                product(grad, &self.w, None, p, self.x.shape().clone())
            })
            .transpose()?;
        // dW = X^T dY: [in, rows] x [rows, out].
        let dw = needs[1]
            .then(|| {
                let p = MatmulParams {
                    m: inp,
                    n: out,
                    k: rows,
                    trans_a: true,
                    trans_b: false,
                };
                product(&self.x, grad, None, p, self.w.shape().clone())
            })
            .transpose()?;
        let mut grads = vec![dx, dw];
        if self.has_bias {
            let view = Axis1 {
                outer: 1,
                mid: rows,
                inner: out,
            };
            grads.push(
                needs[2]
                    .then(|| sum_axis1(grad, view, Shape::new(&[out])))
                    .transpose()?,
            );
        }
        Ok(grads)
    }
}

impl<B: Backend> Var<B> {
    /// Matrix product `[M, K] x [K, N] -> [M, N]`.
    pub fn matmul(&self, rhs: &Var<B>) -> Result<Var<B>> {
        let (a, b) = (self.shape(), rhs.shape());
        let (m, k, n) = match (a.dims(), b.dims()) {
            (&[m, k], &[k2, n]) if k == k2 => (m, k, n),
            _ => {
                return Err(Error::shape(
                    "matmul",
                    format!("cannot multiply {a} by {b}: need [M, K] x [K, N]"),
                ))
            }
        };
        let p = MatmulParams {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
        };
        let y = product(self.value(), rhs.value(), None, p, Shape::new(&[m, n]))?;
        Ok(Var::from_op("matmul", y, &[self, rhs], || MatmulBackward {
            a: self.value().clone(),
            b: rhs.value().clone(),
        }))
    }

    /// A fully connected layer over the last axis: `x [..., in]`, `w [in, out]`,
    /// `bias [out]` -> `[..., out]`.
    pub fn dense(&self, w: &Var<B>, bias: Option<&Var<B>>) -> Result<Var<B>> {
        let bad = |why: String| {
            Err(Error::shape(
                "dense",
                format!(
                    "input {}, weight {}, bias {}: {why}",
                    self.shape(),
                    w.shape(),
                    bias.map_or("none".to_string(), |b| b.shape().to_string())
                ),
            ))
        };
        let (inp, out) = match w.dims() {
            &[i, o] => (i, o),
            _ => return bad("the weight must be [in, out]".into()),
        };
        let dims = self.dims();
        if dims.last() != Some(&inp) {
            return bad(format!("the input's last axis must be {inp}"));
        }
        if bias.is_some_and(|b| b.dims() != [out]) {
            return bad(format!("the bias must be [{out}]"));
        }
        let rows = self.value().numel() / inp.max(1);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank checked above") = out;
        let p = MatmulParams {
            m: rows,
            n: out,
            k: inp,
            trans_a: false,
            trans_b: false,
        };
        let y = product(
            self.value(),
            w.value(),
            bias.map(|b| b.value()),
            p,
            Shape::new(&out_dims),
        )?;
        let mut inputs = vec![self, w];
        inputs.extend(bias);
        Ok(Var::from_op("dense", y, &inputs, || DenseBackward {
            x: self.value().clone(),
            w: w.value().clone(),
            has_bias: bias.is_some(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::{Cpu, Cpu64};
    use crate::rng::Rng;

    fn normal(len: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        (0..len).map(|_| rng.normal()).collect()
    }

    fn tensor(shape: &[usize], seed: u64) -> Tensor<Cpu64> {
        let len = shape.iter().product();
        Tensor::from_host(&Cpu64::new(), shape, &normal(len, seed)).unwrap()
    }

    /// `sum(y * w)` for fixed weights w.
    fn weighted_sum(y: &Var<Cpu64>, seed: u64) -> Result<Var<Cpu64>> {
        y.mul(&Var::constant(tensor(y.dims(), seed)))?.sum()
    }

    #[test]
    fn two_by_three_times_three_by_two() {
        let b = Cpu::new();
        let x = Var::constant(
            Tensor::from_host(&b, [2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
        );
        let y = Var::constant(
            Tensor::from_host(&b, [3, 2], &[7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0]).unwrap(),
        );
        let z = x.matmul(&y).unwrap();
        assert_eq!(z.dims(), &[2, 2]);
        assert_eq!(z.value().to_vec().unwrap(), vec![58.0, 64.0, 139.0, 154.0]);
    }

    #[test]
    fn dense_by_hand() {
        let b = Cpu64::new();
        let x = Var::constant(Tensor::from_host(&b, [1, 1, 2], &[1.0, 2.0]).unwrap());
        let w =
            Var::constant(Tensor::from_host(&b, [2, 3], &[1.0, 0.0, 2.0, 0.0, 1.0, 3.0]).unwrap());
        let bias = Var::constant(Tensor::from_host(&b, [3], &[10.0, 20.0, 30.0]).unwrap());
        let y = x.dense(&w, Some(&bias)).unwrap();
        assert_eq!(y.dims(), &[1, 1, 3]);
        assert_eq!(y.value().to_vec().unwrap(), vec![11.0, 22.0, 38.0]);
        let y = x.dense(&w, None).unwrap();
        assert_eq!(y.value().to_vec().unwrap(), vec![1.0, 2.0, 8.0]);
    }

    #[test]
    fn transpose_flags_match_a_naive_product_in_f32() {
        // Large enough (70 * 90 * 80 multiply-adds) to take the threaded path.
        let (m, n, k) = (70, 90, 80);
        let a = normal(m * k, 1);
        let b = normal(k * n, 2);
        let bias = normal(n, 3);
        let mut want = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] =
                    bias[j] + (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum::<f64>();
            }
        }
        let transpose = |v: &[f64], rows: usize, cols: usize| -> Vec<f32> {
            let mut t = vec![0.0f32; v.len()];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = v[r * cols + c] as f32;
                }
            }
            t
        };
        let f32s = |v: &[f64]| -> Vec<f32> { v.iter().map(|&x| x as f32).collect() };
        let bias32 = f32s(&bias);
        let be = Cpu::new();
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let a_store = if trans_a {
                transpose(&a, m, k)
            } else {
                f32s(&a)
            };
            let b_store = if trans_b {
                transpose(&b, k, n)
            } else {
                f32s(&b)
            };
            let p = MatmulParams {
                m,
                n,
                k,
                trans_a,
                trans_b,
            };
            let c = be.matmul(&a_store, &b_store, Some(&bias32), &p).unwrap();
            for (i, (got, want)) in c.iter().zip(&want).enumerate() {
                assert!(
                    (*got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "trans {trans_a} {trans_b}, element {i}: {got} vs {want}"
                );
            }
        }
    }

    // Gradient checks: central differences with eps 1e-6 in f64; the products are bilinear,
    // so the tolerance is tight: 1e-7 relative.
    #[test]
    fn matmul_gradients() {
        check_gradients(
            &[tensor(&[3, 4], 4), tensor(&[4, 5], 5)],
            |v| weighted_sum(&v[0].matmul(&v[1])?, 6),
            1e-6,
            1e-7,
            100,
        )
        .unwrap();
    }

    #[test]
    fn dense_gradients_for_rank_3_and_5_inputs() {
        for (shape, out) in [(vec![2, 3, 4], 5), (vec![2, 3, 2, 5, 3], 2)] {
            let inp = *shape.last().unwrap();
            let x = tensor(&shape, 7);
            let w = tensor(&[inp, out], 8);
            let b = tensor(&[out], 9);
            check_gradients(
                &[x.clone(), w.clone(), b],
                |v| weighted_sum(&v[0].dense(&v[1], Some(&v[2]))?, 10),
                1e-6,
                1e-7,
                1000,
            )
            .unwrap_or_else(|e| panic!("{shape:?} with bias: {e}"));
            check_gradients(
                &[x, w],
                |v| weighted_sum(&v[0].dense(&v[1], None)?, 11),
                1e-6,
                1e-7,
                1000,
            )
            .unwrap_or_else(|e| panic!("{shape:?} without bias: {e}"));
        }
    }

    #[test]
    fn mismatched_shapes_are_errors_naming_op_and_shapes() {
        let a = Var::constant(tensor(&[2, 3], 1));
        let b = Var::constant(tensor(&[4, 2], 2));
        let err = a.matmul(&b).unwrap_err().to_string();
        assert!(
            err.contains("matmul") && err.contains("[2, 3]") && err.contains("[4, 2]"),
            "{err}"
        );
        let v = Var::constant(tensor(&[3], 3));
        let err = v.matmul(&b).unwrap_err().to_string();
        assert!(err.contains("matmul") && err.contains("[3]"), "{err}");
        let err = a.dense(&b, None).unwrap_err().to_string();
        assert!(
            err.contains("dense") && err.contains("[2, 3]") && err.contains("[4, 2]"),
            "{err}"
        );
        let w = Var::constant(tensor(&[3, 2], 4));
        let bias = Var::constant(tensor(&[3], 5));
        let err = a.dense(&w, Some(&bias)).unwrap_err().to_string();
        assert!(err.contains("dense") && err.contains("bias [3]"), "{err}");
    }
}
