//! Run logs: TensorBoard event files, pictures, metrics.jsonl, progress output.
pub mod caption;
pub mod crc32c;
pub mod jsonl;
pub mod picture;
pub mod progress;
pub mod tensorboard;

pub use jsonl::JsonlWriter;
pub use picture::{captioned_overlay, overlay_slices, write_png};
pub use progress::Progress;
pub use tensorboard::EventWriter;
