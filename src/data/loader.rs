//! The background loader: worker threads build augmented batches into bounded queues while
//! the device trains. Batch `b`'s randomness comes only from (seed, b), and worker `w` builds
//! the batches `b` with `b % workers == w` into its own queue, read in turn: so the stream of
//! batches is the same for any number of workers, and memory stays bounded by the queues.
//! A worker's error or panic is delivered by the next `next()`; dropping the loader closes the
//! queues, which wakes every blocked worker, and joins them.
use super::augment::AugmentSpec;
use super::sampler::{sample_patch, PatchSource, SampleScratch};
use crate::error::{Error, Result};
use crate::rng::{philox4x32, Rng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A batch of training patches.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// NDHWC `[n, d, h, w, channels]`.
    pub images: Vec<f32>,
    /// `[n, d, h, w]`, internal classes.
    pub labels: Vec<u8>,
    pub n: usize,
    /// (d, h, w).
    pub patch: [usize; 3],
    pub channels: usize,
    /// Position of this batch in the stream.
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoaderOptions {
    pub batch_size: usize,
    /// (d, h, w).
    pub patch: [usize; 3],
    pub foreground_fraction: f64,
    pub augment: AugmentSpec,
    pub seed: u64,
    pub workers: usize,
    /// Batches made ahead in total (spread over the workers' queues).
    pub queue_depth: usize,
    /// Index of the first batch delivered (to resume a run where it stopped).
    pub first_batch: u64,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self {
            batch_size: 2,
            patch: [128, 128, 128],
            foreground_fraction: 1.0 / 3.0,
            augment: AugmentSpec::default(),
            seed: 0,
            workers: 2,
            queue_depth: 4,
            first_batch: 0,
        }
    }
}

/// The generator of batch `index`: depends only on (seed, index).
fn batch_rng(seed: u64, index: u64) -> Rng {
    let w = philox4x32(
        [index as u32, (index >> 32) as u32, 0x000B_A7C4, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    Rng::new((w[0] as u64) | ((w[1] as u64) << 32))
}

/// Builds batch `index`: for each slot, a uniformly chosen case and a patch drawn from it.
pub fn make_batch(
    sources: &[Arc<dyn PatchSource>],
    opts: &LoaderOptions,
    index: u64,
    scratch: &mut SampleScratch,
) -> Result<Batch> {
    let channels = sources
        .first()
        .ok_or_else(|| Error::data("make_batch", "no cases to sample from"))?
        .channels()
        .len();
    let voxels: usize = opts.patch.iter().product();
    let mut planar = std::mem::take(&mut scratch.patch);
    planar.resize(voxels * channels, 0.0);
    // Every element of both buffers is overwritten below, so recycled ones need no clearing.
    let (mut images, mut labels) = scratch.spare.take().unwrap_or_default();
    images.resize(opts.batch_size * voxels * channels, 0.0);
    labels.resize(opts.batch_size * voxels, 0);
    let rng = batch_rng(opts.seed, index);
    for slot in 0..opts.batch_size {
        let mut rng = rng.fork(slot as u32);
        let src = &sources[rng.below(sources.len())];
        let label = &mut labels[slot * voxels..(slot + 1) * voxels];
        sample_patch(
            src.as_ref(),
            opts.patch,
            opts.foreground_fraction,
            &opts.augment,
            &mut rng,
            &mut planar,
            label,
            scratch,
        )?;
        // Channel-major to channels fastest.
        let out = &mut images[slot * voxels * channels..(slot + 1) * voxels * channels];
        for (v, px) in out.chunks_exact_mut(channels).enumerate() {
            for (c, dst) in px.iter_mut().enumerate() {
                *dst = planar[c * voxels + v];
            }
        }
    }
    scratch.patch = planar;
    Ok(Batch {
        images,
        labels,
        n: opts.batch_size,
        patch: opts.patch,
        channels,
        index,
    })
}

fn check(sources: &[Arc<dyn PatchSource>], opts: &LoaderOptions) -> Result<()> {
    let bad = |msg: String| Err(Error::config("loader options", msg));
    if opts.batch_size == 0 || opts.workers == 0 || opts.queue_depth == 0 {
        return bad(format!(
            "batch size {}, workers {} and queue depth {} must be positive",
            opts.batch_size, opts.workers, opts.queue_depth
        ));
    }
    if opts.patch.contains(&0) {
        return bad(format!("patch {:?} has a zero size", opts.patch));
    }
    if !(0.0..=1.0).contains(&opts.foreground_fraction) {
        return bad(format!(
            "foreground fraction {} is not in [0, 1]",
            opts.foreground_fraction
        ));
    }
    let first = sources
        .first()
        .ok_or_else(|| Error::data("loader", "no training cases"))?;
    let channels = first.channels().len();
    for src in sources {
        if src.channels().len() != channels {
            return Err(Error::data(
                src.id(),
                format!(
                    "{} channels, case {} has {channels}",
                    src.channels().len(),
                    first.id()
                ),
            ));
        }
        if src.label().is_none() {
            return Err(Error::data(src.id(), "a training case needs a label"));
        }
    }
    Ok(())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Worker `w` of `workers`: builds its share of the stream until told to stop, its queue is
/// closed, or a batch fails (the failure is sent, then the worker ends).
fn run_worker(
    sources: Arc<[Arc<dyn PatchSource>]>,
    opts: LoaderOptions,
    w: usize,
    tx: SyncSender<Result<Batch>>,
    shared: Arc<Shared>,
) {
    let mut scratch = SampleScratch::default();
    let mut index = opts.first_batch + w as u64;
    while !shared.stop.load(Ordering::Relaxed) {
        if scratch.spare.is_none() {
            scratch.spare = shared.take_spare();
        }
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            make_batch(&sources, &opts, index, &mut scratch)
        }));
        let result = made.unwrap_or_else(|p| {
            Err(Error::data(
                format!("loader worker {w}, batch {index}"),
                format!("panicked: {}", panic_message(p.as_ref())),
            ))
        });
        let failed = result.is_err();
        if tx.send(result).is_err() || failed {
            return;
        }
        index += opts.workers as u64;
    }
}

