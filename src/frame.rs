//! Message framing of the gateway protocol.
//!
//! Every message is a 9-byte header (`!bii`: signed message code, big-endian signed channel id,
//! big-endian signed payload length) followed by the payload. [`FrameReader`] reads whole frames
//! from any [`Read`]; [`encode_frame`] builds the bytes of one frame for a single write.

use std::fmt;
use std::io::{self, Read};

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 9;
/// Highest valid message code (`CHANNEL_LAST_MESSAGE`).
pub const MAX_CODE: i8 = 7;
/// Message code of `CHANNEL_DATA`.
pub const CHANNEL_DATA: i8 = 4;

/// Size of the read buffer.
const CHUNK: usize = 64 * 1024;
/// Payload buffers are allocated up front up to this size; beyond it they grow as bytes
/// arrive, so a forged length cannot make the reader allocate gigabytes.
const PREALLOC_LIMIT: usize = 16 * 1024 * 1024;

/// The fixed 9-byte header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message code, 0..=7 on a valid stream.
    pub code: i8,
    /// Channel id the message belongs to (0 for gateway-wide messages).
    pub channel: i32,
    /// Payload length in bytes; never negative on a valid stream.
    pub len: i32,
}

impl FrameHeader {
    /// The header's wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = self.code.to_be_bytes()[0];
        out[1..5].copy_from_slice(&self.channel.to_be_bytes());
        out[5..9].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Parses header bytes; no validation (see [`FrameHeader::validate`]).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            code: i8::from_be_bytes([bytes[0]]),
            channel: i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]),
            len: i32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]),
        }
    }

    /// Checks that the code is a known message code and the length is not negative; returns
    /// the payload length.
    pub fn validate(&self) -> Result<usize, FrameError> {
        if !(0..=MAX_CODE).contains(&self.code) {
            return Err(FrameError::BadCode { header: *self });
        }
        usize::try_from(self.len).map_err(|_| FrameError::NegativeLength { header: *self })
    }
}

/// One complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Message code (0..=7).
    pub code: i8,
    /// Channel id.
    pub channel: i32,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

