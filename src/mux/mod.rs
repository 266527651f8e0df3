//! The channel multiplexer: routes incoming frames either straight into a channel's queue
//! (plain `CHANNEL_DATA` for a routed channel, no Python needed) or to a dispatch callback
//! (everything else), and owns the file descriptors of a gateway's connection.
//!
//! Ordering: one reader thread handles frames strictly in wire order, routing or dispatching
//! each before reading the next, so a channel's queue sees items in wire order whichever path
//! they took.

pub mod io;
pub mod outbox;
pub mod queue;

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::codec;
use crate::frame::{Frame, FrameError, FrameReader, CHANNEL_DATA, HEADER_LEN};
pub use queue::{GetError, Item, Queue, SharedStrConfig, StrConfig};

/// Payloads of this size or more are dispatched rather than queued raw: decoding them in the
/// reader thread (as upstream's receiver does) keeps their large allocations off the consumer,
/// usually the main thread, where glibc's main arena returns freed memory to the system and
/// every large allocation pays page faults again (measured: 4 MiB items took 7.5 ms each to
/// decode in the main thread, 1.2 ms in a reader thread).
pub const MAX_ROUTED_PAYLOAD: usize = 256 * 1024;

/// The routing entry of one channel: a weak handle on its queue and its string setting.
pub struct Route<T> {
    tx: flume::WeakSender<Item<T>>,
    strconfig: Arc<SharedStrConfig>,
}

/// What the router did with a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed {
    /// The payload was queued on its channel.
    Queued,
    /// The frame must be handled by the dispatch callback.
    Dispatch(Frame),
}

/// Counters of what the router saw, for metrics and tests.
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Frames routed or dispatched.
    pub frames: AtomicU64,
    /// Their bytes, headers included.
    pub bytes: AtomicU64,
    /// Frames queued directly.
    pub queued: AtomicU64,
    /// Frames handed back for dispatch.
    pub dispatched: AtomicU64,
}

/// The table `channel id -> route`.
pub struct Router<T> {
    routes: Mutex<HashMap<i32, Route<T>>>,
    stats: RouterStats,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            routes: Mutex::new(HashMap::new()),
            stats: RouterStats::default(),
        }
    }
}

impl<T> Router<T> {
    /// An empty table.
    pub fn new() -> Router<T> {
        Router::default()
    }

    /// Creates a queue for `channel` and routes its plain data there from now on, replacing
    /// any earlier route of that id.
    pub fn register(&self, channel: i32, strconfig: StrConfig) -> Queue<T> {
        let queue = Queue::new(strconfig);
        self.routes.lock().insert(channel, queue.route());
        queue
    }

    /// Stops routing `channel`; returns whether it was routed. Once this returns, no further
    /// item is queued by the router for that id.
    pub fn unroute(&self, channel: i32) -> bool {
        self.routes.lock().remove(&channel).is_some()
    }

    /// Whether `channel` is routed.
    pub fn is_routed(&self, channel: i32) -> bool {
        self.routes.lock().contains_key(&channel)
    }

    /// The string setting of `channel` if it is routed and `payload` decodes without Python
    /// help (no channel references): the caller may then decode it itself and hand the result
    /// to [`Router::push_decoded`]. Meant for payloads the router does not queue raw (see
    /// [`MAX_ROUTED_PAYLOAD`]).
    pub fn decodable(&self, channel: i32, payload: &[u8]) -> Option<StrConfig> {
        let strconfig = self.routes.lock().get(&channel)?.strconfig.get();
        match codec::scan(payload) {
            Ok(info) if !info.channel_refs && !info.needs_python_check => Some(strconfig),
            _ => None,
        }
    }

    /// Queues an already decoded item on `channel`; gives it back if the channel is not routed
    /// (any more) or its queue is gone.
    pub fn push_decoded(&self, channel: i32, item: T) -> Result<(), T> {
        let mut routes = self.routes.lock();
        let Some(tx) = routes.get(&channel).and_then(|route| route.tx.upgrade()) else {
            return Err(item);
        };
        // Under the lock, as in `route`: once `unroute` returns, nothing is pushed any more.
        match tx.send(Item::Obj(item)) {
            Ok(()) => Ok(()),
            Err(flume::SendError(item)) => {
                routes.remove(&channel);
                match item {
                    Item::Obj(item) => Err(item),
                    // Only `Obj` was sent.
                    Item::Raw { .. } | Item::End => Ok(()),
                }
            }
        }
    }

    /// Drops every route.
    pub fn clear(&self) {
        let old = std::mem::take(&mut *self.routes.lock());
        drop(old);
    }

