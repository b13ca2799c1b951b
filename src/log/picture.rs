//! Segmentation pictures: three orthogonal slices of a volume with label overlays, as RGB.
//!
//! Panels, left to right: axial (z fixed; x across, y up), coronal (y fixed; x across,
//! z up), sagittal (x fixed; y across, z up), each drawn with the higher index at the top so
//! that superior and anterior are up for RAS-like volumes. With both a reference and a
//! prediction, the top row overlays the reference and the bottom row the prediction.
//! Pixels are square in millimetres: an axis with coarser voxels than the finest axis is
//! stretched (nearest neighbour), so that 1x1x5 mm coronal and sagittal views are not
//! squashed.
use crate::atomic;
use crate::error::{Error, Result};
use std::path::Path;

/// Overlay colours of labels 1, 2, 3, ... (repeating).
pub const LABEL_COLOURS: [[u8; 3]; 6] = [
    [255, 0, 0],
    [0, 255, 0],
    [255, 255, 0],
    [0, 96, 255],
    [255, 0, 255],
    [0, 255, 255],
];

/// The grey level of a voxel under the image's 1st–99th percentile window.
struct Window {
    lo: f32,
    hi: f32,
}

impl Window {
    /// Percentiles from at most about a million voxels, sampled at a fixed stride.
    fn of(image: &[f32]) -> Self {
        let stride = (image.len() / 1_000_000).max(1);
        let mut values: Vec<f32> = image
            .iter()
            .step_by(stride)
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        if values.is_empty() {
            return Self { lo: 0.0, hi: 0.0 };
        }
        let mut at = |q: f64| {
            let k = (q * (values.len() - 1) as f64).round() as usize;
            *values.select_nth_unstable_by(k, f32::total_cmp).1
        };
        Self {
            lo: at(0.01),
            hi: at(0.99),
        }
    }

