//! The connection's file descriptors: a read side the reader thread blocks on and that another
//! thread can close at any time (waking the reader), and a write side that writes whole frames
//! under a write lock.
//!
//! Both sides work on private duplicates of the caller's descriptors, so the caller may close
//! its own file objects independently. A descriptor is only closed when no thread can still be
//! blocked on it (it is shared through an `Arc`), so a closed number is never reused under a
//! blocked reader or writer.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{SendFlags, Shutdown};

use crate::frame::closed_error;

/// Longest time a blocked writer or lock waiter goes without running its interrupt check.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Largest chunk handed to one `write` call, so the interrupt check runs between chunks.
const WRITE_CHUNK: usize = 64 * 1024;

/// Sets `O_NONBLOCK` on the open file `fd` refers to.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// Duplicates a descriptor given by number; the duplicate is close-on-exec.
pub fn dup_raw(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(
            rustix::io::Errno::BADF.raw_os_error(),
        ));
    }
    // SAFETY: the descriptor is borrowed only for the duration of the `fcntl(F_DUPFD_CLOEXEC)`
    // call below and never read from or closed through this borrow; if the number is not open,
    // the kernel reports EBADF.
    #[allow(unsafe_code)]
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(rustix::io::fcntl_dupfd_cloexec(borrowed, 0)?)
}

/// Whether `fd` is a socket.
pub fn is_socket(fd: impl AsFd) -> io::Result<bool> {
    let stat = rustix::fs::fstat(fd)?;
    Ok(rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Socket)
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    #[cfg(not(target_vendor = "apple"))]
    {
        Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
    }
    #[cfg(target_vendor = "apple")]
    {
        let (r, w) = rustix::pipe::pipe()?;
        rustix::io::fcntl_setfd(&r, rustix::io::FdFlags::CLOEXEC)?;
        rustix::io::fcntl_setfd(&w, rustix::io::FdFlags::CLOEXEC)?;
        Ok((r, w))
    }
}

/// Waits until `fd` is ready for `events` or `timeout` passes (`None`: no limit); returns the
/// ready flags (empty on timeout or interruption).
fn poll_one(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    timeout: Option<Duration>,
) -> io::Result<PollFlags> {
    let spec = timeout.map(|t| Timespec {
        tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: t.subsec_nanos().into(),
    });
    let mut fds = [PollFd::from_borrowed_fd(fd, events)];
    match poll(&mut fds, spec.as_ref()) {
        Ok(_) => Ok(fds[0].revents()),
        Err(rustix::io::Errno::INTR) => Ok(PollFlags::empty()),
        Err(err) => Err(err.into()),
    }
}

/// The reading end: blocks in `read` until data arrives or [`ReadCloser::close`] is called.
pub struct ReadSide {
    fd: OwnedFd,
    wake: OwnedFd,
}

/// Closes a [`ReadSide`] from another thread: a reader blocked on it returns the closed marker
/// error (see [`crate::frame::FrameError::Closed`]).
pub struct ReadCloser {
    wake: Mutex<Option<OwnedFd>>,
    shutdown_fd: Option<OwnedFd>,
}

impl ReadSide {
    /// Wraps an owned descriptor; returns the read side and its closer.
    pub fn new(fd: OwnedFd, socket: bool) -> io::Result<(ReadSide, ReadCloser)> {
        let (wake_r, wake_w) = cloexec_pipe()?;
        let shutdown_fd = if socket {
            Some(rustix::io::fcntl_dupfd_cloexec(&fd, 0)?)
        } else {
            None
        };
        Ok((
            ReadSide { fd, wake: wake_r },
            ReadCloser {
                wake: Mutex::new(Some(wake_w)),
                shutdown_fd,
            },
        ))
    }
}

impl Read for ReadSide {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut fds = [
                PollFd::new(&self.wake, PollFlags::IN),
                PollFd::new(&self.fd, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(err) => return Err(err.into()),
            }
            if !fds[0].revents().is_empty() {
                return Err(closed_error());
            }
            if fds[1].revents().is_empty() {
                continue;
            }
            match rustix::io::read(&self.fd, &mut *buf) {
                Ok(n) => return Ok(n),
                // The descriptor may be non-blocking (a Python socket with a timeout).
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }
}

impl ReadCloser {
    /// Wakes and stops the reader; idempotent. For sockets also shuts the reading direction.
    pub fn close(&self) {
        if let Some(wake) = self.wake.lock().take() {
            drop(wake);
            if let Some(fd) = &self.shutdown_fd {
                // Not connected any more is fine: the reader is stopped by the wake pipe.
                let _ = rustix::net::shutdown(fd, Shutdown::Read);
            }
        }
    }

