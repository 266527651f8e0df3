//! Bindings of the multiplexer: `Mux` (a gateway connection's reader thread, routing table and
//! write lock) and `ChannelQueue` (a channel's receive queue).

use std::collections::HashMap;
use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::{PyEOFError, PyException, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyType};

use crate::codec;
use crate::frame::{
    encode_frame, wire_len, Frame, FrameError, FrameHeader, CHANNEL_DATA, HEADER_LEN, MAX_CODE,
};
use crate::mux::io::{
    dup_raw, is_socket, ReadCloser, ReadSide, WriteError, WriteSide, CHECK_INTERVAL,
};
use crate::mux::outbox::{Offer, Outbox};
use crate::mux::{
    run_reader, Burst, GetError, Item, Queue, ReaderExit, Router, MAX_ROUTED_PAYLOAD,
};
use crate::py::codec::{decode_internal, encode_internal_into, with_scratch};

/// Frames up to this size are tried with the GIL held (a non-blocking write); larger ones and
/// retries release the GIL first.
const FAST_WRITE_LIMIT: usize = 64 * 1024;

/// `close_write()` waits at most this long for buffered frames to be written.
const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(1);

static QUEUE_EMPTY: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn queue_empty(py: Python<'_>) -> PyErr {
    match QUEUE_EMPTY.import(py, "queue", "Empty") {
        Ok(cls) => PyErr::from_type(cls.clone(), ()),
        Err(err) => err,
    }
}

/// Bumped in the child of every `os.fork()`: a `Mux` made in an earlier generation belongs to
/// another process. Cheaper than asking for the process id on every send (a system call).
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// `_after_fork_in_child()`: registered with `os.register_at_fork`; marks every existing `Mux`
/// as belonging to the parent.
#[pyfunction(name = "_after_fork_in_child")]
pub fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Registers [`after_fork_in_child`] to run in the child of `os.fork()`.
pub fn register_fork_hook(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let hook = module.getattr("_after_fork_in_child")?;
    let kwargs = pyo3::types::PyDict::new(module.py());
    kwargs.set_item("after_in_child", hook)?;
    module
        .py()
        .import("os")?
        .getattr("register_at_fork")?
        .call((), Some(&kwargs))?;
    Ok(())
}

/// The Python callables of a started reader.
struct Callbacks {
    dispatch: Py<PyAny>,
    on_exit: Py<PyAny>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReaderState {
    NotStarted,
    Running,
    Finished,
}

/// State shared by the `Mux` object and its reader thread.
struct Shared {
    router: Router<Py<PyAny>>,
    writer: Arc<Outbox>,
    unstarted: Mutex<Option<ReadSide>>,
    read_closer: ReadCloser,
    callbacks: Mutex<Option<Callbacks>>,
    state: Mutex<ReaderState>,
    finished: Condvar,
    reader_thread: Mutex<Option<ThreadId>>,
    /// Channels whose plain data goes to a Python callback (see `route_callback`).
    callback_routes: Mutex<HashMap<i32, CallbackRoute>>,
    frames_called_back: AtomicU64,
    fork_generation: u64,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
}

/// Where the plain data of a channel with a callback goes.
struct CallbackRoute {
    callback: Py<PyAny>,
    on_error: Py<PyAny>,
    strconfig: (bool, bool),
}

/// Why the reader stopped on the dispatch side.
enum Stop {
    Finalizing,
    Cleared,
    Closed,
    Raised(PyErr),
}

impl Shared {
    /// Calls `dispatch` for `frame` and for every further frame already buffered that needs
    /// it, under one attachment to the interpreter.
    fn dispatch<R: Read>(
        &self,
        frame: Frame,
        burst: &mut Burst<'_, R, Py<PyAny>>,
    ) -> Result<(), Stop> {
        let result = Python::try_attach(|py| {
            let dispatch = self
                .callbacks
                .lock()
                .as_ref()
                .map(|cb| cb.dispatch.clone_ref(py));
            let Some(dispatch) = dispatch else {
                return Err(Stop::Cleared);
            };
            let mut next = Some(frame);
            while let Some(frame) = next {
                let frame = match self.call_back(py, frame)? {
                    Some(frame) => self.queue_large(py, frame),
                    None => None,
                };
                if let Some(frame) = frame {
                    let payload = PyBytes::new(py, &frame.payload);
                    dispatch
                        .call1(py, (frame.code, frame.channel, payload))
                        .map_err(Stop::Raised)?;
                }
                if self.read_closer.is_closed() {
                    return Err(Stop::Closed);
                }
                next = burst.next_dispatch();
            }
            Ok(())
        });
        result.unwrap_or(Err(Stop::Finalizing))
    }

