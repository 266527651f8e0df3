//! Send coalescing: the write side of a connection with a buffer for bursts of small frames.
//!
//! A frame sent on its own is written by the sending thread at once, as before. A small frame
//! that follows the previous send within [`BURST_GAP`], or finds frames already waiting or being
//! written, is appended to a buffer instead, and a flusher thread writes the buffer with one
//! system call per batch. A burst of many small messages then costs the sender a copy per
//! message instead of a `write` (and the peer one wake-up per batch instead of one per message),
//! while an isolated message, such as each half of a request/response exchange, never waits for
//! the flusher.
//!
//! Ordering: frames leave in the order they were handed in. Frames are taken out of the buffer
//! only by the holder of the write token, and a direct write first writes whatever the buffer
//! holds, so a frame never overtakes one handed in before it.
//!
//! Back-pressure: once [`HIGH_WATER`] bytes wait in the buffer, senders wait (see
//! [`Outbox::wait_for_room`]) as they would on a full pipe.
//!
//! Failures: a write by the flusher that fails (the peer went away, the side was closed) is
//! remembered, the buffer is dropped, and every later send fails with it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::io::{WriteError, WriteSide, WriteToken, CHECK_INTERVAL};
use crate::frame::{wire_len, FrameError, FrameHeader, HEADER_LEN};

/// A send this soon after the previous one is taken as part of a burst and buffered.
pub const BURST_GAP: Duration = Duration::from_micros(10);

/// Frames larger than this are never buffered: copying them costs more than a system call.
pub const MAX_BUFFERED_FRAME: usize = 16 * 1024;

/// The flusher lets a batch grow while frames keep coming (each within [`LINGER_GAP`] of the
/// last), up to this many bytes or for at most [`LINGER_MAX`].
pub const LINGER_BATCH: usize = 32 * 1024;

/// See [`LINGER_BATCH`]; also the longest a burst's last frame waits for the flusher.
pub const LINGER_GAP: Duration = Duration::from_micros(20);

/// See [`LINGER_BATCH`].
pub const LINGER_MAX: Duration = Duration::from_micros(500);

/// Senders wait for the flusher once this many bytes are buffered.
pub const HIGH_WATER: usize = 64 * 1024;

/// What [`Outbox::offer`] did with a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// The frame is buffered; the flusher writes it. `wait` asks the caller to wait for room
    /// ([`Outbox::wait_for_room`]) before sending more.
    Buffered { wait: bool },
    /// Nothing is buffered and no burst is on: the caller writes the frame itself
    /// ([`Outbox::write_direct`]).
    Direct,
}

/// Why an earlier buffered write failed; later sends fail the same way.
#[derive(Debug, Clone)]
enum Failure {
    Closed,
    Broken,
    Io(io::ErrorKind, String),
}

impl Failure {
    fn from_write<E>(err: &WriteError<E>) -> Failure {
        match err {
            WriteError::Closed | WriteError::Interrupted(_) => Failure::Closed,
            WriteError::Broken => Failure::Broken,
            WriteError::Io(io) => Failure::Io(io.kind(), io.to_string()),
        }
    }

