//! NIfTI-1 reading and writing (.nii and .nii.gz).
//!
//! Reading decompresses the whole file into memory, parses the header with the `nifti`
//! crate, then checks the declared shape against the bytes that are really there before
//! converting anything, so a corrupt or truncated file is an `Error::File` naming the file
//! and the problem, never a panic or a huge allocation. Voxels are converted to f32 with
//! `scl_slope`/`scl_inter` applied (slope 0 or non-finite = no scaling, as the standard and
//! nibabel do; a valid slope with a non-finite intercept is refused, as nibabel refuses it).
//! Voxel sizes and affines are in mm: the file's spatial unit (`xyzt_units`) scales them,
//! as ITK (and so nnU-Net) scales voxel size and origin. The buffer order is the file's: x
//! fastest, then y, z, and the 4th dimension (channels) slowest, which is exactly
//! `Volume`'s order.
//!
//! Writing builds the 348-byte header from a `NiftiHeaderInfo` (the geometry of a
//! reference image: shape, voxel size, qform and sform with their codes), gzips it with
//! the data and writes the file atomically. The header keeps the reference's units, and
//! its voxel size goes back into them, so a map written on an image's header means what
//! the image's header means.
use crate::data::volume::Volume;
use crate::error::{Error, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const HEADER_SIZE: usize = 348;
/// Header plus the 4-byte extension flag: where voxel data starts in files we write.
const DATA_OFFSET: usize = 352;

/// Voxel data types this reader converts. Complex, RGB and 128-bit floats are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoxelType {
    Uint8,
    Int8,
    Uint16,
    Int16,
    Uint32,
    Int32,
    Uint64,
    Int64,
    Float32,
    Float64,
}

impl VoxelType {
    /// The NIfTI-1 `datatype` code.
    pub fn code(self) -> i16 {
        match self {
            VoxelType::Uint8 => 2,
            VoxelType::Int16 => 4,
            VoxelType::Int32 => 8,
            VoxelType::Float32 => 16,
            VoxelType::Float64 => 64,
            VoxelType::Int8 => 256,
            VoxelType::Uint16 => 512,
            VoxelType::Uint32 => 768,
            VoxelType::Int64 => 1024,
            VoxelType::Uint64 => 1280,
        }
    }

    /// The type for a NIfTI-1 `datatype` code; a clear message for the ones we refuse.
    pub fn from_code(code: i16) -> std::result::Result<Self, String> {
        Ok(match code {
            2 => VoxelType::Uint8,
            4 => VoxelType::Int16,
            8 => VoxelType::Int32,
            16 => VoxelType::Float32,
            64 => VoxelType::Float64,
            256 => VoxelType::Int8,
            512 => VoxelType::Uint16,
            768 => VoxelType::Uint32,
            1024 => VoxelType::Int64,
            1280 => VoxelType::Uint64,
            1 => return Err("unsupported datatype 1 (binary)".into()),
            32 => return Err("unsupported datatype 32 (complex64)".into()),
            128 => return Err("unsupported datatype 128 (RGB24)".into()),
            1536 => return Err("unsupported datatype 1536 (float128)".into()),
            1792 => return Err("unsupported datatype 1792 (complex128)".into()),
            2048 => return Err("unsupported datatype 2048 (complex256)".into()),
            2304 => return Err("unsupported datatype 2304 (RGBA32)".into()),
            other => return Err(format!("unknown datatype code {other}")),
        })
    }

    pub fn size_of(self) -> usize {
        match self {
            VoxelType::Uint8 | VoxelType::Int8 => 1,
            VoxelType::Uint16 | VoxelType::Int16 => 2,
            VoxelType::Uint32 | VoxelType::Int32 | VoxelType::Float32 => 4,
            VoxelType::Uint64 | VoxelType::Int64 | VoxelType::Float64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            VoxelType::Uint8 => "uint8",
            VoxelType::Int8 => "int8",
            VoxelType::Uint16 => "uint16",
            VoxelType::Int16 => "int16",
            VoxelType::Uint32 => "uint32",
            VoxelType::Int32 => "int32",
            VoxelType::Uint64 => "uint64",
            VoxelType::Int64 => "int64",
            VoxelType::Float32 => "float32",
            VoxelType::Float64 => "float64",
        }
    }
}

/// Millimetres per unit of a file's spatial coordinates (`xyzt_units & 7`): 1000 for
/// metres, 0.001 for micrometres, 1 for mm and for unknown (0), as ITK reads them.
fn mm_per_unit(xyzt_units: u8) -> f64 {
    match xyzt_units & 0x07 {
        1 => 1e3,
        3 => 1e-3,
        _ => 1.0,
    }
}

/// What is kept of a file's header: enough to check that images of a case share a grid
/// and to write an output on the same grid (shape, voxel size, qform and sform with codes).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NiftiHeaderInfo {
    /// Sizes along x, y, z.
    pub dims: [usize; 3],
    /// Size of the 4th dimension (1 for a 3D image).
    pub channels: usize,
    /// Voxel size in mm along x, y, z: |pixdim[1..4]| scaled from the file's spatial unit.
    pub spacing: [f64; 3],
    /// `pixdim[0]`: the qform's handedness, -1 or 1.
    pub qfac: f32,
    pub qform_code: i16,
    pub sform_code: i16,
    /// Quaternion b, c, d of the qform rotation.
    pub quatern: [f32; 3],
    /// qform translation (qoffset_x, y, z), as stored (in the file's spatial unit).
    pub qoffset: [f32; 3],
    /// sform rows x, y, z, as stored (in the file's spatial unit).
    pub srow: [[f32; 4]; 3],
    /// Spatial and temporal units (`xyzt_units`), written back as read.
    pub xyzt_units: u8,
    /// The file's voxel type (informational; writers choose their own).
    pub datatype: VoxelType,
    /// The file's scaling as read (informational; writers write slope 1, intercept 0).
    pub scl_slope: f32,
    pub scl_inter: f32,
}

impl NiftiHeaderInfo {
    /// A header for a new image: identity-rotation qform and sform (code 1, scanner
    /// coordinates) with the given voxel size, origin at voxel (0, 0, 0).
    pub fn new(dims: [usize; 3], spacing: [f64; 3]) -> Self {
        let s = spacing.map(|v| v as f32);
        Self {
            dims,
            channels: 1,
            spacing,
            qfac: 1.0,
            qform_code: 1,
            sform_code: 1,
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow: [
                [s[0], 0.0, 0.0, 0.0],
                [0.0, s[1], 0.0, 0.0],
                [0.0, 0.0, s[2], 0.0],
            ],
            xyzt_units: 2,
            datatype: VoxelType::Float32,
            scl_slope: 1.0,
            scl_inter: 0.0,
        }
    }

    /// Sets the qform from a unit quaternion (w, b, c, d) with `w >= 0`, a handedness
    /// (`qfac`, the sign of the z axis) and a translation in mm, and makes the sform equal
    /// to it, so both transforms describe the same grid.
    pub fn set_rotation(&mut self, quaternion: [f64; 4], qfac: f32, offset: [f64; 3]) {
        let [w, b, c, d] = quaternion;
        let sign = if w < 0.0 { -1.0 } else { 1.0 };
        self.quatern = [(sign * b) as f32, (sign * c) as f32, (sign * d) as f32];
        self.qfac = if qfac < 0.0 { -1.0 } else { 1.0 };
        let unit = mm_per_unit(self.xyzt_units);
        self.qoffset = offset.map(|v| (v / unit) as f32);
        self.qform_code = self.qform_code.max(1);
        self.sform_code = self.sform_code.max(1);
        let a = self.qform_affine();
        for (row, out) in a.iter().take(3).zip(self.srow.iter_mut()) {
            *out = row.map(|v| (v / unit) as f32);
        }
    }

