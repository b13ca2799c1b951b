//! Convolution passes on the tensor memory accelerator (kernels/conv3d_wgmma.cu, `*_tma*`):
//! how boxes of output voxels tile a pass, and the tensor maps over its packed operands, as
//! the arguments of `cuTensorMapEncodeTiled` that the device launcher passes to the driver
//! and the harness to its twin.
//!
//! Boxes are box_d x box_h x box_w output voxels (powers of two) by a 128-byte row of
//! channels (or, for bf16 reductions over 32 channels a tap, 64 bytes, two boxes a step in
//! the 64-byte swizzle); x's box is read at the voxels' windows plus a tap, every stride
//! voxels.
//! Elements outside a tensor arrive as zeros, so the convolution's padding costs nothing
//! but its copies, and so do boxes that overhang the output: forward stores none of their
//! rows, and in backward weights a voxel past the output has dy = 0.
//! - Forward: a block's rows are one box of 128 (256) voxels; a reduction step is a tap
//!   and a row of channels, A x's box, B the weights of the block's output channels. The
//!   transposed tiles (`WgTmaCols`) swap them: the block's 64 output channels' weights
//!   are A and its columns one box of 256 voxels, B.
//! - Backward data: as the forward, over one stride phase's grid of dx's voxels (grid.z;
//!   every voxel at stride 1), A dy's box at the voxels plus the phase's offset and tap
//!   (kernels/conv3d_common.h, `VxPhase`), B the weights of the block's input channels at
//!   the tap's kernel index.
//! - Backward weights: a reduction step is one box of 64 voxels, A x's box at each of the
//!   block's taps (64 channels each), B dy's box.
//! - Backward weights at tf32, which wgmma reads k-major only: x and dy packed
//!   channel-major into bordered grids of one shape ([`ConvTmaGrid`]; x's one per stride
//!   phase), a reduction step 32 of their voxels, A x's rows at each of the block's taps
//!   (one phase's grid at a flat offset), B dy's.
use super::conv_plan::{ConvPass, ConvPrecision};
use super::params::{Conv3dParams, Conv3dTmaParams, TensorMap};

/// Output voxels in a backward-weights box: one 128-byte row of bf16 per voxel makes a
/// reduction step.
pub const TMA_WEIGHT_BOX_VOXELS: i32 = 64;
/// Grid voxels in a k-major (tf32) backward-weights step: a 128-byte row of tf32 per
/// channel.
pub const TMA_GRID_STEP_VOXELS: i32 = 32;
/// Rows (channels of one tap) of a k-major backward-weights box of x.
pub const TMA_GRID_BLOCK_ROWS: u32 = 64;
/// Voxels of a 16-byte chunk of a channel-major tf32 row: a box's innermost coordinate
/// must be a multiple of it (any other raises an illegal instruction on an H200), so a
/// k-major backward weights' grid rows are a multiple of it long, and x is packed once per
/// shift of its taps' offsets within a chunk.
pub const TMA_GRID_CHUNK_VOXELS: i32 = 4;
/// Bytes of channels in a box: the 128-byte swizzle's row, or the 64-byte one's
/// (`ConvTile::WgTma128Sw64`, `WgTma64Sw64`).
const TMA_BOX_ROW_BYTES: i32 = 128;
const TMA_BOX_HALF_ROW_BYTES: i32 = 64;
/// The largest traversal stride and box extent of a tensor map.
const MAX_ELEMENT_STRIDE: i32 = 8;
const MAX_BOX_DIM: i32 = 256;

/// `CU_TENSOR_MAP_DATA_TYPE_BFLOAT16`, `_UINT32` (packed tf32: bits copied as they are),
/// `CU_TENSOR_MAP_SWIZZLE_128B`, `_64B`, `CU_TENSOR_MAP_L2_PROMOTION_L2_128B`: how the
/// maps are encoded (the harness takes the driver's enum values).
pub const TMA_DATA_TYPE_BF16: i32 = 9;
pub const TMA_DATA_TYPE_U32: i32 = 2;
pub const TMA_SWIZZLE_128B: i32 = 3;
pub const TMA_SWIZZLE_64B: i32 = 2;
pub const TMA_L2_PROMOTION_128B: i32 = 2;

