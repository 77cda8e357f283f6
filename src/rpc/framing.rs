//! NDJSON framing: one JSON value per `\n`-terminated line, with a length limit that never
//! lets one line grow memory without bound.

use std::io::{self, BufRead, BufReader, Read};

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

pub struct LineReader<R> {
    inner: BufReader<R>,
    max_line: usize,
}

impl<R: Read> LineReader<R> {
    pub fn new(input: R, max_line: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(64 * 1024, input),
            max_line,
        }
    }

    /// True when no further input is already buffered: the moment to flush output, since
    /// the next read may block.
    pub fn is_drained(&self) -> bool {
        self.inner.buffer().is_empty()
    }

    /// Reads the next line into `line` (cleared first).
    pub fn next_line(&mut self, line: &mut Vec<u8>) -> io::Result<Frame> {
        line.clear();
        let mut too_long = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                // EOF: a last line without `\n` still counts.
                return Ok(match (too_long, line.is_empty()) {
                    (true, _) => Frame::TooLong,
                    (false, true) => Frame::Eof,
                    (false, false) => Frame::Line,
                });
            }
            let (chunk, found_newline) = match memchr::memchr(b'\n', available) {
                Some(pos) => (&available[..pos], Some(pos + 1)),
                None => (available, None),
            };
            if !too_long {
                if line.len() + chunk.len() > self.max_line {
                    too_long = true;
                    line.clear();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            let consumed = found_newline.unwrap_or(available.len());
            self.inner.consume(consumed);
            if found_newline.is_some() {
                if too_long {
                    return Ok(Frame::TooLong);
                }
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Frame::Line);
            }
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
}
