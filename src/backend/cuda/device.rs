//! The device: a CUDA context and stream (cudarc, driver API loaded at run time), the
//! kernel modules embedded by build.rs loaded once per process and device (from SASS where
//! it was assembled for this device, else from PTX), and the buffer pool.
use super::pool::{Pool, PoolHold, PoolStats, RawAlloc};
use super::ptx::PTX_MODULES;
use super::sass::{sass_for, sass_turned_off, SASS_ENV};
pub use super::storage::CudaStorage;
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtrMut, DriverError,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Whether build.rs compiled the kernels (nvcc was found).
pub const BUILT_WITH_PTX: bool = cfg!(voxseg_has_ptx);

pub(super) fn driver_error(what: &str, e: DriverError) -> Error {
    Error::Backend {
        backend: "cuda",
        msg: format!("{what}: {e}"),
    }
}

/// Raw allocations on the backend's stream.
pub struct StreamAlloc {
    stream: Arc<CudaStream>,
}

impl RawAlloc for StreamAlloc {
    type Block = CudaSlice<f32>;
    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        // SAFETY: the pool hands blocks out as uninitialised; every user writes before it
        // reads (uploads, zero fills, kernel outputs).
        unsafe { self.stream.alloc::<f32>(len) }
            .map_err(|e| driver_error(&format!("allocating {len} f32"), e))
    }
    fn fill_nan(&self, block: &mut CudaSlice<f32>) -> Result<()> {
        // The raw driver call below needs the context current on this thread.
        self.stream
            .context()
            .bind_to_thread()
            .map_err(|e| driver_error("binding the context", e))?;
        let bytes = block.num_bytes();
        let (ptr, _sync) = block.device_ptr_mut(&self.stream);
        // SAFETY: `ptr` is the start of `bytes` bytes owned by `block`, on this stream;
        // all-ones bytes are a NaN in f32.
        unsafe {
            cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, self.stream.cu_stream())
        }
        .map_err(|e| driver_error("poisoning a buffer", e))
    }
}

/// Why this process cannot use a CUDA device, or None when it can try.
fn unavailable_reason() -> Option<String> {
    if !BUILT_WITH_PTX {
        return Some(
            "this binary was built without CUDA kernels (nvcc was not found at build time; \
             see scripts/install-cuda-toolchain.sh)"
                .into(),
        );
    }
    // SAFETY: only tries to open the driver library; cudarc panics on any driver call
    // when it is missing, so this check must come first.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some("the CUDA driver library (libcuda) was not found".into());
    }
    None
}

/// The name of device 0 when CUDA can be used, or why not (for `--device auto`).
pub fn cuda_available() -> std::result::Result<String, String> {
    if let Some(why) = unavailable_reason() {
        return Err(why);
    }
    match CudaContext::device_count() {
        Ok(0) => return Err("no CUDA device found".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("CUDA driver: {e}")),
    }
    Cuda::new(0)
        .map(|c| c.device_name().to_string())
        .map_err(|e| e.to_string())
}

struct Inner {
    ordinal: usize,
    device: String,
    compute_capability: (i32, i32),
    sm_count: u32,
    stream: Arc<CudaStream>,
    pool: Arc<Pool<StreamAlloc>>,
    /// A graph capture of `stream` is in progress (timing): host copies are refused.
    capturing: AtomicBool,
    modules: Mutex<HashMap<&'static str, (Arc<CudaModule>, ModuleCode)>>,
    /// By (module, kernel): a build variant's module holds kernels of the same names.
    functions: Mutex<HashMap<(&'static str, &'static str), CudaFunction>>,
}

/// The CUDA backend (f32). Cheap to clone: every clone shares one context, stream, module
/// cache and pool, and so does every `Cuda::new` of the same device in the process.
#[derive(Clone)]
pub struct Cuda {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}

impl Cuda {
    /// The backend on device `ordinal`, created on first use in this process.
    pub fn new(ordinal: usize) -> Result<Self> {
        static DEVICES: OnceLock<Mutex<HashMap<usize, Cuda>>> = OnceLock::new();
        let mut devices = DEVICES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(c) = devices.get(&ordinal) {
            return Ok(c.clone());
        }
        let cuda = Self::open(ordinal)?;
        devices.insert(ordinal, cuda.clone());
        Ok(cuda)
    }

