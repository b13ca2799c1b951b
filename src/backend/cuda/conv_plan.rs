//! Launch plans for the convolution kernels (kernels/conv3d.cu on the CUDA cores,
//! kernels/conv3d_pipe.cu on the tensor cores): which kernel runs a pass, its grid, how its
//! reduction is split and, on the tensor cores, how its operands are packed. Pure
//! functions, shared by the device launcher (`conv.rs`) and the harness tests, so that the
//! emulated runs exercise exactly the device's plans.
//!
//! - Precision: `F32` runs the CUDA-core kernels; `Tf32` and `Bf16` always run the
//!   tensor-core kernels: both operands are first packed (rounded to tf32 or bf16, channels
//!   padded with zeros to whole 16-byte chunks: a multiple of 4 or 8, [`ConvPack`]), then a
//!   pipelined kernel reads the packed buffers.
//! - Tiles: f32 uses 64 x 32 tiles, 64 x 8 when the result has at most 8 columns, and a
//!   K step of 4 instead of 16 when the reduction has at most 4 (tap, channel) pairs; the
//!   tensor cores 128 x 32 up to 32 columns, 128 x 64 up to 64, else 128 x 128 unless
//!   128 x 64 wastes fewer columns, with a K step of 64 bytes per row (32 bf16, 16 tf32).
//! - Hopper (`ConvTarget::wgmma`): the tensor-core tiles run the sm_90a kernels of
//!   kernels/conv3d_wgmma.cu (two warpgroups, `wgmma` from 128-byte-swizzled shared tiles,
//!   a K step of 128 bytes per row) instead of mma.sync, except in backward weights at
//!   TF32 or into 32 columns (wgmma reads its mn-major tiles only in 16-bit types and
//!   blocks of 64). `ConvTarget::wgmma_tma` runs forward, backward data and bf16 backward
//!   weights on tiles that the tensor memory accelerator fills from one thread, box by box
//!   of voxels (`conv_tma`), and `ConvTarget::wgmma_m256` runs the 128 x 128 wgmma tiles
//!   as 256 x 128 over four warpgroups; on an H100 both by default where it measured them
//!   faster ([`Reach::Measured`], `ConvPlan::tma`). `ConvTarget::wgmma_tf32_weights` runs
//!   tf32 backward weights on those tiles too, over operands packed channel-major
//!   (k-major, the only layout wgmma reads tf32 in; off by default: its packs made an
//!   H200's training step slower, `ConvPlan::tma_grid_weights`). Passes into 64 columns
//!   take transposed tiles (`ConvTile::WgTmaCols`: the 64 result columns as wgmma's rows,
//!   256 voxels or (tap, channel) rows as its columns) where an H200 measured them faster
//!   (`ConvTarget::wgmma_cols_gather`, `wgmma_cols_weights`). `ConvTarget::wgmma_ws` runs
//!   the other 128 x 128 and 128 x 64 tiles warp-specialized (one or two warpgroups copy,
//!   two multiply): off by default, as an H100 measured it slower.
//! - Halo (`ConvTarget::halo`): a stride-1 pass whose plan is mma.sync runs the kernels
//!   of kernels/conv3d_halo.cu instead, which copy each tap row's input window once for the
//!   taps along w, from operands packed with zero borders: where k_w is 2 or 3, the borders
//!   add at most 20% rows, a tap's channels fill at least half of a step (or of a
//!   backward-weights block's rows) and, for forward and backward data, the grid fills the
//!   device; backward weights splits as the others. By default only into 32 columns, where
//!   an H100 measured them faster ([`Reach::Measured`]).
//! - Phase (`ConvTarget::phase`, off by default): backward data whose taps do not overlap
//!   (kernel equal to stride, no padding: a transposed convolution's 2x2x2 stride-2
//!   forward) runs kernels/conv3d_phase.cu, which keeps a block's dy rows in shared memory
//!   and runs every (tap, 64 columns) tile of its share from them.
//! - Persistent (`ConvTarget::wgmma_persist`, off by default): forward and backward data on
//!   the transposed tiles, unsplit, run as a block per SM looping over the tiles.
//! - L1 gathers (`ConvTarget::gather_l1`): the build variant of the tensor-core modules
//!   whose activation gathers go through L1, by default where a tap's channels fit one
//!   16-byte chunk and several taps read overlapping windows (a first layer).
//! - Backward data runs one launch over all stride phases (grid.z), each phase a GEMM over
//!   only the taps that reach its voxels.
//! - Splits: when the tiles alone give fewer blocks than the device wants, the reduction is
//!   cut into slices of whole K steps (grid.z) whose partial results a sum adds.
use super::conv_tma::{
    ConvTmaBoxes, ConvTmaGrid, ConvTmaTiling, TiledMap, TMA_GRID_BLOCK_ROWS, TMA_GRID_CHUNK_VOXELS,
    TMA_GRID_STEP_VOXELS, TMA_WEIGHT_BOX_VOXELS,
};
use super::params::{Conv3dParams, Conv3dShape, LaunchDims};
use crate::error::{Error, Result};
use crate::tensor_ops::conv::ConvGeometry;
use crate::tensor_ops::reduce::Axis1;
use std::fmt;
use std::str::FromStr;

/// Threads of every conv block (`VX_CONV_THREADS`).
pub const CONV_THREADS: u32 = 128;
/// Rows of the f32 tiles (`VX_CONV_SIMT_BM`).
pub const CONV_SIMT_BM: u32 = 64;
/// Columns and K step of the wide, narrow and shallow f32 tiles (`VX_CONV_WIDE_BN`, ...).
pub const CONV_WIDE_BN: u32 = 32;
pub const CONV_WIDE_BK: u32 = 16;
pub const CONV_NARROW_BN: u32 = 8;
pub const CONV_NARROW_BK: u32 = 16;
pub const CONV_SHALLOW_BN: u32 = 32;
pub const CONV_SHALLOW_BK: u32 = 4;
/// Rows of the tensor-core tiles (`VX_CONV_TC_BM`).
pub const CONV_TC_BM: u32 = 128;
/// Bytes of reduction per tile row and K step of the tensor-core kernels
/// (`VX_CONV_PIPE_STEP_BYTES`).
pub const CONV_PIPE_STEP_BYTES: u32 = 64;
/// Threads of the 128 x 32 tensor-core tile of backward weights
/// (`VX_CONV_PIPE_NARROW_THREADS`): two warps of 64 x 32.
pub const CONV_PIPE_NARROW_THREADS: u32 = 64;
/// Stages of the tensor-core kernels' shared-memory ring (`VX_CONV_PIPE_STAGES`).
pub const CONV_PIPE_STAGES: u32 = 4;
/// Threads of the Hopper wgmma tiles (`VX_CONV_WGMMA_THREADS`): two warpgroups.
pub const CONV_WGMMA_THREADS: u32 = 256;
/// Bytes of reduction per tile row and K step of the wgmma kernels
/// (`VX_CONV_WGMMA_STEP_BYTES`): one row of the 128-byte swizzle.
pub const CONV_WGMMA_STEP_BYTES: u32 = 128;
/// Stages of the wgmma kernels' ring for 128 and 64 columns (`VX_CONV_WGMMA_STAGES_N128`,
/// `VX_CONV_WGMMA_STAGES_N64`): one block per SM.
pub const CONV_WGMMA_STAGES_N128: u32 = 5;
pub const CONV_WGMMA_STAGES_N64: u32 = 6;
/// Stages of the wgmma kernels' ring for 32 columns (`VX_CONV_WGMMA_STAGES_N32`).
pub const CONV_WGMMA_STAGES_N32: u32 = 5;
/// Stages of the 64-column wgmma tile that runs two blocks per SM
/// (`VX_CONV_WGMMA_STAGES_N64_PAIR`).
pub const CONV_WGMMA_STAGES_N64_PAIR: u32 = 4;
/// Rows, columns, threads (four warpgroups) and ring stages of the 256 x 128 wgmma tile
/// (`VX_CONV_WGMMA_M256_BM`, `_BN`, `_THREADS`, `VX_CONV_WGMMA_STAGES_M256`): one block
/// per SM.
pub const CONV_WGMMA_M256_BM: u32 = 256;
pub const CONV_WGMMA_M256_BN: u32 = 128;
pub const CONV_WGMMA_M256_THREADS: u32 = 512;
pub const CONV_WGMMA_STAGES_M256: u32 = 4;
/// Threads of the warp-specialized wgmma tiles (`VX_CONV_WGMMA_WS128_THREADS`, `_WS64_`):
/// one (128 columns) or two (64) warpgroups that copy and the two that multiply.
pub const CONV_WGMMA_WS128_THREADS: u32 = 384;
pub const CONV_WGMMA_WS64_THREADS: u32 = 512;
/// Threads of the wgmma tiles that the tensor memory accelerator fills
/// (`VX_CONV_WGMMA_TMA_THREADS`, `_TMA256_`): the two (256 x 128: four) warpgroups that
/// multiply and one that copies.
pub const CONV_WGMMA_TMA_THREADS: u32 = 384;
pub const CONV_WGMMA_TMA256_THREADS: u32 = 640;
/// Dynamic shared memory the wgmma kernels reserve to start their ring at a 1024-byte
/// boundary (`VX_CONV_WGMMA_ALIGN`).
pub const CONV_WGMMA_ALIGN: u32 = 1024;
/// The widest kernel along w the halo kernels take (`VX_CONV_HALO_MAX_KW`).
pub const CONV_HALO_MAX_KW: u32 = 3;
/// Rows of a halo kernel's A tile (`VX_CONV_HALO_ROWS`): the block's rows and the taps
/// along w after them.
pub const CONV_HALO_ROWS: u32 = CONV_TC_BM + CONV_HALO_MAX_KW - 1;
/// Stages of the halo kernels' rings (`VX_CONV_HALO_STAGES_N128`, `_N64`, `_N32`): two
/// blocks per SM at 128 and 64 columns, three at 32.
pub const CONV_HALO_STAGES_N128: u32 = 3;
pub const CONV_HALO_STAGES_N64: u32 = 4;
pub const CONV_HALO_STAGES_N32: u32 = 4;
/// Rows of a backward-weights halo kernel's A tile past its step's rows
/// (`VX_CONV_HALO_WEIGHT_EXTRA_ROWS`), and stages of its ring
/// (`VX_CONV_HALO_WEIGHT_STAGES`).
pub const CONV_HALO_WEIGHT_EXTRA_ROWS: u32 = 8;
pub const CONV_HALO_WEIGHT_STAGES: u32 = 4;
/// The phase kernels (kernels/conv3d_phase.cu): the most reduction steps of
/// `CONV_PIPE_STEP_BYTES` per row a block keeps (`VX_CONV_PHASE_MAX_STEPS`: 128 bf16 or 64
/// tf32 channels), and the columns of one of its tiles (`VX_CONV_PHASE_BN`).
pub const CONV_PHASE_MAX_STEPS: u32 = 4;
pub const CONV_PHASE_BN: u32 = 64;
/// Blocks of a phase kernel an SM holds: its shared memory (A and two B buffers of
/// `CONV_PHASE_MAX_STEPS` steps, 64 KB) and its 138 registers (ptxas, sm_90) allow three.
const CONV_PHASE_BLOCKS_PER_SM: u32 = 3;
/// Dynamic shared memory of the wgmma probes (kernels/conv3d_wgmma.cu): the alignment
/// slack and one stage of the widest tile (128 + 128 rows of 128 bytes).
pub const WGMMA_PROBE_SHARED_BYTES: u32 =
    CONV_WGMMA_ALIGN + (CONV_TC_BM + 128) * CONV_WGMMA_STEP_BYTES;

/// Elements of one reduction step of the wgmma tiles at `precision` (the probes' K).
pub fn wgmma_probe_depth(precision: ConvPrecision) -> usize {
    CONV_WGMMA_STEP_BYTES as usize / precision.packed_bytes().unwrap_or(4)
}

/// How a wgmma tile lays a stage's operands out in shared memory (the probes').
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgmmaLayout {
    /// K-major rows of 128 bytes, the 128-byte swizzle (bf16, tf32).
    KMajor,
    /// MN-major: rows of 64 elements at one k, the 128-byte swizzle (bf16 only).
    MnMajor,
    /// K-major in two sub-tiles of 64-byte rows, the 64-byte swizzle (bf16;
    /// `ConvTile::WgTma128Sw64`, `WgTma64Sw64`).
    KMajorSw64,
}

/// Every wgmma probe (kernels/conv3d_wgmma.cu's `wgmma_probe_*`): precision, layout and
/// the tile widths the kernels use it at.
pub const WGMMA_PROBES: [(ConvPrecision, WgmmaLayout, &[usize]); 4] = [
    (ConvPrecision::Tf32, WgmmaLayout::KMajor, &[128, 64, 32]),
    (ConvPrecision::Bf16, WgmmaLayout::KMajor, &[128, 64, 32]),
    (ConvPrecision::Bf16, WgmmaLayout::MnMajor, &[128, 64]),
    (ConvPrecision::Bf16, WgmmaLayout::KMajorSw64, &[128, 64]),
];
/// Threads of a pack block.
const PACK_THREADS: u32 = 256;
/// Voxels and channels of a block of the channel-major pack (`VX_CHANNEL_MAJOR_VOXELS`,
/// `VX_CHANNEL_MAJOR_CHANNELS`), which writes every copy.
pub const CHANNEL_MAJOR_PACK_TILE: [u32; 2] = [64, 32];

/// Reductions of more than WGMMA_N32_MIN_STEPS and at most WGMMA_N32_MAX_STEPS wgmma steps
/// run their 32-column results on wgmma.
const WGMMA_N32_MIN_STEPS: u64 = 2;
const WGMMA_N32_MAX_STEPS: u64 = 4;
/// The wgmma pair runs full 64-column grids over more than this many wgmma steps.
const WGMMA_PAIR_MIN_STEPS: u64 = 2;
/// The tensor-memory-accelerator tiles take backward weights whose input channels pad to
/// whole blocks of this many rows (one tap each), and a pass whose boxes overhang its
/// output by at most this factor.
const TMA_WEIGHT_BLOCK_ROWS: u32 = 64;
const TMA_MAX_OVERHANG: f64 = 1.25;
/// Within [`Reach::Measured`], forward and backward data take the tensor memory
/// accelerator's 128-column tiles over reductions (taps x padded channels, the longest
/// phase's) of at least TMA_MIN_DEPTH_128, and its 64-column tiles over at least
/// TMA_MIN_DEPTH_64 (see `ConvPlan::tma`).
const TMA_MIN_DEPTH_128: u64 = 512;
const TMA_MIN_DEPTH_64: u64 = 2048;
/// Within [`Reach::Measured`], backward weights into 64 columns run on the transposed tile
/// over reductions of at least this many of dy's voxels (bf16; tf32 over channel-major
/// packs), see `cols_weights_measured`.
const COLS_WEIGHTS_MIN_VOXELS: u64 = 1024;
const COLS_WEIGHTS_MIN_VOXELS_TF32: u64 = 1 << 19;
/// Within [`Reach::Measured`], the 128 x 128 tensor-memory-accelerator tiles of forward and
/// backward data run as 256 x 128 where they number more than the SMs, and those of
/// backward weights where the pass takes at least TMA_M256_WEIGHT_MIN_MACS multiply-adds.
const TMA_M256_WEIGHT_MIN_MACS: u64 = 1 << 34;
/// tf32 backward weights over channel-major packs by the measured rule: at least this many
/// multiply-adds (`tf32_weights_measured`).
const TF32_WEIGHTS_MIN_MACS: u64 = 10_000_000_000;
/// A split covers at least this many K steps.
const MIN_STEPS_PER_SPLIT: u64 = 8;
/// Where `ConvTarget::split_waves` is on: what a block costs besides its K steps (filling
/// its ring, storing its tile), in K steps, and the most waves a split reduction may take.
const BLOCK_OVERHEAD_STEPS: u64 = 8;
const MAX_SPLIT_WAVES: u64 = 4;
const MAX_GRID_YZ: u64 = 65_535;

/// The environment variable that sets the initial [`ConvPrecision`] of a `Cuda` device.
pub const CONV_PRECISION_ENV: &str = "VOXSEG_CONV_PRECISION";

/// The arithmetic of the convolution kernels; in files "fp32" (or "f32"), "tf32", "bf16".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum ConvPrecision {
    /// f32 on the CUDA cores.
    #[default]
    #[serde(rename = "fp32", alias = "f32")]
    F32,
    /// Tensor cores, operands rounded to TF32 (10-bit mantissa), f32 accumulation.
    #[serde(rename = "tf32")]
    Tf32,
    /// Tensor cores, operands rounded to BF16 (7-bit mantissa), f32 accumulation.
    #[serde(rename = "bf16")]
    Bf16,
}

impl ConvPrecision {
    pub const ALL: [ConvPrecision; 3] = [Self::F32, Self::Tf32, Self::Bf16];

    /// Bytes of one packed operand element on the tensor cores (tf32 is kept in 32 bits);
    /// None for f32, which packs nothing.
    pub fn packed_bytes(self) -> Option<usize> {
        match self {
            Self::F32 => None,
            Self::Tf32 => Some(4),
            Self::Bf16 => Some(2),
        }
    }

    /// Channels are padded to a multiple of this (one 16-byte chunk); 1 for f32.
    pub fn channel_multiple(self) -> usize {
        self.packed_bytes().map_or(1, |b| 16 / b)
    }

    /// The name benchmarks report: "fp32", "tf32" or "bf16" (scripts/bench_reference.py).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "fp32",
            Self::Tf32 => "tf32",
            Self::Bf16 => "bf16",
        }
    }

    /// The precision `VOXSEG_CONV_PRECISION` names, None when it is unset.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var(CONV_PRECISION_ENV) {
            // `VOXSEG_CONV_PRECISION= voxseg ...` is how a shell unsets it for one command.
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => v.parse().map(Some).map_err(|e: Error| match e {
                Error::Config { msg, .. } => Error::config(CONV_PRECISION_ENV, msg),
                other => other,
            }),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(Error::config(CONV_PRECISION_ENV, e.to_string())),
        }
    }
}

impl fmt::Display for ConvPrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ConvPrecision {
    type Err = Error;
    /// "f32"/"fp32", "tf32" or "bf16", in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Self::F32),
            "tf32" => Ok(Self::Tf32),
            "bf16" => Ok(Self::Bf16),
            _ => Err(Error::config(
                "conv precision",
                format!("{s:?} is not one of fp32, tf32, bf16"),
            )),
        }
    }
}

/// One of the three passes of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPass {
    Forward,
    BackwardData,
    BackwardWeight,
}

/// The tile shape of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvTile {
    /// f32, 64 x 32, K step 16.
    Wide,
    /// f32, 64 x 8, K step 16: results of at most 8 columns.
    Narrow,
    /// f32, 64 x 32, K step 4: reductions of at most 4.
    Shallow,
    /// Tensor cores, 128 x 128.
    TcN128,
    /// Tensor cores, 128 x 64.
    TcN64,
    /// Tensor cores, 128 x 32.
    TcN32,
    /// Hopper wgmma, 128 x 128.
    WgN128,
    /// Hopper wgmma, 128 x 64.
    WgN64,
    /// Hopper wgmma, 128 x 32 (forward and backward data).
    WgN32,
    /// Hopper wgmma, 128 x 64, two blocks per SM with a shorter ring.
    WgN64Pair,
    /// Hopper wgmma, 256 x 128: four warpgroups.
    WgM256,
    /// Hopper wgmma, 128 x 128, warp-specialized: one warpgroup copies, two multiply.
    WgWs128,
    /// The same, 128 x 64.
    WgWs64,
    /// Hopper wgmma, 128 x 128, its stages filled by the tensor memory accelerator
    /// (forward, backward data; backward weights at bf16, and at tf32 over channel-major
    /// packs).
    WgTma128,
    /// The same, 128 x 64.
    WgTma64,
    /// The same, 256 x 128 (four warpgroups multiply).
    WgTma256,
    /// `WgTma64`'s 64-column blocks on the tensor memory accelerator, computed transposed
    /// (kernels/conv3d_wgmma.cu, `VxWgmmaTmaCols`): 256 rows by 64 columns of the result,
    /// each warpgroup's wgmmas m64n128 over 128 of the rows: backward weights (rows (tap,
    /// input channel); bf16, and tf32 over channel-major packs), and forward and backward
    /// data (rows a box of 256 voxels).
    WgTmaCols,
    /// `WgTmaCols` over boxes of 32 bf16 channels, two a step (forward and backward data, as
    /// `WgTma64Sw64`).
    WgTmaColsSw64,
    /// `WgTmaCols`' forward and backward data run persistently (`ConvPlan::persistent`):
    /// a block per SM loops over the tiles, its copies of the next tile overlapping the
    /// store of the last.
    WgTmaColsLoop,
    /// The same of `WgTmaColsSw64`.
    WgTmaColsSw64Loop,
    /// `WgTma128` over boxes of 32 bf16 channels, two a step (the 64-byte swizzle):
    /// forward and backward data whose reduction channels fill no 128-byte row.
    WgTma128Sw64,
    /// The same, 128 x 64.
    WgTma64Sw64,
    /// mma.sync reusing the input window along w (kernels/conv3d_halo.cu), 128 x 128.
    HaloN128,
    /// The same, 128 x 64.
    HaloN64,
    /// The same, 128 x 32.
    HaloN32,
    /// Backward weights on the halo: 32 channels of each of 3 taps along w, 32 columns.
    HaloWeight32x32,
    /// 64 channels of each of 3 taps along w, 32 columns.
    HaloWeight64x32,
    /// 64 channels of each of 3 taps along w, 64 columns.
    HaloWeight64x64,
    /// 64 channels of each of 3 taps along w, 128 columns.
    HaloWeight64x128,
    /// Backward data whose taps do not overlap (kernels/conv3d_phase.cu): 128 rows of dy
    /// kept whole in shared memory, run against every (tap, 64 columns) tile of a share.
    Phase64,
}