/// How boxes tile each sample's output: voxels per box and boxes along (d, h, w).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTmaBoxes {
    pub shape: [i32; 3],
    pub count: [i32; 3],
}

impl ConvTmaBoxes {
    /// The box shape of `voxels` voxels that overhangs a result of `out` voxels (d, h, w)
    /// least (ties go to the longer rows along w, then h), or None where the tensor map
    /// cannot take the windows read every `stride` voxels: a stride past 8, or a box's
    /// window past 256 voxels along an axis.
    pub fn new(out: [i32; 3], stride: [i32; 3], voxels: i32) -> Option<Self> {
        if stride.iter().any(|&s| s > MAX_ELEMENT_STRIDE) {
            return None;
        }
        let fits = |shape: [i32; 3]| (0..3).all(|i| shape[i] * stride[i] <= MAX_BOX_DIM);
        let count = |shape: [i32; 3]| std::array::from_fn(|i| (out[i] + shape[i] - 1) / shape[i]);
        let powers = || (0..=8).map(|e| 1i32 << e);
        let padded = |shape: [i32; 3]| -> u64 {
            let count: [i32; 3] = count(shape);
            (0..3).map(|i| (count[i] * shape[i]) as u64).product()
        };
        powers()
            .flat_map(|d| powers().map(move |h| (d, h)))
            .filter(|&(d, h)| voxels % (d * h) == 0)
            .map(|(d, h)| [d, h, voxels / (d * h)])
            .filter(|&shape| fits(shape))
            .min_by_key(|&shape| (padded(shape), -shape[2], -shape[1]))
            .map(|shape| Self {
                shape,
                count: count(shape),
            })
    }

    /// Boxes of every sample.
    pub fn boxes(&self, samples: i32) -> u64 {
        samples as u64 * self.count.iter().map(|&c| c as u64).product::<u64>()
    }

    /// Voxels the boxes of every sample cover.
    pub fn padded_voxels(&self, samples: i32) -> u64 {
        self.boxes(samples) * self.shape.iter().map(|&c| c as u64).product::<u64>()
    }
}

/// The grid of a k-major (tf32) backward weights (kernels/params.h, Conv3dTmaParams):
/// `dims` voxels a sample (rows of whole 16-byte chunks), `voxels` over all samples (dy's,
/// and each of x's stride phases'), each channel's row of x's and dy's channel-major packs
/// `row_lens` long (every phase's voxels, in whole 16-byte chunks), x's packed
/// `x_shifts` times (`ConvPhaseGrid::shifts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTmaGrid {
    pub dims: [i32; 3],
    pub voxels: i32,
    pub row_lens: [i32; 2],
    pub x_shifts: i32,
}

/// How a pass on the tensor memory accelerator's tiles walks its operands: boxes of output
/// voxels, or a k-major backward weights' bordered grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvTmaTiling {
    Boxes(ConvTmaBoxes),
    Grid(ConvTmaGrid),
}

impl ConvTmaTiling {
    /// The boxes of a box tiling; None for a grid.
    pub fn boxes(&self) -> Option<ConvTmaBoxes> {
        match self {
            Self::Boxes(boxes) => Some(*boxes),
            Self::Grid(_) => None,
        }
    }
}

/// The arguments of `cuTensorMapEncodeTiled` for one packed operand, besides its address:
/// rank 5 (innermost first; an activation's channels, w, h, d, samples), elements of
/// `data_type`, no interleave, the swizzle whose row the box's channels fill, 128-byte L2
/// promotion, zero fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiledMap {
    /// `TMA_DATA_TYPE_BF16` or `TMA_DATA_TYPE_U32`.
    pub data_type: i32,
    /// `TMA_SWIZZLE_128B` or `TMA_SWIZZLE_64B`.
    pub swizzle: i32,
    pub dims: [u64; 5],
    /// Bytes between consecutive elements of dimensions 1..4.
    pub strides: [u64; 4],
    pub box_dims: [u32; 5],
    pub element_strides: [u32; 5],
}