/// State the loader shares with its workers.
struct Shared {
    stop: AtomicBool,
    /// Buffers of consumed batches handed back with `Loader::recycle`.
    spares: Mutex<Vec<(Vec<f32>, Vec<u8>)>>,
    max_spares: usize,
}

impl Shared {
    fn spares(&self) -> std::sync::MutexGuard<'_, Vec<(Vec<f32>, Vec<u8>)>> {
        // The lock is held only for a push or a pop, which cannot leave the list broken.
        self.spares
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    fn take_spare(&self) -> Option<(Vec<f32>, Vec<u8>)> {
        self.spares().pop()
    }
}

pub struct Loader {
    queues: Vec<Receiver<Result<Batch>>>,
    next: u64,
    first: u64,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Loader {
    /// Starts the workers; batches come out in order from `opts.first_batch`.
    pub fn new(sources: Vec<Arc<dyn PatchSource>>, opts: LoaderOptions) -> Result<Loader> {
        check(&sources, &opts)?;
        let sources: Arc<[Arc<dyn PatchSource>]> = sources.into();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            spares: Mutex::new(Vec::new()),
            max_spares: opts.workers + opts.queue_depth,
        });
        let per_queue = opts.queue_depth.div_ceil(opts.workers);
        let mut queues = Vec::with_capacity(opts.workers);
        let mut workers = Vec::with_capacity(opts.workers);
        for w in 0..opts.workers {
            let (tx, rx) = sync_channel(per_queue);
            let (sources, opts, shared) = (sources.clone(), opts.clone(), shared.clone());
            let handle = std::thread::Builder::new()
                .name(format!("voxseg-loader-{w}"))
                .spawn(move || run_worker(sources, opts, w, tx, shared))
                .map_err(|e| Error::io("starting a loader worker", e))?;
            queues.push(rx);
            workers.push(handle);
        }
        Ok(Loader {
            queues,
            next: opts.first_batch,
            first: opts.first_batch,
            shared,
            workers,
        })
    }

    /// The next batch in the stream, or the error that stopped the worker making it.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Batch> {
        let w = ((self.next - self.first) % self.queues.len() as u64) as usize;
        match self.queues[w].recv() {
            Ok(Ok(batch)) => {
                self.next += 1;
                Ok(batch)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::data(
                "loader",
                format!(
                    "worker {w} has stopped (after an earlier error); batch {} cannot be made",
                    self.next
                ),
            )),
        }
    }

    /// Hands a consumed batch's buffers back for reuse (optional: call it once the batch has
    /// been copied to the device). The batch stream does not depend on it.
    pub fn recycle(&self, batch: Batch) {
        let mut spares = self.shared.spares();
        if spares.len() < self.shared.max_spares {
            spares.push((batch.images, batch.labels));
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Closing the queues makes any worker blocked on a full queue return.
        self.queues.clear();
        for handle in self.workers.drain(..) {
            // A worker's panic was caught and reported; nothing is left to do with a join error.
            let _ = handle.join();
        }
    }
}

