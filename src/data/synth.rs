//! Synthetic BraTS-like data: a skull-stripped head with grey/white-matter texture,
//! ventricles, vessels and small white-matter lesions, and a tumour (necrotic core,
//! enhancing rim, irregular oedema) at a random place, imaged in four modalities with
//! different contrasts, a smooth bias field per modality and Rician noise.
//!
//! It is meant to be learnable by a small 3D U-Net in minutes on a CPU, yet not by a
//! threshold: every sub-region's intensity in every modality is shared by some normal
//! tissue (enhancement and vessels are both bright on T1ce, but only vessels on T1;
//! oedema and white-matter lesions are both bright on T2 and FLAIR; necrosis is as dark as
//! CSF on T1), so the answer needs several modalities and context.
//!
//! Everything is drawn from the seed (`crate::rng`), case by case, so a dataset is the
//! same on every machine and independent of the thread count.
use crate::data::labels::LabelSpec;
use crate::data::nifti::{write_label_map, write_nifti, NiftiHeaderInfo, VoxelData};
use crate::error::{Error, Result};
use crate::rng::{philox4x32, Rng};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Folder layout of a synthetic dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthLayout {
    /// `CASE/CASE_{t1,t1ce,t2,flair,seg}.nii.gz`, labels 0, 1 NCR, 2 ED, 4 ET.
    Brats2021,
    /// MSD Task01: `dataset.json`, 4D `imagesTr/CASE.nii.gz` (FLAIR, T1w, t1gd, T2w),
    /// `labelsTr/CASE.nii.gz` with 1 oedema, 2 non-enhancing, 3 enhancing.
    Msd,
    /// nnU-Net v2 raw, as its BraTS conversion writes it: `dataset.json` (channel_names,
    /// region-based labels, regions_class_order), `imagesTr/CASE_000{0..3}.nii.gz` (T1,
    /// T1ce, T2, FLAIR), `labelsTr/CASE.nii.gz` with 1 oedema, 2 necrosis, 3 enhancing.
    #[serde(rename = "nnunet")]
    NnUnet,
}

/// How image voxels are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthStorage {
    /// int16; two cases in three carry a scl_slope other than 1 (one with an intercept).
    Int16,
    Float32,
}

impl std::str::FromStr for SynthLayout {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "brats2021" | "brats" => Ok(SynthLayout::Brats2021),
            "msd" => Ok(SynthLayout::Msd),
            "nnunet" | "nnu-net" => Ok(SynthLayout::NnUnet),
            _ => Err(Error::config(
                "layout",
                format!("'{s}': expected brats2021, msd or nnunet"),
            )),
        }
    }
}