    /// Why the transform `affine` would use cannot place the voxels in space, if it cannot:
    /// a sform (`sform_code > 0`) with a value that is not a number or a singular 3x3 part
    /// (e.g. all zeros), or a qform whose quaternion or offset is not a number.
    fn unusable_transform(&self) -> Option<String> {
        if self.sform_code > 0 {
            let m = self.sform_affine();
            let why = if m.iter().flatten().any(|v| !v.is_finite()) {
                "holds a value that is not a number"
            } else {
                let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                    - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                    + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
                if det != 0.0 {
                    return None;
                }
                "is singular (its 3x3 part has determinant 0: all zeros, or two axes alike)"
            };
            return Some(format!(
                "the sform (srow_x/y/z, sform_code {}) {why}; fix it, or set sform_code to 0 \
                 so that the qform places the voxels",
                self.sform_code
            ));
        }
        let qform = self.quatern.iter().chain(&self.qoffset);
        if self.qform_code > 0 && qform.clone().any(|v| !v.is_finite()) {
            return Some(format!(
                "the qform (quatern_b/c/d, qoffset_x/y/z, qform_code {}) holds a value that is \
                 not a number",
                self.qform_code
            ));
        }
        None
    }

    /// The voxel-to-world transform (world in mm) the NIfTI standard prefers: the sform when
    /// `sform_code > 0`, else the qform (which, with `qform_code == 0`, is just the voxel
    /// size on the diagonal). 4x4, row-major.
    pub fn affine(&self) -> [[f64; 4]; 4] {
        if self.sform_code > 0 {
            self.sform_affine()
        } else {
            self.qform_affine()
        }
    }

    /// The sform as a matrix, world in mm.
    pub fn sform_affine(&self) -> [[f64; 4]; 4] {
        let unit = mm_per_unit(self.xyzt_units);
        let r = |i: usize| self.srow[i].map(|v| v as f64 * unit);
        [r(0), r(1), r(2), [0.0, 0.0, 0.0, 1.0]]
    }

    /// The qform as a matrix (NIfTI-1 "method 2"); "method 1" when `qform_code == 0`. World
    /// in mm, as `spacing` is.
    pub fn qform_affine(&self) -> [[f64; 4]; 4] {
        let [sx, sy, sz] = self.spacing;
        if self.qform_code <= 0 {
            return [
                [sx, 0.0, 0.0, 0.0],
                [0.0, sy, 0.0, 0.0],
                [0.0, 0.0, sz, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ];
        }
        let [b, c, d] = self.quatern.map(|v| v as f64);
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - b * b - c * c,
            ],
        ];
        let scale = [sx, sy, sz * if self.qfac < 0.0 { -1.0 } else { 1.0 }];
        let o = self
            .qoffset
            .map(|v| v as f64 * mm_per_unit(self.xyzt_units));
        let mut m = [[0.0; 4]; 4];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] = r[i][j] * scale[j];
            }
            m[i][3] = o[i];
        }
        m[3][3] = 1.0;
        m
    }

    /// The largest absolute difference between this header's affine and another's.
    pub fn affine_distance(&self, other: &NiftiHeaderInfo) -> f64 {
        let (a, b) = (self.affine(), other.affine());
        let mut worst = 0.0f64;
        for (ra, rb) in a.iter().zip(&b) {
            for (x, y) in ra.iter().zip(rb) {
                let d = (x - y).abs();
                if d.is_nan() {
                    return f64::INFINITY;
                }
                worst = worst.max(d);
            }
        }
        worst
    }

    pub fn voxel_count(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A NIfTI file in memory: its header and its (decompressed) voxel bytes, not yet
/// converted. Converting channel by channel lets a loader take two channels of a 4D file
/// without converting all of them.
#[derive(Debug)]
pub struct NiftiFile {
    path: PathBuf,
    header: NiftiHeaderInfo,
    little_endian: bool,
    voxel_bytes: Vec<u8>,
}

/// Decompresses a .nii.gz: every gzip member in turn, keeping only the bytes the NIfTI
/// header declares (header, extensions, voxels). Whatever a member holds beyond them is
/// decompressed to check the stream and dropped, so a stream padded with hundreds of MB
/// never sits in memory. After the last member, nothing or zero bytes (padding some tools
/// add; nibabel and `gzip -t` accept it) may follow.
fn gunzip(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    let broken = |e: std::io::Error| {
        let why = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the gzip stream ends early (truncated file)".to_string()
        } else {
            format!("broken gzip stream ({e})")
        };
        Error::file(path, why)
    };
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
    let mut rest = bytes;
    loop {
        let mut member = flate2::bufread::GzDecoder::new(rest);
        loop {
            let want = if out.len() < HEADER_SIZE {
                HEADER_SIZE
            } else {
                declared_len(&out).unwrap_or(usize::MAX)
            };
            if out.len() >= want {
                break;
            }
            let more = (want - out.len()) as u64;
            if (&mut member)
                .take(more)
                .read_to_end(&mut out)
                .map_err(broken)?
                == 0
            {
                break;
            }
        }
        std::io::copy(&mut member, &mut std::io::sink()).map_err(broken)?;
        rest = member.into_inner();
        if rest.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        if !rest.starts_with(&[0x1f, 0x8b]) {
            return Err(Error::file(
                path,
                format!(
                    "trailing data after the gzip stream ({} bytes that are neither another \
                     gzip member nor zero padding)",
                    rest.len()
                ),
            ));
        }
    }
}

/// The bytes a NIfTI-1 file needs by its header (`header`, at least 348 bytes): the voxel
/// offset plus the voxels; None when the header cannot say (`parse` then names the fault).
fn declared_len(header: &[u8]) -> Option<usize> {
    let h = ::nifti::NiftiHeader::from_reader(header.get(..HEADER_SIZE)?).ok()?;
    let ndim = usize::from(h.dim[0]).clamp(1, 7);
    let size = VoxelType::from_code(h.datatype).ok()?.size_of();
    let offset = h.vox_offset;
    if !offset.is_finite() || offset < 0.0 {
        return None;
    }
    h.dim[1..=ndim]
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(usize::from(d)))?
        .checked_add(offset as usize)
}

/// Bytes as a quoted string with non-printable bytes escaped, e.g. `"ab\x00\x01"`.
fn shown_bytes(bytes: &[u8]) -> String {
    let escaped: String = bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    format!("\"{escaped}\"")
}

fn sizeof_hdr(bytes: &[u8]) -> Option<(i32, i32)> {
    let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some((i32::from_le_bytes(b), i32::from_be_bytes(b)))
}

