//! The on-disk cache of preprocessed cases, for datasets larger than RAM. Each case is three
//! raw little-endian arrays and a JSON sidecar:
//! `<id>.image.f32` (the channels one after another, x fastest), `<id>.label.u8`,
//! `<id>.fg.u32` (the foreground index, classes one after another) and `<id>.json`;
//! `cache.json` lists the cases, the spec and a fingerprint (path relative to the dataset
//! folder, size, modification time) of each case's source files, so a cache whose sources
//! changed, or that is used with another dataset, is refused rather than silently trained
//! on, while a dataset moved together with its cache still opens it. Every file is written atomically, the sidecar
//! after the arrays and the index last, so a listed case is complete. `CachedCase`
//! memory-maps the arrays: patches are read from the page cache, and only the pages a patch
//! touches are loaded.
use super::grid;
use super::layout::CaseFiles;
use super::preprocess::{CropBox, PreprocessSpec, PreprocessedCase};
use super::sampler::{ForegroundIndex, PatchSource};
use super::volume::{LabelVolume, Volume};
use crate::atomic::{write_bytes, write_with};
use crate::error::{Error, Result};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

const INDEX_FILE: &str = "cache.json";
/// 2: the brain mask fills holes, so a case with exact zeros inside the object preprocesses
/// differently from a format-1 cache.
/// 3: voxel sizes are in mm by the file's `xyzt_units`, so a case stored in metres or
/// micrometres has another spacing (and, resampled, other arrays) than in a format-2 cache.
const FORMAT_VERSION: u32 = 3;

/// What `<id>.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSidecar {
    pub id: String,
    /// Grid size (x, y, z).
    pub dims: [usize; 3],
    pub spacing: [f64; 3],
    pub crop: CropBox,
    pub channels: usize,
    pub background_value: f32,
    pub has_label: bool,
    /// Number of stored positions of each foreground class (class k + 1 at entry k).
    pub foreground_counts: Vec<usize>,
    pub spec: PreprocessSpec,
    /// The orientation code of the grid as cached (after any reorientation the spec asks
    /// for); None in caches made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orientation: Option<String>,
}

/// One case for `write_cache`: preprocessed, with its source fingerprints and the
/// orientation code of its preprocessed grid.
pub struct CacheEntry {
    pub case: PreprocessedCase,
    pub sources: Vec<SourceFile>,
    pub orientation: String,
}

/// What `cache.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheIndex {
    pub version: u32,
    pub spec: PreprocessSpec,
    pub cases: Vec<String>,
    /// The source files of each case as they were when it was read; None in caches made
    /// before fingerprints were recorded (read with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<BTreeMap<String, Vec<SourceFile>>>,
}

/// A source file as it was when preprocessed: a change in size or modification time
/// means the cache no longer shows the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    /// Relative to the dataset folder, so that the dataset can move (with its cache or not)
    /// and the check still finds the file; absolute for a file outside the dataset folder
    /// (a manifest may name one) and in caches older voxseg builds made.
    pub path: PathBuf,
    pub bytes: u64,
    /// Nanoseconds since the Unix epoch.
    pub modified_ns: u64,
}

impl SourceFile {
    /// The fingerprint of `path`, a file of the dataset in the folder `root`, as it is now.
    pub fn of(root: &Path, path: &Path) -> Result<SourceFile> {
        let reading = |e| Error::io(format!("reading {}", path.display()), e);
        let meta = std::fs::metadata(path).map_err(reading)?;
        let modified = meta.modified().map_err(reading)?;
        let recorded = match path.strip_prefix(root) {
            Ok(relative) => relative.to_path_buf(),
            Err(_) => {
                let absolute = std::fs::canonicalize(path).map_err(reading)?;
                match std::fs::canonicalize(root)
                    .map(|r| absolute.strip_prefix(r).map(Path::to_path_buf))
                {
                    Ok(Ok(relative)) => relative,
                    _ => absolute,
                }
            }
        };
        Ok(SourceFile {
            modified_ns: modified
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            bytes: meta.len(),
            path: recorded,
        })
    }
}

