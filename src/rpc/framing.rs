//! NDJSON framing: one JSON value per `\n`-terminated line, with a length limit that never
//! lets one line grow memory without bound.
//!
//! [`Framer`] is the whole of it, without I/O: input is read into its buffer, and lines come
//! out as slices of that buffer (a line split across two reads is put together in a second
//! buffer, the spill). The async reader ([`super::serve`]) and the blocking [`LineReader`]
//! both drive it.
//!
//! **No request bytes are left behind.** Every byte handed out as a line, or skipped as part
//! of an over-long one, is zeroed once it is done with: the part of the read buffer a line
//! used when the next one is asked for, the spill likewise (and before it is ever reallocated
//! or freed). Only the bytes actually read are zeroed, so a 60-byte request costs a 60-byte
//! `memset`.

use std::io::{self, Read};

use zeroize::Zeroize;

/// Bytes read from the input at a time.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// A spill larger than this is not kept after the line that needed it.
const KEEP_SPILL_BYTES: usize = 256 * 1024;

/// What one call to [`LineReader::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line is in the buffer (without `\n` and without a trailing `\r`).
    Line,
    /// The line was longer than the limit; its bytes were skipped up to the next `\n`.
    TooLong,
    /// End of input.
    Eof,
}

/// What [`Framer::next`] found in what has been read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A complete line (without `\n` and without a trailing `\r`). Its bytes are zeroed at
    /// the next call.
    Line(&'a [u8]),
    /// A line longer than the limit was skipped up to its `\n` (or to the end of input).
    TooLong,
    /// Everything read has been consumed: read more into [`Framer::space`].
    NeedInput,
    /// End of input, and nothing left.
    Eof,
}

/// Line splitting over a read buffer (see the module docs).
pub struct Framer {
    buf: Box<[u8]>,
    /// Next byte not yet looked at.
    start: usize,
    /// End of the bytes read.
    end: usize,
    /// `buf[dirty..start]` has been consumed and is not zeroed yet.
    dirty: usize,
    /// The start of a line that continues past the bytes read so far.
    spill: Vec<u8>,
    /// The spill was handed out as a line: zero it at the next call.
    spill_out: bool,
    /// Skipping an over-long line up to its `\n`.
    too_long: bool,
    eof: bool,
    max_line: usize,
}

impl Framer {
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            dirty: 0,
            spill: Vec::new(),
            spill_out: false,
            too_long: false,
            eof: false,
            max_line,
        }
    }

    /// True when every byte read has been consumed: the next [`Framer::next`] needs input
    /// (or reports the end), so this is the moment to flush output.
    pub fn is_drained(&self) -> bool {
        self.start == self.end
    }

    /// The next line, or what is needed to get one.
    pub fn next(&mut self) -> Step<'_> {
        self.wipe_consumed();
        loop {
            if self.start == self.end {
                self.wipe_consumed();
                if !self.eof {
                    return Step::NeedInput;
                }
                // The end: a last line without `\n` still counts.
                if std::mem::take(&mut self.too_long) {
                    return Step::TooLong;
                }
                if self.spill.is_empty() {
                    return Step::Eof;
                }
                self.spill_out = true;
                return Step::Line(&self.spill);
            }
            let available = &self.buf[self.start..self.end];
            let Some(pos) = memchr::memchr(b'\n', available) else {
                // No end of line yet: keep what there is and read on.
                let (start, end) = (self.start, self.end);
                self.start = end;
                if !self.too_long {
                    if self.spill.len() + (end - start) > self.max_line {
                        self.skip_line();
                    } else {
                        spill_extend(&mut self.spill, &self.buf[start..end]);
                    }
                }
                continue;
            };
            let (line_start, line_end) = (self.start, self.start + pos);
            self.start = line_end + 1;
            if std::mem::take(&mut self.too_long) {
                return Step::TooLong;
            }
            if self.spill.len() + pos > self.max_line {
                self.wipe_spill();
                return Step::TooLong;
            }
            let line = if self.spill.is_empty() {
                &self.buf[line_start..line_end]
            } else {
                spill_extend(&mut self.spill, &self.buf[line_start..line_end]);
                self.spill_out = true;
                &self.spill[..]
            };
            return Step::Line(line.strip_suffix(b"\r").unwrap_or(line));
        }
    }

    /// Where to read the next input into. Only after [`Step::NeedInput`].
    pub fn space(&mut self) -> &mut [u8] {
        debug_assert!(self.is_drained());
        self.wipe_consumed();
        self.start = 0;
        self.end = 0;
        self.dirty = 0;
        &mut self.buf[..]
    }

    /// `n` bytes were read into [`Framer::space`]; 0 is the end of input.
    pub fn filled(&mut self, n: usize) {
        if n == 0 {
            self.eof = true;
        } else {
            self.end = n.min(self.buf.len());
        }
    }

    /// The rest of an over-long line is skipped; what was kept of it is zeroed.
    fn skip_line(&mut self) {
        self.too_long = true;
        self.wipe_spill();
    }

    /// Zeroes what the previous call handed out or skipped.
    fn wipe_consumed(&mut self) {
        if self.dirty < self.start {
            self.buf[self.dirty..self.start].zeroize();
            self.dirty = self.start;
        }
        if std::mem::take(&mut self.spill_out) {
            self.wipe_spill();
        }
    }

    fn wipe_spill(&mut self) {
        self.spill.as_mut_slice().zeroize();
        self.spill.clear();
        if self.spill.capacity() > KEEP_SPILL_BYTES {
            // Zeroed up to its length above; the rest of its capacity never held anything.
            self.spill = Vec::new();
        }
    }
}

