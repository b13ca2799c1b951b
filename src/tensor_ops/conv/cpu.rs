//! CPU convolutions as tiled matrix products with bounded scratch memory.
//!
//! Every pass is a product whose rows are voxels. Forward: rows are output voxels, each
//! reading the input at the kernel's taps. Backward-data: the input voxels are split into
//! stride phases (voxels congruent modulo the stride are reached by the same taps), and
//! each phase is a forward-like product reading dy. Backward-weight: the forward's lowered
//! input, transposed, times dy, reduced over voxels. A tile of rows and a block of taps is
//! gathered into a small scratch matrix (NDHWC keeps each tap's channels contiguous), never
//! a whole-volume im2col. rayon splits the tiles; backward-weight sums per-thread partials.
use super::geometry::ConvGeometry;
use super::product::{copy_row, Gemm, TileProduct};
#[cfg(target_arch = "x86_64")]
use super::product::{Avx2, Avx512, Avx512Bf16};
use super::Conv3dKernel;
use crate::backend::cpu::CpuBackend;
use crate::backend::cpu::PAR_CHUNK;
use crate::backend::cuda::ConvPrecision;
use crate::backend::Element;
use crate::error::{check_len, Result};
use rayon::prelude::*;
use std::any::TypeId;
use std::borrow::Cow;
use std::ops::Range;

/// Target width (taps x channels) of one gathered block: a tile's block stays in L2 while
/// every column panel of B streams past it.
const BLOCK_K: usize = 512;
/// Voxels per tile of forward and backward-data products.
const DATA_ROWS: usize = 96;
/// Voxels per tile of the weight gradient: the reduction length of each partial product,
/// long enough that reading and writing the partial gradient per tile stays cheap.
const WEIGHT_ROWS: usize = 256;

/// How the rows of a lowered product read their source tensor `[n, src, cs]`: row
/// `(b, g)` of the grid `[n, grid]` reads, at tap `t`, source voxel `g * step + offset + t`
/// (per axis), or zeros where that lies outside the source.
#[derive(Clone, Copy, Debug)]
struct Lowering {
    n: usize,
    grid: [usize; 3],
    src: [usize; 3],
    cs: usize,
    step: [usize; 3],
    offset: [isize; 3],
    taps: [usize; 3],
}

impl Lowering {
    /// The convolution's output voxels reading its input.
    fn forward(g: &ConvGeometry) -> Self {
        Self {
            n: g.n,
            grid: g.output,
            src: g.input,
            cs: g.cin,
            step: g.stride,
            offset: g.pad_before.map(|p| -(p as isize)),
            taps: g.kernel,
        }
    }

    /// Backward-data's input voxels congruent to `phase` modulo the stride, reading dy.
    /// Input voxel `i = g * s + r` is reached by kernel index `k` from output `(i + p - k) / s`
    /// when `k = r + p (mod s)`; with those taps ordered by increasing output coordinate
    /// the source is `g + offset + t`. Returns the kernel index of each tap, per axis.
    fn backward_data_phase(g: &ConvGeometry, phase: [usize; 3]) -> (Self, [Vec<usize>; 3]) {
        let mut low = Self {
            n: g.n,
            grid: [0; 3],
            src: g.output,
            cs: g.cout,
            step: [1; 3],
            offset: [0; 3],
            taps: [0; 3],
        };
        let mut kernel_index: [Vec<usize>; 3] = Default::default();
        for a in 0..3 {
            let (r, s, k, p) = (phase[a], g.stride[a], g.kernel[a], g.pad_before[a]);
            low.grid[a] = if r < g.input[a] {
                (g.input[a] - r).div_ceil(s)
            } else {
                0
            };
            let first = (r + p) % s;
            let taps = if first < k {
                (k - first).div_ceil(s)
            } else {
                0
            };
            low.taps[a] = taps;
            low.offset[a] = ((r + p) / s) as isize - taps as isize + 1;
            kernel_index[a] = (0..taps).map(|t| first + (taps - 1 - t) * s).collect();
        }
        (low, kernel_index)
    }

    fn rows(&self) -> usize {
        self.n * self.grid.iter().product::<usize>()
    }

    fn tap_count(&self) -> usize {
        self.taps.iter().product()
    }

    /// Each tap's (d, h, w) offset, tap-major in the order of the weight's rows.
    fn tap_offsets(&self) -> Vec<[isize; 3]> {
        let [td, th, tw] = self.taps;
        let mut out = Vec::with_capacity(self.tap_count());
        for d in 0..td {
            for h in 0..th {
                for w in 0..tw {
                    out.push([d as isize, h as isize, w as isize]);
                }
            }
        }
        out
    }
}

/// Walks the `(batch, d, h, w)` coordinates of consecutive rows of a grid.
struct GridCursor {
    grid: [usize; 3],
    at: [usize; 4],
}

impl GridCursor {
    fn new(grid: [usize; 3], row: usize) -> Self {
        let w = row % grid[2];
        let rest = row / grid[2];
        let h = rest % grid[1];
        let rest = rest / grid[1];
        Self {
            grid,
            at: [rest / grid[0], rest % grid[0], h, w],
        }
    }

    fn advance(&mut self) {
        self.at[3] += 1;
        if self.at[3] == self.grid[2] {
            self.at[3] = 0;
            self.at[2] += 1;
            if self.at[2] == self.grid[1] {
                self.at[2] = 0;
                self.at[1] += 1;
                if self.at[1] == self.grid[0] {
                    self.at[1] = 0;
                    self.at[0] += 1;
                }
            }
        }
    }
}

/// Splits `taps` taps of `cs` channels into contiguous blocks of about `BLOCK_K` columns.
fn tap_blocks(taps: usize, cs: usize) -> Vec<Range<usize>> {
    if taps == 0 {
        return Vec::new();
    }
    let blocks = (taps * cs).div_ceil(BLOCK_K).clamp(1, taps);
    let per = taps.div_ceil(blocks);
    (0..taps)
        .step_by(per)
        .map(|t| t..(t + per).min(taps))
        .collect()
}

