//! `Conv3dKernel` for `Cuda`: each pass is one launch of the kernel its plan names
//! (`conv_plan`), followed by a sum over split partials when the plan splits the reduction.
//! On the tensor cores (TF32, BF16) it reads its operands packed: the packs kept beside them
//! (`storage`), else packs that a pack launch makes into pool buffers and, unless
//! `VOXSEG_PACK_CACHE=off`, keeps there. Every launch is checked and reported as
//! `Error::Backend` naming the kernel; buffer lengths are checked as the CPU backend checks
//! them.
//!
//! The arithmetic is chosen per device with [`Cuda::set_conv_precision`], initially from
//! `VOXSEG_CONV_PRECISION` (f32, tf32 or bf16; f32 when unset). On compute capability 9.0
//! (H100, H200) the sm_90a wgmma kernels run the TF32/BF16 passes where the plan measured
//! them faster than mma.sync (most of them; see `ConvPlan::new`): [`Cuda::set_wgmma`],
//! initially on there unless `VOXSEG_WGMMA=0`. They passed the parity tests on an H100 on
//! 2026-11-26. Three more choices run where an H100 measured them faster (2026-11-26), each
//! with its switch: the wgmma pair on full 64-column grids (`VOXSEG_WGMMA_PAIRS`, on unless
//! `0`), and, with a [`Reach`] each (off, measured, all), the L1 gathers
//! (`VOXSEG_GATHER_L1`) and the halo kernels (`VOXSEG_CONV_HALO`, kernels/conv3d_halo.cu).
//! Since 2026-11-27, also by measure (a [`Reach`] each): the forward, backward data and
//! bf16 backward weights on the tensor memory accelerator's tiles (`VOXSEG_WGMMA_TMA`) and
//! the 256 x 128 wgmma tiles (`VOXSEG_WGMMA_M256`). The warp-specialized tiles
//! (`VOXSEG_WGMMA_WS`) are off, as an H100 measured them slower;
//! `VOXSEG_WGMMA_N64_WEIGHTS=off` moves 64-column backward weights from wgmma to mma.sync.
//! `VOXSEG_SPLIT_WAVES=1` splits reductions whose tiles fill less than a wave by a model of
//! whole waves (`ConvTarget::split_waves`; off: an H200 timed it at 0.82-1.05x the time
//! per pass, and no faster in the training step).
//! Since 2026-11-28, by measure (a [`Reach`] each): backward weights into 64-column blocks
//! computed transposed, on m64n128 wgmmas (`VOXSEG_WGMMA_COLS_WEIGHTS`,
//! `ConvTile::WgTmaCols`), and forward and backward data into 64 columns
//! (`VOXSEG_WGMMA_COLS_GATHER`, `WgTmaCols`, `WgTmaColsSw64`).
//! `VOXSEG_WGMMA_TF32_WEIGHTS` sets where tf32 backward weights run on the tensor memory
//! accelerator's tiles over channel-major packs (a [`Reach`]; by default only where an
//! H200 timed them faster with their packs made on every call: everywhere, their packs
//! made the training step slower; inert where `VOXSEG_WGMMA_TMA` is off).
//!
//! `VOXSEG_CONV_TF32_BF16X3=1` runs tf32 backward weights as three bf16 products on the
//! bf16 kernels (`ConvPlan::bf16x3`; off until a GPU has timed it).
//!
//! The tape keeps, of a tensor-core convolution's input, only the pack its weight gradient
//! reads (`conv3d_saved_input`; not a pack larger than the input and the packs only it
//! holds, unless the forward made it already), so that the f32 input is freed once the
//! forward is done with it
//! (`VOXSEG_SAVE_PACKED_INPUTS`, on unless `0` or `off`).
use super::conv_plan::{
    wgmma_probe_depth, ConvPack, ConvPackArgs, ConvPass, ConvPlan, ConvPrecision, ConvTarget,
    Reach, WgmmaLayout, CONV_WGMMA_THREADS, WGMMA_PROBE_SHARED_BYTES,
};
use super::conv_tma::{
    tma_params, TiledMap, TMA_DATA_TYPE_BF16, TMA_PROBE_MAX_BOX_BYTES, TMA_PROBE_SHARED_BYTES,
    TMA_SWIZZLE_64B,
};
use super::device::{driver_error, Cuda, CudaStorage};
use super::params::{LaunchDims, TensorMap};
use super::ptx::PTX_MODULES;
use crate::backend::BackendBase;
use crate::error::{check_len, Error, Result};
use crate::tensor_ops::conv::{Conv3dKernel, ConvGeometry};
use crate::tensor_ops::ReduceKernel;
use cudarc::driver::sys::{self, CUfunction_attribute_enum};
use cudarc::driver::{CudaFunction, DevicePtr, LaunchConfig, PushKernelArg};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

/// The environment variable that turns the wgmma kernels on (`1` or `on`) or off.
pub const WGMMA_ENV: &str = "VOXSEG_WGMMA";

/// The environment variable that keeps 64-column results on full grids off the wgmma pair
/// of blocks per SM (`0` or `off`; on by default where wgmma runs).
pub const WGMMA_PAIRS_ENV: &str = "VOXSEG_WGMMA_PAIRS";

/// The environment variable that sets the [`Reach`] of the 256 x 128 wgmma tiles over the
/// 128 x 128 ones: `off`, `measured` (the default: the tensor memory accelerator's tiles
/// on large grids and long backward weights, `ConvPlan::tma`) or `all`.
pub const WGMMA_M256_ENV: &str = "VOXSEG_WGMMA_M256";

/// The environment variable that runs the two-warpgroup wgmma tiles (128 x 128 that stay
/// so, 128 x 64 and its pair) warp-specialized (`1` or `on`; off by default: an H100
/// measured them slower, 2026-11-27).
pub const WGMMA_WS_ENV: &str = "VOXSEG_WGMMA_WS";

/// The environment variable that sets the [`Reach`] of the tiles the tensor memory
/// accelerator fills over forward, backward data and bf16 backward weights: `off`,
/// `measured` (the default, `ConvPlan::tma`) or `all` (wherever the plan allows); `off`
/// also keeps tf32 backward weights off them (`VOXSEG_WGMMA_TF32_WEIGHTS`).
pub const WGMMA_TMA_ENV: &str = "VOXSEG_WGMMA_TMA";

/// The environment variable that keeps backward weights into 64 columns on mma.sync (`0`
/// or `off`; on wgmma by default where wgmma runs).
pub const WGMMA_N64_WEIGHTS_ENV: &str = "VOXSEG_WGMMA_N64_WEIGHTS";

/// The environment variable that splits reductions whose tiles fill less than a wave by a
/// model of whole waves (`1` or `on`; off by default: an H200's training step was no
/// faster with it, `ConvTarget::split_waves`).
pub const SPLIT_WAVES_ENV: &str = "VOXSEG_SPLIT_WAVES";

/// The environment variable that sets the [`Reach`] of backward weights into 64-column
/// blocks on the tensor memory accelerator's transposed tile (bf16; tf32 where
/// `VOXSEG_WGMMA_TF32_WEIGHTS` puts it on those tiles; `ConvTile::WgTmaCols`): `off`,
/// `measured` (the default: `ConvTarget::wgmma_cols_weights`) or `all`.
pub const WGMMA_COLS_WEIGHTS_ENV: &str = "VOXSEG_WGMMA_COLS_WEIGHTS";