    fn grey(&self, v: f32) -> u8 {
        if self.hi <= self.lo {
            return if v > self.lo { 255 } else { 0 };
        }
        let t = ((v - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0);
        if t.is_nan() {
            0
        } else {
            (t * 255.0).round() as u8
        }
    }
}

/// Blends a label colour at one half over the grey level.
fn blend(grey: u8, label: u8) -> [u8; 3] {
    if label == 0 {
        return [grey; 3];
    }
    let c = LABEL_COLOURS[(label as usize - 1) % LABEL_COLOURS.len()];
    c.map(|c| ((grey as u16 + c as u16) / 2) as u8)
}

/// The rounded centre of mass of the non-zero labels, if any.
fn label_centre(labels: &[u8], dims: [usize; 3]) -> Option<[usize; 3]> {
    let mut sum = [0f64; 3];
    let mut n = 0usize;
    for (i, _) in labels.iter().enumerate().filter(|(_, &l)| l != 0) {
        sum[0] += (i % dims[0]) as f64;
        sum[1] += ((i / dims[0]) % dims[1]) as f64;
        sum[2] += (i / (dims[0] * dims[1])) as f64;
        n += 1;
    }
    (n > 0).then(|| sum.map(|s| (s / n as f64).round() as usize))
}

/// Pixels per axis (x, y, z) when each pixel spans the finest spacing: an axis of `dims[a]`
/// voxels of `spacing[a]` mm covers `dims[a] * spacing[a] / finest` pixels, at least one.
/// A spacing that is not a positive number counts as the finest.
fn pixels_per_axis(dims: [usize; 3], spacing: [f64; 3]) -> [usize; 3] {
    let spacing = spacing.map(|s| if s.is_finite() && s > 0.0 { s } else { 0.0 });
    let finest = spacing
        .iter()
        .copied()
        .filter(|&s| s > 0.0)
        .fold(f64::INFINITY, f64::min);
    [0, 1, 2].map(|a| {
        if spacing[a] == 0.0 || !finest.is_finite() {
            dims[a]
        } else {
            ((dims[a] as f64 * spacing[a] / finest).round() as usize).max(dims[a])
        }
    })
}

/// Three orthogonal slices through `centre` side by side, grey image windowed to its 1st–99th
/// percentile, labels overlaid (`truth` on the top row and `pred` below when both are given),
/// with square pixels for voxels of `spacing` mm (x, y, z). `centre` defaults to the centre
/// of mass of `truth`'s labels, else `pred`'s, else the volume's centre. Returns (RGB bytes,
/// width, height).
pub fn overlay_slices(
    image: &[f32],
    dims: [usize; 3],
    spacing: [f64; 3],
    pred: Option<&[u8]>,
    truth: Option<&[u8]>,
    centre: Option<[usize; 3]>,
) -> Result<(Vec<u8>, usize, usize)> {
    let [nx, ny, nz] = dims;
    let voxels = nx * ny * nz;
    if voxels == 0 || image.len() != voxels {
        return Err(Error::shape(
            "overlay_slices",
            format!("image of {} voxels for dims {dims:?}", image.len()),
        ));
    }
    for (name, labels) in [("prediction", pred), ("reference", truth)] {
        if let Some(l) = labels.filter(|l| l.len() != voxels) {
            return Err(Error::shape(
                "overlay_slices",
                format!("{name} of {} voxels for dims {dims:?}", l.len()),
            ));
        }
    }
    let centre = centre
        .or_else(|| truth.and_then(|t| label_centre(t, dims)))
        .or_else(|| pred.and_then(|p| label_centre(p, dims)))
        .unwrap_or([nx / 2, ny / 2, nz / 2]);
    if (0..3).any(|a| centre[a] >= dims[a]) {
        return Err(Error::shape(
            "overlay_slices",
            format!("centre {centre:?} outside dims {dims:?}"),
        ));
    }
    let window = Window::of(image);
    let overlays: Vec<Option<&[u8]>> = match (truth, pred) {
        (Some(t), Some(p)) => vec![Some(t), Some(p)],
        (Some(l), None) | (None, Some(l)) => vec![Some(l)],
        (None, None) => vec![None],
    };
    let [px, py, pz] = pixels_per_axis(dims, spacing);
    // The voxel index along axis `a` that pixel `p` of `pixels` shows (nearest neighbour).
    let voxel_at = |p: usize, pixels: usize, a: usize| (p * dims[a] / pixels).min(dims[a] - 1);
    let panel_h = py.max(pz);
    let width = px + px + py;
    let height = panel_h * overlays.len();
    let mut rgb = vec![0u8; width * height * 3];
    let index = |x: usize, y: usize, z: usize| (z * ny + y) * nx + x;
    let [cx, cy, cz] = centre;
    for (r, labels) in overlays.iter().enumerate() {
        let mut put = |col: usize, row: usize, voxel: usize| {
            let label = labels.map_or(0, |l| l[voxel]);
            let at = ((r * panel_h + row) * width + col) * 3;
            rgb[at..at + 3].copy_from_slice(&blend(window.grey(image[voxel]), label));
        };
        for j in 0..py {
            let y = voxel_at(j, py, 1);
            for i in 0..px {
                put(i, py - 1 - j, index(voxel_at(i, px, 0), y, cz));
            }
        }
        for k in 0..pz {
            let z = voxel_at(k, pz, 2);
            for i in 0..px {
                put(px + i, pz - 1 - k, index(voxel_at(i, px, 0), cy, z));
            }
            for j in 0..py {
                put(2 * px + j, pz - 1 - k, index(cx, voxel_at(j, py, 1), z));
            }
        }
    }
    Ok((rgb, width, height))
}

/// `overlay_slices` as a finished picture: scaled up when small, each row titled
/// ("reference", "prediction") and a legend naming the colour of each class. `classes` are
/// the class names by label value, background first.
pub fn captioned_overlay(
    image: &[f32],
    dims: [usize; 3],
    spacing: [f64; 3],
    pred: Option<&[u8]>,
    truth: Option<&[u8]>,
    classes: &[String],
) -> Result<(Vec<u8>, usize, usize)> {
    let (rgb, width, height) = overlay_slices(image, dims, spacing, pred, truth, None)?;
    let titles: Vec<&str> = [(truth, "reference"), (pred, "prediction")]
        .into_iter()
        .filter_map(|(labels, title)| labels.map(|_| title))
        .collect();
    let legend: Vec<([u8; 3], String)> = classes
        .iter()
        .skip(1)
        .enumerate()
        .map(|(i, name)| (LABEL_COLOURS[i % LABEL_COLOURS.len()], name.clone()))
        .collect();
    Ok(super::caption::caption(
        &rgb, width, height, &titles, &legend,
    ))
}

/// PNG bytes of an 8-bit RGB picture.
pub fn encode_png(rgb: &[u8], width: usize, height: usize) -> Result<Vec<u8>> {
    if rgb.len() != width * height * 3 || width == 0 || height == 0 {
        return Err(Error::shape(
            "encode_png",
            format!("{} bytes for a {width}x{height} RGB picture", rgb.len()),
        ));
    }
    let too_big = |_| {
        Error::shape(
            "encode_png",
            format!("{width}x{height} is too large for PNG"),
        )
    };
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(
        &mut out,
        u32::try_from(width).map_err(too_big)?,
        u32::try_from(height).map_err(too_big)?,
    );
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let png_error = |e: png::EncodingError| Error::shape("encode_png", e.to_string());
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(rgb).map_err(png_error)?;
    writer.finish().map_err(png_error)?;
    Ok(out)
}

/// Writes an RGB picture as a PNG file, atomically.
pub fn write_png(path: &Path, rgb: &[u8], width: usize, height: usize) -> Result<()> {
    atomic::write_bytes(path, &encode_png(rgb, width, height)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISO: [f64; 3] = [1.0; 3];

    fn pixel(rgb: &[u8], width: usize, col: usize, row: usize) -> [u8; 3] {
        let at = (row * width + col) * 3;
        [rgb[at], rgb[at + 1], rgb[at + 2]]
    }

    /// dims [5, 4, 3]: background 0, a bright block of 100 (x ≥ 2, z = 1), one voxel of 50
    /// at (1, 1, 1), reference label 1 at (1, 1, 1), predicted label 2 at (3, 2, 1).
    fn crafted() -> ([usize; 3], Vec<f32>, Vec<u8>, Vec<u8>) {
        let dims = [5, 4, 3];
        let idx = |x: usize, y: usize, z: usize| (z * 4 + y) * 5 + x;
        let mut image = vec![0f32; 60];
        for y in 0..4 {
            for x in 2..5 {
                image[idx(x, y, 1)] = 100.0;
            }
        }
        image[idx(1, 1, 1)] = 50.0;
        let mut truth = vec![0u8; 60];
        truth[idx(1, 1, 1)] = 1;
        let mut pred = vec![0u8; 60];
        pred[idx(3, 2, 1)] = 2;
        (dims, image, truth, pred)
    }

    #[test]
    fn slices_and_overlays_land_where_expected() {
        let (dims, image, truth, pred) = crafted();
        let (rgb, w, h) =
            overlay_slices(&image, dims, ISO, Some(&pred), Some(&truth), None).unwrap();
        // Panels 5 + 5 + 4 wide, max(4, 3) high, two rows; the centre is the reference voxel.
        assert_eq!((w, h), (14, 8));
        // Axial z = 1, reference row: (1, 1) is label 1 (red) over grey 50 -> 128.
        assert_eq!(pixel(&rgb, w, 1, 4 - 1 - 1), [191, 64, 64]);
        // (3, 2) is bright and unlabelled in the reference row, green-blended in the prediction row.
        assert_eq!(pixel(&rgb, w, 3, 4 - 1 - 2), [255, 255, 255]);
        assert_eq!(pixel(&rgb, w, 3, 4 + 4 - 1 - 2), [127, 255, 127]);
        // The prediction row does not show the reference label.
        assert_eq!(pixel(&rgb, w, 1, 4 + 4 - 1 - 1), [128, 128, 128]);
        // Coronal y = 1: x = 4, z = 1 is bright; z = 0 is black.
        assert_eq!(pixel(&rgb, w, 5 + 4, 3 - 1 - 1), [255, 255, 255]);
        assert_eq!(pixel(&rgb, w, 5 + 4, 3 - 1), [0, 0, 0]);
        // Sagittal x = 1: y = 1, z = 1 is the reference label.
        assert_eq!(pixel(&rgb, w, 10 + 1, 3 - 1 - 1), [191, 64, 64]);
        // Below the 3-high coronal panel is padding.
        assert_eq!(pixel(&rgb, w, 5 + 4, 3), [0, 0, 0]);
    }

    #[test]
    fn explicit_centre_and_single_row() {
        let (dims, image, _, pred) = crafted();
        let (rgb, w, h) =
            overlay_slices(&image, dims, ISO, Some(&pred), None, Some([3, 2, 0])).unwrap();
        assert_eq!((w, h), (14, 4));
        // Axial z = 0 is all background; the coronal slice y = 2 shows the label at x = 3, z = 1.
        assert_eq!(pixel(&rgb, w, 3, 4 - 1 - 2), [0, 0, 0]);
        assert_eq!(pixel(&rgb, w, 5 + 3, 3 - 1 - 1), [127, 255, 127]);
        let err = overlay_slices(&image, dims, ISO, None, None, Some([5, 0, 0])).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        let err = overlay_slices(&image, dims, ISO, Some(&[0u8; 3]), None, None).unwrap_err();
        assert!(err.to_string().contains("prediction of 3 voxels"), "{err}");
    }

    #[test]
    fn captioned_pictures_title_the_rows_they_show() {
        let (dims, image, truth, pred) = crafted();
        let classes = ["background", "NCR", "ED"].map(String::from);
        let (rgb, w, h) =
            captioned_overlay(&image, dims, ISO, Some(&pred), Some(&truth), &classes).unwrap();
        let (plain, pw, ph) =
            overlay_slices(&image, dims, ISO, Some(&pred), Some(&truth), None).unwrap();
        let (_, w1, h1) =
            captioned_overlay(&image, dims, ISO, Some(&pred), None, &classes).unwrap();
        // Two titled rows against one, both scaled by the same factor.
        assert!(h > 2 * ph && h1 < h && w1 == w, "{w}x{h} vs {w1}x{h1}");
        assert!(w >= pw);
        assert_eq!(rgb.len(), w * h * 3);
        // The legend's first swatch is label 1's colour.
        assert!(rgb.chunks_exact(3).any(|p| p == LABEL_COLOURS[0]));
        assert!(
            plain.chunks_exact(3).all(|p| p != LABEL_COLOURS[0]),
            "only blended in the slices"
        );
    }

    #[test]
    fn png_round_trips() {
        let (dims, image, truth, _) = crafted();
        let (rgb, w, h) = overlay_slices(&image, dims, ISO, None, Some(&truth), None).unwrap();
        let dir = std::env::temp_dir().join(format!("voxseg-picture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("slices.png");
        write_png(&path, &rgb, w, h).unwrap();
        let file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        let mut reader = png::Decoder::new(file).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (w as u32, h as u32));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(&buf[..info.buffer_size()], &rgb[..]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(encode_png(&rgb, w + 1, h).is_err());
    }

    #[test]
    fn coarse_axes_are_stretched_to_square_pixels() {
        let (dims, image, truth, _) = crafted();
        let plain = overlay_slices(&image, dims, ISO, None, Some(&truth), None).unwrap();
        // Uniform voxels of any size draw as before.
        let uniform = overlay_slices(&image, dims, [2.5; 3], None, Some(&truth), None).unwrap();
        assert_eq!(plain, uniform);
        // 1x1x5 mm: the 3 slices become 15 rows in the coronal and sagittal panels, which set
        // the height; the panels' widths (x, x, y) are unchanged.
        let (rgb, w, h) =
            overlay_slices(&image, dims, [1.0, 1.0, 5.0], None, Some(&truth), None).unwrap();
        assert_eq!((w, h), (14, 15));
        // Coronal y = 1, x = 4: z = 1 (bright) spans rows 5..10 from the bottom, z = 0 and
        // z = 2 (black) the 5 rows below and above; the axial panel (4 rows) is padded below.
        for row in 0..15 {
            let bright = (5..10).contains(&(14 - row));
            let want = if bright { [255; 3] } else { [0; 3] };
            assert_eq!(pixel(&rgb, w, 5 + 4, row), want, "row {row}");
        }
        assert_eq!(pixel(&rgb, w, 4, 3), [255; 3]);
        assert_eq!(pixel(&rgb, w, 4, 4), [0; 3]);
        // 2x1x1 mm: x is stretched twice in the axial and coronal panels.
        let (_, w, h) =
            overlay_slices(&image, dims, [2.0, 1.0, 1.0], None, Some(&truth), None).unwrap();
        assert_eq!((w, h), (10 + 10 + 4, 4));
        assert_eq!(pixels_per_axis(dims, [1.0, f64::NAN, 0.0]), dims);
    }
}