impl std::str::FromStr for SynthStorage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "int16" => Ok(SynthStorage::Int16),
            "float32" => Ok(SynthStorage::Float32),
            _ => Err(Error::config(
                "storage",
                format!("'{s}': expected int16 or float32"),
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub cases: usize,
    /// Volume size as (depth, height, width) = (z, y, x).
    pub size: [usize; 3],
    pub seed: u64,
    pub layout: SynthLayout,
    pub storage: SynthStorage,
}

/// Modality names in the order of `SynthCase::images`.
pub const MODALITIES: [&str; 4] = ["t1", "t1ce", "t2", "flair"];

/// Tumour classes of `SynthCase::labels` (BraTS 2021's internal classes).
pub const BACKGROUND: u8 = 0;
pub const NECROSIS: u8 = 1;
pub const OEDEMA: u8 = 2;
pub const ENHANCING: u8 = 3;

/// One generated case in memory.
#[derive(Clone, Debug)]
pub struct SynthCase {
    /// Sizes along x, y, z.
    pub dims: [usize; 3],
    /// T1, T1ce, T2, FLAIR intensities (arbitrary scanner units), x fastest; 0 outside
    /// the brain.
    pub images: [Vec<f32>; 4],
    /// 0 background, 1 necrosis, 2 oedema, 3 enhancing, x fastest.
    pub labels: Vec<u8>,
    pub header: NiftiHeaderInfo,
}

/// A smooth random field on [-1, 1]^3: random values on a coarse lattice, interpolated
/// with smoothstep weights. Roughly in [-1, 1], varying over 2 / `cells`.
struct SmoothField {
    n: usize,
    values: Vec<f32>,
}

impl SmoothField {
    fn new(rng: &mut Rng, cells: usize) -> Self {
        let n = cells + 1;
        let values = (0..n * n * n)
            .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
            .collect();
        Self { n, values }
    }

    fn at(&self, p: [f32; 3]) -> f32 {
        let cells = (self.n - 1) as f32;
        let mut i0 = [0usize; 3];
        let mut w = [0f32; 3];
        for ((&pa, ia), wa) in p.iter().zip(&mut i0).zip(&mut w) {
            let t = ((pa + 1.0) * 0.5 * cells).clamp(0.0, cells - 1e-4);
            let f = t.floor();
            *ia = f as usize;
            let u = t - f;
            *wa = u * u * (3.0 - 2.0 * u);
        }
        let n = self.n;
        let v = |x: usize, y: usize, z: usize| self.values[(z * n + y) * n + x];
        let [x, y, z] = i0;
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let c00 = lerp(v(x, y, z), v(x + 1, y, z), w[0]);
        let c10 = lerp(v(x, y + 1, z), v(x + 1, y + 1, z), w[0]);
        let c01 = lerp(v(x, y, z + 1), v(x + 1, y, z + 1), w[0]);
        let c11 = lerp(v(x, y + 1, z + 1), v(x + 1, y + 1, z + 1), w[0]);
        lerp(lerp(c00, c10, w[1]), lerp(c01, c11, w[1]), w[2])
    }
}

/// A smooth (Hermite) ramp from 0 at `edge0` to 1 at `edge1`; either edge may be larger.
fn smoothstep(edge0: f32, edge1: f32, x: f32) -> f32 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

struct Ellipsoid {
    centre: [f32; 3],
    radii: [f32; 3],
}

impl Ellipsoid {
    /// Normalised radius: < 1 inside.
    fn rho(&self, p: [f32; 3]) -> f32 {
        let d = |a: usize| (p[a] - self.centre[a]) / self.radii[a];
        (d(0) * d(0) + d(1) * d(1) + d(2) * d(2)).sqrt()
    }
}

/// Mean intensity of each tissue in T1, T1ce, T2, FLAIR (white matter on T1 = 1).
const CSF: [f32; 4] = [0.30, 0.32, 1.80, 0.22];
const GREY: [f32; 4] = [0.72, 0.74, 1.05, 0.95];
const WHITE: [f32; 4] = [1.00, 1.00, 0.70, 0.75];
const OEDEMA_TISSUE: [f32; 4] = [0.62, 0.64, 1.35, 1.25];
const ENHANCING_TISSUE: [f32; 4] = [0.75, 1.35, 1.05, 1.10];
const NECROTIC_TISSUE: [f32; 4] = [0.40, 0.42, 1.55, 0.90];
const VESSEL: [f32; 4] = [1.35, 1.45, 0.85, 0.95];
const LESION: [f32; 4] = [0.80, 0.82, 1.35, 1.35];

/// Relative noise level (of white matter on T1).
const NOISE: f32 = 0.05;

/// Everything random about one case, drawn before the voxel loop.
struct CaseModel {
    brain: Ellipsoid,
    brain_edge: SmoothField,
    texture: [SmoothField; 2],
    ventricles: [Ellipsoid; 2],
    vessels: [SmoothField; 2],
    vessel_width: f32,
    lesions: Vec<Ellipsoid>,
    core: Vec<Ellipsoid>,
    core_edge: SmoothField,
    necrosis_edge: SmoothField,
    necrosis_level: f32,
    oedema_edge: SmoothField,
    oedema_scale: f32,
    heterogeneity: SmoothField,
    bias: [SmoothField; 4],
    scale: [f32; 4],
    noise_key: [u32; 2],
}

fn random_unit(rng: &mut Rng) -> [f32; 3] {
    [0, 1, 2].map(|_| rng.uniform_range(-1.0, 1.0) as f32)
}

impl CaseModel {
    fn draw(rng: &mut Rng) -> Self {
        let axis_scale = rng.uniform_range(0.9, 1.0) as f32;
        let brain = Ellipsoid {
            centre: random_unit(rng).map(|v| 0.03 * v),
            radii: [0.80, 0.88, 0.80].map(|r| r * axis_scale),
        };
        let brain_edge = SmoothField::new(rng, 4);
        let texture = [SmoothField::new(rng, 7), SmoothField::new(rng, 15)];
        let vscale = rng.uniform_range(0.8, 1.2) as f32;
        let vy = rng.uniform_range(-0.08, 0.02) as f32;
        let ventricles = [-1.0f32, 1.0].map(|side| Ellipsoid {
            centre: [side * 0.11 * vscale, vy, 0.05],
            radii: [0.07 * vscale, 0.26 * vscale, 0.13 * vscale],
        });
        let vessels = [SmoothField::new(rng, 8), SmoothField::new(rng, 8)];
        let vessel_width = rng.uniform_range(0.12, 0.15) as f32;
        let lesions = (0..2 + rng.below(4))
            .map(|_| {
                let r = rng.uniform_range(0.03, 0.06) as f32;
                Ellipsoid {
                    centre: random_unit(rng).map(|v| v * 0.55),
                    radii: [r, r * rng.uniform_range(0.7, 1.3) as f32, r],
                }
            })
            .collect();

        let inside = |p: [f32; 3]| brain.rho(p) < 0.5 && ventricles.iter().all(|v| v.rho(p) > 1.5);
        let mut centre = [0.0, 0.3, 0.0];
        for _ in 0..100 {
            let c = random_unit(rng).map(|v| v * 0.6);
            if inside(c) {
                centre = c;
                break;
            }
        }
        let radius = rng.uniform_range(0.22, 0.32) as f32;
        let core = (0..2 + rng.below(3))
            .map(|k| {
                let offset = if k == 0 {
                    [0.0; 3]
                } else {
                    random_unit(rng).map(|v| v * 0.5 * radius)
                };
                Ellipsoid {
                    centre: [0, 1, 2].map(|a| centre[a] + offset[a]),
                    radii: [0, 1, 2].map(|_| radius * rng.uniform_range(0.55, 1.0) as f32),
                }
            })
            .collect();
        Self {
            brain,
            brain_edge,
            texture,
            ventricles,
            vessels,
            vessel_width,
            lesions,
            core,
            core_edge: SmoothField::new(rng, 10),
            necrosis_edge: SmoothField::new(rng, 8),
            necrosis_level: rng.uniform_range(0.45, 0.65) as f32,
            oedema_edge: SmoothField::new(rng, 6),
            oedema_scale: rng.uniform_range(1.5, 2.1) as f32,
            heterogeneity: SmoothField::new(rng, 7),
            bias: [0, 1, 2, 3].map(|_| SmoothField::new(rng, 2)),
            scale: [0, 1, 2, 3].map(|_| rng.uniform_range(400.0, 1200.0) as f32),
            noise_key: {
                let k = rng.next_u64();
                [k as u32, (k >> 32) as u32]
            },
        }
    }

    /// The noise-free intensities (T1, T1ce, T2, FLAIR, before bias and scale) and the
    /// label of the point `p`, or None outside the brain.
    fn tissue(&self, p: [f32; 3]) -> Option<([f32; 4], u8)> {
        let depth = 1.0 - (self.brain.rho(p) + 0.05 * self.brain_edge.at(p));
        if depth <= 0.0 {
            return None;
        }
        let outer_csf = smoothstep(0.05, 0.0, depth);
        let ventricle = self
            .ventricles
            .iter()
            .map(|v| smoothstep(1.1, 0.9, v.rho(p)))
            .fold(0.0, f32::max);
        // The interhemispheric fissure: a thin CSF sheet in the midline, reaching in from
        // the top of the brain.
        let fissure = smoothstep(0.025, 0.01, (p[0] - self.brain.centre[0]).abs())
            * smoothstep(0.35, 0.25, depth)
            * smoothstep(-0.1, 0.1, p[1] - self.brain.centre[1]);
        let csf = outer_csf.max(ventricle).max(fissure);
        let ribbon = smoothstep(0.16, 0.08, depth);
        let texture = 0.67 * self.texture[0].at(p) + 0.33 * self.texture[1].at(p);
        let white = (1.0 - ribbon) * smoothstep(-0.12, 0.12, texture + 0.1) * (1.0 - csf);
        let grey = 1.0 - csf - white;
        let mut v: [f32; 4] =
            std::array::from_fn(|m| csf * CSF[m] + grey * GREY[m] + white * WHITE[m]);
        let lesion = self
            .lesions
            .iter()
            .map(|l| smoothstep(1.2, 0.8, l.rho(p)))
            .fold(0.0, f32::max)
            * (1.0 - csf);
        let w = self.vessel_width;
        let vessel = smoothstep(w, 0.4 * w, self.vessels[0].at(p).abs())
            * smoothstep(w, 0.4 * w, self.vessels[1].at(p).abs())
            * smoothstep(0.03, 0.06, depth);
        for ((vm, lesion_m), vessel_m) in v.iter_mut().zip(LESION).zip(VESSEL) {
            *vm += lesion * (lesion_m - *vm);
            *vm += vessel * (vessel_m - *vm);
        }

        let rho = self
            .core
            .iter()
            .map(|e| e.rho(p))
            .fold(f32::INFINITY, f32::min);
        let hetero = self.heterogeneity.at(p);
        let label = if rho + 0.18 * self.core_edge.at(p) < 1.0 {
            if rho + 0.15 * self.necrosis_edge.at(p) < self.necrosis_level {
                v = NECROTIC_TISSUE.map(|t| t * (1.0 + 0.08 * hetero));
                NECROSIS
            } else {
                v = ENHANCING_TISSUE;
                v[1] *= 1.0 + 0.15 * hetero;
                ENHANCING
            }
        } else {
            let rho_oedema = rho / self.oedema_scale + 0.25 * self.oedema_edge.at(p);
            if rho_oedema < 1.0 && csf < 0.5 {
                let strength = 0.65 + 0.3 * smoothstep(1.0, 0.6, rho_oedema);
                for (vm, oedema_m) in v.iter_mut().zip(OEDEMA_TISSUE) {
                    *vm += strength * (oedema_m * (1.0 + 0.06 * hetero) - *vm);
                }
                OEDEMA
            } else {
                BACKGROUND
            }
        };
        Some((v, label))
    }
}

/// Standard normal pairs from one Philox draw per voxel and modality (Box-Muller).
fn normal_pair(key: [u32; 2], voxel: usize, modality: u32) -> (f32, f32) {
    let r = philox4x32([voxel as u32, (voxel >> 32) as u32, modality, 7], key);
    let u1 = ((r[0] >> 8) as f32 + 1.0) * (1.0 / 16_777_217.0);
    let u2 = (r[1] >> 8) as f32 * (1.0 / 16_777_216.0);
    let radius = (-2.0 * u1.ln()).sqrt();
    let angle = 2.0 * std::f32::consts::PI * u2;
    (radius * angle.cos(), radius * angle.sin())
}

/// The grid: 1 mm voxels, rotated a few degrees from the scanner axes and flipped like
/// radiological (LPS-stored) data, centred on the world origin.
fn synth_header(dims: [usize; 3], rng: &mut Rng) -> NiftiHeaderInfo {
    let mut header = NiftiHeaderInfo::new(dims, [1.0; 3]);
    let about_z = std::f64::consts::PI + rng.uniform_range(-0.1, 0.1);
    let about_x = rng.uniform_range(-0.08, 0.08);
    let (cz, sz) = ((about_z / 2.0).cos(), (about_z / 2.0).sin());
    let (cx, sx) = ((about_x / 2.0).cos(), (about_x / 2.0).sin());
    let quaternion = [cz * cx, cz * sx, sz * sx, sz * cx];
    header.set_rotation(quaternion, 1.0, [0.0; 3]);
    let a = header.qform_affine();
    let centre = dims.map(|d| (d as f64 - 1.0) / 2.0);
    let offset = [0, 1, 2].map(|i| -(0..3).map(|j| a[i][j] * centre[j]).sum::<f64>());
    header.set_rotation(quaternion, 1.0, offset);
    header
}

/// Generates case `index` of the dataset with seed `seed`; `size` is (z, y, x).
pub fn generate_case(size: [usize; 3], seed: u64, index: usize) -> SynthCase {
    let dims = [size[2], size[1], size[0]];
    let mut rng = Rng::new(seed).fork(index as u32);
    let header = synth_header(dims, &mut rng);
    let model = CaseModel::draw(&mut rng);
    let n = dims.iter().product::<usize>();
    let mut images: [Vec<f32>; 4] = [0, 1, 2, 3].map(|_| vec![0.0f32; n]);
    let mut labels = vec![0u8; n];
    let coord = |i: usize, d: usize| (i as f32 + 0.5) / d as f32 * 2.0 - 1.0;
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                let p = [coord(x, dims[0]), coord(y, dims[1]), coord(z, dims[2])];
                let Some((mean, label)) = model.tissue(p) else {
                    continue;
                };
                let i = (z * dims[1] + y) * dims[0] + x;
                labels[i] = label;
                for (m, image) in images.iter_mut().enumerate() {
                    let bias = (0.25 * model.bias[m].at(p)).exp();
                    let signal = mean[m] * bias;
                    let (n1, n2) = normal_pair(model.noise_key, i, m as u32);
                    let re = signal + NOISE * n1;
                    let im = NOISE * n2;
                    image[i] = (re * re + im * im).sqrt() * model.scale[m];
                }
            }
        }
    }
    SynthCase {
        dims,
        images,
        labels,
        header,
    }
}