/// The environment variable that sets the [`Reach`] of forward and backward data into 64
/// columns on the tensor memory accelerator's transposed tiles: `off`, `measured` (the
/// default: `ConvTarget::wgmma_cols_gather`) or `all`.
pub const WGMMA_COLS_GATHER_ENV: &str = "VOXSEG_WGMMA_COLS_GATHER";

/// The environment variable that sets the [`Reach`] of tf32 backward weights on the tensor
/// memory accelerator's tiles over channel-major packs: `off`, `measured` (the default:
/// `ConvTarget::wgmma_tf32_weights`) or `all` (slower in an H200's training step,
/// `ConvPlan::tma_grid_weights`).
pub const WGMMA_TF32_WEIGHTS_ENV: &str = "VOXSEG_WGMMA_TF32_WEIGHTS";

/// The environment variable that sets the [`Reach`] of the tensor-core kernels' build
/// variant whose activation gathers also go through L1 (kernels/mma.h,
/// `vx_cp_async16_activation`): `off`, `measured` (the default) or `all`.
pub const GATHER_L1_ENV: &str = "VOXSEG_GATHER_L1";

/// The environment variable that sets the [`Reach`] of the halo kernels
/// (kernels/conv3d_halo.cu) over stride-1 passes: `off`, `measured` (the default: into at
/// most 32 columns) or `all`.
pub const HALO_ENV: &str = "VOXSEG_CONV_HALO";

/// The environment variable that runs backward data whose taps do not overlap (a transposed
/// convolution's 2x2x2 stride-2 forward) on the phase kernel (kernels/conv3d_phase.cu;
/// `1` or `on`; off by default: no GPU has timed it yet).
pub const PHASE_ENV: &str = "VOXSEG_CONV_PHASE";

/// The environment variable that runs forward and backward data on the transposed tiles
/// persistently, a block per SM looping over the tiles (`1` or `on`; off by default: no
/// GPU has timed it yet; `ConvTile::WgTmaColsLoop`).
pub const WGMMA_PERSIST_ENV: &str = "VOXSEG_WGMMA_PERSIST";

/// The environment variable that runs tf32 backward weights as three bf16 products on the
/// bf16 kernels (`1` or `on`; off by default: no GPU has timed it yet; `ConvPlan::bf16x3`).
pub const TF32_BF16X3_ENV: &str = "VOXSEG_CONV_TF32_BF16X3";

/// The environment variable that turns keeping operand packs off (`0` or `off`).
pub const PACK_CACHE_ENV: &str = "VOXSEG_PACK_CACHE";

/// The environment variable that has the tape keep, of a tensor-core convolution's input,
/// only the pack its weight gradient reads (on unless `0` or `off`). Inert where packs are
/// not kept (`VOXSEG_PACK_CACHE=off`).
pub const SAVE_PACKED_INPUTS_ENV: &str = "VOXSEG_SAVE_PACKED_INPUTS";

/// `map` over the packed operand at device address `at`, as the driver encodes it for the
/// tensor memory accelerator (bf16 or 32-bit words, the 128- or 64-byte swizzle, zero
/// fill); `kernel` names the launch in an error.
fn encode_tiled(map: &TiledMap, at: sys::CUdeviceptr, kernel: &str) -> Result<TensorMap> {
    use sys::CUtensorMapDataType::{
        CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, CU_TENSOR_MAP_DATA_TYPE_UINT32,
    };
    let data_type = if map.data_type == TMA_DATA_TYPE_BF16 {
        CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
    } else {
        CU_TENSOR_MAP_DATA_TYPE_UINT32
    };
    let swizzle = if map.swizzle == TMA_SWIZZLE_64B {
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B
    } else {
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B
    };
    let mut encoded = std::mem::MaybeUninit::<sys::CUtensorMap>::uninit();
    // SAFETY: the arrays hold the rank's 5 dimensions (4 strides) and outlive the call,
    // which writes the 128-byte map; `at` is a live pool allocation on this device.
    let status = unsafe {
        sys::cuTensorMapEncodeTiled(
            encoded.as_mut_ptr(),
            data_type,
            5,
            at as *mut std::ffi::c_void,
            map.dims.as_ptr(),
            map.strides.as_ptr(),
            map.box_dims.as_ptr(),
            map.element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if status != sys::CUresult::CUDA_SUCCESS {
        return Err(Error::Backend {
            backend: "cuda",
            msg: format!("{kernel}: cuTensorMapEncodeTiled refused {map:?}: {status:?}"),
        });
    }
    // SAFETY: the driver wrote the map on success.
    let encoded = unsafe { encoded.assume_init() };
    Ok(TensorMap {
        words: encoded.opaque,
    })
}

/// A device's convolution settings (every `Cuda` of one ordinal shares a device).
#[derive(Clone, Copy)]
struct ConvSettings {
    precision: ConvPrecision,
    wgmma: bool,
    wgmma_pairs: bool,
    wgmma_m256: Reach,
    wgmma_ws: bool,
    wgmma_tma: Reach,
    wgmma_n64_weights: bool,
    split_waves: bool,
    wgmma_cols_weights: Reach,
    wgmma_cols_gather: Reach,
    wgmma_tf32_weights: Reach,
    gather_l1: Reach,
    halo: Reach,
    phase: bool,
    wgmma_persist: bool,
    tf32_bf16x3: bool,
    cache_packs: bool,
    save_packed_inputs: bool,
}

impl Default for ConvSettings {
    fn default() -> Self {
        Self {
            precision: ConvPrecision::default(),
            wgmma: false,
            wgmma_pairs: true,
            wgmma_m256: Reach::default(),
            wgmma_ws: false,
            wgmma_tma: Reach::default(),
            wgmma_n64_weights: true,
            split_waves: false,
            wgmma_cols_weights: Reach::default(),
            wgmma_cols_gather: Reach::default(),
            wgmma_tf32_weights: Reach::default(),
            gather_l1: Reach::default(),
            halo: Reach::default(),
            phase: false,
            wgmma_persist: false,
            tf32_bf16x3: false,
            cache_packs: true,
            save_packed_inputs: true,
        }
    }
}

fn settings() -> std::sync::MutexGuard<'static, HashMap<usize, ConvSettings>> {
    static SETTINGS: OnceLock<Mutex<HashMap<usize, ConvSettings>>> = OnceLock::new();
    SETTINGS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A switch in the environment: Some(true) for 1/on, Some(false) for 0/off, None when
/// unset.
fn switch_from_env(name: &str) -> Result<Option<bool>> {
    match std::env::var(name) {
        Ok(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "on" => Ok(Some(true)),
            "0" | "off" => Ok(Some(false)),
            _ => Err(Error::config(
                name,
                format!("{v:?} is not one of 1, on, 0, off"),
            )),
        },
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(Error::config(name, e.to_string())),
    }
}

/// The [`Reach`] that environment variable `name` sets; the default when unset.
fn reach_from_env(name: &str) -> Result<Reach> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|e: Error| Error::config(name, e.to_string())),
        Err(std::env::VarError::NotPresent) => Ok(Reach::default()),
        Err(e) => Err(Error::config(name, e.to_string())),
    }
}