/// Why reading or building a frame failed.
#[derive(Debug)]
pub enum FrameError {
    /// The stream ended inside (or, with `got == 0`, exactly at the start of) a header.
    HeaderEof {
        /// Header bytes read before the end.
        got: usize,
    },
    /// The stream ended inside a payload.
    PayloadEof {
        /// Payload length announced by the header.
        expected: usize,
        /// Payload bytes read before the end.
        got: usize,
    },
    /// The header carries a message code outside 0..=7.
    BadCode {
        /// The offending header.
        header: FrameHeader,
    },
    /// The header announces a negative payload length.
    NegativeLength {
        /// The offending header.
        header: FrameHeader,
    },
    /// A payload to send is longer than the 2^31-1 bytes a header can announce.
    PayloadTooLarge {
        /// The payload length.
        len: usize,
    },
    /// The reading side was closed locally while waiting for data.
    Closed,
    /// Any other I/O error.
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::HeaderEof { got } => write!(
                f,
                "couldn't load message header, expected {HEADER_LEN} bytes, got {got}"
            ),
            FrameError::PayloadEof { expected, got } => {
                write!(f, "expected {expected} bytes, got {got}")
            }
            FrameError::BadCode { header } => write!(
                f,
                "invalid message header: message code {} is not in 0..{} (channel id {}, payload length {})",
                header.code, MAX_CODE, header.channel, header.len
            ),
            FrameError::NegativeLength { header } => write!(
                f,
                "invalid message header: negative payload length {} (message code {}, channel id {})",
                header.len, header.code, header.channel
            ),
            FrameError::PayloadTooLarge { len } => write!(
                f,
                "payload of {len} bytes is too large for one message (limit {})",
                i32::MAX
            ),
            FrameError::Closed => f.write_str("the reading side was closed"),
            FrameError::Io(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(err: io::Error) -> Self {
        FrameError::Io(err)
    }
}

/// Builds the wire bytes of one frame (header and payload in one buffer).
pub fn encode_frame(code: i8, channel: i32, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let len = wire_len(payload.len())?;
    let header = FrameHeader { code, channel, len };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    Ok(out)
}

/// The header length field for a payload of `len` bytes.
pub fn wire_len(len: usize) -> Result<i32, FrameError> {
    i32::try_from(len).map_err(|_| FrameError::PayloadTooLarge { len })
}

/// Reads whole frames from a byte stream through an internal buffer.
///
/// A payload larger than the buffer is read straight into its own vector, which grows in
/// bounded steps as bytes arrive: a header announcing 2 GiB on a stream that then ends
/// allocates only what actually arrived.
pub struct FrameReader<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<R: Read> FrameReader<R> {
    /// Wraps a byte stream.
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: vec![0u8; CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Reads the next frame; blocks until it is complete.
    pub fn read_frame(&mut self) -> Result<Frame, FrameError> {
        let mut header = [0u8; HEADER_LEN];
        let got = self.read_up_to(&mut header)?;
        if got < HEADER_LEN {
            return Err(FrameError::HeaderEof { got });
        }
        let header = FrameHeader::decode(&header);
        let len = header.validate()?;
        let payload = self.read_payload(len)?;
        Ok(Frame {
            code: header.code,
            channel: header.channel,
            payload,
        })
    }

    /// The next frame if it is already complete in the read buffer; never reads from the
    /// stream. A malformed header is left in the buffer for [`FrameReader::read_frame`] to
    /// report.
    pub fn read_buffered_frame(&mut self) -> Option<Frame> {
        let available = &self.buf[self.start..self.end];
        let header: &[u8; HEADER_LEN] = available.get(..HEADER_LEN)?.try_into().ok()?;
        let header = FrameHeader::decode(header);
        let len = header.validate().ok()?;
        let payload = available
            .get(HEADER_LEN..HEADER_LEN.checked_add(len)?)?
            .to_vec();
        self.start += HEADER_LEN + len;
        Some(Frame {
            code: header.code,
            channel: header.channel,
            payload,
        })
    }

    /// Refills the buffer; returns the number of new bytes (0 at end of stream).
    fn fill(&mut self) -> Result<usize, FrameError> {
        self.start = 0;
        self.end = 0;
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(n) => {
                    self.end = n;
                    return Ok(n);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(map_read_error(err)),
            }
        }
    }

    /// Fills `out` as far as the stream allows; returns how many bytes were stored.
    fn read_up_to(&mut self, out: &mut [u8]) -> Result<usize, FrameError> {
        let mut got = 0;
        while got < out.len() {
            if self.start == self.end && self.fill()? == 0 {
                break;
            }
            let n = (self.end - self.start).min(out.len() - got);
            out[got..got + n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            got += n;
        }
        Ok(got)
    }

    fn read_payload(&mut self, len: usize) -> Result<Vec<u8>, FrameError> {
        let buffered = (self.end - self.start).min(len);
        let mut payload = Vec::with_capacity(len.min(PREALLOC_LIMIT));
        payload.extend_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        if payload.len() == len {
            return Ok(payload);
        }
        if len - payload.len() < CHUNK {
            // Small remainder: go through the buffer so that following frames are read ahead.
            let mut got = payload.len();
            payload.resize(len, 0);
            got += self.read_up_to(&mut payload[got..])?;
            if got < len {
                return Err(FrameError::PayloadEof { expected: len, got });
            }
            return Ok(payload);
        }
        // Large remainder: read directly into the payload. `read_to_end` grows the vector
        // geometrically as bytes arrive (memory follows what actually arrives, never the
        // announced length) and does not re-zero its spare capacity.
        let want = len - payload.len();
        let got = (&mut self.inner)
            .take(want as u64)
            .read_to_end(&mut payload)
            .map_err(map_read_error)?;
        if got < want {
            return Err(FrameError::PayloadEof {
                expected: len,
                got: payload.len(),
            });
        }
        Ok(payload)
    }
}

/// Marker error kind a stream returns from `read` when it was closed locally.
pub fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, ClosedMarker)
}

#[derive(Debug)]
struct ClosedMarker;

impl fmt::Display for ClosedMarker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("closed locally")
    }
}

impl std::error::Error for ClosedMarker {}

