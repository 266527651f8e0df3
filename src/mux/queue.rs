//! Per-channel queues: unbounded, multi-producer, filled by the reader thread (raw payloads)
//! and by Python code (objects), drained by `receive()`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A string coercion setting `(py2str_as_py3str, py3str_as_py2str)`.
pub type StrConfig = (bool, bool);

/// One queued entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<T> {
    /// A `CHANNEL_DATA` payload not yet decoded, with the channel's string setting at the time
    /// it arrived.
    Raw {
        /// The serialized item.
        payload: Vec<u8>,
        /// Decode with this string coercion.
        strconfig: StrConfig,
    },
    /// An already built object.
    Obj(T),
    /// End of the stream of items.
    End,
}

/// A string coercion setting shared between a queue and its route, changeable at any time.
#[derive(Debug)]
pub struct SharedStrConfig(AtomicU8);

impl SharedStrConfig {
    /// A new cell holding `value`.
    pub fn new(value: StrConfig) -> SharedStrConfig {
        SharedStrConfig(AtomicU8::new(pack(value)))
    }

    /// The current setting.
    pub fn get(&self) -> StrConfig {
        let bits = self.0.load(Ordering::Acquire);
        (bits & 1 != 0, bits & 2 != 0)
    }

    /// Replaces the setting; items arriving afterwards use it.
    pub fn set(&self, value: StrConfig) {
        self.0.store(pack(value), Ordering::Release);
    }
}

fn pack((a, b): StrConfig) -> u8 {
    u8::from(a) | (u8::from(b) << 1)
}

/// Why [`Queue::get_timeout`] returned without an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetError {
    /// Nothing arrived in time.
    Timeout,
}

/// A channel's receive queue.
pub struct Queue<T> {
    tx: flume::Sender<Item<T>>,
    rx: flume::Receiver<Item<T>>,
    strconfig: Arc<SharedStrConfig>,
}

impl<T> Queue<T> {
    /// An empty queue with the given string setting.
    pub fn new(strconfig: StrConfig) -> Queue<T> {
        let (tx, rx) = flume::unbounded();
        Queue {
            tx,
            rx,
            strconfig: Arc::new(SharedStrConfig::new(strconfig)),
        }
    }

    /// Appends an item.
    pub fn put(&self, item: Item<T>) {
        // The queue owns a receiver, so the channel cannot be disconnected here.
        let _ = self.tx.send(item);
    }

    /// Takes the oldest item if there is one.
    pub fn try_get(&self) -> Option<Item<T>> {
        self.rx.try_recv().ok()
    }

    /// Waits up to `timeout` for an item.
    pub fn get_timeout(&self, timeout: Duration) -> Result<Item<T>, GetError> {
        self.rx.recv_timeout(timeout).map_err(|_| GetError::Timeout)
    }

    /// Number of queued items.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The string setting cell shared with the queue's route.
    pub fn strconfig(&self) -> &Arc<SharedStrConfig> {
        &self.strconfig
    }

    /// The sending half used by the router.
    pub(crate) fn route(&self) -> super::Route<T> {
        super::Route {
            tx: self.tx.downgrade(),
            strconfig: Arc::clone(&self.strconfig),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_mixing_raw_and_objects() {
        let queue: Queue<u32> = Queue::new((true, false));
        queue.put(Item::Raw {
            payload: b"a".to_vec(),
            strconfig: (true, false),
        });
        queue.put(Item::Obj(7));
        queue.put(Item::End);
        assert_eq!(queue.len(), 3);
        assert!(matches!(queue.try_get(), Some(Item::Raw { .. })));
        assert_eq!(queue.try_get(), Some(Item::Obj(7)));
        assert_eq!(queue.get_timeout(Duration::from_millis(1)), Ok(Item::End));
        assert!(queue.is_empty());
        assert_eq!(
            queue.get_timeout(Duration::from_millis(5)),
            Err(GetError::Timeout)
        );
    }

    #[test]
    fn strconfig_cell() {
        let cell = SharedStrConfig::new((true, false));
        assert_eq!(cell.get(), (true, false));
        for value in [(false, false), (false, true), (true, true), (true, false)] {
            cell.set(value);
            assert_eq!(cell.get(), value);
        }
    }
}