/// Lets `f` (kernel `name` on device `ordinal`) use `bytes` of dynamic shared memory, once
/// per kernel and device. Without opting in, a kernel's dynamic and static shared memory
/// together must stay within 48 KiB, so every kernel with dynamic shared memory opts in.
/// With `most_shared`, the kernel also asks for the largest shared-memory share of the
/// SM's L1 (its carveout), which the driver otherwise chooses.
fn allow_shared(
    ordinal: usize,
    module: &'static str,
    name: &'static str,
    f: &CudaFunction,
    bytes: u32,
    most_shared: bool,
) -> Result<()> {
    type Kernel = (usize, &'static str, &'static str);
    static ALLOWED: OnceLock<Mutex<HashSet<Kernel>>> = OnceLock::new();
    let mut allowed = ALLOWED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if bytes == 0 || allowed.contains(&(ordinal, module, name)) {
        return Ok(());
    }
    f.set_attribute(
        CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        bytes as i32,
    )
    .map_err(|e| driver_error(&format!("{name}: {bytes} bytes of shared memory"), e))?;
    if most_shared {
        f.set_attribute(
            CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
            100,
        )
        .map_err(|e| driver_error(&format!("{name}: the largest shared-memory carveout"), e))?;
    }
    allowed.insert((ordinal, module, name));
    Ok(())
}

fn config(d: &LaunchDims) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (d.grid[0], d.grid[1], d.grid[2]),
        block_dim: (d.block[0], d.block[1], d.block[2]),
        shared_mem_bytes: d.shared_bytes,
    }
}

impl Cuda {
    /// The arithmetic of this device's convolutions: what `set_conv_precision` set, else
    /// `VOXSEG_CONV_PRECISION`, else f32. Fails when the variable names no precision.
    pub fn conv_precision(&self) -> Result<ConvPrecision> {
        Ok(self.conv_settings()?.precision)
    }

    /// Sets the arithmetic of this device's convolutions (every `Cuda` of this ordinal),
    /// whatever the environment says.
    pub fn set_conv_precision(&self, precision: ConvPrecision) {
        self.update_conv_settings(|s| s.precision = precision);
    }

    /// Whether the device can run the wgmma kernels: compute capability 9.0 (sm_90a code
    /// runs on nothing else) and kernels/conv3d_wgmma.cu built.
    pub fn supports_wgmma(&self) -> bool {
        self.compute_capability() == (9, 0)
            && PTX_MODULES.iter().any(|(name, _)| *name == "conv3d_wgmma")
    }

    /// Whether the TF32/BF16 passes run the wgmma kernels: what `set_wgmma` set, else
    /// `VOXSEG_WGMMA` on a device that supports them (elsewhere it is ignored with a
    /// warning), else whether the device supports them.
    pub fn wgmma(&self) -> Result<bool> {
        Ok(self.conv_settings()?.wgmma)
    }

    /// Turns the wgmma kernels on or off for this device, whatever the environment says;
    /// fails, naming the device, to turn them on where they cannot run.
    pub fn set_wgmma(&self, on: bool) -> Result<()> {
        if on && !self.supports_wgmma() {
            return Err(Error::config(WGMMA_ENV, self.why_no_wgmma()));
        }
        self.update_conv_settings(|s| s.wgmma = on);
        Ok(())
    }

    fn why_no_wgmma(&self) -> String {
        let (major, minor) = self.compute_capability();
        format!(
            "the wgmma kernels need compute capability 9.0 and a build with nvcc; {} is \
             {major}.{minor}{}",
            self.device_name(),
            if cfg!(voxseg_has_ptx) {
                ""
            } else {
                " and this build has no PTX"
            }
        )
    }

    /// Changes this device's settings (every `Cuda` of this ordinal), starting from what
    /// they are.
    fn update_conv_settings(&self, change: impl FnOnce(&mut ConvSettings)) {
        let mut s = self.conv_settings().unwrap_or_default();
        change(&mut s);
        settings().insert(self.ordinal(), s);
    }

    /// This device's settings, initialised from the environment on first use.
    fn conv_settings(&self) -> Result<ConvSettings> {
        let mut map = settings();
        if let Some(s) = map.get(&self.ordinal()) {
            return Ok(*s);
        }
        let precision = ConvPrecision::from_env()?.unwrap_or_default();
        let wgmma = match switch_from_env(WGMMA_ENV)? {
            Some(true) if !self.supports_wgmma() => {
                eprintln!("{WGMMA_ENV}=1 ignored: {}", self.why_no_wgmma());
                false
            }
            Some(on) => on,
            None => self.supports_wgmma(),
        };
        // A wgmma switch turned on where wgmma is off: said once, as the settings are made.
        let wgmma_switch = |name: &str, default: bool| -> Result<bool> {
            let asked = switch_from_env(name)?;
            if asked == Some(true) && !wgmma {
                eprintln!(
                    "{name}=1 has no effect: the wgmma kernels are off on {}",
                    self.device_name()
                );
            }
            Ok(asked.unwrap_or(default))
        };
        let wgmma_pairs = wgmma_switch(WGMMA_PAIRS_ENV, true)?;
        let wgmma_m256 = reach_from_env(WGMMA_M256_ENV)?;
        let wgmma_ws = wgmma_switch(WGMMA_WS_ENV, false)?;
        let wgmma_tma = reach_from_env(WGMMA_TMA_ENV)?;
        let wgmma_n64_weights = switch_from_env(WGMMA_N64_WEIGHTS_ENV)?.unwrap_or(true);
        let split_waves = switch_from_env(SPLIT_WAVES_ENV)?.unwrap_or(false);
        let wgmma_cols_weights = reach_from_env(WGMMA_COLS_WEIGHTS_ENV)?;
        let wgmma_cols_gather = reach_from_env(WGMMA_COLS_GATHER_ENV)?;
        let wgmma_tf32_weights = reach_from_env(WGMMA_TF32_WEIGHTS_ENV)?;
        // A switch set to something other than off that another setting makes inert:
        // said once, as the settings are made.
        let asked = |name: &str| {
            std::env::var(name).is_ok_and(|v| !matches!(v.parse::<Reach>(), Ok(Reach::Off)))
        };
        for name in [
            WGMMA_COLS_WEIGHTS_ENV,
            WGMMA_COLS_GATHER_ENV,
            WGMMA_TF32_WEIGHTS_ENV,
        ] {
            if asked(name) && !wgmma {
                eprintln!(
                    "{name} has no effect: the wgmma kernels are off on {}",
                    self.device_name()
                );
            }
        }
        for name in [
            WGMMA_TF32_WEIGHTS_ENV,
            WGMMA_COLS_WEIGHTS_ENV,
            WGMMA_COLS_GATHER_ENV,
            WGMMA_PERSIST_ENV,
        ] {
            if wgmma && asked(name) && wgmma_tma == Reach::Off {
                eprintln!(
                    "{name} has no effect: {WGMMA_TMA_ENV}=off keeps the tensor memory \
                     accelerator's tiles off"
                );
            }
        }
        if wgmma && asked(WGMMA_COLS_WEIGHTS_ENV) && !wgmma_n64_weights {
            eprintln!(
                "{WGMMA_COLS_WEIGHTS_ENV} has no effect: {WGMMA_N64_WEIGHTS_ENV}=off keeps \
                 backward weights into 64 columns off wgmma"
            );
        }
        let gather_l1 = reach_from_env(GATHER_L1_ENV)?;
        let halo = reach_from_env(HALO_ENV)?;
        let phase = switch_from_env(PHASE_ENV)?.unwrap_or(false);
        let wgmma_persist = wgmma_switch(WGMMA_PERSIST_ENV, false)?;
        let tf32_bf16x3 = switch_from_env(TF32_BF16X3_ENV)?.unwrap_or(false);
        let cache_packs = switch_from_env(PACK_CACHE_ENV)?.unwrap_or(true);
        let save_packed_inputs = switch_from_env(SAVE_PACKED_INPUTS_ENV)?;
        if save_packed_inputs == Some(true) && !cache_packs {
            eprintln!(
                "{SAVE_PACKED_INPUTS_ENV}=1 has no effect: {PACK_CACHE_ENV}=off keeps no packs"
            );
        }
        let save_packed_inputs = save_packed_inputs.unwrap_or(true);
        let s = ConvSettings {
            precision,
            wgmma,
            wgmma_pairs,
            wgmma_m256,
            wgmma_ws,
            wgmma_tma,
            wgmma_n64_weights,
            split_waves,
            wgmma_cols_weights,
            wgmma_cols_gather,
            wgmma_tf32_weights,
            gather_l1,
            halo,
            phase,
            wgmma_persist,
            tf32_bf16x3,
            cache_packs,
            save_packed_inputs,
        };
        map.insert(self.ordinal(), s);
        Ok(s)
    }