    /// Delivers a data frame of a channel with a callback route: decoded here and passed to
    /// the callback (what `dispatch` would do, minus the Python calls around it). Hands back
    /// any other frame, and one whose payload needs Python to decode (channel references) or
    /// does not decode, so that `dispatch` handles it as before.
    fn call_back(&self, py: Python<'_>, frame: Frame) -> Result<Option<Frame>, Stop> {
        if frame.code != CHANNEL_DATA {
            return Ok(Some(frame));
        }
        // The callables are taken out under the lock and called without it: a callback may
        // change the routes.
        let route = self
            .callback_routes
            .lock()
            .get(&frame.channel)
            .map(|route| {
                (
                    route.callback.clone_ref(py),
                    route.on_error.clone_ref(py),
                    route.strconfig,
                )
            });
        let Some((callback, on_error, strconfig)) = route else {
            return Ok(Some(frame));
        };
        match codec::scan(&frame.payload) {
            Ok(info) if !info.channel_refs && !info.needs_python_check => {}
            _ => return Ok(Some(frame)),
        }
        let Ok(item) = decode_internal(py, &frame.payload, strconfig, None) else {
            return Ok(Some(frame));
        };
        self.frames_called_back.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = callback.call1(py, (item,)) {
            if !err.is_instance_of::<PyException>(py) {
                // KeyboardInterrupt, SystemExit...: they end the reader, as from `dispatch`.
                return Err(Stop::Raised(err));
            }
            on_error
                .call1(py, (frame.channel, err.into_value(py)))
                .map_err(Stop::Raised)?;
        }
        Ok(None)
    }

    /// Removes the callback route of `channel`; the callables are released after the lock.
    fn remove_callback_route(&self, channel: i32) {
        let old = self.callback_routes.lock().remove(&channel);
        drop(old);
    }

    /// Decodes a large data frame of a routed channel right here and queues the item (what
    /// `dispatch` would do, minus a copy of the payload into a bytes object and the Python
    /// calls); hands back any other frame, or one that cannot be queued this way.
    fn queue_large(&self, py: Python<'_>, frame: Frame) -> Option<Frame> {
        if frame.code != CHANNEL_DATA || frame.payload.len() < MAX_ROUTED_PAYLOAD {
            return Some(frame);
        }
        let Some(strconfig) = self.router.decodable(frame.channel, &frame.payload) else {
            return Some(frame);
        };
        // An error is left to `dispatch`, which raises it as before.
        let Ok(item) = decode_internal(py, &frame.payload, strconfig, None) else {
            return Some(frame);
        };
        match self.router.push_decoded(frame.channel, item.unbind()) {
            Ok(()) => None,
            Err(_) => Some(frame),
        }
    }