impl NiftiFile {
    /// Reads and checks a .nii or .nii.gz file (gzip is recognised by its magic bytes).
    pub fn open(path: &Path) -> Result<Self> {
        let raw =
            std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
            gunzip(path, &raw)?
        } else {
            if !matches!(
                sizeof_hdr(&raw),
                None | Some((348 | 540, _)) | Some((_, 348 | 540))
            ) {
                return Err(Error::file(
                    path,
                    format!(
                        "not a NIfTI-1 file and not gzip-compressed (it starts with {})",
                        shown_bytes(&raw[..raw.len().min(8)])
                    ),
                ));
            }
            raw
        };
        Self::parse(path, bytes)
    }

    fn parse(path: &Path, mut bytes: Vec<u8>) -> Result<Self> {
        let bad = |msg: String| Error::file(path, msg);
        // sizeof_hdr reads 348 in the file's byte order.
        let little_endian = match sizeof_hdr(&bytes) {
            None => return Err(bad("file is empty or shorter than a NIfTI header".into())),
            Some((348, _)) => true,
            Some((_, 348)) => false,
            Some((540, _)) | Some((_, 540)) => {
                return Err(bad(
                    "NIfTI-2 files are not supported (convert to NIfTI-1)".into()
                ))
            }
            Some((size, _)) => {
                return Err(bad(format!(
                    "not a NIfTI-1 file: the header size (sizeof_hdr) is {size}, not 348"
                )))
            }
        };
        if bytes.len() < HEADER_SIZE {
            return Err(bad(format!(
                "truncated: {} bytes, shorter than the 348-byte header",
                bytes.len()
            )));
        }
        match &bytes[344..348] {
            b"n+1\0" => {}
            b"ni1\0" => {
                return Err(bad(
                    "a two-file NIfTI (.hdr/.img) header is not supported; use .nii or .nii.gz"
                        .into(),
                ))
            }
            magic => {
                return Err(bad(format!(
                    "bad magic {} at byte 344 (a NIfTI-1 file has \"n+1\\0\")",
                    shown_bytes(magic)
                )))
            }
        }
        // The reader takes the byte order from dim[0] (a value outside 1..=7 reads as the
        // other order); sizeof_hdr has already said which order the file is in, so a bad
        // dim[0] is reported as the file holds it, not byte-swapped.
        let dim0_bytes = [bytes[40], bytes[41]];
        let dim0 = if little_endian {
            i16::from_le_bytes(dim0_bytes)
        } else {
            i16::from_be_bytes(dim0_bytes)
        };
        if !(1..=7).contains(&dim0) {
            return Err(bad(format!(
                "invalid dim[0] = {dim0}: the number of dimensions must be 1 to 7"
            )));
        }
        let h = ::nifti::NiftiHeader::from_reader(&bytes[..HEADER_SIZE])
            .map_err(|e| bad(format!("invalid NIfTI header: {e}")))?;
        let datatype = VoxelType::from_code(h.datatype).map_err(bad)?;
        // The header's dims are signed 16-bit numbers; the reader hands them over unsigned.
        let signed = h.dim.map(|d| d as i16);
        let ndim = dim0 as usize;
        if let Some(i) = (1..=ndim).find(|&i| signed[i] < 0) {
            return Err(bad(format!(
                "dimension {i} has the negative size {} (dims {:?})",
                signed[i],
                &signed[1..=ndim]
            )));
        }
        let dim: Vec<usize> = (1..=7)
            .map(|i| if i <= ndim { h.dim[i] as usize } else { 1 })
            .collect();
        if let Some(i) = dim[..ndim].iter().position(|&d| d == 0) {
            return Err(bad(format!("dimension {} has size 0", i + 1)));
        }
        if dim[4..].iter().any(|&d| d > 1) {
            return Err(bad(format!(
                "{ndim}D images with more than 4 dimensions are not supported (dims {:?})",
                &dim[..ndim]
            )));
        }
        let offset = h.vox_offset;
        if !offset.is_finite() || offset < HEADER_SIZE as f32 || offset.fract() != 0.0 {
            return Err(bad(format!("invalid vox_offset {offset}")));
        }
        let offset = offset as usize;
        let voxels = dim.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let needed = voxels
            .and_then(|n| n.checked_mul(datatype.size_of()))
            .ok_or_else(|| bad(format!("dims {:?} are too large", &dim[..ndim])))?;
        let available = bytes.len().saturating_sub(offset);
        if available < needed {
            return Err(bad(format!(
                "truncated: header declares {} {} voxels ({needed} bytes from offset {offset}) \
                 but only {available} bytes follow",
                dim[..ndim]
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("x"),
                datatype.name()
            )));
        }
        if let Some(i) = (1..=3).find(|&i| !h.pixdim[i].is_finite()) {
            return Err(bad(format!(
                "pixdim[{i}] (a voxel size) is {}: not a number",
                h.pixdim[i]
            )));
        }
        // A zero voxel size places every voxel at one point; reading it as 1 mm would
        // silently disagree with an sform that says otherwise. Axes beyond dim[0] (a 2D
        // image's z), and axes of one voxel (a single slice), have no spacing to give.
        if let Some(i) = (1..=ndim.min(3)).find(|&i| h.pixdim[i] == 0.0 && dim[i - 1] > 1) {
            return Err(bad(format!(
                "pixdim[{i}] (the voxel size along {}) is 0; a voxel size must be positive",
                ["x", "y", "z"][i - 1]
            )));
        }
        let spacing = [1usize, 2, 3].map(|i| match h.pixdim[i].abs() as f64 {
            0.0 => 1.0,
            p => p * mm_per_unit(h.xyzt_units),
        });
        // 5 (template) came after the first NIfTI-1 release; nibabel reads it too.
        for (name, code) in [("qform_code", h.qform_code), ("sform_code", h.sform_code)] {
            if !(0..=5).contains(&code) {
                return Err(bad(format!(
                    "{name} is {code}; a transform code is 0 (unset) to 5 (unknown, scanner, \
                     aligned, Talairach, MNI, template)"
                )));
            }
        }
        // The qform's rotation is a unit quaternion whose first part is sqrt(1 - b² - c² - d²):
        // beyond rounding, b² + c² + d² > 1 is no rotation, and its matrix would skew the grid.
        let squares: f64 = [h.quatern_b, h.quatern_c, h.quatern_d]
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum();
        if h.qform_code > 0 && squares.is_finite() && squares > 1.0 + 1e-6 {
            return Err(bad(format!(
                "the qform quaternion (quatern_b/c/d {}, {}, {}, qform_code {}) is not a \
                 rotation: b² + c² + d² = {squares:.6} exceeds 1",
                h.quatern_b, h.quatern_c, h.quatern_d, h.qform_code
            )));
        }
        // nibabel refuses this too: reading the intercept as 0 would shift every value.
        if h.scl_slope != 0.0 && h.scl_slope.is_finite() && !h.scl_inter.is_finite() {
            return Err(bad(format!(
                "scl_inter (the intercept) is {} with scl_slope {}: not a finite number, so the \
                 voxel values cannot be scaled",
                h.scl_inter, h.scl_slope
            )));
        }
        let header = NiftiHeaderInfo {
            dims: [dim[0], dim[1], dim[2]],
            channels: dim[3],
            spacing,
            qfac: if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 },
            qform_code: h.qform_code,
            sform_code: h.sform_code,
            quatern: [h.quatern_b, h.quatern_c, h.quatern_d],
            qoffset: [h.quatern_x, h.quatern_y, h.quatern_z],
            srow: [h.srow_x, h.srow_y, h.srow_z],
            xyzt_units: h.xyzt_units,
            datatype,
            scl_slope: h.scl_slope,
            scl_inter: h.scl_inter,
        };
        if let Some(why) = header.unusable_transform() {
            return Err(bad(why));
        }
        bytes.truncate(offset + needed);
        bytes.drain(..offset);
        Ok(Self {
            path: path.to_path_buf(),
            header,
            little_endian: h.endianness == ::nifti::Endianness::Little,
            voxel_bytes: bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &NiftiHeaderInfo {
        &self.header
    }

    /// The (slope, intercept) applied when converting, or None when the file asks for none
    /// (`open` refused a valid slope with a non-finite intercept).
    pub fn scaling(&self) -> Option<(f32, f32)> {
        let (s, i) = (self.header.scl_slope, self.header.scl_inter);
        (s != 0.0 && s.is_finite()).then_some((s, i))
    }

    /// Channel `c` (the 4th dimension) as f32, scaled, x fastest.
    pub fn channel(&self, c: usize) -> Result<Vec<f32>> {
        if c >= self.header.channels {
            return Err(Error::file(
                &self.path,
                format!(
                    "channel {c} requested but the image has {} channel(s)",
                    self.header.channels
                ),
            ));
        }
        let n = self.header.voxel_count();
        let size = self.header.datatype.size_of();
        let bytes = &self.voxel_bytes[c * n * size..(c + 1) * n * size];
        let scaling = self
            .scaling()
            .map(|(slope, inter)| (slope as f64, inter as f64));
        let out = convert(bytes, self.header.datatype, self.little_endian, scaling);
        // A finite value the file holds that float32 cannot (1e39 in float64, or after
        // scaling) reads as infinite: it is not a NaN/Inf of the file, and --replace-nan
        // must not zero it unsaid.
        if out.iter().any(|v| !v.is_finite()) {
            let t = self.header.datatype;
            let outside: Vec<usize> = (0..n)
                .filter(|&i| {
                    !out[i].is_finite() && stored_is_finite(bytes, t, self.little_endian, i)
                })
                .collect();
            if let Some(&first) = outside.first() {
                return Err(Error::file(
                    &self.path,
                    format!(
                        "{} voxel value(s) outside the float32 range (about ±3.4e38){}, the \
                         first at {}; voxseg reads voxels as float32",
                        outside.len(),
                        if scaling.is_some_and(|scaling| scaling != (1.0, 0.0)) {
                            " once scaled by scl_slope and scl_inter"
                        } else {
                            ""
                        },
                        crate::data::grid::position_text(first, self.header.dims)
                    ),
                ));
            }
        }
        Ok(out)
    }

    /// Channel `c` as a `Volume`.
    pub fn volume(&self, c: usize) -> Result<Volume> {
        Ok(Volume::new(
            self.header.dims,
            self.header.spacing,
            self.channel(c)?,
        ))
    }
}

/// Whether voxel `i` of `bytes` holds a finite number as stored (integers always do).
fn stored_is_finite(bytes: &[u8], t: VoxelType, little: bool, i: usize) -> bool {
    let n = t.size_of();
    let b = &bytes[i * n..(i + 1) * n];
    match t {
        VoxelType::Float32 => {
            let a: [u8; 4] = b.try_into().expect("4 bytes");
            let v = if little {
                f32::from_le_bytes(a)
            } else {
                f32::from_be_bytes(a)
            };
            v.is_finite()
        }
        VoxelType::Float64 => {
            let a: [u8; 8] = b.try_into().expect("8 bytes");
            let v = if little {
                f64::from_le_bytes(a)
            } else {
                f64::from_be_bytes(a)
            };
            v.is_finite()
        }
        _ => true,
    }
}

/// The stored values as f32, each scaled by `scaling` (slope, intercept) first where given.
/// The scaling is applied in f64, before the one rounding to f32: stored integers beyond
/// f32's 2^24 that an intercept brings back into range (a label stored as v + 2^24 with
/// intercept -2^24) keep their value.
fn convert(bytes: &[u8], t: VoxelType, little: bool, scaling: Option<(f64, f64)>) -> Vec<f32> {
    let value = |v: f64| match scaling {
        Some((slope, inter)) => (v * slope + inter) as f32,
        None => v as f32,
    };
    macro_rules! conv {
        ($ty:ty, $n:expr) => {
            bytes
                .chunks_exact($n)
                .map(|c| {
                    let a: [u8; $n] = c.try_into().expect("chunk size");
                    let v = if little {
                        <$ty>::from_le_bytes(a)
                    } else {
                        <$ty>::from_be_bytes(a)
                    };
                    match scaling {
                        Some(_) => value(v as f64),
                        None => v as f32,
                    }
                })
                .collect()
        };
    }
    match t {
        VoxelType::Uint8 => bytes.iter().map(|&b| value(b as f64)).collect(),
        VoxelType::Int8 => bytes.iter().map(|&b| value(b as i8 as f64)).collect(),
        VoxelType::Uint16 => conv!(u16, 2),
        VoxelType::Int16 => conv!(i16, 2),
        VoxelType::Uint32 => conv!(u32, 4),
        VoxelType::Int32 => conv!(i32, 4),
        VoxelType::Uint64 => conv!(u64, 8),
        VoxelType::Int64 => conv!(i64, 8),
        VoxelType::Float32 => conv!(f32, 4),
        VoxelType::Float64 => conv!(f64, 8),
    }
}

/// Reads a 3D image (or a 4D image with a single channel) as a `Volume`.
pub fn read_volume(path: &Path) -> Result<(Volume, NiftiHeaderInfo)> {
    let file = NiftiFile::open(path)?;
    if file.header.channels != 1 {
        return Err(Error::file(
            path,
            format!(
                "expected a 3D image, found a 4D image with {} channels",
                file.header.channels
            ),
        ));
    }
    Ok((file.volume(0)?, file.header.clone()))
}

/// Voxel data to write, x fastest, channel slowest.
#[derive(Clone, Copy, Debug)]
pub enum VoxelData<'a> {
    Uint8(&'a [u8]),
    Int16(&'a [i16]),
    Float32(&'a [f32]),
}

impl VoxelData<'_> {
    fn len(&self) -> usize {
        match self {
            VoxelData::Uint8(d) => d.len(),
            VoxelData::Int16(d) => d.len(),
            VoxelData::Float32(d) => d.len(),
        }
    }
    fn voxel_type(&self) -> VoxelType {
        match self {
            VoxelData::Uint8(_) => VoxelType::Uint8,
            VoxelData::Int16(_) => VoxelType::Int16,
            VoxelData::Float32(_) => VoxelType::Float32,
        }
    }
    /// Writes the voxels little-endian, converting in blocks so the (gzip) writer gets
    /// large writes.
    fn write_le(&self, w: &mut impl Write) -> std::io::Result<()> {
        const BLOCK: usize = 1 << 16;
        let mut buf = Vec::with_capacity(BLOCK * 4);
        match self {
            VoxelData::Uint8(d) => w.write_all(d),
            VoxelData::Int16(d) => d.chunks(BLOCK).try_for_each(|block| {
                buf.clear();
                buf.extend(block.iter().flat_map(|v| v.to_le_bytes()));
                w.write_all(&buf)
            }),
            VoxelData::Float32(d) => d.chunks(BLOCK).try_for_each(|block| {
                buf.clear();
                buf.extend(block.iter().flat_map(|v| v.to_le_bytes()));
                w.write_all(&buf)
            }),
        }
    }
}

/// The 348-byte NIfTI-1 header (little-endian) for `data` on `reference`'s grid with
/// `channels` in the 4th dimension, followed by the empty extension flag.
fn header_bytes(
    reference: &NiftiHeaderInfo,
    channels: usize,
    voxel_type: VoxelType,
    scaling: (f32, f32),
) -> Vec<u8> {
    let mut h = vec![0u8; DATA_OFFSET];
    let put_i16 =
        |h: &mut Vec<u8>, at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 =
        |h: &mut Vec<u8>, at: usize, v: f32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    h[0..4].copy_from_slice(&(HEADER_SIZE as i32).to_le_bytes());
    h[38] = b'r';
    let ndim = if channels > 1 { 4 } else { 3 };
    let dims = [
        ndim,
        reference.dims[0],
        reference.dims[1],
        reference.dims[2],
        channels,
        1,
        1,
        1,
    ];
    for (i, d) in dims.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * i, *d as i16);
    }
    put_i16(&mut h, 70, voxel_type.code());
    put_i16(&mut h, 72, (voxel_type.size_of() * 8) as i16);
    // Back into the reference's unit, which the header keeps: the f32 cast restores the
    // stored pixdim, the scaling there and back being off by f64 roundings at most.
    let unit = mm_per_unit(reference.xyzt_units);
    let pixdim = [
        reference.qfac,
        (reference.spacing[0] / unit) as f32,
        (reference.spacing[1] / unit) as f32,
        (reference.spacing[2] / unit) as f32,
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    for (i, p) in pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * i, *p);
    }
    put_f32(&mut h, 108, DATA_OFFSET as f32);
    put_f32(&mut h, 112, scaling.0);
    put_f32(&mut h, 116, scaling.1);
    h[123] = reference.xyzt_units;
    let descrip = b"voxseg";
    h[148..148 + descrip.len()].copy_from_slice(descrip);
    put_i16(&mut h, 252, reference.qform_code);
    put_i16(&mut h, 254, reference.sform_code);
    for (i, v) in reference
        .quatern
        .iter()
        .chain(&reference.qoffset)
        .enumerate()
    {
        put_f32(&mut h, 256 + 4 * i, *v);
    }
    for (i, v) in reference.srow.iter().flatten().enumerate() {
        put_f32(&mut h, 280 + 4 * i, *v);
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h
}

