//! Training progress on stderr: a live bar with loss, throughput and ETA on a terminal, plain
//! log lines at a fixed interval otherwise (files and pipes should not fill with redraws).
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

enum Output {
    Bar(ProgressBar),
    Lines {
        sink: Box<dyn Write + Send>,
        every: Duration,
        last: Option<Instant>,
    },
}

pub struct Progress {
    total: u64,
    /// Iterations already done when this run started (non-zero when resuming).
    first: u64,
    /// Samples processed since this run started.
    samples: u64,
    start: Instant,
    output: Output,
}

/// "1h02m03s", "4m05s", "12s".
fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}

/// The log line for `done` of `total` iterations after `elapsed` seconds of this run.
fn status_line(done: u64, total: u64, first: u64, samples: u64, loss: f64, elapsed: f64) -> String {
    let iters = done.saturating_sub(first) as f64;
    let percent = if total == 0 {
        100.0
    } else {
        100.0 * done as f64 / total as f64
    };
    let mut line = format!("iter {done}/{total} ({percent:.1}%)  loss {loss:.4}");
    if elapsed > 0.0 && iters > 0.0 {
        let rate = iters / elapsed;
        let eta = total.saturating_sub(done) as f64 / rate;
        line += &format!(
            "  {rate:.2} it/s  {:.2} samples/s  elapsed {}  eta {}",
            samples as f64 / elapsed,
            format_duration(elapsed),
            format_duration(eta)
        );
    }
    line
}

impl Progress {
    /// Progress of `total` iterations of which `done` are already done: a bar when stderr
    /// is a terminal, else a line on stderr every `every`.
    pub fn new(total: u64, done: u64, every: Duration) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise} eta {eta_precise}]",
            )
            .expect("the template is valid")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_position(done);
            bar.reset_eta();
            Self::with_output(total, done, Output::Bar(bar))
        } else {
            Self::lines(total, done, every, Box::new(std::io::stderr()))
        }
    }

    /// Plain lines into `sink`: at the first update, then at most one per `every`, and at the end.
    pub fn lines(total: u64, done: u64, every: Duration, sink: Box<dyn Write + Send>) -> Self {
        Self::with_output(
            total,
            done,
            Output::Lines {
                sink,
                every,
                last: None,
            },
        )
    }

    fn with_output(total: u64, done: u64, output: Output) -> Self {
        Self {
            total,
            first: done,
            samples: 0,
            start: Instant::now(),
            output,
        }
    }

    /// Iteration `done` (counting from 1) finished with `loss` after `samples` more samples.
    pub fn update(&mut self, done: u64, loss: f64, samples: u64) {
        self.samples += samples;
        let elapsed = self.start.elapsed().as_secs_f64();
        match &mut self.output {
            Output::Bar(bar) => {
                let rate = self.samples as f64 / elapsed.max(1e-9);
                bar.set_message(format!("loss {loss:.4} {rate:.2} samples/s"));
                bar.set_position(done);
            }
            Output::Lines { sink, every, last } => {
                let now = Instant::now();
                let due =
                    last.is_none_or(|t| now.duration_since(t) >= *every) || done >= self.total;
                if due {
                    *last = Some(now);
                    let line =
                        status_line(done, self.total, self.first, self.samples, loss, elapsed);
                    let _ = writeln!(sink, "{line}");
                }
            }
        }
    }

    /// A message that should not be overwritten by the bar (validation results, warnings).
    pub fn println(&mut self, msg: &str) {
        match &mut self.output {
            Output::Bar(bar) => bar.println(msg),
            Output::Lines { sink, .. } => {
                let _ = writeln!(sink, "{msg}");
            }
        }
    }

    pub fn finish(&mut self) {
        if let Output::Bar(bar) = &self.output {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn status_line_reports_rate_and_eta() {
        // Resumed at 100; 50 iterations of 2 samples in 25 s: 2 it/s, 150 left -> 75 s.
        let line = status_line(150, 300, 100, 100, 0.123456, 25.0);
        assert_eq!(
            line,
            "iter 150/300 (50.0%)  loss 0.1235  2.00 it/s  4.00 samples/s  elapsed 25s  eta 1m15s"
        );
        assert_eq!(
            status_line(0, 10, 0, 0, 1.0, 0.0),
            "iter 0/10 (0.0%)  loss 1.0000"
        );
        assert_eq!(format_duration(3723.0), "1h02m03s");
    }

    #[test]
    fn plain_lines_are_rate_limited_but_show_first_and_last() {
        let out = Shared::default();
        let mut p = Progress::lines(5, 0, Duration::from_secs(3600), Box::new(out.clone()));
        for i in 1..=5 {
            p.update(i, 0.5, 2);
        }
        p.println("validation dice 0.9");
        p.finish();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("iter 1/5 (20.0%)  loss 0.5000"),
            "{text}"
        );
        assert!(lines[1].starts_with("iter 5/5 (100.0%)"), "{text}");
        assert_eq!(lines[2], "validation dice 0.9");
    }
}