/// Rows per tile: at most `max`, a multiple of `multiple`, and small enough that every
/// thread gets `per_thread` tiles or more.
fn tile_rows(rows: usize, max: usize, multiple: usize, per_thread: usize) -> usize {
    let per_task = rows.div_ceil(per_thread * rayon::current_num_threads());
    per_task
        .next_multiple_of(multiple)
        .clamp(multiple, max.next_multiple_of(multiple))
}

/// One contiguous copy of a gathered row whose kernel window lies inside the source:
/// `len` values from `src` (relative to the window's first voxel) to column `col`.
#[derive(Clone, Copy, Debug)]
struct Run {
    src: usize,
    col: usize,
    len: usize,
}

/// Writes blocks of lowered rows: for each tap of a block, the `cs` source channels it
/// reads (zeros outside the source), side by side.
struct Gatherer {
    low: Lowering,
    /// Each tap's (d, h, w) offset from a row's window corner.
    offsets: Vec<[isize; 3]>,
    blocks: Vec<Range<usize>>,
    /// Per block, the copies of a row whose whole window is inside the source: taps
    /// adjacent in the source (along w) and in the block merge into one copy.
    runs: Vec<Vec<Run>>,
}

impl Gatherer {
    fn new(low: Lowering) -> Self {
        let offsets = low.tap_offsets();
        let blocks = tap_blocks(low.tap_count(), low.cs);
        let [_, sh, sw] = low.src;
        let runs = blocks
            .iter()
            .map(|blk| {
                let mut runs: Vec<Run> = Vec::new();
                for (j, t) in offsets[blk.clone()].iter().enumerate() {
                    let src = ((t[0] as usize * sh + t[1] as usize) * sw + t[2] as usize) * low.cs;
                    let col = j * low.cs;
                    match runs.last_mut() {
                        Some(r) if r.src + r.len == src && r.col + r.len == col => r.len += low.cs,
                        _ => runs.push(Run {
                            src,
                            col,
                            len: low.cs,
                        }),
                    }
                }
                runs
            })
            .collect();
        Self {
            low,
            offsets,
            blocks,
            runs,
        }
    }

    /// Columns of block `bi`.
    fn width(&self, bi: usize) -> usize {
        self.blocks[bi].len() * self.low.cs
    }

    /// Columns of every block, in order: the rows of B that each block multiplies.
    fn widths(&self) -> Vec<usize> {
        (0..self.blocks.len()).map(|bi| self.width(bi)).collect()
    }

    /// Where lowered rows `[row0, row0 + m)` already lie in the source, contiguous: a
    /// single tap at offset 0 over a grid equal to the source (a 1x1x1 convolution, or a
    /// stride phase of a transposed convolution whose kernel equals its stride).
    fn in_source(&self, row0: usize, m: usize) -> Option<Range<usize>> {
        let low = &self.low;
        let identity =
            low.taps == [1; 3] && low.offset == [0; 3] && low.step == [1; 3] && low.grid == low.src;
        (identity && row0 + m <= low.rows()).then(|| row0 * low.cs..(row0 + m) * low.cs)
    }

    /// Columns of block `bi` as an engine reads them: its width padded to the K group.
    fn padded_width<E: Element, P: TileProduct<E>>(&self, bi: usize) -> usize {
        self.width(bi).next_multiple_of(P::K_GROUP)
    }

    /// Writes lowered rows `[row0, row0 + m)` of block `bi` of `src` (already an engine's
    /// operands) into `dst` (row stride `ld`), with zeros in the `padded - width` columns
    /// that pad it to the engine's K group. Columns past those are left as they are.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn gather<O: Copy + Default>(
        &self,
        src: &[O],
        row0: usize,
        m: usize,
        bi: usize,
        padded: usize,
        dst: &mut [O],
        ld: usize,
    ) {
        let low = &self.low;
        let cs = low.cs;
        let [sd, sh, sw] = low.src;
        let width = self.width(bi);
        let taps = self.blocks[bi].clone();
        let runs = &self.runs[bi];
        let mut cur = GridCursor::new(low.grid, row0);
        for i in 0..m {
            let [b, d, h, w] = cur.at;
            let base = [
                (d * low.step[0]) as isize + low.offset[0],
                (h * low.step[1]) as isize + low.offset[1],
                (w * low.step[2]) as isize + low.offset[2],
            ];
            let row = &mut dst[i * ld..i * ld + padded];
            let inside =
                (0..3).all(|a| base[a] >= 0 && base[a] as usize + low.taps[a] <= low.src[a]);
            if inside {
                let corner = (((b * sd + base[0] as usize) * sh + base[1] as usize) * sw
                    + base[2] as usize)
                    * cs;
                for r in runs {
                    let from = corner + r.src;
                    copy_row(&mut row[r.col..r.col + r.len], &src[from..from + r.len]);
                }
            } else {
                for (t, out) in self.offsets[taps.clone()]
                    .iter()
                    .zip(row[..width].chunks_exact_mut(cs))
                {
                    let (z, y, x) = (base[0] + t[0], base[1] + t[1], base[2] + t[2]);
                    // A negative coordinate wraps to a huge usize and fails the bound too.
                    if (z as usize) < sd && (y as usize) < sh && (x as usize) < sw {
                        let at = (((b * sd + z as usize) * sh + y as usize) * sw + x as usize) * cs;
                        copy_row(out, &src[at..at + cs]);
                    } else {
                        out.fill(O::default());
                    }
                }
            }
            row[width..].fill(O::default());
            cur.advance();
        }
    }
}

/// A B operand `[k, n]` as an engine reads it: split into column panels, each stored
/// contiguously, columns padded with zeros to the engine's multiple. Within a panel, the rows
/// of each block (the gatherer's tap blocks) are padded with zeros to the engine's K group,
/// and each group of rows is stored `[width][K_GROUP]`.
struct PackedB<O> {
    data: Vec<O>,
    /// Rows of all blocks, each padded to the K group.
    k_pad: usize,
    n_pad: usize,
    /// (first padded row, padded rows) of each block.
    blocks: Vec<(usize, usize)>,
    /// (first column, width) of each panel.
    panels: Vec<(usize, usize)>,
}

