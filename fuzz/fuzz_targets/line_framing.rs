//! Arbitrary bytes through `rpc::LineReader`, delivered in fuzz-chosen read sizes (with
//! `Interrupted` errors sprinkled in), compared frame by frame with a reference model.
//!
//! Input layout: byte 0 picks the line limit (0..=64), byte 1 the read pattern, the rest is
//! the stream.
//!
//! Invariants:
//! - no panic;
//! - every `Line` is at most the limit long and holds no `\n`;
//! - frames are exactly those of the model: lines split at `\n`, one trailing `\r` dropped
//!   from a `\n`-terminated line, a line longer than the limit (counted before the `\r` is
//!   dropped) is `TooLong` and skipped, an unterminated last line still counts;
//! - every input byte is accounted for: the model's raw segments cover the input exactly;
//! - after `Eof` the reader stays at `Eof` and reports itself drained.

#![no_main]

use std::io::{self, Read};

use core_sidecar::rpc::{Frame, LineReader};
use libfuzzer_sys::fuzz_target;

/// Hands out the input a few bytes per `read`, failing with `Interrupted` now and then.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
    interrupt: bool,
    reads: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if self.interrupt && self.reads.is_multiple_of(3) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Line(Vec<u8>),
    TooLong,
}

/// The frames the input should produce, and the raw bytes each one covers.
fn model(input: &[u8], max: usize) -> Vec<(Expected, usize)> {
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let (segment, raw_len, terminated) = match rest.iter().position(|&b| b == b'\n') {
            Some(pos) => (&rest[..pos], pos + 1, true),
            None => (rest, rest.len(), false),
        };
        let frame = if segment.len() > max {
            Expected::TooLong
        } else if terminated && segment.last() == Some(&b'\r') {
            Expected::Line(segment[..segment.len() - 1].to_vec())
        } else {
            Expected::Line(segment.to_vec())
        };
        out.push((frame, raw_len));
        rest = &rest[raw_len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [max, pattern, stream @ ..] = data else {
        return;
    };
    let max = usize::from(*max % 65);
    let chunk = usize::from(pattern & 0x3f) + 1;
    let interrupt = pattern & 0x40 != 0;

    let expected = model(stream, max);
    assert_eq!(
        expected.iter().map(|(_, raw)| raw).sum::<usize>(),
        stream.len(),
        "the model must account for every byte"
    );

    let mut reader = LineReader::new(
        Trickle {
            data: stream,
            chunk,
            interrupt,
            reads: 0,
        },
        max,
    );
    let mut line = b"stale".to_vec();
    let mut got = Vec::new();
    loop {
        let frame = reader
            .next_line(&mut line)
            .expect("only Interrupted, retried");
        match frame {
            Frame::Eof => break,
            Frame::Line => {
                assert!(line.len() <= max, "line of {} > limit {max}", line.len());
                assert!(!line.contains(&b'\n'), "line holds a newline");
                got.push(Expected::Line(line.clone()));
            }
            Frame::TooLong => got.push(Expected::TooLong),
        }
        assert!(got.len() <= expected.len(), "more frames than the model");
    }
    let expected: Vec<Expected> = expected.into_iter().map(|(frame, _)| frame).collect();
    assert_eq!(got, expected);
    assert!(reader.is_drained());
    assert_eq!(reader.next_line(&mut line).unwrap(), Frame::Eof);
    assert!(line.is_empty(), "Eof leaves the line empty");
});