fn map_read_error(err: io::Error) -> FrameError {
    if err
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<ClosedMarker>().is_some())
    {
        FrameError::Closed
    } else {
        FrameError::Io(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn frame_bytes(code: i8, channel: i32, payload: &[u8]) -> Vec<u8> {
        match encode_frame(code, channel, payload) {
            Ok(bytes) => bytes,
            Err(err) => panic!("encode failed: {err}"),
        }
    }

    /// A reader that hands out at most `step` bytes per call.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len() - self.pos);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn header_roundtrip_matches_wire_example() {
        let header = FrameHeader {
            code: 3,
            channel: 1,
            len: 30,
        };
        assert_eq!(header.encode(), [3, 0, 0, 0, 1, 0, 0, 0, 0x1e]);
        assert_eq!(FrameHeader::decode(&header.encode()), header);
        let negative = FrameHeader {
            code: -1,
            channel: -2,
            len: -3,
        };
        assert_eq!(FrameHeader::decode(&negative.encode()), negative);
    }

    #[test]
    fn reads_consecutive_frames() {
        let mut data = frame_bytes(4, 1, b"F\x00\x00\x00\x2aQ");
        data.extend(frame_bytes(5, 1, b""));
        data.extend(frame_bytes(2, 0, b""));
        let mut reader = FrameReader::new(Cursor::new(data));
        let first = reader.read_frame().map_err(|e| e.to_string());
        assert_eq!(
            first,
            Ok(Frame {
                code: 4,
                channel: 1,
                payload: b"F\x00\x00\x00\x2aQ".to_vec()
            })
        );
        assert_eq!(reader.read_frame().map(|f| f.code).ok(), Some(5));
        assert_eq!(reader.read_frame().map(|f| f.code).ok(), Some(2));
        let end = reader.read_frame();
        assert!(matches!(end, Err(FrameError::HeaderEof { got: 0 })));
        if let Err(err) = end {
            assert_eq!(
                err.to_string(),
                "couldn't load message header, expected 9 bytes, got 0"
            );
        }
    }

    #[test]
    fn buffered_frames_never_block() {
        let mut data = frame_bytes(4, 1, b"one");
        data.extend(frame_bytes(5, 1, b""));
        data.extend(frame_bytes(4, 2, b"partial"));
        data.truncate(data.len() - 3);
        let mut reader = FrameReader::new(Cursor::new(data));
        assert_eq!(reader.read_buffered_frame(), None); // nothing read yet
        assert_eq!(
            reader.read_frame().map(|f| f.payload).ok(),
            Some(b"one".to_vec())
        );
        assert_eq!(reader.read_buffered_frame().map(|f| f.code), Some(5));
        assert_eq!(reader.read_buffered_frame(), None); // incomplete payload stays
        assert!(matches!(
            reader.read_frame(),
            Err(FrameError::PayloadEof {
                expected: 7,
                got: 4
            })
        ));

        let mut data = frame_bytes(4, 1, b"x");
        data.extend_from_slice(&[9, 0, 0, 0, 1, 0, 0, 0, 0]);
        let mut reader = FrameReader::new(Cursor::new(data));
        assert!(reader.read_frame().is_ok());
        assert_eq!(reader.read_buffered_frame(), None); // bad header left for read_frame
        assert!(matches!(
            reader.read_frame(),
            Err(FrameError::BadCode { .. })
        ));
    }

    #[test]
    fn partial_header_reports_count() {
        let mut reader = FrameReader::new(Cursor::new(vec![4u8, 0, 0, 0]));
        let err = reader.read_frame();
        assert!(matches!(err, Err(FrameError::HeaderEof { got: 4 })));
        if let Err(err) = err {
            assert_eq!(
                err.to_string(),
                "couldn't load message header, expected 9 bytes, got 4"
            );
        }
    }

    #[test]
    fn eof_inside_payload() {
        let mut data = frame_bytes(4, 7, &[b'x'; 100]);
        data.truncate(HEADER_LEN + 60);
        let mut reader = FrameReader::new(Cursor::new(data));
        let err = reader.read_frame();
        assert!(matches!(
            err,
            Err(FrameError::PayloadEof {
                expected: 100,
                got: 60
            })
        ));
        if let Err(err) = err {
            assert_eq!(err.to_string(), "expected 100 bytes, got 60");
        }
    }

    #[test]
    fn huge_announced_length_allocates_only_what_arrives() {
        let header = FrameHeader {
            code: 4,
            channel: 1,
            len: i32::MAX,
        };
        let mut data = header.encode().to_vec();
        data.extend_from_slice(&[0u8; 1000]);
        let mut reader = FrameReader::new(Cursor::new(data));
        assert!(matches!(
            reader.read_frame(),
            Err(FrameError::PayloadEof { got: 1000, .. })
        ));
    }

    #[test]
    fn bad_code_and_negative_length() {
        for code in [8i8, 100, -1, i8::MIN] {
            let header = FrameHeader {
                code,
                channel: 3,
                len: 0,
            };
            let mut reader = FrameReader::new(Cursor::new(header.encode().to_vec()));
            let err = reader.read_frame();
            assert!(matches!(err, Err(FrameError::BadCode { .. })), "{code}");
        }
        let header = FrameHeader {
            code: 4,
            channel: 3,
            len: -5,
        };
        let mut reader = FrameReader::new(Cursor::new(header.encode().to_vec()));
        let err = reader.read_frame();
        assert!(matches!(err, Err(FrameError::NegativeLength { .. })));
        if let Err(err) = err {
            assert!(err.to_string().contains("negative payload length -5"));
        }
    }

    #[test]
    fn large_payload_across_many_reads() {
        let payload: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let mut data = frame_bytes(4, 9, &payload);
        data.extend(frame_bytes(5, 9, b""));
        let mut reader = FrameReader::new(Trickle {
            data,
            pos: 0,
            step: 7000,
        });
        let frame = reader.read_frame().map_err(|e| e.to_string());
        assert_eq!(frame.map(|f| f.payload), Ok(payload));
        assert_eq!(reader.read_frame().map(|f| f.code).ok(), Some(5));
    }

    #[test]
    fn closed_marker_maps_to_closed() {
        struct ClosedStream;
        impl Read for ClosedStream {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(closed_error())
            }
        }
        let mut reader = FrameReader::new(ClosedStream);
        assert!(matches!(reader.read_frame(), Err(FrameError::Closed)));
    }

    #[test]
    fn payload_length_limit() {
        assert_eq!(wire_len(0).ok(), Some(0));
        assert_eq!(wire_len(i32::MAX as usize).ok(), Some(i32::MAX));
        let err = wire_len(i32::MAX as usize + 1);
        assert!(matches!(
            err,
            Err(FrameError::PayloadTooLarge { len: 2147483648 })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

        /// Arbitrary bytes never panic and never report more frames than bytes allow.
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048),
                                step in 1usize..64) {
            let total = data.len();
            let mut reader = FrameReader::new(Trickle { data, pos: 0, step });
            let mut consumed = 0usize;
            while let Ok(frame) = reader.read_frame() {
                prop_assert!((0..=MAX_CODE).contains(&frame.code));
                consumed += HEADER_LEN + frame.payload.len();
                prop_assert!(consumed <= total);
            }
        }

        /// Any sequence of frames survives encode + decode at any read granularity.
        #[test]
        fn roundtrip(frames in proptest::collection::vec(
                        (0i8..=7, any::<i32>(), proptest::collection::vec(any::<u8>(), 0..300)),
                        0..20),
                     step in 1usize..100) {
            let mut data = Vec::new();
            for (code, channel, payload) in &frames {
                data.extend(frame_bytes(*code, *channel, payload));
            }
            let mut reader = FrameReader::new(Trickle { data, pos: 0, step });
            for (code, channel, payload) in &frames {
                let frame = reader.read_frame();
                prop_assert!(frame.is_ok());
                if let Ok(frame) = frame {
                    prop_assert_eq!(frame.code, *code);
                    prop_assert_eq!(frame.channel, *channel);
                    prop_assert_eq!(&frame.payload, payload);
                }
            }
            let end = reader.read_frame();
            prop_assert!(matches!(end, Err(FrameError::HeaderEof { got: 0 })), "{:?}", end);
        }
    }
}