    /// Launches the plan's kernel on (a, b, bias) into `out` (workspace_len elements); on
    /// the tensor cores, a and b are the packed operands.
    fn launch_conv(
        &self,
        plan: &ConvPlan,
        a: &CudaStorage,
        b: &CudaStorage,
        bias: Option<&CudaStorage>,
        out: &mut CudaStorage,
    ) -> Result<()> {
        let name = plan.kernel.name().ok_or_else(|| Error::Backend {
            backend: "cuda",
            msg: format!("no conv kernel for {:?}", plan.kernel),
        })?;
        let module = plan.module();
        let f = self.function(module, name)?;
        let most_shared = plan.kernel.needs_most_shared();
        allow_shared(
            self.ordinal(),
            module,
            name,
            &f,
            plan.dims.shared_bytes,
            most_shared,
        )?;
        let null: u64 = 0;
        if let Some((tiling, [a_map, b_map])) = plan.tma_maps() {
            // The raw driver call that encodes the maps needs the context current here.
            self.stream()
                .context()
                .bind_to_thread()
                .map_err(|e| driver_error("binding the context", e))?;
            let (a_at, _a_read) = a.block().device_ptr(self.stream());
            let (b_at, _b_read) = b.block().device_ptr(self.stream());
            let params = tma_params(
                &plan.params,
                &tiling,
                encode_tiled(&a_map, a_at, name)?,
                encode_tiled(&b_map, b_at, name)?,
            );
            let mut args = self.stream().launch_builder(&f);
            args.arg(&params);
            match bias {
                Some(bias) => args.arg(bias.block()),
                None => args.arg(&null),
            };
            args.arg(out.block_mut());
            // SAFETY: the kernel takes (params, bias, out); the maps describe the plan's
            // packs of its operands, which a and b are (the callers checked their sources
            // against the geometry), bias is the pass's or null (never read then), and out
            // holds the plan's workspace_len elements.
            unsafe { args.launch(config(&plan.dims)) }.map_err(|e| driver_error(name, e))?;
            return Ok(());
        }
        let mut args = self.stream().launch_builder(&f);
        args.arg(&plan.params).arg(a.block()).arg(b.block());
        match bias {
            Some(bias) => args.arg(bias.block()),
            None => args.arg(&null),
        };
        args.arg(out.block_mut());
        // SAFETY: the arguments are the kernel's (params, a, b, bias, out) in order; the
        // callers checked a, b and bias against the geometry the params describe (or a and
        // b are the plan's packs of such operands), and out holds the plan's workspace_len
        // elements; a null bias is never read.
        unsafe { args.launch(config(&plan.dims)) }.map_err(|e| driver_error(name, e))?;
        Ok(())
    }

    /// A pool buffer for `pack`'s output.
    pub(super) fn alloc_pack(&self, pack: &ConvPack) -> Result<CudaStorage> {
        // The pool's buffers count 4-byte elements: one tf32 or two bf16 each.
        self.alloc((pack.packed_len() * pack.element_bytes()).div_ceil(4))
    }

    /// `src` (the pack's f32 source) converted to bf16 or tf32 in a new pool buffer.
    fn pack(&self, pack: &ConvPack, src: &CudaStorage) -> Result<CudaStorage> {
        check_len(pack.name(), "source", src.len(), pack.source_len())?;
        let mut dst = self.alloc_pack(pack)?;
        let name = pack.name();
        let f = self.function(pack.module(), name)?;
        let params = pack.args();
        let mut args = self.stream().launch_builder(&f);
        match &params {
            ConvPackArgs::Rows(p) => args.arg(p),
            ConvPackArgs::Bordered(p) => args.arg(p),
            ConvPackArgs::ChannelMajor(p) => args.arg(p),
            ConvPackArgs::RowsBf16x3(p) => args.arg(p),
            ConvPackArgs::BorderedBf16x3(p) => args.arg(p),
        };
        args.arg(src.block()).arg(dst.block_mut());
        // SAFETY: (params, src, dst) as the pack kernels take them (each kind its own
        // params, `ConvPackArgs`); src holds the source_len elements the params describe
        // (checked above) and dst packed_len elements of element_bytes each.
        unsafe { args.launch(config(&pack.dims)) }.map_err(|e| driver_error(name, e))?;
        Ok(dst)
    }

    /// `src` packed as `pack` says: the pack kept beside `src` when there is one (see
    /// `storage`), else a new one, kept there unless pack caching is off or a graph capture
    /// is in progress (a pack made then is written only when the graph replays, and not at
    /// all if the capture fails).
    fn packed(&self, pack: &ConvPack, src: &CudaStorage) -> Result<Arc<CudaStorage>> {
        if src.packs_only_of().is_some() {
            return src.packs().get(pack).ok_or_else(|| Error::Backend {
                backend: "cuda",
                msg: format!(
                    "a convolution's input was saved only as the pack its weight gradient \
                     read when it was saved; this pass needs {:?} {:?} {:?} (were the \
                     convolution settings changed between the forward and the backward?)",
                    pack.kind, pack.precision, pack.copies
                ),
            });
        }
        if !self.conv_settings()?.cache_packs {
            return Ok(Arc::new(self.pack(pack, src)?));
        }
        if self.capturing() {
            return match src.packs().get(pack) {
                Some(kept) => Ok(kept),
                None => Ok(Arc::new(self.pack(pack, src)?)),
            };
        }
        src.packs()
            .get_or_try_insert(*pack, || self.pack(pack, src))
    }

    /// How many packs are kept beside `storage` (a test's view of the cache).
    pub fn kept_packs(&self, storage: &CudaStorage) -> usize {
        storage.packs().count()
    }

    /// Whether 64-column results on full grids run the wgmma pair (where wgmma is on): what
    /// `set_wgmma_pairs` set, else `VOXSEG_WGMMA_PAIRS` (on unless `0` or `off`).
    pub fn wgmma_pairs(&self) -> Result<bool> {
        Ok(self.conv_settings()?.wgmma_pairs)
    }

    /// Puts 64-column results on full grids on the wgmma pair (where wgmma is on) or not,
    /// whatever `VOXSEG_WGMMA_PAIRS` says.
    pub fn set_wgmma_pairs(&self, on: bool) {
        self.update_conv_settings(|s| s.wgmma_pairs = on);
    }

