//! Every role's HTTP server: hyper's connection builder with a timer, not
//! `axum::serve`, which sets no TCP_NODELAY and no timeout at all.
//!
//! Per connection:
//! - TCP_NODELAY, so a response written in two pieces does not wait for
//!   Nagle and the peer's delayed ACK (20–40 ms per request);
//! - a deadline for the request head ([`HttpLimits::header_timeout`]),
//!   counted from when the server starts waiting for it: a slowloris
//!   client trickling header bytes is closed at it, and so is a kept-alive
//!   connection that sends no next request;
//! - an idle timeout ([`HttpLimits::idle_timeout`]): a connection on which
//!   no byte moves either way for that long is closed (a stalled upload, a
//!   reader that stopped reading);
//! - at most [`HttpLimits::max_connections`] at once per listener; past
//!   that, new connections wait in the kernel's backlog;
//! - HTTP/2 with at most [`H2_MAX_STREAMS`] concurrent streams.
//!
//! On shutdown the listener closes, connections finish their requests and
//! close, and whatever still runs after [`HttpLimits::drain_timeout`] is
//! cut.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;

use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use teledrop_core::{Report, report};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// See `max_buf_size` in [`serve`]: 16 KiB of request head is twice what
/// nginx allows by default.
const HTTP1_BUFFER: usize = 16 * 1024;

/// Concurrent HTTP/2 streams per connection.
pub const H2_MAX_STREAMS: u32 = 100;

/// The limits every listener of the process applies.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// For routes that do not stream a file (webhook, probes, metrics).
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl HttpLimits {
    /// `router` with every request bounded by the request timeout (408):
    /// for routers that stream no file.
    pub fn bounded(&self, router: Router) -> Router {
        router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            self.request_timeout,
        ))
    }
}

/// Serves `app` on `listener` until `shutdown`, then drains.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    app: Router,
    limits: &HttpLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    info!(server = name, addr = %listener.local_addr()?, "listening");
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper queues up to this much of a response before it stops
        // polling the body (and a request's head must fit in it). Its
        // default, ~400 KiB, held for every slow reader of a download is
        // what made 1,000 slow downloads cost a gigabyte; the body's own
        // chunk is queued whole regardless, so fast readers lose nothing.
        .max_buf_size(HTTP1_BUFFER)
        // Queue the body's chunks and write them with writev rather than
        // copying each into one flat buffer first (which then keeps the
        // largest chunk's capacity for the connection's life).
        .writev(true)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(limits.idle_timeout / 2)
        .keep_alive_timeout(limits.header_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    warn!(server = name, error = %report(&e), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(server = name, error = %report(&e), "TCP_NODELAY not set");
        }
        let io = TokioIo::new(IdleTimeout::new(tcp, limits.idle_timeout));
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(server = name, %peer, error = %Report(e.as_ref()), "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            server = name,
            after = ?limits.drain_timeout,
            "connections still open at the drain deadline are cut"
        );
    }
    Ok(())
}

/// Serves a role's public routes (the worker and the controller have
/// none) and its admin routes side by side until `shutdown`, each with
/// [`serve`]'s limits; both drain before this returns. The admin routes
/// are bounded by the request timeout here, so no role can forget it. A
/// listener that fails cancels `shutdown`: the process stops instead of
/// running with probes that answer for a server that is gone.
pub async fn serve_with_admin(
    name: &'static str,
    public: Option<(TcpListener, Router)>,
    admin: (TcpListener, Router),
    limits: &HttpLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let cancel_on_error = |r: io::Result<()>| {
        if r.is_err() {
            shutdown.cancel();
        }
        r
    };
    let (admin_listener, admin_app) = admin;
    let admin_side = async {
        cancel_on_error(
            serve(
                "admin",
                admin_listener,
                limits.bounded(admin_app),
                limits,
                shutdown.clone(),
            )
            .await,
        )
    };
    let public_side = async {
        match public {
            Some((listener, app)) => cancel_on_error(serve(name, listener, app, limits, shutdown.clone()).await),
            None => Ok(()),
        }
    };
    let (admin_result, public_result) = tokio::join!(admin_side, public_side);
    admin_result.and(public_result)
}