    /// Reports the end of the reader to `on_exit`, exactly once, then marks it finished.
    fn finish(&self, exit: ReaderExit<Stop>) {
        if !matches!(exit, ReaderExit::Stopped(Stop::Finalizing)) {
            Python::try_attach(|py| {
                let callbacks = self.callbacks.lock().take();
                let Some(callbacks) = callbacks else {
                    return;
                };
                let arg: Option<Py<PyAny>> = match exit {
                    ReaderExit::Stream(FrameError::Closed)
                    | ReaderExit::Stopped(Stop::Closed | Stop::Finalizing | Stop::Cleared) => None,
                    ReaderExit::Stream(err) => Some(frame_error(err).into_value(py).into_any()),
                    ReaderExit::Stopped(Stop::Raised(err)) => Some(err.into_value(py).into_any()),
                };
                if let Err(err) = callbacks.on_exit.call1(py, (arg,)) {
                    err.write_unraisable(py, Some(callbacks.on_exit.bind(py)));
                }
                drop(callbacks);
            });
        }
        *self.state.lock() = ReaderState::Finished;
        self.finished.notify_all();
    }

    fn close_read(&self) {
        self.read_closer.close();
        let unstarted = self.unstarted.lock().take();
        drop(unstarted);
    }
}

/// The Python exception for a reader that ended on the stream.
fn frame_error(err: FrameError) -> PyErr {
    match err {
        FrameError::HeaderEof { .. } | FrameError::PayloadEof { .. } => {
            PyEOFError::new_err(err.to_string())
        }
        FrameError::Io(io) => PyErr::from(io),
        FrameError::BadCode { .. }
        | FrameError::NegativeLength { .. }
        | FrameError::PayloadTooLarge { .. }
        | FrameError::Closed => PyValueError::new_err(err.to_string()),
    }
}

fn write_error(err: WriteError<PyErr>) -> PyErr {
    match err {
        WriteError::Closed => PyOSError::new_err("cannot send: the write side is closed"),
        WriteError::Broken => PyOSError::new_err(
            "cannot send: an earlier send was interrupted in the middle of a message",
        ),
        WriteError::Io(io) => PyErr::from(io),
        WriteError::Interrupted(err) => err,
    }
}

fn check_signals() -> Result<(), PyErr> {
    Python::attach(|py| py.check_signals())
}

/// One gateway connection: a reader thread that routes incoming frames, and whole-frame writes
/// under a write lock.
///
/// `Mux(read_fd, write_fd, is_socket=None)` duplicates both descriptors (the caller may close
/// its own); `is_socket=None` detects sockets. The duplicates are closed by `close_read()`,
/// `close_write()` and when the object goes away.
#[pyclass(name = "Mux", module = "execnet._core", frozen)]
pub struct MuxPy {
    shared: Arc<Shared>,
}

#[pymethods]
impl MuxPy {
    #[new]
    #[pyo3(signature = (read_fd, write_fd, is_socket = None))]
    fn new(read_fd: i32, write_fd: i32, is_socket: Option<bool>) -> PyResult<MuxPy> {
        let read = dup_raw(read_fd)?;
        let write = dup_raw(write_fd)?;
        let read_socket = match is_socket {
            Some(flag) => flag,
            None => self::is_socket(&read)?,
        };
        let write_socket = match is_socket {
            Some(flag) => flag,
            None => self::is_socket(&write)?,
        };
        let (side, closer) = ReadSide::new(read, read_socket)?;
        Ok(MuxPy {
            shared: Arc::new(Shared {
                router: Router::new(),
                writer: Outbox::new(WriteSide::new(write, write_socket)),
                unstarted: Mutex::new(Some(side)),
                read_closer: closer,
                callbacks: Mutex::new(None),
                state: Mutex::new(ReaderState::NotStarted),
                finished: Condvar::new(),
                reader_thread: Mutex::new(None),
                callback_routes: Mutex::new(HashMap::new()),
                frames_called_back: AtomicU64::new(0),
                fork_generation: FORK_GENERATION.load(Ordering::Relaxed),
                frames_sent: AtomicU64::new(0),
                bytes_sent: AtomicU64::new(0),
            }),
        })
    }