/// Writes `data` (x fastest, channel slowest) as a gzipped NIfTI-1 file on `reference`'s
/// grid, atomically. `scaling` is the (slope, intercept) to record; readers compute
/// `stored * slope + intercept`.
pub fn write_nifti(
    path: &Path,
    reference: &NiftiHeaderInfo,
    channels: usize,
    data: VoxelData<'_>,
    scaling: (f32, f32),
) -> Result<()> {
    write_nifti_described(path, reference, channels, data, scaling, "voxseg")
}

/// `write_nifti` with `descrip` (at most 79 bytes are kept) in the header's description
/// field, which viewers and `fslhd` show.
fn write_nifti_described(
    path: &Path,
    reference: &NiftiHeaderInfo,
    channels: usize,
    data: VoxelData<'_>,
    scaling: (f32, f32),
    descrip: &str,
) -> Result<()> {
    let expected = reference.voxel_count() * channels;
    if channels == 0 || data.len() != expected {
        return Err(Error::file(
            path,
            format!(
                "cannot write: {} voxels given for a {}x{}x{} grid with {channels} channel(s)",
                data.len(),
                reference.dims[0],
                reference.dims[1],
                reference.dims[2]
            ),
        ));
    }
    if reference
        .dims
        .iter()
        .chain([&channels])
        .any(|&d| d > i16::MAX as usize)
    {
        return Err(Error::file(path, "cannot write: a dimension exceeds 32767"));
    }
    let mut header = header_bytes(reference, channels, data.voxel_type(), scaling);
    let descrip = &descrip.as_bytes()[..descrip.len().min(79)];
    header[148..228].fill(0);
    header[148..148 + descrip.len()].copy_from_slice(descrip);
    let gzip = path.extension().is_some_and(|e| e == "gz");
    crate::atomic::write_with(path, |w| {
        if gzip {
            let mut enc = GzEncoder::new(w, Compression::new(3));
            enc.write_all(&header)?;
            data.write_le(&mut enc)?;
            enc.finish()?;
            Ok(())
        } else {
            w.write_all(&header)?;
            data.write_le(w)
        }
    })
}

