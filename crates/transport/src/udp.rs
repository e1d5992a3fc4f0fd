//! The driver's socket I/O, batched through `quinn-udp`: `recvmmsg` (and GRO where the kernel
//! coalesces datagrams) on receive; on send, runs of equal-size datagrams to one destination
//! go out as one GSO super-datagram where the kernel has segmentation offload, one `sendmsg`
//! per datagram where it does not (`max_gso_segments() == 1`: the fallback path, which the
//! tests force on). A device that refuses GSO turns it off for good (quinn-udp notices) and
//! the refused batch is sent again datagram by datagram. `quinn-udp` also sets the
//! don't-fragment bit: a datagram larger than the path MTU is dropped, not fragmented, which is
//! what the core's path MTU discovery relies on (it sends 1,200 bytes until a probe of a larger
//! size is acknowledged). Receive slots take any UDP datagram whole.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{BATCH_SIZE, RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, trace, warn};

/// Room for one received datagram, or for the datagrams GRO coalesced into one buffer: the
/// IPv4 maximum (65,507 bytes) arrives whole, so oversized junk is seen, counted and dropped
/// rather than cut.
const SLOT: usize = 65_536;
/// Most bytes in one GSO send (the kernel's limit for a UDP super-datagram).
const MAX_GSO_BYTES: usize = 65_000;

/// A UDP socket with `quinn-udp`'s batched I/O.
pub(crate) struct UdpIo {
    socket: UdpSocket,
    state: UdpSocketState,
    /// The socket is IPv6 (dual stack): IPv4 destinations are sent as mapped addresses.
    v6: bool,
    /// Receive buffers: [`BATCH_SIZE`] slots of [`SLOT`] bytes, allocated zeroed so that the
    /// kernel maps only the pages datagrams are written to.
    recv_buf: Vec<u8>,
    metas: [RecvMeta; BATCH_SIZE],
    /// Most datagrams in one send: 1 without segmentation offload.
    max_segments: usize,
    batch: GsoBatch,
}

impl UdpIo {
    pub(crate) fn new(socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let v6 = socket.local_addr()?.is_ipv6();
        let max_segments = state.max_gso_segments();
        Ok(Self {
            socket,
            state,
            v6,
            recv_buf: vec![0; BATCH_SIZE * SLOT],
            metas: [RecvMeta::default(); BATCH_SIZE],
            max_segments,
            batch: GsoBatch::default(),
        })
    }

    /// Sends every datagram separately, as on a platform without segmentation offload.
    #[cfg(test)]
    pub(crate) fn without_gso(mut self) -> Self {
        self.max_segments = 1;
        self
    }

    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits until the socket may have datagrams to read.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Reads what is queued, one batch, handing every datagram to `on_datagram`. Returns how
    /// many there were: 0 if none was waiting.
    pub(crate) fn try_recv(
        &mut self,
        on_datagram: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        self.recv_batch(true, on_datagram)
    }

    /// [`Self::try_recv`] even when the runtime has not seen the socket become readable
    /// since it last read it dry: for a driver busy sending, which has not given the runtime
    /// a chance to look.
    pub(crate) fn recv_now(
        &mut self,
        on_datagram: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        self.recv_batch(false, on_datagram)
    }