    /// Sends one whole frame (header and payload). A frame sent on its own is written at once
    /// under the write lock; small frames sent in a quick burst are buffered and written in
    /// batches by a writer thread, in order (see the outbox). `defer=True` buffers the frame
    /// whenever it fits, so the call does not wait for the write lock.
    #[pyo3(signature = (code, channelid, payload, defer = false))]
    fn send(
        &self,
        py: Python<'_>,
        code: i64,
        channelid: i32,
        payload: &[u8],
        defer: bool,
    ) -> PyResult<()> {
        self.check_process()?;
        let code = i8::try_from(code)
            .ok()
            .filter(|c| (0..=MAX_CODE).contains(c))
            .ok_or_else(|| {
                PyValueError::new_err(format!("message code {code} is not in 0..{MAX_CODE}"))
            })?;
        self.send_payload(py, code, channelid, payload, defer)
    }

    /// Encodes `item` in the internal form and sends it as `CHANNEL_DATA` on `channelid`, as
    /// `send(4, channelid, dumps_internal(item))` does, without the intermediate bytes object.
    /// Raises what `dumps_internal` raises (nothing is sent then).
    fn send_item(&self, py: Python<'_>, channelid: i32, item: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_process()?;
        with_scratch(|payload| {
            encode_internal_into(item, payload)?;
            self.send_payload(py, CHANNEL_DATA, channelid, payload, false)
        })
    }

    /// Writes everything buffered by `send()`, waiting as a send would.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.check_process()?;
        let outbox = &self.shared.writer;
        py.detach(|| outbox.flush(&mut check_signals))
            .map_err(write_error)
    }