    /// The counters.
    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// Queues `frame` if it is plain data, smaller than [`MAX_ROUTED_PAYLOAD`], for a routed
    /// channel, and its payload decodes without Python help; hands it back for dispatch
    /// otherwise.
    pub fn route(&self, frame: Frame) -> Routed {
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        let size = (HEADER_LEN + frame.payload.len()) as u64;
        self.stats.bytes.fetch_add(size, Ordering::Relaxed);
        let routed = self.route_counted(frame);
        let counter = match routed {
            Routed::Queued => &self.stats.queued,
            Routed::Dispatch(_) => &self.stats.dispatched,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        routed
    }

    fn route_counted(&self, frame: Frame) -> Routed {
        if frame.code != CHANNEL_DATA
            || frame.payload.len() >= MAX_ROUTED_PAYLOAD
            || !self.is_routed(frame.channel)
        {
            return Routed::Dispatch(frame);
        }
        // Scanned outside the lock: other threads register and unroute meanwhile.
        match codec::scan(&frame.payload) {
            Ok(info) if !info.channel_refs && !info.needs_python_check => {}
            _ => return Routed::Dispatch(frame),
        }
        let mut routes = self.routes.lock();
        let Some(route) = routes.get(&frame.channel) else {
            return Routed::Dispatch(frame);
        };
        let Some(tx) = route.tx.upgrade() else {
            routes.remove(&frame.channel);
            return Routed::Dispatch(frame);
        };
        let strconfig = route.strconfig.get();
        let Frame {
            code,
            channel,
            payload,
        } = frame;
        // The push happens under the lock so that `unroute` returning means no late push.
        match tx.send(Item::Raw { payload, strconfig }) {
            Ok(()) => Routed::Queued,
            Err(flume::SendError(item)) => {
                routes.remove(&channel);
                let payload = match item {
                    Item::Raw { payload, .. } => payload,
                    _ => Vec::new(),
                };
                Routed::Dispatch(Frame {
                    code,
                    channel,
                    payload,
                })
            }
        }
    }
}

/// Why [`run_reader`] returned.
#[derive(Debug)]
pub enum ReaderExit<E> {
    /// Reading failed: end of stream, a malformed header, an I/O error or a local close.
    Stream(FrameError),
    /// The dispatch callback asked to stop.
    Stopped(E),
}

/// Frames already complete in the reader's buffer, routed one by one; what needs dispatching
/// is handed out. Lets a dispatcher handle a burst of frames under one GIL acquisition.
pub struct Burst<'a, R, T> {
    reader: &'a mut FrameReader<R>,
    router: &'a Router<T>,
}

impl<R: Read, T> Burst<'_, R, T> {
    /// The next buffered frame that needs dispatching (routing the ones before it), or `None`
    /// when no further complete frame is buffered. Never blocks.
    pub fn next_dispatch(&mut self) -> Option<Frame> {
        loop {
            let frame = self.reader.read_buffered_frame()?;
            if let Routed::Dispatch(frame) = self.router.route(frame) {
                return Some(frame);
            }
        }
    }
}