    /// One `recvmmsg`; `gated`: only if the runtime's readiness says there may be data.
    fn recv_batch(
        &mut self,
        gated: bool,
        mut on_datagram: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let Self {
            socket,
            state,
            recv_buf,
            metas,
            ..
        } = self;
        let mut slots = recv_buf.chunks_mut(SLOT);
        let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
        let mut recv = || state.recv(UdpSockRef::from(&*socket), &mut iovs, metas);
        let received = if gated {
            socket.try_io(Interest::READABLE, recv)
        } else {
            recv()
        };
        let n = match received {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut datagrams = 0;
        for (meta, iov) in metas.iter().zip(iovs.iter()).take(n) {
            let data = &iov[..meta.len.min(iov.len())];
            // GRO: datagrams of `stride` bytes each, the last maybe shorter.
            for d in data.chunks(meta.stride.max(1)) {
                on_datagram(meta.addr, d);
                datagrams += 1;
            }
        }
        Ok(datagrams)
    }

    /// Queues `contents` for `destination`; it goes out with the next [`Self::flush`] or
    /// sooner, when a datagram that cannot join it arrives.
    pub(crate) async fn send(&mut self, destination: SocketAddr, contents: &[u8]) {
        let destination = match destination {
            // The core keeps IPv4 peers as plain IPv4; a dual-stack socket needs them mapped.
            SocketAddr::V4(v4) if self.v6 => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            other => other,
        };
        if !self
            .batch
            .try_push(destination, contents, self.max_segments)
        {
            self.flush().await;
            let pushed = self
                .batch
                .try_push(destination, contents, self.max_segments);
            debug_assert!(pushed, "an empty batch takes any datagram");
        }
    }

    /// One send attempt, without waiting (`WouldBlock` clears the socket's write readiness).
    fn try_send(&self, t: &Transmit<'_>) -> io::Result<()> {
        self.socket.try_io(Interest::WRITABLE, || {
            self.state.try_send(UdpSockRef::from(&self.socket), t)
        })
    }

    /// Sends what [`Self::send`] queued.
    pub(crate) async fn flush(&mut self) {
        let Some(destination) = self.batch.destination else {
            return;
        };
        let transmit = Transmit {
            destination,
            ecn: None,
            contents: &self.batch.buf,
            segment_size: (self.batch.segments > 1).then_some(self.batch.segment_size),
            src_ip: None,
        };
        let segments = self.batch.segments;
        loop {
            match self.try_send(&transmit) {
                Ok(()) => break,
                // The device refused segmentation offload: quinn-udp has turned it off; send
                // the batch again one datagram at a time.
                Err(_) if segments > 1 && self.state.max_gso_segments() == 1 => {
                    debug!(%destination, "GSO refused; sending singly from now on");
                    let size = self.batch.segment_size.max(1);
                    for d in self.batch.buf.chunks(size) {
                        let single = Transmit {
                            destination,
                            ecn: None,
                            contents: d,
                            segment_size: None,
                            src_ip: None,
                        };
                        if let Err(e) = self.try_send(&single) {
                            // Lost, like any datagram that does not leave.
                            trace!(%e, %destination, "send failed");
                        }
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.socket.writable().await {
                        warn!(%e, "socket not writable; treating the datagrams as lost");
                        break;
                    }
                }
                // Whatever the reason (ICMP unreachable, no buffer space, a route that went
                // away, GSO refused by the device, after which quinn-udp sends singly), a
                // datagram that does not leave is a lost datagram, which the protocol is built
                // to survive; a socket that is really broken shows up on receive.
                Err(e) if crate::is_transient(&e) => {
                    trace!(%e, %destination, "send failed");
                    break;
                }
                Err(e) => {
                    warn!(%e, %destination, "send failed; treating the datagrams as lost");
                    break;
                }
            }
        }
        self.max_segments = self.max_segments.min(self.state.max_gso_segments());
        self.batch.clear();
    }
}

/// Datagrams waiting to go out together: to one destination, all of one size but the last,
/// which may be shorter (the rule of UDP segmentation offload).
#[derive(Debug, Default)]
struct GsoBatch {
    destination: Option<SocketAddr>,
    buf: Vec<u8>,
    segment_size: usize,
    segments: usize,
    /// The last datagram was shorter than `segment_size`: nothing may follow it.
    closed: bool,
}

impl GsoBatch {
    /// Adds a datagram if it may join; false if the batch must be sent first.
    fn try_push(&mut self, destination: SocketAddr, contents: &[u8], max_segments: usize) -> bool {
        match self.destination {
            None => {
                self.destination = Some(destination);
                self.segment_size = contents.len();
                // An empty datagram cannot be a segment size: it goes alone.
                self.closed = contents.is_empty();
            }
            Some(d) => {
                if d != destination
                    || self.closed
                    || self.segments >= max_segments
                    || contents.len() > self.segment_size
                    || self.buf.len() + contents.len() > MAX_GSO_BYTES
                {
                    return false;
                }
                self.closed = contents.len() < self.segment_size;
            }
        }
        self.buf.extend_from_slice(contents);
        self.segments += 1;
        true
    }

    fn clear(&mut self) {
        self.destination = None;
        self.buf.clear();
        self.segments = 0;
        self.closed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_batch_is_one_destination_equal_sizes_and_a_shorter_last() {
        let mut b = GsoBatch::default();
        assert!(b.try_push(addr(1), &[1; 1200], 10));
        assert!(b.try_push(addr(1), &[2; 1200], 10));
        assert!(!b.try_push(addr(2), &[3; 1200], 10), "another destination");
        assert!(
            !b.try_push(addr(1), &[3; 1300], 10),
            "larger than the segments"
        );
        assert!(b.try_push(addr(1), &[4; 500], 10), "a shorter last one");
        assert!(
            !b.try_push(addr(1), &[5; 500], 10),
            "nothing after the shorter one"
        );
        assert_eq!((b.segments, b.segment_size, b.buf.len()), (3, 1200, 2900));
        b.clear();
        assert!(
            b.try_push(addr(2), &[6; 100], 10),
            "a cleared batch takes anything"
        );
    }

    #[test]
    fn a_batch_respects_the_segment_and_byte_limits() {
        let mut b = GsoBatch::default();
        assert!(b.try_push(addr(1), &[0; 100], 1));
        assert!(
            !b.try_push(addr(1), &[0; 100], 1),
            "no offload: one at a time"
        );
        let mut b = GsoBatch::default();
        let n = MAX_GSO_BYTES / 1400;
        for _ in 0..n {
            assert!(b.try_push(addr(1), &[0; 1400], 64));
        }
        assert!(!b.try_push(addr(1), &[0; 1400], 64), "over the byte limit");
    }

    /// Real sockets, both paths: bursts of equal-size datagrams (GSO where the kernel has it)
    /// and mixed ones arrive whole and in order, with and without segmentation offload.
    #[tokio::test]
    async fn datagrams_arrive_whole_with_and_without_gso() {
        for gso in [true, false] {
            let bind = || {
                let s = crate::bind(addr(0)).expect("bind");
                UdpIo::new(UdpSocket::from_std(s).expect("tokio socket")).expect("state")
            };
            let mut tx = if gso { bind() } else { bind().without_gso() };
            let mut rx = bind();
            let to = rx.local_addr().expect("addr");
            let mut sent: Vec<Vec<u8>> = Vec::new();
            for i in 0..40u8 {
                let len = if i % 10 == 9 { 300 } else { 1200 };
                sent.push(vec![i; len]);
            }
            for d in &sent {
                tx.send(to, d).await;
            }
            tx.flush().await;
            let mut got: Vec<Vec<u8>> = Vec::new();
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while got.len() < sent.len() {
                tokio::time::timeout_at(deadline, rx.readable())
                    .await
                    .expect("datagrams within 5 s")
                    .expect("readable");
                rx.try_recv(|_, d| got.push(d.to_vec())).expect("recv");
            }
            assert_eq!(got, sent, "gso {gso}");
        }
    }
}
