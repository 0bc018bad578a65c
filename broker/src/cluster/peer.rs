//! Peer transport: frames to the other nodes, one sender thread per peer
//! (docs/cluster.md has the frame layout).

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Sender};
use strata_replication::msg::NodeId;

use super::{Node, PEER_API_KEY};
use crate::error::{io, Result};

/// Encodes a peer frame: size | key | kind | from | crc32c | body.
pub(super) fn frame(kind: u8, from: NodeId, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(15 + body.len());
    f.extend_from_slice(&((11 + body.len()) as i32).to_be_bytes());
    f.extend_from_slice(&PEER_API_KEY.to_be_bytes());
    f.push(kind);
    f.extend_from_slice(&from.to_be_bytes());
    f.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// One thread per peer: connects (again after a failure, at most every
/// 200 ms) and writes frames in order. A bounded queue: a peer that is
/// down or paused costs dropped frames, never memory or a stuck driver.
pub(super) fn spawn_sender(me: NodeId, peer: Node) -> Result<Sender<Vec<u8>>> {
    let (tx, rx) = channel::bounded::<Vec<u8>>(4096);
    std::thread::Builder::new()
        .name(format!("strata-peer-{}", peer.id))
        .spawn(move || {
            let mut conn: Option<TcpStream> = None;
            let mut next_try = Instant::now();
            while let Ok(f) = rx.recv() {
                if conn.is_none() && Instant::now() >= next_try {
                    next_try = Instant::now() + Duration::from_millis(200);
                    conn = connect(&peer);
                    if conn.is_none() {
                        tracing::debug!(node = me, peer = peer.id, "peer unreachable");
                    }
                }
                let Some(s) = conn.as_mut() else { continue };
                if let Err(e) = s.write_all(&f) {
                    tracing::info!(peer = peer.id, error = %e, "peer connection lost");
                    conn = None;
                }
            }
        })
        .map_err(io("starting a peer sender"))?;
    Ok(tx)
}

fn connect(peer: &Node) -> Option<TcpStream> {
    let addr: SocketAddr = (peer.host.as_str(), peer.port)
        .to_socket_addrs()
        .ok()?
        .next()?;
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    let _ = s.set_nodelay(true);
    // A paused peer (SIGSTOP) stops reading: give up on it rather than
    // block the sender forever.
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    Some(s)
}