/// Writes a label map (file values, x fastest) as uint8 on `reference`'s grid.
pub fn write_label_map(path: &Path, reference: &NiftiHeaderInfo, values: &[u8]) -> Result<()> {
    write_nifti(path, reference, 1, VoxelData::Uint8(values), (1.0, 0.0))
}

/// Writes per-voxel probabilities given channels-last (the engine's NDHWC order, one row
/// of `channels` values per voxel) as a float32 image whose 4th dimension is the channel;
/// `descrip` (e.g. the channel order) goes into the header's description field.
pub fn write_probability_map(
    path: &Path,
    reference: &NiftiHeaderInfo,
    channels: usize,
    channels_last: &[f32],
    descrip: &str,
) -> Result<()> {
    let n = reference.voxel_count();
    if channels == 0 || channels_last.len() != n * channels {
        return Err(Error::file(
            path,
            format!(
                "cannot write: {} probabilities for {n} voxels x {channels} channels",
                channels_last.len()
            ),
        ));
    }
    let mut planar = vec![0.0f32; n * channels];
    for (v, row) in channels_last.chunks_exact(channels).enumerate() {
        for (c, p) in row.iter().enumerate() {
            planar[c * n + v] = *p;
        }
    }
    write_nifti_described(
        path,
        reference,
        channels,
        VoxelData::Float32(&planar),
        (1.0, 0.0),
        descrip,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::case::grid_difference;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("voxseg-nifti-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn positional(dims: [usize; 3]) -> Vec<f32> {
        let mut v = Vec::new();
        for z in 0..dims[2] {
            for y in 0..dims[1] {
                for x in 0..dims[0] {
                    v.push((x + 100 * y + 10000 * z) as f32);
                }
            }
        }
        v
    }

    #[test]
    fn round_trip_keeps_axis_order_checked_by_the_nifti_crate() {
        let dir = temp_dir("axes");
        let dims = [5, 4, 3];
        let mut header = NiftiHeaderInfo::new(dims, [1.0, 1.5, 2.0]);
        header.set_rotation([0.0, 0.0, 0.0, 1.0], -1.0, [10.0, -20.0, 30.0]);
        let data = positional(dims);
        let path = dir.join("p.nii.gz");
        write_nifti(&path, &header, 1, VoxelData::Float32(&data), (1.0, 0.0)).unwrap();

        let (vol, back) = read_volume(&path).unwrap();
        assert_eq!(vol.dims, dims);
        for z in 0..3 {
            for y in 0..4 {
                for x in 0..5 {
                    assert_eq!(vol.at(x, y, z), (x + 100 * y + 10000 * z) as f32);
                }
            }
        }
        assert_eq!(back.affine(), header.affine());
        assert_eq!(back.spacing, [1.0, 1.5, 2.0]);

        // An independent reader: the nifti crate's ndarray is indexed [x, y, z].
        use ::nifti::{IntoNdArray, NiftiObject};
        let obj = ::nifti::ReaderOptions::new().read_file(&path).unwrap();
        assert_eq!(obj.header().sform_code, 1);
        assert_eq!(obj.header().srow_x, [-1.0, 0.0, 0.0, 10.0]);
        assert_eq!(obj.header().srow_z, [0.0, 0.0, -2.0, 30.0]);
        let arr = obj.into_volume().into_ndarray::<f32>().unwrap();
        assert_eq!(arr.shape(), &[5, 4, 3]);
        assert_eq!(arr[[4, 1, 2]], (4 + 100 + 20000) as f32);
        assert_eq!(arr[[0, 3, 1]], (300 + 10000) as f32);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn quaternion_for_half_turn_about_z_flips_x_and_y() {
        let mut h = NiftiHeaderInfo::new([2, 2, 2], [2.0, 3.0, 4.0]);
        h.sform_code = 0;
        h.quatern = [0.0, 0.0, 1.0];
        h.qoffset = [1.0, 2.0, 3.0];
        let a = h.affine();
        assert_eq!(a[0], [-2.0, 0.0, 0.0, 1.0]);
        assert_eq!(a[1], [0.0, -3.0, 0.0, 2.0]);
        assert_eq!(a[2], [0.0, 0.0, 4.0, 3.0]);
        h.qform_code = 0;
        assert_eq!(h.affine()[0], [2.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn every_integer_and_float_type_is_read_with_scaling_and_both_endiannesses() {
        let dir = temp_dir("types");
        let values: [i8; 6] = [0, 1, 2, 3, 4, 5];
        for (t, little) in [
            VoxelType::Uint8,
            VoxelType::Int8,
            VoxelType::Uint16,
            VoxelType::Int16,
            VoxelType::Uint32,
            VoxelType::Int32,
            VoxelType::Uint64,
            VoxelType::Int64,
            VoxelType::Float32,
            VoxelType::Float64,
        ]
        .iter()
        .flat_map(|t| [(*t, true), (*t, false)])
        {
            let reference = NiftiHeaderInfo::new([3, 2, 1], [1.0; 3]);
            let mut bytes = header_bytes(&reference, 1, t, (2.0, -1.0));
            let mut voxels = Vec::new();
            for v in values {
                macro_rules! put {
                    ($x:expr) => {
                        voxels.extend(if little {
                            $x.to_le_bytes().to_vec()
                        } else {
                            $x.to_be_bytes().to_vec()
                        })
                    };
                }
                match t {
                    VoxelType::Uint8 => voxels.push(v as u8),
                    VoxelType::Int8 => voxels.push(v as u8),
                    VoxelType::Uint16 => put!(v as u16),
                    VoxelType::Int16 => put!(v as i16),
                    VoxelType::Uint32 => put!(v as u32),
                    VoxelType::Int32 => put!(v as i32),
                    VoxelType::Uint64 => put!(v as u64),
                    VoxelType::Int64 => put!(v as i64),
                    VoxelType::Float32 => put!(v as f32),
                    VoxelType::Float64 => put!(v as f64),
                }
            }
            if !little {
                swap_header_to_big_endian(&mut bytes);
            }
            bytes.extend(voxels);
            let path = dir.join(format!("{}-{little}.nii", t.name()));
            std::fs::write(&path, &bytes).unwrap();
            let file = NiftiFile::open(&path).unwrap();
            assert_eq!(file.header().datatype, t);
            assert_eq!(
                file.channel(0).unwrap(),
                vec![-1.0, 1.0, 3.0, 5.0, 7.0, 9.0],
                "{t:?} little={little}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Rewrites the fields `header_bytes` sets in big-endian order.
    fn swap_header_to_big_endian(h: &mut [u8]) {
        let mut swap = |at: usize, n: usize| h[at..at + n].reverse();
        swap(0, 4);
        for i in 0..8 {
            swap(40 + 2 * i, 2);
        }
        swap(70, 2);
        swap(72, 2);
        for i in 0..8 {
            swap(76 + 4 * i, 4);
        }
        for at in [108, 112, 116] {
            swap(at, 4);
        }
        swap(252, 2);
        swap(254, 2);
        for i in 0..18 {
            swap(256 + 4 * i, 4);
        }
    }

    #[test]
    fn slope_zero_means_no_scaling_and_4d_channels_are_slowest() {
        let dir = temp_dir("4d");
        let reference = NiftiHeaderInfo::new([2, 1, 1], [1.0; 3]);
        let data: Vec<i16> = vec![1, 2, 10, 20, 100, 200];
        let path = dir.join("four.nii.gz");
        write_nifti(&path, &reference, 3, VoxelData::Int16(&data), (0.0, 5.0)).unwrap();
        let f = NiftiFile::open(&path).unwrap();
        assert_eq!(f.header().channels, 3);
        assert_eq!(f.scaling(), None);
        assert_eq!(f.channel(1).unwrap(), vec![10.0, 20.0]);
        assert_eq!(f.channel(0).unwrap(), vec![1.0, 2.0]);
        assert_eq!(f.channel(2).unwrap(), vec![100.0, 200.0]);
        let err = f.channel(3).unwrap_err().to_string();
        assert!(
            err.contains("four.nii.gz") && err.contains("3 channel"),
            "{err}"
        );
        let err = read_volume(&path).unwrap_err().to_string();
        assert!(err.contains("4D image with 3 channels"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finite_values_beyond_float32_are_named_as_such_not_as_nan() {
        let dir = temp_dir("range");
        let reference = NiftiHeaderInfo::new([2, 2, 1], [1.0; 3]);
        let path = dir.join("wide.nii");
        let write = |values: [f64; 4], slope: f32| {
            let mut bytes = header_bytes(&reference, 1, VoxelType::Float64, (slope, 0.0));
            bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            std::fs::write(&path, &bytes).unwrap();
            NiftiFile::open(&path).unwrap()
        };
        let err = write([1.0, 1e39, f64::NAN, -1e300], 1.0)
            .channel(0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wide.nii: 2 voxel value(s) outside the float32 range")
                && err.contains("the first at (x=1, y=0, z=0)")
                && !err.contains("NaN"),
            "{err}"
        );
        let err = write([1.0, 2.0, 3e38, 4.0], 10.0)
            .channel(0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 voxel value(s) outside the float32 range (about ±3.4e38) once scaled")
                && err.contains("(x=0, y=1, z=0)"),
            "{err}"
        );
        // NaN and infinity as stored stay the caller's to handle (refuse or replace).
        let big = 2f64.powi(126);
        let v = write([1.0, f64::INFINITY, f64::NAN, big], 1.0)
            .channel(0)
            .unwrap();
        assert_eq!((v[0], v[1], v[3]), (1.0, f32::INFINITY, 2f32.powi(126)));
        assert!(v[2].is_nan());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gzip_padding_members_and_trailing_data() {
        let dir = temp_dir("gzip");
        let reference = NiftiHeaderInfo::new([4, 4, 4], [1.0; 3]);
        let mut plain = header_bytes(&reference, 1, VoxelType::Uint8, (1.0, 0.0));
        plain.extend((0..64u8).map(|v| v * 3));
        let gz = |data: &[u8]| {
            let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        };
        let path = dir.join("g.nii.gz");
        let open = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            NiftiFile::open(&path)
        };
        let want: Vec<f32> = (0..64u8).map(|v| (v * 3) as f32).collect();
        // Zero padding after the stream, as some tools write it.
        let mut padded = gz(&plain);
        padded.extend([0u8; 1000]);
        assert_eq!(open(&padded).unwrap().channel(0).unwrap(), want);
        // Two members (header, then voxels), read as one stream.
        let mut members = gz(&plain[..DATA_OFFSET]);
        members.extend(gz(&plain[DATA_OFFSET..]));
        assert_eq!(open(&members).unwrap().channel(0).unwrap(), want);
        // Decompressed bytes beyond the declared voxels are dropped.
        let mut long = plain.clone();
        long.extend(vec![0u8; 1 << 20]);
        let file = open(&gz(&long)).unwrap();
        assert_eq!(file.voxel_bytes.len(), 64);
        assert_eq!(file.channel(0).unwrap(), want);
        // Anything else after the stream is named as what it is.
        let mut trailing = gz(&plain);
        trailing.extend(b"junk");
        let err = open(&trailing).unwrap_err().to_string();
        assert!(
            err.contains("g.nii.gz: trailing data after the gzip stream (4 bytes"),
            "{err}"
        );
        let whole = gz(&plain);
        let err = open(&whole[..whole.len() - 4]).unwrap_err().to_string();
        assert!(err.contains("ends early (truncated file)"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn probability_maps_are_written_channel_planar_and_labels_as_uint8() {
        let dir = temp_dir("prob");
        let reference = NiftiHeaderInfo::new([3, 1, 1], [1.0; 3]);
        let probs = [0.1, 0.9, 0.2, 0.8, 0.3, 0.7];
        let path = dir.join("prob.nii.gz");
        write_probability_map(&path, &reference, 2, &probs, "channels: a,b").unwrap();
        let f = NiftiFile::open(&path).unwrap();
        assert_eq!(f.header().datatype, VoxelType::Float32);
        assert_eq!(f.channel(0).unwrap(), vec![0.1, 0.2, 0.3]);
        assert_eq!(f.channel(1).unwrap(), vec![0.9, 0.8, 0.7]);

        let mut int_ref = reference.clone();
        int_ref.scl_slope = 3.0;
        let path = dir.join("seg.nii.gz");
        write_label_map(&path, &int_ref, &[0, 4, 2]).unwrap();
        let f = NiftiFile::open(&path).unwrap();
        assert_eq!(f.header().datatype, VoxelType::Uint8);
        assert_eq!((f.header().scl_slope, f.header().scl_inter), (1.0, 0.0));
        assert_eq!(f.channel(0).unwrap(), vec![0.0, 4.0, 2.0]);
        let err = write_label_map(&path, &reference, &[1, 2])
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 voxels given"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Scaling is applied before the one rounding to f32: int32 labels stored as
    /// v + 2^24 with intercept -2^24 read back as v (in f32 first, 2^24 + 1 rounds to 2^24
    /// and the label to 0).
    #[test]
    fn scaling_applies_before_rounding_to_f32() {
        let reference = NiftiHeaderInfo::new([3, 1, 1], [1.0; 3]);
        let mut bytes = header_bytes(&reference, 1, VoxelType::Int32, (1.0, -16_777_216.0));
        for v in [16_777_216i32, 16_777_217, 16_777_220] {
            bytes.extend(v.to_le_bytes());
        }
        let file = NiftiFile::parse(Path::new("offset.nii"), bytes).unwrap();
        assert_eq!(file.channel(0).unwrap(), vec![0.0, 1.0, 4.0]);
    }

    #[test]
    fn random_corruption_gives_errors_not_panics() {
        let reference = NiftiHeaderInfo::new([4, 3, 2], [1.0; 3]);
        let mut clean = header_bytes(&reference, 1, VoxelType::Int16, (1.0, 0.0));
        clean.extend(std::iter::repeat_n(7u8, 48));
        let mut rng = crate::rng::Rng::new(99);
        let mut refused = 0;
        for _ in 0..3000 {
            let mut bytes = clean.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.below(256) as u8;
            }
            bytes.truncate(bytes.len() - rng.below(8));
            if let Ok(file) = NiftiFile::parse(Path::new("fuzz.nii"), bytes) {
                for c in 0..file.header().channels.min(4) {
                    file.channel(c).unwrap();
                }
                file.header().affine();
            } else {
                refused += 1;
            }
        }
        assert!(refused > 100, "only {refused} corruptions were refused");
    }

    #[test]
    fn unsupported_types_and_bad_headers_are_clear_errors() {
        let dir = temp_dir("bad");
        let reference = NiftiHeaderInfo::new([2, 2, 2], [1.0; 3]);
        let mut bytes = header_bytes(&reference, 1, VoxelType::Float32, (1.0, 0.0));
        bytes[70..72].copy_from_slice(&32i16.to_le_bytes());
        bytes.extend([0u8; 64]);
        let path = dir.join("complex.nii");
        std::fs::write(&path, &bytes).unwrap();
        let err = NiftiFile::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("complex.nii") && err.contains("complex64"),
            "{err}"
        );

        let mut bytes = header_bytes(&reference, 1, VoxelType::Uint8, (1.0, 0.0));
        bytes[0..4].copy_from_slice(&540i32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let err = NiftiFile::open(&path).unwrap_err().to_string();
        assert!(err.contains("NIfTI-2"), "{err}");

        std::fs::write(&path, b"").unwrap();
        let err = NiftiFile::open(&path).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn header_errors_show_the_values_found() {
        let dir = temp_dir("values");
        let reference = NiftiHeaderInfo::new([2, 2, 2], [1.0; 3]);
        let clean = || {
            let mut b = header_bytes(&reference, 1, VoxelType::Uint8, (1.0, 0.0));
            b.extend([0u8; 64]);
            b
        };
        let path = dir.join("x.nii");
        let open = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            NiftiFile::open(&path).unwrap_err().to_string()
        };

        let mut negative = clean();
        negative[42..44].copy_from_slice(&(-32i16).to_le_bytes());
        let err = open(&negative);
        assert!(
            err.contains("dimension 1 has the negative size -32") && !err.contains("65504"),
            "{err}"
        );

        let mut size = clean();
        size[0..4].copy_from_slice(&500i32.to_le_bytes());
        let gz = dir.join("size.nii.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&size).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let err = NiftiFile::open(&gz).unwrap_err().to_string();
        assert!(err.contains("sizeof_hdr) is 500, not 348"), "{err}");

        let err = open(b"hello, this is a text file and not an image\n");
        assert!(
            err.contains("not a NIfTI-1 file and not gzip-compressed")
                && err.contains("\"hello, t\""),
            "{err}"
        );

        // dim[0] outside 1..=7 in a little-endian file: the value as stored, not as the
        // other byte order would read it (9 is 2304 byte-swapped), in either order.
        let mut ndim = clean();
        ndim[40..42].copy_from_slice(&9i16.to_le_bytes());
        let err = open(&ndim);
        assert!(err.contains("invalid dim[0] = 9:"), "{err}");
        let mut big = clean();
        swap_header_to_big_endian(&mut big);
        big[40..42].copy_from_slice(&0i16.to_be_bytes());
        let err = open(&big);
        assert!(err.contains("invalid dim[0] = 0:"), "{err}");

        // The transform in use must place the voxels: srow_x starts at byte 280, the
        // quaternion at 256, pixdim at 76.
        let mut nan_sform = clean();
        nan_sform[280..284].copy_from_slice(&f32::NAN.to_le_bytes());
        let err = open(&nan_sform);
        assert!(
            err.contains("the sform (srow_x/y/z, sform_code 1) holds a value that is not a number"),
            "{err}"
        );
        let mut zero_sform = clean();
        zero_sform[280..328].fill(0);
        let err = open(&zero_sform);
        assert!(err.contains("sform_code 1) is singular"), "{err}");
        // Unused (sform_code 0), a zero sform is no obstacle.
        zero_sform[254..256].copy_from_slice(&0i16.to_le_bytes());
        std::fs::write(&path, &zero_sform).unwrap();
        NiftiFile::open(&path).unwrap();
        let mut nan_qform = zero_sform.clone();
        nan_qform[256..260].copy_from_slice(&f32::INFINITY.to_le_bytes());
        let err = open(&nan_qform);
        assert!(err.contains("the qform (quatern_b/c/d"), "{err}");
        let mut nan_pixdim = clean();
        nan_pixdim[80..84].copy_from_slice(&f32::NAN.to_le_bytes());
        let err = open(&nan_pixdim);
        assert!(err.contains("pixdim[1] (a voxel size) is NaN"), "{err}");

        // A zero (or negative zero) voxel size is refused, not read as 1 mm.
        for zero in [0.0f32, -0.0] {
            let mut flat = clean();
            flat[84..88].copy_from_slice(&zero.to_le_bytes());
            let err = open(&flat);
            assert!(
                err.contains("x.nii: pixdim[2] (the voxel size along y) is 0"),
                "{err}"
            );
        }
        // A single slice has no spacing along its one voxel: 1 mm, as before.
        let slice = NiftiHeaderInfo::new([2, 2, 1], [1.0; 3]);
        let mut flat = header_bytes(&slice, 1, VoxelType::Uint8, (1.0, 0.0));
        flat.extend([0u8; 4]);
        flat[88..92].copy_from_slice(&0f32.to_le_bytes());
        std::fs::write(&path, &flat).unwrap();
        assert_eq!(NiftiFile::open(&path).unwrap().header().spacing, [1.0; 3]);
        // Transform codes beyond 5, and a qform quaternion that is no rotation.
        let mut code = clean();
        code[254..256].copy_from_slice(&99i16.to_le_bytes());
        assert!(open(&code).contains("x.nii: sform_code is 99"));
        let mut code = clean();
        code[252..254].copy_from_slice(&(-5i16).to_le_bytes());
        assert!(open(&code).contains("x.nii: qform_code is -5"));
        let mut skew = clean();
        for at in [256, 260, 264] {
            skew[at..at + 4].copy_from_slice(&0.9f32.to_le_bytes());
        }
        let err = open(&skew);
        assert!(
            err.contains("x.nii: the qform quaternion") && err.contains("= 2.430000 exceeds 1"),
            "{err}"
        );
        // A unit quaternion written at f32 precision is one.
        let mut turned = clean();
        let half = std::f32::consts::FRAC_1_SQRT_2;
        for (at, v) in [(256, half), (260, 0.0), (264, half)] {
            turned[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, &turned).unwrap();
        NiftiFile::open(&path).unwrap();

        let mut magic = clean();
        magic[344..348].copy_from_slice(b"xy\x01\0");
        let err = open(&magic);
        assert!(
            err.contains(r#"bad magic "xy\x01\x00" at byte 344"#),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A 2x2x2 uint8 file whose `xyzt_units` is `units` (seconds in the temporal bits, which
    /// do not matter), with voxel size `size` and sform origin `origin` in those units.
    fn file_in_units(units: u8, size: f32, origin: f32) -> Vec<u8> {
        let reference = NiftiHeaderInfo::new([2, 2, 2], [1.0; 3]);
        let mut b = header_bytes(&reference, 1, VoxelType::Uint8, (1.0, 0.0));
        b[123] = units | 8;
        for (axis, at) in [80, 84, 88].into_iter().enumerate() {
            b[at..at + 4].copy_from_slice(&size.to_le_bytes());
            let diagonal = 280 + 16 * axis + 4 * axis;
            b[diagonal..diagonal + 4].copy_from_slice(&size.to_le_bytes());
            let offset = 280 + 16 * axis + 12;
            b[offset..offset + 4].copy_from_slice(&origin.to_le_bytes());
        }
        b.extend(0..8u8);
        b
    }

    #[test]
    fn spatial_units_give_mm_and_are_written_back_as_stored() {
        let dir = temp_dir("units");
        let open = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            NiftiFile::open(&path).unwrap().header().clone()
        };
        // 1 mm voxels and an origin 20 mm along each axis, in metres, micrometres and mm.
        let metres = open("m.nii", &file_in_units(1, 0.001, 0.02));
        let microns = open("um.nii", &file_in_units(3, 1000.0, 20000.0));
        let mm = open("mm.nii", &file_in_units(2, 1.0, 20.0));
        for s in metres.spacing {
            assert!((s - 1.0).abs() < 1e-6, "{:?}", metres.spacing);
        }
        assert_eq!(microns.spacing, [1.0; 3]);
        let a = metres.affine();
        assert!(
            (a[0][0] - 1.0).abs() < 1e-6 && (a[2][3] - 20.0).abs() < 1e-5,
            "{a:?}"
        );
        assert_eq!(microns.affine(), mm.affine());
        // The qform's offset is in the file's unit as well.
        let mut qform = metres.clone();
        (qform.sform_code, qform.qoffset) = (0, [0.02; 3]);
        assert!(
            qform.affine_distance(&metres) < 1e-5,
            "{:?}",
            qform.affine()
        );
        // Unknown units are taken as mm.
        let unknown = open("unknown.nii", &file_in_units(0, 0.5, 20.0));
        assert_eq!(unknown.spacing, [0.5; 3]);
        // The same grid in other units is the same grid; the same numbers in other units are
        // not (1 mm against 1 m voxels).
        assert_eq!(grid_difference(&metres, &mm), None);
        assert_eq!(grid_difference(&microns, &mm), None);
        let mm_numbers = open("mm-numbers.nii", &file_in_units(2, 0.001, 0.02));
        let what = grid_difference(&metres, &mm_numbers).unwrap();
        assert!(
            what.starts_with("voxel size 1.000x1.000x1.000 mm"),
            "{what}"
        );

        // A map written on a header keeps its units, voxel size and transforms as stored.
        for (name, header) in [("m", &metres), ("um", &microns)] {
            let source = std::fs::read(dir.join(format!("{name}.nii"))).unwrap();
            let out = dir.join(format!("{name}-label.nii"));
            write_label_map(&out, header, &[0; 8]).unwrap();
            let written = std::fs::read(&out).unwrap();
            for field in [76..108, 123..124, 252..328] {
                assert_eq!(
                    written[field.clone()],
                    source[field.clone()],
                    "{name} {field:?}"
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_slope_with_a_non_finite_intercept_is_refused() {
        let dir = temp_dir("inter");
        let path = dir.join("ct.nii");
        let open = |slope: f32, inter: f32| {
            let mut b = file_in_units(2, 1.0, 0.0);
            b[112..116].copy_from_slice(&slope.to_le_bytes());
            b[116..120].copy_from_slice(&inter.to_le_bytes());
            std::fs::write(&path, &b).unwrap();
            NiftiFile::open(&path)
        };
        for inter in [f32::NAN, f32::INFINITY] {
            let err = open(2.0, inter).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "ct.nii: scl_inter (the intercept) is {inter} with scl_slope 2: not a \
                     finite number"
                )),
                "{err}"
            );
        }
        // Without a valid slope there is no scaling, whatever the intercept.
        assert_eq!(open(0.0, f32::NAN).unwrap().scaling(), None);
        assert_eq!(open(f32::NAN, f32::NAN).unwrap().scaling(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