impl<O: Copy + Default> PackedB<O> {
    /// Packs the rows that `fill_row(r, row)` writes (`n` values each), `block_rows[i]` rows
    /// to block `i`, in order.
    fn new<E: Element, P: TileProduct<E, Operand = O>>(
        p: P,
        block_rows: &[usize],
        n: usize,
        mut fill_row: impl FnMut(usize, &mut [E]),
    ) -> Self {
        let group = P::K_GROUP;
        let n_pad = n.next_multiple_of(P::COLS);
        let mut panels = Vec::new();
        let mut col = 0;
        while col < n_pad {
            let width = P::PANEL.min(n_pad - col);
            panels.push((col, width));
            col += width;
        }
        let mut blocks = Vec::with_capacity(block_rows.len());
        let mut k_pad = 0;
        for &rows in block_rows {
            let padded = rows.next_multiple_of(group);
            blocks.push((k_pad, padded));
            k_pad += padded;
        }
        let mut data = vec![O::default(); k_pad * n_pad];
        let mut row = vec![E::zero(); n_pad];
        let mut operands = vec![O::default(); n_pad];
        let mut r = 0;
        for (&(first, _), &rows) in blocks.iter().zip(block_rows) {
            for at in first..first + rows {
                fill_row(r, &mut row[..n]);
                r += 1;
                p.load_row(&mut operands, &row);
                let (q, lane) = (at / group, at % group);
                for &(col, width) in &panels {
                    let base = k_pad * col + q * width * group + lane;
                    for (j, v) in operands[col..col + width].iter().enumerate() {
                        data[base + j * group] = *v;
                    }
                }
            }
        }
        Self {
            data,
            k_pad,
            n_pad,
            blocks,
            panels,
        }
    }

    /// Block `bi` of the panel starting at column `col` with `width` columns; its groups of
    /// rows lie `width * K_GROUP` apart.
    fn panel_block(&self, col: usize, width: usize, bi: usize) -> &[O] {
        let (first, rows) = self.blocks[bi];
        let start = self.k_pad * col + first * width;
        &self.data[start..start + rows * width]
    }
}

/// `src` as `p`'s operands: in place where they are its elements, else converted once per
/// call (a lowered tile reads each value once per tap, so converting there would repeat it).
fn operands<'a, E: Element, P: TileProduct<E>>(p: P, src: &'a [E]) -> Cow<'a, [P::Operand]> {
    if TypeId::of::<E>() == TypeId::of::<P::Operand>() {
        // SAFETY: the cast is between a type and itself.
        return Cow::Borrowed(unsafe { &*(src as *const [E] as *const [P::Operand]) });
    }
    let mut out = vec![P::Operand::default(); src.len()];
    out.par_chunks_mut(PAR_CHUNK)
        .zip(src.par_chunks(PAR_CHUNK))
        .for_each(|(o, s)| p.within(|| p.load_row(o, s)));
    Cow::Owned(out)
}

/// An output buffer that parallel tasks write at disjoint voxels.
#[derive(Clone, Copy)]
struct SharedOut<E> {
    ptr: *mut E,
    len: usize,
}

// SAFETY: the pointer comes from a `&mut [E]` that outlives the parallel loop, and tasks
// only write ranges no other task touches (see `range`).
unsafe impl<E: Send> Send for SharedOut<E> {}
unsafe impl<E: Send> Sync for SharedOut<E> {}

impl<E> SharedOut<E> {
    fn new(buf: &mut [E]) -> Self {
        Self {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// SAFETY: no other access to `[start, start + len)` may happen while the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, len: usize) -> &mut [E] {
        assert!(start + len <= self.len, "output range out of bounds");
        std::slice::from_raw_parts_mut(self.ptr.add(start), len)
    }
}

/// One lowered product whose result rows are voxels of the output: row `(b, g)` goes to
/// voxel `(b, g * out_step + out_phase)` of an output of spatial size `out_dims`. `O` is the
/// engine's operand type.
struct DataJob<'a, O> {
    rows: Gatherer,
    b: PackedB<O>,
    src: &'a [O],
    out_dims: [usize; 3],
    out_step: [usize; 3],
    out_phase: [usize; 3],
}

/// One tile of a data product: gather, multiply block by block, write rows (+ bias) out.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn data_tile<E: Element, P: TileProduct<E>>(
    p: P,
    job: &DataJob<P::Operand>,
    row0: usize,
    m: usize,
    a: &mut [P::Operand],
    c: &mut [E],
    n_out: usize,
    bias: Option<&[E]>,
    out: SharedOut<E>,
) {
    let m_pad = m.next_multiple_of(P::ROWS);
    let n_pad = job.b.n_pad;
    if job.rows.blocks.is_empty() {
        c[..m * n_pad].fill(E::zero());
    }
    for bi in 0..job.rows.blocks.len() {
        let kc = job.rows.padded_width::<E, P>(bi);
        let unpadded = kc == job.rows.width(bi);
        let a: &[P::Operand] = match job.rows.in_source(row0, m_pad).filter(|_| unpadded) {
            Some(range) => &job.src[range],
            None => {
                // Rows m..m_pad keep stale values: their results are never written out.
                job.rows.gather(job.src, row0, m, bi, kc, a, kc);
                &a[..m_pad * kc]
            }
        };
        for &(col, width) in &job.b.panels {
            let b = job.b.panel_block(col, width, bi);
            p.mul(
                m_pad,
                width,
                kc,
                a,
                kc,
                1,
                b,
                width * P::K_GROUP,
                &mut c[col..],
                n_pad,
                bi > 0,
            );
        }
    }
    let [od, oh, ow] = job.out_dims;
    let mut cur = GridCursor::new(job.rows.low.grid, row0);
    for i in 0..m {
        let [b, d, h, w] = cur.at;
        let z = d * job.out_step[0] + job.out_phase[0];
        let y = h * job.out_step[1] + job.out_phase[1];
        let x = w * job.out_step[2] + job.out_phase[2];
        let voxel = ((b * od + z) * oh + y) * ow + x;
        // SAFETY: distinct (job, row) pairs map to distinct voxels, and each row belongs to
        // exactly one task.
        let dst = unsafe { out.range(voxel * n_out, n_out) };
        let src = &c[i * n_pad..i * n_pad + n_out];
        match bias {
            Some(bias) => {
                for ((d, s), b) in dst.iter_mut().zip(src).zip(bias) {
                    *d = *s + *b;
                }
            }
            None => copy_row(dst, src),
        }
        cur.advance();
    }
}