    /// Starts the reader thread. `dispatch(code, channelid, payload)` gets every frame that is
    /// not queued directly; `on_exit(exc_or_None)` is called once when the reader ends.
    fn start(&self, dispatch: Py<PyAny>, on_exit: Py<PyAny>) -> PyResult<()> {
        self.check_process()?;
        let mut state = self.shared.state.lock();
        if *state != ReaderState::NotStarted {
            return Err(PyRuntimeError::new_err("the reader was already started"));
        }
        let Some(side) = self.shared.unstarted.lock().take() else {
            return Err(PyOSError::new_err(
                "cannot start the reader: the read side is closed",
            ));
        };
        *self.shared.callbacks.lock() = Some(Callbacks { dispatch, on_exit });
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("execnet-mux-reader".into())
            .spawn(move || {
                // A bug must still end the reader properly (on_exit, finished state): a
                // reader that vanished silently would leave join() waiting forever.
                let exit = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let mut reader = crate::frame::FrameReader::new(side);
                    run_reader(&mut reader, &shared.router, |frame, burst| {
                        shared.dispatch(frame, burst)
                    })
                }))
                .unwrap_or_else(|_| {
                    ReaderExit::Stopped(Stop::Raised(PyRuntimeError::new_err(
                        "internal error in the execnet reader thread",
                    )))
                });
                shared.finish(exit);
            });
        match spawned {
            Ok(handle) => {
                *self.shared.reader_thread.lock() = Some(handle.thread().id());
                *state = ReaderState::Running;
                Ok(())
            }
            Err(err) => {
                self.shared.callbacks.lock().take();
                Err(PyRuntimeError::new_err(format!(
                    "cannot start the reader thread: {err}"
                )))
            }
        }
    }

    /// Creates the queue of `channelid` and routes its plain data there from now on.
    #[pyo3(signature = (channelid, strconfig = (true, false)))]
    fn queue(&self, channelid: i32, strconfig: (bool, bool)) -> PyResult<ChannelQueuePy> {
        self.check_process()?;
        Ok(ChannelQueuePy {
            queue: self.shared.router.register(channelid, strconfig),
        })
    }

    /// Stops routing `channelid`: its later data goes to `dispatch`. Queued items stay.
    fn unroute(&self, channelid: i32) -> PyResult<()> {
        self.check_process()?;
        self.shared.router.unroute(channelid);
        self.shared.remove_callback_route(channelid);
        Ok(())
    }

    /// Delivers the plain data of `channelid` from now on to `callback(item)`, called in the
    /// reader thread with the item decoded there (with `strconfig`); an `Exception` raised by
    /// the callback is passed to `on_error(channelid, exc)`. Data that needs Python to decode
    /// (channel references) still goes to `dispatch`. Replaces an earlier route of that id;
    /// `unroute` removes it.
    #[pyo3(signature = (channelid, callback, on_error, strconfig = (true, false)))]
    fn route_callback(
        &self,
        channelid: i32,
        callback: Py<PyAny>,
        on_error: Py<PyAny>,
        strconfig: (bool, bool),
    ) -> PyResult<()> {
        self.check_process()?;
        self.shared.router.unroute(channelid);
        let route = CallbackRoute {
            callback,
            on_error,
            strconfig,
        };
        let old = self.shared.callback_routes.lock().insert(channelid, route);
        drop(old);
        Ok(())
    }

    /// Whether the calling thread is the reader thread.
    fn in_reader_thread(&self) -> bool {
        self.in_owner_process()
            && *self.shared.reader_thread.lock() == Some(std::thread::current().id())
    }

    /// Waits until the reader has finished (including `on_exit`); returns whether it has.
    /// A reader that was never started counts as finished.
    #[pyo3(signature = (timeout = None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if !self.in_owner_process() {
            return Ok(true);
        }
        if *self.shared.reader_thread.lock() == Some(std::thread::current().id()) {
            return Err(PyRuntimeError::new_err(
                "cannot join the reader from its own thread",
            ));
        }
        let deadline = deadline(timeout)?;
        loop {
            let wait = slice_until(deadline);
            let finished = py.detach(|| {
                let mut state = self.shared.state.lock();
                if *state == ReaderState::Running {
                    self.shared.finished.wait_for(&mut state, wait);
                }
                *state != ReaderState::Running
            });
            if finished {
                return Ok(true);
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Counters: `frames_received`, `bytes_received` (headers included), `frames_queued`
    /// (put into a channel queue without Python), `frames_dispatched`, `frames_sent`,
    /// `bytes_sent`, `frames_buffered` (sent through the burst buffer), `batches_written`
    /// (writes of buffered frames), `bytes_written` (bytes the descriptor took so far),
    /// `frames_called_back` (data passed to a callback route without `dispatch`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let router = self.shared.router.stats();
        let dict = PyDict::new(py);
        for (name, counter) in [
            ("frames_received", &router.frames),
            ("bytes_received", &router.bytes),
            ("frames_queued", &router.queued),
            ("frames_dispatched", &router.dispatched),
            ("frames_sent", &self.shared.frames_sent),
            ("bytes_sent", &self.shared.bytes_sent),
            ("frames_buffered", &self.shared.writer.frames_buffered),
            ("batches_written", &self.shared.writer.batches),
            ("frames_called_back", &self.shared.frames_called_back),
        ] {
            dict.set_item(name, counter.load(Ordering::Relaxed))?;
        }
        dict.set_item("bytes_written", self.shared.writer.side().bytes_written())?;
        Ok(dict)
    }

    /// Whether the reader thread is running.
    fn is_alive(&self) -> bool {
        self.in_owner_process() && *self.shared.state.lock() == ReaderState::Running
    }

    /// Stops the reader (it calls `on_exit(None)` unless it already ended) and closes the read
    /// descriptor; for sockets the reading direction is shut down. Idempotent.
    fn close_read(&self) {
        if self.in_owner_process() {
            self.shared.close_read();
        }
    }

    /// Closes the write descriptor; for sockets the sending direction is shut down, so the peer
    /// sees end of stream. Later `send()` calls raise OSError. Idempotent.
    fn close_write(&self, py: Python<'_>) {
        if self.in_owner_process() {
            let outbox = &self.shared.writer;
            // Deliver what `send()` buffered, unless the peer stopped reading.
            let limit = Instant::now() + CLOSE_FLUSH_LIMIT;
            let _ = py.detach(|| {
                outbox.flush(&mut || {
                    if Instant::now() >= limit {
                        Err(())
                    } else {
                        Ok(())
                    }
                })
            });
            outbox.close();
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // A busy lock means the reader is using the callables right now; not visiting keeps
        // them alive for this collection, which is safe.
        if let Some(guard) = self.shared.callbacks.try_lock() {
            if let Some(callbacks) = guard.as_ref() {
                visit.call(&callbacks.dispatch)?;
                visit.call(&callbacks.on_exit)?;
            }
        }
        if let Some(routes) = self.shared.callback_routes.try_lock() {
            for route in routes.values() {
                visit.call(&route.callback)?;
                visit.call(&route.on_error)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        // try_lock: after fork() a lock held by a parent thread stays held in the child.
        let callbacks = self
            .shared
            .callbacks
            .try_lock()
            .and_then(|mut cb| cb.take());
        drop(callbacks);
        let routes = self
            .shared
            .callback_routes
            .try_lock()
            .map(|mut routes| std::mem::take(&mut *routes));
        drop(routes);
    }
}

impl MuxPy {
    /// A forked child inherits the object but neither the reader thread nor a consistent
    /// write lock; refuse instead of hanging.
    fn check_process(&self) -> PyResult<()> {
        if self.in_owner_process() {
            Ok(())
        } else {
            Err(PyOSError::new_err(
                "this Mux belongs to the parent process (used after fork())",
            ))
        }
    }
}

impl MuxPy {
    /// Buffers the frame or writes it (see `send`), and counts it.
    fn send_payload(
        &self,
        py: Python<'_>,
        code: i8,
        channelid: i32,
        payload: &[u8],
        defer: bool,
    ) -> PyResult<()> {
        let outbox = &self.shared.writer;
        match outbox
            .offer(code, channelid, payload, defer)
            .map_err(write_error)?
        {
            Offer::Buffered { wait } => {
                if wait {
                    py.detach(|| outbox.wait_for_room(&mut check_signals))
                        .map_err(write_error)?;
                }
            }
            Offer::Direct => self.write_frame(py, code, channelid, payload)?,
        }
        self.shared.frames_sent.fetch_add(1, Ordering::Relaxed);
        let size = (payload.len() + HEADER_LEN) as u64;
        self.shared.bytes_sent.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    /// Writes a frame with the sending thread: whatever is buffered first, then the frame.
    fn write_frame(
        &self,
        py: Python<'_>,
        code: i8,
        channelid: i32,
        payload: &[u8],
    ) -> PyResult<()> {
        let outbox = &self.shared.writer;
        if HEADER_LEN + payload.len() > FAST_WRITE_LIMIT {
            // Large: header and payload are written one after the other, without copying the
            // payload into a frame buffer.
            let len =
                wire_len(payload.len()).map_err(|err| PyValueError::new_err(err.to_string()))?;
            let header = FrameHeader {
                code,
                channel: channelid,
                len,
            }
            .encode();
            return py
                .detach(|| {
                    let mut token = outbox.acquire(&mut check_signals)?;
                    outbox.write_direct_parts(&mut token, &header, payload, &mut check_signals)
                })
                .map_err(write_error);
        }
        let frame = encode_frame(code, channelid, payload)
            .map_err(|err| PyValueError::new_err(err.to_string()))?;
        // Fast path: the lock is free, nothing is buffered and the descriptor takes the frame
        // right now, so there is no need to give up the GIL (re-taking it can cost a switch
        // interval).
        if let Some(mut token) = outbox.try_acquire().map_err(write_error)? {
            if outbox.has_buffered() {
                return py
                    .detach(|| outbox.write_direct(&mut token, &frame, &mut check_signals))
                    .map_err(write_error);
            }
            let n = token.write_now(&frame)?;
            if n < frame.len() {
                py.detach(|| token.write_all(&frame[n..], &mut check_signals))
                    .map_err(write_error)?;
            }
            return Ok(());
        }
        py.detach(|| {
            let mut token = outbox.acquire(&mut check_signals)?;
            outbox.write_direct(&mut token, &frame, &mut check_signals)
        })
        .map_err(write_error)
    }

    fn in_owner_process(&self) -> bool {
        // The fork generation rather than the process id: no system call per send. A fork
        // that bypasses Python's fork hooks (C code calling fork() and then Python code using
        // the parent's Mux in the child) is not detected.
        self.shared.fork_generation == FORK_GENERATION.load(Ordering::Relaxed)
    }
}

impl Drop for MuxPy {
    fn drop(&mut self) {
        // In a forked child the locks may be held forever by threads that do not exist there;
        // the duplicates are close-on-exec and go away with the child.
        if self.in_owner_process() {
            self.shared.close_read();
            self.shared.writer.close();
        }
    }
}

fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err(
            "'timeout' must be a non-negative number",
        )),
        Some(t) => Ok(Duration::try_from_secs_f64(t)
            .ok()
            .and_then(|d| Instant::now().checked_add(d))),
    }
}

fn slice_until(deadline: Option<Instant>) -> Duration {
    match deadline {
        None => CHECK_INTERVAL,
        Some(d) => d
            .saturating_duration_since(Instant::now())
            .min(CHECK_INTERVAL),
    }
}

/// A channel's receive queue: items put by Python and payloads queued by the reader thread,
/// decoded when taken.
#[pyclass(name = "ChannelQueue", module = "execnet._core", frozen)]
pub struct ChannelQueuePy {
    queue: Queue<Py<PyAny>>,
}

impl ChannelQueuePy {
    fn take(&self, py: Python<'_>, item: Item<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        match item {
            Item::Obj(obj) => Ok(obj),
            Item::Raw { payload, strconfig } => {
                Ok(decode_internal(py, &payload, strconfig, None)?.unbind())
            }
            Item::End => Err(PyEOFError::new_err(())),
        }
    }
}

