//! Miner replies stamped by the kernel (docs/executor.md §2.1): the moment a reply's last bytes
//! reached the executor's socket, whenever the arbiter gets to read them.
//!
//! Every TCP connection to a miner is a [`StampedTcp`]: the socket has `SO_TIMESTAMPNS` on, and each
//! read takes the receive time of the last segment it copied (the kernel's wall clock, from the
//! `SCM_TIMESTAMPNS` control message). A read publishes that time on its thread; [`Arrival::track`]
//! collects what the reads inside one poll of a connection published. Polls on an arbiter never
//! overlap, and only the polled connection's socket is read within its poll, so what a poll collects
//! belongs to that connection even under TLS, which reads through this stream.
//!
//! Why: the arbiters run below the episode workers' priority (see [`super::pool::ARBITER_NICE`]), so a
//! reply may wait a time slice before the arbiter reads it. With the kernel's stamp that wait is the
//! executor's, never charged to the miner's budget.
//!
//! Linux stamps incoming packets only while some socket in the system asks for stamps, and switches
//! stamping on from a deferred work item: the first packets sent after the first such socket opens
//! carry no stamp. Miner connections come and go (between cycles none may be open), so
//! [`keep_stamps_on`] holds one asking socket for the process's life.

use std::cell::Cell;
use std::io;
use std::mem::MaybeUninit;
use std::net::{TcpListener, TcpStream as StdTcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_http::Uri;
use actix_rt::net::{ActixStream, Ready, TcpStream};
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use futures_util::future::LocalBoxFuture;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

thread_local! {
    /// The receive time of the last bytes a [`StampedTcp`] read on this thread.
    static LAST_RECEIVED: Cell<Option<SystemTime>> = const { Cell::new(None) };
}

/// The latest kernel receive time seen by the reads inside [`Arrival::track`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Arrival(Option<SystemTime>);

impl Arrival {
    /// Runs `poll` (one poll of one connection) and keeps the receive time of the last bytes it
    /// read, if it read any from a stamped socket.
    pub fn track<T>(&mut self, poll: impl FnOnce() -> T) -> T {
        LAST_RECEIVED.set(None);
        let out = poll();
        if let Some(t) = LAST_RECEIVED.take() {
            self.0 = Some(t);
        }
        out
    }

    /// The round trip from `sent` (wall clock) to the last bytes' arrival; `None` when no read was
    /// stamped (the bytes were already buffered, or the socket gives no stamps).
    pub fn since(&self, sent: SystemTime) -> Option<Duration> {
        // A clock step between the two could make it negative: no time, rather than an error.
        self.0.map(|t| t.duration_since(sent).unwrap_or_default())
    }
}

/// A TCP stream whose reads record the kernel's receive time (module docs).
#[derive(Debug)]
pub struct StampedTcp(TcpStream);

impl StampedTcp {
    /// Turns receive timestamps on for `tcp`; without them reads work and record nothing.
    pub fn new(tcp: TcpStream) -> Self {
        if let Err(e) = setsockopt(&tcp, sockopt::ReceiveTimestampns, &true) {
            tracing::debug!(error = %e, "no receive timestamps on a miner connection");
        }
        Self(tcp)
    }
}

/// Switches the kernel's receive stamps on for the rest of the process (module docs) and waits,
/// once and at most [`STAMPS_ON_WITHIN`], until a loopback probe shows that packets are stamped.
/// Returns whether they are; without stamps, round trips fall back to the time replies were read.
pub fn keep_stamps_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| match switch_stamps_on() {
        Ok(true) => true,
        outcome => {
            tracing::warn!(
                error = ?outcome.err(),
                "the kernel does not stamp received packets: miner round trips include the \
                 executor's delay in reading them"
            );
            false
        }
    })
}

/// How long [`keep_stamps_on`] waits for the kernel's deferred switch.
const STAMPS_ON_WITHIN: Duration = Duration::from_secs(2);