/// Runs every tile of every job in parallel, writing `out` (`n_out` values per voxel).
/// Tasks are ordered by tile, then job, so that the stride phases of one region (which
/// interleave in the output and read the same source rows) run together.
fn run_data<E: Element, P: TileProduct<E>>(
    p: P,
    jobs: &[DataJob<P::Operand>],
    n_out: usize,
    bias: Option<&[E]>,
    out: &mut [E],
) {
    let most = jobs.iter().map(|j| j.rows.low.rows()).max().unwrap_or(0);
    if most == 0 {
        return;
    }
    let tile = tile_rows(most * jobs.len(), DATA_ROWS, P::ROWS, 4);
    let tasks: Vec<(usize, usize, usize)> = (0..most)
        .step_by(tile)
        .flat_map(|r0| {
            jobs.iter().enumerate().filter_map(move |(ji, job)| {
                let rows = job.rows.low.rows();
                (r0 < rows).then(|| (ji, r0, tile.min(rows - r0)))
            })
        })
        .collect();
    let kc_max = jobs
        .iter()
        .flat_map(|j| (0..j.rows.blocks.len()).map(|bi| j.rows.padded_width::<E, P>(bi)))
        .max()
        .unwrap_or(0);
    let n_pad = jobs.iter().map(|j| j.b.n_pad).max().unwrap_or(0);
    let tile_pad = tile.next_multiple_of(P::ROWS);
    let shared = SharedOut::new(out);
    tasks.par_iter().for_each_init(
        || {
            (
                vec![P::Operand::default(); tile_pad * kc_max],
                vec![E::zero(); tile_pad * n_pad],
            )
        },
        |(a, c), &(ji, r0, m)| {
            p.within(
                #[inline(always)]
                || data_tile(p, &jobs[ji], r0, m, a, c, n_out, bias, shared),
            )
        },
    );
}

fn forward<E: Element, P: TileProduct<E>>(
    p: P,
    x: &[E],
    w: &[E],
    bias: Option<&[E]>,
    g: &ConvGeometry,
    y: &mut [E],
) {
    let rows = Gatherer::new(Lowering::forward(g));
    let n = g.cout;
    let b = PackedB::new(p, &rows.widths(), n, |r, row| {
        row.copy_from_slice(&w[r * n..(r + 1) * n])
    });
    let x = operands(p, x);
    let job = DataJob {
        rows,
        b,
        src: &x,
        out_dims: g.output,
        out_step: [1; 3],
        out_phase: [0; 3],
    };
    run_data(p, &[job], n, bias, y);
}

fn backward_data<E: Element, P: TileProduct<E>>(
    p: P,
    dy: &[E],
    w: &[E],
    bias: Option<&[E]>,
    g: &ConvGeometry,
    dx: &mut [E],
) {
    let (cin, cout) = (g.cin, g.cout);
    let [_, kh, kw] = g.kernel;
    let dy = operands(p, dy);
    let mut jobs = Vec::new();
    for rd in 0..g.stride[0] {
        for rh in 0..g.stride[1] {
            for rw in 0..g.stride[2] {
                let phase = [rd, rh, rw];
                let (low, kidx) = Lowering::backward_data_phase(g, phase);
                if low.rows() == 0 {
                    continue;
                }
                // The kernel index of each tap, in the lowering's tap order.
                let mut tap_kernel = Vec::with_capacity(low.tap_count());
                for &a in &kidx[0] {
                    for &b in &kidx[1] {
                        for &c in &kidx[2] {
                            tap_kernel.push((a * kh + b) * kw + c);
                        }
                    }
                }
                let rows = Gatherer::new(low);
                // B row (tap, co), column ci = w[kernel index of tap, ci, co].
                let b = PackedB::new(p, &rows.widths(), cin, |r, row| {
                    let (k, co) = (tap_kernel[r / cout], r % cout);
                    for (ci, v) in row.iter_mut().enumerate() {
                        *v = w[(k * cin + ci) * cout + co];
                    }
                });
                jobs.push(DataJob {
                    rows,
                    b,
                    src: &dy,
                    out_dims: g.input,
                    out_step: g.stride,
                    out_phase: phase,
                });
            }
        }
    }
    run_data(p, &jobs, cin, bias, dx);
}

/// The weight gradient as products of the lowered input (transposed) and dy, one per tile
/// of voxels and block of taps: `dw[block rows] += lowered(x)[tile, block]^T * dy[tile]`.
struct WeightPlan {
    rows: Gatherer,
    n: usize,
    n_pad: usize,
    /// Rows of each block's product, padded to the engine's row multiple (the padding rows
    /// collect values that are never read).
    padded: Vec<usize>,
    /// Voxels per tile.
    tile: usize,
    /// Whether dy rows are copied into the engine's layout (a padded width, K groups)
    /// rather than read in place.
    copy_dy: bool,
}

/// Scratch tiles of one task of the weight gradient, in the engine's operand type `O`.
struct WeightScratch<O> {
    /// The lowered tile transposed: K groups of voxels, each `[block rows][K_GROUP]`.
    a: Vec<O>,
    /// dy's rows in the engine's layout, where `copy_dy`.
    dy: Vec<O>,
    /// Where K groups pair voxels: the lowered tile as rows of voxels, ...
    rows: Vec<O>,
    /// ... and zeros, the missing second voxel of a tile of odd length.
    zeros: Vec<O>,
}