/// Batches per second the loader delivers at 128^3 patches, batch 2, 4 channels and the full
/// nnU-Net-default augmentation, from in-memory phantom cases of BraTS's cropped size, with
/// `workers` threads, timed over `batches` batches after warm-up batches that fill the queues.
/// Each batch is recycled as a trainer would after uploading it.
pub fn loader_benchmark(workers: usize, batches: usize, seed: u64) -> Result<f64> {
    if batches == 0 {
        return Err(Error::config("benchmark batches", "must be positive"));
    }
    let sources: Vec<Arc<dyn PatchSource>> = (0..4)
        .map(|i| {
            super::phantom::phantom_case(&format!("phantom_{i}"), [136, 170, 140], 4, seed + i)
        })
        .map(|c| Ok(Arc::new(super::sampler::InMemoryCase::new(c)?) as Arc<dyn PatchSource>))
        .collect::<Result<_>>()?;
    let opts = LoaderOptions {
        workers,
        queue_depth: 2 * workers,
        seed,
        ..LoaderOptions::default()
    };
    let warmup = opts.queue_depth + opts.workers;
    let mut loader = Loader::new(sources, opts)?;
    // Warm-up: the first batches fill the queues and allocate the buffers that are recycled.
    for _ in 0..warmup {
        let warm = loader.next()?;
        loader.recycle(warm);
    }
    let start = std::time::Instant::now();
    for _ in 0..batches {
        let batch = loader.next()?;
        loader.recycle(batch);
    }
    Ok(batches as f64 / start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::phantom::phantom_case;
    use crate::data::sampler::InMemoryCase;
    use std::time::Duration;

    fn sources() -> Vec<Arc<dyn PatchSource>> {
        (0..3)
            .map(|i| {
                Arc::new(
                    InMemoryCase::new(phantom_case(&format!("p{i}"), [20, 18, 16], 2, i)).unwrap(),
                ) as _
            })
            .collect()
    }

    fn opts(workers: usize) -> LoaderOptions {
        LoaderOptions {
            batch_size: 2,
            patch: [8, 12, 10],
            workers,
            queue_depth: 3,
            seed: 42,
            ..LoaderOptions::default()
        }
    }

    #[test]
    fn same_batches_with_one_and_three_workers() {
        let take = |workers, first_batch| {
            let mut l = Loader::new(
                sources(),
                LoaderOptions {
                    first_batch,
                    ..opts(workers)
                },
            )
            .unwrap();
            (0..7)
                .map(|_| {
                    let b = l.next().unwrap();
                    // Recycling buffers must not change what later batches hold.
                    if workers == 3 {
                        l.recycle(b.clone());
                    }
                    b
                })
                .collect::<Vec<_>>()
        };
        let one = take(1, 0);
        let three = take(3, 0);
        assert_eq!(one, three);
        assert_eq!(
            one.iter().map(|b| b.index).collect::<Vec<_>>(),
            (0..7).collect::<Vec<_>>()
        );
        assert_ne!(one[0].images, one[1].images);
        // Resuming at batch 4 continues the same stream.
        assert_eq!(take(2, 4)[..3], one[4..7]);
        let b = &one[0];
        assert_eq!(
            (b.images.len(), b.labels.len()),
            (2 * 8 * 12 * 10 * 2, 2 * 8 * 12 * 10)
        );
        assert!(b.labels.iter().all(|&l| l <= 3));
    }

    /// A case that makes workers fail: its foreground lookup panics, or its label is short.
    struct Broken {
        inner: InMemoryCase,
        panic: bool,
    }

    impl PatchSource for Broken {
        fn id(&self) -> &str {
            "broken"
        }
        fn dims(&self) -> [usize; 3] {
            self.inner.dims()
        }
        fn background_value(&self) -> f32 {
            0.0
        }
        fn channels(&self) -> Vec<&[f32]> {
            self.inner.channels()
        }
        fn label(&self) -> Option<&[u8]> {
            self.inner
                .label()
                .map(|l| if self.panic { l } else { &l[1..] })
        }
        fn foreground(&self) -> Vec<&[u32]> {
            if self.panic {
                panic!("foreground index lost");
            }
            self.inner.foreground()
        }
    }

    /// Runs `f` on another thread and fails if it does not finish in time (no hang).
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(secs))
            .expect("timed out: the loader hung")
    }

    fn first_two_errors(panic: bool) -> (String, String) {
        within(20, move || {
            let case = phantom_case("b", [20, 18, 16], 2, 9);
            let broken: Arc<dyn PatchSource> = Arc::new(Broken {
                inner: InMemoryCase::new(case).unwrap(),
                panic,
            });
            let mut l = Loader::new(vec![broken], opts(3)).unwrap();
            let first = l.next().unwrap_err().to_string();
            let second = l.next().unwrap_err().to_string();
            (first, second)
        })
    }

    #[test]
    fn a_worker_panic_or_error_stops_training_with_that_error() {
        let (first, second) = first_two_errors(true);
        assert!(
            first.contains("panicked") && first.contains("foreground index lost"),
            "{first}"
        );
        assert!(second.contains("stopped"), "{second}");
        let (first, second) = first_two_errors(false);
        assert!(
            first.contains("broken") && first.contains("label has 5759 values"),
            "{first}"
        );
        assert!(second.contains("stopped"), "{second}");
    }

    #[test]
    fn dropping_the_loader_stops_every_worker() {
        let srcs = sources();
        let probe = srcs[0].clone();
        within(20, move || {
            let mut l = Loader::new(
                srcs,
                LoaderOptions {
                    queue_depth: 1,
                    ..opts(3)
                },
            )
            .unwrap();
            l.next().unwrap();
            // Give the workers time to fill their queues and block on them.
            std::thread::sleep(Duration::from_millis(200));
            drop(l);
        });
        assert_eq!(
            Arc::strong_count(&probe),
            1,
            "a worker still holds the cases"
        );
    }
}
