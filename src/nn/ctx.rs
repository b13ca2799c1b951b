//! The context of one forward pass: whether gradients are recorded, train or eval mode,
//! and the seed of this step's dropout masks.
use crate::autograd::Tape;
use crate::backend::Backend;
use std::cell::Cell;

pub struct Ctx<B: Backend> {
    tape: Option<Tape<B>>,
    train: bool,
    seed: u64,
    next_stream: Cell<u32>,
}

impl<B: Backend> Ctx<B> {
    /// Training: records on `tape`, batch statistics and dropout on. `seed` should differ
    /// per step (e.g. run seed mixed with the step) so each step draws new masks.
    pub fn train(tape: Tape<B>, seed: u64) -> Self {
        Self {
            tape: Some(tape),
            train: true,
            seed,
            next_stream: Cell::new(0),
        }
    }
    /// Inference: records nothing, moving statistics, no dropout.
    pub fn eval() -> Self {
        Self {
            tape: None,
            train: false,
            seed: 0,
            next_stream: Cell::new(0),
        }
    }
    pub fn tape(&self) -> Option<&Tape<B>> {
        self.tape.as_ref()
    }
    pub fn is_train(&self) -> bool {
        self.train
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// A distinct random stream for each dropout layer, in call order.
    pub fn dropout_stream(&self) -> u32 {
        let s = self.next_stream.get();
        self.next_stream.set(s + 1);
        s
    }
}