impl WeightPlan {
    /// A plan for `n` output channels whose tiles give each thread `per_thread` or more.
    fn new<E: Element, P: TileProduct<E>>(rows: Gatherer, n: usize, per_thread: usize) -> Self {
        assert!(P::K_GROUP <= 2, "weight gradients pair voxels at most");
        let padded = (0..rows.blocks.len())
            .map(|bi| rows.width(bi).next_multiple_of(P::ROWS))
            .collect();
        Self {
            tile: tile_rows(rows.low.rows(), WEIGHT_ROWS, 1, per_thread),
            rows,
            n,
            n_pad: n.next_multiple_of(P::COLS),
            padded,
            copy_dy: !n.is_multiple_of(P::COLS) || P::K_GROUP > 1,
        }
    }

    fn scratch<E: Element, P: TileProduct<E>>(&self) -> WeightScratch<P::Operand> {
        let kc_max = self.padded.iter().copied().max().unwrap_or(0);
        let voxels = self.tile.next_multiple_of(P::K_GROUP);
        let pairs = P::K_GROUP > 1;
        let zeros = |len: usize| vec![P::Operand::default(); len];
        WeightScratch {
            a: zeros(voxels * kc_max),
            dy: zeros(if self.copy_dy { voxels * self.n_pad } else { 0 }),
            rows: zeros(if pairs { self.tile * kc_max } else { 0 }),
            zeros: zeros(if pairs { kc_max.max(self.n) } else { 0 }),
        }
    }

    /// Adds the product of voxels `[r0, r0 + m)` at block `bi` to `acc` (row stride n_pad);
    /// `x` and `dy` are already the engine's operands.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn accumulate<E: Element, P: TileProduct<E>>(
        &self,
        p: P,
        x: &[P::Operand],
        dy: &[P::Operand],
        r0: usize,
        m: usize,
        bi: usize,
        s: &mut WeightScratch<P::Operand>,
        acc: &mut [E],
    ) {
        let group = P::K_GROUP;
        let (n, n_pad, kcp) = (self.n, self.n_pad, self.padded[bi]);
        let len = m.next_multiple_of(group);
        let dy_rows = &dy[r0 * n..(r0 + m) * n];
        // Voxel v of the tile is group v / G, lane v % G; padding voxels are zeros, padding
        // columns stay zero from the allocation.
        let voxel = |rows, v, width| voxel_or_zeros(rows, &s.zeros, v, m, width);
        let (b, b_ps) = match (self.copy_dy, group) {
            (false, _) => (dy_rows, n),
            (true, 1) => {
                for (dst, src) in s.dy.chunks_exact_mut(n_pad).zip(dy_rows.chunks_exact(n)) {
                    copy_row(&mut dst[..n], src);
                }
                (&s.dy[..m * n_pad], n_pad)
            }
            (true, _) => {
                for (q, dst) in s.dy[..len * n_pad].chunks_exact_mut(2 * n_pad).enumerate() {
                    let first = voxel(dy_rows, 2 * q, n);
                    let second = voxel(dy_rows, 2 * q + 1, n);
                    p.pair_rows(&mut dst[..2 * n], first, second);
                }
                (&s.dy[..len * n_pad], 2 * n_pad)
            }
        };
        let width = self.rows.padded_width::<E, P>(bi);
        if group == 1 {
            self.rows.gather(x, r0, m, bi, width, &mut s.a, kcp);
        } else {
            self.rows.gather(x, r0, m, bi, width, &mut s.rows, kcp);
            for (q, dst) in s.a[..len * kcp].chunks_exact_mut(2 * kcp).enumerate() {
                let first = voxel(&s.rows, 2 * q, kcp);
                let second = voxel(&s.rows, 2 * q + 1, kcp);
                p.pair_rows(dst, first, second);
            }
        }
        p.mul(
            kcp,
            n_pad,
            len,
            &s.a[..len * kcp],
            1,
            kcp * group,
            b,
            b_ps,
            acc,
            n_pad,
            true,
        );
    }
}

/// Row `v` (of `width` values) of a tile of `m` rows, or zeros past its end.
fn voxel_or_zeros<'a, O>(
    rows: &'a [O],
    zeros: &'a [O],
    v: usize,
    m: usize,
    width: usize,
) -> &'a [O] {
    if v < m {
        &rows[v * width..(v + 1) * width]
    } else {
        &zeros[..width]
    }
}

fn backward_weight<E: Element, P: TileProduct<E>>(
    p: P,
    x: &[E],
    dy: &[E],
    g: &ConvGeometry,
    dw: &mut [E],
) {
    let rows = Gatherer::new(Lowering::forward(g));
    let (x, dy) = (operands(p, x), operands(p, dy));
    // With enough tap blocks, tasks own blocks of dw and no partial sums are needed;
    // otherwise tasks take tiles of voxels and each thread keeps a partial dw.
    if rows.blocks.len() >= 4 * rayon::current_num_threads() {
        let plan = WeightPlan::new::<E, P>(rows, g.cout, 1);
        weight_by_blocks(p, &plan, &x, &dy, g.cin, dw);
    } else {
        let plan = WeightPlan::new::<E, P>(rows, g.cout, 2);
        weight_by_tiles(p, &plan, &x, &dy, g.cin, dw);
    }
}

/// One task per tap block, each summing over every voxel into its own rows of `dw`.
fn weight_by_blocks<E: Element, P: TileProduct<E>>(
    p: P,
    plan: &WeightPlan,
    x: &[P::Operand],
    dy: &[P::Operand],
    cin: usize,
    dw: &mut [E],
) {
    let (n, n_pad) = (plan.n, plan.n_pad);
    let total = plan.rows.low.rows();
    let shared = SharedOut::new(dw);
    (0..plan.rows.blocks.len()).into_par_iter().for_each(|bi| {
        let mut s = plan.scratch::<E, P>();
        let mut acc = vec![E::zero(); plan.padded[bi] * n_pad];
        p.within(
            #[inline(always)]
            || {
                for r0 in (0..total).step_by(plan.tile) {
                    let m = plan.tile.min(total - r0);
                    plan.accumulate(p, x, dy, r0, m, bi, &mut s, &mut acc);
                }
            },
        );
        let blk = &plan.rows.blocks[bi];
        // SAFETY: blocks are disjoint tap ranges, so their rows of dw are disjoint.
        let dst = unsafe { shared.range(blk.start * cin * n, blk.len() * cin * n) };
        for (out, row) in dst.chunks_exact_mut(n).zip(acc.chunks_exact(n_pad)) {
            out.copy_from_slice(&row[..n]);
        }
    });
}

