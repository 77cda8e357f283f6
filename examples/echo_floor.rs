//! The transport benchmark's floor: a trivial line-echo program.
//!
//! Reads stdin line by line and writes every line straight back to stdout, flushing only
//! when no more input is already buffered (the same flush policy the sidecar uses). Nothing
//! can answer a line over a pipe faster than this, so `scripts/bench-transport.sh` reports
//! the sidecar's latency and throughput next to it.

use std::io::{self, BufRead, BufReader, BufWriter, Write};

fn main() -> io::Result<()> {
    let mut input = BufReader::with_capacity(64 * 1024, io::stdin().lock());
    let mut output = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        output.write_all(&line)?;
        if input.buffer().is_empty() {
            output.flush()?;
        }
    }
    output.flush()
}
