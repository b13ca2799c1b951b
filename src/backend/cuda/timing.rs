//! Device-time measurement for benchmarks (host clocks would time the launches, not the
//! kernels): CUDA events around the work a closure enqueues, or around replays of a CUDA
//! graph that captured the closure's work, which leaves the host's launch overhead out as
//! scripts/bench_reference.py does for PyTorch.
use super::device::{driver_error, Cuda};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use cudarc::driver::sys::{
    CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode, CUstreamCaptureStatus,
};
use cudarc::driver::{CudaGraph, CudaStream, DriverError};
use std::sync::Arc;

/// Device time one graph replay aims at, so that it is long enough to time well.
pub const GRAPH_REPLAY_MS: f64 = 2.0;
/// The most calls captured into one graph.
pub const MAX_GRAPH_REPS: usize = 50;

/// Calls to capture into one graph for a case whose eager call takes `eager_ms`: enough
/// for a replay of about [`GRAPH_REPLAY_MS`], 1 to [`MAX_GRAPH_REPS`] (the reference's
/// rule; eager times under 1 us count as 1 us).
pub fn graph_reps(eager_ms: f64) -> usize {
    let reps = (GRAPH_REPLAY_MS / eager_ms.max(1e-3)).ceil();
    (reps as usize).clamp(1, MAX_GRAPH_REPS)
}

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

    /// Device milliseconds per call of `run`, once per replay: `reps` calls captured into
    /// one CUDA graph, one untimed replay, then `replays` replays enqueued back to back,
    /// each between two events, divided by `reps`.
    ///
    /// `run` must have run before (warm-up): during the capture every buffer must come
    /// from the pool's cache. `Ok(Err(why))` when the calls could not be captured or the
    /// graph not instantiated or uploaded (a call allocates device memory, copies from or
    /// to the host, synchronizes; the pool does not cache): the capture is over, nothing
    /// was replayed and the stream is usable, so the caller can time `run` eagerly. `Err`
    /// for failures of the device itself (a replay or the events).
    pub fn time_graph_ms(
        &self,
        run: &mut dyn FnMut() -> Result<()>,
        reps: usize,
        replays: usize,
    ) -> Result<std::result::Result<Vec<f64>, String>> {
        if reps == 0 || replays == 0 {
            return Err(Error::Backend {
                backend: "cuda",
                msg: format!("graph timing of {reps} calls per replay, {replays} replays"),
            });
        }
        if !self.pool_caching() {
            return Ok(Err(
                "the pool does not cache (VOXSEG_POOL=off), so every call allocates".into(),
            ));
        }
        // Earlier work's errors surface here rather than as a failed capture.
        self.synchronize()?;
        // Declared before the graph so that it is released after the graph is destroyed:
        // until then the blocks the captured kernels use stay cached at their addresses
        // (nothing frees them to the driver) and no call allocates device memory.
        let _hold = self.hold_pool();
        let graph = match Capture::begin(self).and_then(|c| c.calls(run, reps)) {
            Ok(graph) => graph,
            Err(why) => return Ok(Err(why)),
        };
        if let Err(e) = graph.upload() {
            return Ok(Err(format!("uploading the graph: {e}")));
        }
        graph
            .launch()
            .map_err(|e| driver_error("replaying a graph", e))?;
        self.synchronize()?;
        let stream = self.stream();
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let event = |s: &Arc<CudaStream>| {
            s.record_event(flags)
                .map_err(|e| driver_error("recording an event", e))
        };
        let mut events = Vec::with_capacity(replays);
        for _ in 0..replays {
            let start = event(stream)?;
            graph
                .launch()
                .map_err(|e| driver_error("replaying a graph", e))?;
            events.push((start, event(stream)?));
        }
        let per_call = events
            .iter()
            .map(|(start, end)| {
                let ms = start
                    .elapsed_ms(end)
                    .map_err(|e| driver_error("reading event times", e))?;
                Ok(ms as f64 / reps as f64)
            })
            .collect::<Result<Vec<f64>>>()?;
        drop(graph);
        Ok(Ok(per_call))
    }
}

/// A capture of the device's stream in progress. Dropped without `calls` finishing it (a
/// call panicked), it still ends the capture and discards what was recorded.
struct Capture<'a> {
    cuda: &'a Cuda,
    open: bool,
}

impl<'a> Capture<'a> {
    /// Global mode, torch.cuda.graph's default: a call that is unsafe during a capture (a
    /// synchronous allocation or free, a synchronization, an event query) fails and
    /// invalidates the capture instead of being recorded wrongly.
    fn begin(cuda: &'a Cuda) -> std::result::Result<Self, String> {
        cuda.stream()
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL)
            .map_err(|e| format!("beginning the capture: {e}"))?;
        cuda.set_capturing(true);
        Ok(Self { cuda, open: true })
    }

    /// `reps` calls of `run` recorded, the capture ended (also after a failed call) and
    /// the graph instantiated.
    fn calls(
        mut self,
        run: &mut dyn FnMut() -> Result<()>,
        reps: usize,
    ) -> std::result::Result<CudaGraph, String> {
        let ran = (0..reps).try_for_each(|_| run());
        let ended = self.end();
        ran.map_err(|e| format!("a captured call failed: {e}"))?;
        match ended {
            Ok(Some(graph)) => Ok(graph),
            Ok(None) => Err("the capture recorded no work".into()),
            Err(e) => Err(format!(
                "ending the capture or instantiating the graph: {e}"
            )),
        }
    }

    fn end(&mut self) -> std::result::Result<Option<CudaGraph>, DriverError> {
        self.open = false;
        self.cuda.set_capturing(false);
        let stream = self.cuda.stream();
        let flags = CUgraphInstantiate_flags(0);
        let ended = stream.end_capture(flags);
        // cudarc first reports (and clears) an error an earlier drop stored, without
        // ending the capture: end it then, discarding the graph.
        if ended.is_err()
            && stream
                .capture_status()
                .is_ok_and(|s| s != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
        {
            drop(stream.end_capture(flags));
        }
        ended
    }
}

impl Drop for Capture<'_> {
    fn drop(&mut self) {
        if self.open {
            drop(self.end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_reps_fill_about_two_milliseconds() {
        assert_eq!(graph_reps(0.1), 20);
        assert_eq!(graph_reps(0.3), 7, "2 / 0.3 = 6.67 rounds up");
        assert_eq!(graph_reps(0.01), MAX_GRAPH_REPS);
        assert_eq!(graph_reps(0.0), MAX_GRAPH_REPS);
        assert_eq!(graph_reps(2.0), 1);
        assert_eq!(graph_reps(150.0), 1);
        assert_eq!(graph_reps(f64::NAN), MAX_GRAPH_REPS);
        assert_eq!(graph_reps(f64::INFINITY), 1);
    }
}
