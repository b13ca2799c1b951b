//! In-memory volumes and cases: the types shared by I/O, preprocessing and sampling.
//!
//! Axis order, in one place: a volume is stored x fastest, then y, then z (the NIfTI
//! C-order `[z][y][x]` buffer). As an NDHWC tensor that is D = z, H = y, W = x, so
//! `dims_dhw()` is `[z, y, x]` and the buffer needs no transposition.

/// One scalar 3D image, x fastest.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    /// Sizes along x, y, z.
    pub dims: [usize; 3],
    /// Voxel size in millimetres along x, y, z.
    pub spacing: [f64; 3],
    pub data: Vec<f32>,
}

impl Volume {
    pub fn new(dims: [usize; 3], spacing: [f64; 3], data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), dims.iter().product::<usize>());
        Self {
            dims,
            spacing,
            data,
        }
    }
    pub fn zeros(dims: [usize; 3], spacing: [f64; 3]) -> Self {
        Self::new(dims, spacing, vec![0.0; dims.iter().product()])
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// The value every voxel holds, if they all hold one (0 for an empty volume): a blank or
    /// constant image, which `check` and `predict` warn of.
    pub fn constant_value(&self) -> Option<f32> {
        let first = self.data.first().copied().unwrap_or(0.0);
        self.data.iter().all(|&v| v == first).then_some(first)
    }
    /// Sizes as (depth, height, width) = (z, y, x), the tensor order.
    pub fn dims_dhw(&self) -> [usize; 3] {
        [self.dims[2], self.dims[1], self.dims[0]]
    }
    /// Buffer index of voxel (x, y, z).
    #[inline]
    pub fn index(&self, x: usize, y: usize, z: usize) -> usize {
        (z * self.dims[1] + y) * self.dims[0] + x
    }
    #[inline]
    pub fn at(&self, x: usize, y: usize, z: usize) -> f32 {
        self.data[self.index(x, y, z)]
    }
}

/// A label map in the internal class numbering (0 = background, 1.. = the layout's classes
/// in the order of its `LabelSpec`), x fastest like `Volume`.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelVolume {
    pub dims: [usize; 3],
    pub spacing: [f64; 3],
    pub data: Vec<u8>,
}

impl LabelVolume {
    pub fn new(dims: [usize; 3], spacing: [f64; 3], data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), dims.iter().product::<usize>());
        Self {
            dims,
            spacing,
            data,
        }
    }
    /// Buffer index of voxel (x, y, z).
    #[inline]
    pub fn index(&self, x: usize, y: usize, z: usize) -> usize {
        (z * self.dims[1] + y) * self.dims[0] + x
    }
    #[inline]
    pub fn at(&self, x: usize, y: usize, z: usize) -> u8 {
        self.data[self.index(x, y, z)]
    }
}

/// A case in memory: one volume per selected modality (same grid) and maybe a label map.
#[derive(Clone, Debug)]
pub struct CaseData {
    pub id: String,
    pub channels: Vec<Volume>,
    pub label: Option<LabelVolume>,
}

impl CaseData {
    pub fn dims(&self) -> [usize; 3] {
        self.channels[0].dims
    }
    pub fn spacing(&self) -> [f64; 3] {
        self.channels[0].spacing
    }
}