#[pymethods]
impl ChannelQueuePy {
    /// A queue not attached to any `Mux` (items arrive only through `put`).
    #[new]
    #[pyo3(signature = (strconfig = (true, false)))]
    fn new(strconfig: (bool, bool)) -> ChannelQueuePy {
        ChannelQueuePy {
            queue: Queue::new(strconfig),
        }
    }

    /// Appends any object.
    fn put(&self, item: Py<PyAny>) {
        self.queue.put(Item::Obj(item));
    }

    /// Takes the oldest item, waiting as `queue.Queue.get` does; raises `queue.Empty`.
    #[pyo3(signature = (block = true, timeout = None))]
    fn get(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        if let Some(item) = self.queue.try_get() {
            return self.take(py, item);
        }
        if !block {
            return Err(queue_empty(py));
        }
        let deadline = deadline(timeout)?;
        loop {
            let wait = slice_until(deadline);
            match py.detach(|| self.queue.get_timeout(wait)) {
                Ok(item) => return self.take(py, item),
                Err(GetError::Timeout) => {
                    py.check_signals()?;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(queue_empty(py));
                    }
                }
            }
        }
    }

    /// Number of queued items.
    fn qsize(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    fn empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The string coercion `(py2str_as_py3str, py3str_as_py2str)` for payloads queued from now
    /// on.
    #[getter]
    fn get_strconfig(&self) -> (bool, bool) {
        self.queue.strconfig().get()
    }

    #[setter]
    fn set_strconfig(&self, value: (bool, bool)) {
        self.queue.strconfig().set(value);
    }
}
