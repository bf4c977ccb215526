//! Miner replies stamped by the kernel (executor.md 2.1): the moment a reply's last bytes reached
//! the executor's socket, whenever the arbiter gets to read them.
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

use std::cell::Cell;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_http::Uri;
use actix_rt::net::{ActixStream, Ready, TcpStream};
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use futures_util::future::LocalBoxFuture;
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
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on an open socket with a correctly sized int option.
        let failed = unsafe {
            libc::setsockopt(
                tcp.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
        };
        if failed {
            tracing::debug!(error = %io::Error::last_os_error(), "no receive timestamps on a miner connection");
        }
        Self(tcp)
    }
}

/// Room for one `SCM_TIMESTAMPNS` control message, aligned as `cmsghdr` needs.
#[repr(C, align(8))]
struct ControlBuffer([u8; 64]);

/// One `recvmsg` into `dst`: the bytes read and the receive time of the last segment they came from.
fn receive(fd: i32, dst: &mut [MaybeUninit<u8>]) -> io::Result<(usize, Option<SystemTime>)> {
    let mut control = ControlBuffer([0; 64]);
    let mut iov = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the pointers below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: `msg` describes writable buffers of the given lengths.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays within `msg_controllen` bytes the kernel wrote.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, stamp))
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
            // SAFETY: `receive` only writes initialised bytes into the unfilled part, and exactly
            // the `n` it reports are marked initialised and filled below.
            let dst = unsafe { buf.unfilled_mut() };
            match tcp.try_io(Interest::READABLE, || receive(tcp.as_raw_fd(), dst)) {
                Ok((n, stamp)) => {
                    if n > 0 {
                        if let Some(t) = stamp {
                            LAST_RECEIVED.set(Some(t));
                        }
                    }
                    // SAFETY: see above.
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