    fn open(ordinal: usize) -> Result<Self> {
        if let Some(why) = unavailable_reason() {
            return Err(Error::Backend {
                backend: "cuda",
                msg: why,
            });
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| driver_error(&format!("opening device {ordinal}"), e))?;
        // One stream orders every kernel, copy and free, so cross-stream events are not
        // needed; without them each allocation saves two event creations.
        // SAFETY: the stream created below is the only one this backend uses on this
        // context (the context's legacy default stream is never used).
        unsafe { ctx.disable_event_tracking() };
        let device = ctx.name().map_err(|e| driver_error("device name", e))?;
        let compute_capability = ctx
            .compute_capability()
            .map_err(|e| driver_error("compute capability", e))?;
        let sm_count = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(|e| driver_error("SM count", e))? as u32;
        // A stream of our own rather than the legacy default stream, which CUDA cannot
        // capture into a graph (benchmark timing captures it).
        let stream = ctx
            .new_stream()
            .map_err(|e| driver_error("creating a stream", e))?;
        let pool = Pool::from_env(StreamAlloc {
            stream: stream.clone(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                ordinal,
                device,
                compute_capability,
                sm_count: sm_count.max(1),
                stream,
                pool,
                capturing: AtomicBool::new(false),
                modules: Mutex::new(HashMap::new()),
                functions: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn device_name(&self) -> &str {
        &self.inner.device
    }
    /// Free device memory in bytes (what planning sizes the patch and batch for), plus what
    /// this process's pool holds cached and could reuse.
    pub fn free_memory(&self) -> Result<u64> {
        let (free, _total) = self
            .inner
            .stream
            .context()
            .mem_get_info()
            .map_err(|e| driver_error("free memory", e))?;
        let cached = self
            .pool_stats()
            .reserved_bytes
            .saturating_sub(self.pool_stats().allocated_bytes);
        Ok(free as u64 + cached)
    }
    pub fn ordinal(&self) -> usize {
        self.inner.ordinal
    }
    /// (major, minor), e.g. (9, 0) for an H100.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.inner.compute_capability
    }
    /// False when `VOXSEG_POOL=off` disabled the cache.
    pub fn pool_caching(&self) -> bool {
        self.inner.pool.caching()
    }
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }
    /// Starts the pool's peaks over from what it holds now (see `Pool::reset_peaks`).
    pub fn reset_pool_peaks(&self) {
        self.inner.pool.reset_peaks()
    }
    /// Frees the pool's cached blocks; returns the bytes released.
    pub fn release_cached(&self) -> u64 {
        self.inner.pool.release_cached()
    }
    /// NaN-fill every buffer handed out from now on (parity tests: an output element a
    /// kernel forgets to write stays NaN).
    pub fn poison_new_buffers(&self, on: bool) {
        self.inner.pool.set_poison(on);
    }

    pub(super) fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    /// Marks a graph capture of the stream as begun or ended. While one is in progress,
    /// uploads and downloads fail: a captured copy from or to pageable host memory would
    /// replay against a host buffer freed long before.
    pub(super) fn set_capturing(&self, on: bool) {
        self.inner.capturing.store(on, Ordering::SeqCst);
    }

    /// A graph capture of the stream is in progress: kernels are recorded, not run.
    pub(super) fn capturing(&self) -> bool {
        self.inner.capturing.load(Ordering::SeqCst)
    }

    fn refuse_while_capturing(&self, what: &str) -> Result<()> {
        if self.capturing() {
            return Err(Error::Backend {
                backend: "cuda",
                msg: format!("{what} from or to the host during a graph capture"),
            });
        }
        Ok(())
    }

    /// Keeps the pool from allocating device memory or freeing its cache until dropped.
    pub(super) fn hold_pool(&self) -> PoolHold<StreamAlloc> {
        self.inner.pool.hold()
    }

    /// Blocks to aim for in split reductions: a few per SM.
    pub(super) fn target_blocks(&self) -> u32 {
        4 * self.inner.sm_count
    }
    /// Grid-stride launches: one wave of 256-thread blocks (8 per SM).
    pub(super) fn max_elementwise_blocks(&self) -> u32 {
        8 * self.inner.sm_count
    }

    pub(super) fn alloc(&self, len: usize) -> Result<CudaStorage> {
        Ok(CudaStorage::new(self.inner.pool.alloc(len)?))
    }

    /// `len` 8-byte values (f64 partials, u64 counts) of scratch, as a pool block of
    /// 2 * len f32 (blocks are whole device allocations, so 8-byte aligned).
    pub(super) fn alloc_f64(&self, len: usize) -> Result<CudaStorage> {
        self.alloc(2 * len)
    }

    /// A block of 8-byte values (see `alloc_f64`) read back as `T` (f64 or u64).
    pub(super) fn download_pod<T: bytemuck::Pod>(&self, storage: &CudaStorage) -> Result<Vec<T>> {
        Ok(bytemuck::pod_collect_to_vec(&self.download(storage)?))
    }

    /// The kernel `name` of module `module` (kernels/<module>.cu), loaded once.
    pub(super) fn function(
        &self,
        module: &'static str,
        name: &'static str,
    ) -> Result<CudaFunction> {
        if let Some(f) = self.lock_functions().get(&(module, name)) {
            return Ok(f.clone());
        }
        let (m, _) = self.module(module)?;
        let f = m
            .load_function(name)
            .map_err(|e| driver_error(&format!("loading kernel {name} from module {module}"), e))?;
        self.lock_functions().insert((module, name), f.clone());
        Ok(f)
    }

    fn lock_functions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(&'static str, &'static str), CudaFunction>> {
        self.inner
            .functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Loads every embedded module this device can run (the sm_90a ones only on compute
    /// capability 9.0) and returns their names with the code each was loaded from. The
    /// driver compiles a module's PTX for the device when it is first loaded, and keeps the
    /// result in its cache (`CUDA_CACHE_PATH`): loading all at once fails early for a
    /// module the driver cannot compile, and lets processes started after it find them
    /// compiled. A module with SASS for this device needs no compiling.
    pub fn load_every_module(&self) -> Result<Vec<(&'static str, ModuleCode)>> {
        let hopper = self.compute_capability() == (9, 0);
        let mut loaded = Vec::new();
        for &(name, ptx) in PTX_MODULES {
            if hopper || !targets_sm90a(ptx) {
                loaded.push((name, self.module(name)?.1));
            }
        }
        Ok(loaded)
    }

    fn module(&self, module: &'static str) -> Result<(Arc<CudaModule>, ModuleCode)> {
        let mut modules = self.inner.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = modules.get(module) {
            return Ok(m.clone());
        }
        let ptx = PTX_MODULES
            .iter()
            .find(|(name, _)| *name == module)
            .map(|(_, ptx)| *ptx)
            .ok_or_else(|| Error::Backend {
                backend: "cuda",
                msg: format!("no PTX module {module} was built"),
            })?;
        let context = self.stream().context();
        let sass = sass_for(module, self.compute_capability()).filter(|_| !sass_turned_off());
        let from_sass = sass.and_then(|(arch, cubin)| {
            match context.load_module(cudarc::nvrtc::Ptx::from_binary(cubin.to_vec())) {
                Ok(m) => Some((m, ModuleCode::Sass)),
                // The PTX still runs: say why the machine code did not, and go on.
                Err(e) => {
                    eprintln!(
                        "warning: {module}'s {arch} machine code did not load ({e}); the \
                         driver compiles its PTX instead ({SASS_ENV}=off skips the machine code)"
                    );
                    None
                }
            }
        });
        let loaded = match from_sass {
            Some(loaded) => loaded,
            None => {
                let m = context
                    .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                    .map_err(|e| driver_error(&format!("loading {module}.ptx"), e))?;
                (m, ModuleCode::Ptx)
            }
        };
        modules.insert(module, loaded.clone());
        Ok(loaded)
    }
}

/// What a kernel module was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleCode {
    /// Machine code build.rs assembled for this device's architecture (`VOXSEG_CUDA_SASS`).
    Sass,
    /// PTX, compiled by the driver when loaded (or taken from its cache).
    Ptx,
}

impl BackendBase for Cuda {
    type E = f32;
    type Storage = CudaStorage;

    fn name(&self) -> String {
        let (major, minor) = self.inner.compute_capability;
        format!(
            "cuda:{} ({}, sm_{major}{minor}, f32)",
            self.inner.ordinal, self.inner.device
        )
    }
    fn memory_peak_bytes(&self) -> Option<u64> {
        Some(self.pool_stats().peak_allocated_bytes)
    }
    fn upload(&self, data: &[f32]) -> Result<CudaStorage> {
        self.refuse_while_capturing("upload")?;
        let mut s = self.alloc(data.len())?;
        if !data.is_empty() {
            self.stream()
                .memcpy_htod(data, s.block_mut())
                .map_err(|e| driver_error("upload", e))?;
        }
        Ok(s)
    }
    fn download(&self, storage: &CudaStorage) -> Result<Vec<f32>> {
        self.refuse_while_capturing("download")?;
        if storage.is_empty() {
            return Ok(Vec::new());
        }
        self.stream()
            .clone_dtoh(&storage.block().slice(..storage.len()))
            .map_err(|e| driver_error("download", e))
    }
    fn zeros(&self, len: usize) -> Result<CudaStorage> {
        let mut s = self.alloc(len)?;
        if len > 0 {
            self.stream()
                .memset_zeros(&mut s.block_mut().slice_mut(..len))
                .map_err(|e| driver_error("zero fill", e))?;
        }
        Ok(s)
    }
    fn copy(&self, storage: &CudaStorage) -> Result<CudaStorage> {
        let len = storage.len();
        let mut s = self.alloc(len)?;
        if len > 0 {
            self.stream()
                .memcpy_dtod(
                    &storage.block().slice(..len),
                    &mut s.block_mut().slice_mut(..len),
                )
                .map_err(|e| driver_error("device copy", e))?;
        }
        Ok(s)
    }
    fn storage_len(storage: &CudaStorage) -> usize {
        storage.len()
    }
    fn synchronize(&self) -> Result<()> {
        self.stream()
            .synchronize()
            .map_err(|e| driver_error("synchronize", e))
    }
}

/// Whether PTX text targets sm_90a (its `.target` line), code that runs on compute
/// capability 9.0 only (kernels whose first line says `// voxseg-arch: sm_90a`).
pub fn targets_sm90a(ptx: &str) -> bool {
    ptx.lines()
        .find_map(|line| line.trim().strip_prefix(".target "))
        .is_some_and(|target| target.split(',').next().map(str::trim) == Some("sm_90a"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_and_opening_agree_without_panicking() {
        // On a machine without a driver this must be an explanation, not cudarc's panic.
        match cuda_available() {
            Ok(name) => {
                assert!(!name.is_empty());
                let cuda = Cuda::new(0).expect("available device opens");
                assert_eq!(cuda.device_name(), name);
                assert!(cuda.name().starts_with("cuda:0 ("), "{}", cuda.name());
            }
            Err(why) => {
                assert!(!why.is_empty());
                let err = Cuda::new(0).expect_err("unavailable device must not open");
                assert!(
                    matches!(
                        err,
                        Error::Backend {
                            backend: "cuda",
                            ..
                        }
                    ),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn the_wgmma_modules_alone_target_sm90a() {
        let hopper_only: Vec<&str> = PTX_MODULES
            .iter()
            .filter(|(_, ptx)| targets_sm90a(ptx))
            .map(|(name, _)| *name)
            .collect();
        let expected: &[&str] = if PTX_MODULES.is_empty() {
            &[]
        } else {
            &["conv3d_wgmma", "conv3d_wgmma_l1"]
        };
        assert_eq!(hopper_only, expected);
        assert!(targets_sm90a("//\n.version 9.0\n.target sm_90a\n"));
        assert!(!targets_sm90a(".version 9.0\n.target sm_80\n"));
        assert!(!targets_sm90a(".target sm_90\n"));
    }
}