    /// Where the 128 x 128 wgmma tiles run as 256 x 128 (where wgmma is on): what
    /// `set_wgmma_m256` set, else `VOXSEG_WGMMA_M256` (measured by default).
    pub fn wgmma_m256(&self) -> Result<Reach> {
        Ok(self.conv_settings()?.wgmma_m256)
    }

    /// Sets where the 128 x 128 wgmma tiles run as 256 x 128, whatever
    /// `VOXSEG_WGMMA_M256` says.
    pub fn set_wgmma_m256(&self, reach: Reach) {
        self.update_conv_settings(|s| s.wgmma_m256 = reach);
    }

    /// Whether the two-warpgroup wgmma tiles run warp-specialized (where wgmma is on): what
    /// `set_wgmma_ws` set, else `VOXSEG_WGMMA_WS` (off unless `1` or `on`).
    pub fn wgmma_ws(&self) -> Result<bool> {
        Ok(self.conv_settings()?.wgmma_ws)
    }

    /// Runs the two-warpgroup wgmma tiles warp-specialized (where wgmma is on) or not,
    /// whatever `VOXSEG_WGMMA_WS` says.
    pub fn set_wgmma_ws(&self, on: bool) {
        self.update_conv_settings(|s| s.wgmma_ws = on);
    }

    /// Where the forward, backward data and bf16 backward weights run on the tiles the
    /// tensor memory accelerator fills (where wgmma is on and the plan allows): what
    /// `set_wgmma_tma` set, else `VOXSEG_WGMMA_TMA` (measured by default).
    pub fn wgmma_tma(&self) -> Result<Reach> {
        Ok(self.conv_settings()?.wgmma_tma)
    }

    /// Sets where the forward, backward data and bf16 backward weights run on the tensor
    /// memory accelerator's tiles, whatever `VOXSEG_WGMMA_TMA` says.
    pub fn set_wgmma_tma(&self, reach: Reach) {
        self.update_conv_settings(|s| s.wgmma_tma = reach);
    }

    /// Whether backward weights into 64 columns runs wgmma (where wgmma is on): what
    /// `set_wgmma_n64_weights` set, else `VOXSEG_WGMMA_N64_WEIGHTS` (on unless `0` or
    /// `off`).
    pub fn wgmma_n64_weights(&self) -> Result<bool> {
        Ok(self.conv_settings()?.wgmma_n64_weights)
    }

    /// Runs backward weights into 64 columns on wgmma (where wgmma is on) or on mma.sync,
    /// whatever `VOXSEG_WGMMA_N64_WEIGHTS` says.
    pub fn set_wgmma_n64_weights(&self, on: bool) {
        self.update_conv_settings(|s| s.wgmma_n64_weights = on);
    }

    /// Whether reductions whose tiles fill less than a wave are split by whole waves: what
    /// `set_split_waves` set, else `VOXSEG_SPLIT_WAVES` (off unless `1` or `on`).
    pub fn split_waves(&self) -> Result<bool> {
        Ok(self.conv_settings()?.split_waves)
    }

    /// Splits reductions by whole waves or by one, whatever `VOXSEG_SPLIT_WAVES` says.
    pub fn set_split_waves(&self, on: bool) {
        self.update_conv_settings(|s| s.split_waves = on);
    }

    /// Where backward weights into 64-column blocks run transposed
    /// (`ConvTile::WgTmaCols`, where wgmma and the tensor memory accelerator's tiles are
    /// on): what `set_wgmma_cols_weights` set, else `VOXSEG_WGMMA_COLS_WEIGHTS` (measured
    /// by default).
    pub fn wgmma_cols_weights(&self) -> Result<Reach> {
        Ok(self.conv_settings()?.wgmma_cols_weights)
    }

    /// Sets where backward weights into 64-column blocks run transposed, whatever
    /// `VOXSEG_WGMMA_COLS_WEIGHTS` says.
    pub fn set_wgmma_cols_weights(&self, reach: Reach) {
        self.update_conv_settings(|s| s.wgmma_cols_weights = reach);
    }

    /// Where forward and backward data into 64 columns run transposed
    /// (`ConvTile::WgTmaCols`, `WgTmaColsSw64`, where wgmma and the tensor memory
    /// accelerator's tiles are on): what `set_wgmma_cols_gather` set, else
    /// `VOXSEG_WGMMA_COLS_GATHER` (measured by default).
    pub fn wgmma_cols_gather(&self) -> Result<Reach> {
        Ok(self.conv_settings()?.wgmma_cols_gather)
    }

    /// Sets where forward and backward data into 64 columns run transposed, whatever
    /// `VOXSEG_WGMMA_COLS_GATHER` says.
    pub fn set_wgmma_cols_gather(&self, reach: Reach) {
        self.update_conv_settings(|s| s.wgmma_cols_gather = reach);
    }

    /// Where tf32 backward weights run on the tensor memory accelerator's tiles over
    /// channel-major packs (where wgmma and those tiles are on): what
    /// `set_wgmma_tf32_weights` set, else `VOXSEG_WGMMA_TF32_WEIGHTS` (measured by default).
    pub fn wgmma_tf32_weights(&self) -> Result<Reach> {
        Ok(self.conv_settings()?.wgmma_tf32_weights)
    }

    /// Sets where tf32 backward weights run over channel-major packs (where wgmma and the
    /// tensor memory accelerator's tiles are on), whatever `VOXSEG_WGMMA_TF32_WEIGHTS` says.
    pub fn set_wgmma_tf32_weights(&self, reach: Reach) {
        self.update_conv_settings(|s| s.wgmma_tf32_weights = reach);
    }

    /// Where the tensor-core convolutions run the build variant whose activation gathers go
    /// through L1: what `set_gather_l1` set, else `VOXSEG_GATHER_L1` (measured by default).
    pub fn gather_l1(&self) -> Result<Reach> {
        Ok(self.conv_settings()?.gather_l1)
    }

    /// Sets where the tensor-core convolutions run the L1 build variant, whatever
    /// `VOXSEG_GATHER_L1` says.
    pub fn set_gather_l1(&self, reach: Reach) {
        self.update_conv_settings(|s| s.gather_l1 = reach);
    }

    /// Where stride-1 convolution passes run on the halo kernels (as far as the plan
    /// allows): what `set_halo` set, else `VOXSEG_CONV_HALO` (measured by default).
    pub fn halo(&self) -> Result<Reach> {
        Ok(self.conv_settings()?.halo)
    }

    /// Sets where stride-1 convolution passes run on the halo kernels, whatever
    /// `VOXSEG_CONV_HALO` says.
    pub fn set_halo(&self, reach: Reach) {
        self.update_conv_settings(|s| s.halo = reach);
    }

    /// Whether backward data whose taps do not overlap runs on the phase kernel (as far as
    /// the plan allows): what `set_phase` set, else `VOXSEG_CONV_PHASE` (off by default).
    pub fn phase(&self) -> Result<bool> {
        Ok(self.conv_settings()?.phase)
    }

    /// Turns the phase kernel on or off for this device, whatever `VOXSEG_CONV_PHASE` says.
    pub fn set_phase(&self, on: bool) {
        self.update_conv_settings(|s| s.phase = on);
    }

    /// Whether forward and backward data on the transposed tiles run persistently: what
    /// `set_wgmma_persist` set, else `VOXSEG_WGMMA_PERSIST` (off by default).
    pub fn wgmma_persist(&self) -> Result<bool> {
        Ok(self.conv_settings()?.wgmma_persist)
    }