/// The source files a cached case of the dataset in `root` is made from: the image files of
/// the selected `channels` (a 4D file once) and the label file.
pub fn case_sources(root: &Path, case: &CaseFiles, channels: &[usize]) -> Result<Vec<SourceFile>> {
    let mut paths: Vec<&Path> = Vec::new();
    for &c in channels {
        if let Some(image) = case.images.get(c) {
            if !paths.contains(&image.path.as_path()) {
                paths.push(&image.path);
            }
        }
    }
    paths.extend(case.label.as_deref());
    paths.into_iter().map(|p| SourceFile::of(root, p)).collect()
}

/// Fails, naming the file, when a recorded source of a case changed or vanished; relative
/// paths are read in the dataset folder `root`.
fn check_sources(index_path: &Path, index: &CacheIndex, root: &Path) -> Result<()> {
    let Some(sources) = &index.sources else {
        eprintln!(
            "warning: {}: the cache records no fingerprints of its source files (an older \
             voxseg made it), so changed sources go unnoticed; rerun `voxseg preprocess` to add them",
            index_path.display()
        );
        return Ok(());
    };
    let rerun = "rerun `voxseg preprocess` to rebuild the cache";
    for id in &index.cases {
        for recorded in sources.get(id).into_iter().flatten() {
            // An absolute path (outside the dataset, or an older cache) stays as it is.
            let path = root.join(&recorded.path);
            let p = path.display();
            let now = match SourceFile::of(root, &path) {
                Ok(now) => now,
                Err(_) if !path.exists() => {
                    return Err(Error::file(
                        index_path,
                        format!("case {id}: source {p} no longer exists; {rerun}"),
                    ))
                }
                Err(e) => return Err(e),
            };
            let mut changes = Vec::new();
            if now.bytes != recorded.bytes {
                changes.push(format!("{} -> {} bytes", recorded.bytes, now.bytes));
            }
            if now.modified_ns != recorded.modified_ns {
                changes.push(format!(
                    "modified {}, the cache recorded {}",
                    utc_time(now.modified_ns),
                    utc_time(recorded.modified_ns)
                ));
            }
            if !changes.is_empty() {
                return Err(Error::file(
                    index_path,
                    format!(
                        "case {id}: source {p} changed since the cache was made ({}); {rerun}",
                        changes.join("; ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Nanoseconds after the Unix epoch as an RFC 3339 UTC time to the millisecond, e.g.
/// `2026-11-26T07:22:30.834Z`.
fn utc_time(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let millis = ns % 1_000_000_000 / 1_000_000;
    let (days, in_day) = (secs / 86_400, secs % 86_400);
    // The proleptic Gregorian date of a day count: shift the epoch to 0000-03-01 so a
    // leap day ends each 4-, 100- and 400-year cycle, then read off era, year and month.
    let shifted = days + 719_468;
    let (era, day_of_era) = (shifted / 146_097, shifted % 146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        in_day / 3_600,
        in_day % 3_600 / 60,
        in_day % 60
    )
}

/// Builds a cache for the folder `out` with `build` (which writes into the folder it is
/// given) beside it, and only once `build` succeeded puts it in place, by renames: a
/// failing case or an interrupted run leaves `out` as it was. A missing or empty `out` is
/// used as it is; a non-empty one is refused unless `force`, and even then it must hold a
/// cache and nothing else (a `cache.json` that reads as a cache index, the modality list
/// and the files of the cases it lists): no other folder is ever replaced.
pub fn replace_cache<T>(
    out: &Path,
    force: bool,
    build: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    old_cache_files(out, force)?;
    let (parent, name) = parent_and_name(out)?;
    std::fs::create_dir_all(&parent)
        .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    let pid = std::process::id();
    let fresh = parent.join(format!(".{name}.new-{pid}"));
    std::fs::create_dir(&fresh)
        .map_err(|e| Error::io(format!("creating {}", fresh.display()), e))?;
    let built = build(&fresh).and_then(|value| {
        // Checked again: the folder may have changed while the cache was built.
        let old = old_cache_files(out, force)?;
        swap_in(
            &fresh,
            &parent.join(&name),
            &parent.join(format!(".{name}.old-{pid}")),
            old,
        )?;
        Ok(value)
    });
    if built.is_err() {
        // Only this process's own temporary folder, which holds nothing but what it wrote.
        let _ = std::fs::remove_dir_all(&fresh);
    }
    built
}

/// `out`'s parent folder and name, with links and `.`/`..` resolved where `out` exists, so
/// the temporary folders are its siblings on the same file system.
fn parent_and_name(out: &Path) -> Result<(PathBuf, String)> {
    let resolved = match std::fs::canonicalize(out) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::path::absolute(out)
            .map_err(|e| Error::io(format!("resolving {}", out.display()), e))?,
        Err(e) => return Err(Error::io(format!("resolving {}", out.display()), e)),
    };
    match (resolved.parent(), resolved.file_name()) {
        (Some(parent), Some(name)) => {
            Ok((parent.to_path_buf(), name.to_string_lossy().into_owned()))
        }
        _ => Err(Error::config(
            "--out",
            format!("{}: name a folder (not / or ..)", out.display()),
        )),
    }
}

/// Moves the finished cache `fresh` to `out`, moving an old cache (its `files`) aside to
/// `aside` first and deleting those files only after the new one is in place.
fn swap_in(fresh: &Path, out: &Path, aside: &Path, old: Option<Vec<String>>) -> Result<()> {
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to)
            .map_err(|e| Error::io(format!("moving {} to {}", from.display(), to.display()), e))
    };
    let Some(files) = old else {
        // An empty folder (or none): remove_dir fails rather than delete anything else.
        if out.exists() {
            std::fs::remove_dir(out)
                .map_err(|e| Error::io(format!("replacing {}", out.display()), e))?;
        }
        return rename(fresh, out);
    };
    rename(out, aside)?;
    if let Err(e) = rename(fresh, out) {
        let _ = std::fs::rename(aside, out);
        return Err(e);
    }
    for name in files {
        let f = aside.join(name);
        std::fs::remove_file(&f).map_err(|e| Error::io(format!("removing {}", f.display()), e))?;
    }
    std::fs::remove_dir(aside).map_err(|e| Error::io(format!("removing {}", aside.display()), e))
}

/// What `replace_cache` would delete in `out`: None when it is missing or empty, else the
/// names of the old cache's files, refusing when not `force` or when `out` holds anything
/// but a cache.
fn old_cache_files(out: &Path, force: bool) -> Result<Option<Vec<String>>> {
    let names = super::out_dir::entries("--out", out)?;
    if names.is_empty() {
        return Ok(None);
    }
    if !force {
        return Err(super::out_dir::not_empty(
            "--out",
            out,
            &names,
            "the cache in it",
        ));
    }
    let only_a_cache = "--force replaces only a cache made by `voxseg preprocess`: move it \
                        away or choose another --out";
    let index_path = out.join(INDEX_FILE);
    let index = std::fs::read(&index_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<CacheIndex>(&bytes).ok())
        .ok_or_else(|| {
            Error::config(
                "--out",
                format!(
                    "{} is not a voxseg cache (it has no {INDEX_FILE} that reads as one); {only_a_cache}",
                    out.display()
                ),
            )
        })?;
    let mut owned = vec![
        INDEX_FILE.to_string(),
        crate::train::run::CACHE_MODALITIES.into(),
    ];
    for id in index.cases.iter().filter(|id| check_id(id).is_ok()) {
        for suffix in ["image.f32", "label.u8", "fg.u32", "json"] {
            owned.push(format!("{id}.{suffix}"));
        }
    }
    if let Some(other) = names.iter().find(|n| !owned.contains(n)) {
        return Err(Error::config(
            "--out",
            format!(
                "{} is not part of the cache in {}; {only_a_cache}",
                out.join(other).display(),
                out.display()
            ),
        ));
    }
    Ok(Some(names))
}

/// A case id becomes part of file names: no separators, no leading dot, not empty.
fn check_id(id: &str) -> Result<()> {
    let bad = id.is_empty() || id.starts_with('.') || id.contains(['/', '\\', '\0']);
    if bad {
        return Err(Error::data(
            id,
            "case id cannot be used as a cache file name",
        ));
    }
    Ok(())
}

fn case_path(dir: &Path, id: &str, suffix: &str) -> PathBuf {
    dir.join(format!("{id}.{suffix}"))
}

fn json_error(path: &Path, e: serde_json::Error) -> Error {
    Error::file(path, e.to_string())
}

/// Writes one case's files into `dir` (which must exist).
pub fn write_cached_case(
    case: &PreprocessedCase,
    orientation: &str,
    spec: &PreprocessSpec,
    dir: &Path,
) -> Result<()> {
    check_id(&case.id)?;
    let dims = case.dims();
    let n = grid::voxels(dims);
    if case.channels.iter().any(|c| c.data.len() != n)
        || case.label.as_ref().is_some_and(|l| l.data.len() != n)
    {
        return Err(Error::data(
            &case.id,
            format!("channels or label do not match the grid {dims:?}"),
        ));
    }
    write_with(&case_path(dir, &case.id, "image.f32"), |w| {
        for ch in &case.channels {
            for v in &ch.data {
                w.write_all(&v.to_le_bytes())?;
            }
        }
        Ok(())
    })?;
    let mut counts = Vec::new();
    if let Some(label) = &case.label {
        write_bytes(&case_path(dir, &case.id, "label.u8"), &label.data)?;
        let fg = ForegroundIndex::from_labels(&label.data)?;
        counts = fg.classes.iter().map(Vec::len).collect();
        write_with(&case_path(dir, &case.id, "fg.u32"), |w| {
            for v in fg.classes.iter().flatten() {
                w.write_all(&v.to_le_bytes())?;
            }
            Ok(())
        })?;
    }
    let sidecar = CaseSidecar {
        id: case.id.clone(),
        dims,
        spacing: case.spacing,
        crop: case.crop.clone(),
        channels: case.channels.len(),
        background_value: case.background_value,
        has_label: case.label.is_some(),
        foreground_counts: counts,
        spec: spec.clone(),
        orientation: Some(orientation.to_string()),
    };
    let path = case_path(dir, &case.id, "json");
    let json = serde_json::to_vec_pretty(&sidecar).map_err(|e| json_error(&path, e))?;
    write_bytes(&path, &json)
}

/// Writes every case (preprocessed one at a time by the iterator, so the dataset never has
/// to fit in memory) and then the index with each case's source fingerprints (taken by
/// the caller before it read the files); returns the ids written.
pub fn write_cache<I>(cases: I, spec: &PreprocessSpec, out_dir: &Path) -> Result<Vec<String>>
where
    I: IntoIterator<Item = Result<CacheEntry>>,
{
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::io(format!("creating {}", out_dir.display()), e))?;
    let mut ids = Vec::new();
    let mut sources = BTreeMap::new();
    for entry in cases {
        let CacheEntry {
            case,
            sources: files,
            orientation,
        } = entry?;
        if ids.contains(&case.id) {
            return Err(Error::data(&case.id, "case appears twice"));
        }
        write_cached_case(&case, &orientation, spec, out_dir)?;
        sources.insert(case.id.clone(), files);
        ids.push(case.id);
    }
    let index = CacheIndex {
        version: FORMAT_VERSION,
        spec: spec.clone(),
        cases: ids.clone(),
        sources: Some(sources),
    };
    let path = out_dir.join(INDEX_FILE);
    let json = serde_json::to_vec_pretty(&index).map_err(|e| json_error(&path, e))?;
    write_bytes(&path, &json)?;
    Ok(ids)
}

fn map_file(path: &Path, want_bytes: usize) -> Result<Mmap> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .len();
    if len != want_bytes as u64 {
        return Err(Error::file(
            path,
            format!("{len} bytes, the sidecar implies {want_bytes}"),
        ));
    }
    // SAFETY: cache files are only ever replaced whole by an atomic rename, never modified in
    // place, so the mapped pages cannot change under us (a rewrite gets a new inode).
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(format!("mapping {}", path.display()), e))
}

/// A cached case, memory-mapped.
pub struct CachedCase {
    sidecar: CaseSidecar,
    image: Mmap,
    label: Option<Mmap>,
    foreground: Option<Mmap>,
}

fn as_words<T: bytemuck::Pod>(bytes: &[u8]) -> &[T] {
    // Maps start on a page boundary and the sizes were checked on opening.
    bytemuck::cast_slice(bytes)
}

impl CachedCase {
    pub fn open(dir: &Path, id: &str) -> Result<CachedCase> {
        if cfg!(target_endian = "big") {
            return Err(Error::data(
                "cache",
                "the cache's little-endian arrays are mapped directly; this host is big-endian",
            ));
        }
        check_id(id)?;
        let path = case_path(dir, id, "json");
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let sidecar: CaseSidecar =
            serde_json::from_slice(&bytes).map_err(|e| json_error(&path, e))?;
        if sidecar.id != id || sidecar.channels == 0 {
            return Err(Error::file(
                &path,
                format!(
                    "holds case '{}' with {} channels",
                    sidecar.id, sidecar.channels
                ),
            ));
        }
        let n = grid::voxels(sidecar.dims);
        let image = map_file(&case_path(dir, id, "image.f32"), n * sidecar.channels * 4)?;
        let (label, foreground) = if sidecar.has_label {
            let fg_total: usize = sidecar.foreground_counts.iter().sum();
            let fg_path = case_path(dir, id, "fg.u32");
            // An empty file cannot be mapped; a case without foreground has no positions.
            let fg = if fg_total > 0 {
                Some(map_file(&fg_path, fg_total * 4)?)
            } else {
                None
            };
            (Some(map_file(&case_path(dir, id, "label.u8"), n)?), fg)
        } else {
            (None, None)
        };
        let case = CachedCase {
            sidecar,
            image,
            label,
            foreground,
        };
        if let Some(bad) = case
            .foreground()
            .iter()
            .flat_map(|c| c.iter())
            .find(|&&v| v as usize >= n)
        {
            return Err(Error::file(
                case_path(dir, id, "fg.u32"),
                format!("position {bad} outside {n} voxels"),
            ));
        }
        Ok(case)
    }

    pub fn sidecar(&self) -> &CaseSidecar {
        &self.sidecar
    }

    /// Copies the case into memory.
    pub fn to_preprocessed(&self) -> PreprocessedCase {
        let s = &self.sidecar;
        PreprocessedCase {
            id: s.id.clone(),
            channels: self
                .channels()
                .into_iter()
                .map(|c| Volume::new(s.dims, s.spacing, c.to_vec()))
                .collect(),
            label: self
                .label()
                .map(|l| LabelVolume::new(s.dims, s.spacing, l.to_vec())),
            crop: s.crop.clone(),
            spacing: s.spacing,
            background_value: s.background_value,
        }
    }
}

impl PatchSource for CachedCase {
    fn id(&self) -> &str {
        &self.sidecar.id
    }
    fn dims(&self) -> [usize; 3] {
        self.sidecar.dims
    }
    fn background_value(&self) -> f32 {
        self.sidecar.background_value
    }
    fn channels(&self) -> Vec<&[f32]> {
        as_words::<f32>(&self.image)
            .chunks(grid::voxels(self.sidecar.dims))
            .collect()
    }
    fn label(&self) -> Option<&[u8]> {
        self.label.as_deref()
    }
    fn foreground(&self) -> Vec<&[u32]> {
        let all: &[u32] = self.foreground.as_deref().map_or(&[], as_words::<u32>);
        let mut at = 0;
        self.sidecar
            .foreground_counts
            .iter()
            .map(|&k| {
                at += k;
                &all[at - k..at]
            })
            .collect()
    }
}

/// Opens every case listed in `dir/cache.json`, after checking that their source files, in
/// the dataset folder `data`, are as they were when the cache was made.
pub fn open_cache(dir: &Path, data: &Path) -> Result<(PreprocessSpec, Vec<CachedCase>)> {
    let path = dir.join(INDEX_FILE);
    let bytes =
        std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let index: CacheIndex = serde_json::from_slice(&bytes).map_err(|e| json_error(&path, e))?;
    if index.version != FORMAT_VERSION {
        return Err(Error::file(
            &path,
            format!(
                "cache format {}, this build reads {FORMAT_VERSION}; rerun `voxseg preprocess` \
                 with --force to rebuild the cache",
                index.version
            ),
        ));
    }
    check_sources(&path, &index, data)?;
    let cases = index
        .cases
        .iter()
        .map(|id| CachedCase::open(dir, id))
        .collect::<Result<_>>()?;
    Ok((index.spec, cases))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::augment::AugmentSpec;
    use crate::data::loader::{make_batch, LoaderOptions};
    use crate::data::phantom::phantom_case;
    use crate::data::sampler::{InMemoryCase, SampleScratch};
    use std::sync::Arc;

    /// A case to cache in RAS, with these source fingerprints.
    fn entry(case: PreprocessedCase, sources: Vec<SourceFile>) -> CacheEntry {
        CacheEntry {
            case,
            sources,
            orientation: "RAS".into(),
        }
    }

    #[test]
    fn modification_times_read_as_utc_dates() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            utc_time(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            utc_time(1_704_067_199_000_000_000),
            "2023-12-31T23:59:59.000Z"
        );
        assert_eq!(
            utc_time(1_704_067_200_000_000_000),
            "2024-01-01T00:00:00.000Z"
        );
        assert_eq!(
            utc_time(1_709_251_199_999_999_999),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(
            utc_time(1_795_677_750_834_668_205),
            "2026-11-26T07:22:30.834Z"
        );
        assert_eq!(
            utc_time(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123Z"
        );
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("voxseg-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn cache_round_trip_gives_the_same_patches_as_memory() {
        let dir = temp_dir("round");
        let cases: Vec<PreprocessedCase> = (0..2)
            .map(|i| phantom_case(&format!("c{i}"), [18, 14, 12], 3, i))
            .collect();
        let spec = PreprocessSpec::default();
        let ids = write_cache(
            cases.iter().map(|c| Ok(entry(c.clone(), vec![]))),
            &spec,
            &dir,
        )
        .unwrap();
        assert_eq!(ids, vec!["c0", "c1"]);
        let (read_spec, cached) = open_cache(&dir, &dir).unwrap();
        assert_eq!(read_spec, spec);
        for (c, m) in cached.iter().zip(&cases) {
            let back = c.to_preprocessed();
            assert_eq!(back.channels, m.channels);
            assert_eq!(back.label, m.label);
            assert_eq!(back.crop, m.crop);
            let mem = InMemoryCase::new(m.clone()).unwrap();
            assert_eq!(c.foreground(), mem.foreground());
        }
        let in_memory: Vec<Arc<dyn PatchSource>> = cases
            .into_iter()
            .map(|c| Arc::new(InMemoryCase::new(c).unwrap()) as _)
            .collect();
        let from_disk: Vec<Arc<dyn PatchSource>> =
            cached.into_iter().map(|c| Arc::new(c) as _).collect();
        let opts = LoaderOptions {
            patch: [8, 8, 8],
            augment: AugmentSpec::default(),
            seed: 7,
            ..LoaderOptions::default()
        };
        let mut scratch = SampleScratch::default();
        for index in 0..4 {
            let a = make_batch(&in_memory, &opts, index, &mut scratch).unwrap();
            let b = make_batch(&from_disk, &opts, index, &mut scratch).unwrap();
            assert_eq!(a, b, "batch {index}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_files_and_bad_ids_are_errors() {
        let dir = temp_dir("bad");
        let case = phantom_case("t", [6, 5, 4], 1, 3);
        write_cache(
            [Ok(entry(case.clone(), vec![]))],
            &PreprocessSpec::default(),
            &dir,
        )
        .unwrap();
        let image = dir.join("t.image.f32");
        let bytes = std::fs::read(&image).unwrap();
        std::fs::write(&image, &bytes[..bytes.len() - 4]).unwrap();
        let err = open_cache(&dir, &dir).err().unwrap().to_string();
        assert!(
            err.contains("t.image.f32") && err.contains("476 bytes"),
            "{err}"
        );
        let mut evil = case;
        evil.id = "../escape".into();
        assert!(write_cache([Ok(entry(evil, vec![]))], &PreprocessSpec::default(), &dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A label byte past the case's classes (a damaged cache file) fails the patch that
    /// reads it, naming the case, rather than the batch's target encoding.
    #[test]
    fn a_damaged_label_byte_names_its_case() {
        let dir = temp_dir("label-byte");
        let case = phantom_case("d", [6, 5, 4], 1, 3);
        let classes = InMemoryCase::new(case.clone()).unwrap().foreground().len();
        write_cache([Ok(entry(case, vec![]))], &PreprocessSpec::default(), &dir).unwrap();
        let label = dir.join("d.label.u8");
        let mut bytes = std::fs::read(&label).unwrap();
        bytes.fill(200);
        std::fs::write(&label, &bytes).unwrap();
        let (_, cached) = open_cache(&dir, &dir).unwrap();
        let sources: Vec<Arc<dyn PatchSource>> =
            cached.into_iter().map(|c| Arc::new(c) as _).collect();
        let opts = LoaderOptions {
            patch: [4, 4, 4],
            augment: AugmentSpec::default(),
            seed: 7,
            ..LoaderOptions::default()
        };
        let err = make_batch(&sources, &opts, 0, &mut SampleScratch::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("d: a patch holds label class 200")
                && err.contains(&format!("0..={classes}")),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn changed_or_vanished_sources_are_refused_and_old_caches_still_open() {
        let dir = temp_dir("sources");
        let data = dir.join("data");
        std::fs::create_dir_all(data.join("c0")).unwrap();
        let source = data.join("c0").join("seg.nii.gz");
        std::fs::write(&source, b"labels").unwrap();
        let recorded = SourceFile::of(&data, &source).unwrap();
        assert_eq!(recorded.path, Path::new("c0").join("seg.nii.gz"));
        assert_eq!(recorded.bytes, 6);
        let cache = dir.join("cache");
        let case = phantom_case("c0", [6, 5, 4], 1, 3);
        write_cache(
            [Ok(entry(case, vec![recorded]))],
            &PreprocessSpec::default(),
            &cache,
        )
        .unwrap();
        open_cache(&cache, &data).unwrap();

        // The dataset and its cache moved together: the sources are found in the new place.
        let (moved, moved_cache) = (dir.join("data2"), dir.join("cache2"));
        std::fs::rename(&data, &moved).unwrap();
        std::fs::rename(&cache, &moved_cache).unwrap();
        let (data, cache) = (moved, moved_cache);
        let source = data.join("c0").join("seg.nii.gz");
        open_cache(&cache, &data).unwrap();
        // Another dataset folder without the file is refused.
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        let err = open_cache(&cache, &other).err().unwrap().to_string();
        assert!(err.contains("seg.nii.gz no longer exists"), "{err}");

        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        std::fs::File::options()
            .write(true)
            .open(&source)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let err = open_cache(&cache, &data).err().unwrap().to_string();
        assert!(
            err.contains("case c0: source")
                && err.contains("seg.nii.gz changed since the cache was made")
                && err.contains("rerun `voxseg preprocess`"),
            "{err}"
        );

        // A cache older builds made records absolute paths: still checked where they point.
        let index_path = cache.join(INDEX_FILE);
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
        let absolute = std::fs::canonicalize(&source).unwrap();
        index["sources"]["c0"][0]["path"] = serde_json::json!(absolute);
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        let err = open_cache(&cache, &other).err().unwrap().to_string();
        assert!(err.contains("seg.nii.gz changed since the cache"), "{err}");
        std::fs::remove_file(&source).unwrap();
        let err = open_cache(&cache, &data).err().unwrap().to_string();
        assert!(err.contains("seg.nii.gz no longer exists"), "{err}");

        // A cache written before fingerprints existed has no "sources": still readable.
        index.as_object_mut().unwrap().remove("sources");
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        assert_eq!(open_cache(&cache, &data).unwrap().1.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replace_cache_needs_force_keeps_the_old_cache_on_failure_and_replaces_only_a_cache() {
        let dir = temp_dir("room");
        let cache = dir.join("cache");
        let spec = PreprocessSpec::default();
        let write = |ids: &[&str]| {
            let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            move |d: &Path| {
                let cases = ids
                    .iter()
                    .map(|id| Ok(entry(phantom_case(id, [6, 5, 4], 1, 3), vec![])));
                write_cache(cases, &PreprocessSpec::default(), d)
            }
        };
        replace_cache(&cache, false, write(&["c0", "c1"])).unwrap();
        let err = replace_cache(&cache, false, write(&["c2"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not empty") && err.contains("--force"),
            "{err}"
        );

        // A build that fails leaves the old cache whole and no temporary folder behind.
        let failed = replace_cache(&cache, true, |d| {
            write_cache(
                [Ok(entry(phantom_case("c9", [6, 5, 4], 1, 3), vec![]))],
                &spec,
                d,
            )?;
            Err::<(), _>(Error::data("c10", "unreadable"))
        });
        assert!(failed.is_err());
        assert_eq!(open_cache(&cache, &dir).unwrap().1.len(), 2);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

        replace_cache(&cache, true, write(&["c2"])).unwrap();
        let ids: Vec<String> = open_cache(&cache, &dir)
            .unwrap()
            .1
            .iter()
            .map(|c| c.sidecar().id.clone())
            .collect();
        assert_eq!(ids, ["c2"]);
        let left = crate::data::out_dir::entries("--out", &cache).unwrap();
        assert_eq!(
            left,
            [
                "c2.fg.u32",
                "c2.image.f32",
                "c2.json",
                "c2.label.u8",
                "cache.json"
            ]
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

        // Anything that is not the cache's own is never deleted, nor a folder without one.
        std::fs::write(cache.join("notes.txt"), b"mine").unwrap();
        let err = replace_cache(&cache, true, write(&["c3"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("notes.txt is not part of the cache"), "{err}");
        std::fs::remove_file(cache.join(INDEX_FILE)).unwrap();
        std::fs::remove_file(cache.join("notes.txt")).unwrap();
        let err = replace_cache(&cache, true, write(&["c3"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a voxseg cache"), "{err}");
        assert_eq!(
            crate::data::out_dir::entries("--out", &cache)
                .unwrap()
                .len(),
            4
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