/// Scaling stored with case `index` in int16: none, a slope of 2, or a slope of 0.5 with
/// an intercept that keeps the background exactly 0.
fn int16_scaling(index: usize) -> (f32, f32) {
    match index % 3 {
        0 => (1.0, 0.0),
        1 => (2.0, 0.0),
        _ => (0.5, -500.0),
    }
}

fn write_images(
    path: &Path,
    header: &NiftiHeaderInfo,
    channels: &[&[f32]],
    storage: SynthStorage,
    index: usize,
) -> Result<()> {
    let planar: Vec<f32> = channels.iter().flat_map(|c| c.iter().copied()).collect();
    match storage {
        SynthStorage::Float32 => write_nifti(
            path,
            header,
            channels.len(),
            VoxelData::Float32(&planar),
            (1.0, 0.0),
        ),
        SynthStorage::Int16 => {
            let (slope, inter) = int16_scaling(index);
            let stored: Vec<i16> = planar
                .iter()
                .map(|v| ((v - inter) / slope).round().clamp(-32768.0, 32767.0) as i16)
                .collect();
            write_nifti(
                path,
                header,
                channels.len(),
                VoxelData::Int16(&stored),
                (slope, inter),
            )
        }
    }
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
}

/// The file `write_dataset` puts at the root of every dataset it writes, before any case:
/// `make_room` replaces only a folder that has it, so a real dataset is never deleted.
pub const SYNTH_MARKER: &str = ".voxseg-synth";

