//! TensorBoard event files written directly: TFRecord framing around hand-encoded `Event`
//! protocol buffers (scalars, PNG images, histograms), readable by TensorBoard's
//! `EventAccumulator` without any TensorFlow code on our side.
use super::crc32c::masked_crc32c;
use super::picture::encode_png;
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Equal-width buckets per histogram; TensorBoard re-bins for display.
const HISTOGRAM_BUCKETS: usize = 30;

/// Protocol-buffer field encoding, for the handful of wire types the event format uses.
#[derive(Default)]
struct Proto(Vec<u8>);

impl Proto {
    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.raw_varint(((field as u64) << 3) | wire as u64);
    }
    fn varint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 0);
        self.raw_varint(v);
        self
    }
    fn double(&mut self, field: u32, v: f64) -> &mut Self {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.raw_varint(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }
    fn packed_doubles(&mut self, field: u32, v: &[f64]) -> &mut Self {
        self.key(field, 2);
        self.raw_varint(8 * v.len() as u64);
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
        self
    }
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

// Field numbers of tensorflow/core/util/event.proto and framework/summary.proto.
const EVENT_WALL_TIME: u32 = 1;
const EVENT_STEP: u32 = 2;
const EVENT_FILE_VERSION: u32 = 3;
const EVENT_SUMMARY: u32 = 5;
const SUMMARY_VALUE: u32 = 1;
const VALUE_TAG: u32 = 1;
const VALUE_SIMPLE: u32 = 2;
const VALUE_IMAGE: u32 = 4;
const VALUE_HISTO: u32 = 5;
const IMAGE_HEIGHT: u32 = 1;
const IMAGE_WIDTH: u32 = 2;
const IMAGE_COLORSPACE: u32 = 3;
const IMAGE_ENCODED: u32 = 4;
const HISTO_MIN: u32 = 1;
const HISTO_MAX: u32 = 2;
const HISTO_NUM: u32 = 3;
const HISTO_SUM: u32 = 4;
const HISTO_SUM_SQUARES: u32 = 5;
const HISTO_BUCKET_LIMIT: u32 = 6;
const HISTO_BUCKET: u32 = 7;
const COLORSPACE_RGB: u64 = 3;

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The machine's name for the file name, as TensorFlow puts it there; only characters that
/// are safe in a file name are kept.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// Equal-width histogram of finite values: (min, max, bucket upper limits, counts).
fn histogram(values: &[f32]) -> (f64, f64, Vec<f64>, Vec<f64>) {
    let min = values.iter().copied().fold(f32::INFINITY, f32::min) as f64;
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if max <= min {
        return (min, max, vec![max], vec![values.len() as f64]);
    }
    let width = (max - min) / HISTOGRAM_BUCKETS as f64;
    let mut limits: Vec<f64> = (1..=HISTOGRAM_BUCKETS)
        .map(|i| min + width * i as f64)
        .collect();
    limits[HISTOGRAM_BUCKETS - 1] = max;
    let mut counts = vec![0.0; HISTOGRAM_BUCKETS];
    for &v in values {
        let b = (((v as f64 - min) / width) as usize).min(HISTOGRAM_BUCKETS - 1);
        counts[b] += 1.0;
    }
    (min, max, limits, counts)
}

/// Appends events to one `events.out.tfevents.<unix seconds>.<hostname>` file.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates a new event file in `dir` (made if missing) and writes the version record.
    /// A second writer started in the same second gets a numbered suffix, never the same file.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let base = format!("events.out.tfevents.{}.{}", wall_time() as u64, hostname());
        let mut attempt = 0;
        let (path, file) = loop {
            let name = if attempt == 0 {
                base.clone()
            } else {
                format!("{base}.{attempt}")
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => attempt += 1,
                Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
            }
        };
        let mut writer = Self {
            path,
            file: BufWriter::new(file),
        };
        let event = Proto::default()
            .double(EVENT_WALL_TIME, wall_time())
            .bytes(EVENT_FILE_VERSION, b"brain.Event:2")
            .take();
        writer.write_record(&event)?;
        writer.flush()?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        record.extend_from_slice(data);
        record.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.file
            .write_all(&record)
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }

    /// Writes an Event holding a Summary with one value (`value` = its encoded fields after the tag).
    fn write_summary(&mut self, tag: &str, value: &[u8], step: u64) -> Result<()> {
        let mut v = Proto::default();
        v.bytes(VALUE_TAG, tag.as_bytes());
        v.0.extend_from_slice(value);
        let summary = Proto::default().bytes(SUMMARY_VALUE, &v.take()).take();
        let event = Proto::default()
            .double(EVENT_WALL_TIME, wall_time())
            .varint(EVENT_STEP, step)
            .bytes(EVENT_SUMMARY, &summary)
            .take();
        self.write_record(&event)
    }

    pub fn add_scalar(&mut self, tag: &str, value: f32, step: u64) -> Result<()> {
        let v = Proto::default().float(VALUE_SIMPLE, value).take();
        self.write_summary(tag, &v, step)
    }

    /// An 8-bit RGB picture, `width * height * 3` bytes, stored as PNG.
    pub fn add_image(
        &mut self,
        tag: &str,
        rgb: &[u8],
        width: usize,
        height: usize,
        step: u64,
    ) -> Result<()> {
        let png = encode_png(rgb, width, height)?;
        let image = Proto::default()
            .varint(IMAGE_HEIGHT, height as u64)
            .varint(IMAGE_WIDTH, width as u64)
            .varint(IMAGE_COLORSPACE, COLORSPACE_RGB)
            .bytes(IMAGE_ENCODED, &png)
            .take();
        let v = Proto::default().bytes(VALUE_IMAGE, &image).take();
        self.write_summary(tag, &v, step)
    }

    /// A histogram of `values` in equal-width buckets; the values must be finite and not empty.
    pub fn add_histogram(&mut self, tag: &str, values: &[f32], step: u64) -> Result<()> {
        if values.is_empty() {
            return Err(Error::data(tag, "histogram of no values"));
        }
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("histogram {tag}"),
                detail: format!("value {bad} at step {step}"),
            });
        }
        let (min, max, limits, counts) = histogram(values);
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let sum_squares: f64 = values.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let histo = Proto::default()
            .double(HISTO_MIN, min)
            .double(HISTO_MAX, max)
            .double(HISTO_NUM, values.len() as f64)
            .double(HISTO_SUM, sum)
            .double(HISTO_SUM_SQUARES, sum_squares)
            .packed_doubles(HISTO_BUCKET_LIMIT, &limits)
            .packed_doubles(HISTO_BUCKET, &counts)
            .take();
        let v = Proto::default().bytes(VALUE_HISTO, &histo).take();
        self.write_summary(tag, &v, step)
    }

    /// Pushes buffered events to the file so that TensorBoard sees them.
    pub fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.file.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::super::crc32c::masked_crc32c;
    use super::*;

    /// A decoded protobuf field value.
    #[derive(Debug, Clone, PartialEq)]
    enum Field {
        Varint(u64),
        Fixed64(u64),
        Fixed32(u32),
        Bytes(Vec<u8>),
    }

    fn read_varint(buf: &[u8], at: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = buf[*at];
            *at += 1;
            v |= ((b & 0x7F) as u64) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    fn decode(buf: &[u8]) -> Vec<(u32, Field)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < buf.len() {
            let key = read_varint(buf, &mut at);
            let field = match key & 7 {
                0 => Field::Varint(read_varint(buf, &mut at)),
                1 => {
                    at += 8;
                    Field::Fixed64(u64::from_le_bytes(buf[at - 8..at].try_into().unwrap()))
                }
                2 => {
                    let n = read_varint(buf, &mut at) as usize;
                    at += n;
                    Field::Bytes(buf[at - n..at].to_vec())
                }
                5 => {
                    at += 4;
                    Field::Fixed32(u32::from_le_bytes(buf[at - 4..at].try_into().unwrap()))
                }
                w => panic!("unexpected wire type {w}"),
            };
            out.push(((key >> 3) as u32, field));
        }
        assert_eq!(at, buf.len(), "field overran the message");
        out
    }

    fn get(fields: &[(u32, Field)], number: u32) -> &Field {
        &fields.iter().find(|(n, _)| *n == number).unwrap().1
    }

    fn bytes(f: &Field) -> &[u8] {
        match f {
            Field::Bytes(b) => b,
            other => panic!("expected bytes, got {other:?}"),
        }
    }

    fn double(f: &Field) -> f64 {
        match f {
            Field::Fixed64(v) => f64::from_bits(*v),
            other => panic!("expected a double, got {other:?}"),
        }
    }

    fn doubles(f: &Field) -> Vec<f64> {
        bytes(f)
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// Splits a TFRecord file into its records, checking both CRCs of each.
    fn records(path: &Path) -> Vec<Vec<u8>> {
        let data = std::fs::read(path).unwrap();
        let mut at = 0;
        let mut out = Vec::new();
        while at < data.len() {
            let len_bytes = &data[at..at + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap());
            assert_eq!(
                len_crc,
                masked_crc32c(len_bytes),
                "length CRC of record {}",
                out.len()
            );
            let body = &data[at + 12..at + 12 + len];
            let body_crc =
                u32::from_le_bytes(data[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(
                body_crc,
                masked_crc32c(body),
                "data CRC of record {}",
                out.len()
            );
            out.push(body.to_vec());
            at += 16 + len;
        }
        out
    }

    /// The (tag, step, value fields) of a summary event.
    fn summary_value(event: &[u8]) -> (String, u64, Vec<(u32, Field)>) {
        let e = decode(event);
        let step = match get(&e, EVENT_STEP) {
            Field::Varint(s) => *s,
            other => panic!("step {other:?}"),
        };
        assert!(double(get(&e, EVENT_WALL_TIME)) > 1.6e9);
        let summary = decode(bytes(get(&e, EVENT_SUMMARY)));
        let value = decode(bytes(get(&summary, SUMMARY_VALUE)));
        let tag = String::from_utf8(bytes(get(&value, VALUE_TAG)).to_vec()).unwrap();
        (tag, step, value)
    }

    #[test]
    fn varints_encode_like_protobuf() {
        let mut p = Proto::default();
        p.varint(2, 300);
        assert_eq!(p.take(), [0x10, 0xAC, 0x02]);
        p.float(2, 1.0);
        assert_eq!(p.take(), [0x15, 0, 0, 0x80, 0x3F]);
    }

    #[test]
    fn event_file_parses_back() {
        let dir = std::env::temp_dir().join(format!("voxseg-tb-{}", std::process::id()));
        let mut w = EventWriter::create(&dir).unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        w.add_scalar("loss/train", 0.25, 7).unwrap();
        let rgb: Vec<u8> = (0..2 * 3 * 3).map(|i| i as u8 * 10).collect();
        w.add_image("pred", &rgb, 3, 2, 8).unwrap();
        let values: Vec<f32> = (0..60).map(|i| i as f32 / 2.0).collect();
        w.add_histogram("weights", &values, 9).unwrap();
        w.flush().unwrap();
        let second = EventWriter::create(&dir).unwrap();
        assert_ne!(second.path(), w.path());

        let recs = records(w.path());
        assert_eq!(recs.len(), 4);
        let first = decode(&recs[0]);
        assert_eq!(bytes(get(&first, EVENT_FILE_VERSION)), b"brain.Event:2");

        let (tag, step, value) = summary_value(&recs[1]);
        assert_eq!((tag.as_str(), step), ("loss/train", 7));
        assert_eq!(
            get(&value, VALUE_SIMPLE),
            &Field::Fixed32(0.25f32.to_bits())
        );

        let (tag, step, value) = summary_value(&recs[2]);
        assert_eq!((tag.as_str(), step), ("pred", 8));
        let image = decode(bytes(get(&value, VALUE_IMAGE)));
        assert_eq!(get(&image, IMAGE_HEIGHT), &Field::Varint(2));
        assert_eq!(get(&image, IMAGE_WIDTH), &Field::Varint(3));
        assert_eq!(get(&image, IMAGE_COLORSPACE), &Field::Varint(3));
        let png_bytes = bytes(get(&image, IMAGE_ENCODED));
        let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!(buf, rgb);

        let (tag, step, value) = summary_value(&recs[3]);
        assert_eq!((tag.as_str(), step), ("weights", 9));
        let h = decode(bytes(get(&value, VALUE_HISTO)));
        assert_eq!(double(get(&h, HISTO_MIN)), 0.0);
        assert_eq!(double(get(&h, HISTO_MAX)), 29.5);
        assert_eq!(double(get(&h, HISTO_NUM)), 60.0);
        assert_eq!(double(get(&h, HISTO_SUM)), 885.0);
        let sum_squares: f64 = values.iter().map(|&v| (v * v) as f64).sum();
        assert_eq!(double(get(&h, HISTO_SUM_SQUARES)), sum_squares);
        let limits = doubles(get(&h, HISTO_BUCKET_LIMIT));
        let counts = doubles(get(&h, HISTO_BUCKET));
        assert_eq!(limits.len(), HISTOGRAM_BUCKETS);
        assert_eq!(*limits.last().unwrap(), 29.5);
        assert!((limits[0] - 29.5 / 30.0).abs() < 1e-12);
        assert_eq!(counts.iter().sum::<f64>(), 60.0);
        // 0.0 and 0.5 fall below the first limit 0.983; 29.5 is counted in the last bucket.
        assert_eq!(counts[0], 2.0);
        assert_eq!(counts[HISTOGRAM_BUCKETS - 1], 2.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn histogram_of_equal_values_and_bad_input() {
        assert_eq!(histogram(&[2.0; 5]), (2.0, 2.0, vec![2.0], vec![5.0]));
        let dir = std::env::temp_dir().join(format!("voxseg-tb-bad-{}", std::process::id()));
        let mut w = EventWriter::create(&dir).unwrap();
        let err = w.add_histogram("g", &[1.0, f32::NAN], 3).unwrap_err();
        assert!(err.to_string().contains("histogram g"), "{err}");
        assert!(w.add_histogram("g", &[], 3).is_err());
        assert!(w.add_image("i", &[0; 5], 2, 1, 3).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
