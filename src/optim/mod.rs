//! Optimisers, learning-rate schedules, gradient clipping and regularisation.