/// Gets `out` ready for `write_dataset`: a missing or empty folder is used as it is; a
/// non-empty one is refused unless `force`, and then only a dataset that `write_dataset`
/// wrote (it holds `SYNTH_MARKER`) is replaced: its `dataset.json` and folders holding
/// nothing but NIfTI files (case folders, `imagesTr`, `labelsTr`) are removed, the marker
/// last, so the new dataset is never mixed with the old one. Any other entry is refused
/// even with `force`: nothing but what synth writes is ever deleted.
pub fn make_room(out: &Path, force: bool) -> Result<()> {
    let names = super::out_dir::entries("--out", out)?;
    if names.is_empty() {
        return Ok(());
    }
    if !force {
        return Err(super::out_dir::not_empty(
            "--out",
            out,
            &names,
            "the dataset in it",
        ));
    }
    let marker = out.join(SYNTH_MARKER);
    if !is_marker(&marker)? {
        return Err(not_synth(out));
    }
    let mut removals = Vec::new();
    for name in names.iter().filter(|&n| n != SYNTH_MARKER) {
        let path = out.join(name);
        let part = dataset_part(&path)?.ok_or_else(|| {
            Error::config(
                "--out",
                format!(
                    "{} is not part of a dataset (a dataset.json or a folder of NIfTI files); \
                     --force replaces only a dataset: move it away or choose another --out",
                    path.display()
                ),
            )
        })?;
        removals.push((path, part));
    }
    for (path, part) in removals {
        match part {
            DatasetPart::Json => remove(&path, |p| std::fs::remove_file(p))?,
            DatasetPart::Folder(files) => {
                for f in files {
                    remove(&f, |p| std::fs::remove_file(p))?;
                }
                remove(&path, |p| std::fs::remove_dir(p))?;
            }
        }
    }
    remove(&marker, |p| std::fs::remove_file(p))
}

