use super::CrossEntropyKernel;
use crate::backend::cpu::{CpuBackend, PAR_CHUNK};
use crate::backend::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// The class index a float label stands for, or an error naming `op` and the row.
fn class_of<E: Element>(op: &'static str, label: E, row: usize, classes: usize) -> Result<usize> {
    let v = label.as_f64();
    if v >= 0.0 && v < classes as f64 && v.fract() == 0.0 {
        return Ok(v as usize);
    }
    Err(Error::shape(
        op,
        format!("label {v} at row {row} is not a class index in 0..{classes}"),
    ))
}

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

/// log(sum_k exp(row_k)), shifted by the row maximum for stability.
fn log_sum_exp<E: Element>(row: &[E]) -> f64 {
    let max = row
        .iter()
        .map(|v| v.as_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    max + row
        .iter()
        .map(|v| (v.as_f64() - max).exp())
        .sum::<f64>()
        .ln()
}

/// Rows per rayon task: about `PAR_CHUNK` logits.
fn rows_per_task(classes: usize) -> usize {
    (PAR_CHUNK / classes).max(1)
}

impl<E: Element> CrossEntropyKernel for CpuBackend<E> {
    fn cross_entropy_forward(
        &self,
        logits: &Vec<E>,
        labels: &Vec<E>,
        class_weights: Option<&Vec<E>>,
        classes: usize,
    ) -> Result<(Vec<E>, Vec<E>)> {
        check_lengths(
            logits.len(),
            labels.len(),
            class_weights.map(Vec::len),
            classes,
        )?;
        let rows = rows_per_task(classes);
        // Per-chunk partial sums added in chunk order: the same total on any thread count.
        let partials: Vec<(f64, f64)> = logits
            .par_chunks(rows * classes)
            .zip(labels.par_chunks(rows))
            .enumerate()
            .map(|(c, (xc, yc))| -> Result<(f64, f64)> {
                let mut acc = (0.0, 0.0);
                for (r, (row, &label)) in xc.chunks_exact(classes).zip(yc).enumerate() {
                    let y = class_of("cross_entropy", label, c * rows + r, classes)?;
                    let w = class_weights.map_or(1.0, |w| w[y].as_f64());
                    acc.0 += w * (log_sum_exp(row) - row[y].as_f64());
                    acc.1 += w;
                }
                Ok(acc)
            })
            .collect::<Result<_>>()?;
        let (loss, total) = partials
            .iter()
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        Ok((vec![E::of(loss / total)], vec![E::of(total)]))
    }

    fn cross_entropy_backward(
        &self,
        logits: &Vec<E>,
        labels: &Vec<E>,
        class_weights: Option<&Vec<E>>,
        total_weight: &Vec<E>,
        dy: &Vec<E>,
        classes: usize,
    ) -> Result<Vec<E>> {
        check_lengths(
            logits.len(),
            labels.len(),
            class_weights.map(Vec::len),
            classes,
        )?;
        let (Some(total), Some(dy)) = (total_weight.first(), dy.first()) else {
            return Err(Error::shape(
                "cross_entropy",
                "empty total weight or upstream gradient",
            ));
        };
        let g = dy.as_f64() / total.as_f64();
        let rows = rows_per_task(classes);
        let mut dx = vec![E::zero(); logits.len()];
        dx.par_chunks_mut(rows * classes)
            .zip(
                logits
                    .par_chunks(rows * classes)
                    .zip(labels.par_chunks(rows)),
            )
            .enumerate()
            .try_for_each(|(c, (dc, (xc, yc)))| -> Result<()> {
                let it = dc
                    .chunks_exact_mut(classes)
                    .zip(xc.chunks_exact(classes).zip(yc));
                for (r, (drow, (row, &label))) in it.enumerate() {
                    let y = class_of("cross_entropy", label, c * rows + r, classes)?;
                    let scale = g * class_weights.map_or(1.0, |w| w[y].as_f64());
                    let lse = log_sum_exp(row);
                    for (k, (d, &v)) in drow.iter_mut().zip(row).enumerate() {
                        let p = (v.as_f64() - lse).exp();
                        let hot = if k == y { 1.0 } else { 0.0 };
                        *d = E::of(scale * (p - hot));
                    }
                }
                Ok(())
            })?;
        Ok(dx)
    }

    fn one_hot(&self, labels: &Vec<E>, classes: usize) -> Result<Vec<E>> {
        let mut out = vec![E::zero(); labels.len() * classes];
        let rows = rows_per_task(classes);
        out.par_chunks_mut(rows * classes)
            .zip(labels.par_chunks(rows))
            .enumerate()
            .try_for_each(|(c, (oc, yc))| -> Result<()> {
                for (r, (orow, &label)) in oc.chunks_exact_mut(classes).zip(yc).enumerate() {
                    orow[class_of("one_hot", label, c * rows + r, classes)?] = E::one();
                }
                Ok(())
            })?;
        Ok(out)
    }
}
