//! Backward weights on the tensor memory accelerator (kernels/conv3d_wgmma.cu, `*_tma*`):
//! how boxes of output voxels tile the reduction, and the tensor maps over the packed
//! operands, as the arguments of `cuTensorMapEncodeTiled` that the device launcher passes
//! to the driver and the harness to its twin.
//!
//! A reduction step is one box of 64 output voxels (box_d x box_h x box_w, powers of two)
//! by 64 channels: dy's box at the voxels, x's at their windows plus the block's tap, read
//! every stride voxels. Elements outside a tensor arrive as zeros, so the convolution's
//! padding and the boxes that overhang the output cost nothing but their copies: a voxel
//! past the output has dy = 0.
use super::params::{Conv3dParams, Conv3dTmaParams, TensorMap};

/// Output voxels in a box: one 128-byte row of bf16 per voxel makes a reduction step.
pub const TMA_BOX_VOXELS: i32 = 64;
/// Channels in a box: one 128-byte row of bf16, the 128-byte swizzle's.
pub const TMA_BOX_CHANNELS: i32 = 64;
/// The largest traversal stride and box extent of a tensor map.
const MAX_ELEMENT_STRIDE: i32 = 8;
const MAX_BOX_DIM: i32 = 256;

/// `CU_TENSOR_MAP_DATA_TYPE_BFLOAT16`, `CU_TENSOR_MAP_SWIZZLE_128B`,
/// `CU_TENSOR_MAP_L2_PROMOTION_L2_128B`: how the maps are encoded (the harness takes the
/// driver's enum values).
pub const TMA_DATA_TYPE_BF16: i32 = 9;
pub const TMA_SWIZZLE_128B: i32 = 3;
pub const TMA_L2_PROMOTION_128B: i32 = 2;

/// How boxes tile each sample's output: voxels per box and boxes along (d, h, w).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTmaBoxes {
    pub shape: [i32; 3],
    pub count: [i32; 3],
}

impl ConvTmaBoxes {
    /// The box shape that overhangs the output of `p` least (ties go to the longer rows
    /// along w, then h), or None where the tensor map cannot stride over x: a stride past
    /// 8, or a box's window past 256 voxels along an axis.
    pub fn new(p: &Conv3dParams) -> Option<Self> {
        let out = [p.out_d, p.out_h, p.out_w];
        let stride = [p.stride_d, p.stride_h, p.stride_w];
        if stride.iter().any(|&s| s > MAX_ELEMENT_STRIDE) {
            return None;
        }
        let fits = |shape: [i32; 3]| (0..3).all(|i| shape[i] * stride[i] <= MAX_BOX_DIM);
        let count = |shape: [i32; 3]| std::array::from_fn(|i| (out[i] + shape[i] - 1) / shape[i]);
        let powers = || (0..=6).map(|e| 1i32 << e);
        let padded = |shape: [i32; 3]| -> u64 {
            let count: [i32; 3] = count(shape);
            (0..3).map(|i| (count[i] * shape[i]) as u64).product()
        };
        powers()
            .flat_map(|d| powers().map(move |h| (d, h)))
            .filter(|&(d, h)| TMA_BOX_VOXELS % (d * h) == 0)
            .map(|(d, h)| [d, h, TMA_BOX_VOXELS / (d * h)])
            .filter(|&shape| fits(shape))
            .min_by_key(|&shape| (padded(shape), -shape[2], -shape[1]))
            .map(|shape| Self {
                shape,
                count: count(shape),
            })
    }

    /// Voxel rows the reduction runs over: every box of every sample.
    pub fn padded_voxels(&self, samples: i32) -> u64 {
        let per_box = TMA_BOX_VOXELS as u64;
        samples as u64 * self.count.iter().map(|&c| c as u64).product::<u64>() * per_box
    }
}

/// The arguments of `cuTensorMapEncodeTiled` for one packed operand, besides its address:
/// rank 5 (channels, w, h, d, samples: innermost first), bf16, no interleave, the 128-byte
/// swizzle, no L2 promotion, zero fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiledMap {
    pub dims: [u64; 5],
    /// Bytes between consecutive elements of dimensions 1..4.
    pub strides: [u64; 4],
    pub box_dims: [u32; 5],
    pub element_strides: [u32; 5],
}