    /// Whether [`ReadCloser::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.wake.lock().is_none()
    }
}

/// Why a frame could not be written.
#[derive(Debug)]
pub enum WriteError<E> {
    /// The write side was closed.
    Closed,
    /// An earlier frame was written only partly; the stream is no longer in sync.
    Broken,
    /// The operating system refused the write.
    Io(io::Error),
    /// The interrupt check failed (e.g. Ctrl-C) while waiting.
    Interrupted(E),
}

struct WriteState {
    busy: bool,
    broken: bool,
    fd: Option<Arc<OwnedFd>>,
}

/// The writing end with its write lock. The lock is a flag rather than a guard so that a token
/// can move into a thread that released the GIL.
pub struct WriteSide {
    state: Mutex<WriteState>,
    freed: Condvar,
    socket: bool,
    /// Whether writes never block: a socket written with `MSG_DONTWAIT`, or a pipe whose
    /// duplicate was switched to `O_NONBLOCK`. Then a write is tried first and the descriptor is
    /// polled only when it is full; otherwise every write polls first (one more system call).
    nonblocking: bool,
    /// Bytes written to the descriptor so far.
    written: AtomicU64,
}

/// Permission to write: while it lives, no other thread writes. Dropping it in the middle of a
/// frame marks the write side broken.
pub struct WriteToken<'a> {
    side: &'a WriteSide,
    fd: Arc<OwnedFd>,
    mid_frame: bool,
}

impl WriteSide {
    /// Wraps an owned descriptor.
    ///
    /// A pipe is switched to non-blocking mode. The flag belongs to the open pipe end, which the
    /// caller's own descriptor shares: the caller must not write to it with blocking semantics
    /// while this side is in use (gateways write only through their mux).
    pub fn new(fd: OwnedFd, socket: bool) -> WriteSide {
        let nonblocking = socket || set_nonblocking(&fd).is_ok();
        WriteSide {
            state: Mutex::new(WriteState {
                busy: false,
                broken: false,
                fd: Some(Arc::new(fd)),
            }),
            freed: Condvar::new(),
            socket,
            nonblocking,
            written: AtomicU64::new(0),
        }
    }

    fn grant<E>(&self, state: &mut WriteState) -> Result<WriteToken<'_>, WriteError<E>> {
        if state.broken {
            return Err(WriteError::Broken);
        }
        let Some(fd) = state.fd.clone() else {
            return Err(WriteError::Closed);
        };
        state.busy = true;
        Ok(WriteToken {
            side: self,
            fd,
            mid_frame: false,
        })
    }

    /// Takes the write lock if it is free right now; `Ok(None)` if another thread holds it.
    /// Never waits for a writer (the inner mutex is only ever held for a few instructions).
    pub fn try_acquire<E>(&self) -> Result<Option<WriteToken<'_>>, WriteError<E>> {
        let mut state = self.state.lock();
        if state.busy {
            return Ok(None);
        }
        self.grant(&mut state).map(Some)
    }

    /// Waits for the write lock, running `check` every [`CHECK_INTERVAL`].
    pub fn acquire<E>(
        &self,
        check: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<WriteToken<'_>, WriteError<E>> {
        let mut state = self.state.lock();
        while state.busy {
            if self.freed.wait_for(&mut state, CHECK_INTERVAL).timed_out() {
                // Run the check without the lock: it may take the GIL.
                drop(state);
                check().map_err(WriteError::Interrupted)?;
                state = self.state.lock();
            }
        }
        self.grant(&mut state)
    }

    /// Closes the write side: later writes fail with [`WriteError::Closed`]. A socket gets its
    /// sending direction shut down (the peer sees end of stream even though the caller keeps
    /// its own descriptor). A writer blocked on a full pipe right now gives up within
    /// [`CHECK_INTERVAL`] with [`WriteError::Closed`]; it keeps the descriptor open until then.
    pub fn close(&self) {
        let fd = self.state.lock().fd.take();
        if let Some(fd) = fd {
            if self.socket {
                let _ = rustix::net::shutdown(&*fd, Shutdown::Write);
            }
        }
    }

    /// Whether [`WriteSide::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state.lock().fd.is_none()
    }

    /// Bytes written to the descriptor so far (a frame handed to a buffer counts once written).
    pub fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Most bytes that [`WriteToken::write_now`] may write to a pipe without blocking.
    pub fn atomic_limit(&self) -> usize {
        if self.socket {
            usize::MAX
        } else {
            rustix::pipe::PIPE_BUF
        }
    }
}

