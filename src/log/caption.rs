//! Captions for pictures: an integer upscale of small pictures, a title above each row of
//! panels and a colour legend below, drawn with a built-in 5x7 pixel font (upper case,
//! digits and a little punctuation; other characters draw as '?').

/// Rows of panels are scaled up (by a whole factor, at most 8) until at least this high.
const MIN_ROW_PIXELS: usize = 160;
const MAX_SCALE: usize = 8;
/// Font pixels per glyph pixel, and the glyph cell (5x7 plus one column of spacing).
const FONT_SCALE: usize = 2;
const CELL_W: usize = 6 * FONT_SCALE;
const GLYPH_H: usize = 7 * FONT_SCALE;
/// A text strip: the glyph height and a margin above and below.
const STRIP: usize = GLYPH_H + 2 * FONT_SCALE * 2;
const TEXT: [u8; 3] = [255, 255, 255];

/// Rows of the glyph of `c` (upper-cased), 5 bits each, the leftmost pixel the highest bit.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ' ' => [0; 7],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '/' => [0x01, 0x02, 0x02, 0x04, 0x08, 0x08, 0x10],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
    }
}

/// An RGB canvas being drawn on.
struct Canvas {
    rgb: Vec<u8>,
    width: usize,
    height: usize,
}

impl Canvas {
    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, colour: [u8; 3]) {
        for row in y..(y + h).min(self.height) {
            for col in x..(x + w).min(self.width) {
                let at = (row * self.width + col) * 3;
                self.rgb[at..at + 3].copy_from_slice(&colour);
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y), clipped to the canvas.
    fn text(&mut self, x: usize, y: usize, text: &str) {
        for (i, c) in text.chars().enumerate() {
            let left = x + i * CELL_W;
            for (r, bits) in glyph(c).iter().enumerate() {
                for b in 0..5 {
                    if bits & (0x10 >> b) != 0 {
                        let (px, py) = (left + b * FONT_SCALE, y + r * FONT_SCALE);
                        self.fill(px, py, FONT_SCALE, FONT_SCALE, TEXT);
                    }
                }
            }
        }
    }
}

fn text_width(text: &str) -> usize {
    text.chars().count() * CELL_W
}

/// The picture `rgb` (`width` x `height`, made of `titles.len()` rows of panels of equal
/// height) scaled up by a whole factor when its rows are small, with each row's title in a
/// strip above it and `legend` (a colour swatch and a name each) in a strip at the bottom.
/// Returns (RGB bytes, width, height).
pub fn caption(
    rgb: &[u8],
    width: usize,
    height: usize,
    titles: &[&str],
    legend: &[([u8; 3], String)],
) -> (Vec<u8>, usize, usize) {
    let rows = titles.len().max(1);
    let row_h = height / rows;
    let scale = MIN_ROW_PIXELS.div_ceil(row_h.max(1)).clamp(1, MAX_SCALE);
    let gap = CELL_W;
    let legend_w: usize = legend
        .iter()
        .map(|(_, name)| GLYPH_H + FONT_SCALE * 2 + text_width(name) + gap)
        .sum();
    let title_w = titles.iter().map(|t| text_width(t)).max().unwrap_or(0);
    let out_w = (width * scale).max(legend_w).max(title_w);
    let legend_h = if legend.is_empty() { 0 } else { STRIP };
    let out_h = rows * (STRIP + row_h * scale) + legend_h;
    let mut canvas = Canvas {
        rgb: vec![0; out_w * out_h * 3],
        width: out_w,
        height: out_h,
    };
    let margin = FONT_SCALE * 2;
    for r in 0..rows {
        let top = r * (STRIP + row_h * scale);
        if let Some(title) = titles.get(r) {
            canvas.text(margin, top + margin, title);
        }
        for y in 0..row_h * scale {
            let src_row = r * row_h + y / scale;
            for x in 0..width * scale {
                let from = (src_row * width + x / scale) * 3;
                let to = ((top + STRIP + y) * out_w + x) * 3;
                canvas.rgb[to..to + 3].copy_from_slice(&rgb[from..from + 3]);
            }
        }
    }
    let mut x = margin;
    let y = out_h - legend_h + margin;
    for (colour, name) in legend {
        canvas.fill(x, y, GLYPH_H, GLYPH_H, *colour);
        x += GLYPH_H + FONT_SCALE * 2;
        canvas.text(x, y, name);
        x += text_width(name) + gap;
    }
    (canvas.rgb, out_w, out_h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixel(rgb: &[u8], width: usize, col: usize, row: usize) -> [u8; 3] {
        let at = (row * width + col) * 3;
        [rgb[at], rgb[at + 1], rgb[at + 2]]
    }

    #[test]
    fn small_pictures_scale_up_under_titles_with_a_legend_below() {
        // Two rows of 4x2 pixels: the top row red, the bottom row blue.
        let mut rgb = Vec::new();
        for row in 0..4 {
            for _ in 0..4 {
                rgb.extend_from_slice(if row < 2 { &[200, 0, 0] } else { &[0, 0, 200] });
            }
        }
        let legend = vec![([0, 255, 0], "ED".to_string())];
        let (out, w, h) = caption(&rgb, 4, 4, &["reference", "prediction"], &legend);
        // Rows of 2 pixels scale by 8 (the cap) to 16; each gets a title strip; one legend strip.
        assert_eq!(h, 2 * (STRIP + 16) + STRIP);
        assert_eq!(w, text_width("prediction"));
        assert_eq!(out.len(), w * h * 3);
        // Scaled pixels keep their colour; the title strip holds white glyph pixels only.
        assert_eq!(pixel(&out, w, 31, STRIP), [200, 0, 0]);
        assert_eq!(pixel(&out, w, 0, STRIP + 15), [200, 0, 0]);
        assert_eq!(pixel(&out, w, 31, 2 * STRIP + 16), [0, 0, 200]);
        assert_eq!(
            pixel(&out, w, 32, STRIP),
            [0, 0, 0],
            "right of the scaled picture"
        );
        // 'R' starts with a full-height left stroke at the strip's margin.
        let margin = FONT_SCALE * 2;
        for r in 0..GLYPH_H {
            assert_eq!(pixel(&out, w, margin, margin + r), TEXT);
        }
        let title: usize = (0..STRIP)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| pixel(&out, w, x, y) == TEXT)
            .count();
        assert!(title > 0 && title < w * STRIP / 2, "{title}");
        // The legend swatch is green, followed by the name.
        let legend_top = h - STRIP + margin;
        assert_eq!(pixel(&out, w, margin, legend_top), [0, 255, 0]);
        assert_eq!(
            pixel(&out, w, margin + GLYPH_H - 1, legend_top + GLYPH_H - 1),
            [0, 255, 0]
        );
        // Large pictures are not scaled.
        let big = vec![9u8; 200 * 200 * 3];
        let (_, w, h) = caption(&big, 200, 200, &["prediction"], &[]);
        assert_eq!((w, h), (200, STRIP + 200));
    }

    #[test]
    fn every_glyph_fits_five_columns_and_unknown_characters_draw_a_question_mark() {
        for c in ('A'..='Z').chain('0'..='9').chain(" -_.:=()/".chars()) {
            assert!(glyph(c).iter().all(|&r| r < 32), "{c}");
        }
        assert_eq!(glyph('a'), glyph('A'));
        assert_eq!(glyph('é'), glyph('?'));
        assert_ne!(glyph('O'), glyph('0'));
    }
}
