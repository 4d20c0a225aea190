//! The broker socket behind a tiny trait, so the link's state machine does not care which
//! runtime drives it and can be tested over any stream.
//!
//! Owns the two implementations: tokio-uring's `UnixStream` on the io_uring backend and
//! tokio's `UnixStream` on the portable and simulated backends. Buffers are owned and
//! handed back (io_uring's model). An operation once started is always driven to its end:
//! to stop a connection, [`LinkSocket::shut_down`] makes pending reads and writes finish.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A connected stream socket to the broker, shared by the connection's reader and writer.
#[allow(async_fn_in_trait)] // Used on one thread only: the futures never need to be Send.
pub(crate) trait LinkSocket: 'static {
    /// Reads into `buf`, which must be empty with spare capacity; afterwards its length is
    /// what was read (`Ok(0)`: end of stream).
    async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>);
    /// Writes all of `buf`.
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>);
    /// Shuts both directions down, so pending operations complete; errors are ignored
    /// (the socket may already be gone).
    fn shut_down(&self);
}

/// tokio's Unix stream (portable and simulated backends).
pub(crate) struct TokioSocket(tokio::net::UnixStream);

impl TokioSocket {
    pub(crate) async fn connect(path: &Path) -> io::Result<TokioSocket> {
        tokio::net::UnixStream::connect(path).await.map(TokioSocket)
    }
}

impl LinkSocket for TokioSocket {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        debug_assert!(
            buf.is_empty() && buf.capacity() > 0,
            "an empty buffer with room"
        );
        loop {
            if let Err(error) = self.0.readable().await {
                return (Err(error), buf);
            }
            match self.0.try_read_buf(&mut buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => return (result, buf),
            }
        }
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut written = 0;
        while written < buf.len() {
            if let Err(error) = self.0.writable().await {
                return (Err(error), buf);
            }
            match self.0.try_write(&buf[written..]) {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return (Err(error), buf),
            }
        }
        (Ok(()), buf)
    }

    fn shut_down(&self) {
        // SAFETY: the descriptor belongs to the stream, which is alive for this call;
        // `shutdown` does not close or otherwise invalidate it.
        unsafe {
            libc::shutdown(self.0.as_raw_fd(), libc::SHUT_RDWR);
        }
    }
}

/// tokio-uring's Unix stream (io_uring backend: the socket shares the WAL's ring).
pub(crate) struct UringSocket(tokio_uring::net::UnixStream);

impl UringSocket {
    pub(crate) async fn connect(path: &Path) -> io::Result<UringSocket> {
        tokio_uring::net::UnixStream::connect(path)
            .await
            .map(UringSocket)
    }
}

impl LinkSocket for UringSocket {
    async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        debug_assert!(
            buf.is_empty() && buf.capacity() > 0,
            "an empty buffer with room"
        );
        self.0.read(buf).await
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        self.0.write_all(buf).await
    }

    fn shut_down(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}