    /// Turns the persistent transposed tiles on or off for this device, whatever
    /// `VOXSEG_WGMMA_PERSIST` says.
    pub fn set_wgmma_persist(&self, on: bool) {
        self.update_conv_settings(|s| s.wgmma_persist = on);
    }

    /// Whether tf32 backward weights run as three bf16 products: what `set_tf32_bf16x3` set,
    /// else `VOXSEG_CONV_TF32_BF16X3` (off by default).
    pub fn tf32_bf16x3(&self) -> Result<bool> {
        Ok(self.conv_settings()?.tf32_bf16x3)
    }

    /// Turns tf32 backward weights as three bf16 products on or off for this device,
    /// whatever `VOXSEG_CONV_TF32_BF16X3` says.
    pub fn set_tf32_bf16x3(&self, on: bool) {
        self.update_conv_settings(|s| s.tf32_bf16x3 = on);
    }

    /// Whether convolutions keep their operands' packs beside them (see `storage`): what
    /// `set_pack_cache` set, else `VOXSEG_PACK_CACHE` (on unless `0` or `off`).
    pub fn pack_cache(&self) -> Result<bool> {
        Ok(self.conv_settings()?.cache_packs)
    }

    /// Turns keeping packs on or off for this device, whatever the environment says.
    pub fn set_pack_cache(&self, on: bool) {
        self.update_conv_settings(|s| s.cache_packs = on);
    }

    /// Whether the tape keeps, of a tensor-core convolution's input, only the pack its
    /// weight gradient reads (`conv3d_saved_input`): what `set_save_packed_inputs` set, else
    /// `VOXSEG_SAVE_PACKED_INPUTS` (on unless `0` or `off`).
    pub fn save_packed_inputs(&self) -> Result<bool> {
        Ok(self.conv_settings()?.save_packed_inputs)
    }

    /// Turns saving packed inputs on or off for this device, whatever the environment says.
    pub fn set_save_packed_inputs(&self, on: bool) {
        self.update_conv_settings(|s| s.save_packed_inputs = on);
    }

    /// The plan this device runs `pass` of `g` with, at its current precision.
    pub fn conv_plan(&self, g: &ConvGeometry, pass: ConvPass) -> Result<ConvPlan> {
        let s = self.conv_settings()?;
        let target = ConvTarget::new(self.target_blocks())
            .with_wgmma(s.wgmma)
            .with_wgmma_pairs(s.wgmma_pairs)
            .with_wgmma_m256(s.wgmma_m256)
            .with_wgmma_ws(s.wgmma_ws)
            .with_wgmma_tma(s.wgmma_tma)
            .with_wgmma_n64_weights(s.wgmma_n64_weights)
            .with_split_waves(s.split_waves)
            .with_wgmma_cols_weights(s.wgmma_cols_weights)
            .with_wgmma_cols_gather(s.wgmma_cols_gather)
            .with_wgmma_tf32_weights(s.wgmma_tf32_weights)
            .with_halo(s.halo)
            .with_gather_l1(s.gather_l1)
            .with_phase(s.phase)
            .with_wgmma_persist(s.wgmma_persist)
            .with_tf32_bf16x3(s.tf32_bf16x3);
        ConvPlan::new(g, pass, s.precision, target)
    }

    /// One pass: the launch, then the sum of the partials when the reduction is split.
    fn conv_pass(
        &self,
        g: &ConvGeometry,
        pass: ConvPass,
        a: &CudaStorage,
        b: &CudaStorage,
        bias: Option<&CudaStorage>,
    ) -> Result<CudaStorage> {
        let plan = self.conv_plan(g, pass)?;
        let mut out = self.alloc(plan.workspace_len())?;
        match &plan.packs {
            None if a.packs_only_of().is_some() || b.packs_only_of().is_some() => {
                return Err(Error::Backend {
                    backend: "cuda",
                    msg: format!(
                        "conv3d {pass:?}: an operand was saved only packed, and this pass \
                         reads f32 ({} convolutions; were the settings changed between the \
                         forward and the backward?)",
                        plan.kernel.precision
                    ),
                });
            }
            None => self.launch_conv(&plan, a, b, bias, &mut out)?,
            Some([pack_a, pack_b]) => {
                let (a, b) = (self.packed(pack_a, a)?, self.packed(pack_b, b)?);
                self.launch_conv(&plan, &a, &b, bias, &mut out)?;
            }
        }
        match plan.partial_sum() {
            None => Ok(out),
            Some(view) => self.sum_axis1(&out, view),
        }
    }

    /// `out = a b + c` for one warp through one tensor-core mma, `a` 16 x K, `b` K x 8, `c`
    /// and `out` 16 x 8, all row-major; K = 8 for TF32 and 16 for BF16. Checks the fragment
    /// layouts and rounding of the tensor-core wrappers (kernels/mma.h) against their
    /// emulated twins.
    pub fn mma_probe(
        &self,
        precision: ConvPrecision,
        a: &[f32],
        b: &[f32],
        c: &[f32],
    ) -> Result<Vec<f32>> {
        let (k, name) = match precision {
            ConvPrecision::Tf32 => (8, "mma_probe_tf32"),
            ConvPrecision::Bf16 => (16, "mma_probe_bf16"),
            ConvPrecision::F32 => {
                return Err(Error::config("mma_probe", "f32 has no tensor-core mma"));
            }
        };
        if a.len() != 16 * k || b.len() != k * 8 || c.len() != 128 {
            return Err(Error::shape(
                "mma_probe",
                format!(
                    "a {}, b {}, c {} elements for K = {k}",
                    a.len(),
                    b.len(),
                    c.len()
                ),
            ));
        }
        let (a, b, c) = (self.upload(a)?, self.upload(b)?, self.upload(c)?);
        let mut out = self.alloc(128)?;
        let f = self.function("conv3d_pipe", name)?;
        let mut args = self.stream().launch_builder(&f);
        args.arg(a.block())
            .arg(b.block())
            .arg(c.block())
            .arg(out.block_mut());
        let dims = LaunchDims::linear([1, 1, 1], 32);
        // SAFETY: (a, b, c, out) as the kernel takes them, of the lengths checked above.
        unsafe { args.launch(config(&dims)) }.map_err(|e| driver_error(name, e))?;
        self.download(&out)
    }