    fn to_error<E>(&self) -> WriteError<E> {
        match self {
            Failure::Closed => WriteError::Closed,
            Failure::Broken => WriteError::Broken,
            Failure::Io(kind, text) => WriteError::Io(io::Error::new(*kind, text.clone())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlusherState {
    NotStarted,
    /// Waiting for frames.
    Idle,
    /// Letting a batch grow before writing it.
    Lingering,
    /// Writing (or about to write) a batch.
    Busy,
    /// Gone for good (the outbox was shut down or the thread could not start).
    Gone,
}

struct State {
    buf: Vec<u8>,
    /// An empty buffer kept to swap with `buf`, so that bursts do not allocate.
    spare: Vec<u8>,
    last_send: Option<Instant>,
    failed: Option<Failure>,
    flusher: FlusherState,
    shutdown: bool,
}

/// The write side of a connection with its burst buffer and flusher thread (started on first
/// use). Shared between the senders and the flusher through an `Arc`.
pub struct Outbox {
    side: WriteSide,
    state: Mutex<State>,
    /// The flusher waits here for frames.
    wake: Condvar,
    /// Senders waiting for room or for a flush wait here.
    drained: Condvar,
    /// Frames that went through the buffer.
    pub frames_buffered: AtomicU64,
    /// Batches written from the buffer (by the writer thread or before a direct write).
    pub batches: AtomicU64,
}

impl Outbox {
    /// Wraps a write side.
    pub fn new(side: WriteSide) -> Arc<Outbox> {
        Arc::new(Outbox {
            side,
            state: Mutex::new(State {
                buf: Vec::new(),
                spare: Vec::new(),
                last_send: None,
                failed: None,
                flusher: FlusherState::NotStarted,
                shutdown: false,
            }),
            wake: Condvar::new(),
            drained: Condvar::new(),
            frames_buffered: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        })
    }

    /// The underlying write side.
    pub fn side(&self) -> &WriteSide {
        &self.side
    }

    /// Buffers the frame `(code, channel, payload)` when a burst is on or frames are already
    /// waiting; otherwise (or for a frame too large to buffer) returns [`Offer::Direct`] and the
    /// caller writes it. `force` buffers any frame that fits, burst or not (a send that must
    /// never block, such as one made by a garbage collector callback).
    pub fn offer<E>(
        self: &Arc<Self>,
        code: i8,
        channel: i32,
        payload: &[u8],
        force: bool,
    ) -> Result<Offer, WriteError<E>> {
        let len = wire_len(payload.len()).map_err(|err| match err {
            FrameError::PayloadTooLarge { len } => WriteError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a payload of {len} bytes does not fit in a frame"),
            )),
            other => WriteError::Io(io::Error::other(other.to_string())),
        })?;
        let now = Instant::now();
        let mut state = self.state.lock();
        if let Some(failure) = &state.failed {
            return Err(failure.to_error());
        }
        if self.side.is_closed() {
            return Err(WriteError::Closed);
        }
        let burst = state
            .last_send
            .is_some_and(|last| now.saturating_duration_since(last) < BURST_GAP);
        state.last_send = Some(now);
        let waiting = !state.buf.is_empty()
            || matches!(state.flusher, FlusherState::Busy | FlusherState::Lingering);
        let fits = HEADER_LEN + payload.len() <= MAX_BUFFERED_FRAME;
        if !(fits && (burst || waiting || force))
            || state.shutdown
            || state.flusher == FlusherState::Gone
        {
            return Ok(Offer::Direct);
        }
        if state.flusher == FlusherState::NotStarted {
            if self.spawn_flusher() {
                state.flusher = FlusherState::Busy;
            } else {
                // Without a thread nothing is buffered: every frame is written directly.
                state.flusher = FlusherState::Gone;
                return Ok(Offer::Direct);
            }
        }
        let header = FrameHeader { code, channel, len };
        state.buf.extend_from_slice(&header.encode());
        state.buf.extend_from_slice(payload);
        self.frames_buffered.fetch_add(1, Ordering::Relaxed);
        let wait = state.buf.len() >= HIGH_WATER && !force;
        if state.flusher == FlusherState::Idle
            || (state.flusher == FlusherState::Lingering && state.buf.len() >= LINGER_BATCH)
        {
            self.wake.notify_one();
        }
        Ok(Offer::Buffered { wait })
    }

    fn spawn_flusher(self: &Arc<Self>) -> bool {
        let outbox = Arc::clone(self);
        std::thread::Builder::new()
            .name("execnet-mux-writer".into())
            .spawn(move || outbox.run_flusher())
            .is_ok()
    }

    /// The flusher thread: writes batches until the outbox is shut down.
    fn run_flusher(&self) {
        // Lingering waits are tens of microseconds: the default timer slack (50 µs) would
        // stretch each of them several times over.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1000));
        loop {
            {
                let mut state = self.state.lock();
                loop {
                    if state.shutdown {
                        state.flusher = FlusherState::Gone;
                        self.drained.notify_all();
                        return;
                    }
                    if !state.buf.is_empty() && state.failed.is_none() {
                        break;
                    }
                    state.flusher = FlusherState::Idle;
                    self.drained.notify_all();
                    self.wake.wait(&mut state);
                }
                // The burst is likely still on: let the batch grow while frames keep coming.
                state.flusher = FlusherState::Lingering;
                let start = Instant::now();
                let mut seen = state.buf.len();
                while seen < LINGER_BATCH && !state.shutdown && start.elapsed() < LINGER_MAX {
                    self.wake.wait_for(&mut state, LINGER_GAP);
                    if state.buf.len() == seen {
                        break;
                    }
                    seen = state.buf.len();
                }
                state.flusher = FlusherState::Busy;
            }
            let result = self
                .side
                .acquire(&mut || self.still_open())
                .and_then(|mut token| self.drain(&mut token, &mut || self.still_open()));
            if let Err(err) = result {
                self.fail(&err);
            }
        }
    }

    fn still_open(&self) -> Result<(), ()> {
        if self.state.lock().shutdown {
            Err(())
        } else {
            Ok(())
        }
    }

    fn fail<E>(&self, err: &WriteError<E>) {
        let mut state = self.state.lock();
        if state.failed.is_none() {
            state.failed = Some(Failure::from_write(err));
        }
        state.buf.clear();
        drop(state);
        self.drained.notify_all();
    }

    /// Writes everything buffered so far, with the write token held (so nothing else is
    /// written in between). Returns once the buffer was found empty.
    pub fn drain<E>(
        &self,
        token: &mut WriteToken<'_>,
        check: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), WriteError<E>> {
        loop {
            let mut batch = {
                let mut state = self.state.lock();
                if let Some(failure) = &state.failed {
                    return Err(failure.to_error());
                }
                if state.buf.is_empty() {
                    return Ok(());
                }
                let spare = std::mem::take(&mut state.spare);
                std::mem::replace(&mut state.buf, spare)
            };
            let result = token.write_all(&batch, check);
            self.batches.fetch_add(1, Ordering::Relaxed);
            batch.clear();
            let mut state = self.state.lock();
            if state.spare.capacity() < batch.capacity() {
                state.spare = batch;
            }
            drop(state);
            self.drained.notify_all();
            result?;
        }
    }

    /// Takes the write token if it is free right now.
    pub fn try_acquire<E>(&self) -> Result<Option<WriteToken<'_>>, WriteError<E>> {
        self.side.try_acquire()
    }

    /// Waits for the write token, running `check` every [`CHECK_INTERVAL`].
    pub fn acquire<E>(
        &self,
        check: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<WriteToken<'_>, WriteError<E>> {
        self.side.acquire(check)
    }

    /// Whether frames are buffered.
    pub fn has_buffered(&self) -> bool {
        !self.state.lock().buf.is_empty()
    }

    /// Writes a whole frame with the token held: first whatever is buffered, then the frame.
    pub fn write_direct<E>(
        &self,
        token: &mut WriteToken<'_>,
        frame: &[u8],
        check: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), WriteError<E>> {
        self.drain(token, check)?;
        token.write_all(frame, check)
    }

    /// Like [`Outbox::write_direct`] for a frame given as header and payload (no copy of the
    /// payload into one buffer).
    pub fn write_direct_parts<E>(
        &self,
        token: &mut WriteToken<'_>,
        header: &[u8],
        payload: &[u8],
        check: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), WriteError<E>> {
        self.drain(token, check)?;
        token.write_parts(&[header, payload], check)
    }

    /// Waits until fewer than [`HIGH_WATER`] bytes are buffered (or the flusher failed or is
    /// gone), running `check` every [`CHECK_INTERVAL`].
    pub fn wait_for_room<E>(
        &self,
        check: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), WriteError<E>> {
        let mut state = self.state.lock();
        while state.buf.len() >= HIGH_WATER
            && state.failed.is_none()
            && state.flusher != FlusherState::Gone
        {
            if self
                .drained
                .wait_for(&mut state, CHECK_INTERVAL)
                .timed_out()
            {
                drop(state);
                check().map_err(WriteError::Interrupted)?;
                state = self.state.lock();
            }
        }
        if state.flusher == FlusherState::Gone && state.buf.len() >= HIGH_WATER {
            drop(state);
            let mut token = self.side.acquire(check)?;
            return self.drain(&mut token, check);
        }
        Ok(())
    }

    /// Writes everything buffered, waiting for the write token; `check` runs every
    /// [`CHECK_INTERVAL`] while waiting and may end the wait with an error.
    pub fn flush<E>(&self, check: &mut dyn FnMut() -> Result<(), E>) -> Result<(), WriteError<E>> {
        {
            let state = self.state.lock();
            if let Some(failure) = &state.failed {
                return Err(failure.to_error());
            }
            if state.buf.is_empty() && state.flusher != FlusherState::Busy {
                return Ok(());
            }
        }
        let mut token = self.side.acquire(check)?;
        self.drain(&mut token, check)
    }

    /// Stops the flusher (after the batch it is writing) and closes the write side. Frames
    /// still buffered are dropped: call [`Outbox::flush`] first to deliver them.
    pub fn close(&self) {
        let mut state = self.state.lock();
        state.shutdown = true;
        state.buf.clear();
        drop(state);
        self.wake.notify_all();
        self.drained.notify_all();
        self.side.close();
    }

    /// Whether [`Outbox::close`] was called or the write side was closed.
    pub fn is_closed(&self) -> bool {
        self.side.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_frame, FrameReader};
    use std::os::fd::OwnedFd;

    fn pipe() -> (OwnedFd, OwnedFd) {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap_or_else(|e| panic!("{e}"))
    }

    fn never() -> impl FnMut() -> Result<(), ()> {
        || Ok(())
    }

    /// Sends like the bindings do: buffered when offered, else a direct write.
    fn send(outbox: &Arc<Outbox>, channel: i32, payload: &[u8]) {
        match outbox.offer::<()>(4, channel, payload, false) {
            Ok(Offer::Buffered { wait }) => {
                if wait {
                    outbox
                        .wait_for_room(&mut never())
                        .unwrap_or_else(|_| panic!("room"));
                }
            }
            Ok(Offer::Direct) => {
                let frame = encode_frame(4, channel, payload).unwrap_or_else(|e| panic!("{e}"));
                let mut token = outbox
                    .acquire(&mut never())
                    .unwrap_or_else(|_| panic!("lock"));
                outbox
                    .write_direct(&mut token, &frame, &mut never())
                    .unwrap_or_else(|_| panic!("write"));
            }
            Err(_) => panic!("offer failed"),
        }
    }

    #[test]
    fn burst_keeps_order_and_coalesces() {
        let (r, w) = pipe();
        let outbox = Outbox::new(WriteSide::new(w, false));
        let total = 20_000;
        let reader = std::thread::spawn(move || {
            let mut frames = FrameReader::new(std::fs::File::from(r));
            let mut seen = Vec::new();
            while seen.len() < total {
                let frame = frames.read_frame().unwrap_or_else(|e| panic!("{e}"));
                seen.push(frame.channel);
            }
            seen
        });
        for i in 0..total {
            // Mix sizes so that some frames go direct while others are buffered.
            let payload = vec![0u8; if i % 1000 == 0 { 40_000 } else { 10 }];
            send(&outbox, i32::try_from(i).unwrap_or(0), &payload);
        }
        outbox
            .flush(&mut never())
            .unwrap_or_else(|_| panic!("flush"));
        let seen = reader.join().unwrap_or_else(|_| panic!("reader"));
        let expected: Vec<i32> = (0..total).map(|i| i32::try_from(i).unwrap_or(0)).collect();
        assert_eq!(seen, expected);
        assert!(!outbox.has_buffered());
        outbox.close();
    }

    #[test]
    fn isolated_sends_go_direct() {
        let (_r, w) = pipe();
        let outbox = Outbox::new(WriteSide::new(w, false));
        assert_eq!(
            outbox.offer::<()>(4, 1, b"x", false).ok(),
            Some(Offer::Direct)
        );
        std::thread::sleep(BURST_GAP * 20);
        assert_eq!(
            outbox.offer::<()>(4, 1, b"x", false).ok(),
            Some(Offer::Direct)
        );
        // A quick second send is buffered.
        assert!(matches!(
            outbox.offer::<()>(4, 1, b"x", false),
            Ok(Offer::Buffered { .. })
        ));
        outbox.close();
    }

    #[test]
    fn failure_of_the_flusher_fails_later_sends() {
        let (r, w) = pipe();
        let outbox = Outbox::new(WriteSide::new(w, false));
        drop(r);
        let mut failed = false;
        for _ in 0..10_000 {
            match outbox.offer::<()>(4, 1, b"payload", true) {
                Ok(_) => {}
                Err(WriteError::Io(err)) => {
                    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
                    failed = true;
                    break;
                }
                Err(_) => panic!("unexpected error"),
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        assert!(
            failed,
            "a send after the flusher hit a broken pipe must fail"
        );
        outbox.close();
    }

    #[test]
    fn full_pipe_applies_back_pressure_and_close_ends_it() {
        let (_r, w) = pipe();
        let outbox = Outbox::new(WriteSide::new(w, false));
        let payload = vec![7u8; 8000];
        let mut waited = false;
        for _ in 0..1000 {
            match outbox.offer::<()>(4, 1, &payload, true) {
                Ok(Offer::Buffered { .. }) => {}
                Ok(Offer::Direct) => panic!("forced frames are buffered"),
                Err(_) => panic!("offer failed"),
            }
            if outbox.state.lock().buf.len() >= HIGH_WATER {
                waited = true;
                break;
            }
        }
        assert!(
            waited,
            "the buffer reaches the high-water mark when nobody reads"
        );
        let closer = {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                outbox.close();
            })
        };
        let start = Instant::now();
        let result = outbox.wait_for_room(&mut never());
        assert!(result.is_ok());
        assert!(start.elapsed() < Duration::from_secs(5));
        closer.join().unwrap_or_else(|_| panic!("closer"));
        assert!(matches!(
            outbox.offer::<()>(4, 1, b"x", false),
            Err(WriteError::Closed)
        ));
    }
}
