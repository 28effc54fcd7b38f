//! Reading the ZeroMQ ingest sockets (PULL, ROUTER) within limits.
//!
//! * Each frame is bounded at the transport by `ZMQ_MAXMSGSIZE`
//!   ([`crate::router::transport_frame_limit`]): libzmq closes the connection
//!   of a producer whose frame is larger, while the frame arrives, without
//!   buffering it. libzmq gives no reason with the disconnect, so a socket
//!   monitor counts every closed producer connection
//!   (`vigil_ingest_disconnects_total`).
//! * libzmq hands a multipart message over whole, so the number of frames of
//!   one message cannot be capped before it is in memory; [`recv_capped`]
//!   reads it frame by frame and keeps at most the cap (the rest are dropped
//!   as they are read, never copied), and the router refuses such a message
//!   whole (`too_many_frames`).

/// One multipart message as read by [`recv_capped`].
pub struct Received {
    /// The first frames, at most the cap given.
    pub frames: Vec<zmq::Message>,
    /// Frames the message had.
    pub total: usize,
}

/// Reads one whole multipart message without waiting (`None`: nothing to
/// read), keeping at most `keep` frames.
pub fn recv_capped(sock: &zmq::Socket, keep: usize) -> Option<Received> {
    let first = sock.recv_msg(zmq::DONTWAIT).ok()?;
    let mut m = Received {
        frames: vec![],
        total: 1,
    };
    if keep > 0 {
        m.frames.push(first);
    }
    // The rest of a multipart message is already there (delivered whole).
    while sock.get_rcvmore().unwrap_or(false) {
        let Ok(f) = sock.recv_msg(zmq::DONTWAIT) else {
            break;
        };
        m.total += 1;
        if m.frames.len() < keep {
            m.frames.push(f);
        }
    }
    Some(m)
}

/// Starts a monitor of `sock`'s disconnect events and connects to it.
pub fn ingest_monitor(
    ctx: &zmq::Context,
    sock: &zmq::Socket,
    gateway_id: u64,
    n: usize,
) -> anyhow::Result<zmq::Socket> {
    let ep = format!("inproc://vigil-ingest-monitor-{gateway_id:x}-{n}");
    sock.monitor(&ep, i32::from(zmq::SocketEvent::DISCONNECTED.to_raw()))?;
    let m = ctx.socket(zmq::PAIR)?;
    m.connect(&ep)?;
    Ok(m)
}

/// Disconnect events waiting on a monitor socket (read without waiting).
pub fn disconnects(monitor: &zmq::Socket) -> u64 {
    let mut n = 0;
    // Bounded: events are small, and few per loop turn.
    for _ in 0..1024 {
        let Ok(event) = monitor.recv_multipart(zmq::DONTWAIT) else {
            break;
        };
        let id = event
            .first()
            .and_then(|f| f.get(..2))
            .map(|b| u16::from_ne_bytes([b[0], b[1]]));
        if id == Some(zmq::SocketEvent::DISCONNECTED.to_raw()) {
            n += 1;
        }
    }
    n
}
