//! The CUDA backend's buffer: a pool block, and the conversions of its contents that the
//! tensor-core convolutions made from it (`Derived`).
//!
//! A convolution on the tensor cores reads its operands converted to bf16 or tf32 ("packs",
//! see `conv_plan::ConvPack`). Two passes read each activation the same way: the forward
//! and the weight gradient read x, the data and the weight gradients read dy. Kept beside
//! the buffer, a pack is made once instead of twice, and a benchmark that repeats one pass
//! times the convolution on operands already in bf16, as cuDNN's bf16 cases are timed. The
//! norms write the packs of the activations they produce themselves (norm.rs). The buffer's
//! contents change only through `block_mut`, which drops every conversion, and the
//! conversions are returned to the pool with the buffer.
//!
//! A buffer may also hold only a conversion: what the tape keeps of a convolution's input
//! for the weight gradient, when that gradient reads the input packed
//! (`Conv3dKernel::conv3d_saved_input`). Its f32 contents are gone, and its `len` is 0 so
//! that every operand check refuses it; only the convolutions' packed operands read it.
use super::conv_plan::ConvPack;
use super::device::StreamAlloc;
use super::pool::PoolBlock;
use cudarc::driver::CudaSlice;
use std::sync::{Arc, Mutex, MutexGuard};

/// A device buffer of f32: a pool block, the element count in use, and its conversions.
pub struct CudaStorage {
    block: PoolBlock<StreamAlloc>,
    packs: Derived<ConvPack, CudaStorage>,
    /// Set on a buffer that holds only packs (see the module docs): the element count of
    /// the f32 contents they were made from. `block` is then an empty stub.
    packs_only: Option<usize>,
}

impl CudaStorage {
    pub(super) fn new(block: PoolBlock<StreamAlloc>) -> Self {
        Self {
            block,
            packs: Derived::default(),
            packs_only: None,
        }
    }
    /// A buffer that holds only `packed`, the `pack` of contents of `source_len` elements,
    /// in place of the block of `stub` (an empty buffer).
    pub(super) fn packs_only(
        stub: CudaStorage,
        source_len: usize,
        pack: ConvPack,
        packed: Arc<CudaStorage>,
    ) -> Self {
        Self {
            block: stub.block,
            packs: Derived::with(pack, packed),
            packs_only: Some(source_len),
        }
    }
    /// For a buffer that holds only packs, the element count of the contents they were
    /// made from.
    pub(super) fn packs_only_of(&self) -> Option<usize> {
        self.packs_only
    }
    /// Elements requested (the block may hold more).
    pub fn len(&self) -> usize {
        self.block.len()
    }
    pub fn is_empty(&self) -> bool {
        self.block.is_empty()
    }
    pub fn block(&self) -> &CudaSlice<f32> {
        self.block.block()
    }
    /// The block, to be written: the conversions made from the old contents are dropped.
    pub fn block_mut(&mut self) -> &mut CudaSlice<f32> {
        self.packs.clear();
        self.block.block_mut()
    }
    /// The conversions of this buffer the convolutions keep (see the module docs).
    pub(super) fn packs(&self) -> &Derived<ConvPack, CudaStorage> {
        &self.packs
    }
    /// Bytes of the conversions kept beside this buffer that nothing else holds (a saved
    /// input holds the pack it was saved as): what dropping the buffer would free besides
    /// its block.
    pub(super) fn pack_bytes_held_alone(&self) -> usize {
        self.packs
            .lock()
            .iter()
            .filter(|(_, packed)| Arc::strong_count(packed) == 1)
            .map(|(pack, _)| pack.packed_len() * pack.element_bytes())
            .sum()
    }
}

/// Values computed from a buffer's contents, each under the key that says how.
pub struct Derived<K, V> {
    entries: Mutex<Vec<(K, Arc<V>)>>,
}

impl<K, V> Default for Derived<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
        }
    }
}

impl<K: PartialEq, V> Derived<K, V> {
    /// Holding `value` under `key`.
    pub fn with(key: K, value: Arc<V>) -> Self {
        Self {
            entries: Mutex::new(vec![(key, value)]),
        }
    }

    /// The value under `key`, made by `make` (and kept) when there is none.
    pub fn get_or_try_insert<E>(
        &self,
        key: K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let mut entries = self.lock();
        if let Some((_, v)) = entries.iter().find(|(k, _)| *k == key) {
            return Ok(v.clone());
        }
        let v = Arc::new(make()?);
        entries.push((key, v.clone()));
        Ok(v)
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        self.lock()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Drops every value (the contents they came from are about to change).
    pub fn clear(&mut self) {
        self.entries
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(K, Arc<V>)>> {
        // A panic inside `make` leaves the list as it was: entries are pushed whole.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_are_made_once_per_key_and_dropped_by_clear() {
        let mut d: Derived<(u8, u32), Vec<u32>> = Derived::default();
        let made = std::cell::Cell::new(0);
        let get = |d: &Derived<(u8, u32), Vec<u32>>, key: (u8, u32)| {
            d.get_or_try_insert(key, || {
                made.set(made.get() + 1);
                Ok::<_, String>(vec![key.1; 3])
            })
        };
        let first = get(&d, (1, 7)).unwrap();
        let again = get(&d, (1, 7)).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(*get(&d, (2, 7)).unwrap(), vec![7; 3]);
        assert!(Arc::ptr_eq(&d.get(&(1, 7)).unwrap(), &first));
        assert!(d.get(&(3, 7)).is_none());
        assert_eq!((d.count(), made.get()), (2, 2));
        d.clear();
        assert_eq!(d.count(), 0);
        // A value handed out before `clear` stays valid for its holder.
        assert_eq!(*first, vec![7; 3]);
        let remade = get(&d, (1, 7)).unwrap();
        assert!(!Arc::ptr_eq(&first, &remade));
        assert_eq!(made.get(), 3);
    }

    #[test]
    fn a_failed_make_keeps_nothing() {
        let d: Derived<u8, u8> = Derived::default();
        let err = d.get_or_try_insert(1, || Err::<u8, _>("no memory"));
        assert_eq!(err.unwrap_err(), "no memory");
        assert_eq!(d.count(), 0);
        assert_eq!(*d.get_or_try_insert(1, || Ok::<_, ()>(5)).unwrap(), 5);
    }
}
