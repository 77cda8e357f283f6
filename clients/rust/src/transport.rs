//! jsonrpsee's client transport over the child's pipes: one JSON value per line.

use jsonrpsee::core::client::{ReceivedMessage, TransportReceiverT, TransportSenderT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::watch;

/// Lines written to the sidecar's stdin.
pub struct Sender {
    stdin: ChildStdin,
}

/// Lines read from the sidecar's stdout, once [`Open::open`] was called: the client
/// subscribes to the notifications first, so none is read before anyone listens.
pub struct Receiver {
    lines: Lines<BufReader<ChildStdout>>,
    open: watch::Receiver<bool>,
}

/// Lets the [`Receiver`] start reading.
pub struct Open(watch::Sender<bool>);

impl Open {
    pub fn open(self) {
        let _ = self.0.send(true);
    }
}

pub fn pipes(stdin: ChildStdin, stdout: ChildStdout) -> (Sender, Receiver, Open) {
    let (open, opened) = watch::channel(false);
    let receiver = Receiver {
        lines: BufReader::new(stdout).lines(),
        open: opened,
    };
    (Sender { stdin }, receiver, Open(open))
}

impl TransportSenderT for Sender {
    type Error = std::io::Error;

    async fn send(&mut self, mut message: String) -> Result<(), Self::Error> {
        message.push('\n');
        self.stdin.write_all(message.as_bytes()).await?;
        self.stdin.flush().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.stdin.shutdown().await
    }
}

impl TransportReceiverT for Receiver {
    type Error = std::io::Error;

    async fn receive(&mut self) -> Result<ReceivedMessage, Self::Error> {
        // Dropped without opening (spawn failed half-way): nothing to read for anyone.
        self.open
            .wait_for(|open| *open)
            .await
            .map_err(|_| closed("the client is gone"))?;
        loop {
            match self.lines.next_line().await? {
                Some(line) if line.trim().is_empty() => continue,
                Some(line) => return Ok(ReceivedMessage::Text(line)),
                None => return Err(closed("the sidecar closed its stdout")),
            }
        }
    }
}

fn closed(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, why.to_string())
}
