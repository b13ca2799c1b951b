//! Device-time measurement: CUDA events recorded on the backend's stream around the work a
//! closure enqueues (benchmarks; host clocks would time the launches, not the kernels).
use super::device::{driver_error, Cuda};
use crate::error::Result;
use cudarc::driver::sys::CUevent_flags;

impl Cuda {
    /// Milliseconds of device time between an event recorded before `run` and one recorded
    /// after it; waits for the second event.
    pub fn time_ms(&self, run: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = self
            .stream()
            .record_event(flags)
            .map_err(|e| driver_error("recording an event", e))?;
        run()?;
        let end = self
            .stream()
            .record_event(flags)
            .map_err(|e| driver_error("recording an event", e))?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(|e| driver_error("reading event times", e))?;
        Ok(ms as f64)
    }
}