/// Tiles of voxels in a fixed number of contiguous groups, one per thread; each group sums
/// its tiles in order into its own partial `dw` (all blocks, padded rows), and the partials
/// are added in group order at the end. The grouping depends only on the thread count, never
/// on which thread steals which tile, so the result is the same from run to run (training
/// resumes bit for bit).
fn weight_by_tiles<E: Element, P: TileProduct<E>>(
    p: P,
    plan: &WeightPlan,
    x: &[P::Operand],
    dy: &[P::Operand],
    cin: usize,
    dw: &mut [E],
) {
    let (n, n_pad) = (plan.n, plan.n_pad);
    let first_row: Vec<usize> = plan
        .padded
        .iter()
        .scan(0, |acc, &r| {
            *acc += r;
            Some(*acc - r)
        })
        .collect();
    let acc_rows: usize = plan.padded.iter().sum();
    let total = plan.rows.low.rows();
    let tiles = total.div_ceil(plan.tile);
    let groups = rayon::current_num_threads().clamp(1, tiles.max(1));
    let per_group = tiles.div_ceil(groups);
    let partials: Vec<Vec<E>> = (0..groups)
        .into_par_iter()
        .map(|g| {
            let mut acc = vec![E::zero(); acc_rows * n_pad];
            let mut s = plan.scratch::<E, P>();
            p.within(
                #[inline(always)]
                || {
                    for ti in g * per_group..((g + 1) * per_group).min(tiles) {
                        let r0 = ti * plan.tile;
                        let m = plan.tile.min(total - r0);
                        for (bi, &first) in first_row.iter().enumerate() {
                            plan.accumulate(p, x, dy, r0, m, bi, &mut s, &mut acc[first * n_pad..]);
                        }
                    }
                },
            );
            acc
        })
        .collect();
    // Each weight row (tap, ci) sums its row of every partial.
    let mut partial_row = Vec::new();
    for (bi, blk) in plan.rows.blocks.iter().enumerate() {
        partial_row.extend((0..blk.len()).map(|j| first_row[bi] + j * cin));
    }
    dw.par_chunks_mut(n).enumerate().for_each(|(k, out)| {
        let at = (partial_row[k / cin] + k % cin) * n_pad;
        out.fill(E::zero());
        for p in &partials {
            for (o, v) in out.iter_mut().zip(&p[at..at + n]) {
                *o = *o + *v;
            }
        }
    });
}

fn check_geometry<E>(
    op: &'static str,
    g: &ConvGeometry,
    input: (&str, &[E]),
    other: (&str, &[E], usize),
    bias: Option<&[E]>,
) -> Result<()> {
    g.validate(op)?;
    check_len(op, input.0, input.1.len(), g.n * g.input_voxels() * g.cin)?;
    check_len(op, other.0, other.1.len(), other.2)?;
    if let Some(b) = bias {
        check_len(op, "bias", b.len(), g.cout)?;
    }
    Ok(())
}

/// The engines faster than `Gemm`, each only constructed where the CPU has its instructions.
enum FastEngine {
    #[cfg(target_arch = "x86_64")]
    Avx2(Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(Avx512),
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16(Avx512Bf16),
}

/// The fastest engine for `E` at `precision`: bf16 products where asked and the CPU has
/// them, else, where `E` is f32, the f32 ones of AVX-512 or else of AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
fn fast_engine<E: Element>(precision: ConvPrecision) -> Option<FastEngine> {
    if TypeId::of::<E>() != TypeId::of::<f32>() {
        return None;
    }
    let bf16 = (precision == ConvPrecision::Bf16)
        .then(Avx512Bf16::detect)
        .flatten()
        .map(FastEngine::Avx512Bf16);
    bf16.or_else(|| Avx512::detect().map(FastEngine::Avx512))
        .or_else(|| Avx2::detect().map(FastEngine::Avx2))
}

#[cfg(not(target_arch = "x86_64"))]
fn fast_engine<E: Element>(_: ConvPrecision) -> Option<FastEngine> {
    None
}

/// What multiplies `E`'s convolutions at `precision` on this CPU, for the backend's name.
pub fn conv_engine_name<E: Element>(precision: ConvPrecision) -> &'static str {
    match fast_engine::<E>(precision) {
        #[cfg(target_arch = "x86_64")]
        Some(FastEngine::Avx2(_)) => "AVX2",
        #[cfg(target_arch = "x86_64")]
        Some(FastEngine::Avx512(_)) => "AVX-512",
        #[cfg(target_arch = "x86_64")]
        Some(FastEngine::Avx512Bf16(_)) => "AVX512-BF16",
        None => "gemm",
    }
}

/// Whether this CPU has the instructions of the bf16 convolution products.
pub fn bf16_products_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return Avx512Bf16::detect().is_some();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `$fast` with `$p` bound to `$backend`'s fast engine (which reads slices as f32), or
/// `$slow` with `$p` bound to `Gemm` where there is none.
macro_rules! on_engine {
    ($backend:expr, $p:ident => $fast:expr, $slow:expr) => {
        match fast_engine::<E>($backend.conv_precision()) {
            #[cfg(target_arch = "x86_64")]
            Some(FastEngine::Avx2($p)) => $fast,
            #[cfg(target_arch = "x86_64")]
            Some(FastEngine::Avx512($p)) => $fast,
            #[cfg(target_arch = "x86_64")]
            Some(FastEngine::Avx512Bf16($p)) => $fast,
            None => {
                let $p = Gemm;
                $slow
            }
        }
    };
}

/// `s` seen as f32; only called where `fast_engine::<E>()` established that E is f32.
#[cfg(target_arch = "x86_64")]
fn f32s<E: Element>(s: &[E]) -> &[f32] {
    bytemuck::cast_slice(s)
}

#[cfg(target_arch = "x86_64")]
fn f32s_mut<E: Element>(s: &mut [E]) -> &mut [f32] {
    bytemuck::cast_slice_mut(s)
}