    /// `out` (128 x n) = `a` (128 x BK) `b` (n x BK)^T over one reduction step of the wgmma
    /// tiles (kernels/conv3d_wgmma.cu's wgmma_probe_*: n = 128, 64 or, k-major, 32; BK = 64
    /// bf16 or 32 tf32; k-major or, at BF16, mn-major), all row-major; the inputs are rounded by the
    /// kernel. Checks the descriptors, the 128-byte swizzle, the K advances, the
    /// warpgroups' slices and the accumulator layout against their emulated twins.
    pub fn wgmma_probe(
        &self,
        precision: ConvPrecision,
        layout: WgmmaLayout,
        n: usize,
        a: &[f32],
        b: &[f32],
    ) -> Result<Vec<f32>> {
        if !self.supports_wgmma() {
            return Err(Error::config("wgmma_probe", self.why_no_wgmma()));
        }
        use WgmmaLayout::*;
        let name = match (precision, layout, n) {
            (ConvPrecision::Bf16, KMajor, 128) => "wgmma_probe_bf16_n128",
            (ConvPrecision::Bf16, KMajor, 64) => "wgmma_probe_bf16_n64",
            (ConvPrecision::Bf16, KMajor, 32) => "wgmma_probe_bf16_n32",
            (ConvPrecision::Tf32, KMajor, 128) => "wgmma_probe_tf32_n128",
            (ConvPrecision::Tf32, KMajor, 64) => "wgmma_probe_tf32_n64",
            (ConvPrecision::Tf32, KMajor, 32) => "wgmma_probe_tf32_n32",
            (ConvPrecision::Bf16, MnMajor, 128) => "wgmma_probe_bf16_mn_n128",
            (ConvPrecision::Bf16, MnMajor, 64) => "wgmma_probe_bf16_mn_n64",
            (ConvPrecision::Bf16, KMajorSw64, 128) => "wgmma_probe_bf16_sw64_n128",
            (ConvPrecision::Bf16, KMajorSw64, 64) => "wgmma_probe_bf16_sw64_n64",
            _ => {
                return Err(Error::config(
                    "wgmma_probe",
                    format!("no {precision} probe with {n} columns ({layout:?})"),
                ))
            }
        };
        let k = wgmma_probe_depth(precision);
        if a.len() != 128 * k || b.len() != n * k {
            return Err(Error::shape(
                "wgmma_probe",
                format!("a {}, b {} elements for K = {k}, n = {n}", a.len(), b.len()),
            ));
        }
        let (a, b) = (self.upload(a)?, self.upload(b)?);
        let mut out = self.alloc(128 * n)?;
        let f = self.function("conv3d_wgmma", name)?;
        let dims = LaunchDims {
            shared_bytes: WGMMA_PROBE_SHARED_BYTES,
            ..LaunchDims::linear([1, 1, 1], CONV_WGMMA_THREADS)
        };
        allow_shared(
            self.ordinal(),
            "conv3d_wgmma",
            name,
            &f,
            dims.shared_bytes,
            false,
        )?;
        let mut args = self.stream().launch_builder(&f);
        args.arg(a.block()).arg(b.block()).arg(out.block_mut());
        // SAFETY: (a, b, out) as the kernel takes them, of the lengths checked above, with
        // the shared memory it asks for.
        unsafe { args.launch(config(&dims)) }.map_err(|e| driver_error(name, e))?;
        self.download(&out)
    }

    /// The shared-memory bytes (as 32-bit words) that the tensor memory accelerator's copy
    /// of the box of `map` over `data` at `coords` (innermost first) leaves, zero fill and
    /// swizzle included (kernels/conv3d_wgmma.cu's tma_probe); `data` holds the tensor the
    /// map's dimensions and strides describe, the box at most `TMA_PROBE_MAX_BOX_BYTES`.
    /// Checks the harness's twin of the copies, and the transaction bytes of boxes wholly
    /// outside the tensor (a wait that never completes traps the kernel).
    pub fn tma_probe(&self, map: &TiledMap, data: &[u32], coords: [i32; 5]) -> Result<Vec<u32>> {
        if !self.supports_wgmma() {
            return Err(Error::config("tma_probe", self.why_no_wgmma()));
        }
        let bytes = map.box_bytes();
        if bytes > TMA_PROBE_MAX_BOX_BYTES as u64 || (data.len() as u64) * 4 < map.tensor_bytes() {
            return Err(Error::shape(
                "tma_probe",
                format!("a box of {bytes} bytes over {} words: {map:?}", data.len()),
            ));
        }
        let words: Vec<f32> = data.iter().map(|&w| f32::from_bits(w)).collect();
        let src = self.upload(&words)?;
        let mut out = self.alloc(bytes as usize / 4)?;
        let name = "tma_probe";
        let f = self.function("conv3d_wgmma", name)?;
        let dims = LaunchDims {
            shared_bytes: TMA_PROBE_SHARED_BYTES,
            ..LaunchDims::linear([1, 1, 1], 128)
        };
        allow_shared(
            self.ordinal(),
            "conv3d_wgmma",
            name,
            &f,
            dims.shared_bytes,
            false,
        )?;
        self.stream()
            .context()
            .bind_to_thread()
            .map_err(|e| driver_error("binding the context", e))?;
        let (at, _read) = src.block().device_ptr(self.stream());
        let encoded = encode_tiled(map, at, name)?;
        let byte_count = bytes as i32;
        let mut args = self.stream().launch_builder(&f);
        args.arg(&encoded);
        for c in &coords {
            args.arg(c);
        }
        args.arg(&byte_count).arg(out.block_mut());
        // SAFETY: (map, c0..c4, bytes, out) as the kernel takes them; the map describes
        // src (its extent checked above), out holds the box's words, and the shared memory
        // holds the box past its alignment.
        unsafe { args.launch(config(&dims)) }.map_err(|e| driver_error(name, e))?;
        Ok(self.download(&out)?.into_iter().map(f32::to_bits).collect())
    }

    /// Each lane's registers from the ldmatrix wrappers (kernels/mma.h) on `rows` (32 rows
    /// of 8 bf16): 14 per lane, as kernels/conv3d_pipe.cu's ldmatrix_probe lays them out.
    pub fn ldmatrix_probe(&self, rows: &[u16]) -> Result<Vec<u32>> {
        if rows.len() != 256 {
            return Err(Error::shape(
                "ldmatrix_probe",
                format!("{} bf16 values, not 32 rows of 8", rows.len()),
            ));
        }
        // The bf16 bits travel as f32 bit patterns, two per element.
        let words: Vec<f32> = rows
            .chunks(2)
            .map(|p| f32::from_bits(p[0] as u32 | ((p[1] as u32) << 16)))
            .collect();
        let src = self.upload(&words)?;
        let mut out = self.alloc(32 * 14)?;
        let f = self.function("conv3d_pipe", "ldmatrix_probe")?;
        let mut args = self.stream().launch_builder(&f);
        args.arg(src.block()).arg(out.block_mut());
        // SAFETY: (src, out) as the kernel takes them: 512 bytes in, 448 words out.
        unsafe { args.launch(config(&LaunchDims::linear([1, 1, 1], 32))) }
            .map_err(|e| driver_error("ldmatrix_probe", e))?;
        Ok(self.download(&out)?.into_iter().map(f32::to_bits).collect())
    }

    /// The fragment registers the tensor-core main loops read for one warp (kernels/
    /// conv3d_pipe.cu's fragment_probe_*): `a` and `b` are 16 rows of one K step (16 tf32
    /// or 32 bf16 per row) as 32-bit words (two bf16 per word, the lower k low); 32 words
    /// per lane: for each of the two mma k steps, A and B from the k-major tiles, then A
    /// and B from the mn-major tiles.
    pub fn fragment_probe(
        &self,
        precision: ConvPrecision,
        a: &[u32],
        b: &[u32],
    ) -> Result<Vec<u32>> {
        let name = match precision {
            ConvPrecision::Tf32 => "fragment_probe_tf32",
            ConvPrecision::Bf16 => "fragment_probe_bf16",
            ConvPrecision::F32 => {
                return Err(Error::config(
                    "fragment_probe",
                    "f32 has no tensor-core tiles",
                ));
            }
        };
        if a.len() != 256 || b.len() != 256 {
            return Err(Error::shape(
                "fragment_probe",
                format!(
                    "a {}, b {} words, not 16 rows of 64 bytes",
                    a.len(),
                    b.len()
                ),
            ));
        }
        let words = |v: &[u32]| -> Vec<f32> { v.iter().map(|&w| f32::from_bits(w)).collect() };
        let (a, b) = (self.upload(&words(a))?, self.upload(&words(b))?);
        let mut out = self.alloc(32 * 32)?;
        let f = self.function("conv3d_pipe", name)?;
        let mut args = self.stream().launch_builder(&f);
        args.arg(a.block()).arg(b.block()).arg(out.block_mut());
        // SAFETY: (a, b, out) as the kernel takes them: 1 KiB each in, 1024 words out.
        unsafe { args.launch(config(&LaunchDims::linear([1, 1, 1], 32))) }
            .map_err(|e| driver_error(name, e))?;
        Ok(self.download(&out)?.into_iter().map(f32::to_bits).collect())
    }