impl WriteToken<'_> {
    /// Writes what can be written without blocking; returns the number of bytes written (0 when
    /// the descriptor is not ready).
    pub fn write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let result = if self.side.socket {
            rustix::net::send(&*self.fd, buf, SendFlags::DONTWAIT | nosignal())
        } else if self.side.nonblocking {
            rustix::io::write(&*self.fd, buf)
        } else {
            // A blocking pipe accepts up to PIPE_BUF bytes at once whenever it polls writable.
            if buf.len() > rustix::pipe::PIPE_BUF {
                return Ok(0);
            }
            let ready = poll_one(self.fd.as_fd(), PollFlags::OUT, Some(Duration::ZERO))?;
            if !ready.contains(PollFlags::OUT) {
                return Ok(0);
            }
            rustix::io::write(&*self.fd, buf)
        };
        match result {
            Ok(n) => {
                self.mid_frame = n < buf.len();
                self.side.written.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Ok(0),
            Err(err) => Err(err.into()),
        }
    }

    /// Writes all of `buf`, blocking as needed and running `check` at least every
    /// [`CHECK_INTERVAL`] while the descriptor is not writable.
    pub fn write_all<E>(
        &mut self,
        buf: &[u8],
        check: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), WriteError<E>> {
        let mut done = 0;
        // A non-blocking descriptor is tried first and polled only once it is full.
        let mut poll_first = !self.side.nonblocking;
        while done < buf.len() {
            let ready = if poll_first {
                poll_one(self.fd.as_fd(), PollFlags::OUT, Some(CHECK_INTERVAL))
                    .map_err(WriteError::Io)?
            } else {
                PollFlags::OUT
            };
            poll_first = !self.side.nonblocking;
            if ready.is_empty() {
                // Not writable for a while: let Ctrl-C and `close()` end the wait.
                check().map_err(WriteError::Interrupted)?;
                if self.side.is_closed() {
                    return Err(WriteError::Closed);
                }
                continue;
            }
            let end = buf.len().min(done + WRITE_CHUNK);
            let result = if self.side.socket {
                rustix::net::send(&*self.fd, &buf[done..end], SendFlags::DONTWAIT | nosignal())
            } else {
                rustix::io::write(&*self.fd, &buf[done..end])
            };
            match result {
                Ok(n) => {
                    done += n;
                    self.mid_frame = done < buf.len();
                    self.side.written.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(rustix::io::Errno::AGAIN) => poll_first = true,
                Err(rustix::io::Errno::INTR) => check().map_err(WriteError::Interrupted)?,
                Err(err) => return Err(WriteError::Io(err.into())),
            }
        }
        self.mid_frame = false;
        Ok(())
    }
}

impl WriteToken<'_> {
    /// Writes `parts` one after the other as one frame: a failure anywhere after the first
    /// byte leaves the write side broken, as for a single buffer.
    pub fn write_parts<E>(
        &mut self,
        parts: &[&[u8]],
        check: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), WriteError<E>> {
        let mut started = false;
        for part in parts {
            if started {
                self.mid_frame = true;
            }
            self.write_all(part, check)?;
            started |= !part.is_empty();
        }
        Ok(())
    }
}