/// A stream that fails with `TimedOut` once neither reading nor writing
/// has moved a byte for `timeout`. A moving byte only notes the time; the
/// timer is looked at while an operation is pending and moved up to the
/// last movement only when it fires, so a busy connection does not touch
/// the runtime's timer wheel on every read and write.
struct IdleTimeout<T> {
    io: T,
    timeout: Duration,
    /// When a byte last moved either way.
    last_moved: Instant,
    /// Due at or before `last_moved + timeout`.
    deadline: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    fn new(io: T, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            last_moved: Instant::now(),
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn moved(&mut self) {
        self.last_moved = Instant::now();
    }

    /// Called when the inner operation is pending.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.deadline.as_mut().poll(cx).is_ready() {
            let due = self.last_moved + self.timeout;
            if due <= Instant::now() {
                return true;
            }
            // Bytes moved since the timer was set: it fired early.
            self.deadline.as_mut().reset(due);
        }
        false
    }

    /// The outcome of a write, with the movement noted or the timer checked.
    fn written(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle")
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, data);
        this.written(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn start(limits: HttpLimits) -> (std::net::SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            axum::routing::get(|| async { "hello" })
                .post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        );
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move { serve("test", listener, app, &limits, s).await.unwrap() });
        (addr, stop, task)
    }

    /// Reads until EOF or error; `None` if the peer neither answered nor
    /// closed within `bound` (which only keeps a broken server from
    /// hanging the test).
    async fn read_to_close(tcp: &mut tokio::net::TcpStream, bound: Duration) -> Option<Vec<u8>> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        tokio::time::timeout(bound, async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .ok()?;
        Some(all)
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        let got = read_to_close(&mut tcp, Duration::from_secs(30))
            .await
            .expect("an answer");
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn public_and_admin_routes_stay_on_their_own_listener_and_both_stop() {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (p, a) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let public_app = Router::new().route("/download", axum::routing::get(|| async { "file" }));
        let admin_app = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            serve_with_admin(
                "test",
                Some((public, public_app)),
                (admin, admin_app),
                &HttpLimits::default(),
                s,
            )
            .await
        });
        assert!(get(p, "/download").await.starts_with("HTTP/1.1 200"));
        assert!(get(p, "/healthz").await.starts_with("HTTP/1.1 404"));
        assert!(get(a, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(a, "/download").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
        task.await.unwrap().unwrap();
        for addr in [p, a] {
            assert!(
                tokio::net::TcpStream::connect(addr).await.is_err(),
                "{addr} still listens"
            );
        }
    }

    #[tokio::test]
    async fn a_trickled_head_is_cut_at_the_header_deadline() {
        let limits = HttpLimits {
            header_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let (addr, stop, task) = start(limits).await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        // The head never ends; the server must close on its own.
        let got = read_to_close(&mut tcp, Duration::from_secs(30)).await;
        assert!(got.is_some(), "the connection stayed open past the header deadline");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let limits = HttpLimits {
            header_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let (addr, stop, task) = start(limits).await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let got = read_to_close(&mut tcp, Duration::from_secs(30))
            .await
            .expect("closed after the keep-alive idle time");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("hello"), "{text}");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_stalled_body_is_cut_at_the_idle_timeout() {
        let limits = HttpLimits {
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let (addr, stop, task) = start(limits).await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        // 90 bytes never come; the header deadline is far away.
        let got = read_to_close(&mut tcp, Duration::from_secs(30)).await;
        assert!(got.is_some(), "a stalled request stayed open past the idle timeout");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_for_a_free_slot() {
        let limits = HttpLimits {
            max_connections: 1,
            header_timeout: Duration::from_secs(30),
            ..HttpLimits::default()
        };
        let (addr, stop, task) = start(limits).await;
        let first = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The server takes the first connection (its only slot) first.
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
        assert!(
            early.is_err(),
            "a second connection was served while the only slot was taken"
        );
        drop(first);
        let got = read_to_close(&mut second, Duration::from_secs(30))
            .await
            .expect("served once the slot is free");
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
        stop.cancel();
        task.await.unwrap();
    }
}