impl Drop for Framer {
    fn drop(&mut self) {
        self.buf[..self.end].zeroize();
        self.spill.as_mut_slice().zeroize();
    }
}

/// Appends to the spill without leaving a copy behind in a buffer it outgrew.
fn spill_extend(spill: &mut Vec<u8>, bytes: &[u8]) {
    if spill.capacity() - spill.len() < bytes.len() {
        let wanted = (spill.len() + bytes.len())
            .max(2 * spill.capacity())
            .max(256);
        let mut grown = Vec::with_capacity(wanted);
        grown.extend_from_slice(spill);
        spill.as_mut_slice().zeroize();
        *spill = grown;
    }
    spill.extend_from_slice(bytes);
}

/// A blocking line reader over any [`Read`]: [`Framer`] driven by plain reads. The transport
/// reads asynchronously; this is the same framing for callers that block (and for fuzzing).
pub struct LineReader<R> {
    inner: R,
    framer: Framer,
}

impl<R: Read> LineReader<R> {
    pub fn new(input: R, max_line: usize) -> Self {
        Self {
            inner: input,
            framer: Framer::new(max_line),
        }
    }

    /// True when no further input is already buffered: the moment to flush output, since
    /// the next read may block.
    pub fn is_drained(&self) -> bool {
        self.framer.is_drained()
    }

    /// Reads the next line into `line` (cleared first). The reader's own copy is zeroed at
    /// the next call; `line` is the caller's.
    pub fn next_line(&mut self, line: &mut Vec<u8>) -> io::Result<Frame> {
        line.clear();
        loop {
            match self.framer.next() {
                Step::Line(found) => {
                    line.extend_from_slice(found);
                    return Ok(Frame::Line);
                }
                Step::TooLong => return Ok(Frame::TooLong),
                Step::Eof => return Ok(Frame::Eof),
                Step::NeedInput => {}
            }
            let n = loop {
                match self.inner.read(self.framer.space()) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.framer.filled(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], max: usize) -> Vec<(Frame, Vec<u8>)> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            let frame = reader.next_line(&mut line).unwrap();
            if frame == Frame::Eof {
                return out;
            }
            out.push((frame, line.clone()));
        }
    }

    #[test]
    fn splits_lines_and_strips_carriage_return() {
        let got = frames(b"a\r\nbb\nlast", 100);
        assert_eq!(
            got,
            vec![
                (Frame::Line, b"a".to_vec()),
                (Frame::Line, b"bb".to_vec()),
                (Frame::Line, b"last".to_vec()),
            ]
        );
    }

    #[test]
    fn over_long_line_is_skipped_and_reading_goes_on() {
        let mut input = vec![b'x'; 50];
        input.extend_from_slice(b"\nok\n");
        let got = frames(&input, 10);
        assert_eq!(got[0].0, Frame::TooLong);
        assert_eq!(got[1], (Frame::Line, b"ok".to_vec()));
    }

    #[test]
    fn limit_is_inclusive() {
        let got = frames(b"0123456789\n", 10);
        assert_eq!(got, vec![(Frame::Line, b"0123456789".to_vec())]);
    }