impl ConvTile {
    /// A Hopper wgmma tile (kernels/conv3d_wgmma.cu).
    pub fn is_wgmma(self) -> bool {
        matches!(
            self,
            Self::WgN128
                | Self::WgN64
                | Self::WgN32
                | Self::WgN64Pair
                | Self::WgM256
                | Self::WgWs128
                | Self::WgWs64
                | Self::WgTma128
                | Self::WgTma64
                | Self::WgTma256
                | Self::WgTmaCols
                | Self::WgTmaColsSw64
                | Self::WgTmaColsLoop
                | Self::WgTmaColsSw64Loop
                | Self::WgTma128Sw64
                | Self::WgTma64Sw64
        )
    }

    /// A tile of two 64-byte-swizzled boxes a reduction step (the tensor memory
    /// accelerator's over 32 bf16 channels a tap).
    pub fn is_sw64(self) -> bool {
        matches!(
            self,
            Self::WgTma128Sw64 | Self::WgTma64Sw64 | Self::WgTmaColsSw64 | Self::WgTmaColsSw64Loop
        )
    }

    /// A halo tile (kernels/conv3d_halo.cu).
    pub fn is_halo(self) -> bool {
        matches!(
            self,
            Self::HaloN128
                | Self::HaloN64
                | Self::HaloN32
                | Self::HaloWeight32x32
                | Self::HaloWeight64x32
                | Self::HaloWeight64x64
                | Self::HaloWeight64x128
        )
    }
}

/// A conv kernel: pass, arithmetic and tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvKernel {
    pub pass: ConvPass,
    pub precision: ConvPrecision,
    pub tile: ConvTile,
}

impl ConvKernel {
    /// The kernels/*.cu module (file stem) that holds the kernel.
    pub fn module(&self) -> &'static str {
        match (self.precision, self.tile) {
            (ConvPrecision::F32, _) => "conv3d",
            (_, tile) if tile.is_wgmma() => "conv3d_wgmma",
            (_, tile) if tile.is_halo() => "conv3d_halo",
            (_, ConvTile::Phase64) => "conv3d_phase",
            _ => "conv3d_pipe",
        }
    }

    /// (rows, columns, K step) of the kernel's tile; the tensor cores' K step is 64 bytes
    /// of packed elements. A backward-weights halo tile's rows are its channels per tap.
    pub fn shape(&self) -> (u32, u32, u32) {
        let bytes = self.precision.packed_bytes().unwrap_or(4) as u32;
        let tc = |bn: u32| (CONV_TC_BM, bn, CONV_PIPE_STEP_BYTES / bytes);
        let halo_weight = |ci: u32, bn: u32| (ci, bn, CONV_PIPE_STEP_BYTES / bytes);
        let wg = |bn: u32| (CONV_TC_BM, bn, CONV_WGMMA_STEP_BYTES / bytes);
        match self.tile {
            ConvTile::Wide => (CONV_SIMT_BM, CONV_WIDE_BN, CONV_WIDE_BK),
            ConvTile::Narrow => (CONV_SIMT_BM, CONV_NARROW_BN, CONV_NARROW_BK),
            ConvTile::Shallow => (CONV_SIMT_BM, CONV_SHALLOW_BN, CONV_SHALLOW_BK),
            ConvTile::TcN128 | ConvTile::HaloN128 => tc(128),
            ConvTile::TcN64 | ConvTile::HaloN64 => tc(64),
            ConvTile::TcN32 | ConvTile::HaloN32 => tc(32),
            ConvTile::WgN128 | ConvTile::WgWs128 | ConvTile::WgTma128 | ConvTile::WgTma128Sw64 => {
                wg(128)
            }
            ConvTile::WgN64
            | ConvTile::WgN64Pair
            | ConvTile::WgWs64
            | ConvTile::WgTma64
            | ConvTile::WgTma64Sw64 => wg(64),
            ConvTile::WgN32 => wg(32),
            ConvTile::WgM256 | ConvTile::WgTma256 => {
                (CONV_WGMMA_M256_BM, CONV_WGMMA_M256_BN, wg(128).2)
            }
            ConvTile::WgTmaCols
            | ConvTile::WgTmaColsSw64
            | ConvTile::WgTmaColsLoop
            | ConvTile::WgTmaColsSw64Loop => (2 * 128, 64, wg(64).2),
            ConvTile::HaloWeight32x32 => halo_weight(32, 32),
            ConvTile::HaloWeight64x32 => halo_weight(64, 32),
            ConvTile::HaloWeight64x64 => halo_weight(64, 64),
            ConvTile::HaloWeight64x128 => halo_weight(64, 128),
            ConvTile::Phase64 => tc(CONV_PHASE_BN),
        }
    }

    /// Threads of a block.
    pub fn threads(&self) -> u32 {
        match (self.pass, self.precision, self.tile) {
            (
                ConvPass::BackwardWeight,
                ConvPrecision::Tf32 | ConvPrecision::Bf16,
                ConvTile::TcN32,
            ) => CONV_PIPE_NARROW_THREADS,
            (_, _, ConvTile::WgM256) => CONV_WGMMA_M256_THREADS,
            (_, _, ConvTile::WgWs128) => CONV_WGMMA_WS128_THREADS,
            (_, _, ConvTile::WgWs64) => CONV_WGMMA_WS64_THREADS,
            (
                _,
                _,
                ConvTile::WgTma128
                | ConvTile::WgTma64
                | ConvTile::WgTmaCols
                | ConvTile::WgTmaColsSw64
                | ConvTile::WgTmaColsLoop
                | ConvTile::WgTmaColsSw64Loop
                | ConvTile::WgTma128Sw64
                | ConvTile::WgTma64Sw64,
            ) => CONV_WGMMA_TMA_THREADS,
            (_, _, ConvTile::WgTma256) => CONV_WGMMA_TMA256_THREADS,
            (_, _, tile) if tile.is_wgmma() => CONV_WGMMA_THREADS,
            (_, _, ConvTile::HaloWeight32x32 | ConvTile::HaloWeight64x32) => 3 * 32,
            (_, _, ConvTile::HaloWeight64x64 | ConvTile::HaloWeight64x128) => 3 * 64,
            _ => CONV_THREADS,
        }
    }

    /// Threads of this kernel that an SM runs at once, at most the 4 blocks of CONV_THREADS
    /// per SM that `ConvTarget::blocks` counts: the wgmma kernels of 64 and 128 columns hold
    /// one block per SM (their rings take most of its shared memory), the pair two; the
    /// halo kernels two, three at 32 columns.
    fn resident_threads_per_sm(&self) -> u32 {
        match self.tile {
            ConvTile::WgN128 | ConvTile::WgN64 => CONV_WGMMA_THREADS,
            ConvTile::WgM256 => CONV_WGMMA_M256_THREADS,
            ConvTile::WgWs128 => CONV_WGMMA_WS128_THREADS,
            ConvTile::WgWs64 => CONV_WGMMA_WS64_THREADS,
            ConvTile::WgTma128
            | ConvTile::WgTma64
            | ConvTile::WgTmaCols
            | ConvTile::WgTmaColsSw64
            | ConvTile::WgTmaColsLoop
            | ConvTile::WgTmaColsSw64Loop
            | ConvTile::WgTma128Sw64
            | ConvTile::WgTma64Sw64 => CONV_WGMMA_TMA_THREADS,
            ConvTile::WgTma256 => CONV_WGMMA_TMA256_THREADS,
            ConvTile::HaloN128 | ConvTile::HaloN64 => 2 * CONV_THREADS,
            ConvTile::HaloN32 => 3 * CONV_THREADS,
            // As many blocks as their registers allow (ptxas, sm_90; tf32 needs the most).
            ConvTile::HaloWeight32x32 => 5 * 96,
            ConvTile::HaloWeight64x32 | ConvTile::HaloWeight64x64 => 384,
            ConvTile::HaloWeight64x128 => 192,
            ConvTile::Phase64 => CONV_PHASE_BLOCKS_PER_SM * CONV_THREADS,
            _ => 4 * CONV_THREADS,
        }
    }

    /// Whether the kernel's blocks per SM fit only the largest shared-memory carveout: the
    /// phase kernel's three (`CONV_PHASE_BLOCKS_PER_SM`) take 3 x 67,072 bytes with their
    /// static and the driver's reserved shared memory, 512 bytes over the 196 KB option
    /// below Hopper's largest (228 KB).
    pub fn needs_most_shared(&self) -> bool {
        self.tile == ConvTile::Phase64
    }

    /// Dynamic shared memory of a launch: the tensor-core kernels' ring of A and B tiles
    /// (for wgmma, plus the slack that aligns it).
    pub fn shared_bytes(&self) -> u32 {
        let (bm, bn, _) = self.shape();
        match (self.precision, self.tile) {
            (ConvPrecision::F32, _) => 0,
            (
                _,
                ConvTile::WgN128
                | ConvTile::WgWs128
                | ConvTile::WgTma128
                | ConvTile::WgTmaCols
                | ConvTile::WgTmaColsSw64
                | ConvTile::WgTmaColsLoop
                | ConvTile::WgTmaColsSw64Loop
                | ConvTile::WgTma128Sw64,
            ) => CONV_WGMMA_STAGES_N128 * (bm + bn) * CONV_WGMMA_STEP_BYTES + CONV_WGMMA_ALIGN,
            (_, ConvTile::WgN64 | ConvTile::WgWs64 | ConvTile::WgTma64 | ConvTile::WgTma64Sw64) => {
                CONV_WGMMA_STAGES_N64 * (bm + bn) * CONV_WGMMA_STEP_BYTES + CONV_WGMMA_ALIGN
            }
            (_, ConvTile::WgN32) => {
                CONV_WGMMA_STAGES_N32 * (bm + bn) * CONV_WGMMA_STEP_BYTES + CONV_WGMMA_ALIGN
            }
            (_, ConvTile::WgN64Pair) => {
                CONV_WGMMA_STAGES_N64_PAIR * (bm + bn) * CONV_WGMMA_STEP_BYTES + CONV_WGMMA_ALIGN
            }
            (_, ConvTile::WgM256 | ConvTile::WgTma256) => {
                CONV_WGMMA_STAGES_M256 * (bm + bn) * CONV_WGMMA_STEP_BYTES + CONV_WGMMA_ALIGN
            }
            (_, ConvTile::HaloN128 | ConvTile::HaloN64 | ConvTile::HaloN32) => {
                let stages = match self.tile {
                    ConvTile::HaloN128 => CONV_HALO_STAGES_N128,
                    ConvTile::HaloN64 => CONV_HALO_STAGES_N64,
                    _ => CONV_HALO_STAGES_N32,
                };
                stages * (CONV_HALO_ROWS + CONV_HALO_MAX_KW * bn) * CONV_PIPE_STEP_BYTES
            }
            (precision, tile) if tile.is_halo() => {
                let bytes = precision.packed_bytes().unwrap_or(4) as u32;
                let a = (CONV_PIPE_STEP_BYTES + CONV_HALO_WEIGHT_EXTRA_ROWS * bytes) * bm;
                CONV_HALO_WEIGHT_STAGES * (a + CONV_PIPE_STEP_BYTES * bn)
            }
            (_, ConvTile::Phase64) => (bm + 2 * bn) * CONV_PHASE_MAX_STEPS * CONV_PIPE_STEP_BYTES,
            _ => CONV_PIPE_STAGES * (bm + bn) * CONV_PIPE_STEP_BYTES,
        }
    }

    /// The kernel's name, or None for a combination that has no kernel (the plans never
    /// make one).
    pub fn name(&self) -> Option<&'static str> {
        use ConvPass::*;
        use ConvPrecision::*;
        use ConvTile::*;
        Some(match (self.pass, self.precision, self.tile) {
            (Forward, F32, Wide) => "conv3d_fwd_f32_wide",
            (Forward, F32, Narrow) => "conv3d_fwd_f32_narrow",
            (Forward, F32, Shallow) => "conv3d_fwd_f32_shallow",
            (BackwardData, F32, Wide) => "conv3d_bwd_data_f32_wide",
            (BackwardData, F32, Narrow) => "conv3d_bwd_data_f32_narrow",
            (BackwardData, F32, Shallow) => "conv3d_bwd_data_f32_shallow",
            (BackwardWeight, F32, Wide) => "conv3d_bwd_weight_f32_wide",
            (BackwardWeight, F32, Narrow) => "conv3d_bwd_weight_f32_narrow",
            (Forward, Tf32, TcN128) => "conv3d_fwd_tf32_n128",
            (Forward, Tf32, TcN64) => "conv3d_fwd_tf32_n64",
            (Forward, Tf32, TcN32) => "conv3d_fwd_tf32_n32",
            (Forward, Bf16, TcN128) => "conv3d_fwd_bf16_n128",
            (Forward, Bf16, TcN64) => "conv3d_fwd_bf16_n64",
            (Forward, Bf16, TcN32) => "conv3d_fwd_bf16_n32",
            (BackwardData, Tf32, TcN128) => "conv3d_bwd_data_tf32_n128",
            (BackwardData, Tf32, TcN64) => "conv3d_bwd_data_tf32_n64",
            (BackwardData, Tf32, TcN32) => "conv3d_bwd_data_tf32_n32",
            (BackwardData, Bf16, TcN128) => "conv3d_bwd_data_bf16_n128",
            (BackwardData, Bf16, TcN64) => "conv3d_bwd_data_bf16_n64",
            (BackwardData, Bf16, TcN32) => "conv3d_bwd_data_bf16_n32",
            (BackwardWeight, Tf32, TcN128) => "conv3d_bwd_weight_tf32_n128",
            (BackwardWeight, Tf32, TcN64) => "conv3d_bwd_weight_tf32_n64",
            (BackwardWeight, Tf32, TcN32) => "conv3d_bwd_weight_tf32_n32",
            (BackwardWeight, Bf16, TcN128) => "conv3d_bwd_weight_bf16_n128",
            (BackwardWeight, Bf16, TcN64) => "conv3d_bwd_weight_bf16_n64",
            (BackwardWeight, Bf16, TcN32) => "conv3d_bwd_weight_bf16_n32",
            (Forward, Tf32, WgN128) => "conv3d_fwd_tf32_wg128",
            (Forward, Tf32, WgN64) => "conv3d_fwd_tf32_wg64",
            (Forward, Bf16, WgN128) => "conv3d_fwd_bf16_wg128",
            (Forward, Bf16, WgN64) => "conv3d_fwd_bf16_wg64",
            (BackwardData, Tf32, WgN128) => "conv3d_bwd_data_tf32_wg128",
            (BackwardData, Tf32, WgN64) => "conv3d_bwd_data_tf32_wg64",
            (BackwardData, Bf16, WgN128) => "conv3d_bwd_data_bf16_wg128",
            (BackwardData, Bf16, WgN64) => "conv3d_bwd_data_bf16_wg64",
            (Forward, Tf32, WgN32) => "conv3d_fwd_tf32_wg32",
            (Forward, Bf16, WgN32) => "conv3d_fwd_bf16_wg32",
            (BackwardData, Tf32, WgN32) => "conv3d_bwd_data_tf32_wg32",
            (BackwardData, Bf16, WgN32) => "conv3d_bwd_data_bf16_wg32",
            (BackwardWeight, Bf16, WgN128) => "conv3d_bwd_weight_bf16_wg128",
            (BackwardWeight, Bf16, WgN64) => "conv3d_bwd_weight_bf16_wg64",
            (Forward, Tf32, WgN64Pair) => "conv3d_fwd_tf32_wg64x2",
            (Forward, Bf16, WgN64Pair) => "conv3d_fwd_bf16_wg64x2",
            (BackwardData, Tf32, WgN64Pair) => "conv3d_bwd_data_tf32_wg64x2",
            (BackwardData, Bf16, WgN64Pair) => "conv3d_bwd_data_bf16_wg64x2",
            (BackwardWeight, Bf16, WgN64Pair) => "conv3d_bwd_weight_bf16_wg64x2",
            (Forward, Tf32, WgM256) => "conv3d_fwd_tf32_wg256",
            (Forward, Bf16, WgM256) => "conv3d_fwd_bf16_wg256",
            (BackwardData, Tf32, WgM256) => "conv3d_bwd_data_tf32_wg256",
            (BackwardData, Bf16, WgM256) => "conv3d_bwd_data_bf16_wg256",
            (BackwardWeight, Bf16, WgM256) => "conv3d_bwd_weight_bf16_wg256",
            (Forward, Tf32, WgWs128) => "conv3d_fwd_tf32_ws128",
            (Forward, Bf16, WgWs128) => "conv3d_fwd_bf16_ws128",
            (BackwardData, Tf32, WgWs128) => "conv3d_bwd_data_tf32_ws128",
            (BackwardData, Bf16, WgWs128) => "conv3d_bwd_data_bf16_ws128",
            (BackwardWeight, Bf16, WgWs128) => "conv3d_bwd_weight_bf16_ws128",
            (Forward, Tf32, WgWs64) => "conv3d_fwd_tf32_ws64",
            (Forward, Bf16, WgWs64) => "conv3d_fwd_bf16_ws64",
            (BackwardData, Tf32, WgWs64) => "conv3d_bwd_data_tf32_ws64",
            (BackwardData, Bf16, WgWs64) => "conv3d_bwd_data_bf16_ws64",
            (BackwardWeight, Bf16, WgWs64) => "conv3d_bwd_weight_bf16_ws64",
            (Forward, Bf16, WgTma128) => "conv3d_fwd_bf16_tma128",
            (Forward, Bf16, WgTma64) => "conv3d_fwd_bf16_tma64",
            (Forward, Bf16, WgTma256) => "conv3d_fwd_bf16_tma256",
            (Forward, Tf32, WgTma128) => "conv3d_fwd_tf32_tma128",
            (Forward, Tf32, WgTma64) => "conv3d_fwd_tf32_tma64",
            (Forward, Tf32, WgTma256) => "conv3d_fwd_tf32_tma256",
            (BackwardData, Bf16, WgTma128) => "conv3d_bwd_data_bf16_tma128",
            (BackwardData, Bf16, WgTma64) => "conv3d_bwd_data_bf16_tma64",
            (BackwardData, Bf16, WgTma256) => "conv3d_bwd_data_bf16_tma256",
            (BackwardData, Tf32, WgTma128) => "conv3d_bwd_data_tf32_tma128",
            (BackwardData, Tf32, WgTma64) => "conv3d_bwd_data_tf32_tma64",
            (BackwardData, Tf32, WgTma256) => "conv3d_bwd_data_tf32_tma256",
            (Forward, Bf16, WgTma128Sw64) => "conv3d_fwd_bf16_tma128s64",
            (Forward, Bf16, WgTma64Sw64) => "conv3d_fwd_bf16_tma64s64",
            (BackwardData, Bf16, WgTma128Sw64) => "conv3d_bwd_data_bf16_tma128s64",
            (BackwardData, Bf16, WgTma64Sw64) => "conv3d_bwd_data_bf16_tma64s64",
            (Forward, Bf16, WgTmaCols) => "conv3d_fwd_bf16_tmacols",
            (Forward, Tf32, WgTmaCols) => "conv3d_fwd_tf32_tmacols",
            (Forward, Bf16, WgTmaColsSw64) => "conv3d_fwd_bf16_tmacolss64",
            (BackwardData, Bf16, WgTmaCols) => "conv3d_bwd_data_bf16_tmacols",
            (BackwardData, Tf32, WgTmaCols) => "conv3d_bwd_data_tf32_tmacols",
            (BackwardData, Bf16, WgTmaColsSw64) => "conv3d_bwd_data_bf16_tmacolss64",
            (Forward, Bf16, WgTmaColsLoop) => "conv3d_fwd_bf16_tmacolsp",
            (Forward, Tf32, WgTmaColsLoop) => "conv3d_fwd_tf32_tmacolsp",
            (Forward, Bf16, WgTmaColsSw64Loop) => "conv3d_fwd_bf16_tmacolss64p",
            (BackwardData, Bf16, WgTmaColsLoop) => "conv3d_bwd_data_bf16_tmacolsp",
            (BackwardData, Tf32, WgTmaColsLoop) => "conv3d_bwd_data_tf32_tmacolsp",
            (BackwardData, Bf16, WgTmaColsSw64Loop) => "conv3d_bwd_data_bf16_tmacolss64p",
            (BackwardWeight, Bf16, WgTma128) => "conv3d_bwd_weight_bf16_tma128",
            (BackwardWeight, Bf16, WgTma64) => "conv3d_bwd_weight_bf16_tma64",
            (BackwardWeight, Bf16, WgTma256) => "conv3d_bwd_weight_bf16_tma256",
            (BackwardWeight, Bf16, WgTmaCols) => "conv3d_bwd_weight_bf16_tmacols",
            (BackwardWeight, Tf32, WgTma128) => "conv3d_bwd_weight_tf32_tma128",
            (BackwardWeight, Tf32, WgTma64) => "conv3d_bwd_weight_tf32_tma64",
            (BackwardWeight, Tf32, WgTma256) => "conv3d_bwd_weight_tf32_tma256",
            (BackwardWeight, Tf32, WgTmaCols) => "conv3d_bwd_weight_tf32_tmacols",
            (Forward, Bf16, HaloN128) => "conv3d_fwd_bf16_halo128",
            (Forward, Bf16, HaloN64) => "conv3d_fwd_bf16_halo64",
            (Forward, Bf16, HaloN32) => "conv3d_fwd_bf16_halo32",
            (BackwardData, Bf16, HaloN128) => "conv3d_bwd_data_bf16_halo128",
            (BackwardData, Bf16, HaloN64) => "conv3d_bwd_data_bf16_halo64",
            (BackwardData, Bf16, HaloN32) => "conv3d_bwd_data_bf16_halo32",
            (Forward, Tf32, HaloN128) => "conv3d_fwd_tf32_halo128",
            (Forward, Tf32, HaloN64) => "conv3d_fwd_tf32_halo64",
            (Forward, Tf32, HaloN32) => "conv3d_fwd_tf32_halo32",
            (BackwardData, Tf32, HaloN128) => "conv3d_bwd_data_tf32_halo128",
            (BackwardData, Tf32, HaloN64) => "conv3d_bwd_data_tf32_halo64",
            (BackwardData, Tf32, HaloN32) => "conv3d_bwd_data_tf32_halo32",
            (BackwardWeight, Bf16, HaloWeight32x32) => "conv3d_bwd_weight_bf16_halo32x32",
            (BackwardWeight, Bf16, HaloWeight64x32) => "conv3d_bwd_weight_bf16_halo64x32",
            (BackwardWeight, Bf16, HaloWeight64x64) => "conv3d_bwd_weight_bf16_halo64x64",
            (BackwardWeight, Bf16, HaloWeight64x128) => "conv3d_bwd_weight_bf16_halo64x128",
            (BackwardWeight, Tf32, HaloWeight32x32) => "conv3d_bwd_weight_tf32_halo32x32",
            (BackwardWeight, Tf32, HaloWeight64x32) => "conv3d_bwd_weight_tf32_halo64x32",
            (BackwardWeight, Tf32, HaloWeight64x64) => "conv3d_bwd_weight_tf32_halo64x64",
            (BackwardWeight, Tf32, HaloWeight64x128) => "conv3d_bwd_weight_tf32_halo64x128",
            (BackwardData, Bf16, Phase64) => "conv3d_bwd_data_bf16_phase64",
            (BackwardData, Tf32, Phase64) => "conv3d_bwd_data_tf32_phase64",
            _ => return None,
        })
    }
}