impl<E: Element> Conv3dKernel for CpuBackend<E> {
    fn conv3d_forward(
        &self,
        x: &Vec<E>,
        w: &Vec<E>,
        bias: Option<&Vec<E>>,
        g: &ConvGeometry,
    ) -> Result<Vec<E>> {
        let wlen = g.kernel_volume() * g.cin * g.cout;
        let bias = bias.map(|b| b.as_slice());
        check_geometry("conv3d forward", g, ("x", x), ("w", w, wlen), bias)?;
        let mut y = vec![E::zero(); g.n * g.output_voxels() * g.cout];
        on_engine!(
            self,
            p => forward(p, f32s(x), f32s(w), bias.map(f32s), g, f32s_mut(&mut y)),
            forward(p, x, w, bias, g, &mut y)
        );
        Ok(y)
    }

    fn conv3d_backward_data(
        &self,
        dy: &Vec<E>,
        w: &Vec<E>,
        bias: Option<&Vec<E>>,
        g: &ConvGeometry,
    ) -> Result<Vec<E>> {
        let op = "conv3d backward_data";
        g.validate(op)?;
        check_len(op, "dy", dy.len(), g.n * g.output_voxels() * g.cout)?;
        check_len(op, "w", w.len(), g.kernel_volume() * g.cin * g.cout)?;
        let bias = bias.map(|b| b.as_slice());
        if let Some(b) = bias {
            check_len(op, "bias", b.len(), g.cin)?;
        }
        let mut dx = vec![E::zero(); g.n * g.input_voxels() * g.cin];
        on_engine!(
            self,
            p => backward_data(p, f32s(dy), f32s(w), bias.map(f32s), g, f32s_mut(&mut dx)),
            backward_data(p, dy, w, bias, g, &mut dx)
        );
        Ok(dx)
    }