impl TiledMap {
    /// A packed NDHWC volume of `[n, d, h, w]` voxels of `channels` elements of
    /// `precision` (whole 16-byte chunks), boxes of a row of `row_bytes` (128 or 64) of
    /// channels by `shape` voxels taken every `stride`.
    fn volume(
        precision: ConvPrecision,
        dims: [i32; 4],
        channels: i32,
        shape: [i32; 3],
        stride: [i32; 3],
        row_bytes: i32,
    ) -> Self {
        let [n, d, h, w] = dims.map(|v| v as u64);
        let bytes = element_bytes(precision);
        let row = channels as u64 * bytes as u64;
        let u = |v: i32| v as u32;
        Self {
            data_type: data_type(precision),
            swizzle: swizzle(row_bytes),
            dims: [channels as u64, w, h, d, n],
            strides: [row, row * w, row * w * h, row * w * h * d],
            box_dims: [
                u(row_bytes / bytes),
                u(shape[2] * stride[2]),
                u(shape[1] * stride[1]),
                u(shape[0] * stride[0]),
                1,
            ],
            element_strides: [1, u(stride[2]), u(stride[1]), u(stride[0]), 1],
        }
    }

    /// The maps of a pass's packed operands a and b (channels padded to whole chunks) for
    /// `boxes`: forward's x and weights, backward data's dy and weights (`bn` result
    /// channels a box; `half_rows`: boxes of 64 bytes of channels), backward weights' x and
    /// dy (bf16).
    pub fn operands(
        p: &Conv3dParams,
        precision: ConvPrecision,
        pass: ConvPass,
        boxes: &ConvTmaBoxes,
        bn: u32,
        half_rows: bool,
    ) -> [Self; 2] {
        let chunk = precision.channel_multiple() as i32;
        let pad = |c: i32| (c + chunk - 1) / chunk * chunk;
        let x_dims = [p.n, p.in_d, p.in_h, p.in_w];
        let dy_dims = [p.n, p.out_d, p.out_h, p.out_w];
        let stride = [p.stride_d, p.stride_h, p.stride_w];
        let row_bytes = if half_rows {
            TMA_BOX_HALF_ROW_BYTES
        } else {
            TMA_BOX_ROW_BYTES
        };
        let x = || {
            Self::volume(
                precision,
                x_dims,
                pad(p.cin),
                boxes.shape,
                stride,
                row_bytes,
            )
        };
        let dy = || {
            Self::volume(
                precision,
                dy_dims,
                pad(p.cout),
                boxes.shape,
                [1; 3],
                row_bytes,
            )
        };
        // The weights, packed [rows][tap][channels], as rows of taps * channels.
        let (a, rows, channels) = match pass {
            ConvPass::BackwardWeight => return [x(), dy()],
            ConvPass::Forward => (x(), p.cout, pad(p.cin)),
            ConvPass::BackwardData => (dy(), p.cin, pad(p.cout)),
        };
        let row = (p.k_d * p.k_h * p.k_w * channels) as u64;
        let bytes = element_bytes(precision);
        let weight_row_bytes = row * bytes as u64;
        let all = weight_row_bytes * rows as u64;
        let weights = Self {
            data_type: data_type(precision),
            swizzle: swizzle(row_bytes),
            dims: [row, rows as u64, 1, 1, 1],
            strides: [weight_row_bytes, all, all, all],
            box_dims: [(row_bytes / bytes) as u32, bn, 1, 1, 1],
            element_strides: [1; 5],
        };
        [a, weights]
    }

    /// A channel-major tf32 pack of `shifts` copies of `channels` rows of `row_len` voxels
    /// (`ConvPackKind::ChannelMajor`), boxes of 32 voxels (a 128-byte row) by `box_rows`
    /// channels of one copy: rank 5 as the others, its outer two dimensions 1.
    pub fn channel_major(channels: i32, row_len: i32, box_rows: u32, shifts: i32) -> Self {
        let row = row_len as u64 * 4;
        let copy = row * channels as u64;
        let all = copy * shifts as u64;
        Self {
            data_type: TMA_DATA_TYPE_U32,
            swizzle: TMA_SWIZZLE_128B,
            dims: [row_len as u64, channels as u64, shifts as u64, 1, 1],
            strides: [row, copy, all, all],
            box_dims: [TMA_GRID_STEP_VOXELS as u32, box_rows, 1, 1, 1],
            element_strides: [1; 5],
        }
    }