/// Kernel parameters of a geometry (checks that its sizes fit the kernels' indices).
pub fn conv_params(g: &ConvGeometry) -> Result<Conv3dParams> {
    Conv3dParams::new(&Conv3dShape {
        n: g.n,
        input: g.input,
        cin: g.cin,
        output: g.output,
        cout: g.cout,
        kernel: g.kernel,
        stride: g.stride,
        pad_before: g.pad_before,
    })
}

/// Checks that the tensor-core loaders' byte strides fit their 32-bit multiply-adds
/// (kernels/conv3d_pipe.h): a packed weight row (taps x padded channels, for either side)
/// and a packed voxel.
fn check_packed_strides(g: &ConvGeometry, precision: ConvPrecision) -> Result<()> {
    let Some(bytes) = precision.packed_bytes() else {
        return Ok(());
    };
    let multiple = precision.channel_multiple();
    let taps: usize = g.kernel.iter().product();
    let widest = g.cin.max(g.cout).next_multiple_of(multiple);
    let row_bytes = (taps as u64)
        .saturating_mul(widest as u64)
        .saturating_mul(bytes as u64);
    if row_bytes > u32::MAX as u64 {
        return Err(Error::shape(
            "conv3d (cuda)",
            format!(
                "{g:?}: a {precision} weight row of {row_bytes} bytes exceeds the tensor-core \
                 kernels' 32-bit strides; use --precision fp32 for this layer"
            ),
        ));
    }
    Ok(())
}

/// Parameters of a pack kernel (`ConvPackParams` in kernels/params_conv.h): f32 source
/// `[a][b][c]` to bf16 or tf32, the padded dimension (c for rows, b for transposed) rounded
/// up to whole 16-byte chunks (a multiple of 8 bf16 or 4 tf32).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvPackParams {
    pub a: i32,
    pub b: i32,
    pub c: i32,
    pub padded: i32,
}

// SAFETY: #[repr(C)] plain integers, the layout of ConvPackParams (checked by a test).
unsafe impl cudarc::driver::DeviceRepr for ConvPackParams {}

/// Parameters of a bordered pack kernel (`ConvBorderPackParams` in kernels/params_conv.h):
/// f32 activations `[n][d][h][w][c]` to `[n][out_d][out_h][out_w][padded]`, voxel
/// (z, y, x) holding source voxel (z - before_d, ..) and zeros outside the source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvBorderPackParams {
    pub n: i32,
    pub d: i32,
    pub h: i32,
    pub w: i32,
    pub c: i32,
    pub padded: i32,
    pub before_d: i32,
    pub before_h: i32,
    pub before_w: i32,
    pub out_d: i32,
    pub out_h: i32,
    pub out_w: i32,
}

// SAFETY: #[repr(C)] plain integers, the layout of ConvBorderPackParams (checked by a test).
unsafe impl cudarc::driver::DeviceRepr for ConvBorderPackParams {}

/// Where a bordered pack puts its source: `n` samples of `source` voxels (d, h, w), at
/// offset `before` (negative crops) in volumes of `dims` voxels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvBorder {
    pub n: i32,
    pub source: [i32; 3],
    pub before: [i32; 3],
    pub dims: [i32; 3],
}

/// Parameters of the channel-major pack kernel (`ConvChannelMajorPackParams` in
/// kernels/params_conv.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvChannelMajorPackParams {
    /// The source, its offset in each phase's grid and the grid's size (`out_*`), as a
    /// bordered pack of it at stride 1 would take them.
    pub grid: ConvBorderPackParams,
    pub stride_d: i32,
    pub stride_h: i32,
    pub stride_w: i32,
    pub phase_len: i32,
    /// Copies, each a voxel further on than the last (`ConvPhaseGrid::shifts`).
    pub shifts: i32,
}

// SAFETY: #[repr(C)] plain integers, the layout of ConvChannelMajorPackParams (checked by a
// test).
unsafe impl cudarc::driver::DeviceRepr for ConvChannelMajorPackParams {}

/// Parameters of the bf16x3 rows pack (`ConvBf16x3PackParams` in kernels/params_conv.h):
/// the rows pack's, and the copies that hold residuals (bit s: copy s).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvBf16x3PackParams {
    pub pack: ConvPackParams,
    pub residual_copies: i32,
}

// SAFETY: #[repr(C)] plain integers, the layout of ConvBf16x3PackParams (checked by a test).
unsafe impl cudarc::driver::DeviceRepr for ConvBf16x3PackParams {}

/// Parameters of the bf16x3 bordered pack (`ConvBorderBf16x3PackParams` in
/// kernels/params_conv.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvBorderBf16x3PackParams {
    pub pack: ConvBorderPackParams,
    pub residual_copies: i32,
}

// SAFETY: #[repr(C)] plain integers, the layout of ConvBorderBf16x3PackParams (checked by a
// test).
unsafe impl cudarc::driver::DeviceRepr for ConvBorderBf16x3PackParams {}

/// Where a channel-major pack puts its source: `border.n` samples of `border.source` voxels
/// (d, h, w) split into their `stride` phases, phase r's voxel z along an axis holding
/// source voxel stride (z - before) + r, in grids of `border.dims` voxels a sample, one per
/// phase (at stride 1, the source inside zero borders); packed `shifts` times, copy s's
/// row starting s voxels further on (the voxels of a k-major backward weights' taps that
/// read within a 16-byte chunk, `TMA_GRID_CHUNK_VOXELS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvPhaseGrid {
    pub border: ConvBorder,
    pub stride: [i32; 3],
    pub shifts: i32,
}

impl ConvPhaseGrid {
    /// Voxels of one phase's grids over all samples.
    pub fn phase_len(&self) -> usize {
        self.border.voxels()[1]
    }

    /// Voxels of every phase's grids.
    pub fn voxels(&self) -> usize {
        self.phase_len() * self.stride.iter().product::<i32>() as usize
    }
}

impl ConvBorder {
    /// Voxels of the source, and of the bordered volumes, over all samples.
    pub fn voxels(&self) -> [usize; 2] {
        [self.source, self.dims].map(|d| d.iter().fold(self.n as usize, |acc, &v| acc * v as usize))
    }
}

/// The pack kernels (kernels/conv3d_pipe.cu; bordered: kernels/conv3d_halo.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPackKind {
    /// `[b][a][padded]` from `[a][b][c]`: activations (b = 1) and backward-data weights.
    Rows,
    /// `[c][a][padded]` from `[a][b][c]`: forward weights.
    Transposed,
    /// Activations `[a = voxels][b = 1][c]` placed inside zero borders: the halo kernels'
    /// A operand.
    Bordered(ConvBorder),
    /// Activations `[a = voxels][b = 1][c]` split into stride phases inside zero borders,
    /// channel-major (`[shift][c][row_len]`, voxels contiguous; tf32 only): k-major
    /// backward weights' operands (`ConvPlan::tma_grid_weights`).
    ChannelMajor(ConvPhaseGrid),
}

/// The copies of its source a pack writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPackCopies {
    /// One, rounded to the pack's precision.
    One,
    /// Three bf16 copies one after another, as one batch three times the source's, for tf32
    /// backward weights on the bf16 kernels (`ConvPlan::bf16x3`): each value x as its
    /// rounding hi or, in the copies whose bit `residual` sets, as the rounding of x - hi
    /// (kernels/params_conv.h, `ConvBf16x3PackParams`).
    Bf16x3 { residual: u8 },
}

/// The kernel parameters of a pack, one variant per kernel signature (the rows and the
/// transposed packs take the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPackArgs {
    Rows(ConvPackParams),
    Bordered(ConvBorderPackParams),
    ChannelMajor(ConvChannelMajorPackParams),
    RowsBf16x3(ConvBf16x3PackParams),
    BorderedBf16x3(ConvBorderBf16x3PackParams),
}

/// The conversion of one f32 operand to the packed buffer (bf16 or tf32) a tensor-core
/// kernel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvPack {
    pub kind: ConvPackKind,
    /// `Tf32` or `Bf16`: what the elements are rounded to.
    pub precision: ConvPrecision,
    pub copies: ConvPackCopies,
    pub params: ConvPackParams,
    pub dims: LaunchDims,
}

impl ConvPack {
    /// The pack of a source `[a, b, c]` at `precision` (Tf32 or Bf16), over at most
    /// `2 * target_blocks` blocks (a grid-stride loop does the rest).
    pub fn new(
        kind: ConvPackKind,
        precision: ConvPrecision,
        [a, b, c]: [usize; 3],
        target_blocks: u32,
    ) -> Result<Self> {
        if precision.packed_bytes().is_none() {
            return Err(Error::config(
                "conv3d (cuda pack)",
                "f32 operands are not packed",
            ));
        }
        let per_chunk = precision.channel_multiple();
        let bordered = |border: ConvBorder| -> Result<usize> {
            let [source, bordered] = border.voxels();
            if b != 1 || a != source {
                return Err(Error::shape(
                    "conv3d (cuda pack)",
                    format!("{border:?} does not describe a source of [{a}, {b}, {c}]"),
                ));
            }
            Ok(bordered)
        };
        let (kept, padded) = match kind {
            ConvPackKind::Rows => (a * b, c.next_multiple_of(per_chunk)),
            ConvPackKind::Transposed => (a * c, b.next_multiple_of(per_chunk)),
            ConvPackKind::Bordered(border) => (bordered(border)?, c.next_multiple_of(per_chunk)),
            ConvPackKind::ChannelMajor(grid) => {
                if precision != ConvPrecision::Tf32 {
                    return Err(Error::config(
                        "conv3d (cuda pack)",
                        "channel-major packs are tf32 only",
                    ));
                }
                bordered(grid.border)?;
                if !(1..=TMA_GRID_CHUNK_VOXELS).contains(&grid.shifts) {
                    return Err(Error::config(
                        "conv3d (cuda pack)",
                        format!("{} shifts of a channel-major pack", grid.shifts),
                    ));
                }
                (
                    c * grid.shifts as usize,
                    grid.voxels().next_multiple_of(per_chunk),
                )
            }
        };
        let chunks = kept * padded / per_chunk;
        let fit = |v: usize| i32::try_from(v).ok();
        let (Some(a), Some(b), Some(c), Some(padded), Some(_)) =
            (fit(a), fit(b), fit(c), fit(padded), fit(chunks))
        else {
            return Err(Error::shape(
                "conv3d (cuda pack)",
                format!("[{a}, {b}, {c}] exceeds the pack kernels' 32-bit chunk indices"),
            ));
        };
        let dims = match kind {
            // A block per 64 voxels by 32 channels, every copy (kernels/conv3d_wgmma.cu).
            ConvPackKind::ChannelMajor(_) => {
                let [voxels, channels] = CHANNEL_MAJOR_PACK_TILE;
                let grid = [
                    (padded as u32).div_ceil(voxels),
                    (c as u32).div_ceil(channels),
                    1,
                ];
                if grid[1] as u64 > MAX_GRID_YZ {
                    return Err(Error::shape(
                        "conv3d (cuda pack)",
                        format!("{c} channels exceed the channel-major pack's grid"),
                    ));
                }
                LaunchDims::linear(grid, PACK_THREADS)
            }
            _ => {
                let blocks = chunks
                    .div_ceil(PACK_THREADS as usize)
                    .clamp(1, 2 * target_blocks.max(1) as usize);
                LaunchDims::linear([blocks as u32, 1, 1], PACK_THREADS)
            }
        };
        Ok(Self {
            kind,
            precision,
            copies: ConvPackCopies::One,
            params: ConvPackParams { a, b, c, padded },
            dims,
        })
    }

    /// This bf16 pack of activations of 3 n samples (rows or bordered) as the bf16x3 pack
    /// of n samples that writes the same buffer: three copies of its n samples' pack,
    /// those whose bit `residual` sets holding the residuals.
    pub fn bf16x3(&self, residual: u8, target_blocks: u32) -> Result<Self> {
        let p = self.params;
        let third = |v: i32| (v % 3 == 0).then_some(v / 3);
        let kind = match self.kind {
            ConvPackKind::Rows if p.b == 1 => Some(ConvPackKind::Rows),
            ConvPackKind::Bordered(border) => {
                third(border.n).map(|n| ConvPackKind::Bordered(ConvBorder { n, ..border }))
            }
            _ => None,
        };
        let (Some(kind), Some(a), ConvPrecision::Bf16, ConvPackCopies::One) =
            (kind, third(p.a), self.precision, self.copies)
        else {
            return Err(Error::config(
                "conv3d (cuda pack)",
                format!("{self:?} has no bf16x3 form: it packs no batch of 3 n samples in bf16"),
            ));
        };
        let one = Self::new(
            kind,
            ConvPrecision::Bf16,
            [a as usize, p.b as usize, p.c as usize],
            target_blocks,
        )?;
        Ok(Self {
            copies: ConvPackCopies::Bf16x3 { residual },
            ..one
        })
    }

    pub fn name(&self) -> &'static str {
        if let ConvPackCopies::Bf16x3 { .. } = self.copies {
            return match self.kind {
                ConvPackKind::Bordered(_) => "conv3d_pack_bordered_bf16x3",
                _ => "conv3d_pack_rows_bf16x3",
            };
        }
        match (self.kind, self.precision) {
            (ConvPackKind::Rows, ConvPrecision::Tf32) => "conv3d_pack_rows_tf32",
            (ConvPackKind::Transposed, ConvPrecision::Tf32) => "conv3d_pack_transposed_tf32",
            (ConvPackKind::Bordered(_), ConvPrecision::Tf32) => "conv3d_pack_bordered_tf32",
            (ConvPackKind::ChannelMajor(_), _) => "conv3d_pack_channel_major_tf32",
            (ConvPackKind::Rows, _) => "conv3d_pack_rows_bf16",
            (ConvPackKind::Transposed, _) => "conv3d_pack_transposed_bf16",
            (ConvPackKind::Bordered(_), _) => "conv3d_pack_bordered_bf16",
        }
    }

    /// The kernels/*.cu module (file stem) of the pack kernel.
    pub fn module(&self) -> &'static str {
        match self.kind {
            ConvPackKind::Bordered(_) => "conv3d_halo",
            ConvPackKind::ChannelMajor(_) => "conv3d_wgmma",
            _ => "conv3d_pipe",
        }
    }

    /// The pack kernel's parameters.
    pub fn args(&self) -> ConvPackArgs {
        let residual_copies = match self.copies {
            ConvPackCopies::One => None,
            ConvPackCopies::Bf16x3 { residual } => Some(residual as i32),
        };
        match (self.kind, residual_copies) {
            (ConvPackKind::Bordered(b), None) => ConvPackArgs::Bordered(self.bordered(b)),
            (ConvPackKind::Bordered(b), Some(residual_copies)) => {
                ConvPackArgs::BorderedBf16x3(ConvBorderBf16x3PackParams {
                    pack: self.bordered(b),
                    residual_copies,
                })
            }
            (ConvPackKind::ChannelMajor(g), _) => {
                let [stride_d, stride_h, stride_w] = g.stride;
                ConvPackArgs::ChannelMajor(ConvChannelMajorPackParams {
                    grid: self.bordered(g.border),
                    stride_d,
                    stride_h,
                    stride_w,
                    phase_len: g.phase_len() as i32,
                    shifts: g.shifts,
                })
            }
            (_, None) => ConvPackArgs::Rows(self.params),
            (_, Some(residual_copies)) => ConvPackArgs::RowsBf16x3(ConvBf16x3PackParams {
                pack: self.params,
                residual_copies,
            }),
        }
    }

    /// `b` with this pack's channels, as the bordered pack kernel takes it.
    fn bordered(&self, b: ConvBorder) -> ConvBorderPackParams {
        let [d, h, w] = b.source;
        let [before_d, before_h, before_w] = b.before;
        let [out_d, out_h, out_w] = b.dims;
        ConvBorderPackParams {
            n: b.n,
            d,
            h,
            w,
            c: self.params.c,
            padded: self.params.padded,
            before_d,
            before_h,
            before_w,
            out_d,
            out_h,
            out_w,
        }
    }

    /// Bytes of one packed element (2 for bf16, 4 for tf32).
    pub fn element_bytes(&self) -> usize {
        self.precision.packed_bytes().unwrap_or(4)
    }

    /// f32 elements of the source.
    pub fn source_len(&self) -> usize {
        let p = &self.params;
        p.a as usize * p.b as usize * p.c as usize
    }

    /// Elements of the packed buffer.
    pub fn packed_len(&self) -> usize {
        let p = &self.params;
        let rows = match self.kind {
            ConvPackKind::Rows => p.a as usize * p.b as usize,
            ConvPackKind::Transposed => p.a as usize * p.c as usize,
            ConvPackKind::Bordered(border) => border.voxels()[1],
            ConvPackKind::ChannelMajor(g) => p.c as usize * g.shifts as usize,
        };
        let copies = match self.copies {
            ConvPackCopies::One => 1,
            ConvPackCopies::Bf16x3 { .. } => 3,
        };
        rows * p.padded as usize * copies
    }
}

/// One pass of one convolution: the kernel, its parameters and grid, and on the tensor
/// cores the packing of its operands a and b.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvPlan {
    pub kernel: ConvKernel,
    pub params: Conv3dParams,
    pub dims: LaunchDims,
    /// Elements of the result (y, dx or dw).
    pub out_len: usize,
    /// Tensor cores: the packs of a and b, run before the kernel, which reads their outputs.
    pub packs: Option<[ConvPack; 2]>,
    /// The kernel runs from its module's build variant whose activation gathers go through
    /// L1 (`<module>_l1`).
    pub gather_l1: bool,
    /// The kernel reads its packed operands through tensor maps, tiled so
    /// (`ConvTile::WgTma128`, `WgTma64`, `WgTma256`; kernels/params.h, Conv3dTmaParams).
    pub tma: Option<ConvTmaTiling>,
}

/// Where the plan runs an optional kernel family or build variant (the halo kernels, the
/// L1 gathers, the tensor memory accelerator's, 256-row and transposed wgmma tiles):
/// nowhere, where a GPU measured it faster than the alternative (the default; each rule
/// says which GPU), or wherever it can run.
/// Parsed from `off` (or `0`), `measured`, `all` (or `1`, `on`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reach {
    Off,
    #[default]
    Measured,
    All,
}

impl Reach {
    /// Whether a case runs the family: never, where `measured` (the measured rule holds
    /// for it), or always.
    pub fn admits(self, measured: bool) -> bool {
        match self {
            Self::Off => false,
            Self::Measured => measured,
            Self::All => true,
        }
    }
}

