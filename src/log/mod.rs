//! Run logs: TensorBoard event files, metrics.jsonl, progress output.