    /// Reads a few bytes at a time.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn lines_split_across_reads_come_out_whole() {
        let input = b"{\"a\":1}\r\n{\"bb\":22}\nxxxxxxxxxxxxxxxxxxxxxxxx\nlast";
        for chunk in 1..input.len() {
            let mut reader = LineReader::new(Trickle(input, chunk), 12);
            let mut line = Vec::new();
            let mut got = Vec::new();
            while let frame @ (Frame::Line | Frame::TooLong) = reader.next_line(&mut line).unwrap()
            {
                got.push((frame, line.clone()));
            }
            assert_eq!(
                got,
                vec![
                    (Frame::Line, b"{\"a\":1}".to_vec()),
                    (Frame::Line, b"{\"bb\":22}".to_vec()),
                    (Frame::TooLong, Vec::new()),
                    (Frame::Line, b"last".to_vec()),
                ],
                "reads of {chunk} bytes"
            );
        }
    }

    /// Every byte of a line handed out, and of one skipped, is zeroed by the next call; the
    /// bytes not yet consumed are untouched.
    #[test]
    fn consumed_bytes_are_zeroed() {
        let mut framer = Framer::new(8);
        assert_eq!(framer.next(), Step::NeedInput);
        let input = b"secret1\nsecret2-too-long\nsecr";
        framer.space()[..input.len()].copy_from_slice(input);
        framer.filled(input.len());
        assert_eq!(framer.next(), Step::Line(b"secret1"));
        assert_eq!(&framer.buf[8..12], b"secr", "the next line is still there");
        assert_eq!(framer.next(), Step::TooLong);
        assert!(
            framer.buf[..8].iter().all(|&b| b == 0),
            "the line handed out is zeroed"
        );
        assert_eq!(framer.next(), Step::NeedInput);
        assert!(framer.buf[..input.len()].iter().all(|&b| b == 0));
        assert_eq!(framer.spill, b"secr", "the partial line waits in the spill");

        let rest = b"et3\n";
        framer.space()[..rest.len()].copy_from_slice(rest);
        framer.filled(rest.len());
        assert_eq!(framer.next(), Step::Line(b"secret3"));
        assert_eq!(framer.next(), Step::NeedInput);
        assert!(framer.spill.is_empty());
        assert!(framer.buf[..rest.len()].iter().all(|&b| b == 0));
        framer.space();
        framer.filled(0);
        assert_eq!(framer.next(), Step::Eof);
    }

    /// The fuzz target's model (fuzz/fuzz_targets/line_framing.rs), on pseudo-random
    /// streams of `a`, `\r` and `\n`, read a few bytes at a time.
    #[test]
    fn frames_match_the_model_on_random_streams() {
        fn model(input: &[u8], max: usize) -> Vec<(Frame, Vec<u8>)> {
            let mut out = Vec::new();
            let mut rest = input;
            while !rest.is_empty() {
                let (segment, raw, terminated) = match rest.iter().position(|&b| b == b'\n') {
                    Some(pos) => (&rest[..pos], pos + 1, true),
                    None => (rest, rest.len(), false),
                };
                out.push(if segment.len() > max {
                    (Frame::TooLong, Vec::new())
                } else if terminated && segment.last() == Some(&b'\r') {
                    (Frame::Line, segment[..segment.len() - 1].to_vec())
                } else {
                    (Frame::Line, segment.to_vec())
                });
                rest = &rest[raw..];
            }
            out
        }
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let len = (next() % 200) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| match next() % 8 {
                    0 => b'\n',
                    1 => b'\r',
                    _ => b'a',
                })
                .collect();
            let max = (next() % 40) as usize;
            let chunk = (next() % 17) as usize + 1;
            let mut reader = LineReader::new(Trickle(&input, chunk), max);
            let mut line = Vec::new();
            let mut got = Vec::new();
            loop {
                match reader.next_line(&mut line).unwrap() {
                    Frame::Eof => break,
                    frame => got.push((frame, line.clone())),
                }
            }
            assert_eq!(got, model(&input, max), "{input:?} max {max} chunk {chunk}");
            assert!(reader.is_drained());
        }
    }

    #[test]
    fn a_growing_spill_leaves_no_copy_in_the_buffer_it_outgrew() {
        let mut spill = Vec::with_capacity(4);
        spill.extend_from_slice(b"abcd");
        let old = spill.as_ptr();
        spill_extend(&mut spill, b"efgh");
        assert_ne!(spill.as_ptr(), old, "reallocated");
        assert_eq!(spill, b"abcdefgh");
    }
}