impl FromStr for Reach {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "0" | "off" => Ok(Self::Off),
            "measured" => Ok(Self::Measured),
            "1" | "on" | "all" => Ok(Self::All),
            _ => Err(Error::config(
                "kernel reach",
                format!("{s:?} is not one of off, measured, all (0, 1, on)"),
            )),
        }
    }
}

/// What a plan knows of its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTarget {
    /// Blocks of `CONV_THREADS` that fill the device (splits aim at about this many).
    pub blocks: u32,
    /// The device runs the sm_90a wgmma kernels (kernels/conv3d_wgmma.cu).
    pub wgmma: bool,
    /// 64-column results on grids of at least one tile per SM, over more than
    /// `WGMMA_PAIR_MIN_STEPS` wgmma steps, run the wgmma pair (`ConvTile::WgN64Pair`)
    /// instead of mma.sync.
    pub wgmma_pairs: bool,
    /// The 128 x 128 wgmma tiles of results of more than 128 rows run as 256 x 128 within
    /// this reach: measured, the tensor memory accelerator's tiles where `ConvPlan::tma`
    /// says (`ConvTile::WgTma256`); all, those everywhere and the others too
    /// (`ConvTile::WgM256`).
    pub wgmma_m256: Reach,
    /// The wgmma tiles of 128 x 128 (that stay so) and 128 x 64 (the pair too) run
    /// warp-specialized (`ConvTile::WgWs128`, `WgWs64`).
    pub wgmma_ws: bool,
    /// Forward, backward data and bf16 backward weights (tf32's too, where
    /// `wgmma_tf32_weights` is on), into more than 32
    /// columns, run on the tiles the tensor memory accelerator fills (`ConvTile::WgTma128`,
    /// `WgTma64`, `WgTma256`) within this reach, where `ConvPlan::tma` allows; there they
    /// take precedence over the pair, the warp-specialized and halo tiles and the L1
    /// gathers.
    pub wgmma_tma: Reach,
    /// Backward weights into 64 columns runs wgmma, the tensor memory accelerator's tiles
    /// too (where the other 64-column rules allow it), else mma.sync.
    pub wgmma_n64_weights: bool,
    /// A reduction whose tiles fill less than one wave is split by a model of whole waves
    /// (`split_reduction`) rather than into as many slices as one wave holds.
    pub split_waves: bool,
    /// Backward weights that would take the tensor memory accelerator's 128 x 64 tile (bf16,
    /// and tf32 over channel-major packs) take `ConvTile::WgTmaCols` instead, within this
    /// reach (`cols_weights_measured`).
    pub wgmma_cols_weights: Reach,
    /// Forward and backward data into 64 columns take `ConvTile::WgTmaCols` (or
    /// `WgTmaColsSw64`) wherever the 128 x 64 tiles of the tensor memory accelerator could
    /// run them, within the measured reach of those tiles or not (where `wgmma_tma` is not
    /// off), within this reach (`cols_gather_measured`).
    pub wgmma_cols_gather: Reach,
    /// tf32 backward weights run on the tensor memory accelerator's tiles over
    /// channel-major packs (`ConvPlan::tma_grid_weights`), where `wgmma_tma` is not off,
    /// within this reach (`tf32_weights_measured`).
    pub wgmma_tf32_weights: Reach,
    /// Stride-1 passes that would run on mma.sync run the halo kernels
    /// (kernels/conv3d_halo.cu) where the plan allows (`ConvPlan::halo`), within this reach.
    pub halo: Reach,
    /// The tensor-core kernels run from their L1-gathering build variant within this
    /// reach (`gathers_through_l1`).
    pub gather_l1: Reach,
    /// Backward data whose taps do not overlap runs the phase kernel where it can
    /// (`ConvPlan::phase`), ahead of every other tile.
    pub phase: bool,
    /// Forward and backward data on the transposed tiles run persistently where their
    /// reduction is not split (`ConvPlan::persistent`).
    pub wgmma_persist: bool,
    /// tf32 backward weights run as three bf16 products on the bf16 kernels
    /// (`ConvPlan::bf16x3`), ahead of every other tile.
    pub tf32_bf16x3: bool,
}

impl ConvTarget {
    /// A device filled by `blocks` blocks, without wgmma and with the optional kernels
    /// (the tensor memory accelerator's and 256-row tiles, the halo, the L1 gathers) off.
    pub fn new(blocks: u32) -> Self {
        Self {
            blocks,
            wgmma: false,
            wgmma_pairs: false,
            wgmma_m256: Reach::Off,
            wgmma_ws: false,
            wgmma_tma: Reach::Off,
            wgmma_n64_weights: true,
            split_waves: false,
            wgmma_cols_weights: Reach::Off,
            wgmma_cols_gather: Reach::Off,
            wgmma_tf32_weights: Reach::Off,
            halo: Reach::Off,
            gather_l1: Reach::Off,
            phase: false,
            wgmma_persist: false,
            tf32_bf16x3: false,
        }
    }

    pub fn with_wgmma(self, wgmma: bool) -> Self {
        Self { wgmma, ..self }
    }

    pub fn with_wgmma_pairs(self, wgmma_pairs: bool) -> Self {
        Self {
            wgmma_pairs,
            ..self
        }
    }

    pub fn with_wgmma_m256(self, wgmma_m256: Reach) -> Self {
        Self { wgmma_m256, ..self }
    }

    pub fn with_wgmma_ws(self, wgmma_ws: bool) -> Self {
        Self { wgmma_ws, ..self }
    }

    pub fn with_wgmma_tma(self, wgmma_tma: Reach) -> Self {
        Self { wgmma_tma, ..self }
    }

    pub fn with_wgmma_n64_weights(self, wgmma_n64_weights: bool) -> Self {
        Self {
            wgmma_n64_weights,
            ..self
        }
    }

    pub fn with_split_waves(self, split_waves: bool) -> Self {
        Self {
            split_waves,
            ..self
        }
    }

    pub fn with_wgmma_cols_weights(self, wgmma_cols_weights: Reach) -> Self {
        Self {
            wgmma_cols_weights,
            ..self
        }
    }

    pub fn with_wgmma_cols_gather(self, wgmma_cols_gather: Reach) -> Self {
        Self {
            wgmma_cols_gather,
            ..self
        }
    }

    pub fn with_wgmma_tf32_weights(self, wgmma_tf32_weights: Reach) -> Self {
        Self {
            wgmma_tf32_weights,
            ..self
        }
    }

    pub fn with_halo(self, halo: Reach) -> Self {
        Self { halo, ..self }
    }

    pub fn with_gather_l1(self, gather_l1: Reach) -> Self {
        Self { gather_l1, ..self }
    }

    pub fn with_phase(self, phase: bool) -> Self {
        Self { phase, ..self }
    }

    pub fn with_wgmma_persist(self, wgmma_persist: bool) -> Self {
        Self {
            wgmma_persist,
            ..self
        }
    }

    pub fn with_tf32_bf16x3(self, tf32_bf16x3: bool) -> Self {
        Self {
            tf32_bf16x3,
            ..self
        }
    }

    /// The device's SMs (`blocks` counts 4 blocks of CONV_THREADS per SM).
    pub fn sms(self) -> u32 {
        (self.blocks / 4).max(1)
    }
}

/// The GEMM shape of a pass: rows, columns, the longest reduction, and how many grid.z
/// slices run side by side before splitting (the stride phases of backward data).
struct Gemm {
    rows: u64,
    cols: u64,
    depth: u64,
    layers: u64,
}

/// The GEMM of a pass, over channels rounded up to a multiple of `multiple` where they
/// are part of the reduction or of the weight gradient's rows (the packed channels of the
/// tensor-core kernels; 1 for f32).
fn gemm(p: &Conv3dParams, pass: ConvPass, multiple: u64) -> Gemm {
    let v = |x: i32| x as u64;
    let pad = |c: i32| v(c).next_multiple_of(multiple);
    let taps = v(p.k_d) * v(p.k_h) * v(p.k_w);
    match pass {
        ConvPass::Forward => Gemm {
            rows: p.output_voxels() as u64,
            cols: v(p.cout),
            depth: taps * pad(p.cin),
            layers: 1,
        },
        ConvPass::BackwardData => {
            // The largest phase (largest_phase_grid); the residue with first tap 0 has
            // ceil(k / s) taps.
            let axes = [
                (p.k_d, p.stride_d),
                (p.k_h, p.stride_h),
                (p.k_w, p.stride_w),
            ];
            let rows: u64 = largest_phase_grid(p).iter().map(|&g| v(g)).product();
            let taps: u64 = axes.iter().map(|&(k, s)| v(k).div_ceil(v(s))).product();
            Gemm {
                rows: v(p.n) * rows,
                cols: v(p.cin),
                depth: taps * pad(p.cout),
                layers: axes.iter().map(|&(_, s)| v(s)).product(),
            }
        }
        ConvPass::BackwardWeight => Gemm {
            rows: taps * pad(p.cin),
            cols: v(p.cout),
            depth: p.output_voxels() as u64,
            layers: 1,
        },
    }
}

/// Backward data's largest stride phase's voxels per axis (d, h, w): r = 0, ceil(in / s).
fn largest_phase_grid(p: &Conv3dParams) -> [i32; 3] {
    let axes = [
        (p.in_d, p.stride_d),
        (p.in_h, p.stride_h),
        (p.in_w, p.stride_w),
    ];
    axes.map(|(i, s)| (i + s - 1) / s)
}

/// (splits, elements per split) of a reduction of `depth` in steps of `bk` for `tiles`
/// tiles of `kernel` on `target`: split only when the tiles fill less than half the device
/// (a split writes every result once per slice and costs a sum, which a full wave does not
/// repay), into slices of at least `MIN_STEPS_PER_SPLIT` steps: as many as one wave holds,
/// or with `split_waves`, the count whose whole waves take least by `split_cost`.
fn split_reduction(
    kernel: &ConvKernel,
    target: ConvTarget,
    tiles: u64,
    depth: u64,
    bk: u64,
    max_splits: u64,
) -> (u64, u64) {
    // `target.blocks` counts 4 blocks of CONV_THREADS per SM; a kernel fills an SM with
    // as many of its own blocks as the SM holds at once.
    let wave = target.blocks as u64 * kernel.resident_threads_per_sm() as u64
        / (4 * kernel.threads()) as u64;
    let steps = depth.div_ceil(bk);
    let useful = (steps / MIN_STEPS_PER_SPLIT).max(1).min(max_splits);
    let one_wave = (wave / tiles).clamp(1, useful);
    let splits = if target.split_waves && one_wave > 1 {
        let most = (MAX_SPLIT_WAVES * wave / tiles).clamp(1, useful);
        // A split of s takes slices of ceil(steps / s) steps, which may need fewer than s.
        let slices = |s: u64| steps.div_ceil(steps.div_ceil(s));
        (one_wave..=most)
            .map(slices)
            .min_by_key(|&s| (split_cost(tiles, s, steps, wave), s))
            .unwrap_or(one_wave)
    } else {
        one_wave
    };
    let split_len = steps.div_ceil(splits) * bk;
    (depth.div_ceil(split_len).max(1), split_len)
}

/// The time, in K steps, of `tiles` tiles split `splits` ways over `steps` steps, a wave
/// holding `wave` blocks: whole waves, each as long as a block's slice and its overhead.
/// At 8192 steps, one wave of 27 tiles split 4 ways (108 of 132 blocks) costs 2056, four
/// waves split 19 ways (513 blocks) 1760.
fn split_cost(tiles: u64, splits: u64, steps: u64, wave: u64) -> u64 {
    (tiles * splits).div_ceil(wave) * (steps.div_ceil(splits) + BLOCK_OVERHEAD_STEPS)
}

/// Whether a grid fits the device's limits (and the kernels' int block indices).
fn fits_grid(grid: [u64; 3]) -> bool {
    grid[0] <= i32::MAX as u64 && grid[1] <= MAX_GRID_YZ && grid[2] <= MAX_GRID_YZ
}

/// Elements of a pass's result (y, dx or dw).
fn result_len(p: &Conv3dParams, pass: ConvPass) -> usize {
    match pass {
        ConvPass::Forward => p.output_voxels() * p.cout as usize,
        ConvPass::BackwardData => p.input_voxels() * p.cin as usize,
        ConvPass::BackwardWeight => p.weight_len(),
    }
}

/// The tensor-core tile for a result of `cols` columns: the narrowest that holds them up
/// to 64, beyond that 128 wide unless 64-wide tiles leave fewer columns idle (e.g. 320).
fn tc_tile(cols: u64) -> ConvTile {
    let idle = |bn: u64| cols.next_multiple_of(bn) - cols;
    if cols <= 32 {
        ConvTile::TcN32
    } else if cols <= 64 || idle(64) < idle(128) {
        ConvTile::TcN64
    } else {
        ConvTile::TcN128
    }
}

/// A pass as the halo kernels see it (kernels/conv3d_halo.cu): a stride-1 convolution of
/// A bordered into volumes of `result + k - 1` voxels per axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HaloGeometry {
    /// Voxels of the result (y, or dx; y for backward weights) per axis.
    result: [i32; 3],
    /// Where A (x, or dy in backward data) sits in its bordered volumes.
    border: ConvBorder,
    /// Where backward data places dy in its bordered volumes: k - 1 - pad_before.
    flipped_before: [i32; 3],
}

impl HaloGeometry {
    /// None where the halo kernels do not run the pass: a stride other than 1, a kernel
    /// narrower than 2 along w (nothing to reuse) or wider than `CONV_HALO_MAX_KW`, or rows
    /// the kernels' 32-bit indices cannot reach (a block reads up to a tap row's span and a
    /// tile past the last row).
    fn new(p: &Conv3dParams, pass: ConvPass) -> Option<Self> {
        let k = [p.k_d, p.k_h, p.k_w];
        let pad = [p.pad_d, p.pad_h, p.pad_w];
        let input = [p.in_d, p.in_h, p.in_w];
        let output = [p.out_d, p.out_h, p.out_w];
        if p.strided() || !(2..=CONV_HALO_MAX_KW as i32).contains(&p.k_w) {
            return None;
        }
        let flipped_before = [0, 1, 2].map(|i| k[i] - 1 - pad[i]);
        let (result, source, before) = match pass {
            ConvPass::Forward | ConvPass::BackwardWeight => (output, input, pad),
            ConvPass::BackwardData => (input, output, flipped_before),
        };
        let dims = [0, 1, 2].map(|i| result[i] + k[i] - 1);
        let halo = Self {
            result,
            border: ConvBorder {
                n: p.n,
                source,
                before,
                dims,
            },
            flipped_before,
        };
        let [_, h, w] = dims.map(|v| v as u64);
        let tap_span = k[0] as u64 * h * w + k[1] as u64 * w;
        (halo.rows() + tap_span + 2 * CONV_TC_BM as u64 <= i32::MAX as u64).then_some(halo)
    }

    /// Rows of the bordered grid that one sample's blocks cover: its planes z < result.
    fn rows_per_sample(&self) -> u64 {
        let [_, h, w] = self.border.dims;
        self.result[0] as u64 * h as u64 * w as u64
    }

    /// Rows computed per result voxel: forward and backward data compute and drop the
    /// border columns and rows of each plane; backward weights reduces over the whole
    /// bordered volumes.
    fn overhead(&self, pass: ConvPass) -> f64 {
        let [d, h, w] = self.border.dims.map(|v| v as f64);
        let [rd, rh, rw] = self.result.map(|v| v as f64);
        match pass {
            ConvPass::BackwardWeight => (d * h * w) / (rd * rh * rw),
            _ => (h * w) / (rh * rw),
        }
    }

    /// Backward weights' dy in the bordered grid (zeros on the border rows) where backward
    /// data places it, so that where both grids agree (in == out: 'same') the two passes
    /// share one pack.
    fn result_border(&self) -> ConvBorder {
        ConvBorder {
            source: self.result,
            before: self.flipped_before,
            ..self.border
        }
    }

    /// Rows of all the bordered volumes.
    fn rows(&self) -> u64 {
        self.border.voxels()[1] as u64
    }
}

/// The halo kernels run a pass only where their planes' borders cost at most this share
/// of extra rows (e.g. 1.13 at 32 x 32, 1.27 at 16 x 16 with a 3 x 3 window).
const HALO_MAX_OVERHEAD: f64 = 1.2;

/// The packs of a tensor-core pass's operands (a, b); see kernels/conv3d_pipe.cu for the
/// layouts, and kernels/conv3d_halo.cu for a halo pass's bordered a (`halo`).
fn packs(
    g: &ConvGeometry,
    pass: ConvPass,
    precision: ConvPrecision,
    target_blocks: u32,
    halo: Option<&HaloGeometry>,
) -> Result<[ConvPack; 2]> {
    use ConvPackKind::*;
    let x = [g.n * g.input_voxels(), 1, g.cin];
    let dy = [g.n * g.output_voxels(), 1, g.cout];
    let w = [g.kernel_volume(), g.cin, g.cout];
    let activation = halo.map_or(Rows, |h| Bordered(h.border));
    let result = halo.map_or(Rows, |h| Bordered(h.result_border()));
    let [(ka, a), (kb, b)] = match pass {
        ConvPass::Forward => [(activation, x), (Transposed, w)],
        ConvPass::BackwardData => [(activation, dy), (Rows, w)],
        ConvPass::BackwardWeight => [(activation, x), (result, dy)],
    };
    Ok([
        ConvPack::new(ka, precision, a, target_blocks)?,
        ConvPack::new(kb, precision, b, target_blocks)?,
    ])
}