    fn conv3d_backward_weight(&self, x: &Vec<E>, dy: &Vec<E>, g: &ConvGeometry) -> Result<Vec<E>> {
        let dylen = g.n * g.output_voxels() * g.cout;
        check_geometry(
            "conv3d backward_weight",
            g,
            ("x", x),
            ("dy", dy, dylen),
            None,
        )?;
        let mut dw = vec![E::zero(); g.kernel_volume() * g.cin * g.cout];
        on_engine!(
            self,
            p => backward_weight(p, f32s(x), f32s(dy), g, f32s_mut(&mut dw)),
            backward_weight(p, x, dy, g, &mut dw)
        );
        Ok(dw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_blocks_cover_all_taps_in_order() {
        for (taps, cs) in [(27, 32), (27, 256), (1, 4096), (8, 3), (343, 1)] {
            let blocks = tap_blocks(taps, cs);
            let flat: Vec<usize> = blocks.iter().flat_map(|b| b.clone()).collect();
            assert_eq!(flat, (0..taps).collect::<Vec<_>>(), "{taps} x {cs}");
            assert!(blocks.iter().all(|b| !b.is_empty()));
        }
        assert!(tap_blocks(0, 8).is_empty());
    }

    #[test]
    fn grid_cursor_walks_rows_in_order() {
        let grid = [2, 3, 4];
        let mut cur = GridCursor::new(grid, 5);
        for row in 5..48 {
            assert_eq!(cur.at, GridCursor::new(grid, row).at, "row {row}");
            let [b, d, h, w] = cur.at;
            assert_eq!(((b * 2 + d) * 3 + h) * 4 + w, row);
            cur.advance();
        }
    }

    /// Every input voxel belongs to exactly one phase, and each phase's taps reach it from
    /// the output voxels the forward pass maps it into.
    #[test]
    fn backward_data_phases_partition_the_input() {
        let g = ConvGeometry {
            n: 1,
            input: [7, 6, 5],
            cin: 1,
            output: [3, 3, 2],
            cout: 1,
            kernel: [3, 2, 4],
            stride: [2, 2, 3],
            pad_before: [0, 1, 2],
        };
        let mut seen = vec![0; 7 * 6 * 5];
        for rd in 0..2 {
            for rh in 0..2 {
                for rw in 0..3 {
                    let phase = [rd, rh, rw];
                    let (low, kidx) = Lowering::backward_data_phase(&g, phase);
                    for a in 0..3 {
                        for (t, &k) in kidx[a].iter().enumerate() {
                            // Source o = g + offset + t must satisfy o * s - p + k = g * s + r.
                            for gi in 0..low.grid[a] {
                                let o = gi as isize + low.offset[a] + t as isize;
                                let i = gi * g.stride[a] + phase[a];
                                assert_eq!(
                                    o * g.stride[a] as isize - g.pad_before[a] as isize
                                        + k as isize,
                                    i as isize
                                );
                            }
                        }
                    }
                    for gd in 0..low.grid[0] {
                        for gh in 0..low.grid[1] {
                            for gw in 0..low.grid[2] {
                                let (z, y, x) = (gd * 2 + rd, gh * 2 + rh, gw * 3 + rw);
                                seen[(z * 6 + y) * 5 + x] += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
    }

    /// Both ways of splitting the weight gradient give the direct sum, with several tap
    /// blocks, channel counts off the engines' multiples, and stride and padding.
    #[test]
    fn weight_gradient_by_blocks_and_by_tiles_agree_with_direct_sum() {
        let g = ConvGeometry {
            n: 2,
            input: [4, 5, 3],
            cin: 45,
            output: [2, 3, 2],
            cout: 21,
            kernel: [3, 3, 3],
            stride: [2, 2, 2],
            pad_before: [1, 1, 1],
        };
        let mut rng = crate::rng::Rng::new(9);
        let mut values =
            |n: usize| -> Vec<f64> { (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect() };
        let x = values(g.n * g.input_voxels() * g.cin);
        let dy = values(g.n * g.output_voxels() * g.cout);
        let mut want = vec![0.0; g.kernel_volume() * g.cin * g.cout];
        for b in 0..g.n {
            for o in 0..g.output_voxels() {
                let ov = [o / 6, o / 2 % 3, o % 2];
                for t in 0..27 {
                    let k = [t / 9, t / 3 % 3, t % 3];
                    let i: Vec<isize> = (0..3).map(|a| (ov[a] * 2 + k[a]) as isize - 1).collect();
                    if (0..3).any(|a| i[a] < 0 || i[a] as usize >= g.input[a]) {
                        continue;
                    }
                    let iv = ((b * 4 + i[0] as usize) * 5 + i[1] as usize) * 3 + i[2] as usize;
                    for ci in 0..g.cin {
                        for co in 0..g.cout {
                            want[(t * g.cin + ci) * g.cout + co] +=
                                x[iv * g.cin + ci] * dy[(b * 12 + o) * g.cout + co];
                        }
                    }
                }
            }
        }
        let rows = Gatherer::new(Lowering::forward(&g));
        assert!(rows.blocks.len() > 1);
        let mut by_blocks = vec![0.0; want.len()];
        let plan = WeightPlan::new::<f64, Gemm>(Gatherer::new(Lowering::forward(&g)), g.cout, 1);
        weight_by_blocks(Gemm, &plan, &x, &dy, g.cin, &mut by_blocks);
        let mut by_tiles = vec![0.0; want.len()];
        let plan = WeightPlan::new::<f64, Gemm>(rows, g.cout, 2);
        weight_by_tiles(Gemm, &plan, &x, &dy, g.cin, &mut by_tiles);
        for (i, w) in want.iter().enumerate() {
            assert!(
                (by_blocks[i] - w).abs() < 1e-12,
                "by blocks {i}: {} vs {w}",
                by_blocks[i]
            );
            assert!(
                (by_tiles[i] - w).abs() < 1e-12,
                "by tiles {i}: {} vs {w}",
                by_tiles[i]
            );
        }
    }

    /// Runs every pass through `fast` and through the generic engine (what f64 uses) on the
    /// operands as `fast` rounds them (`round`): odd channel counts and block widths, several
    /// tap blocks (both weight splits), strides, an odd voxel count and a 1x1x1 convolution.
    #[cfg(target_arch = "x86_64")]
    fn check_fast_engine<P: TileProduct<f32>>(fast: P, round: fn(f32) -> f32) {
        let geometry = |n, input, cin, output, cout, kernel, stride, pad_before| ConvGeometry {
            n,
            input,
            cin,
            output,
            cout,
            kernel,
            stride,
            pad_before,
        };
        for g in [
            geometry(
                2,
                [5, 6, 7],
                19,
                [3, 3, 4],
                37,
                [3, 2, 3],
                [2, 2, 2],
                [1, 0, 1],
            ),
            geometry(
                1,
                [4, 3, 5],
                45,
                [4, 3, 5],
                48,
                [3, 3, 3],
                [1, 1, 1],
                [1, 1, 1],
            ),
            geometry(
                1,
                [3, 3, 3],
                5,
                [3, 3, 3],
                16,
                [3, 3, 3],
                [1, 1, 1],
                [1, 1, 1],
            ),
            geometry(
                1,
                [3, 4, 5],
                7,
                [3, 4, 5],
                16,
                [1, 1, 1],
                [1, 1, 1],
                [0, 0, 0],
            ),
        ] {
            let mut rng = crate::rng::Rng::new(7);
            let mut values = |n: usize| -> Vec<f32> {
                (0..n)
                    .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
                    .collect()
            };
            let x = values(g.n * g.input_voxels() * g.cin);
            let w = values(g.kernel_volume() * g.cin * g.cout);
            let dy = values(g.n * g.output_voxels() * g.cout);
            let bias = values(g.cout);
            let rounded = |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| round(x)).collect() };
            let (rx, rw, rdy) = (rounded(&x), rounded(&w), rounded(&dy));
            let close = |a: &[f32], b: &[f32], what: &str| {
                assert_eq!(a.len(), b.len());
                for (i, (u, v)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                        "{what} {i}: {u} vs {v} ({g:?})"
                    );
                }
            };
            let mut y = (vec![0.0; dy.len()], vec![0.0; dy.len()]);
            forward(fast, &x, &w, Some(&bias), &g, &mut y.0);
            forward(Gemm, &rx, &rw, Some(&bias), &g, &mut y.1);
            close(&y.0, &y.1, "forward");
            let mut dx = (vec![0.0; x.len()], vec![0.0; x.len()]);
            backward_data(fast, &dy, &w, None, &g, &mut dx.0);
            backward_data(Gemm, &rdy, &rw, None, &g, &mut dx.1);
            close(&dx.0, &dx.1, "backward_data");
            let mut want = vec![0.0; w.len()];
            backward_weight(Gemm, &rx, &rdy, &g, &mut want);
            let rows = || Gatherer::new(Lowering::forward(&g));
            let mut dw = vec![0.0; w.len()];
            let (ox, ody) = (operands(fast, &x), operands(fast, &dy));
            let plan = WeightPlan::new::<f32, P>(rows(), g.cout, 1);
            weight_by_blocks(fast, &plan, &ox, &ody, g.cin, &mut dw);
            close(&dw, &want, "backward_weight by blocks");
            let plan = WeightPlan::new::<f32, P>(rows(), g.cout, 2);
            weight_by_tiles(fast, &plan, &ox, &ody, g.cin, &mut dw);
            close(&dw, &want, "backward_weight by tiles");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_gemm_engines_agree_where_available() {
        match Avx2::detect() {
            Some(p) => check_fast_engine(p, |x| x),
            None => eprintln!("no AVX2 + FMA on this CPU: that f32 fast path is not exercised"),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_and_gemm_engines_agree_where_available() {
        match Avx512::detect() {
            Some(p) => check_fast_engine(p, |x| x),
            None => eprintln!("no AVX-512 on this CPU: that f32 fast path is not exercised"),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_bf16_engine_agrees_with_gemm_on_rounded_operands_where_available() {
        match Avx512Bf16::detect() {
            Some(p) => check_fast_engine(p, |x| half::bf16::from_f32(x).to_f32()),
            None => eprintln!("no AVX512-BF16 on this CPU: the bf16 fast path is not exercised"),
        }
    }
}