    /// Bytes of one element: 2 (bf16) or 4 (32-bit words).
    pub fn element_bytes(&self) -> u64 {
        if self.data_type == TMA_DATA_TYPE_BF16 {
            2
        } else {
            4
        }
    }

    /// Bytes of the tensor the map describes: its outermost dimension's stride times its
    /// extent.
    pub fn tensor_bytes(&self) -> u64 {
        self.strides[3] * self.dims[4]
    }

    /// Bytes of one box: the elements it loads (per dimension, the box over its traversal
    /// stride; the innermost whole) times their size.
    pub fn box_bytes(&self) -> u64 {
        (1..5)
            .map(|i| self.box_dims[i].div_ceil(self.element_strides[i]) as u64)
            .product::<u64>()
            * self.box_dims[0] as u64
            * self.element_bytes()
    }
}

/// The largest box the tensor memory accelerator's probe (kernels/conv3d_wgmma.cu,
/// `tma_probe`) copies, and its dynamic shared memory: that box and the slack that aligns
/// it to 1024 bytes.
pub const TMA_PROBE_MAX_BOX_BYTES: u32 = 16384;
pub const TMA_PROBE_SHARED_BYTES: u32 = 1024 + TMA_PROBE_MAX_BOX_BYTES;

fn element_bytes(precision: ConvPrecision) -> i32 {
    precision.packed_bytes().unwrap_or(4) as i32
}

fn swizzle(row_bytes: i32) -> i32 {
    if row_bytes == TMA_BOX_HALF_ROW_BYTES {
        TMA_SWIZZLE_64B
    } else {
        TMA_SWIZZLE_128B
    }
}

fn data_type(precision: ConvPrecision) -> i32 {
    if precision == ConvPrecision::Bf16 {
        TMA_DATA_TYPE_BF16
    } else {
        TMA_DATA_TYPE_U32
    }
}