    /// The bits of each `x[i]` rounded to TF32 (cvt.rna) and of the BF16 pair
    /// `(x[i], x[i ^ 1])` (nearest even, `x[i]` in the low half), as the tensor-core
    /// kernels round their operands.
    pub fn tc_round_probe(&self, x: &[f32]) -> Result<(Vec<u32>, Vec<u32>)> {
        let n = i32::try_from(x.len())
            .map_err(|_| Error::shape("tc_round_probe", format!("{} elements", x.len())))?;
        let xs = self.upload(x)?;
        let (mut tf32, mut bf16) = (self.alloc(x.len())?, self.alloc(x.len())?);
        if n > 0 {
            let f = self.function("conv3d_pipe", "tc_round_probe")?;
            let mut args = self.stream().launch_builder(&f);
            args.arg(xs.block())
                .arg(&n)
                .arg(tf32.block_mut())
                .arg(bf16.block_mut());
            let dims = LaunchDims::linear([(n as u32).div_ceil(256), 1, 1], 256);
            // SAFETY: (x, n, tf32, bf16) as the kernel takes them; each buffer has n
            // 32-bit elements.
            unsafe { args.launch(config(&dims)) }.map_err(|e| driver_error("tc_round_probe", e))?;
        }
        let bits = |s: &CudaStorage| -> Result<Vec<u32>> {
            Ok(self.download(s)?.into_iter().map(f32::to_bits).collect())
        };
        Ok((bits(&tf32)?, bits(&bf16)?))
    }
}

impl Conv3dKernel for Cuda {
    fn conv3d_forward(
        &self,
        x: &CudaStorage,
        w: &CudaStorage,
        bias: Option<&CudaStorage>,
        g: &ConvGeometry,
    ) -> Result<CudaStorage> {
        let op = "conv3d forward";
        g.validate(op)?;
        check_len(op, "x", x.len(), g.n * g.input_voxels() * g.cin)?;
        check_len(op, "w", w.len(), g.kernel_volume() * g.cin * g.cout)?;
        if let Some(b) = bias {
            check_len(op, "bias", b.len(), g.cout)?;
        }
        self.conv_pass(g, ConvPass::Forward, x, w, bias)
    }

    fn conv3d_backward_data(
        &self,
        dy: &CudaStorage,
        w: &CudaStorage,
        bias: Option<&CudaStorage>,
        g: &ConvGeometry,
    ) -> Result<CudaStorage> {
        let op = "conv3d backward_data";
        g.validate(op)?;
        check_len(op, "dy", dy.len(), g.n * g.output_voxels() * g.cout)?;
        check_len(op, "w", w.len(), g.kernel_volume() * g.cin * g.cout)?;
        if let Some(b) = bias {
            check_len(op, "bias", b.len(), g.cin)?;
        }
        self.conv_pass(g, ConvPass::BackwardData, dy, w, bias)
    }

    fn conv3d_backward_weight(
        &self,
        x: &CudaStorage,
        dy: &CudaStorage,
        g: &ConvGeometry,
    ) -> Result<CudaStorage> {
        let op = "conv3d backward_weight";
        g.validate(op)?;
        // Either operand may be a convolution's input saved packed (`conv3d_saved_input`).
        let contents_len = |s: &CudaStorage| s.packs_only_of().unwrap_or(s.len());
        check_len(op, "x", contents_len(x), g.n * g.input_voxels() * g.cin)?;
        check_len(op, "dy", contents_len(dy), g.n * g.output_voxels() * g.cout)?;
        self.conv_pass(g, ConvPass::BackwardWeight, x, dy, None)
    }

    /// The pack of `x` that this device's weight gradient of `g` reads, alone, where
    /// saving packed inputs is on, packs are kept and no graph capture is in progress, and
    /// that gradient reads `x` packed, into a pack the forward already kept beside `x` or
    /// one of no more bytes than `x` and the packs only `x` holds; else None (the tape
    /// keeps `x`). The pack is also kept beside `x` (a forward pass that reads it finds it).
    /// Keeping `x` keeps the packs beside it too, so a kept pack, however large (the halo
    /// kernels' bordered grids), frees `x`; a pack not yet made is made only where it is no
    /// larger than what keeping `x` would keep: tf32 backward weights over channel-major
    /// packs read one larger (a bordered grid, x packed once per tap shift), which would
    /// keep more than it frees; their bf16x3 packs (6 bytes an element) take the place of x
    /// and its tf32 pack (8). Where another reference holds `x` until the forward ends (a
    /// U-Net's skip connections), the pack adds to the forward's memory until then.
    /// `x` holding only packs already (a saved input) is kept as it is.
    fn conv3d_saved_input(
        &self,
        x: &CudaStorage,
        g: &ConvGeometry,
        transposed: bool,
    ) -> Result<Option<CudaStorage>> {
        let s = self.conv_settings()?;
        if !(s.save_packed_inputs && s.cache_packs)
            || self.capturing()
            || x.packs_only_of().is_some()
        {
            return Ok(None);
        }
        let plan = self.conv_plan(g, ConvPass::BackwardWeight)?;
        let Some([pack_x, pack_dy]) = plan.packs else {
            return Ok(None);
        };
        // A transposed convolution's input is the dy of the weight gradient it runs.
        let pack = if transposed { pack_dy } else { pack_x };
        let kept_bytes = x.len() * std::mem::size_of::<f32>() + x.pack_bytes_held_alone();
        let larger = pack.packed_len() * pack.element_bytes() > kept_bytes;
        if larger && x.packs().get(&pack).is_none() {
            return Ok(None);
        }
        let op = "conv3d saved input";
        check_len(op, "x", x.len(), pack.source_len())?;
        let packed = self.packed(&pack, x)?;
        Ok(Some(CudaStorage::packs_only(
            self.alloc(0)?,
            x.len(),
            pack,
            packed,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv_plan::l1_variant;
    use super::*;

    /// build.rs builds the L1 variant of each tensor-core conv module beside it, and only
    /// the variant's activation gathers go through L1 (cp.async.ca).
    #[test]
    fn l1_variants_are_built_beside_their_modules() {
        let ptx = |name: &str| {
            PTX_MODULES
                .iter()
                .find(|(m, _)| *m == name)
                .map(|(_, p)| *p)
        };
        for module in ["conv3d_pipe", "conv3d_wgmma"] {
            let variant = l1_variant(module);
            assert_eq!(variant, format!("{module}_l1"));
            assert_eq!(ptx(module).is_some(), ptx(variant).is_some(), "{module}");
            if let (Some(plain), Some(l1)) = (ptx(module), ptx(variant)) {
                assert!(!plain.contains("cp.async.ca"), "{module}");
                assert!(l1.contains("cp.async.ca"), "{variant}");
            }
        }
        assert_eq!(l1_variant("conv3d"), "conv3d");
        assert_eq!(
            crate::backend::cuda::BUILT_WITH_PTX,
            ptx("conv3d_pipe").is_some()
        );
    }
}