impl TiledMap {
    /// A packed NDHWC volume of `[n, d, h, w]` voxels of `channels` bf16 (a multiple of 8),
    /// boxes of 64 channels by `shape` voxels taken every `stride`.
    fn volume(dims: [i32; 5], channels: i32, shape: [i32; 3], stride: [i32; 3]) -> Self {
        let [n, d, h, w, _] = dims.map(|v| v as u64);
        let row = channels as u64 * 2;
        let u = |v: i32| v as u32;
        Self {
            dims: [channels as u64, w, h, d, n],
            strides: [row, row * w, row * w * h, row * w * h * d],
            box_dims: [
                u(TMA_BOX_CHANNELS),
                u(shape[2] * stride[2]),
                u(shape[1] * stride[1]),
                u(shape[0] * stride[0]),
                1,
            ],
            element_strides: [1, u(stride[2]), u(stride[1]), u(stride[0]), 1],
        }
    }

    /// The maps of backward weights' packed x and dy (channels padded to 8) for `boxes`.
    pub fn backward_weights(p: &Conv3dParams, boxes: &ConvTmaBoxes) -> [Self; 2] {
        let pad = |c: i32| (c + 7) / 8 * 8;
        let x = [p.n, p.in_d, p.in_h, p.in_w, 0];
        let dy = [p.n, p.out_d, p.out_h, p.out_w, 0];
        let stride = [p.stride_d, p.stride_h, p.stride_w];
        [
            Self::volume(x, pad(p.cin), boxes.shape, stride),
            Self::volume(dy, pad(p.cout), boxes.shape, [1; 3]),
        ]
    }
}

/// The kernel's parameters: `p` (splits in box voxels, as the plan made them), the boxes,
/// and x's and dy's maps as encoded at the packed operands.
pub fn tma_params(
    p: &Conv3dParams,
    boxes: &ConvTmaBoxes,
    x: TensorMap,
    dy: TensorMap,
) -> Conv3dTmaParams {
    Conv3dTmaParams {
        x,
        dy,
        conv: *p,
        box_d: boxes.shape[0],
        box_h: boxes.shape[1],
        box_w: boxes.shape[2],
        boxes_d: boxes.count[0],
        boxes_h: boxes.count[1],
        boxes_w: boxes.count[2],
        pad_: [0; 6],
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

    #[test]
    fn boxes_overhang_the_output_least_and_prefer_long_rows() {
        // Powers of two at least 4 tile exactly; among exact tilings the longest w rows.
        let b = ConvTmaBoxes::new(&params([16, 16, 16], 1)).unwrap();
        assert_eq!((b.shape, b.count), ([1, 4, 16], [16, 4, 1]));
        let b = ConvTmaBoxes::new(&params([4, 4, 4], 1)).unwrap();
        assert_eq!((b.shape, b.count), ([4, 4, 4], [1, 1, 1]));
        let b = ConvTmaBoxes::new(&params([8, 8, 8], 1)).unwrap();
        assert_eq!(b.shape, [1, 8, 8]);
        // 6 x 8 x 7: no shape tiles w exactly but 1 wide, which pads d and h (448 rows);
        // 8 wide rows pad w to 8 (384 rows, as 2 x 4 x 8 does, whose rows along h are
        // shorter).
        let b = ConvTmaBoxes::new(&params([6, 8, 7], 1)).unwrap();
        assert_eq!((b.shape, b.count), ([1, 8, 8], [6, 1, 1]));
        // 4 x 8 x 10 tiles exactly in 4 x 8 x 2.
        let b = ConvTmaBoxes::new(&params([4, 8, 10], 1)).unwrap();
        assert_eq!((b.shape, b.count), ([4, 8, 2], [1, 1, 5]));
        assert_eq!(b.padded_voxels(2), 2 * 320);
    }

    #[test]
    fn strided_windows_stay_within_a_maps_limits() {
        // Stride 8: a box's window of 64 voxels along w would be 512 wide.
        let b = ConvTmaBoxes::new(&params([32, 32, 32], 8)).unwrap();
        assert!(b.shape.iter().all(|&s| s * 8 <= 256), "{b:?}");
        assert_eq!(b.shape.iter().product::<i32>(), 64);
        assert_eq!(ConvTmaBoxes::new(&params([4, 4, 4], 9)), None);
    }

    #[test]
    fn maps_describe_the_packed_volumes_innermost_first() {
        let p = params([4, 8, 10], 2);
        let b = ConvTmaBoxes::new(&p).unwrap();
        let [x, dy] = TiledMap::backward_weights(&p, &b);
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
    }
}