/// The kernel's parameters: `p` (splits as the plan made them), the tiling, and a's and
/// b's maps as encoded at the packed operands.
pub fn tma_params(
    p: &Conv3dParams,
    tiling: &ConvTmaTiling,
    a: TensorMap,
    b: TensorMap,
) -> Conv3dTmaParams {
    let (shape, count, grid) = match tiling {
        ConvTmaTiling::Boxes(boxes) => (boxes.shape, boxes.count, [0; 3]),
        ConvTmaTiling::Grid(g) => ([0; 3], [0; 3], [g.dims[1], g.dims[2], g.voxels]),
    };
    Conv3dTmaParams {
        a,
        b,
        conv: *p,
        box_d: shape[0],
        box_h: shape[1],
        box_w: shape[2],
        boxes_d: count[0],
        boxes_h: count[1],
        boxes_w: count[2],
        grid_h: grid[0],
        grid_w: grid[1],
        grid_voxels: grid[2],
        pad_: [0; 3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(out: [i32; 3], stride: i32) -> Conv3dParams {
        Conv3dParams {
            n: 2,
            in_d: out[0] * stride,
            in_h: out[1] * stride,
            in_w: out[2] * stride,
            cin: 64,
            out_d: out[0],
            out_h: out[1],
            out_w: out[2],
            cout: 40,
            k_d: 3,
            k_h: 3,
            k_w: 3,
            stride_d: stride,
            stride_h: stride,
            stride_w: stride,
            pad_d: 1,
            pad_h: 1,
            pad_w: 1,
            splits: 1,
            split_len: 0,
        }
    }

    impl ConvTmaBoxes {
        fn new64(p: &Conv3dParams) -> Option<Self> {
            let out = [p.out_d, p.out_h, p.out_w];
            Self::new(
                out,
                [p.stride_d, p.stride_h, p.stride_w],
                TMA_WEIGHT_BOX_VOXELS,
            )
        }
    }

    #[test]
    fn encoding_constants_are_the_drivers() {
        use cudarc::driver::sys::{
            CUtensorMapDataType as Data, CUtensorMapL2promotion as L2,
            CUtensorMapSwizzle as Swizzle,
        };
        assert_eq!(
            TMA_DATA_TYPE_BF16,
            Data::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 as i32
        );
        assert_eq!(
            TMA_DATA_TYPE_U32,
            Data::CU_TENSOR_MAP_DATA_TYPE_UINT32 as i32
        );
        assert_eq!(TMA_SWIZZLE_128B, Swizzle::CU_TENSOR_MAP_SWIZZLE_128B as i32);
        assert_eq!(TMA_SWIZZLE_64B, Swizzle::CU_TENSOR_MAP_SWIZZLE_64B as i32);
        assert_eq!(
            TMA_L2_PROMOTION_128B,
            L2::CU_TENSOR_MAP_L2_PROMOTION_L2_128B as i32
        );
    }

    #[test]
    fn boxes_overhang_the_output_least_and_prefer_long_rows() {
        // Powers of two at least 4 tile exactly; among exact tilings the longest w rows.
        let b = ConvTmaBoxes::new64(&params([16, 16, 16], 1)).unwrap();
        assert_eq!((b.shape, b.count), ([1, 4, 16], [16, 4, 1]));
        let b = ConvTmaBoxes::new64(&params([4, 4, 4], 1)).unwrap();
        assert_eq!((b.shape, b.count), ([4, 4, 4], [1, 1, 1]));
        let b = ConvTmaBoxes::new64(&params([8, 8, 8], 1)).unwrap();
        assert_eq!(b.shape, [1, 8, 8]);
        // 6 x 8 x 7: no shape tiles w exactly but 1 wide, which pads d and h (448 rows);
        // 8 wide rows pad w to 8 (384 rows, as 2 x 4 x 8 does, whose rows along h are
        // shorter).
        let b = ConvTmaBoxes::new64(&params([6, 8, 7], 1)).unwrap();
        assert_eq!((b.shape, b.count), ([1, 8, 8], [6, 1, 1]));
        // 4 x 8 x 10 tiles exactly in 4 x 8 x 2.
        let b = ConvTmaBoxes::new64(&params([4, 8, 10], 1)).unwrap();
        assert_eq!((b.shape, b.count), ([4, 8, 2], [1, 1, 5]));
        assert_eq!(b.padded_voxels(2), 2 * 320);
    }

    #[test]
    fn strided_windows_stay_within_a_maps_limits() {
        // Stride 8: a box's window of 64 voxels along w would be 512 wide.
        let b = ConvTmaBoxes::new64(&params([32, 32, 32], 8)).unwrap();
        assert!(b.shape.iter().all(|&s| s * 8 <= 256), "{b:?}");
        assert_eq!(b.shape.iter().product::<i32>(), 64);
        assert_eq!(ConvTmaBoxes::new64(&params([4, 4, 4], 9)), None);
    }

    #[test]
    fn maps_describe_the_packed_volumes_innermost_first() {
        let p = params([4, 8, 10], 2);
        let b = ConvTmaBoxes::new64(&p).unwrap();
        let [x, dy] = TiledMap::operands(
            &p,
            ConvPrecision::Bf16,
            ConvPass::BackwardWeight,
            &b,
            128,
            false,
        );
        assert_eq!(x.dims, [64, 20, 16, 8, 2]);
        assert_eq!(x.strides, [128, 128 * 20, 128 * 20 * 16, 128 * 20 * 16 * 8]);
        let [bd, bh, bw] = b.shape.map(|v| v as u32);
        assert_eq!(x.box_dims, [64, 2 * bw, 2 * bh, 2 * bd, 1]);
        assert_eq!(x.element_strides, [1, 2, 2, 2, 1]);
        // dy's 40 channels are packed as 40 (a multiple of 8); its boxes read 64 of them,
        // the last 24 outside the tensor.
        assert_eq!(dy.dims, [40, 10, 8, 4, 2]);
        assert_eq!(dy.strides[0], 80);
        assert_eq!(dy.box_dims, [64, bw, bh, bd, 1]);
        assert_eq!(dy.element_strides, [1; 5]);
        assert_eq!(
            (x.data_type, dy.data_type),
            (TMA_DATA_TYPE_BF16, TMA_DATA_TYPE_BF16)
        );
    }

    #[test]
    fn forward_maps_read_a_row_of_channels_and_the_blocks_weight_rows() {
        let p = params([4, 8, 8], 1);
        let b = ConvTmaBoxes::new([4, 8, 8], [1; 3], 128).unwrap();
        assert_eq!(b.shape.iter().product::<i32>(), 128);
        let [x, w] = TiledMap::operands(&p, ConvPrecision::Tf32, ConvPass::Forward, &b, 64, false);
        // tf32: 32 channels (128 bytes) a box, as 4-byte words.
        assert_eq!(x.box_dims[0], 32);
        assert_eq!(x.strides[0], 64 * 4);
        assert_eq!(x.data_type, TMA_DATA_TYPE_U32);
        // Weights [40][27 * 64]: a box is 32 of a row's elements by 64 output channels.
        assert_eq!(w.dims, [27 * 64, 40, 1, 1, 1]);
        assert_eq!(w.strides[0], 27 * 64 * 4);
        assert_eq!(w.box_dims, [32, 64, 1, 1, 1]);
        // Backward data: dy's 40 channels (a row of 32 a box) and the weights [64][27 * 40].
        let [dy, w] = TiledMap::operands(
            &p,
            ConvPrecision::Tf32,
            ConvPass::BackwardData,
            &b,
            64,
            false,
        );
        assert_eq!(dy.dims, [40, 8, 8, 4, 2]);
        assert_eq!(dy.element_strides, [1; 5]);
        assert_eq!(w.dims, [27 * 40, 64, 1, 1, 1]);
        assert_eq!(w.strides[0], 27 * 40 * 4);
        assert_eq!(
            (dy.swizzle, w.swizzle),
            (TMA_SWIZZLE_128B, TMA_SWIZZLE_128B)
        );
    }

    #[test]
    fn channel_major_maps_read_a_row_of_32_voxels_by_the_boxs_channels() {
        let m = TiledMap::channel_major(320, 1004, 64, 3);
        assert_eq!(m.dims, [1004, 320, 3, 1, 1]);
        let row = 1004 * 4;
        assert_eq!(m.strides, [row, row * 320, row * 960, row * 960]);
        assert_eq!(m.box_dims, [32, 64, 1, 1, 1]);
        assert_eq!((m.box_bytes(), m.tensor_bytes()), (32 * 64 * 4, row * 960));
        assert_eq!(
            (m.data_type, m.swizzle),
            (TMA_DATA_TYPE_U32, TMA_SWIZZLE_128B)
        );
        let grid = ConvTmaTiling::Grid(ConvTmaGrid {
            dims: [10, 11, 12],
            voxels: 2 * 1320,
            row_lens: [2 * 1320; 2],
            x_shifts: 3,
        });
        let p = tma_params(
            &params([8, 9, 10], 1),
            &grid,
            TensorMap::default(),
            TensorMap::default(),
        );
        assert_eq!((p.grid_h, p.grid_w, p.grid_voxels), (11, 12, 2640));
        assert_eq!((p.box_d, p.boxes_w), (0, 0));
        assert_eq!(grid.boxes(), None);
    }

    #[test]
    fn half_row_maps_read_32_bf16_channels_in_the_64_byte_swizzle() {
        let p = Conv3dParams {
            cin: 32,
            ..params([4, 8, 8], 1)
        };
        let b = ConvTmaBoxes::new([4, 8, 8], [1; 3], 128).unwrap();
        let [x, w] = TiledMap::operands(&p, ConvPrecision::Bf16, ConvPass::Forward, &b, 64, true);
        assert_eq!((x.box_dims[0], x.strides[0]), (32, 64));
        assert_eq!(w.dims, [27 * 32, 40, 1, 1, 1]);
        assert_eq!(w.box_dims, [32, 64, 1, 1, 1]);
        assert_eq!((x.swizzle, w.swizzle), (TMA_SWIZZLE_64B, TMA_SWIZZLE_64B));
    }
}
