//! The sliding-window stitching kernels (kernels/stitch.cu) run on the CPU through the
//! execution harness, one launch per window as the device launcher does, against the CPU
//! backend: odd volumes and windows, windows that overlap, touch the volume's borders or
//! reach past them (clipped), grids capped at 1 and 3 blocks so that the grid-stride loops
//! turn over. `acc` and `norm` are updated in place: they start from random values and
//! carry a guard tail that must stay untouched; the logits of cells outside the volume are
//! NaN, so a read of one shows up in the results.
//!
//! Tolerance: none. Both sides round `acc + w * logit` twice (the kernel's product is
//! `__fmul_rn`, never fused) and add the windows in the same order, so the results must
//! be bit-identical.
mod common;

use common::{check_layout, guarded, random, written};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::emu;
use voxseg::backend::cuda::params_stitch::{StitchDivideParams, StitchParams};
use voxseg::rng::Rng;
use voxseg::tensor::Shape;
use voxseg::tensor_ops::stitch::StitchGeometry;
use voxseg::tensor_ops::StitchKernel;

#[test]
fn param_structs_match_the_cpp_side() {
    check_layout!(
        "StitchParams",
        StitchParams {
            volume,
            patch,
            start,
            extent,
            channels,
            window
        }
    );
    check_layout!(
        "StitchDivideParams",
        StitchDivideParams {
            voxels,
            channels,
            pad_
        }
    );
}

fn geometry(
    volume: [usize; 3],
    patch: [usize; 3],
    k: usize,
    starts: &[[usize; 3]],
) -> StitchGeometry {
    let [d, h, w] = volume;
    let [pd, ph, pw] = patch;
    StitchGeometry::new(
        &Shape::new(&[1, d, h, w, k]),
        &Shape::new(&[1, d, h, w, 1]),
        &Shape::new(&[starts.len(), pd, ph, pw, k]),
        &Shape::new(&patch),
        starts,
    )
    .unwrap()
}

/// Random logits for every window, NaN on the cells that fall outside the volume.
fn logits_outside_nan(rng: &mut Rng, g: &StitchGeometry) -> Vec<f32> {
    let [pd, ph, pw] = g.patch;
    let k = g.channels;
    let mut logits = random(rng, g.starts.len() * pd * ph * pw * k, -4.0, 4.0);
    for i in 0..g.starts.len() {
        let e = g.extent(i);
        for z in 0..pd {
            for y in 0..ph {
                for x in 0..pw {
                    if z >= e[0] || y >= e[1] || x >= e[2] {
                        let cell = ((i * pd + z) * ph + y) * pw + x;
                        logits[cell * k..(cell + 1) * k].fill(f32::NAN);
                    }
                }
            }
        }
    }
    logits
}

#[test]
fn accumulation_and_division_match_the_cpu_backend_bit_for_bit() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(41);
    // (volume, patch, channels, window starts)
    let cases = [
        // Overlapping windows touching every border of an odd volume, batched together.
        (
            [7, 9, 5],
            [3, 5, 3],
            3,
            vec![[0, 0, 0], [2, 2, 1], [4, 4, 2], [4, 0, 2], [0, 4, 0]],
        ),
        // Windows larger than the volume on some axes: clipped to it.
        (
            [5, 3, 6],
            [7, 4, 3],
            1,
            vec![[0, 0, 0], [0, 0, 3], [0, 0, 2]],
        ),
        // One window past every far side, one inside, the same window twice.
        (
            [6, 5, 7],
            [4, 4, 4],
            5,
            vec![[3, 2, 4], [1, 1, 1], [1, 1, 1], [5, 4, 6]],
        ),
        // One voxel per axis in the volume.
        ([1, 1, 1], [2, 3, 1], 2, vec![[0, 0, 0]]),
    ];
    for (volume, patch, k, starts) in cases {
        let g = geometry(volume, patch, k, &starts);
        let voxels = g.voxels();
        let acc0 = random(&mut rng, voxels * k, -1.0, 1.0);
        let norm0 = random(&mut rng, voxels, 0.5, 2.0);
        let logits = logits_outside_nan(&mut rng, &g);
        let weights = random(&mut rng, g.window_cells(), 0.01, 1.0);
        let (mut want_acc, mut want_norm) = (acc0.clone(), norm0.clone());
        cpu.accumulate_windows(&mut want_acc, &mut want_norm, &logits, &weights, &g)
            .unwrap();
        assert!(want_acc.iter().all(|v| v.is_finite()), "{volume:?}");
        assert!(want_norm.iter().zip(&norm0).any(|(a, b)| a != b));
        let mut want_avg = want_acc.clone();
        cpu.divide_by_weights(&mut want_avg, &want_norm, k).unwrap();
        for max_blocks in [1, 3, 1024] {
            let what = format!("{volume:?} patch {patch:?} k {k} blocks {max_blocks}");
            let (mut acc, mut norm) = (guarded(&acc0), guarded(&norm0));
            for i in 0..starts.len() {
                let p = StitchParams::new(&g, i).unwrap();
                emu::stitch::accumulate(
                    &p.dims(max_blocks),
                    p,
                    &logits,
                    &weights,
                    &mut acc,
                    &mut norm,
                )
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            common::assert_bits(
                &format!("acc {what}"),
                ("harness", written(&acc, voxels * k)),
                ("cpu", &want_acc),
            );
            common::assert_bits(
                &format!("norm {what}"),
                ("harness", written(&norm, voxels)),
                ("cpu", &want_norm),
            );
            let p = StitchDivideParams::new(voxels * k, voxels, k).unwrap();
            emu::stitch::divide(&p.dims(max_blocks), p, &norm[..voxels], &mut acc).unwrap();
            common::assert_bits(
                &format!("average {what}"),
                ("harness", written(&acc, voxels * k)),
                ("cpu", &want_avg),
            );
        }
    }
}

#[test]
fn params_refuse_what_the_kernels_cannot_index() {
    let huge = StitchGeometry {
        volume: [2048, 2048, 1024],
        patch: [2, 2, 2],
        channels: 1,
        starts: vec![[0, 0, 0]],
    };
    let err = StitchParams::new(&huge, 0).unwrap_err().to_string();
    assert!(
        err.contains("accumulate_windows") && err.contains("32-bit"),
        "{err}"
    );
    let err = StitchDivideParams::new(12, 5, 3).unwrap_err().to_string();
    assert!(err.contains("divide_by_weights"), "{err}");
    // The harness wrapper refuses an extent that leaves the volume.
    let g = geometry([4, 4, 4], [2, 2, 2], 1, &[[2, 2, 2]]);
    let mut p = StitchParams::new(&g, 0).unwrap();
    assert_eq!(p.extent, [2, 2, 2]);
    p.start = [3, 2, 2];
    let (mut acc, mut norm) = (vec![0.0; 64], vec![0.0; 64]);
    let err = emu::stitch::accumulate(&p.dims(1), p, &[0.0; 8], &[1.0; 8], &mut acc, &mut norm)
        .unwrap_err();
    assert!(err.contains("extent"), "{err}");
}