/// Holds the keeper socket, then probes until a byte sent on loopback arrives stamped.
fn switch_stamps_on() -> io::Result<bool> {
    let keeper = UdpSocket::bind("127.0.0.1:0")?;
    setsockopt(&keeper, sockopt::ReceiveTimestampns, &true)?;
    // The keeper lives as long as the process: the kernel counts the sockets asking for stamps.
    std::mem::forget(keeper);
    let (probe, mut peer) = stamped_loopback_pair()?;
    let started = std::time::Instant::now();
    loop {
        std::io::Write::write_all(&mut peer, b"?")?;
        // Blocking: the probe is a blocking socket, and the byte is on its way.
        let (_, stamp) = receive(probe.as_raw_fd(), &mut [0; 1], MsgFlags::empty())?;
        if stamp.is_some() {
            return Ok(true);
        }
        if started.elapsed() > STAMPS_ON_WITHIN {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A blocking loopback TCP connection: the end that asks for receive stamps, and its peer.
fn stamped_loopback_pair() -> io::Result<(StdTcpStream, StdTcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let stamped = StdTcpStream::connect(listener.local_addr()?)?;
    setsockopt(&stamped, sockopt::ReceiveTimestampns, &true)?;
    Ok((stamped, listener.accept()?.0))
}

/// Room for one `SCM_TIMESTAMPNS` control message, aligned as `cmsghdr` needs.
#[repr(C, align(8))]
struct ControlBuffer([u8; 64]);

/// One `recvmsg` into `dst`: the bytes read and the receive time of the last segment they came from.
fn receive(fd: RawFd, dst: &mut [u8], flags: MsgFlags) -> io::Result<(usize, Option<SystemTime>)> {
    let mut control = ControlBuffer([0; 64]);
    let mut iov = [io::IoSliceMut::new(dst)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut control.0), flags)?;
    let stamp = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmTimestampns(ts) => {
            Some(UNIX_EPOCH + Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
        }
        _ => None,
    });
    Ok((msg.bytes, stamp))
}

impl AsyncRead for StampedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let tcp = &self.0;
        loop {
            std::task::ready!(tcp.poll_read_ready(cx))?;
            // The buffer's spare room, not zeroed first: the codec hands over kilobytes of fresh
            // capacity per read, and zeroing it (`initialize_unfilled`) was a quarter of the
            // arbiters' CPU per step. SAFETY: as in tokio's own `TcpStream::poll_read`, the slice is
            // only written, by the kernel, and only the `n` bytes it reports are marked filled.
            let dst = unsafe { &mut *(buf.unfilled_mut() as *mut [MaybeUninit<u8>] as *mut [u8]) };
            let room = dst.len();
            // A read that leaves room in the buffer has drained the socket, so its readiness is
            // cleared now (as tokio's own reads do) by reporting it to `try_io` as would-block:
            // otherwise the next poll of this connection, right after the next request is sent,
            // spends a `recvmsg` to learn that no reply is there yet.
            let mut drained = None;
            let read = tcp.try_io(Interest::READABLE, || {
                let (n, stamp) = receive(tcp.as_raw_fd(), dst, MsgFlags::MSG_DONTWAIT)?;
                if n > 0 && n < room {
                    drained = Some((n, stamp));
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok((n, stamp))
            });
            match drained.map_or(read, Ok) {
                Ok((n, stamp)) => {
                    if let (true, Some(t)) = (n > 0, stamp) {
                        LAST_RECEIVED.set(Some(t));
                    }
                    // SAFETY: the kernel wrote these `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale: `try_io` cleared it, so the next poll waits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for StampedTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl ActixStream for StampedTcp {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_read_ready(&self.0, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_write_ready(&self.0, cx)
    }
}

/// A TCP connector service whose connections are [`StampedTcp`]s (awc's `Connector::connector`).
#[derive(Clone)]
pub struct StampingConnector<S>(pub S);

impl<S> Service<ConnectInfo<Uri>> for StampingConnector<S>
where
    S: Service<ConnectInfo<Uri>, Response = Connection<Uri, TcpStream>, Error = ConnectError>,
    S::Future: 'static,
{
    type Response = Connection<Uri, StampedTcp>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, ConnectError>>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.0.poll_ready(cx)
    }

    fn call(&self, info: ConnectInfo<Uri>) -> Self::Future {
        let connecting = self.0.call(info);
        Box::pin(async move {
            let (tcp, request) = connecting.await?.into_parts();
            Ok(Connection::new(request, StampedTcp::new(tcp)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reply_on_each_new_connection_is_stamped() {
        assert!(keep_stamps_on());
        // Each connection closes before the next opens, and the pause lets the kernel switch
        // stamping off if nothing else asks for it: a reply sent the moment a connection opens
        // is stamped all the same.
        for i in 0..5 {
            let (tcp, mut miner) = stamped_loopback_pair().unwrap();
            std::io::Write::write_all(&mut miner, b"{}").unwrap();
            let (n, stamp) = receive(tcp.as_raw_fd(), &mut [0; 2], MsgFlags::empty()).unwrap();
            assert_eq!(n, 2);
            assert!(stamp.is_some(), "connection {i}: no stamp");
            drop((tcp, miner));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