/// The build variant of `module` whose activation gathers go through L1 (`<module>_l1`,
/// built from the kernel file's `voxseg-variant` line); a module without one is itself.
pub fn l1_variant(module: &'static str) -> &'static str {
    match module {
        "conv3d_pipe" => "conv3d_pipe_l1",
        "conv3d_wgmma" => "conv3d_wgmma_l1",
        other => other,
    }
}

/// The channels of each tap that a pass gathers from its activation: x's in forward and
/// backward weights, dy's in backward data.
fn gathered_channels(p: &Conv3dParams, pass: ConvPass) -> i32 {
    match pass {
        ConvPass::Forward | ConvPass::BackwardWeight => p.cin,
        ConvPass::BackwardData => p.cout,
    }
}

/// Whether a tensor-core pass runs from the build variant whose activation gathers go
/// through L1, within `reach`. Measured (bf16, an H100, 2026-11-26): where a tap's gathered
/// channels fit one 16-byte chunk and neighbouring taps read overlapping windows (a kernel
/// wider than its stride along some axis), L1 serves the neighbours' rows (the BraTS first
/// layer: forward 0.71x, backward weights 0.93x the time); elsewhere 0.94-1.29x.
fn gathers_through_l1(
    p: &Conv3dParams,
    pass: ConvPass,
    precision: ConvPrecision,
    reach: Reach,
) -> bool {
    reach.admits(
        gathered_channels(p, pass) <= precision.channel_multiple() as i32 && taps_overlap(p),
    )
}

/// Whether neighbouring taps read overlapping windows: the kernel is wider than its stride
/// along some axis (not so a transposed convolution's 2x2x2 stride-2 geometry, whose every
/// tap is a stride phase of its own).
fn taps_overlap(p: &Conv3dParams) -> bool {
    p.k_d > p.stride_d || p.k_h > p.stride_h || p.k_w > p.stride_w
}

/// Whether the phase kernel (kernels/conv3d_phase.cu) runs `pass`: tensor-core backward
/// data of a convolution whose kernel equals its stride along every axis, without padding,
/// whose output tiles its input exactly (in = out * stride: every dx voxel takes one tap),
/// and whose dy channels, packed, fit the `CONV_PHASE_MAX_STEPS` steps a block keeps.
fn phase_runs(p: &Conv3dParams, pass: ConvPass, precision: ConvPrecision) -> bool {
    let Some(bytes) = precision.packed_bytes() else {
        return false;
    };
    let axes = [
        (p.k_d, p.stride_d, p.pad_d, p.in_d, p.out_d),
        (p.k_h, p.stride_h, p.pad_h, p.in_h, p.out_h),
        (p.k_w, p.stride_w, p.pad_w, p.in_w, p.out_w),
    ];
    let reduction_bytes = (p.cout as usize).next_multiple_of(precision.channel_multiple()) * bytes;
    pass == ConvPass::BackwardData
        && axes
            .iter()
            .all(|&(k, s, pad, input, output)| k == s && pad == 0 && input == output * s)
        && reduction_bytes <= (CONV_PHASE_MAX_STEPS * CONV_PIPE_STEP_BYTES) as usize
}

/// Whether the measured rule runs forward or backward data into 64 columns on the
/// transposed tiles (`ConvTile::WgTmaCols`, `WgTmaColsSw64`) rather than the 128 x 64 ones.
/// Measured on an H200 (2026-11-28, BENCHMARKS.md), against the plan without them: where
/// the taps overlap, 0.79-1.00x the time (bf16 and tf32: the BraTS layers at 128^3 to 8^3,
/// stride 1 and 2, 32 to 640 channels a tap), but for bf16 backward data of a strided
/// convolution (enc2.conv0: 1.02x in one call, 1.11x in another; tf32 0.93x); a
/// transposed convolution's 2x2x2 stride-2 passes, 1.01-1.57x.
fn cols_gather_measured(p: &Conv3dParams, pass: ConvPass, precision: ConvPrecision) -> bool {
    let strided_bf16_data =
        p.strided() && pass == ConvPass::BackwardData && precision == ConvPrecision::Bf16;
    taps_overlap(p) && !strided_bf16_data
}

/// Whether the measured rule runs backward weights into 64 columns on the transposed tile
/// (`ConvTile::WgTmaCols`) rather than the 128 x 64 one: where the taps overlap and the
/// reduction runs over at least `COLS_WEIGHTS_MIN_VOXELS` of dy's voxels (n x D x H x W:
/// 2 x 64^3 = 2^19 for the BraTS step's 64^3 layers) at bf16, `COLS_WEIGHTS_MIN_VOXELS_TF32`
/// at tf32 (over channel-major packs). Measured on an H200 (2026-11-28, BENCHMARKS.md),
/// against the 128 x 64 tile: bf16 0.61-0.97x over 1024 voxels and more (the BraTS layers
/// at 64^3 to 8^3), 1.10x over 128 (4^3; 8^3 at stride 2), a transposed convolution's
/// 2x2x2 stride 2 1.35-1.45x; tf32 0.74-0.84x over 2 x 64^3, 1.07x over 2 x 32^3,
/// 0.96-1.14x over 2 x 8^3, 1.06-1.11x over 2 x 4^3.
fn cols_weights_measured(p: &Conv3dParams, precision: ConvPrecision) -> bool {
    let min_voxels = match precision {
        ConvPrecision::Tf32 => COLS_WEIGHTS_MIN_VOXELS_TF32,
        _ => COLS_WEIGHTS_MIN_VOXELS,
    };
    taps_overlap(p) && p.output_voxels() as u64 >= min_voxels
}

/// Whether the measured rule runs tf32 backward weights on the tensor memory accelerator's
/// tiles over channel-major packs (`ConvPlan::tma_grid_weights`): stride 1, into the
/// 128-column tiles (`tc_tile`), over at least `TF32_WEIGHTS_MIN_MACS` multiply-adds
/// (`gm`). Measured on an H200 (2026-11-28, call 10, BENCHMARKS.md) with both channel-major
/// packs made on every call, against mma.sync over the row packs (which the norms write in
/// a training step, so kept between calls): the BraTS layers at 16^3 into 256 channels and
/// at 32^3 into 128, 1.5e10-5.8e10 multiply-adds, 0.72-0.94x the time; on 128-column
/// tiles, 16^3 and 8^3 at 1.8e9-3.6e9, 1.05-1.26x, and strided layers (transposed
/// convolutions' too) 1.66-3.99x; on 64-column tiles (320 channels too), 1.29-2.92x.
fn tf32_weights_measured(p: &Conv3dParams, gm: &Gemm) -> bool {
    !p.strided()
        && tc_tile(gm.cols) == ConvTile::TcN128
        && gm.rows * gm.cols * gm.depth >= TF32_WEIGHTS_MIN_MACS
}

/// Whether the measured rule runs a pass's 128 x 128 tensor-memory-accelerator tiles as
/// 256 x 128 (`ConvPlan::tma`): forward and backward data where the 128-row tiles number
/// more than the SMs, backward weights (whose reduction, `gm.depth`, is over voxels) where
/// it takes at least `TMA_M256_WEIGHT_MIN_MACS` multiply-adds.
fn tma_m256_measured(gm: &Gemm, weights: bool, target: ConvTarget) -> bool {
    if weights {
        gm.rows * gm.cols * gm.depth >= TMA_M256_WEIGHT_MIN_MACS
    } else {
        gm.rows.div_ceil(CONV_TC_BM as u64) * gm.cols.div_ceil(128) * gm.layers
            > target.sms() as u64
    }
}

impl ConvPlan {
    /// The module whose kernel runs the pass: the kernel's, or its L1 variant.
    pub fn module(&self) -> &'static str {
        if self.gather_l1 {
            l1_variant(self.kernel.module())
        } else {
            self.kernel.module()
        }
    }

    /// The plan for `pass` of the convolution `g` at `precision` on `target`, splitting the
    /// reduction until about `target.blocks` blocks run.
    pub fn new(
        g: &ConvGeometry,
        pass: ConvPass,
        precision: ConvPrecision,
        target: ConvTarget,
    ) -> Result<Self> {
        let target_blocks = target.blocks;
        let p = conv_params(g)?;
        check_packed_strides(g, precision)?;
        let tensor_cores = precision != ConvPrecision::F32;
        if let Some(plan) = Self::bf16x3(g, pass, precision, target)? {
            return Ok(plan);
        }
        if let Some(plan) = Self::phase(g, &p, pass, precision, target)? {
            return Ok(plan);
        }
        if let Some(plan) = Self::tma(g, &p, pass, precision, target)? {
            return Ok(plan);
        }
        let gm = gemm(&p, pass, precision.channel_multiple() as u64);
        let tile = if tensor_cores {
            // wgmma reads backward weights' mn-major tiles only in 16-bit types and in blocks
            // of 64 columns. Where the wgmma kernels run is what an H100 measured
            // (2026-11-26, BENCHMARKS.md), against mma.sync on each case:
            // - 128 columns: wgmma, 0.4-0.94x the time, except over a single step (1.0-1.2x);
            // - 64 columns: wgmma where its tiles fill less than one per SM (0.72-0.97x;
            //   with one block per SM its step is bound by issuing the copies, and on a
            //   full grid mma.sync's two blocks per SM hide that better: 1.05-1.5x);
            //   backward weights too, since its steps fill their voxel tables without
            //   divisions (9505e1b): the split reductions over 32^3 to 128^3 took
            //   0.53-0.68x mma.sync's time (2026-11-27), where they had taken 1.09-1.47x
            //   (2026-11-26). On
            //   full grids the wgmma pair of blocks per SM (a 4-stage ring each), where the
            //   target has it, over more than 2 steps: 0.87-0.98x mma.sync's time; over 1
            //   or 2 (a head's backward data, 4^3 and 8^3 backward weights) 1.02-1.07x;
            // - 32 columns: mma.sync, 5-25% faster, except over reductions of more than 2
            //   and at most 4 wgmma steps, where wgmma was 13-17% faster (a first layer's
            //   27 taps of few channels, a 256-channel head); over 1 or 2 steps (heads of
            //   at most 128 channels, a transposed convolution's one-tap phases) mma.sync
            //   was 2-33% faster. These step counts were measured at bf16 only; a tf32
            //   step holds half as many channels.
            let mn_major = pass == ConvPass::BackwardWeight;
            let step = wgmma_probe_depth(precision) as u64;
            let wgmma_n64_tiles =
                gm.rows.div_ceil(CONV_TC_BM as u64) * gm.cols.div_ceil(64) * gm.layers;
            let n64_weights = !mn_major || target.wgmma_n64_weights;
            let n32_steps = WGMMA_N32_MIN_STEPS * step + 1..=WGMMA_N32_MAX_STEPS * step;
            let wgmma = match tc_tile(gm.cols) {
                t if !target.wgmma || (mn_major && precision == ConvPrecision::Tf32) => t,
                ConvTile::TcN128
                    if gm.depth > step
                        && target.wgmma_m256 == Reach::All
                        && gm.rows > CONV_TC_BM as u64 =>
                {
                    ConvTile::WgM256
                }
                ConvTile::TcN128 if gm.depth > step => ConvTile::WgN128,
                ConvTile::TcN64 if wgmma_n64_tiles < target.sms() as u64 && n64_weights => {
                    ConvTile::WgN64
                }
                ConvTile::TcN64
                    if target.wgmma_pairs
                        && wgmma_n64_tiles >= target.sms() as u64
                        && gm.depth > WGMMA_PAIR_MIN_STEPS * step
                        && n64_weights =>
                {
                    ConvTile::WgN64Pair
                }
                ConvTile::TcN32 if !mn_major && n32_steps.contains(&gm.depth) => ConvTile::WgN32,
                t => t,
            };
            // The warp-specialized tiles take the two-warpgroup wgmma tiles' places, the
            // pair's too, where asked for (`ConvTarget::wgmma_ws`): an H100 measured them
            // 0.96-1.59x the time of the tiles they replace, most 1.05-1.35x (2026-11-27).
            match wgmma {
                ConvTile::WgN128 if target.wgmma_ws => ConvTile::WgWs128,
                ConvTile::WgN64 | ConvTile::WgN64Pair if target.wgmma_ws => ConvTile::WgWs64,
                t => t,
            }
        } else if gm.cols <= CONV_NARROW_BN as u64 {
            ConvTile::Narrow
        } else if pass != ConvPass::BackwardWeight && gm.depth <= CONV_SHALLOW_BK as u64 {
            ConvTile::Shallow
        } else {
            ConvTile::Wide
        };
        if let Some(plan) = Self::halo(g, &p, pass, precision, tile, target)? {
            return Ok(plan);
        }
        let kernel = ConvKernel {
            pass,
            precision,
            tile,
        };
        let (bm, bn, bk) = kernel.shape();
        let (bm, bn, bk) = (bm as u64, bn as u64, bk as u64);
        let tiles = gm.rows.div_ceil(bm) * gm.cols.div_ceil(bn) * gm.layers;
        let max_splits = (MAX_GRID_YZ / gm.layers).max(1);
        let (splits, split_len) = split_reduction(&kernel, target, tiles, gm.depth, bk, max_splits);
        let grid = [
            gm.rows.div_ceil(bm),
            gm.cols.div_ceil(bn),
            gm.layers * splits,
        ];
        if !fits_grid(grid) {
            return Err(Error::shape(
                "conv3d (cuda)",
                format!("{g:?}: grid {grid:?} exceeds the device's limits"),
            ));
        }
        let packs = if tensor_cores {
            Some(packs(g, pass, precision, target_blocks, None)?)
        } else {
            None
        };
        let gather_l1 = tensor_cores && gathers_through_l1(&p, pass, precision, target.gather_l1);
        Ok(Self {
            gather_l1,
            ..Self::launch(kernel, &p, grid, [splits, split_len], packs)
        })
    }

    /// The plan of `kernel` on `p` over `grid`, its reduction cut into `splits` slices of
    /// `split_len`.
    fn launch(
        kernel: ConvKernel,
        p: &Conv3dParams,
        grid: [u64; 3],
        [splits, split_len]: [u64; 2],
        packs: Option<[ConvPack; 2]>,
    ) -> Self {
        Self {
            kernel,
            params: Conv3dParams {
                splits: splits as i32,
                split_len: split_len as i32,
                ..*p
            },
            dims: LaunchDims {
                shared_bytes: kernel.shared_bytes(),
                ..LaunchDims::linear(grid.map(|v| v as u32), kernel.threads())
            },
            out_len: result_len(p, kernel.pass),
            packs,
            gather_l1: false,
            tma: None,
        }
    }

    /// The phase kernel's plan (`ConvTile::Phase64`) where the target asks for it and
    /// `phase_runs` says the kernel runs the pass: grid.x over dy's rows in blocks of 128,
    /// grid.y over shares of the (tap, 64 columns) tiles, as few shares as give at least
    /// two waves of resident blocks (each share reads the block's rows again), each share
    /// as long as those and none empty.
    fn phase(
        g: &ConvGeometry,
        p: &Conv3dParams,
        pass: ConvPass,
        precision: ConvPrecision,
        target: ConvTarget,
    ) -> Result<Option<Self>> {
        if !(target.phase && phase_runs(p, pass, precision)) {
            return Ok(None);
        }
        let kernel = ConvKernel {
            pass,
            precision,
            tile: ConvTile::Phase64,
        };
        let v = |x: i32| x as u64;
        let row_blocks = (p.output_voxels() as u64).div_ceil(CONV_TC_BM as u64);
        let tiles = v(p.k_d) * v(p.k_h) * v(p.k_w) * v(p.cin).div_ceil(CONV_PHASE_BN as u64);
        let waves = 2 * (target.sms() * CONV_PHASE_BLOCKS_PER_SM) as u64;
        let shares = waves.div_ceil(row_blocks).clamp(1, tiles.min(MAX_GRID_YZ));
        let shares = tiles.div_ceil(tiles.div_ceil(shares));
        let grid = [row_blocks, shares, 1];
        if !fits_grid(grid) {
            return Err(Error::shape(
                "conv3d (cuda)",
                format!("{g:?}: grid {grid:?} exceeds the device's limits"),
            ));
        }
        let packs = packs(g, pass, precision, target.blocks, None)?;
        let depth = (p.cout as u64).next_multiple_of(precision.channel_multiple() as u64);
        Ok(Some(Self::launch(kernel, p, grid, [1, depth], Some(packs))))
    }

    /// The halo plan of a pass that would run on the mma.sync `tile`, where the target's
    /// halo reach takes its halo tile, the halo kernels run the pass (`HaloGeometry::new`) at most
    /// `HALO_MAX_OVERHEAD` extra rows, and, for forward and backward data, its grid fills
    /// the device's resident blocks without a split (those kernels have none; backward
    /// weights splits its reduction as the other kernels do).
    fn halo(
        g: &ConvGeometry,
        p: &Conv3dParams,
        pass: ConvPass,
        precision: ConvPrecision,
        tile: ConvTile,
        target: ConvTarget,
    ) -> Result<Option<Self>> {
        let multiple = precision.channel_multiple() as u64;
        let gm = gemm(p, pass, multiple);
        let tile = match (pass, tile) {
            (ConvPass::BackwardWeight, ConvTile::TcN32) if p.cin as u64 <= 32 => {
                ConvTile::HaloWeight32x32
            }
            (ConvPass::BackwardWeight, ConvTile::TcN32) => ConvTile::HaloWeight64x32,
            (ConvPass::BackwardWeight, ConvTile::TcN64) => ConvTile::HaloWeight64x64,
            (ConvPass::BackwardWeight, ConvTile::TcN128) => ConvTile::HaloWeight64x128,
            (_, ConvTile::TcN128) => ConvTile::HaloN128,
            (_, ConvTile::TcN64) => ConvTile::HaloN64,
            (_, ConvTile::TcN32) => ConvTile::HaloN32,
            _ => return Ok(None),
        };
        let halo = HaloGeometry::new(p, pass).filter(|h| h.overhead(pass) <= HALO_MAX_OVERHEAD);
        let kernel = ConvKernel {
            pass,
            precision,
            tile,
        };
        let (bm, bn, bk) = kernel.shape();
        // An H100 measured the 32-column tiles at 0.54-0.96x the gathering kernels' time,
        // the wider ones at 1.05-1.8x but for backward weights into 64 columns at 64^3 (0.92-1.0x;
        // bf16 and tf32, 2026-11-26, BENCHMARKS.md).
        let (true, Some(halo)) = (target.halo.admits(bn <= 32), halo) else {
            return Ok(None);
        };
        let (bm, bn, bk) = (bm as u64, bn as u64, bk as u64);
        // At most half of what the tiles hold may be padding: the channels of a tap in a
        // reduction step (forward, backward data), or in a block's rows (backward weights).
        // A first layer's 4 channels padded to 8 would fill a quarter of either.
        let held = if pass == ConvPass::BackwardWeight {
            bm
        } else {
            bk
        };
        let channels = (gathered_channels(p, pass) as u64).next_multiple_of(multiple);
        if channels.next_multiple_of(held) > 2 * channels {
            return Ok(None);
        }
        let (grid, splits, split_len) = if pass == ConvPass::BackwardWeight {
            let tap_rows = p.k_d as u64 * p.k_h as u64;
            let tiles = tap_rows * (p.cin as u64).next_multiple_of(multiple).div_ceil(bm);
            let tiles = [tiles, gm.cols.div_ceil(bn)];
            let (splits, split_len) = split_reduction(
                &kernel,
                target,
                tiles[0] * tiles[1],
                halo.rows(),
                bk,
                MAX_GRID_YZ,
            );
            ([tiles[0], tiles[1], splits], splits, split_len)
        } else {
            let grid = [
                p.n as u64 * halo.rows_per_sample().div_ceil(bm),
                gm.cols.div_ceil(bn),
                1,
            ];
            let resident =
                (target.sms() * kernel.resident_threads_per_sm() / kernel.threads()) as u64;
            if grid[0] * grid[1] < resident {
                return Ok(None);
            }
            (grid, 1, gm.depth)
        };
        if !fits_grid(grid) {
            return Ok(None);
        }
        // The bordered pack is larger than the plain one: past its kernel's 32-bit indices
        // the pass keeps the gathering kernels.
        let Ok(packs) = packs(g, pass, precision, target.blocks, Some(&halo)) else {
            return Ok(None);
        };
        Ok(Some(Self::launch(
            kernel,
            p,
            grid,
            [splits, split_len],
            Some(packs),
        )))
    }

    /// The plan of a pass on the tiles the tensor memory accelerator fills, where the
    /// target has them on (`ConvTarget::wgmma_tma`) and they take it: forward and backward
    /// data (bf16, tf32) and bf16 backward weights, into more than 32 columns, over
    /// reduction channels padded to whole boxes (a row of 128 bytes, or at bf16 half a row
    /// on `WgTma128Sw64` and `WgTma64Sw64`; 64 channels for backward weights' blocks of 64
    /// rows), whose boxes overhang the result by at most
    /// `TMA_MAX_OVERHANG`. Backward data's boxes tile the largest stride phase's grid, in
    /// every phase (grid.z). tf32 backward weights goes to `tma_grid_weights`.
    ///
    /// [`Reach::Measured`] is where an H100 measured them faster (bf16 and tf32,
    /// 2026-11-27, BENCHMARKS.md), against the plan without them:
    /// - backward weights (bf16): every case, 0.36-0.95x the time;
    /// - forward and backward data on 128 columns over reductions of 512 (taps x channels)
    ///   and more: 0.69-0.94x; over 256 (a transposed 2x2x2 convolution's one-tap phases
    ///   of 256 channels), 1.07x;
    /// - on 64 columns over 2048 and more: 0.66-0.95x; over 128 to 1728, 1.03-1.80x;
    /// - the two 64-byte-swizzled boxes a step (`WgTma128Sw64`, `WgTma64Sw64`: reductions
    ///   of 32 channels a tap, 256 to 864 long): 1.20-1.38x, so only within `Reach::All`.
    ///
    /// The 256-row tiles (`ConvTarget::wgmma_m256`) against 128 rows on these tiles:
    /// forward and backward data 0.85-0.93x where the 128-row tiles number 256 and more,
    /// 1.05-1.42x at 128 and fewer (a 132-SM device); backward weights 0.85-0.88x over
    /// 2.9e10 multiply-adds and more, 1.12-1.83x at 1.5e10 and fewer. Where the 256-row
    /// tile's boxes do not tile the result, the 128-row tile does the pass. Backward
    /// weights into 64 columns take none of these tiles where `wgmma_n64_weights` is off.
    /// The transposed tiles (`ConvTile::WgTmaCols`, `WgTmaColsSw64`), within the target's
    /// reach for them (`cols_gather_measured`, `cols_weights_measured`), replace the
    /// 128 x 64 ones: for forward and backward data within any `wgmma_tma` reach but off,
    /// where their 256-voxel boxes tile the result.
    fn tma(
        g: &ConvGeometry,
        p: &Conv3dParams,
        pass: ConvPass,
        precision: ConvPrecision,
        target: ConvTarget,
    ) -> Result<Option<Self>> {
        if !(target.wgmma && target.wgmma_tma != Reach::Off) {
            return Ok(None);
        }
        match (pass, precision) {
            (_, ConvPrecision::F32) => return Ok(None),
            (ConvPass::BackwardWeight, ConvPrecision::Tf32) => {
                return Self::tma_grid_weights(p, target);
            }
            _ => {}
        }
        let weights = pass == ConvPass::BackwardWeight;
        let gm = gemm(p, pass, precision.channel_multiple() as u64);
        // The reduction's channels fill whole boxes: a 128-byte row (forward and backward
        // data; at bf16 also half a row, two boxes a step, the 64-byte swizzle), or whole
        // 64-row blocks of one tap (backward weights).
        let channels = match pass {
            ConvPass::Forward | ConvPass::BackwardWeight => p.cin,
            ConvPass::BackwardData => p.cout,
        };
        let padded = (channels as u64).next_multiple_of(precision.channel_multiple() as u64);
        let row = wgmma_probe_depth(precision) as u64;
        let (sw64, block) = if weights {
            (false, TMA_WEIGHT_BLOCK_ROWS as u64)
        } else if precision == ConvPrecision::Bf16 && !padded.is_multiple_of(row) {
            (true, row / 2)
        } else {
            (false, row)
        };
        if !padded.is_multiple_of(block) {
            return Ok(None);
        }
        let tile = match tc_tile(gm.cols) {
            ConvTile::TcN128 if sw64 => ConvTile::WgTma128Sw64,
            ConvTile::TcN64 if sw64 => ConvTile::WgTma64Sw64,
            ConvTile::TcN128 => ConvTile::WgTma128,
            ConvTile::TcN64 => ConvTile::WgTma64,
            _ => return Ok(None),
        };
        let measured = match tile {
            _ if weights => true,
            ConvTile::WgTma128 => gm.depth >= TMA_MIN_DEPTH_128,
            ConvTile::WgTma64 => gm.depth >= TMA_MIN_DEPTH_64,
            _ => false,
        };
        let kernel = |tile| ConvKernel {
            pass,
            precision,
            tile,
        };
        // Forward and backward data into 64 columns computed transposed within its reach,
        // whatever the 128 x 64 tiles' measured reach: their slow cases are those it is
        // for.
        let cols_gather = match tile {
            ConvTile::WgTma64 => ConvTile::WgTmaCols,
            ConvTile::WgTma64Sw64 => ConvTile::WgTmaColsSw64,
            _ => tile,
        };
        if !weights
            && cols_gather != tile
            && target
                .wgmma_cols_gather
                .admits(cols_gather_measured(p, pass, precision))
        {
            let plan = Self::tma_tile(g, p, kernel(cols_gather), target, &gm)?;
            if let Some(plan) = plan {
                return Ok(Some(plan.persistent(target)));
            }
        }
        // Backward weights into 64 columns keeps off wgmma where the target says so.
        let n64_weights_off = weights && tile == ConvTile::WgTma64 && !target.wgmma_n64_weights;
        if !target.wgmma_tma.admits(measured) || n64_weights_off {
            return Ok(None);
        }
        // 64 columns of bf16 backward weights computed transposed within its reach.
        if weights
            && tile == ConvTile::WgTma64
            && precision == ConvPrecision::Bf16
            && target
                .wgmma_cols_weights
                .admits(cols_weights_measured(p, precision))
        {
            let plan = Self::tma_tile(g, p, kernel(ConvTile::WgTmaCols), target, &gm)?;
            if plan.is_some() {
                return Ok(plan);
            }
        }
        // The 256-row tile where it is asked for and its boxes fit; else 128 rows.
        if tile == ConvTile::WgTma128
            && gm.rows > CONV_TC_BM as u64
            && target
                .wgmma_m256
                .admits(tma_m256_measured(&gm, weights, target))
        {
            let plan = Self::tma_tile(g, p, kernel(ConvTile::WgTma256), target, &gm)?;
            if plan.is_some() {
                return Ok(plan);
            }
        }
        Self::tma_tile(g, p, kernel(tile), target, &gm)
    }

    /// The plan of `kernel`, a tensor memory accelerator's tile, on a pass whose GEMM is
    /// `gm`, where its boxes tile the result (see `tma`).
    fn tma_tile(
        g: &ConvGeometry,
        p: &Conv3dParams,
        kernel: ConvKernel,
        target: ConvTarget,
        gm: &Gemm,
    ) -> Result<Option<Self>> {
        let (pass, precision) = (kernel.pass, kernel.precision);
        let weights = pass == ConvPass::BackwardWeight;
        let stride = [p.stride_d, p.stride_h, p.stride_w];
        let (bm, bn, bk) = kernel.shape();
        // The boxes tile the result's voxels (backward weights: dy's; backward data: the
        // largest stride phase's, r = 0, ceil(in / s) per axis), read at windows of the
        // stride (backward data: dy's at stride 1); a box is a row block, or backward
        // weights' reduction step.
        let (result, window_stride) = match pass {
            ConvPass::BackwardData => (largest_phase_grid(p), [1; 3]),
            _ => ([p.out_d, p.out_h, p.out_w], stride),
        };
        let box_voxels = if weights {
            TMA_WEIGHT_BOX_VOXELS as u32
        } else {
            bm
        };
        let Some(boxes) = ConvTmaBoxes::new(result, window_stride, box_voxels as i32) else {
            return Ok(None);
        };
        // Every phase's boxes, against the voxels they hold.
        let covered = boxes.padded_voxels(p.n) * gm.layers;
        let voxels = match pass {
            ConvPass::BackwardData => p.input_voxels() as u64,
            _ => p.n as u64 * result.iter().map(|&v| v as u64).product::<u64>(),
        };
        if covered as f64 > TMA_MAX_OVERHANG * voxels as f64 || covered > i32::MAX as u64 {
            return Ok(None);
        }
        let (bn, bk) = (bn as u64, bk as u64);
        // Forward and backward data: a row block per box (and phase), the reduction over
        // (tap, channel), the longest phase's; backward weights: the reduction over the
        // boxes' voxels.
        let (tiles, depth) = if weights {
            ([gm.rows.div_ceil(bm as u64), gm.cols.div_ceil(bn)], covered)
        } else {
            ([boxes.boxes(p.n), gm.cols.div_ceil(bn)], gm.depth)
        };
        let (splits, split_len) = split_reduction(
            &kernel,
            target,
            tiles[0] * tiles[1] * gm.layers,
            depth,
            bk,
            (MAX_GRID_YZ / gm.layers).max(1),
        );
        let grid = [tiles[0], tiles[1], splits * gm.layers];
        if !fits_grid(grid) {
            return Ok(None);
        }
        let packs = packs(g, pass, precision, target.blocks, None)?;
        Ok(Some(Self {
            tma: Some(ConvTmaTiling::Boxes(boxes)),
            ..Self::launch(kernel, p, grid, [splits, split_len], Some(packs))
        }))
    }

    /// `self`, a forward or backward data on the transposed tiles, run persistently
    /// (`ConvTile::WgTmaColsLoop`, `WgTmaColsSw64Loop`; kernels/conv3d_wgmma.cu,
    /// `vx_tma_gather_loop`) where the target asks for it and the reduction is not split:
    /// a block per SM (fewer for fewer tiles), each looping over the tiles of the grid it
    /// replaces; else `self`.
    fn persistent(self, target: ConvTarget) -> Self {
        let tile = match self.kernel.tile {
            ConvTile::WgTmaCols => ConvTile::WgTmaColsLoop,
            ConvTile::WgTmaColsSw64 => ConvTile::WgTmaColsSw64Loop,
            _ => return self,
        };
        if !target.wgmma_persist || self.splits() > 1 {
            return self;
        }
        let kernel = ConvKernel {
            tile,
            ..self.kernel
        };
        let tiles: u64 = self.dims.grid.iter().map(|&v| v as u64).product();
        let blocks = tiles.min(target.sms() as u64) as u32;
        Self {
            kernel,
            dims: LaunchDims {
                shared_bytes: kernel.shared_bytes(),
                ..LaunchDims::linear([blocks, 1, 1], kernel.threads())
            },
            ..self
        }
    }

    /// The plan of a tf32 backward weights on the tensor memory accelerator's tiles
    /// (kernels/conv3d_wgmma.cu, `vx_tma_backward_weights_kmajor`), where the target has
    /// them on (`ConvTarget::wgmma_tf32_weights`): wgmma reads tf32 only k-major, so x and dy
    /// are packed channel-major (`ConvPackKind::ChannelMajor`) into grids of one shape
    /// (`ConvTmaGrid`), dy's at 0 and x's one per stride phase, each tap reading one phase at
    /// one offset. Along an axis the taps read phase grid voxels o + q + before, q from
    /// floor(-pad / s) to floor((k - 1 - pad) / s), before = ceil(pad / s), so the grid is
    /// out + q_max - q_min long (along w, rounded up to whole 16-byte chunks); the reduction
    /// runs over all of its voxels, the border's adding zeros: with a 3^3 'same' kernel 1.27x
    /// the output's voxels at 32^3, 1.58x at 16^3, 2.34x at 8^3 (stride 1), 1.41x at 16^3
    /// (stride 2); for a 2^3 stride-2 one (a transposed convolution's) only w's rounding
    /// (none where the output's w is a multiple of 4). A tap's offset is then its offset
    /// along w within a chunk, and a box may only start at a chunk: x is packed once per
    /// such shift, at most 4 (three times for a 3^3 kernel at stride 1, twice at stride 2),
    /// and a tap reads the copy that starts its offset's remainder further on. x's channels
    /// fill whole 64-row blocks of one tap, results have more than 32 columns (the 128- and
    /// 64-column tiles as `tc_tile` picks them; 64 only where `wgmma_n64_weights` is on, and
    /// computed transposed, `ConvTile::WgTmaCols`, within `wgmma_cols_weights`; 128 as
    /// 256 x 128 within `wgmma_m256`). Everywhere, an H200 timed its kernels at
    /// 0.29-0.97x the mma.sync ones' time on the BraTS layers but the smallest (up to 1.78x
    /// at 8^3 and 4^3 into 320 channels; 2026-11-28, BENCHMARKS.md), yet the packs, made
    /// anew in each step, cost more than that saves: the training step took 83.5 ms
    /// against 77.5. So by default only within the measured reach, where the kernels and
    /// their packs together took less time (`tf32_weights_measured`).
    fn tma_grid_weights(p: &Conv3dParams, target: ConvTarget) -> Result<Option<Self>> {
        let (pass, precision) = (ConvPass::BackwardWeight, ConvPrecision::Tf32);
        let chunk = precision.channel_multiple() as u64;
        let gm = gemm(p, pass, chunk);
        if !target
            .wgmma_tf32_weights
            .admits(tf32_weights_measured(p, &gm))
            || !(p.cin as u32).is_multiple_of(TMA_GRID_BLOCK_ROWS)
        {
            return Ok(None);
        }
        // 256 x 128 by bf16's measured rule (`tma_m256_measured`: long reductions), which
        // a tf32 step, at half bf16's rate, can only favour more.
        let tile = match tc_tile(p.cout as u64) {
            ConvTile::TcN128
                if gm.rows > CONV_TC_BM as u64
                    && target
                        .wgmma_m256
                        .admits(tma_m256_measured(&gm, true, target)) =>
            {
                ConvTile::WgTma256
            }
            ConvTile::TcN128 => ConvTile::WgTma128,
            ConvTile::TcN64
                if target.wgmma_n64_weights
                    && target
                        .wgmma_cols_weights
                        .admits(cols_weights_measured(p, precision)) =>
            {
                ConvTile::WgTmaCols
            }
            ConvTile::TcN64 if target.wgmma_n64_weights => ConvTile::WgTma64,
            _ => return Ok(None),
        };
        let k = [p.k_d, p.k_h, p.k_w];
        let pad = [p.pad_d, p.pad_h, p.pad_w];
        let stride = [p.stride_d, p.stride_h, p.stride_w];
        let out = [p.out_d, p.out_h, p.out_w];
        let before: [i32; 3] = std::array::from_fn(|i| (pad[i] + stride[i] - 1) / stride[i]);
        let reach: [i32; 3] =
            std::array::from_fn(|i| (k[i] - 1 - pad[i]).div_euclid(stride[i]) + before[i]);
        let chunk_voxels = TMA_GRID_CHUNK_VOXELS;
        let dims = [
            out[0] + reach[0],
            out[1] + reach[1],
            (out[2] + reach[2] + chunk_voxels - 1) / chunk_voxels * chunk_voxels,
        ];
        // The taps' offsets along w run from 0 to reach[2].
        let x_shifts = (reach[2] + 1).min(chunk_voxels);
        let border = |source, before| ConvBorder {
            n: p.n,
            source,
            before,
            dims,
        };
        let x_grid = ConvPhaseGrid {
            border: border([p.in_d, p.in_h, p.in_w], before),
            stride,
            shifts: x_shifts,
        };
        let dy_grid = ConvPhaseGrid {
            border: border(out, [0; 3]),
            stride: [1; 3],
            shifts: 1,
        };
        let voxels = dy_grid.phase_len() as u64;
        let row_lens =
            [x_grid.voxels(), dy_grid.voxels()].map(|v| (v as u64).next_multiple_of(chunk));
        // A tap's offset (a phase's first voxel and a span of the grid) plus a step's box
        // stays within the kernel's int coordinates.
        if row_lens[0] + voxels + TMA_GRID_STEP_VOXELS as u64 > i32::MAX as u64 {
            return Ok(None);
        }
        let kernel = ConvKernel {
            pass,
            precision,
            tile,
        };
        let (bm, bn, bk) = kernel.shape();
        let tiles = [gm.rows.div_ceil(bm as u64), gm.cols.div_ceil(bn as u64)];
        let (splits, split_len) = split_reduction(
            &kernel,
            target,
            tiles[0] * tiles[1],
            voxels,
            bk as u64,
            MAX_GRID_YZ,
        );
        let grid = [tiles[0], tiles[1], splits];
        if !fits_grid(grid) {
            return Ok(None);
        }
        // Packs past their kernel's 32-bit indices keep the pass on mma.sync.
        let pack = |grid, voxels, c: i32| {
            ConvPack::new(
                ConvPackKind::ChannelMajor(grid),
                precision,
                [voxels, 1, c as usize],
                target.blocks,
            )
        };
        let (Ok(x_pack), Ok(dy_pack)) = (
            pack(x_grid, p.input_voxels(), p.cin),
            pack(dy_grid, p.output_voxels(), p.cout),
        ) else {
            return Ok(None);
        };
        let packs = [x_pack, dy_pack];
        let tiling = ConvTmaGrid {
            dims,
            voxels: voxels as i32,
            row_lens: row_lens.map(|v| v as i32),
            x_shifts,
        };
        Ok(Some(Self {
            tma: Some(ConvTmaTiling::Grid(tiling)),
            ..Self::launch(kernel, p, grid, [splits, split_len], Some(packs))
        }))
    }

    /// tf32 backward weights as three bf16 products, where `target.tf32_bf16x3` asks: the
    /// bf16 plan of `g` over a batch of 3 n samples, whose operands are x packed as
    /// (hi, hi, lo) and dy as (hi, lo, hi) (`ConvPackCopies::Bf16x3`), so that the sum
    /// over the batch is hi hi' + hi lo' + lo hi'. That is x dy but for lo lo' and the
    /// rounding of lo, about 2^-16 of each product against tf32's 2^-11, on kernels whose
    /// backward weights read mn-major tiles on wgmma (which tf32 cannot) at twice tf32's
    /// rate. None elsewhere, and where the bf16 plan has none for 3 n samples: the
    /// geometry is `g`'s but for the batch, so only the kernels' 32-bit indices can refuse
    /// it, and the tf32 plan runs.
    fn bf16x3(
        g: &ConvGeometry,
        pass: ConvPass,
        precision: ConvPrecision,
        target: ConvTarget,
    ) -> Result<Option<Self>> {
        if !(target.tf32_bf16x3
            && pass == ConvPass::BackwardWeight
            && precision == ConvPrecision::Tf32)
        {
            return Ok(None);
        }
        let tripled = ConvGeometry { n: 3 * g.n, ..*g };
        let Ok(mut plan) = Self::new(&tripled, pass, ConvPrecision::Bf16, target) else {
            return Ok(None);
        };
        let Some([x, dy]) = plan.packs else {
            return Err(Error::config(
                "conv3d (cuda)",
                format!("the bf16 plan of {tripled:?} packs no operands"),
            ));
        };
        plan.packs = Some([
            x.bf16x3(0b100, target.blocks)?,
            dy.bf16x3(0b010, target.blocks)?,
        ]);
        Ok(Some(plan))
    }

    /// Whether the plan runs tf32 backward weights as three bf16 products (`bf16x3`).
    pub fn is_bf16x3(&self) -> bool {
        self.packs
            .is_some_and(|[x, _]| matches!(x.copies, ConvPackCopies::Bf16x3 { .. }))
    }

    /// The tiling and tensor maps (but their addresses) of a plan on the tensor memory
    /// accelerator's tiles, over its packed operands a and b.
    pub fn tma_maps(&self) -> Option<(ConvTmaTiling, [TiledMap; 2])> {
        let tiling = self.tma?;
        let (_, bn, _) = self.kernel.shape();
        let (pass, precision) = (self.kernel.pass, self.kernel.precision);
        let maps = match &tiling {
            ConvTmaTiling::Boxes(boxes) => TiledMap::operands(
                &self.params,
                precision,
                pass,
                boxes,
                bn,
                self.kernel.tile.is_sw64(),
            ),
            ConvTmaTiling::Grid(grid) => [
                TiledMap::channel_major(
                    self.params.cin,
                    grid.row_lens[0],
                    TMA_GRID_BLOCK_ROWS,
                    grid.x_shifts,
                ),
                TiledMap::channel_major(self.params.cout, grid.row_lens[1], bn, 1),
            ],
        };
        Some((tiling, maps))
    }

    pub fn splits(&self) -> usize {
        self.params.splits as usize
    }

    /// Length of the buffer the kernel writes: the result, or the stacked partials.
    pub fn workspace_len(&self) -> usize {
        self.out_len * self.splits()
    }

    /// The sum over the stacked partials that gives the result, when the reduction is split.
    pub fn partial_sum(&self) -> Option<Axis1> {
        (self.splits() > 1).then(|| Axis1 {
            outer: 1,
            mid: self.splits(),
            inner: self.out_len,
        })
    }

    /// Elements of the pass's f32 operands a and b (its packs' sources: a bf16x3 plan's
    /// kernel runs on three times as many samples), and of the bias it takes (None: none).
    pub fn operand_lens(&self) -> (usize, usize, Option<usize>) {
        let p = &self.params;
        let x = p.input_voxels() * p.cin as usize;
        let dy = p.output_voxels() * p.cout as usize;
        let (a, b, bias) = match self.kernel.pass {
            ConvPass::Forward => (x, p.weight_len(), Some(p.cout as usize)),
            ConvPass::BackwardData => (dy, p.weight_len(), Some(p.cin as usize)),
            ConvPass::BackwardWeight => (x, dy, None),
        };
        match &self.packs {
            Some([pack_a, pack_b]) => (pack_a.source_len(), pack_b.source_len(), bias),
            None => (a, b, bias),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Shape;
    use crate::tensor_ops::conv::{Conv3dSpec, ConvTranspose3dSpec, Padding};

    fn conv(x: [usize; 5], w: [usize; 5], stride: usize) -> ConvGeometry {
        let spec = Conv3dSpec {
            stride: [stride; 3],
            padding: Padding::Same,
        };
        ConvGeometry::conv3d(&Shape::new(&x), &Shape::new(&w), &spec).unwrap()
    }

    /// The H100's 132 SMs, as `Cuda::target_blocks` counts them.
    const H100: u32 = 4 * 132;

    /// tf32 backward weights as three bf16 products: the bf16 plan of three times the
    /// samples, over the f32 operands of `g`'s (the packs' sources), x packed (hi, hi, lo)
    /// and dy (hi, lo, hi); a batch whose tripled voxels exceed the kernels' 32-bit
    /// indices keeps the tf32 plan, and so do the other passes.
    #[test]
    fn tf32_backward_weights_as_three_bf16_products_plan() {
        let target = ConvTarget::new(H100)
            .with_wgmma(true)
            .with_wgmma_tma(Reach::Measured)
            .with_tf32_bf16x3(true);
        let g = conv([2, 16, 16, 16, 256], [3, 3, 3, 256, 256], 1);
        let plan = ConvPlan::new(&g, ConvPass::BackwardWeight, ConvPrecision::Tf32, target);
        let plan = plan.unwrap();
        assert_eq!(plan.kernel.precision, ConvPrecision::Bf16);
        assert_eq!(plan.params.n, 6);
        let x_len = 2 * 16 * 16 * 16 * 256;
        assert_eq!(plan.operand_lens(), (x_len, x_len, None));
        let [x, dy] = plan.packs.unwrap();
        assert_eq!(x.copies, ConvPackCopies::Bf16x3 { residual: 0b100 });
        assert_eq!(dy.copies, ConvPackCopies::Bf16x3 { residual: 0b010 });
        assert_eq!(x.packed_len(), 3 * x_len);
        assert!(matches!(x.args(), ConvPackArgs::RowsBf16x3(p) if p.pack.a == 2 * 4096));
        for pass in [ConvPass::Forward, ConvPass::BackwardData] {
            let plan = ConvPlan::new(&g, pass, ConvPrecision::Tf32, target).unwrap();
            assert_eq!(plan.kernel.precision, ConvPrecision::Tf32, "{pass:?}");
        }
        let huge = conv([1, 1024, 1024, 700, 1], [3, 3, 3, 1, 8], 1);
        let plan = ConvPlan::new(&huge, ConvPass::BackwardWeight, ConvPrecision::Tf32, target);
        assert_eq!(plan.unwrap().kernel.precision, ConvPrecision::Tf32);
    }

    /// With `split_waves`, a reduction whose tiles fill less than a wave takes the split
    /// whose whole waves cost least: the decoder's 128 -> 64 layer at 64^3 (27 tiles of
    /// 128 x 64 over 8192 steps) from 4 ways (108 blocks, one wave) to 19 (513 blocks, four
    /// waves); one that fills a wave already, or is too short to split, stays as it was.
    #[test]
    fn split_waves_splits_a_part_filled_wave_into_whole_waves() {
        let hopper = ConvTarget::new(H100)
            .with_wgmma(true)
            .with_wgmma_tma(Reach::Measured);
        let splits = |g: &ConvGeometry, pass, waves| {
            let target = hopper.with_split_waves(waves);
            let plan = ConvPlan::new(g, pass, ConvPrecision::Bf16, target).unwrap();
            (plan.kernel.tile, plan.dims.grid, plan.splits())
        };
        let dec1 = conv([2, 64, 64, 64, 128], [3, 3, 3, 128, 64], 1);
        let weights = ConvPass::BackwardWeight;
        assert_eq!(
            splits(&dec1, weights, false),
            (ConvTile::WgTma64, [27, 1, 4], 4)
        );
        assert_eq!(
            splits(&dec1, weights, true),
            (ConvTile::WgTma64, [27, 1, 19], 19)
        );
        assert!(split_cost(27, 19, 8192, 132) < split_cost(27, 4, 8192, 132));
        for pass in [ConvPass::Forward, ConvPass::BackwardData] {
            assert_eq!(
                splits(&dec1, pass, true),
                splits(&dec1, pass, false),
                "{pass:?}"
            );
        }
        let short = conv([1, 4, 4, 4, 64], [3, 3, 3, 64, 64], 1);
        assert_eq!(
            splits(&short, weights, true),
            splits(&short, weights, false)
        );
    }

    /// Channel-major packs are tf32 only and must describe their source; their rows hold
    /// every phase's grids, in whole chunks, and a block covers 64 voxels by 32 channels of
    /// every copy.
    #[test]
    fn channel_major_packs_check_their_precision_and_source() {
        let grid = ConvPhaseGrid {
            border: ConvBorder {
                n: 2,
                source: [5, 6, 7],
                before: [1, 1, 0],
                dims: [4, 4, 8],
            },
            stride: [2, 2, 1],
            shifts: 3,
        };
        let kind = ConvPackKind::ChannelMajor(grid);
        let pack = ConvPack::new(kind, ConvPrecision::Tf32, [420, 1, 40], 1).unwrap();
        assert_eq!((grid.phase_len(), grid.voxels()), (256, 1024));
        assert_eq!(
            (pack.params.padded, pack.packed_len()),
            (1024, 3 * 40 * 1024)
        );
        assert_eq!(pack.dims.grid, [16, 2, 1]);
        let ConvPackArgs::ChannelMajor(params) = pack.args() else {
            panic!("{pack:?} is no channel-major pack");
        };
        assert_eq!(params.shifts, 3);
        for shifts in [0, 5] {
            let kind = ConvPackKind::ChannelMajor(ConvPhaseGrid { shifts, ..grid });
            let refused = ConvPack::new(kind, ConvPrecision::Tf32, [420, 1, 40], 1).unwrap_err();
            assert!(refused.to_string().contains("shifts"), "{refused}");
        }
        let bf16 = ConvPack::new(kind, ConvPrecision::Bf16, [420, 1, 40], 1).unwrap_err();
        assert!(bf16.to_string().contains("tf32 only"), "{bf16}");
        let wrong = ConvPack::new(kind, ConvPrecision::Tf32, [419, 1, 40], 1).unwrap_err();
        assert!(wrong.to_string().contains("does not describe"), "{wrong}");
    }

    /// A packed weight row must fit the loaders' 32-bit strides: at TF32 a 3x3x3 kernel
    /// over 39 768 212 channels (4 294 966 896 bytes a row) passes that check, over
    /// 39 768 215 (padded to 39 768 216: 4 294 967 328 bytes) it does not, though both pass
    /// the params' 32-bit element counts (other limits, such as the grid's, may still
    /// refuse such a layer).
    #[test]
    fn packed_weight_rows_beyond_32_bit_strides_are_refused() {
        let target = ConvTarget::new(528);
        let g = |cin| conv([1, 4, 4, 4, cin], [3, 3, 3, cin, 2], 1);
        for pass in [
            ConvPass::Forward,
            ConvPass::BackwardData,
            ConvPass::BackwardWeight,
        ] {
            let refused = |cin, precision| match ConvPlan::new(&g(cin), pass, precision, target) {
                Ok(_) => false,
                Err(e) => e.to_string().contains("32-bit strides"),
            };
            assert!(!refused(39_768_212, ConvPrecision::Tf32), "{pass:?}");
            assert!(refused(39_768_215, ConvPrecision::Tf32), "{pass:?}");
            assert!(!refused(39_768_215, ConvPrecision::F32), "{pass:?}");
        }
    }

    #[test]
    fn halo_kernels_take_full_stride_one_grids_that_would_run_on_mma_sync() {
        use ConvPass::*;
        let bf16 = ConvPrecision::Bf16;
        let halo = ConvTarget::new(H100).with_halo(Reach::All);
        let tile = |g: &ConvGeometry, pass, target| {
            ConvPlan::new(g, pass, bf16, target).unwrap().kernel.tile
        };
        // nnU-Net's 64^3 x 64 layer: both passes on the 64-column halo tile, one launch
        // over the bordered grid's planes z < 64 (66 x 66 rows each), x packed bordered.
        let g = conv([2, 64, 64, 64, 64], [3, 3, 3, 64, 64], 1);
        for pass in [Forward, BackwardData] {
            let plan = ConvPlan::new(&g, pass, bf16, halo).unwrap();
            assert_eq!(plan.kernel.tile, ConvTile::HaloN64);
            assert_eq!(plan.kernel.module(), "conv3d_halo");
            assert_eq!(plan.dims.grid, [2 * (64 * 66 * 66u32).div_ceil(128), 1, 1]);
            assert_eq!(plan.splits(), 1);
            let [a, _] = plan.packs.unwrap();
            let ConvPackKind::Bordered(border) = a.kind else {
                panic!("{:?}", a.kind)
            };
            assert_eq!(border.dims, [66; 3]);
            assert_eq!(border.before, [1; 3]);
            assert_eq!(a.packed_len(), 2 * 66 * 66 * 66 * 64);
            assert_eq!(a.name(), "conv3d_pack_bordered_bf16");
        }
        assert_eq!(tile(&g, Forward, ConvTarget::new(H100)), ConvTile::TcN64);
        // Backward weights: one block per tap row (kz, ky) and channel block, the
        // reduction over both samples' bordered volumes split across grid.z; dy packed into
        // the same grid as backward data packs it.
        let plan = ConvPlan::new(&g, BackwardWeight, bf16, halo).unwrap();
        assert_eq!(plan.kernel.tile, ConvTile::HaloWeight64x64);
        assert_eq!(plan.dims.grid[..2], [9, 1]);
        assert!(plan.splits() > 1);
        let rows = 2 * 66 * 66 * 66;
        assert!(plan.params.split_len as usize * plan.splits() >= rows);
        let [x, dy] = plan.packs.unwrap();
        assert_eq!(x.packed_len(), rows * 64);
        let ConvPackKind::Bordered(border) = dy.kind else {
            panic!("{:?}", dy.kind)
        };
        assert_eq!((border.before, border.dims), ([1; 3], [66; 3]));
        let data = ConvPlan::new(&g, BackwardData, bf16, halo).unwrap();
        assert_eq!(
            data.packs.unwrap()[0],
            dy,
            "backward weights reads backward data's dy"
        );
        let forward = ConvPlan::new(&g, Forward, bf16, halo).unwrap();
        assert_eq!(
            forward.packs.unwrap()[0],
            x,
            "backward weights reads forward's x pack"
        );
        // A pack past the pack kernels' 32-bit chunk indices keeps the gathering kernels:
        // 644^3 x 64 bf16 packs plainly in 2.14e9 chunks, bordered in 2.16e9.
        let huge = conv([1, 644, 644, 644, 64], [3, 3, 3, 64, 64], 1);
        assert_eq!(tile(&huge, Forward, halo), ConvTile::TcN64);
        // Where wgmma runs (128 columns), it stays; where mma.sync would, the halo runs.
        let wide = conv([2, 32, 32, 32, 128], [3, 3, 3, 128, 128], 1);
        assert_eq!(
            tile(&wide, Forward, halo.with_wgmma(true)),
            ConvTile::WgN128
        );
        assert_eq!(tile(&wide, Forward, halo), ConvTile::HaloN128);
        let g32 = conv([2, 128, 128, 128, 32], [3, 3, 3, 32, 32], 1);
        assert_eq!(
            tile(&g32, Forward, halo.with_wgmma(true)),
            ConvTile::HaloN32
        );
        assert_eq!(tile(&g32, BackwardWeight, halo), ConvTile::HaloWeight32x32);
        let g64_32 = conv([2, 128, 128, 128, 64], [3, 3, 3, 64, 32], 1);
        assert_eq!(
            tile(&g64_32, BackwardWeight, halo),
            ConvTile::HaloWeight64x32
        );
        // The GPU parity test's case for the 128-column backward-data tile.
        let g128_32 = conv([2, 24, 40, 40, 128], [3, 3, 3, 128, 32], 1);
        assert_eq!(
            [Forward, BackwardData, BackwardWeight].map(|pass| tile(&g128_32, pass, halo)),
            [
                ConvTile::HaloN32,
                ConvTile::HaloN128,
                ConvTile::HaloWeight64x32
            ]
        );
        // 32^3 with a 3^3 window: the bordered volume is 1.1995 times the result's.
        assert_eq!(
            tile(&wide, BackwardWeight, halo),
            ConvTile::HaloWeight64x128
        );
        assert_eq!(
            tile(&wide, BackwardWeight, halo.with_wgmma(true)),
            ConvTile::WgN128
        );
        let head = conv([2, 64, 64, 64, 32], [1, 1, 1, 32, 3], 1);
        for pass in [Forward, BackwardData, BackwardWeight] {
            assert_eq!(tile(&head, pass, halo), ConvTile::TcN32, "{pass:?}");
        }
        // A first layer's 4 channels (8 packed) would fill a quarter of a step's or a
        // block's channels: forward and backward weights keep the gathering kernels;
        // backward data reduces over the 32 outputs.
        let first = conv([2, 128, 128, 128, 4], [3, 3, 3, 4, 32], 1);
        assert_eq!(tile(&first, Forward, halo), ConvTile::TcN32);
        assert_eq!(tile(&first, BackwardWeight, halo), ConvTile::TcN32);
        assert_eq!(tile(&first, BackwardData, halo), ConvTile::HaloN32);
        // Not: strides, kernels wider than 3 along w, planes whose borders cost over 20%
        // (16 x 16), grids short of the device's resident blocks.
        let strided = conv([2, 64, 64, 64, 32], [3, 3, 3, 32, 64], 2);
        assert_eq!(tile(&strided, Forward, halo), ConvTile::TcN64);
        let wide_w = conv([2, 64, 64, 64, 64], [1, 1, 5, 64, 64], 1);
        assert_eq!(tile(&wide_w, Forward, halo), ConvTile::TcN64);
        let small_planes = conv([2, 16, 16, 16, 64], [3, 3, 3, 64, 64], 1);
        assert_eq!(tile(&small_planes, Forward, halo), ConvTile::TcN64);
        let few = conv([1, 4, 24, 24, 64], [3, 3, 3, 64, 64], 1);
        assert_eq!(tile(&few, Forward, halo), ConvTile::TcN64);
        assert_eq!(
            tile(&few, Forward, ConvTarget::new(8).with_halo(Reach::All)),
            ConvTile::HaloN64
        );
    }

    #[test]
    fn measured_reaches_take_the_narrow_halo_tiles_and_first_layer_l1_gathers() {
        use ConvPass::*;
        let bf16 = ConvPrecision::Bf16;
        // An H100's defaults (`Cuda`'s settings).
        let measured = ConvTarget::new(H100)
            .with_wgmma(true)
            .with_wgmma_pairs(true)
            .with_halo(Reach::Measured)
            .with_gather_l1(Reach::Measured);
        let plan = |x, w, pass, target| ConvPlan::new(&conv(x, w, 1), pass, bf16, target).unwrap();
        // The halo: into 32 columns, every pass of nnU-Net's 128^3 x 32 layers and the
        // decoder's 64 -> 32 (whose data gradient, into 64 columns, runs the wgmma pair);
        // with mma.sync, 64 columns keep the gathering kernels unless the reach is `All`.
        for (x, w, tiles) in [
            (
                [2, 128, 128, 128, 32],
                [3, 3, 3, 32, 32],
                [
                    ConvTile::HaloN32,
                    ConvTile::HaloN32,
                    ConvTile::HaloWeight32x32,
                ],
            ),
            (
                [2, 128, 128, 128, 64],
                [3, 3, 3, 64, 32],
                [
                    ConvTile::HaloN32,
                    ConvTile::WgN64Pair,
                    ConvTile::HaloWeight64x32,
                ],
            ),
        ] {
            let planned = [Forward, BackwardData, BackwardWeight]
                .map(|pass| plan(x, w, pass, measured).kernel.tile);
            assert_eq!(planned, tiles, "{x:?} {w:?}");
        }
        let g64 = ([2, 64, 64, 64, 64], [3, 3, 3, 64, 64]);
        let mma = measured.with_wgmma(false);
        assert_eq!(
            plan(g64.0, g64.1, Forward, mma).kernel.tile,
            ConvTile::TcN64
        );
        let all = mma.with_halo(Reach::All);
        assert_eq!(
            plan(g64.0, g64.1, Forward, all).kernel.tile,
            ConvTile::HaloN64
        );
        let off = measured.with_halo(Reach::Off);
        let g32 = ([2, 128, 128, 128, 32], [3, 3, 3, 32, 32]);
        assert_eq!(
            plan(g32.0, g32.1, Forward, off).kernel.tile,
            ConvTile::TcN32
        );
        // L1 gathers: a first layer's forward and backward weights gather 4 channels (one
        // 16-byte chunk) over 27 overlapping taps; its backward data gathers 32, a head's
        // 3 over a single tap.
        let first = ([2, 128, 128, 128, 4], [3, 3, 3, 4, 32]);
        let l1 = |x, w, pass, target| plan(x, w, pass, target).gather_l1;
        assert!(l1(first.0, first.1, Forward, measured));
        assert_eq!(
            plan(first.0, first.1, Forward, measured).module(),
            "conv3d_wgmma_l1"
        );
        assert!(l1(first.0, first.1, BackwardWeight, measured));
        // A 2x2x2 stride-2 downsampling of 4 channels: its taps' windows do not overlap.
        let strided = conv([2, 64, 64, 64, 4], [2, 2, 2, 4, 32], 2);
        let strided = ConvPlan::new(&strided, Forward, bf16, measured).unwrap();
        assert!(!strided.gather_l1);
        assert!(!l1(first.0, first.1, BackwardData, measured));
        let head = ([2, 64, 64, 64, 64], [1, 1, 1, 64, 3]);
        assert!(!l1(head.0, head.1, BackwardData, measured));
        assert!(!l1(g32.0, g32.1, Forward, off));
        assert!(!l1(
            first.0,
            first.1,
            Forward,
            measured.with_gather_l1(Reach::Off)
        ));
        assert!(l1(
            g64.0,
            g64.1,
            Forward,
            measured.with_gather_l1(Reach::All)
        ));
        let f32 = ConvPlan::new(
            &conv(first.0, first.1, 1),
            Forward,
            ConvPrecision::F32,
            measured,
        );
        assert!(
            !f32.unwrap().gather_l1,
            "the CUDA-core kernels have no L1 variant"
        );
    }

    #[test]
    fn reaches_parse_from_their_names() {
        for (text, reach) in [
            ("off", Reach::Off),
            ("0", Reach::Off),
            ("Measured", Reach::Measured),
            ("all", Reach::All),
            ("1", Reach::All),
            ("ON", Reach::All),
        ] {
            assert_eq!(text.parse::<Reach>().unwrap(), reach, "{text}");
        }
        let err = "some".parse::<Reach>().unwrap_err().to_string();
        assert!(
            err.contains("\"some\"") && err.contains("measured"),
            "{err}"
        );
    }

    #[test]
    fn precision_names_parse_and_print() {
        for p in ConvPrecision::ALL {
            assert_eq!(p.name().parse::<ConvPrecision>().unwrap(), p);
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!("F32".parse::<ConvPrecision>().unwrap(), ConvPrecision::F32);
        assert_eq!(
            "BF16".parse::<ConvPrecision>().unwrap(),
            ConvPrecision::Bf16
        );
        let err = "fp16".parse::<ConvPrecision>().unwrap_err().to_string();
        assert!(err.contains("fp16") && err.contains("tf32"), "{err}");
    }

    #[test]
    fn every_plan_names_a_kernel() {
        let shapes = [
            ([2, 9, 8, 7, 4], [3, 3, 3, 4, 32], 1),
            ([1, 8, 8, 8, 32], [1, 1, 1, 32, 3], 1),
            ([1, 8, 8, 8, 3], [1, 1, 1, 3, 32], 1),
            ([1, 8, 8, 8, 64], [3, 3, 3, 64, 128], 2),
            ([1, 4, 4, 4, 5], [2, 2, 2, 5, 7], 2),
        ];
        for (x, w, s) in shapes {
            let g = conv(x, w, s);
            for pass in [
                ConvPass::Forward,
                ConvPass::BackwardData,
                ConvPass::BackwardWeight,
            ] {
                for precision in ConvPrecision::ALL {
                    for (blocks, wgmma) in [(1, false), (528, false), (1, true), (528, true)] {
                        let target = ConvTarget::new(blocks).with_wgmma(wgmma);
                        let plan = ConvPlan::new(&g, pass, precision, target).unwrap();
                        assert!(plan.kernel.name().is_some(), "{plan:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn tiles_follow_the_channel_counts() {
        let pick = |x, w, pass, precision| {
            ConvPlan::new(&conv(x, w, 1), pass, precision, ConvTarget::new(528))
                .unwrap()
                .kernel
        };
        use ConvPass::*;
        use ConvPrecision::*;
        // A 1x1x1 head with 3 outputs: narrow forward and weight gradient, a shallow data
        // gradient (3 taps x channels) in f32; the tensor cores pad its channels.
        let (x, w) = ([2, 16, 16, 16, 32], [1, 1, 1, 32, 3]);
        assert_eq!(pick(x, w, Forward, F32).tile, ConvTile::Narrow);
        assert_eq!(pick(x, w, BackwardWeight, F32).tile, ConvTile::Narrow);
        assert_eq!(pick(x, w, BackwardData, F32).tile, ConvTile::Shallow);
        for precision in [Tf32, Bf16] {
            for pass in [Forward, BackwardData, BackwardWeight] {
                let head = pick(x, w, pass, precision);
                assert_eq!((head.precision, head.tile), (precision, ConvTile::TcN32));
            }
        }
        // The first layer (4 -> 32) and a 64-channel layer on the tensor cores.
        let first = pick([2, 16, 16, 16, 4], [3, 3, 3, 4, 32], Forward, Bf16);
        assert_eq!((first.precision, first.tile), (Bf16, ConvTile::TcN32));
        let wide = pick([2, 8, 8, 8, 64], [3, 3, 3, 64, 64], BackwardData, Tf32);
        assert_eq!((wide.precision, wide.tile), (Tf32, ConvTile::TcN64));
        assert_eq!(wide.name(), Some("conv3d_bwd_data_tf32_n64"));
        assert_eq!(wide.module(), "conv3d_pipe");
        assert_eq!(wide.shape(), (128, 64, 16), "64 bytes of tf32 per step");
        let deep = pick([2, 8, 8, 8, 64], [3, 3, 3, 64, 256], Forward, Tf32);
        assert_eq!(deep.name(), Some("conv3d_fwd_tf32_n128"));
        let narrow = pick([2, 8, 8, 8, 64], [3, 3, 3, 64, 20], BackwardWeight, Tf32);
        assert_eq!((narrow.tile, narrow.threads()), (ConvTile::TcN32, 64));
        assert_eq!(
            pick([2, 8, 8, 8, 64], [3, 3, 3, 64, 64], Forward, F32).tile,
            ConvTile::Wide
        );
    }

    #[test]
    fn wgmma_targets_run_the_wide_tiles_on_wgmma() {
        use ConvPass::*;
        use ConvPrecision::*;
        let hopper = ConvTarget::new(528).with_wgmma(true);
        let plan =
            |x, w, pass, precision| ConvPlan::new(&conv(x, w, 1), pass, precision, hopper).unwrap();
        let fwd = plan([2, 8, 8, 8, 64], [3, 3, 3, 64, 256], Forward, Bf16);
        assert_eq!(fwd.kernel.name(), Some("conv3d_fwd_bf16_wg128"));
        assert_eq!(fwd.kernel.module(), "conv3d_wgmma");
        assert_eq!(
            fwd.kernel.shape(),
            (128, 128, 64),
            "128 bytes of bf16 per step"
        );
        assert_eq!((fwd.dims.block[0], fwd.kernel.threads()), (256, 256));
        let data = plan([2, 8, 8, 8, 64], [3, 3, 3, 64, 40], BackwardData, Tf32);
        assert_eq!(data.kernel.name(), Some("conv3d_bwd_data_tf32_wg64"));
        assert_eq!(
            data.kernel.shape(),
            (128, 64, 32),
            "128 bytes of tf32 per step"
        );
        let weight = plan([2, 8, 8, 8, 64], [3, 3, 3, 64, 256], BackwardWeight, Bf16);
        assert_eq!(weight.kernel.name(), Some("conv3d_bwd_weight_bf16_wg128"));
        // TF32 backward weights, 32-column backward weights and f32 keep their kernels.
        let weight = plan([2, 8, 8, 8, 64], [3, 3, 3, 64, 256], BackwardWeight, Tf32);
        assert_eq!(weight.kernel.tile, ConvTile::TcN128);
        // 128 columns over a single step, and 64 columns whose tiles fill the 132 SMs, stay
        // on mma.sync; 64 columns on fewer tiles run wgmma.
        let head = plan([2, 8, 8, 8, 64], [1, 1, 1, 64, 128], Forward, Bf16);
        assert_eq!(head.kernel.tile, ConvTile::TcN128);
        let full = plan([2, 32, 32, 32, 64], [3, 3, 3, 64, 64], Forward, Bf16);
        assert_eq!(full.kernel.tile, ConvTile::TcN64, "512 tiles");
        let few = plan([2, 8, 8, 8, 64], [3, 3, 3, 64, 64], Forward, Bf16);
        assert_eq!(few.kernel.tile, ConvTile::WgN64, "8 tiles");
        // Backward weights into 64 columns on fewer tiles than SMs: wgmma over short and
        // long reductions alike; with the switch off, mma.sync.
        let n64_weights = |on, g: &ConvGeometry| {
            let target = hopper.with_wgmma_n64_weights(on);
            ConvPlan::new(g, BackwardWeight, Bf16, target)
                .unwrap()
                .kernel
                .tile
        };
        let long_g = conv([2, 16, 16, 16, 64], [3, 3, 3, 64, 64], 1);
        let short_g = conv([2, 8, 8, 8, 64], [3, 3, 3, 64, 64], 1);
        assert_eq!(n64_weights(true, &short_g), ConvTile::WgN64, "1024 voxels");
        assert_eq!(n64_weights(true, &long_g), ConvTile::WgN64, "8192 voxels");
        assert_eq!(n64_weights(false, &short_g), ConvTile::TcN64);
        assert_eq!(n64_weights(false, &long_g), ConvTile::TcN64);
        let wide_g = conv([1, 6, 6, 6, 640], [3, 3, 3, 640, 64], 1);
        let pairs_off = hopper.with_wgmma_pairs(true).with_wgmma_n64_weights(false);
        let wide = ConvPlan::new(&wide_g, BackwardWeight, Bf16, pairs_off).unwrap();
        assert_eq!(
            wide.kernel.tile,
            ConvTile::TcN64,
            "135 tiles, pairs asked for"
        );
        // Asked for, the pair of 64-column blocks takes the full grids, every pass at BF16
        // and all but backward weights at TF32; the smaller grids keep the single block.
        let pairs = hopper.with_wgmma_pairs(true);
        let paired = |pass, precision, cin, dhw| {
            let g = conv([2, dhw, dhw, dhw, cin], [3, 3, 3, cin, 64], 1);
            ConvPlan::new(&g, pass, precision, pairs).unwrap().kernel
        };
        // Forward and backward data: 512 tiles of 32^3 voxels; backward weights: 135 tiles
        // of 27 x 640 rows.
        for (pass, precision, cin, dhw, name) in [
            (Forward, Bf16, 64, 32, "conv3d_fwd_bf16_wg64x2"),
            (BackwardData, Bf16, 64, 32, "conv3d_bwd_data_bf16_wg64x2"),
            (
                BackwardWeight,
                Bf16,
                640,
                8,
                "conv3d_bwd_weight_bf16_wg64x2",
            ),
            (Forward, Tf32, 64, 32, "conv3d_fwd_tf32_wg64x2"),
            (BackwardData, Tf32, 64, 32, "conv3d_bwd_data_tf32_wg64x2"),
        ] {
            let k = paired(pass, precision, cin, dhw);
            assert_eq!(k.name(), Some(name));
            assert_eq!(k.threads(), 256);
            assert_eq!(
                k.shape(),
                (128, 64, 128 / precision.packed_bytes().unwrap() as u32)
            );
        }
        assert_eq!(paired(BackwardWeight, Tf32, 640, 8).tile, ConvTile::TcN64);
        // A long backward-weights reduction on 14 tiles: the single block.
        assert_eq!(paired(BackwardWeight, Bf16, 64, 16).tile, ConvTile::WgN64);
        assert_eq!(paired(Forward, Bf16, 64, 8).tile, ConvTile::WgN64);
        // Full grids over at most two steps keep mma.sync: a head's data gradient (3
        // outputs, 8 packed), backward weights over 2 x 4^3 voxels.
        let head = conv([2, 32, 32, 32, 64], [1, 1, 1, 64, 3], 1);
        let head = ConvPlan::new(&head, BackwardData, Bf16, pairs).unwrap();
        assert_eq!(head.kernel.tile, ConvTile::TcN64);
        let deep = conv([2, 4, 4, 4, 320], [3, 3, 3, 320, 320], 1);
        let deep = ConvPlan::new(&deep, BackwardWeight, Bf16, pairs).unwrap();
        assert_eq!(deep.kernel.tile, ConvTile::TcN64);
        // Into 32 columns, wgmma only over a reduction of 3 or 4 steps (a first layer), not
        // 1 or 2 (heads) or more.
        let narrow = plan([2, 8, 8, 8, 64], [3, 3, 3, 64, 20], Forward, Bf16);
        assert_eq!(narrow.kernel.name(), Some("conv3d_fwd_bf16_n32"));
        for cin in [32, 128] {
            let head = plan([2, 8, 8, 8, cin], [1, 1, 1, cin, 3], Forward, Bf16);
            assert_eq!(
                head.kernel.tile,
                ConvTile::TcN32,
                "a head of {cin} channels"
            );
        }
        for (cin, precision, name) in [
            (4, Bf16, "conv3d_fwd_bf16_wg32"),
            (4, Tf32, "conv3d_fwd_tf32_wg32"),
            (12, Bf16, "conv3d_fwd_bf16_n32"),
        ] {
            let first = plan([2, 8, 8, 8, cin], [3, 3, 3, cin, 32], Forward, precision);
            assert_eq!(
                first.kernel.name(),
                Some(name),
                "{cin} channels at {precision}"
            );
        }
        let first = plan([2, 8, 8, 8, 4], [3, 3, 3, 4, 32], BackwardData, Bf16);
        assert_eq!(first.kernel.name(), Some("conv3d_bwd_data_bf16_n32"));
        let narrow = plan([2, 8, 8, 8, 64], [3, 3, 3, 64, 20], BackwardWeight, Bf16);
        assert_eq!(narrow.kernel.tile, ConvTile::TcN32);
        let f32 = plan([2, 8, 8, 8, 64], [3, 3, 3, 64, 256], Forward, F32);
        assert_eq!(f32.kernel.tile, ConvTile::Wide);
        // Blocks per SM (one at 128 and 64 columns, two at 32): the ring, its alignment
        // slack, the loaders' static tables (ptxas: at most 7.4 KiB) and the 1 KiB the system
        // reserves per block within an H100 SM's 228 KiB, of which a block may have 227.
        for (tile, blocks, resident) in [
            (ConvTile::WgN128, 1, 256),
            (ConvTile::WgN64, 1, 256),
            (ConvTile::WgN32, 2, 512),
            (ConvTile::WgN64Pair, 2, 512),
            (ConvTile::WgM256, 1, 512),
            (ConvTile::WgWs128, 1, 384),
            (ConvTile::WgWs64, 1, 512),
        ] {
            let k = ConvKernel {
                pass: Forward,
                precision: Bf16,
                tile,
            };
            let bytes = k.shared_bytes();
            assert_eq!(bytes % 1024, 0);
            assert!(bytes + 8 * 1024 <= 227 * 1024, "{tile:?}: {bytes}");
            assert!(
                blocks * (bytes + 9 * 1024) <= 228 * 1024,
                "{tile:?}: {bytes}"
            );
            assert_eq!(k.resident_threads_per_sm(), resident, "{tile:?}");
        }
        // A split counts blocks of 256 threads, one per SM: a quarter as many fill the device.
        let deep = plan([2, 4, 4, 4, 320], [3, 3, 3, 320, 320], Forward, Bf16);
        let sync = ConvPlan::new(
            &conv([2, 4, 4, 4, 320], [3, 3, 3, 320, 320], 1),
            Forward,
            Bf16,
            ConvTarget::new(528),
        )
        .unwrap();
        assert_eq!(deep.kernel.tile, ConvTile::WgN64);
        assert!(
            deep.splits() > 1 && deep.splits() <= sync.splits(),
            "{deep:?}"
        );
    }

    #[test]
    fn tensor_core_plans_pack_both_operands_and_pick_tiles_by_idle_columns() {
        use ConvPass::*;
        let pick = |cout| {
            let g = conv([1, 8, 8, 8, 4], [3, 3, 3, 4, cout], 1);
            ConvPlan::new(&g, Forward, ConvPrecision::Bf16, ConvTarget::new(528)).unwrap()
        };
        let tf32 = |cout| {
            let g = conv([1, 8, 8, 8, 4], [3, 3, 3, 4, cout], 1);
            ConvPlan::new(&g, Forward, ConvPrecision::Tf32, ConvTarget::new(528)).unwrap()
        };
        for (cout, tile) in [
            (3, ConvTile::TcN32),
            (32, ConvTile::TcN32),
            (36, ConvTile::TcN64),
            (72, ConvTile::TcN128),
            (256, ConvTile::TcN128),
            (320, ConvTile::TcN64),
        ] {
            for plan in [pick(cout), tf32(cout)] {
                assert_eq!(plan.kernel.tile, tile, "cout {cout}");
                let (bm, bn, bk) = plan.kernel.shape();
                assert_eq!(plan.dims.block[0], plan.kernel.threads());
                let bytes = plan.packs.unwrap()[0].element_bytes() as u32;
                assert_eq!(
                    plan.dims.shared_bytes,
                    CONV_PIPE_STAGES * (bm + bn) * bk * bytes
                );
            }
        }
        assert_eq!(pick(256).dims.block[0], 128);
        assert_eq!(pick(32).dims.block[0], 128);
        assert_eq!(pick(256).dims.shared_bytes, 64 * 1024);
        // Forward on 4 input channels: x packed to 8 channels, w to [cout][tap][8]; the
        // reduction runs over 27 * 8 padded (tap, channel) pairs.
        let plan = pick(36);
        let [a, b] = plan.packs.unwrap();
        assert_eq!((a.kind, a.packed_len()), (ConvPackKind::Rows, 512 * 8));
        assert_eq!(
            (b.kind, b.packed_len()),
            (ConvPackKind::Transposed, 36 * 27 * 8)
        );
        assert_eq!((a.source_len(), b.source_len()), (512 * 4, 27 * 4 * 36));
        assert_eq!(plan.kernel.name(), Some("conv3d_fwd_bf16_n64"));
        assert_eq!(plan.kernel.module(), "conv3d_pipe");
        // Backward data packs dy and w as [cin][tap][cout_p]; backward weights x and dy,
        // its rows the padded (tap, channel) pairs.
        let g = conv([1, 8, 8, 8, 4], [3, 3, 3, 4, 12], 1);
        let data =
            ConvPlan::new(&g, BackwardData, ConvPrecision::Bf16, ConvTarget::new(528)).unwrap();
        let [a, b] = data.packs.unwrap();
        assert_eq!(a.packed_len(), 512 * 16);
        assert_eq!((b.kind, b.packed_len()), (ConvPackKind::Rows, 4 * 27 * 16));
        let weight =
            ConvPlan::new(&g, BackwardWeight, ConvPrecision::Bf16, ConvTarget::new(1)).unwrap();
        assert_eq!(weight.dims.grid[0], (27u32 * 8).div_ceil(128));
        assert_eq!(weight.out_len, 27 * 4 * 12);
        // TF32 packs the same operands to 4-channel chunks: 4 input channels need no
        // padding, 12 outputs none either; 5 and 7 channels pad to 8.
        let [a, b] = tf32(36).packs.unwrap();
        assert_eq!((a.packed_len(), a.element_bytes()), (512 * 4, 4));
        assert_eq!(
            (b.packed_len(), b.name()),
            (36 * 27 * 4, "conv3d_pack_transposed_tf32")
        );
        let odd = conv([1, 8, 8, 8, 5], [3, 3, 3, 5, 7], 1);
        let data = ConvPlan::new(
            &odd,
            BackwardData,
            ConvPrecision::Tf32,
            ConvTarget::new(528),
        )
        .unwrap();
        let [a, b] = data.packs.unwrap();
        assert_eq!(
            (a.packed_len(), a.name()),
            (512 * 8, "conv3d_pack_rows_tf32")
        );
        assert_eq!(b.packed_len(), 5 * 27 * 8);
        let weight = ConvPlan::new(
            &odd,
            BackwardWeight,
            ConvPrecision::Tf32,
            ConvTarget::new(1),
        )
        .unwrap();
        assert_eq!(weight.dims.grid[0], (27u32 * 8).div_ceil(128));
        // f32 packs nothing and needs no dynamic shared memory.
        let f32 = ConvPlan::new(&g, Forward, ConvPrecision::F32, ConvTarget::new(528)).unwrap();
        assert_eq!((f32.packs, f32.dims.shared_bytes), (None, 0));
        assert!(ConvPack::new(ConvPackKind::Rows, ConvPrecision::F32, [4, 1, 4], 1).is_err());
    }

    #[test]
    fn backward_data_runs_each_stride_phase_over_its_own_taps() {
        // Transposed conv 2x2x2 stride 2: 8 phases of one tap each, so a reduction of
        // cout alone, over an eighth of the voxels.
        let x = Shape::new(&[2, 8, 8, 8, 64]);
        let w = Shape::new(&[2, 2, 2, 32, 64]);
        let spec = ConvTranspose3dSpec {
            stride: [2; 3],
            padding: [[0, 0]; 3],
            output_padding: [0; 3],
        };
        let g = ConvGeometry::conv_transpose3d(&x, &w, &spec).unwrap();
        let plan = ConvPlan::new(
            &g,
            ConvPass::BackwardData,
            ConvPrecision::F32,
            ConvTarget::new(1),
        )
        .unwrap();
        assert_eq!(plan.dims.grid, [(2 * 8 * 8 * 8u32).div_ceil(64), 1, 8]);
        assert_eq!(plan.splits(), 1);
        assert_eq!(plan.out_len, 2 * 16 * 16 * 16 * 32);
        assert_eq!(plan.operand_lens(), (2 * 512 * 64, 8 * 32 * 64, Some(32)));
    }

    #[test]
    fn splits_are_whole_steps_and_cover_the_reduction() {
        // A deep layer: 128 output voxels, 8640-long reductions.
        let g = conv([2, 4, 4, 4, 320], [3, 3, 3, 320, 320], 1);
        for precision in ConvPrecision::ALL {
            for pass in [ConvPass::Forward, ConvPass::BackwardData] {
                let plan = ConvPlan::new(&g, pass, precision, ConvTarget::new(528)).unwrap();
                let (_, _, bk) = plan.kernel.shape();
                let q = plan.params;
                assert_eq!(q.split_len % bk as i32, 0, "{plan:?}");
                assert!(q.splits > 1, "{plan:?}");
                let depth = 27 * 320;
                assert!(q.splits * q.split_len >= depth && (q.splits - 1) * q.split_len < depth);
                assert!(q.split_len as u32 >= 8 * bk, "at least 8 steps per split");
                assert_eq!(plan.workspace_len(), plan.out_len * q.splits as usize);
                assert_eq!(
                    plan.partial_sum().unwrap(),
                    Axis1 {
                        outer: 1,
                        mid: q.splits as usize,
                        inner: plan.out_len
                    }
                );
            }
        }
        // Weight gradients split the voxels; a large forward does not split at all.
        let big = conv([2, 64, 64, 64, 32], [3, 3, 3, 32, 32], 1);
        let w = ConvPlan::new(
            &big,
            ConvPass::BackwardWeight,
            ConvPrecision::F32,
            ConvTarget::new(528),
        )
        .unwrap();
        assert_eq!(w.params.split_len % CONV_WIDE_BK as i32, 0);
        assert!(w.splits() as u64 * w.params.split_len as u64 >= 2 * 64 * 64 * 64);
        assert_eq!(w.dims.grid, [14, 1, w.splits() as u32]);
        let f = ConvPlan::new(
            &big,
            ConvPass::Forward,
            ConvPrecision::F32,
            ConvTarget::new(528),
        )
        .unwrap();
        assert_eq!((f.splits(), f.partial_sum()), (1, None));
    }

    #[test]
    fn params_reject_what_the_kernels_cannot_index() {
        let mut s = Conv3dShape {
            n: 1,
            input: [5, 4, 3],
            cin: 3,
            output: [5, 4, 3],
            cout: 2,
            kernel: [3, 3, 3],
            stride: [1, 1, 1],
            pad_before: [1, 1, 1],
        };
        let p = Conv3dParams::new(&s).unwrap();
        assert_eq!(
            (p.output_voxels(), p.patch_len(), p.weight_len()),
            (60, 81, 162)
        );
        s.stride[1] = 0;
        assert!(Conv3dParams::new(&s).is_err());
        s.stride[1] = 1;
        s.input = [2048, 2048, 1024];
        let e = Conv3dParams::new(&s).unwrap_err().to_string();
        assert!(e.contains("32-bit"), "{e}");
    }

    /// The tensor memory accelerator's tiles and their 256-row form on the BraTS layers
    /// where an H100 measured them (bf16, 2026-11-27; `ConvPlan::tma`), by default
    /// (`Reach::Measured`), and everywhere the plan allows within `Reach::All`.
    #[test]
    fn tma_tiles_take_the_layers_where_an_h100_measured_them_faster() {
        use ConvPass::{BackwardData, BackwardWeight, Forward};
        use ConvTile::{WgN128, WgN64, WgN64Pair, WgTma128, WgTma256, WgTma64, WgTma64Sw64};
        let measured = ConvTarget::new(H100)
            .with_wgmma(true)
            .with_wgmma_pairs(true)
            .with_wgmma_tma(Reach::Measured)
            .with_wgmma_m256(Reach::Measured);
        let tile = |g: &ConvGeometry, pass, target| {
            let plan = ConvPlan::new(g, pass, ConvPrecision::Bf16, target).unwrap();
            (plan.kernel.tile, plan.tma.is_some())
        };
        let cube = |size, cin, cout| conv([2, size, size, size, cin], [3, 3, 3, cin, cout], 1);
        // 32^3 x 128 -> 128: 512 tiles of 128 rows, a reduction of 3456.
        let deep = cube(32, 128, 128);
        // 16^3 x 256: 128 tiles (fewer than the SMs), 1.5e10 multiply-adds.
        let small = cube(16, 256, 256);
        // 16^3 x 512 -> 256: its data gradient has 512 columns, 256 tiles.
        let wide = cube(16, 512, 256);
        // 64 columns: over 3456 on the tiles, over 1728 not (the pair).
        let long64 = cube(64, 128, 64);
        let short64 = cube(32, 64, 64);
        // A transposed 2x2x2 convolution's forward, the data gradient of this one: one tap
        // of 256 channels.
        let one_tap = conv([2, 32, 32, 32, 128], [2, 2, 2, 128, 256], 2);
        // 32 channels a tap take the 64-byte swizzle only within `Reach::All`.
        let half_rows = conv([2, 128, 128, 128, 32], [3, 3, 3, 32, 64], 2);
        let cases = [
            (&deep, Forward, WgTma256),
            (&deep, BackwardWeight, WgTma256),
            (&small, Forward, WgTma128),
            (&small, BackwardWeight, WgTma128),
            (&wide, BackwardData, WgTma256),
            (&long64, Forward, WgTma64),
            (&short64, Forward, WgN64Pair),
            (&short64, BackwardWeight, WgTma64),
            (&one_tap, BackwardData, WgN128),
            (&half_rows, Forward, WgN64Pair),
        ];
        for (g, pass, want) in cases {
            let tma = matches!(want, WgTma128 | WgTma256 | WgTma64);
            assert_eq!(tile(g, pass, measured), (want, tma), "{pass:?} {g:?}");
        }
        let all = measured.with_wgmma_tma(Reach::All);
        assert_eq!(tile(&half_rows, Forward, all), (WgTma64Sw64, true));
        assert_eq!(tile(&short64, Forward, all), (WgTma64, true));
        let off = measured.with_wgmma_tma(Reach::Off);
        assert_eq!(tile(&long64, Forward, off), (WgN64Pair, false));
        // Without the 256-row tiles, and with them everywhere.
        let m128 = measured.with_wgmma_m256(Reach::Off);
        assert_eq!(tile(&deep, Forward, m128), (WgTma128, true));
        let m256 = measured.with_wgmma_m256(Reach::All);
        assert_eq!(tile(&small, Forward, m256), (WgTma256, true));
        // A forward over 1728 on 64 columns keeps wgmma without the accelerator.
        assert_eq!(tile(&cube(8, 64, 64), Forward, measured), (WgN64, false));
        // 250 tiles of 128 rows ask for 256, but no box of 256 voxels tiles a 20^3 result
        // within the allowed overhang: the 128-row tile takes the pass.
        let odd = cube(20, 256, 256);
        let p = conv_params(&odd).unwrap();
        let kernel = ConvKernel {
            pass: Forward,
            precision: ConvPrecision::Bf16,
            tile: WgTma256,
        };
        let gm = gemm(&p, Forward, ConvPrecision::Bf16.channel_multiple() as u64);
        let m256 = ConvPlan::tma_tile(&odd, &p, kernel, measured, &gm);
        assert!(m256.unwrap().is_none());
        assert_eq!(tile(&odd, Forward, measured), (WgTma128, true));
        // With 64-column backward weights kept on mma.sync, the accelerator takes none.
        let n64_off = measured.with_wgmma_n64_weights(false);
        assert_eq!(
            tile(&short64, BackwardWeight, n64_off),
            (ConvTile::TcN64, false)
        );
        assert_eq!(tile(&deep, BackwardWeight, n64_off), (WgTma256, true));
    }
}