/// Whether `path` is a plain file (a marker), not a link or a folder.
fn is_marker(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(meta.is_file()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

fn not_synth(out: &Path) -> Error {
    Error::config(
        "--out",
        format!(
            "{} is not a dataset written by `voxseg synth` (it has no {SYNTH_MARKER}), so \
             --force does not replace it: move it away or choose another --out",
            out.display()
        ),
    )
}

fn remove(path: &Path, how: fn(&Path) -> std::io::Result<()>) -> Result<()> {
    how(path).map_err(|e| Error::io(format!("removing {}", path.display()), e))
}

/// An entry of a dataset folder that `make_room` may remove.
enum DatasetPart {
    Json,
    /// A real folder (not a link) of plain `.nii`/`.nii.gz` files, which it lists.
    Folder(Vec<PathBuf>),
}

/// What `path` is as part of a dataset; None when it is not one.
fn dataset_part(path: &Path) -> Result<Option<DatasetPart>> {
    let reading = |e| Error::io(format!("reading {}", path.display()), e);
    let meta = std::fs::symlink_metadata(path).map_err(reading)?;
    if meta.is_file() {
        return Ok(path
            .file_name()
            .is_some_and(|n| n == "dataset.json")
            .then_some(DatasetPart::Json));
    }
    if !meta.is_dir() {
        return Ok(None);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(reading)? {
        let entry = entry.map_err(reading)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let plain = entry.file_type().map_err(reading)?.is_file();
        if !plain || !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
            return Ok(None);
        }
        files.push(entry.path());
    }
    Ok(Some(DatasetPart::Folder(files)))
}

impl SynthOptions {
    /// Checks the options without touching the disk, so a caller can refuse bad ones
    /// before `make_room` deletes anything.
    pub fn validate(&self) -> Result<()> {
        if self.cases == 0 {
            return Err(Error::config("cases", "must be at least 1"));
        }
        if self.size.iter().any(|&s| !(8..=512).contains(&s)) {
            return Err(Error::config(
                "size",
                format!("{:?}: each size must be in 8..=512", self.size),
            ));
        }
        Ok(())
    }
}

/// Writes a synthetic dataset in the chosen layout (see `SynthLayout`) into `opts.out`,
/// which must be missing, empty or an earlier synthetic dataset (`make_room` empties one),
/// so the marker never lands in a folder of someone else's files.
pub fn write_dataset(opts: &SynthOptions) -> Result<()> {
    opts.validate()?;
    let names = super::out_dir::entries("--out", &opts.out)?;
    if !names.is_empty() && !is_marker(&opts.out.join(SYNTH_MARKER))? {
        return Err(not_synth(&opts.out));
    }
    create_dir(&opts.out)?;
    crate::atomic::write_bytes(
        &opts.out.join(SYNTH_MARKER),
        b"written by voxseg synth; `voxseg synth --force` may replace this folder\n",
    )?;
    if opts.layout != SynthLayout::Brats2021 {
        create_dir(&opts.out.join("imagesTr"))?;
        create_dir(&opts.out.join("labelsTr"))?;
    }
    (0..opts.cases)
        .into_par_iter()
        .try_for_each(|index| write_case(opts, index))?;
    match opts.layout {
        SynthLayout::Brats2021 => Ok(()),
        SynthLayout::Msd => write_msd_json(opts),
        SynthLayout::NnUnet => write_nnunet_json(opts),
    }
}

fn msd_id(index: usize) -> String {
    format!("SynthBrain_{:03}", index + 1)
}

fn write_case(opts: &SynthOptions, index: usize) -> Result<()> {
    let case = generate_case(opts.size, opts.seed, index);
    match opts.layout {
        SynthLayout::Brats2021 => {
            let id = format!("SynthBraTS2021_{index:05}");
            let dir = opts.out.join(&id);
            create_dir(&dir)?;
            for (m, name) in MODALITIES.iter().enumerate() {
                let path = dir.join(format!("{id}_{name}.nii.gz"));
                write_images(&path, &case.header, &[&case.images[m]], opts.storage, index)?;
            }
            let values = LabelSpec::brats2021().to_file_values(&case.labels)?;
            write_label_map(&dir.join(format!("{id}_seg.nii.gz")), &case.header, &values)
        }
        SynthLayout::Msd => {
            let id = msd_id(index);
            // MSD channel order: FLAIR, T1w, t1gd, T2w.
            let channels = [3, 0, 1, 2].map(|m| case.images[m].as_slice());
            let image = opts.out.join("imagesTr").join(format!("{id}.nii.gz"));
            write_images(&image, &case.header, &channels, opts.storage, index)?;
            // MSD numbering: 1 oedema, 2 non-enhancing/necrotic, 3 enhancing.
            let values: Vec<u8> = case
                .labels
                .iter()
                .map(|&c| match c {
                    NECROSIS => 2,
                    OEDEMA => 1,
                    other => other,
                })
                .collect();
            let label = opts.out.join("labelsTr").join(format!("{id}.nii.gz"));
            write_label_map(&label, &case.header, &values)
        }
        SynthLayout::NnUnet => {
            let id = msd_id(index);
            for m in 0..MODALITIES.len() {
                let path = opts
                    .out
                    .join("imagesTr")
                    .join(format!("{id}_{m:04}.nii.gz"));
                write_images(&path, &case.header, &[&case.images[m]], opts.storage, index)?;
            }
            let values: Vec<u8> = case.labels.iter().map(|&c| nnunet_label(c)).collect();
            let label = opts.out.join("labelsTr").join(format!("{id}.nii.gz"));
            write_label_map(&label, &case.header, &values)
        }
    }
}

/// nnU-Net's BraTS numbering (its conversion script): 1 oedema, 2 necrosis, 3 enhancing.
fn nnunet_label(class: u8) -> u8 {
    match class {
        OEDEMA => 1,
        NECROSIS => 2,
        other => other,
    }
}

fn write_nnunet_json(opts: &SynthOptions) -> Result<()> {
    let json = serde_json::json!({
        "name": "SynthBrainTumour",
        "description": "Synthetic BraTS-like data written by voxseg synth",
        "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
        "labels": {
            "background": 0,
            "whole tumor": [1, 2, 3],
            "tumor core": [2, 3],
            "enhancing tumor": [3]
        },
        "regions_class_order": [1, 2, 3],
        "numTraining": opts.cases,
        "file_ending": ".nii.gz",
    });
    let text = serde_json::to_string_pretty(&json).expect("JSON values serialise");
    crate::atomic::write_bytes(&opts.out.join("dataset.json"), text.as_bytes())
}

fn write_msd_json(opts: &SynthOptions) -> Result<()> {
    let training: Vec<serde_json::Value> = (0..opts.cases)
        .map(|i| {
            serde_json::json!({
                "image": format!("./imagesTr/{}.nii.gz", msd_id(i)),
                "label": format!("./labelsTr/{}.nii.gz", msd_id(i)),
            })
        })
        .collect();
    let json = serde_json::json!({
        "name": "SynthBrainTumour",
        "description": "Synthetic BraTS-like data written by voxseg synth",
        "tensorImageSize": "4D",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {
            "0": "background",
            "1": "edema",
            "2": "non-enhancing tumor",
            "3": "enhancing tumour"
        },
        "numTraining": opts.cases,
        "numTest": 0,
        "training": training,
        "test": [],
    });
    let text = serde_json::to_string_pretty(&json).expect("JSON values serialise");
    crate::atomic::write_bytes(&opts.out.join("dataset.json"), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_field_is_continuous_and_bounded() {
        let f = SmoothField::new(&mut Rng::new(1), 4);
        let mut worst_step = 0.0f32;
        for i in 0..200 {
            let t = i as f32 / 100.0 - 1.0;
            let a = f.at([t, 0.3, -0.2]);
            let b = f.at([t + 0.01, 0.3, -0.2]);
            assert!((-1.0..=1.0).contains(&a));
            worst_step = worst_step.max((a - b).abs());
        }
        assert!(worst_step < 0.1, "step {worst_step}");
    }

    #[test]
    fn same_seed_same_case_and_different_cases_differ() {
        let a = generate_case([16, 16, 16], 5, 0);
        let b = generate_case([16, 16, 16], 5, 0);
        let c = generate_case([16, 16, 16], 5, 1);
        assert_eq!(a.images, b.images);
        assert_eq!(a.labels, b.labels);
        assert_ne!(a.images[0], c.images[0]);
    }

    /// The best Dice any single threshold on `values` reaches for `truth` (voxels where
    /// `values` is above, or below, the threshold), over the brain voxels.
    fn best_threshold_dice(values: &[f32], truth: &[bool]) -> f32 {
        let positives = truth.iter().filter(|&&t| t).count() as f32;
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        let mut best = 0.0f32;
        for direction in [false, true] {
            let mut tp = 0.0;
            let iter: Box<dyn Iterator<Item = &usize>> = if direction {
                Box::new(order.iter())
            } else {
                Box::new(order.iter().rev())
            };
            for (k, &i) in iter.enumerate() {
                if truth[i] {
                    tp += 1.0;
                }
                best = best.max(2.0 * tp / (k as f32 + 1.0 + positives));
            }
        }
        best
    }

    /// The best Dice of the rule "T1ce above a and T1 below b" over a grid of quantiles.
    fn best_two_modality_dice(t1ce: &[f32], t1: &[f32], truth: &[bool]) -> f32 {
        let quantiles = |v: &[f32]| {
            let mut s = v.to_vec();
            s.sort_by(|a, b| a.total_cmp(b));
            (1..40).map(|k| s[k * s.len() / 40]).collect::<Vec<f32>>()
        };
        let positives = truth.iter().filter(|&&t| t).count() as f32;
        let mut best = 0.0f32;
        for &a in &quantiles(t1ce) {
            for &b in &quantiles(t1) {
                let (mut tp, mut predicted) = (0.0f32, 0.0f32);
                for i in 0..truth.len() {
                    if t1ce[i] > a && t1[i] < b {
                        predicted += 1.0;
                        tp += truth[i] as u8 as f32;
                    }
                }
                best = best.max(2.0 * tp / (predicted + positives));
            }
        }
        best
    }

    /// Each modality divided by its median over the brain, so thresholds compare across
    /// cases; returns the normalised brain voxels and their labels.
    fn brain_voxels(case: &SynthCase) -> (Vec<Vec<f32>>, Vec<u8>) {
        let brain: Vec<usize> = (0..case.labels.len())
            .filter(|&i| case.images[0][i] > 0.0)
            .collect();
        let images = (0..4)
            .map(|m| {
                let mut v: Vec<f32> = brain.iter().map(|&i| case.images[m][i]).collect();
                let mut sorted = v.clone();
                sorted.sort_by(|a, b| a.total_cmp(b));
                let median = sorted[sorted.len() / 2];
                v.iter_mut().for_each(|x| *x /= median);
                v
            })
            .collect();
        (images, brain.iter().map(|&i| case.labels[i]).collect())
    }

    #[test]
    fn no_single_modality_threshold_finds_the_enhancing_tumour() {
        for seed in [0, 2, 4] {
            let case = generate_case([40, 40, 40], seed, 0);
            let (images, labels) = brain_voxels(&case);
            let et: Vec<bool> = labels.iter().map(|&l| l == ENHANCING).collect();
            assert!(
                et.iter().filter(|&&t| t).count() > 200,
                "seed {seed}: tiny ET"
            );
            let single = (0..4)
                .map(|m| best_threshold_dice(&images[m], &et))
                .fold(0.0, f32::max);
            let two = best_two_modality_dice(&images[1], &images[0], &et);
            assert!(
                single < 0.86,
                "seed {seed}: one modality gives ET Dice {single}"
            );
            assert!(
                two > 0.9 && two > single + 0.1,
                "seed {seed}: T1ce high and T1 low gives {two}, one modality {single}"
            );
        }
    }
}