/// The reader thread's loop: reads frames until the stream ends or `dispatch` returns an
/// error, routing each frame first. `dispatch` gets a frame and a [`Burst`] with which it may
/// take further already-buffered frames in order before returning.
pub fn run_reader<R: Read, T, E>(
    reader: &mut FrameReader<R>,
    router: &Router<T>,
    mut dispatch: impl FnMut(Frame, &mut Burst<'_, R, T>) -> Result<(), E>,
) -> ReaderExit<E> {
    loop {
        let frame = match reader.read_frame() {
            Ok(frame) => frame,
            Err(err) => return ReaderExit::Stream(err),
        };
        if let Routed::Dispatch(frame) = router.route(frame) {
            let mut burst = Burst {
                reader: &mut *reader,
                router,
            };
            if let Err(err) = dispatch(frame, &mut burst) {
                return ReaderExit::Stopped(err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;
    use std::io::Cursor;
    use std::time::Duration;

    const INT_42: &[u8] = b"F\x00\x00\x00\x2aQ";

    fn data(channel: i32, payload: &[u8]) -> Frame {
        Frame {
            code: CHANNEL_DATA,
            channel,
            payload: payload.to_vec(),
        }
    }

    fn wire(frames: &[(i8, i32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (code, channel, payload) in frames {
            match encode_frame(*code, *channel, payload) {
                Ok(bytes) => out.extend(bytes),
                Err(err) => panic!("{err}"),
            }
        }
        out
    }

    #[test]
    fn routes_plain_data_only() {
        let router: Router<u32> = Router::new();
        let queue = router.register(3, (true, false));
        assert_eq!(router.route(data(3, INT_42)), Routed::Queued);
        // unknown channel, other codes, channel refs and garbage go to dispatch
        assert!(matches!(router.route(data(5, INT_42)), Routed::Dispatch(_)));
        let close = Frame {
            code: 5,
            channel: 3,
            payload: Vec::new(),
        };
        assert!(matches!(router.route(close), Routed::Dispatch(_)));
        assert!(matches!(
            router.route(data(3, b"B\x00\x00\x00\x01Q")),
            Routed::Dispatch(_)
        ));
        assert!(matches!(
            router.route(data(3, b"\xff")),
            Routed::Dispatch(_)
        ));
        assert_eq!(queue.len(), 1);
        assert_eq!(
            queue.try_get(),
            Some(Item::Raw {
                payload: INT_42.to_vec(),
                strconfig: (true, false)
            })
        );
    }

    #[test]
    fn strconfig_change_applies_to_later_items() {
        let router: Router<u32> = Router::new();
        let queue = router.register(1, (true, false));
        assert_eq!(router.route(data(1, INT_42)), Routed::Queued);
        queue.strconfig().set((false, true));
        assert_eq!(router.route(data(1, INT_42)), Routed::Queued);
        let configs: Vec<_> = std::iter::from_fn(|| queue.try_get())
            .map(|item| match item {
                Item::Raw { strconfig, .. } => strconfig,
                _ => (false, false),
            })
            .collect();
        assert_eq!(configs, vec![(true, false), (false, true)]);
    }

    #[test]
    fn unroute_keeps_queued_items() {
        let router: Router<u32> = Router::new();
        let queue = router.register(1, (true, false));
        assert_eq!(router.route(data(1, INT_42)), Routed::Queued);
        assert!(router.unroute(1));
        assert!(!router.unroute(1));
        assert!(matches!(router.route(data(1, INT_42)), Routed::Dispatch(_)));
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn dropped_queue_removes_route() {
        let router: Router<u32> = Router::new();
        let queue = router.register(1, (true, false));
        drop(queue);
        assert!(matches!(router.route(data(1, INT_42)), Routed::Dispatch(_)));
        assert!(!router.is_routed(1));
    }

    #[test]
    fn reader_loop_keeps_wire_order() {
        let router: Router<String> = Router::new();
        let queue = router.register(1, (true, false));
        let bytes = wire(&[
            (4, 1, INT_42),
            (4, 1, b"B\x00\x00\x00\x01Q"),
            (4, 1, INT_42),
            (5, 1, b""),
        ]);
        let mut reader = FrameReader::new(Cursor::new(bytes));
        // The dispatcher plays the Python layer: decodes what it gets and queues it itself.
        let exit = run_reader(&mut reader, &router, |frame, burst| -> Result<(), ()> {
            let mut next = Some(frame);
            while let Some(frame) = next {
                let item = match frame.code {
                    CHANNEL_DATA => Item::Obj(format!("dispatched {}", frame.payload.len())),
                    _ => Item::End,
                };
                queue.put(item);
                next = burst.next_dispatch();
            }
            Ok(())
        });
        assert!(matches!(
            exit,
            ReaderExit::Stream(FrameError::HeaderEof { got: 0 })
        ));
        let kinds: Vec<String> = std::iter::from_fn(|| queue.try_get())
            .map(|item| match item {
                Item::Raw { .. } => "raw".to_string(),
                Item::Obj(text) => text,
                Item::End => "end".to_string(),
            })
            .collect();
        assert_eq!(kinds, ["raw", "dispatched 6", "raw", "end"]);
    }

    #[test]
    fn reader_loop_stops_on_dispatch_error_and_garbage() {
        let router: Router<u32> = Router::new();
        let bytes = wire(&[(0, 1, b""), (4, 9, INT_42)]);
        let mut reader = FrameReader::new(Cursor::new(bytes));
        let mut seen = 0;
        let exit = run_reader(&mut reader, &router, |frame, _| {
            seen += 1;
            if frame.code == CHANNEL_DATA {
                Err("stop")
            } else {
                Ok(())
            }
        });
        assert!(matches!(exit, ReaderExit::Stopped("stop")));
        assert_eq!(seen, 2);

        let mut bytes = wire(&[(4, 1, INT_42)]);
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 0, 0, 0, 0]);
        let mut reader = FrameReader::new(Cursor::new(bytes));
        let exit = run_reader(&mut reader, &router, |_, _| -> Result<(), ()> { Ok(()) });
        assert!(matches!(
            exit,
            ReaderExit::Stream(FrameError::BadCode { .. })
        ));
    }

    #[test]
    fn concurrent_unroute_never_loses_or_misplaces_items() {
        // A reader thread routes 10_000 frames while the main thread unroutes midway; every
        // frame ends up exactly once either in the queue (before unroute) or dispatched.
        let router: Arc<Router<u32>> = Arc::new(Router::new());
        let queue = router.register(1, (true, false));
        let (done_tx, done_rx) = flume::unbounded::<usize>();
        let reader_router = Arc::clone(&router);
        let handle = std::thread::spawn(move || {
            let mut dispatched = 0usize;
            for _ in 0..10_000 {
                if let Routed::Dispatch(_) = reader_router.route(data(1, INT_42)) {
                    dispatched += 1;
                }
            }
            let _ = done_tx.send(dispatched);
        });
        std::thread::sleep(Duration::from_millis(1));
        router.unroute(1);
        let queued_at_unroute = queue.len();
        let dispatched = done_rx.recv_timeout(Duration::from_secs(30)).unwrap_or(0);
        let _ = handle.join();
        assert_eq!(queue.len(), queued_at_unroute);
        assert_eq!(queued_at_unroute + dispatched, 10_000);
    }
}