impl Drop for WriteToken<'_> {
    fn drop(&mut self) {
        let mut state = self.side.state.lock();
        state.busy = false;
        if self.mid_frame {
            state.broken = true;
        }
        drop(state);
        self.side.freed.notify_one();
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn nosignal() -> SendFlags {
    SendFlags::NOSIGNAL
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn nosignal() -> SendFlags {
    SendFlags::empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_frame, FrameError, FrameReader};
    use std::time::Instant;

    fn pipe() -> (OwnedFd, OwnedFd) {
        match cloexec_pipe() {
            Ok(pair) => pair,
            Err(err) => panic!("pipe: {err}"),
        }
    }

    fn never() -> impl FnMut() -> Result<(), ()> {
        || Ok(())
    }

    #[test]
    fn dup_rejects_bad_numbers() {
        assert!(dup_raw(-1).is_err());
        let (r, _w) = pipe();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&r);
        let dup = dup_raw(raw);
        assert!(dup.is_ok());
        // Far above any descriptor limit in use, so never open.
        assert!(dup_raw(1 << 30).is_err());
    }

    #[test]
    fn frames_cross_a_pipe_and_close_wakes_reader() {
        let (r, w) = pipe();
        let (side, closer) = match ReadSide::new(r, false) {
            Ok(pair) => pair,
            Err(err) => panic!("{err}"),
        };
        let writer = WriteSide::new(w, false);
        let frame = encode_frame(4, 1, b"F\x00\x00\x00\x01Q").unwrap_or_default();
        if let Ok(mut token) = writer.acquire(&mut never()) {
            assert_eq!(token.write_now(&frame).ok(), Some(frame.len()));
        }
        let handle = std::thread::spawn(move || {
            let mut reader = FrameReader::new(side);
            let first = reader.read_frame().map(|f| f.channel).ok();
            let start = Instant::now();
            let second = reader.read_frame();
            (
                first,
                matches!(second, Err(FrameError::Closed)),
                start.elapsed(),
            )
        });
        std::thread::sleep(Duration::from_millis(100));
        closer.close();
        assert!(closer.is_closed());
        let joined = handle.join();
        assert!(
            matches!(joined, Ok((Some(1), true, waited)) if waited >= Duration::from_millis(50))
        );
    }

    #[test]
    fn full_pipe_write_runs_check_and_can_be_interrupted() {
        let (_r, w) = pipe();
        let writer = WriteSide::new(w, false);
        let big = vec![0u8; 4 << 20];
        let mut checks = 0;
        let result = match writer.acquire(&mut never()) {
            Ok(mut token) => token.write_all(&big, &mut || {
                checks += 1;
                if checks >= 3 {
                    Err("interrupted")
                } else {
                    Ok(())
                }
            }),
            Err(_) => Err(WriteError::Closed),
        };
        assert!(matches!(
            result,
            Err(WriteError::Interrupted("interrupted"))
        ));
        // Part of the frame went out: the stream is out of sync for good.
        assert!(matches!(
            writer.try_acquire::<()>(),
            Err(WriteError::Broken)
        ));
    }

    #[test]
    fn close_ends_a_blocked_write() {
        let (_r, w) = pipe();
        let writer = Arc::new(WriteSide::new(w, false));
        let closer = Arc::clone(&writer);
        let handle = std::thread::spawn(move || {
            let big = vec![0u8; 4 << 20];
            match writer.acquire(&mut never()) {
                Ok(mut token) => {
                    matches!(token.write_all(&big, &mut never()), Err(WriteError::Closed))
                }
                Err(_) => false,
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        closer.close();
        assert!(matches!(handle.join(), Ok(true)));
    }

    #[test]
    fn lock_is_exclusive_and_close_is_final() {
        let (_r, w) = pipe();
        let writer = WriteSide::new(w, false);
        let token = writer.try_acquire::<()>();
        assert!(matches!(token, Ok(Some(_))));
        assert!(matches!(writer.try_acquire::<()>(), Ok(None)));
        let mut waits = 0;
        let blocked = writer.acquire(&mut || {
            waits += 1;
            if waits > 1 {
                Err("gave up")
            } else {
                Ok(())
            }
        });
        assert!(matches!(blocked, Err(WriteError::Interrupted("gave up"))));
        drop(token);
        assert!(matches!(writer.try_acquire::<()>(), Ok(Some(_))));
        writer.close();
        assert!(writer.is_closed());
        assert!(matches!(
            writer.try_acquire::<()>(),
            Err(WriteError::Closed)
        ));
    }
}
